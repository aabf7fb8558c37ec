"""Dense output: the solution inside one accepted step, as a function of that step's data.

Each interpolant is ``y(t0 + theta h) = y0 + sum_m w_m(theta) v_m``: a few
vectors ``v_m`` computed from the step (stages, end points) and scalar weights
that depend on ``theta`` alone. Gradient methods rebuild an interpolant from a
re-run step, so it must depend on nothing but that step's data.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence

import torch

from .small import combine


def _weights_tensor(rows: list[list[float]], like: torch.Tensor) -> torch.Tensor:
    """Host-side weights moved to ``like``'s device without a blocking copy."""
    w = torch.tensor(rows, dtype=like.dtype)
    if like.device.type == "cpu":
        return w
    return w.pin_memory().to(like.device, non_blocking=True)


class LinearDense:
    """``y0 + sum_m w_m(theta) v_m`` with ``w(theta)`` from a weight function.

    Args:
        y0: the state at the start of the step, shape ``S``.
        vectors: the ``M`` vectors ``v_m``, each of shape ``S``.
        weights: maps ``theta`` (float) to ``M`` float weights.
    """

    def __init__(self, y0: torch.Tensor, vectors: Sequence[torch.Tensor], weights) -> None:
        self.y0 = y0
        self.vectors = vectors
        self.weights = weights

    def __call__(self, thetas: Sequence[float]) -> torch.Tensor:
        """States at the fractions ``thetas`` of the step, shape ``(len(thetas), *S)``."""
        w = _weights_tensor([self.weights(th) for th in thetas], self.y0)  # (T, M)
        stacked = torch.stack(list(self.vectors)).reshape(len(self.vectors), -1)  # (M, N)
        # y0 + w @ v, with y0 broadcast over the T rows.
        out = combine(self.y0.reshape(1, -1), w, stacked)
        return out.reshape(len(thetas), *self.y0.shape)


def polynomial_dense(
    y0: torch.Tensor, h: float, stages: Sequence[torch.Tensor], coefficients: Sequence[Sequence]
) -> LinearDense:
    """A Runge-Kutta continuous extension ``y0 + h sum_i b_i(theta) k_i``.

    ``coefficients[i][p]`` multiplies ``theta ** (p + 1)`` in ``b_i(theta)``.
    """
    kept = [(i, [float(x) for x in row]) for i, row in enumerate(coefficients) if any(row)]
    degree = len(coefficients[0])

    def weights(theta: float) -> list[float]:
        powers = [h * theta ** (p + 1) for p in range(degree)]
        return [sum(map(operator.mul, row, powers)) for _, row in kept]

    return LinearDense(y0, [stages[i] for i, _ in kept], weights)


def hermite_dense(
    y0: torch.Tensor, y1: torch.Tensor, f0: torch.Tensor, f1: torch.Tensor, h: float
) -> LinearDense:
    """Cubic Hermite interpolation from the end values and derivatives of a step."""

    def weights(theta: float) -> list[float]:
        t2, t3 = theta * theta, theta * theta * theta
        return [3 * t2 - 2 * t3, h * (t3 - 2 * t2 + theta), h * (t3 - t2)]

    return LinearDense(y0, [y1 - y0, f0, f1], weights)


def rosenbrock_dense(y0: torch.Tensor, y1: torch.Tensor, ks: Sequence[torch.Tensor]) -> LinearDense:
    """Hairer & Wanner's Rosenbrock dense output ``(1 - theta) y0 + theta (y1 +
    (1 - theta) (K_1 + theta (K_2 + theta K_3 ...)))`` from the combined stages ``K_r``."""

    def weights(theta: float) -> list[float]:
        inner = theta * (1.0 - theta)
        return [theta] + [inner * theta**r for r in range(len(ks))]

    return LinearDense(y0, [y1 - y0, *ks], weights)
