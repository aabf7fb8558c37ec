"""A user's own system, as a user would write it: the SIR epidemic model (a first-order
``Physics``), a simulator for its data file, and a neural term for a hybrid.

The tests copy this file next to their configs and name its classes as
``custom_systems.py:SIR``; the Python route imports it.

    dS/dt = -beta S I + w R,   dI/dt = beta S I - gamma I,   dR/dt = gamma I - w R

Waning immunity ``w`` is in the simulated data only when asked for: the SIR
physics cannot express it (no term of it moves R back to S), and a neural term
can learn it.
"""

from __future__ import annotations

import os

import numpy as np
import torch
from scipy.integrate import solve_ivp
from torch import nn

from physode.datasets import Trajectories
from physode.models import MLP, Physics

BETA, GAMMA = 0.5, 0.1


class SIR(Physics):
    """Fractions of a population: susceptible, infected, recovered; time in days."""

    def __init__(self, beta: float = 0.3, gamma: float = 0.2) -> None:
        super().__init__(state_size=3)
        self.declare("beta", beta, units="1/day")
        self.declare("gamma", gamma, units="1/day")

    def variable_names(self) -> list[str]:
        return ["S", "I", "R"]

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        s, i = y[..., 0], y[..., 1]
        infection, recovery = self.beta * s * i, self.gamma * i
        return torch.stack([-infection, infection - recovery, recovery], dim=-1)


class FragileSIR(SIR):
    """SIR whose derivative is NaN while the environment variable ``SIR_BREAK`` is 1: a
    solver failure a test can switch on between two runs."""

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        out = super().forward(t, y)
        return out * float("nan") if os.environ.get("SIR_BREAK") == "1" else out


class Correction(nn.Module):
    """A learned term ``f(y)`` for the hybrid; sizes come from the data."""

    def __init__(self, in_features: int, out_features: int, width: int = 8) -> None:
        super().__init__()
        self.net = MLP(in_features, out_features, hidden=(width,), final_zero=True)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return self.net(y)


class NotAModule:
    """Not an ``nn.Module``: refused as a model."""


def simulate(
    n_trajectories: int = 3,
    n_times: int = 41,
    t_end: float = 40.0,
    waning: float = 0.0,
    order: tuple[str, ...] = ("S", "I", "R"),
    seed: int = 0,
) -> Trajectories:
    """Noise-free SIR trajectories (scipy's DOP853 at rtol 1e-12), fit window [0, t_end / 2],
    the variables written in ``order``."""
    rng = np.random.default_rng(seed)
    t = np.linspace(0.0, t_end, n_times)

    def rhs(_, y):
        s, i, r = y
        return [-BETA * s * i + waning * r, BETA * s * i - GAMMA * i, GAMMA * i - waning * r]

    infected = rng.uniform(0.01, 0.05, size=n_trajectories)
    starts = np.stack([1.0 - infected, infected, np.zeros_like(infected)], axis=1)
    state = np.stack(
        [
            solve_ivp(rhs, (0.0, t_end), y0, t_eval=t, method="DOP853", rtol=1e-12, atol=1e-14).y.T
            for y0 in starts
        ]
    )
    columns = [["S", "I", "R"].index(v) for v in order]
    return Trajectories(
        time=t,
        state=state[..., columns],
        variables=list(order),
        time_units="day",
        state_units=["1"] * 3,
        system="sir",
        parameters={"beta": BETA, "gamma": GAMMA},
        attributes={"fit_window": [0.0, t_end / 2]},
    )
