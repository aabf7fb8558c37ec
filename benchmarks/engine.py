"""Engine benchmark: physode against torchdiffeq and torchode on forward dopri5 solves.

For each problem and each library the table gives the function evaluations, the
steps (accepted + rejected), the median wall time of one solve, and the time per
step and per function evaluation. A second table gives the ratios
physode / torchdiffeq (targets: evals ratio <= 1, time-per-step ratio < 1) and the
largest difference between the two solutions. The time of one bare evaluation of
each right-hand side is printed too: overhead per evaluation = time per eval - bare f.

Run from the repository root::

    pip install --no-deps torchdiffeq==0.2.5   # optional: the comparison rows
    pip install --no-deps torchode==1.0.1 torchtyping "typeguard<3"   # optional
    python benchmarks/engine.py                # all problems, about 3-4 minutes on 2 cores
    python benchmarks/engine.py --quick        # fewer repeats
    python benchmarks/engine.py --problems mlp-f64 3body-b1
    python benchmarks/engine.py --threads 1 --compete 1   # one thread, one busy process beside

Method. Both libraries get the same ``func`` object, ``y0``, ``t`` and tolerances,
run under ``torch.no_grad()`` with torch's default thread count unless ``--threads``
says otherwise, and ``--compete K`` busy processes beside (``conditions.py``; the
header states both). Counts come from one untimed solve per library: physode's
``Solution.stats``; for torchdiffeq a counting wrapper around ``func`` (evaluations)
that also implements torchdiffeq's ``callback_accept_step`` /
``callback_reject_step`` hooks (steps); torchode's own statistics, where a step is
the most any batch member took (torchode sizes each member's step apart, one call
of ``func`` evaluating the whole batch). The timed solves
use the bare ``func``. The counting solve doubles as the warm-up; then the
libraries are timed alternately (one solve each per round), the number of rounds
chosen from the warm-up time so that the timed solves of a problem take about
``--budget`` seconds (6 s; bounded by ``--min-repeats`` 2 and ``--max-repeats``
200; ``--quick``: 1 s, 1 to 5 rounds). The median is reported.

Problems:

- ``mlp-f64`` / ``mlp-f32``: neural ODE f(t, y) = Linear(64, 256) -> tanh ->
  Linear(256, 64) on y of shape (256, 64), torch.manual_seed(0) weights (PyTorch's
  default init), y0 = randn(256, 64) (unit scale: tanh is used in its nonlinear
  range without saturating); dopri5, rtol = atol = 1e-5, t = [0, 1].
- ``3body-b1`` / ``3body-b256``: Newtonian three-body problem in 3-D, state = 9
  positions then 9 velocities, shape (B, 18); batch 256 = the initial condition
  plus 1e-2 * randn perturbations (seed 0); dopri5, rtol 1e-7, atol 1e-8,
  t = linspace(0, 2, 100). Float64.
"""

from __future__ import annotations

import argparse
import gc
import math
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

import physode

try:
    import torchdiffeq
except ImportError:  # optional comparison
    torchdiffeq = None

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conditions import add_arguments, applied  # the sibling modules, found through the line above
from peers import torchode, torchode_solve

Func = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


# ----------------------------------------------------------------------------- problems


@dataclass
class Problem:
    name: str
    description: str
    func: Func
    y0: torch.Tensor
    t: torch.Tensor
    rtol: float
    atol: float
    method: str = "dopri5"


class MLPField(nn.Module):
    """f(t, y) = Linear(dim -> width) -> tanh -> Linear(width -> dim), autonomous."""

    def __init__(self, dim: int = 64, width: int = 256):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, width), nn.Tanh(), nn.Linear(width, dim))

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.net(y)


