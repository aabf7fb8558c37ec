"""One explicit Runge-Kutta step, driven by a Butcher tableau."""

from __future__ import annotations

from typing import NamedTuple

import torch

from .base import Solver, StepFunction, StepResult
from .interpolation import hermite_dense, polynomial_dense
from .tableau import ButcherTableau


class RKState(NamedTuple):
    """The solution ``y`` and its derivative ``f = f(t, y)`` (``None`` until known)."""

    y: torch.Tensor
    f: torch.Tensor | None


def _combine(y: torch.Tensor, h: float, terms: list[tuple[int, float]], ks) -> torch.Tensor:
    """``y + h * sum_j a_j k_j`` over the non-zero coefficients, one fused op per term."""
    out = y
    for j, a in terms:
        out = out.add(ks[j], alpha=h * a)
    return out


class ExplicitRungeKutta(Solver):
    """An explicit Runge-Kutta method with optional embedded error estimate and FSAL.

    Args:
        tableau: the method's coefficients.
    """

    def __init__(self, tableau: ButcherTableau) -> None:
        self.tableau = tableau
        self.name = tableau.name
        self.order = tableau.order
        self.error_order = tableau.error_order if tableau.adaptive else None

        def nonzero(row) -> list[tuple[int, float]]:
            return [(j, float(x)) for j, x in enumerate(row) if x != 0]

        self._c = [float(x) for x in tableau.c]
        self._a = [nonzero(row) for row in tableau.a]
        self._b = nonzero(tableau.b)
        self._e = nonzero(tableau.b_error) if tableau.adaptive else None
        # Floats once: the tableau's exact Fractions are slow to convert at every step.
        self._dense = (
            None if tableau.dense is None else [[float(x) for x in row] for row in tableau.dense]
        )

    def __repr__(self) -> str:
        return f"ExplicitRungeKutta({self.name!r})"

    def init(self, func: StepFunction, t0: float, y0: torch.Tensor) -> RKState:
        return RKState(y0, func(t0, y0))

    def step(
        self, func: StepFunction, t: float, h: float, state: RKState, estimate_error: bool = True
    ) -> StepResult:
        y0, f0 = state
        ks = [f0]
        y_stage = y0
        for i in range(1, self.tableau.stages):
            y_stage = _combine(y0, h, self._a[i], ks)
            ks.append(func(t + self._c[i] * h, y_stage))
        if self.tableau.fsal:
            # The last stage was evaluated at (t + h, y1): it is the next step's f0.
            y1, f1 = y_stage, ks[-1]
        else:
            y1, f1 = _combine(y0, h, self._b, ks), None
        error = None
        if self._e is not None and estimate_error:
            with torch.no_grad():
                (j0, e0), rest = self._e[0], self._e[1:]
                error = _combine(ks[j0] * (h * e0), h, rest, ks)
        return StepResult(RKState(y1, f1), error, ks)

    def complete(
        self,
        func: StepFunction,
        t: float,
        state: RKState,
        restart: bool | None = None,
        gradient_restart: bool = True,
    ) -> RKState:
        # A restart (after a jump of f) evaluates the slope afresh, even for FSAL; a
        # Runge-Kutta state has nothing else to restart.
        if state.f is None or restart:
            return RKState(state.y, func(t, state.y))
        return state

    def interpolant(self, h: float, state0: RKState, state1: RKState, stages):
        if self._dense is not None:
            return polynomial_dense(state0.y, h, stages, self._dense)
        return hermite_dense(state0.y, state1.y, state0.f, state1.f, h)
