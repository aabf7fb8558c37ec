"""Work-precision table: the global error each adaptive method reaches against its work.

For every adaptive method, three standard non-stiff problems and a ladder of
tolerances (rtol = 1e-3 ... 1e-10, atol = rtol / 100), the table gives the largest
absolute error over all outputs and components against a reference solution,
and the function evaluations spent. A second table sets each method's error
against the median of the others' at the same rtol: a tolerance means the same
thing for every method when that ratio stays within about 10 either way.

Run from the repository root::

    python benchmarks/work_precision.py            # about 4 minutes on 2 cores
    python benchmarks/work_precision.py --rtols 1e-4 1e-6 1e-8

The second-order methods (heun_euler, alf) reach ``max_steps`` (100000) at the
tightest tolerances: those cells say so and most of the run time is spent there.

Problems (float64, 101 outputs evenly spaced on [0, T]):

- ``oscillator``: y'' = -w^2 y, w = 3, y(0) = 1, y'(0) = 0, T = 10; exact
  y = cos(w t), y' = -w sin(w t).
- ``kepler``: the two-body problem with eccentricity 0.5, (q1, q2, p1, p2),
  q(0) = (1 - e, 0), p(0) = (0, sqrt((1 + e) / (1 - e))), T = 4 pi (two
  periods); exact through Kepler's equation, solved by Newton's method.
- ``vdp``: van der Pol, mu = 1, y(0) = (2, 0), T = 20; reference from
  ``scipy.integrate.solve_ivp`` (DOP853, rtol = atol = 1e-13).
"""

from __future__ import annotations

import argparse
import math
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy.integrate import solve_ivp

import physode
from physode.solvers.registry import ADAPTIVE_METHODS

sys.path.insert(0, str(Path(__file__).resolve().parent))
from engine import markdown_table  # a sibling module, found through the line above

F64 = torch.float64
N_OUTPUTS = 101


@dataclass
class Problem:
    name: str
    func: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    y0: torch.Tensor
    t_end: float
    exact: Callable[[np.ndarray], np.ndarray]  # times (T,) -> states (T, N)

    @property
    def t(self) -> torch.Tensor:
        return torch.linspace(0.0, self.t_end, N_OUTPUTS, dtype=F64)


def oscillator(w: float = 3.0) -> Problem:
    def func(t, y):
        return torch.stack([y[1], -(w * w) * y[0]])

    def exact(t):
        return np.stack([np.cos(w * t), -w * np.sin(w * t)], axis=-1)

    return Problem("oscillator", func, torch.tensor([1.0, 0.0], dtype=F64), 10.0, exact)


def kepler(e: float = 0.5) -> Problem:
    def func(t, y):
        q, p = y[:2], y[2:]
        r3 = (q * q).sum().pow(1.5)
        return torch.cat([p, -q / r3])

    def exact(t):
        mean_anomaly = t  # period 2 pi: semi-major axis 1, GM 1
        ecc = mean_anomaly.copy()
        for _ in range(50):  # Newton on E - e sin E = M
            ecc = ecc - (ecc - e * np.sin(ecc) - mean_anomaly) / (1.0 - e * np.cos(ecc))
        q1, q2 = np.cos(ecc) - e, math.sqrt(1 - e * e) * np.sin(ecc)
        rate = 1.0 / (1.0 - e * np.cos(ecc))  # dE/dt
        p1, p2 = -np.sin(ecc) * rate, math.sqrt(1 - e * e) * np.cos(ecc) * rate
        return np.stack([q1, q2, p1, p2], axis=-1)

    y0 = torch.tensor([1 - e, 0.0, 0.0, math.sqrt((1 + e) / (1 - e))], dtype=F64)
    return Problem("kepler", func, y0, 4 * math.pi, exact)


def van_der_pol(mu: float = 1.0) -> Problem:
    def func(t, y):
        return torch.stack([y[1], mu * (1 - y[0] * y[0]) * y[1] - y[0]])

    y0 = torch.tensor([2.0, 0.0], dtype=F64)

    def exact(t):
        sol = solve_ivp(
            lambda _, y: [y[1], mu * (1 - y[0] ** 2) * y[1] - y[0]],
            (0.0, float(t[-1])),
            y0.tolist(),
            method="DOP853",
            t_eval=t,
            rtol=1e-13,
            atol=1e-13,
        )
        return sol.y.T

    return Problem("vdp", func, y0, 20.0, exact)


PROBLEMS = {p.name: p for p in (oscillator(), kepler(), van_der_pol())}


@dataclass
class Cell:
    error: float | None
    evals: int | None
    failure: str | None = None


def run_cell(p: Problem, method: str, rtol: float) -> Cell:
    reference = torch.from_numpy(p.exact(p.t.numpy()))
    try:
        sol = physode.solve(p.func, p.y0, p.t, method=method, rtol=rtol, atol=rtol / 100)
    except physode.SolverError as exc:
        return Cell(None, None, f"fail ({exc.reason})")
    return Cell((sol.ys - reference).abs().max().item(), sol.stats.n_f_evals)


def worst_ratio(
    cells: dict[tuple[str, str, float], Cell], method: str, rtol: float, methods, problems
) -> str:
    """The ratio (over the problems) of ``method``'s error to the median of the others'
    at ``rtol`` that lies farthest from 1, as table text."""
    ratios = []
    for name in problems:
        mine = cells[name, method, rtol].error
        others = [cells[name, m, rtol].error for m in methods if m != method]
        others = [x for x in others if x is not None]
        if mine is not None and others:
            ratios.append(mine / statistics.median(others))
    if not ratios:
        return "n/a"
    return f"{max(ratios, key=lambda r: abs(math.log(r))):.2g}"


def rtol_table(methods: list[str], rtols: list[float], text: Callable[[str, float], str]) -> str:
    """A table with a row per method and a column per rtol, cells from ``text(method, rtol)``."""
    header = ["method", *(f"rtol {r:.0e}" for r in rtols)]
    return markdown_table(header, [[m, *(text(m, r) for r in rtols)] for m in methods])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rtols", type=float, nargs="+", default=[10.0**-k for k in range(3, 11)])
    parser.add_argument("--methods", nargs="+", default=list(ADAPTIVE_METHODS))
    parser.add_argument("--problems", nargs="+", choices=sorted(PROBLEMS), default=list(PROBLEMS))
    args = parser.parse_args(argv)
    print(
        f"physode {physode.__version__}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, Python {platform.python_version()}; "
        "atol = rtol / 100, float64, 101 outputs"
    )
    start = time.perf_counter()
    cells: dict[tuple[str, str, float], Cell] = {}
    for name in args.problems:
        for method in args.methods:
            print(f"  {name}: {method}", file=sys.stderr, flush=True)
            for rtol in args.rtols:
                cells[name, method, rtol] = run_cell(PROBLEMS[name], method, rtol)
    for name in args.problems:
        print()
        print(f"({name}) largest |error| / function evaluations")
        print()

        def error_and_evals(method: str, rtol: float, name: str = name) -> str:
            c = cells[name, method, rtol]
            return c.failure or f"{c.error:.1e} / {c.evals}"

        print(rtol_table(args.methods, args.rtols, error_and_evals))
    print()
    print("Error / median error of the other methods at the same rtol (within 0.1-10: the")
    print("tolerance means the same as for the others); the worst over the three problems:")
    print()
    print(
        rtol_table(
            args.methods,
            args.rtols,
            lambda m, r: worst_ratio(cells, m, r, args.methods, args.problems),
        )
    )
    print()
    print(f"total {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