class ThreeBody(nn.Module):
    """Newtonian gravity for n bodies in 3-D; y = (positions, velocities), shape (..., 6 n).

    a_i = sum_{j != i} G m_j (r_j - r_i) / |r_j - r_i|^3, for all bodies at once: no loop
    over pairs, any leading batch dimensions.
    """

    def __init__(self, masses: tuple[float, ...], g: float):
        super().__init__()
        n = len(masses)
        self.n = n
        eye = torch.eye(n, dtype=torch.float64)
        m = torch.tensor(masses, dtype=torch.float64)
        # (n, n): G m_j off the diagonal, 0 on it (no self-force).
        self.register_buffer("g_m", g * m * (1.0 - eye))
        # Added to |r_i - r_i|^2 = 0 so that the diagonal stays finite before it is zeroed.
        self.register_buffer("eye", eye)
        self.register_buffer("ones3", torch.ones(3, dtype=torch.float64))

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        n = self.n
        pos = y[..., : 3 * n].unflatten(-1, (n, 3))  # (..., n, 3)
        diff = pos.unsqueeze(-3) - pos.unsqueeze(-2)  # (..., i, j, 3): r_j - r_i
        # Squared distances; the matmul against ones is faster than .sum(-1) on a size-3 axis.
        dist2 = (diff * diff) @ self.ones3 + self.eye  # (..., n, n)
        weight = self.g_m * dist2.pow(-1.5)  # G m_j / |r_j - r_i|^3
        acc = (weight.unsqueeze(-2) @ diff).squeeze(-2)  # (..., n, 3): sum over j
        return torch.cat([y[..., 3 * n :], acc.flatten(-2)], dim=-1)


def build_mlp(dtype: torch.dtype) -> Problem:
    torch.manual_seed(0)
    func = MLPField(64, 256).to(dtype)
    y0 = torch.randn(256, 64, dtype=torch.float64).to(dtype)
    tag = "f64" if dtype == torch.float64 else "f32"
    return Problem(
        name=f"mlp-{tag}",
        description=f"MLP 64-256-64, batch 256, {tag}, rtol=atol=1e-5, t=[0,1]",
        func=func,
        y0=y0,
        t=torch.tensor([0.0, 1.0], dtype=torch.float64),
        rtol=1e-5,
        atol=1e-5,
    )


def three_body_initial() -> torch.Tensor:
    pos = torch.tensor([[0.0, 0.2, 0.0], [0.5, 0.0, 0.5], [0.0, 0.0, 0.5]], dtype=torch.float64)
    vel = 7.239324 * torch.tensor(
        [[0.0, 0.1, 0.0], [0.0, 0.0, 0.1], [0.1, 0.0, 0.0]], dtype=torch.float64
    )
    return torch.cat([pos.flatten(), vel.flatten()])


def build_three_body(batch: int) -> Problem:
    func = ThreeBody(masses=(1.1, 1.1, 0.9), g=1.45136)
    base = three_body_initial()
    if batch == 1:
        y0 = base.unsqueeze(0)
    else:
        gen = torch.Generator().manual_seed(0)
        y0 = base + 1e-2 * torch.randn(batch, 18, generator=gen, dtype=torch.float64)
    return Problem(
        name=f"3body-b{batch}",
        description=f"three-body, batch {batch}, f64, rtol=1e-7 atol=1e-8, t=linspace(0,2,100)",
        func=func,
        y0=y0,
        t=torch.linspace(0.0, 2.0, 100, dtype=torch.float64),
        rtol=1e-7,
        atol=1e-8,
    )


PROBLEMS: dict[str, Callable[[], Problem]] = {
    "mlp-f64": lambda: build_mlp(torch.float64),
    "mlp-f32": lambda: build_mlp(torch.float32),
    "3body-b1": lambda: build_three_body(1),
    "3body-b256": lambda: build_three_body(256),
}


# ----------------------------------------------------------------------------- solvers


def solve_physode(p: Problem, func: Func) -> torch.Tensor:
    return physode.solve(func, p.y0, p.t, method=p.method, rtol=p.rtol, atol=p.atol).ys


