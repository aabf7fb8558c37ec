"""DETEST work-precision table: three 8th-order Dormand-Prince solvers on the non-stiff DETEST set.

The problems are classes A-E of Hull, Enright, Fellen & Sedgwick (1972), "Comparing
numerical methods for ordinary differential equations", SIAM J. Numer. Anal. 9(4),
each integrated from t = 0 to t = 20 in float64 on the CPU by

- physode's ``dopri8`` (``physode.solve``; evaluations from ``Solution.stats``),
- torchdiffeq's ``dopri8`` (``torchdiffeq.odeint``; evaluations from a counting wrapper),
- scipy's ``solve_ivp(method="DOP853")`` (``sol.nfev``; the torch right-hand side
  behind a numpy wrapper, so all three evaluate the same function).

For each problem, tolerance (rtol = atol) and solver the first table gives the
function evaluations and the error at t = 20, the second the time of one solve (the
least of ``--repeat`` solves). A summary gives per tolerance the total evaluations,
the geometric mean error of each solver and on how many problems physode's error is
no larger than each other solver's. The reference solutions are independent of the
three solvers: closed forms where the problem has one, mpmath's matrix exponential
for the linear problems, and mpmath's Taylor-series integrator ``odefun`` (30 digits)
for the rest; the reference column says which.

torchdiffeq steps past t = 20 and returns its dense-output interpolant's value there,
which bounds its accuracy (about 1e-9 at tol 1e-12); with ``options={"step_t": [20.0]}``
its errors fall to physode's level for the same evaluations. The table uses its defaults.

Run from the repository root::

    python benchmarks/detest.py   # about 70 s on 2 cores, 55 s of it the mpmath references
    python benchmarks/detest.py --tols 1e-6 1e-9 1e-12 --threads 1 --repeat 3
    python benchmarks/detest.py --problems C5 D5 --physode-method dopri5
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import mpmath
import numpy as np
import scipy
import torch
import torchdiffeq
from scipy.integrate import solve_ivp

import physode
from physode.solvers import METHODS

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from conditions import add_arguments, applied  # sibling modules, found through the line above
from engine import markdown_table

F64 = torch.float64
T_END = 20.0
DPS = 30  # mpmath's working digits for the references
ERR_FLOOR = 1e-17  # an error of 0 counts as this in the geometric means
SOLVERS = ("physode", "tdq", "scipy")

# A right-hand side written once for torch, numpy and mpmath: (t, y, xp) -> components,
# xp being the module that supplies sin, cos, exp and sqrt.
Rhs = Callable[[Any, Sequence[Any], ModuleType], list[Any]]
Func = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Exact = Callable[[Any], list[Any]]  # mpmath time -> the state at that time


@dataclass(frozen=True)
class Problem:
    name: str
    y0: tuple[float, ...]
    func: Func
    reference: Callable[[float], list[Any]]  # t_end -> the reference state
    ref_kind: str
    t_end: float = T_END

    def y_ref(self) -> np.ndarray:
        with mpmath.workdps(DPS):
            return np.array([float(v) for v in self.reference(self.t_end)])


# ----------------------------------------------------------------------------- problems


def torch_func(rhs: Rhs) -> Func:
    return lambda t, y: torch.stack(rhs(t, y, torch))


def taylor_reference(rhs: Rhs, y0: Sequence[float]) -> Callable[[float], list[Any]]:
    def reference(t_end: float) -> list[Any]:
        return mpmath.odefun(lambda t, y: rhs(t, y, mpmath), 0, list(y0))(t_end)

    return reference


def nonlinear(name: str, y0: Sequence[float], rhs: Rhs, exact: Exact | None = None) -> Problem:
    """A problem from a generic right-hand side; without ``exact``, an mpmath Taylor reference."""
    if exact is None:
        return Problem(name, tuple(y0), torch_func(rhs), taylor_reference(rhs, y0), "Taylor")
    return Problem(name, tuple(y0), torch_func(rhs), exact, "exact")


def linear(name: str, matrix: np.ndarray, y0: Sequence[float]) -> Problem:
    """y' = A y; the reference exp(A t) y0 in mpmath."""
    a = torch.from_numpy(matrix)

    def reference(t_end: float) -> list[Any]:
        return list(mpmath.expm(mpmath.matrix(matrix.tolist()) * t_end) * mpmath.matrix(y0))

    return Problem(name, tuple(y0), lambda t, y: a @ y, reference, "expm")


