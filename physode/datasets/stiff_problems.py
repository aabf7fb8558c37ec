"""The classical stiff test problems (Hairer & Wanner, Solving ODEs II; the IVP test set of
Mazzia & Magherini), as torch right-hand sides.

Each :class:`StiffProblem` has ``func(t, y)`` (batched over leading dimensions), ``y0``
(float64), the span ``t0, t1`` and output times on which it is usually checked.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

F64 = torch.float64


@dataclass(frozen=True)
class StiffProblem:
    name: str
    func: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    y0: tuple[float, ...]
    t0: float
    t1: float
    #: An absolute tolerance fitting the components' scales (relative to rtol).
    atol_factor: float = 1.0

    def initial_state(self) -> torch.Tensor:
        return torch.tensor(self.y0, dtype=F64)


def robertson_rhs(t: torch.Tensor, y: torch.Tensor, k=(0.04, 3e7, 1e4)) -> torch.Tensor:
    """Robertson's reaction A -> B (k1), 2B -> B + C (k2), B + C -> A + C (k3)."""
    k1, k2, k3 = k
    a, b, c = y[..., 0], y[..., 1], y[..., 2]
    return torch.stack([-k1 * a + k3 * b * c, k1 * a - k3 * b * c - k2 * b * b, k2 * b * b], dim=-1)


def van_der_pol_rhs(t: torch.Tensor, y: torch.Tensor, mu: float = 1000.0) -> torch.Tensor:
    """The van der Pol oscillator in its unscaled form, ``x'' = mu (1 - x^2) x' - x``."""
    x, v = y[..., 0], y[..., 1]
    return torch.stack([v, mu * (1 - x * x) * v - x], dim=-1)


def hires_rhs(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """HIRES: eight reactions of plant physiology (Schäfer 1975)."""
    y1, y2, y3, y4, y5, y6, y7, y8 = (y[..., i] for i in range(8))
    return torch.stack(
        [
            -1.71 * y1 + 0.43 * y2 + 8.32 * y3 + 0.0007,
            1.71 * y1 - 8.75 * y2,
            -10.03 * y3 + 0.43 * y4 + 0.035 * y5,
            8.32 * y2 + 1.71 * y3 - 1.12 * y4,
            -1.745 * y5 + 0.43 * y6 + 0.43 * y7,
            -280.0 * y6 * y8 + 0.69 * y4 + 1.71 * y5 - 0.43 * y6 + 0.69 * y7,
            280.0 * y6 * y8 - 1.81 * y7,
            -280.0 * y6 * y8 + 1.81 * y7,
        ],
        dim=-1,
    )


def orego_rhs(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """OREGO: the Oregonator, Field & Noyes' model of the Belousov-Zhabotinsky reaction."""
    y1, y2, y3 = y[..., 0], y[..., 1], y[..., 2]
    return torch.stack(
        [
            77.27 * (y2 + y1 * (1 - 8.375e-6 * y1 - y2)),
            (y3 - (1 + y1) * y2) / 77.27,
            0.161 * (y1 - y3),
        ],
        dim=-1,
    )


ROBERTSON = StiffProblem("robertson", robertson_rhs, (1.0, 0.0, 0.0), 0.0, 1e5, 1e-4)
VAN_DER_POL = StiffProblem("van_der_pol", van_der_pol_rhs, (2.0, 0.0), 0.0, 2000.0)
HIRES = StiffProblem(
    "hires", hires_rhs, (1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0057), 0.0, 321.8122, 1e-4
)
OREGO = StiffProblem("orego", orego_rhs, (1.0, 2.0, 3.0), 0.0, 360.0)

PROBLEMS = {p.name: p for p in (ROBERTSON, VAN_DER_POL, HIRES, OREGO)}