def solve_torchdiffeq(p: Problem, func: Func) -> torch.Tensor:
    return torchdiffeq.odeint(func, p.y0, p.t, method=p.method, rtol=p.rtol, atol=p.atol)


def solve_torchode(p: Problem, func: Func) -> torch.Tensor:
    return torchode_solve(func, p.y0, p.t, method=p.method, rtol=p.rtol, atol=p.atol).ys


SOLVERS: dict[str, Callable[[Problem, Func], torch.Tensor]] = {"physode": solve_physode}
if torchdiffeq is not None:
    SOLVERS["torchdiffeq"] = solve_torchdiffeq
if torchode is not None:
    SOLVERS["torchode"] = solve_torchode
PEERS = [lib for lib in SOLVERS if lib != "physode"]


class Counting:
    """Wraps ``func``: counts evaluations, and steps through torchdiffeq's callback hooks."""

    def __init__(self, func: Func):
        self.func = func
        self.n_evals = 0
        self.n_accepted = 0
        self.n_rejected = 0

    def __call__(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self.n_evals += 1
        return self.func(t, y)

    def callback_accept_step(self, t0, y0, dt) -> None:
        self.n_accepted += 1

    def callback_reject_step(self, t0, y0, dt) -> None:
        self.n_rejected += 1


@dataclass
class Counts:
    n_evals: int
    n_accepted: int | None  # None: not known
    n_rejected: int | None

    @property
    def n_steps(self) -> int | None:
        if self.n_accepted is None or self.n_rejected is None:
            return None
        return self.n_accepted + self.n_rejected


def count(lib: str, p: Problem) -> tuple[Counts, torch.Tensor]:
    """One untimed solve; the work it did and its solution."""
    wrapped = Counting(p.func)
    with torch.no_grad():
        if lib == "physode":
            sol = physode.solve(wrapped, p.y0, p.t, method=p.method, rtol=p.rtol, atol=p.atol)
            s = sol.stats
            if s.n_f_evals != wrapped.n_evals:
                raise RuntimeError(
                    f"physode stats report {s.n_f_evals} evals, the wrapper saw {wrapped.n_evals}"
                )
            return Counts(s.n_f_evals, s.n_accepted, s.n_rejected), sol.ys
        if lib == "torchode":
            r = torchode_solve(wrapped, p.y0, p.t, method=p.method, rtol=p.rtol, atol=p.atol)
            return Counts(wrapped.n_evals, r.n_accepted, r.n_steps - r.n_accepted), r.ys
        ys = SOLVERS[lib](p, wrapped)
    if wrapped.n_accepted == 0:  # hooks not called by this torchdiffeq version
        return Counts(wrapped.n_evals, None, None), ys
    return Counts(wrapped.n_evals, wrapped.n_accepted, wrapped.n_rejected), ys


# ----------------------------------------------------------------------------- timing


def time_interleaved(
    calls: dict[str, Callable[[], object]], repeats: int
) -> dict[str, list[float]]:
    """Wall time (s) of each call, ``repeats`` times, the calls taking turns."""
    times: dict[str, list[float]] = {name: [] for name in calls}
    gc.collect()
    gc.disable()
    try:
        for _ in range(repeats):
            for name, fn in calls.items():
                start = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - start)
    finally:
        gc.enable()
    return times


def choose_repeats(warm_s: float, budget_s: float, lo: int, hi: int) -> int:
    """Repeats of a round (one solve per library, ``warm_s`` seconds) that fit ``budget_s``."""
    return max(lo, min(hi, int(budget_s / max(warm_s, 1e-9))))