def first_unit(n: int) -> list[float]:
    return [1.0] + [0.0] * (n - 1)


def class_a() -> list[Problem]:
    def a5_exact(t: Any) -> list[Any]:
        # Along the solution ln sqrt(t^2 + y^2) + atan(y / t) = ln 4 + pi / 2 (a log spiral);
        # the left side grows with y for y > -t.
        level = mpmath.log(4) + mpmath.pi / 2
        g = lambda y: mpmath.log(mpmath.hypot(t, y)) + mpmath.atan(y / t) - level  # noqa: E731
        return [mpmath.findroot(g, (-t * 0.999, 0), solver="illinois")]

    return [
        nonlinear("A1", [1.0], lambda t, y, xp: [-y[0]], lambda t: [mpmath.exp(-t)]),
        nonlinear(
            "A2", [1.0], lambda t, y, xp: [-(y[0] ** 3) / 2], lambda t: [1 / mpmath.sqrt(t + 1)]
        ),
        nonlinear(
            "A3",
            [1.0],
            lambda t, y, xp: [y[0] * xp.cos(t)],
            lambda t: [mpmath.exp(mpmath.sin(t))],
        ),
        nonlinear(
            "A4",
            [1.0],
            lambda t, y, xp: [y[0] / 4 * (1 - y[0] / 20)],
            lambda t: [20 / (1 + 19 * mpmath.exp(-t / 4))],
        ),
        nonlinear("A5", [4.0], lambda t, y, xp: [(y[0] - t) / (y[0] + t)], a5_exact),
    ]


def class_b() -> list[Problem]:
    def b4(t: Any, y: Sequence[Any], xp: ModuleType) -> list[Any]:
        a = xp.sqrt(y[0] * y[0] + y[1] * y[1])
        return [-y[1] - y[0] * y[2] / a, y[0] - y[1] * y[2] / a, y[0] / a]

    def b4_exact(t: Any) -> list[Any]:  # polar: radius 2 + cos t, angle t; y3 = sin t
        r = 2 + mpmath.cos(t)
        return [r * mpmath.cos(t), r * mpmath.sin(t), mpmath.sin(t)]

    m = 0.51
    return [
        nonlinear(
            "B1",
            [1.0, 3.0],
            lambda t, y, xp: [2 * (y[0] - y[0] * y[1]), -(y[1] - y[0] * y[1])],
        ),
        linear("B2", np.array([[-1.0, 1, 0], [1, -2, 1], [0, 1, -1]]), [2.0, 0.0, 1.0]),
        nonlinear(
            "B3",
            [1.0, 0.0, 0.0],
            lambda t, y, xp: [-y[0], y[0] - y[1] * y[1], y[1] * y[1]],
        ),
        nonlinear("B4", [3.0, 0.0, 0.0], b4, b4_exact),
        nonlinear(  # Euler's rigid body: Jacobi's sn, cn, dn with parameter m
            "B5",
            [0.0, 1.0, 1.0],
            lambda t, y, xp: [y[1] * y[2], -y[0] * y[2], -m * y[0] * y[1]],
            lambda t: [mpmath.ellipfun(k, t, m=m) for k in ("sn", "cn", "dn")],
        ),
    ]


def bidiagonal(diagonal: Sequence[float], sub: Sequence[float]) -> np.ndarray:
    return np.diag(np.asarray(diagonal, dtype=float)) + np.diag(np.asarray(sub, dtype=float), -1)


def tridiagonal(n: int) -> np.ndarray:
    return bidiagonal([-2.0] * n, [1.0] * (n - 1)) + np.diag(np.ones(n - 1), 1)


