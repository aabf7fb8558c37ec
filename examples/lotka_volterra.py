"""Recover the four rates of a Lotka-Volterra predator-prey system from population counts.

    d prey / dt     = alpha prey - beta prey predator
    d predator / dt = delta prey predator - gamma predator

Populations are densities in thousands of animals per km^2, time is in months.
The data: 8 trajectories from random starting populations over 20 months; the
fit sees the first 10 (the file's fit_window) and predicts the next 10.

The same fit, two ways (both write a run directory with metrics, params.json,
predictions.nc and plots):

    python examples/lotka_volterra.py            # Python: physode.fit(model, file, ...)
    physode fit examples/lotka_volterra.yaml     # the command line: the config names
                                                 # LotkaVolterra and simulate in this file
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from scipy.integrate import solve_ivp

import physode
from physode.datasets import Trajectories, write_trajectories
from physode.models import Physics

#: The rates the data are simulated with, in 1/month (beta, delta in 1/(month 1000 km^-2)).
TRUE_RATES = {"alpha": 1.1, "beta": 0.4, "gamma": 0.4, "delta": 0.1}
HERE = Path(__file__).resolve().parent


class LotkaVolterra(Physics):
    """Predator-prey dynamics; state ``[prey, predator]`` in 1000 km^-2, time in months."""

    def __init__(
        self, alpha: float = 1.0, beta: float = 0.5, gamma: float = 0.5, delta: float = 0.2
    ) -> None:
        super().__init__(state_size=2)
        self.declare("alpha", alpha, units="1/month")  # prey growth
        self.declare("beta", beta, units="1/(month 1000 km-2)")  # predation
        self.declare("gamma", gamma, units="1/month")  # predator death
        self.declare("delta", delta, units="1/(month 1000 km-2)")  # predator growth per prey

    def variable_names(self) -> list[str]:
        return ["prey", "predator"]

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        prey, predator = y[..., 0], y[..., 1]
        return torch.stack(
            [
                self.alpha * prey - self.beta * prey * predator,
                self.delta * prey * predator - self.gamma * predator,
            ],
            dim=-1,
        )


def simulate(
    n_trajectories: int = 8,
    n_times: int = 201,
    t_end: float = 20.0,
    fit_end: float = 10.0,
    noise: float = 0.0,
    seed: int = 0,
) -> Trajectories:
    """Trajectories of the true system (scipy's DOP853 at rtol 1e-12), with optional
    Gaussian noise of relative size ``noise``; the fit window is ``[0, fit_end]``."""
    rng = np.random.default_rng(seed)
    t = np.linspace(0.0, t_end, n_times)
    a, b, g, d = (TRUE_RATES[k] for k in ("alpha", "beta", "gamma", "delta"))

    def rhs(_, y):
        return [a * y[0] - b * y[0] * y[1], d * y[0] * y[1] - g * y[1]]

    starts = rng.uniform([5.0, 1.0], [15.0, 4.0], size=(n_trajectories, 2))
    state = np.stack(
        [
            solve_ivp(rhs, (0.0, t_end), y0, t_eval=t, method="DOP853", rtol=1e-12, atol=1e-12).y.T
            for y0 in starts
        ]
    )
    state = state * (1.0 + noise * rng.standard_normal(state.shape))
    return Trajectories(
        time=t,
        state=state,
        variables=["prey", "predator"],
        time_units="month",
        state_units=["1000 km-2", "1000 km-2"],
        system="lotka_volterra",
        description=f"Lotka-Volterra predator-prey, relative noise {noise:g}, seed {seed}",
        parameters=dict(TRUE_RATES),
        parameter_units={k: "1/month" for k in TRUE_RATES},
        attributes={"fit_window": [0.0, fit_end]},
    )


def main(run_dir: Path, noise: float = 0.0) -> dict[str, float]:
    """Simulate the data file (if missing), fit from a guess, print the rates' errors."""
    path = HERE / ("lotka_volterra.h5" if noise == 0 else f"lotka_volterra_noise{noise:g}.h5")
    if not path.exists():
        write_trajectories(path, simulate(noise=noise))
    model = LotkaVolterra(alpha=0.8, beta=0.3, gamma=0.6, delta=0.15)  # a rough guess
    tic = time.perf_counter()
    result = physode.fit(
        model,
        path,
        solver={"method": "dopri5", "grad": "aca", "rtol": 1e-8, "atol": 1e-9},
        train={
            "epochs": 30,
            "optimizer": "lbfgs",
            "lr": 1.0,
            "dtype": "float64",
            "stop": {"rtol": 1e-9, "patience": 1},
        },
        run_dir=run_dir,
    )
    wall = time.perf_counter() - tic
    errors = {k: abs(result.parameters[k] - v) / v for k, v in TRUE_RATES.items()}
    for k, v in TRUE_RATES.items():
        print(f"{k:6s} {result.parameters[k]:.8f}  (true {v}, relative error {errors[k]:.1e})")
    m = result.metrics
    print(f"fit MSE {m['fit_mse']:.2e}, extrapolation MSE {m['extrapolation_mse']:.2e}")
    print(f"{result.epochs} epochs, {wall:.1f} s; run directory {result.run_dir}")
    return errors


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", type=Path, default=HERE / "runs" / "lotka_volterra_py")
    parser.add_argument("--noise", type=float, default=0.0, help="relative noise of the counts")
    args = parser.parse_args()
    main(args.output, noise=args.noise)