def bare_eval_time(p: Problem, min_total_s: float = 0.5) -> float:
    """Median time (s) of one ``func(t0, y0)`` call."""
    t0 = p.t[0].to(p.y0.dtype)
    with torch.no_grad():
        for _ in range(3):
            p.func(t0, p.y0)
        start = time.perf_counter()
        p.func(t0, p.y0)
        once = time.perf_counter() - start
        n = max(20, min(5000, int(min_total_s / max(once, 1e-7))))
        samples = []
        for _ in range(n):
            start = time.perf_counter()
            p.func(t0, p.y0)
            samples.append(time.perf_counter() - start)
    return statistics.median(samples)


# ----------------------------------------------------------------------------- rows


@dataclass
class Row:
    problem: str
    library: str
    counts: Counts
    median_s: float
    repeats: int
    bare_f_s: float

    @property
    def per_step_s(self) -> float | None:
        n = self.counts.n_steps
        return self.median_s / n if n else None

    @property
    def per_eval_s(self) -> float:
        return self.median_s / self.counts.n_evals


def run_problem(
    p: Problem, budget_s: float, min_repeats: int, max_repeats: int
) -> tuple[list[Row], dict[str, torch.Tensor]]:
    """Count, warm up, time every library on ``p``; one row per library, and the solutions."""
    counts: dict[str, Counts] = {}
    solutions: dict[str, torch.Tensor] = {}
    start = time.perf_counter()
    for lib in SOLVERS:  # the counting solve doubles as the warm-up
        counts[lib], solutions[lib] = count(lib, p)
    round_s = time.perf_counter() - start
    repeats = choose_repeats(round_s, budget_s, min_repeats, max_repeats)
    calls = {lib: (lambda solver=solver: solver(p, p.func)) for lib, solver in SOLVERS.items()}
    with torch.no_grad():
        times = time_interleaved(calls, repeats)
    bare = bare_eval_time(p)
    rows = [
        Row(p.name, lib, counts[lib], statistics.median(times[lib]), repeats, bare)
        for lib in SOLVERS
    ]
    return rows, solutions


# ----------------------------------------------------------------------------- tables


def _fmt(x: float | None, spec: str) -> str:
    return "n/a" if x is None or not math.isfinite(x) else format(x, spec)


def _steps(c: Counts) -> str:
    if c.n_steps is None:
        return "n/a"
    return f"{c.n_steps} ({c.n_accepted}+{c.n_rejected})"