# The outer solar system in heliocentric coordinates (DETEST C5): Jupiter, Saturn,
# Uranus, Neptune, Pluto; AU, units of 100 days, masses relative to the Sun.
C5_K2 = 2.95912208286
C5_M0 = 1.00000597682
C5_MASSES = (
    0.000954786104043,
    0.000285583733151,
    0.0000437273164546,
    0.0000517759138449,
    2.77777777778e-6,
)
C5_Q0 = (
    (3.42947415189, 3.35386959711, 1.35494901715),
    (6.64145542550, 5.97156957878, 2.18231499728),
    (11.2630437207, 14.6952576794, 6.27960525067),
    (-30.1552268759, 1.65699966404, 1.43785752721),
    (-21.1238353380, 28.4465098142, 15.3882659679),
)
C5_V0 = (
    (-0.557160570446, 0.505696783289, 0.230578543901),
    (-0.415570776342, 0.365682722812, 0.169143213293),
    (-0.325325669158, 0.189706021964, 0.0877265322780),
    (-0.0240476254170, -0.287659532608, -0.117219543175),
    (-0.176860753121, -0.216393453025, -0.0148647893090),
)


def c5(t: Any, y: Sequence[Any], xp: ModuleType) -> list[Any]:
    """y = 15 positions (body by body, x y z) then 15 velocities."""
    n = len(C5_MASSES)
    q = [[y[3 * i + k] for k in range(3)] for i in range(n)]

    def cube_norm(v: Sequence[Any]) -> Any:
        s = sum(c * c for c in v)
        return s * xp.sqrt(s)

    r3 = [cube_norm(qi) for qi in q]
    d3 = {
        (i, j): cube_norm([a - b for a, b in zip(q[i], q[j], strict=True)])
        for i in range(n)
        for j in range(i)
    }
    acc = []
    for i in range(n):
        for k in range(3):
            pull = sum(
                C5_MASSES[j] * ((q[j][k] - q[i][k]) / d3[max(i, j), min(i, j)] - q[j][k] / r3[j])
                for j in range(n)
                if j != i
            )
            acc.append(C5_K2 * (pull - (C5_M0 + C5_MASSES[i]) * q[i][k] / r3[i]))
    return [y[3 * n + m] for m in range(3 * n)] + acc


def class_c() -> list[Problem]:
    c5_y0 = [c for body in C5_Q0 for c in body] + [c for body in C5_V0 for c in body]
    return [
        linear("C1", bidiagonal([-1.0] * 9 + [0.0], [1.0] * 9), first_unit(10)),
        linear(
            "C2",
            bidiagonal([-float(i) for i in range(1, 10)] + [0.0], range(1, 10)),
            first_unit(10),
        ),
        linear("C3", tridiagonal(10), first_unit(10)),
        linear("C4", tridiagonal(51), first_unit(51)),
        nonlinear("C5", c5_y0, c5),
    ]


def kepler_rhs(t: Any, y: Sequence[Any], xp: ModuleType) -> list[Any]:
    s = y[0] * y[0] + y[1] * y[1]
    r3 = s * xp.sqrt(s)
    return [y[2], y[3], -y[0] / r3, -y[1] / r3]


def kepler_exact(e: float) -> Exact:
    """Starting at perihelion, semi-major axis 1 (period 2 pi): through Kepler's equation."""

    def exact(t: Any) -> list[Any]:
        ecc = mpmath.findroot(
            lambda x: x - e * mpmath.sin(x) - t, (t - 1, t + 1), solver="illinois"
        )
        c, s, b = mpmath.cos(ecc), mpmath.sin(ecc), mpmath.sqrt(1 - mpmath.mpf(e) ** 2)
        rate = 1 / (1 - e * c)  # dE/dt
        return [c - e, b * s, -s * rate, b * c * rate]

    return exact


def class_d() -> list[Problem]:
    return [
        nonlinear(
            f"D{i}", [1 - e, 0.0, 0.0, math.sqrt((1 + e) / (1 - e))], kepler_rhs, kepler_exact(e)
        )
        for i, e in enumerate((0.1, 0.3, 0.5, 0.7, 0.9), start=1)
    ]


