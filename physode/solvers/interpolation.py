"""Dense output: the solution inside one accepted step, as a function of that step's data.

Each interpolant is ``y(t0 + theta h) = y0 + sum_m w_m(theta) v_m``: a few
vectors ``v_m`` computed from the step (stages, end points) and scalar weights
that depend on ``theta`` alone. Gradient methods rebuild an interpolant from a
re-run step, so it must depend on nothing but that step's data.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


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
        w = _weights_tensor([self.weights(th) for th in thetas], self.y0)
        stacked = torch.stack(list(self.vectors))  # (M, *S)
        return self.y0 + torch.tensordot(w, stacked, dims=1)


def polynomial_dense(
    y0: torch.Tensor, h: float, stages: Sequence[torch.Tensor], coefficients: Sequence[Sequence]
) -> LinearDense:
    """A Runge-Kutta continuous extension ``y0 + h sum_i b_i(theta) k_i``.

    ``coefficients[i][p]`` multiplies ``theta ** (p + 1)`` in ``b_i(theta)``.
    """
    rows = [[float(x) for x in row] for row in coefficients]
    kept = [i for i, row in enumerate(rows) if any(row)]

    def weights(theta: float) -> list[float]:
        powers = [theta ** (p + 1) for p in range(len(rows[0]))]
        return [h * sum(c * q for c, q in zip(rows[i], powers, strict=True)) for i in kept]

    return LinearDense(y0, [stages[i] for i in kept], weights)


def hermite_dense(
    y0: torch.Tensor, y1: torch.Tensor, f0: torch.Tensor, f1: torch.Tensor, h: float
) -> LinearDense:
    """Cubic Hermite interpolation from the end values and derivatives of a step."""

    def weights(theta: float) -> list[float]:
        t2, t3 = theta * theta, theta * theta * theta
        return [3 * t2 - 2 * t3, h * (t3 - 2 * t2 + theta), h * (t3 - t2)]

    return LinearDense(y0, [y1 - y0, f0, f1], weights)
