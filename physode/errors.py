"""Exceptions raised by physode."""

from __future__ import annotations


class SolverError(RuntimeError):
    """A solve that cannot finish: step size underflow, too many steps, a non-finite state.

    Attributes:
        t: the time (float64) at which the solve stopped.
        h: the step size being tried there (``None`` when not yet chosen).
        n_steps: accepted plus rejected steps taken so far.
        reason: a short machine-readable cause, e.g. ``"max_steps"``.
    """

    def __init__(
        self, message: str, *, t: float, h: float | None, n_steps: int, reason: str
    ) -> None:
        super().__init__(message)
        self.t = t
        self.h = h
        self.n_steps = n_steps
        self.reason = reason