def class_e() -> list[Problem]:
    e1_y0 = [0.671396707141803, 0.0954005144474744]

    def e1_exact(t: Any) -> list[Any]:
        # Bessel's equation of order 1/2 in x = t + 1: y = (a sin x + b cos x) / sqrt(x),
        # a and b fitted to the given (rounded) initial values.
        s, c = mpmath.sin(1), mpmath.cos(1)
        p, q = mpmath.mpf(e1_y0[0]), e1_y0[1] + mpmath.mpf(e1_y0[0]) / 2
        a, b = p * s + q * c, p * c - q * s
        x = t + 1
        u = a * mpmath.sin(x) + b * mpmath.cos(x)
        du = a * mpmath.cos(x) - b * mpmath.sin(x)
        return [u / mpmath.sqrt(x), du / mpmath.sqrt(x) - u / (2 * x ** mpmath.mpf(1.5))]

    def e4_exact(t: Any) -> list[Any]:  # y' = sqrt(0.8) tanh(sqrt(0.128) t)
        k = mpmath.sqrt(mpmath.mpf("0.128"))
        return [30 + 2.5 * mpmath.log(mpmath.cosh(k * t)), mpmath.sqrt(0.8) * mpmath.tanh(k * t)]

    def e5_exact(t: Any) -> list[Any]:  # asinh y' = ln(25 / (25 - t))
        w = 25 / (25 - t)
        return [(25 * mpmath.log(w) - t + t * t / 50) / 2, (w - 1 / w) / 2]

    return [
        nonlinear(
            "E1",
            e1_y0,
            lambda t, y, xp: [y[1], -(y[1] / (t + 1) + (1 - 0.25 / (t + 1) ** 2) * y[0])],
            e1_exact,
        ),
        nonlinear("E2", [2.0, 0.0], lambda t, y, xp: [y[1], (1 - y[0] ** 2) * y[1] - y[0]]),
        nonlinear(
            "E3",
            [0.0, 0.0],
            lambda t, y, xp: [y[1], y[0] ** 3 / 6 - y[0] + 2 * xp.sin(2.78535 * t)],
        ),
        nonlinear("E4", [30.0, 0.0], lambda t, y, xp: [y[1], 0.32 - 0.4 * y[1] ** 2], e4_exact),
        nonlinear(
            "E5",
            [0.0, 0.0],
            lambda t, y, xp: [y[1], xp.sqrt(1 + y[1] ** 2) / (25 - t)],
            e5_exact,
        ),
    ]


def all_problems() -> list[Problem]:
    return [*class_a(), *class_b(), *class_c(), *class_d(), *class_e()]


# ----------------------------------------------------------------------------- solvers

Solve = Callable[[Problem, float], tuple[np.ndarray, int]]  # -> (state at t_end, evaluations)


class Counted:
    """Counts the calls of a right-hand side."""

    def __init__(self, func: Callable[..., Any]) -> None:
        self.func = func
        self.n = 0

    def __call__(self, t: Any, y: Any) -> Any:
        self.n += 1
        return self.func(t, y)


def initial(p: Problem) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.tensor(p.y0, dtype=F64), torch.tensor([0.0, p.t_end], dtype=F64)


def physode_solver(method: str) -> Solve:
    def solve(p: Problem, tol: float) -> tuple[np.ndarray, int]:
        y0, t = initial(p)
        sol = physode.solve(p.func, y0, t, method=method, rtol=tol, atol=tol)
        return sol.ys[-1].numpy(), sol.stats.n_f_evals

    return solve


def tdq_solve(p: Problem, tol: float) -> tuple[np.ndarray, int]:
    y0, t = initial(p)
    func = Counted(p.func)
    ys = torchdiffeq.odeint(func, y0, t, method="dopri8", rtol=tol, atol=tol)
    return ys[-1].numpy(), func.n


def scipy_solve(p: Problem, tol: float) -> tuple[np.ndarray, int]:
    def func(t: float, y: np.ndarray) -> np.ndarray:
        return p.func(torch.tensor(t, dtype=F64), torch.from_numpy(y)).numpy()

    sol = solve_ivp(func, (0.0, p.t_end), list(p.y0), method="DOP853", rtol=tol, atol=tol)
    if not sol.success:
        raise RuntimeError(sol.message)
    return sol.y[:, -1], sol.nfev


