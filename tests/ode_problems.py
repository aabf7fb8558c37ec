"""Test problems with exact solutions, shared by the engine tests.

Everything here is float64 unless a dtype is passed explicitly; nothing
changes torch's global default dtype.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

F64 = torch.float64

# A damped rotation: eigenvalues -0.1 +- i, so y(t) = expm(A t) y0 spirals slowly inwards.
A_ROT = torch.tensor([[-0.1, 1.0], [-1.0, -0.1]], dtype=F64)
Y0_ROT = torch.tensor([1.0, 0.5], dtype=F64)


def rotation_rhs(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """dy/dt = A y for a state of shape (..., 2), in y's dtype."""
    return y @ A_ROT.to(y.dtype).T


def rotation_exact(times, y0: torch.Tensor = Y0_ROT) -> torch.Tensor:
    """expm(A t) y0 at every time, shape (len(times), 2), float64."""
    times = torch.as_tensor(times, dtype=F64).reshape(-1)
    y0 = y0.to(F64)
    return torch.stack([torch.linalg.matrix_exp(A_ROT * float(t)) @ y0 for t in times])


def oscillator_rhs(t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """The harmonic oscillator z' = (z2, -z1)."""
    return torch.stack([z[1], -z[0]])


def pendulum_rhs(t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """A nonlinear test problem: the pendulum z' = (z2, -sin z1)."""
    return torch.stack([z[1], -torch.sin(z[0])])


def fitted_slope(hs: Sequence[float], errors: Sequence[float]) -> float:
    """Least-squares slope of log(error) against log(h)."""
    assert all(e > 0 and math.isfinite(e) for e in errors), errors
    return float(np.polyfit(np.log(np.asarray(hs)), np.log(np.asarray(errors)), 1)[0])


class RecordingRHS:
    """Wraps a right-hand side and records every time at which it is evaluated (as floats)."""

    def __init__(self, rhs) -> None:
        self.rhs = rhs
        self.times: list[float] = []

    def __call__(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self.times.append(float(t))
        return self.rhs(t, y)
