"""Fit the three rate constants of Robertson's reaction, a stiff system, from noisy data.

    A -> B        (k1 = 0.04)
    B + B -> C + B (k2 = 3e7)
    B + C -> A + C (k3 = 1e4)

Concentrations are in mol/L, time in seconds; ``b`` is recorded in 1e-4 mol/L (it never
exceeds 4e-5 mol/L), so the three observed variables are of comparable size. The data:
concentrations at 60 logarithmically spaced times over [1e-5, 1e5] s (and t = 0), with
1 % relative Gaussian noise. The rates span nine orders of magnitude and the fast one
makes the system stiff: an explicit method needs millions of steps, the Rosenbrock
method ``rodas5p`` a few hundred.

    physode fit examples/robertson.yaml     # simulates robertson.h5 on first use
    python examples/robertson.py            # the same fit from Python
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from scipy.integrate import solve_ivp

import physode
from physode.datasets import Trajectories, write_trajectories
from physode.models import Physics

#: The rate constants the data are simulated with (1/s, L/(mol s), L/(mol s)).
TRUE_RATES = {"k1": 0.04, "k2": 3e7, "k3": 1e4}
B_UNIT = 1e-4  # b is recorded in 1e-4 mol/L
HERE = Path(__file__).resolve().parent


class Robertson(Physics):
    """Robertson's kinetics; state ``[a, b / 1e-4, c]`` (mol/L, 1e-4 mol/L, mol/L)."""

    def __init__(self, k1: float = 0.1, k2: float = 1e7, k3: float = 3e4) -> None:
        super().__init__(state_size=3)
        # Positive rates are learned as logarithms: one learning rate serves all three.
        self.declare("k1", k1, units="1/s")
        self.declare("k2", k2, units="L/(mol s)")
        self.declare("k3", k3, units="L/(mol s)")

    def variable_names(self) -> list[str]:
        return ["a", "b", "c"]

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        a, b, c = y[..., 0], y[..., 1] * B_UNIT, y[..., 2]
        r1, r2, r3 = self.k1 * a, self.k2 * b * b, self.k3 * b * c
        return torch.stack([r3 - r1, (r1 - r2 - r3) / B_UNIT, r2], dim=-1)


def simulate(
    n_times: int = 60, noise: float = 0.01, fit_end: float = 1e5, seed: int = 0
) -> Trajectories:
    """One trajectory from ``[1, 0, 0]`` (scipy's Radau at rtol 1e-12) on a logarithmic
    grid, with relative Gaussian noise ``noise``; fit window ``[0, fit_end]``."""
    k1, k2, k3 = TRUE_RATES.values()

    def rhs(_, y):
        a, b, c = y
        return [-k1 * a + k3 * b * c, k1 * a - k3 * b * c - k2 * b * b, k2 * b * b]

    t = np.concatenate([[0.0], np.logspace(-5, 5, n_times)])
    exact = solve_ivp(
        rhs, (0.0, t[-1]), [1.0, 0.0, 0.0], "Radau", t_eval=t, rtol=1e-12, atol=1e-16
    ).y.T
    exact[:, 1] /= B_UNIT
    rng = np.random.default_rng(seed)
    state = exact * (1.0 + noise * rng.standard_normal(exact.shape))
    state[0] = exact[0]  # the initial state is known
    return Trajectories(
        time=t,
        state=state[None],
        variables=["a", "b", "c"],
        time_units="s",
        state_units=["mol/L", "1e-4 mol/L", "mol/L"],
        system="robertson",
        description=f"Robertson's reaction, relative noise {noise:g}, seed {seed}",
        parameters=dict(TRUE_RATES),
        parameter_units={"k1": "1/s", "k2": "L/(mol s)", "k3": "L/(mol s)"},
        attributes={"fit_window": [0.0, fit_end]},
    )


def main(run_dir: Path) -> dict[str, float]:
    """Simulate the data (if missing), fit the rates from a guess, print their errors."""
    path = HERE / "robertson.h5"
    if not path.exists():
        write_trajectories(path, simulate())
    result = physode.fit(
        Robertson(),
        path,
        solver={"method": "rodas5p", "grad": "aca", "rtol": 1e-6, "atol": 1e-10},
        train={
            "epochs": 40,
            "optimizer": "lbfgs",
            "lr": 1.0,
            "dtype": "float64",
            "stop": {"rtol": 1e-8, "patience": 2},
        },
        run_dir=run_dir,
    )
    errors = {k: abs(result.parameters[k] / v - 1) for k, v in TRUE_RATES.items()}
    for k, v in TRUE_RATES.items():
        print(f"{k}: {result.parameters[k]:.6g} (true {v:g}, relative error {errors[k]:.1e})")
    return errors


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", type=Path, default=HERE / "runs" / "robertson_py")
    main(parser.parse_args().output)