# ----------------------------------------------------------------------------- measuring


@dataclass(frozen=True)
class Run:
    evals: int = 0
    err: float = math.nan
    seconds: float = math.nan
    failure: str | None = None  # "ExceptionType: message" when the solver raised


def error(y: np.ndarray, y_ref: np.ndarray) -> float:
    return float(np.max(np.abs(y - y_ref)) / max(1.0, float(np.max(np.abs(y_ref)))))


def describe(exc: Exception) -> str:
    first = str(exc).strip().splitlines()[0][:120] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def measure(solve: Solve, p: Problem, tol: float, y_ref: np.ndarray, repeat: int) -> Run:
    """Solves ``repeat`` times; the least time, the evaluations and error of the last solve."""
    best = math.inf
    try:
        with torch.no_grad():
            for _ in range(repeat):
                start = time.perf_counter()
                y, evals = solve(p, tol)
                best = min(best, time.perf_counter() - start)
    except Exception as exc:  # any failure becomes a table cell
        return Run(failure=describe(exc))
    return Run(evals, error(y, y_ref), best)


Results = dict[tuple[str, float, str], Run]  # (problem, tol, solver) -> run


def run_all(
    problems: list[Problem], tols: list[float], solvers: dict[str, Solve], repeat: int
) -> tuple[Results, dict[str, float]]:
    """All the solves; also the seconds each reference took."""
    results: Results = {}
    ref_seconds = {}
    for p in problems:
        start = time.perf_counter()
        y_ref = p.y_ref()
        ref_seconds[p.name] = time.perf_counter() - start
        for tol in tols:
            for label, solve in solvers.items():
                results[p.name, tol, label] = measure(solve, p, tol, y_ref, repeat)
        print(f"  {p.name} done (reference {ref_seconds[p.name]:.1f} s)", file=sys.stderr)
    return results, ref_seconds


# ----------------------------------------------------------------------------- tables


