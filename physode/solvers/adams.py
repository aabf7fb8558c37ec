"""Fixed-step Adams methods of order 4: Adams-Bashforth (explicit) and the
Adams-Bashforth-Moulton predictor-corrector (PECE).

A multistep method needs the last four slopes. They are the state's second part, a
``(4, *y.shape)`` history ``[f_n, f_(n-1), f_(n-2), f_(n-3)]``, so the gradient
methods differentiate through them like any other part of a state (ACA pulls the
adjoint back through the whole history). Until four slopes taken with the same step
size are known (at the start, and after the step size changes, as on a grid's
shortened last step) a classical RK4 step is taken instead, so the method is of
order 4 from the first step.
"""

from __future__ import annotations

from fractions import Fraction as F
from typing import NamedTuple

import torch

from .base import Solver, StepFunction, StepResult
from .interpolation import hermite_dense

#: y_(n+1) = y_n + h sum_j BASHFORTH[j] f_(n-j)
BASHFORTH = (F(55, 24), F(-59, 24), F(37, 24), F(-9, 24))
#: y_(n+1) = y_n + h (MOULTON[0] f_(n+1) + sum_j MOULTON[j + 1] f_(n-j))
MOULTON = (F(9, 24), F(19, 24), F(-5, 24), F(1, 24))

_STEPS = len(BASHFORTH)


class AdamsState(NamedTuple):
    """``y``, the slope history ``d`` (newest first, zero-padded), how many of its rows
    are known (``count``) and the step size they were taken with (``h``).
    ``pending``: the newest slope, ``f(t, y)``, is still to be evaluated."""

    y: torch.Tensor
    d: torch.Tensor
    count: int = 1
    h: float | None = None
    pending: bool = False


def _same_step(h: float, previous: float | None) -> bool:
    return previous is not None and abs(h - previous) <= 1e-12 * abs(h)


class Adams(Solver):
    """Fourth-order Adams methods on a fixed grid (``step_size`` required).

    Args:
        corrector: evaluate the Adams-Bashforth predictor and correct it once with
            Adams-Moulton (PECE, two evaluations a step, ``adams_moulton``); without,
            the explicit Adams-Bashforth method (one evaluation a step).
    """

    order = 4
    error_order = None

    def __init__(self, corrector: bool = False) -> None:
        self.corrector = corrector
        self.name = "abm4" if corrector else "ab4"
        self._ab = [float(x) for x in BASHFORTH]
        self._am = [float(x) for x in MOULTON]

    def __repr__(self) -> str:
        return f"Adams(corrector={self.corrector})"

    def init(self, func: StepFunction, t0: float, y0: torch.Tensor) -> AdamsState:
        f0 = func(t0, y0)
        return AdamsState(y0, torch.cat([f0.unsqueeze(0), f0.new_zeros(_STEPS - 1, *f0.shape)]))

    def step(
        self, func: StepFunction, t: float, h: float, state: AdamsState, estimate_error: bool = True
    ) -> StepResult:
        y, d = state.y, state.d
        if state.count >= _STEPS and _same_step(h, state.h):
            y1 = y
            for j, b in enumerate(self._ab):
                y1 = y1.add(d[j], alpha=h * b)
            if self.corrector:
                f_pred = func(t + h, y1)
                y1 = y.add(f_pred, alpha=h * self._am[0])
                for j, b in enumerate(self._am[1:]):
                    y1 = y1.add(d[j], alpha=h * b)
            count = _STEPS
        else:  # start (or restart) the history with a classical RK4 step
            k1 = d[0]
            k2 = func(t + h / 2, y.add(k1, alpha=h / 2))
            k3 = func(t + h / 2, y.add(k2, alpha=h / 2))
            k4 = func(t + h, y.add(k3, alpha=h))
            y1 = y + (h / 6) * (k1 + 2 * k2 + 2 * k3 + k4)
            count = state.count + 1 if _same_step(h, state.h) else 2
        return StepResult(AdamsState(y1, d, min(count, _STEPS), h, pending=True), None, None)

    def complete(self, func, t, state: AdamsState, restart=None, gradient_restart=True):
        if restart:  # after a jump of f: the history is no longer smooth
            return self.init(func, t, state.y)
        if not state.pending:
            return state
        f1 = func(t, state.y)
        history = torch.cat([f1.unsqueeze(0), state.d[: _STEPS - 1]])
        return AdamsState(state.y, history, state.count, state.h)

    def interpolant(self, h: float, state0: AdamsState, state1: AdamsState, stages):
        return hermite_dense(state0.y, state1.y, state0.d[0], state1.d[0], h)