def markdown_table(header: list[str], rows: list[list[str]], n_text: int = 1) -> str:
    """A markdown table; the first ``n_text`` columns left-aligned, the rest right-aligned."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    left = set(range(n_text))

    def line(cells: list[str]) -> str:
        padded = [
            c.ljust(w) if i in left else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return "| " + " | ".join(padded) + " |"

    rules = ["-" * (w + 2) if i in left else "-" * (w + 1) + ":" for i, w in enumerate(widths)]
    sep = "|" + "|".join(rules) + "|"
    return "\n".join([line(header), sep, *(line(r) for r in rows)])


def results_table(rows: list[Row]) -> str:
    header = [
        "problem",
        "library",
        "f evals",
        "steps (acc+rej)",
        "median ms/solve",
        "repeats",
        "ms/step",
        "µs/eval",
        "bare f µs",
        "overhead µs/eval",
    ]
    body = [
        [
            r.problem,
            r.library,
            str(r.counts.n_evals),
            _steps(r.counts),
            _fmt(r.median_s * 1e3, ".2f"),
            str(r.repeats),
            _fmt(None if r.per_step_s is None else r.per_step_s * 1e3, ".3f"),
            _fmt(r.per_eval_s * 1e6, ".1f"),
            _fmt(r.bare_f_s * 1e6, ".1f"),
            _fmt((r.per_eval_s - r.bare_f_s) * 1e6, ".1f"),
        ]
        for r in rows
    ]
    return markdown_table(header, body, n_text=2)


def ratio_table(rows: list[Row], diffs: dict[tuple[str, str], float]) -> str:
    """physode against each peer library, one row per (problem, peer)."""
    header = [
        "problem",
        "peer",
        "evals ratio",
        "Δ evals",
        "time/step ratio",
        "time/eval ratio",
        "time/solve ratio",
        "max |ys_physode - ys_peer|",
    ]
    by_key = {(r.problem, r.library): r for r in rows}
    body = []
    for problem in dict.fromkeys(r.problem for r in rows):
        for peer in PEERS:
            a, b = by_key.get((problem, "physode")), by_key.get((problem, peer))
            if a is None or b is None:
                continue
            step_ratio = (
                None
                if a.per_step_s is None or b.per_step_s is None
                else a.per_step_s / b.per_step_s
            )
            body.append(
                [
                    problem,
                    peer,
                    _fmt(a.counts.n_evals / b.counts.n_evals, ".4f"),
                    f"{a.counts.n_evals - b.counts.n_evals:+d}",
                    _fmt(step_ratio, ".3f"),
                    _fmt(a.per_eval_s / b.per_eval_s, ".3f"),
                    _fmt(a.median_s / b.median_s, ".3f"),
                    _fmt(diffs.get((problem, peer)), ".2e"),
                ]
            )
    return markdown_table(header, body, n_text=2)


def print_header(problems: list[Problem], conditions: str) -> None:
    tdq = torchdiffeq.__version__ if torchdiffeq is not None else "not installed"
    tode = torchode.__version__ if torchode is not None else "not installed"
    print(
        f"physode {physode.__version__}, torchdiffeq {tdq}, torchode {tode}, "
        f"torch {torch.__version__}, Python {platform.python_version()}, {platform.machine()}"
    )
    print(conditions)
    if not PEERS:
        print("NOTE: neither torchdiffeq nor torchode could be imported; physode rows only.")
    print()
    for p in problems:
        print(f"- {p.name}: {p.description}, y0 {tuple(p.y0.shape)}, {p.method}")
    print(flush=True)


# ----------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats (smoke test)")
    parser.add_argument(
        "--problems",
        nargs="+",
        choices=sorted(PROBLEMS),
        default=list(PROBLEMS),
        metavar="NAME",
        help=f"problems to run (default: all of {', '.join(PROBLEMS)})",
    )
    parser.add_argument(
        "--budget", type=float, default=None, help="seconds of timed solves per problem"
    )
    parser.add_argument("--min-repeats", type=int, default=None)
    parser.add_argument("--max-repeats", type=int, default=None)
    add_arguments(parser)
    args = parser.parse_args(argv)
    defaults = (1.0, 1, 5) if args.quick else (6.0, 2, 200)
    for name, value in zip(("budget", "min_repeats", "max_repeats"), defaults, strict=True):
        if getattr(args, name) is None:
            setattr(args, name, value)
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    with applied(args) as conditions:
        run(args, conditions)


def run(args: argparse.Namespace, conditions: str) -> None:
    problems = [PROBLEMS[name]() for name in args.problems]
    print_header(problems, conditions)
    rows: list[Row] = []
    diffs: dict[tuple[str, str], float] = {}
    for p in problems:
        print(f"running {p.name} ...", file=sys.stderr, flush=True)
        problem_rows, sols = run_problem(p, args.budget, args.min_repeats, args.max_repeats)
        rows.extend(problem_rows)
        for peer in PEERS:
            diffs[p.name, peer] = (sols["physode"] - sols[peer]).abs().max().item()
    print(results_table(rows))
    print()
    print("overhead µs/eval = µs/eval - bare f µs (solver work attributed per evaluation).")
    if not PEERS:
        return
    print()
    print("Ratios physode / peer (targets: evals <= 1, time/step < 1); Δ evals = physode - peer.")
    print("torchode sizes each batch member's step apart; its steps are the most any member took.")
    print("The three-body problem is chaotic (close encounters), so the solutions part by more")
    print("than the tolerances over t in [0, 2].")
    print()
    print(ratio_table(rows, diffs))
    print()
    print(conditions)


if __name__ == "__main__":
    main()