class Footnotes:
    """Numbers the failures as they are printed."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.index: dict[str, int] = {}

    def mark(self, key: str, failure: str) -> str:
        if key not in self.index:
            self.lines.append(f"[{len(self.lines) + 1}] {key}: {failure}")
            self.index[key] = len(self.lines)
        return f"fail[{self.index[key]}]"


QUANTITIES: dict[str, Callable[[Run], str]] = {
    "evals": lambda r: str(r.evals),
    "err": lambda r: f"{r.err:.1e}",
    "ms": lambda r: f"{1e3 * r.seconds:.1f}",
}


def triple(results: Results, name: str, tol: float, quantity: str, notes: Footnotes) -> str:
    cells = []
    for s in SOLVERS:
        run = results[name, tol, s]
        key = f"{name} tol {tol:.0e} {s}"
        cells.append(notes.mark(key, run.failure) if run.failure else QUANTITIES[quantity](run))
    return " / ".join(cells)


def problem_table(
    results: Results,
    problems: list[Problem],
    tols: list[float],
    quantities: list[str],
    notes: Footnotes,
) -> str:
    header = ["problem", "reference"] + [
        f"{tol:.0e} {q} {' / '.join(SOLVERS)}" for tol in tols for q in quantities
    ]
    rows = [
        [p.name, p.ref_kind]
        + [triple(results, p.name, tol, q, notes) for tol in tols for q in quantities]
        for p in problems
    ]
    return markdown_table(header, rows, n_text=2)


def geometric_mean(values: list[float]) -> float:
    return math.exp(sum(math.log(max(v, ERR_FLOOR)) for v in values) / len(values))


def summary_table(results: Results, problems: list[Problem], tols: list[float]) -> str:
    header = [
        "tol",
        "solved (all 3)",
        *(f"total evals {s}" for s in SOLVERS),
        *(f"geo-mean err {s}" for s in SOLVERS),
        *(f"total ms {s}" for s in SOLVERS),
        *(f"physode err <= {s}" for s in SOLVERS[1:]),
    ]
    rows = []
    for tol in tols:
        runs = {p.name: {s: results[p.name, tol, s] for s in SOLVERS} for p in problems}
        ok = [r for r in runs.values() if not any(x.failure for x in r.values())]
        if not ok:
            rows.append([f"{tol:.0e}", f"0/{len(runs)}", *[""] * (len(header) - 2)])
            continue
        wins = [
            sum(
                r["physode"].err <= r[s].err
                for r in runs.values()
                if not (r["physode"].failure or r[s].failure)
            )
            for s in SOLVERS[1:]
        ]
        rows.append(
            [f"{tol:.0e}", f"{len(ok)}/{len(runs)}"]
            + [str(sum(r[s].evals for r in ok)) for s in SOLVERS]
            + [f"{geometric_mean([r[s].err for r in ok]):.1e}" for s in SOLVERS]
            + [f"{1e3 * sum(r[s].seconds for r in ok):.0f}" for s in SOLVERS]
            + [f"{w}/{len(runs)}" for w in wins]
        )
    return markdown_table(header, rows)


def header_line(conditions: str, method: str) -> str:
    machine = platform.processor() or platform.machine()
    return (
        f"torch {torch.__version__}, physode {physode.__version__} ({method}), "
        f"torchdiffeq {torchdiffeq.__version__}, scipy {scipy.__version__}, "
        f"mpmath {mpmath.__version__}; {machine}, {os.cpu_count()} CPUs; {conditions}"
    )


def caption(method: str, repeat: int) -> str:
    return (
        f"DETEST classes A-E, t from 0 to {T_END:g}, float64, rtol = atol = tol. Each cell: "
        f"physode {method} / torchdiffeq dopri8 / scipy DOP853. err = max_i |y_i - y_ref,i| / "
        "max(1, max_i |y_ref,i|) at t_end. reference: exact = closed-form solution (A5 and the "
        "Kepler orbits D1-D5 through a root of an implicit equation, B5 Jacobi elliptic "
        "functions, E1 half-order Bessel functions) evaluated in mpmath; expm = mpmath "
        f"matrix exponential; Taylor = mpmath.odefun (Taylor series), {DPS} digits. "
        f"ms = least wall time of {repeat} solve(s)."
    )


# ----------------------------------------------------------------------------- main


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tols", type=float, nargs="+", default=[1e-6, 1e-9, 1e-12])
    parser.add_argument("--repeat", type=int, default=1, help="solves per timing (least kept)")
    parser.add_argument("--physode-method", default="dopri8", help="physode's method (dopri8)")
    parser.add_argument("--problems", nargs="+", default=None, help="a subset, e.g. A1 C5")
    add_arguments(parser)
    args = parser.parse_args()
    if args.physode_method not in METHODS:
        parser.error(f"physode has no method {args.physode_method!r}; it has {', '.join(METHODS)}")
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    return args


def main() -> None:
    args = parse_args()
    problems = all_problems()
    if args.problems:
        problems = [p for p in problems if p.name in set(args.problems)]
    solvers = {
        "physode": physode_solver(args.physode_method),
        "tdq": tdq_solve,
        "scipy": scipy_solve,
    }
    start = time.perf_counter()
    with applied(args) as conditions:
        results, ref_seconds = run_all(problems, args.tols, solvers, args.repeat)
    notes = Footnotes()
    print(header_line(conditions, args.physode_method), end="\n\n")
    print(caption(args.physode_method, args.repeat), end="\n\n")
    print(problem_table(results, problems, args.tols, ["evals", "err"], notes), end="\n\n")
    print(summary_table(results, problems, args.tols), end="\n\n")
    print("Time of one solve (ms):\n")
    print(problem_table(results, problems, args.tols, ["ms"], notes), end="\n\n")
    if notes.lines:
        print("Failures:\n\n" + "\n".join(notes.lines), end="\n\n")
    print(
        f"References took {sum(ref_seconds.values()):.0f} s "
        f"(slowest {max(ref_seconds, key=ref_seconds.get)}: {max(ref_seconds.values()):.0f} s); "
        f"whole run {time.perf_counter() - start:.0f} s."
    )


if __name__ == "__main__":
    main()
