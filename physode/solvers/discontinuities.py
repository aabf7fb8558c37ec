"""Right-hand sides with jumps: one-sided evaluation at the ends of a step.

A right-hand side that jumps at ``t_j`` (a switched input, an impact) is smooth on
each side, but a step across ``t_j`` is not: it loses its order and the controller
crawls over the jump. Given the jump times (``jump_t``), the loop ends a step exactly on
each one and restarts the solver there. Within a step, ``f`` is then evaluated at the
one-sided limits: a call at the step's start means ``t+`` (toward the step) and one at
its end ``t1-``; the restarted state after the jump evaluates ``f(t_j+)``. With
``perturb`` every step's end is treated as such a jump (for a fixed grid that lies on
the right-hand side's discontinuities). A one-sided time is the next number in that
direction in the state's dtype (the dtype ``func`` sees the time in).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch


def beyond(t: float, direction: float, dtype: torch.dtype = torch.float64) -> float:
    """The number next to ``t`` in ``direction`` in ``dtype`` (a one-sided limit's time)."""
    if dtype == torch.float64:
        return math.nextafter(t, math.copysign(math.inf, direction))
    # t as func will see it, then the next representable time on the wanted side.
    seen = torch.tensor(t, dtype=dtype)
    toward = torch.tensor(math.copysign(math.inf, direction), dtype=dtype)
    return float(torch.nextafter(seen, toward))


class OneSided:
    """``func`` for one step from ``t0`` to ``t1``: a call at exactly ``t0`` is made at
    ``t0+`` and one at exactly ``t1`` at ``t1-`` (inside the step)."""

    def __init__(self, func: Callable, t0: float, t1: float, dtype: torch.dtype) -> None:
        self.func, self.t0, self.t1 = func, t0, t1
        self.after_t0 = beyond(t0, t1 - t0, dtype)
        self.before_t1 = beyond(t1, t0 - t1, dtype)

    def __getattr__(self, name: str):
        # What else the wrapped function offers (the adjoint's exact Jacobian).
        return getattr(self.func, name)

    def __call__(self, t: float, y: torch.Tensor) -> torch.Tensor:
        if t == self.t0:
            t = self.after_t0
        elif t == self.t1:
            t = self.before_t1
        return self.func(t, y)


def step_function(func: Callable, t: float, h: float, jump: bool, dtype: torch.dtype) -> Callable:
    """The function a step from ``t`` of size ``h`` evaluates: one-sided where the step
    ends on a jump, else ``func`` itself."""
    return OneSided(func, t, t + h, dtype) if jump else func


def end_time(t: float, h: float, jump: bool, dtype: torch.dtype) -> float:
    """Where the state after a step is completed: past the jump when it ends on one."""
    return beyond(t + h, h, dtype) if jump else t + h


class JumpTimes:
    """The jump times strictly inside a solve, met in order."""

    def __init__(self, times: Sequence[float], t0: float, t_end: float, direction: float):
        inside = [
            float(t) for t in times if direction * (t - t0) > 0 and direction * (t_end - t) > 0
        ]
        self.times = sorted(set(inside), key=lambda t: direction * t)
        self.direction = direction
        self.next = 0

    def target(self, target: float) -> float:
        """The earlier of ``target`` and the next jump."""
        if self.next < len(self.times) and self.direction * (self.times[self.next] - target) < 0:
            return self.times[self.next]
        return target

    def landing(self, t: float, h: float) -> tuple[float, bool]:
        """``h``, made to end exactly on the next jump if it ends within a few ulps of
        it, and whether it does."""
        if self.next >= len(self.times):
            return h, False
        jump = self.times[self.next]
        if abs(t + h - jump) > 4 * math.ulp(jump):
            return h, False
        for _ in range(4):  # t + (jump - t) can miss jump by an ulp
            if t + h == jump:
                break
            h += jump - (t + h)
        return h, t + h == jump

    def consume(self) -> None:
        """The step ending on the next jump was accepted."""
        self.next += 1
