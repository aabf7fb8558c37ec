"""Dormand & Prince's 8(5,3) method (DOP853), the method for tight tolerances.

The step is the explicit Runge-Kutta step of its tableau (``tableaus.DOPRI8``). Two
things are its own, both as in Hairer's ``dop853`` code:

- the error ratio combines the fifth- and third-order estimates,
  ``r5**2 / sqrt(r5**2 + 0.01 r3**2)`` (each the usual norm of its scaled estimate),
  which behaves as ``h**8``: the controller sees ``error_order = 7``;
- the dense output is of order 7: three more stages, evaluated only for a step that
  has an output inside it, and the polynomial
  ``y0 + x F0 + x(1-x) F1 + x^2(1-x) F2 + x^2(1-x)^2 F3 + ... + x^4(1-x)^3 F6``.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from . import dop853_coefficients as coef
from .base import StepFunction, StepResult
from .interpolation import LinearDense
from .norms import error_ratio
from .runge_kutta import ExplicitRungeKutta, RKState, _combine
from .tableaus import DOPRI8

_E3 = [(j, float(x)) for j, x in enumerate(coef.E3) if x != 0]
_EXTRA = [
    (float(coef.C[s]), [(j, float(x)) for j, x in enumerate(coef.A[s]) if x != 0])
    for s in (13, 14, 15)
]
# Columns of D (over the 16 stages) that are used at all.
_D_COLUMNS = [j for j in range(16) if any(row[j] != 0 for row in coef.D)]


class DOP853Stages(NamedTuple):
    """What the dense output needs: the thirteen stages, the step's start and the
    function (the three extra stages are evaluated on demand), and the third-order
    error estimate (``None`` when not estimated)."""

    ks: list
    func: StepFunction
    t: float
    error3: torch.Tensor | None


class DormandPrince853(ExplicitRungeKutta):
    """DOP853: order 8, error estimate of order 8 from a 5th and a 3rd-order pair,
    dense output of order 7 (three extra evaluations on a step with outputs inside)."""

    # Hairer's dop853 controller: no integral term (beta = 0), growth in [1/3, 6]. Its
    # combined estimate varies more from step to step than a single embedded one; the
    # PI controller's slower reaction let errors run past the tolerance (DETEST A3 at
    # rtol 1e-6: 3.6e-4 against 2.4e-6).
    controller_defaults = {"beta1": 1.0, "beta2": 0.0, "ifactor": 6.0, "dfactor": 0.333}  # noqa: RUF012

    def __init__(self) -> None:
        super().__init__(DOPRI8)

    def __repr__(self) -> str:
        return "DormandPrince853()"

    def step(
        self, func: StepFunction, t: float, h: float, state: RKState, estimate_error: bool = True
    ) -> StepResult:
        result = super().step(func, t, h, state, estimate_error)
        error3 = None
        if result.error is not None:
            with torch.no_grad():
                error3 = _combine(torch.zeros_like(state.y), h, _E3, result.stages)
        return StepResult(result.state, result.error, DOP853Stages(result.stages, func, t, error3))

    def error_ratio(self, result, y0, y1, rtol, atol, norm) -> torch.Tensor:
        r5 = error_ratio(result.error, y0, y1, rtol, atol, norm)
        r3 = error_ratio(result.stages.error3, y0, y1, rtol, atol, norm)
        denominator = (r5 * r5 + 0.01 * r3 * r3).sqrt()
        return torch.where(denominator > 0, r5 * r5 / denominator, denominator)

    def interpolant(self, h: float, state0: RKState, state1: RKState, stages: DOP853Stages):
        ks = list(stages.ks)  # f(t1, y1) is the thirteenth stage
        y0 = state0.y
        for c, row in _EXTRA:
            ks.append(stages.func(stages.t + c * h, _combine(y0, h, row, ks)))
        vectors = [state1.y - y0, *(ks[j] for j in _D_COLUMNS)]
        d_rows = [[float(coef.D[r][j]) for j in _D_COLUMNS] for r in range(4)]
        first, last = _D_COLUMNS.index(0), _D_COLUMNS.index(12)

        def weights(x: float) -> list[float]:
            u = 1.0 - x
            p = [x, x * u, x * x * u, x * x * u * u, x**3 * u * u, x**3 * u**3, x**4 * u**3]
            # F0 = dy, F1 = h f0 - dy, F2 = 2 dy - h (f0 + f1), F3..F6 = h D k.
            w = [p[0] - p[1] + 2 * p[2]]
            w += [h * sum(d_rows[r][m] * p[3 + r] for r in range(4)) for m in range(len(d_rows[0]))]
            w[1 + first] += h * (p[1] - p[2])
            w[1 + last] -= h * p[2]
            return w

        return LinearDense(y0, vectors, weights)
