"""Stiff work-precision: physode's stiff methods against scipy's Radau, BDF and LSODA.

The problems are ``physode.datasets.stiff_problems.PROBLEMS`` (Robertson, van der Pol
with mu = 1000, HIRES, OREGO), each solved in float64 on the CPU over its span
[t0, t1] with 11 equally spaced output times, at every ``--tols`` rtol with
atol = rtol * the problem's ``atol_factor``, by

- physode's stiff methods (``physode.solvers.STIFF_METHODS``: kvaerno5, rodas5p) through
  ``physode.solve`` (evaluations, Jacobians and LU factorizations from ``Solution.stats``),
- scipy's ``solve_ivp`` with Radau, BDF and LSODA (``nfev``, ``njev``, ``nlu``) on a numpy
  wrapper of the same torch right-hand side, Jacobians by scipy's finite differences.

The tables:

1. Work-precision: per problem, rtol and method the function evaluations the solver
   reports, the calls of the right-hand side a counting wrapper saw (scipy's ``nfev``
   leaves out its finite-difference Jacobian columns; physode's Jacobians are autograd
   vector-Jacobian products, one call per Jacobian), Jacobians, LU factorizations, the
   maximum absolute error ``err``, the maximum scaled error
   ``err/tol = max |y - y_ref| / (rtol |y_ref| + atol)`` over times and components, and the
   time of one solve (the least of ``--repeat``). The reference is scipy's Radau at
   rtol 1e-12, atol 1e-12 * atol_factor.
2. Matching Radau: per problem Radau's evaluations and error at rtol ``--match-tol``
   (1e-6), each physode method's at every rtol, and the ratio physode evals / Radau evals
   at the loosest rtol (a quarter-decade scan below the table's) whose error is at most
   Radau's (n/a where none is).
3. Gradient cost: per physode stiff method, on Robertson (t = 0, 1, 10, 100, the rate
   constants learnable) and HIRES (its 11 output times, a learnable scale of the
   right-hand side), the time of a forward solve under ``torch.no_grad()`` and of a
   forward and backward solve with ``grad="aca"``, timed alternately ``--grad-rounds``
   times; their ratio, and the backward pass alone over the forward (the target: the
   gradient at most 3x the forward). The gradient is checked against central differences
   of scipy Radau solves at rtol 1e-11.

A solve is capped at ``--max-steps`` (20000) steps; one that raises ``physode.SolverError``
(or whose scipy result is unsuccessful) shows as ``fail`` with the cause. ``--skip
kvaerno5:orego`` leaves out a (method, problem) pair.

Run from the repository root::

    python benchmarks/stiff.py
    python benchmarks/stiff.py --tols 1e-4 1e-6 --threads 1 --repeat 3
    python benchmarks/stiff.py --skip kvaerno5:orego --no-gradients
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch
from scipy.integrate import solve_ivp

import physode
from physode.datasets.stiff_problems import PROBLEMS, StiffProblem, robertson_rhs
from physode.solvers import STIFF_METHODS

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from conditions import add_arguments, applied  # sibling modules, found through the line above
from engine import markdown_table

F64 = torch.float64
SCIPY_METHODS = ("Radau", "BDF", "LSODA")
N_OUTPUTS = 11
REF_TOL = 1e-12
FD_TOL = 1e-11  # the scipy solves behind the finite-difference gradient check
FD_STEP = 1e-5  # relative step of the finite differences
Func = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class Result:
    """One solve: its work, its states at the output times (None if it failed), its time."""

    evals: int = 0
    calls: int = 0
    jacobians: int | None = None
    lus: int | None = None
    ys: np.ndarray | None = None
    seconds: float = float("nan")
    failure: str = ""


class Counted:
    """A right-hand side that counts its calls."""

    def __init__(self, func: Func) -> None:
        self.func = func
        self.calls = 0

    def __call__(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.func(t, y)


def numpy_rhs(func: Func) -> Callable[[float, np.ndarray], np.ndarray]:
    """The torch right-hand side as scipy wants it: (float, ndarray) -> ndarray."""

    def rhs(t: float, y: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return func(torch.tensor(t, dtype=F64), torch.from_numpy(y)).numpy()

    return rhs


def output_times(p: StiffProblem) -> np.ndarray:
    return np.linspace(p.t0, p.t1, N_OUTPUTS)


def scipy_solve(
    func: Func, y0: np.ndarray, t: np.ndarray, method: str, rtol: float, atol: float
) -> Result:
    counted = Counted(func)
    start = time.perf_counter()
    sol = solve_ivp(
        numpy_rhs(counted), (t[0], t[-1]), y0, method=method, t_eval=t, rtol=rtol, atol=atol
    )
    seconds = time.perf_counter() - start
    result = Result(sol.nfev, counted.calls, sol.njev, sol.nlu, seconds=seconds)
    if sol.success:
        result.ys = sol.y.T
    else:
        result.failure = f"scipy: {sol.message}"
    return result


def physode_solve(
    func: Func, y0: np.ndarray, t: np.ndarray, method: str, rtol: float, atol: float, cap: int
) -> Result:
    counted = Counted(func)
    start = time.perf_counter()
    try:
        with torch.no_grad():
            sol = physode.solve(
                counted,
                torch.from_numpy(y0),
                torch.from_numpy(t),
                method=method,
                rtol=rtol,
                atol=atol,
                max_steps=cap,
            )
    except physode.SolverError as exc:
        return Result(calls=counted.calls, failure=f"{type(exc).__name__}: {exc}")
    seconds = time.perf_counter() - start
    extra = sol.stats.extra
    return Result(
        sol.stats.n_f_evals,
        counted.calls,
        extra.get("n_jacobians"),
        extra.get("n_lu"),
        sol.ys.numpy(),
        seconds,
    )


def timed(solve: Callable[[], Result], repeat: int) -> Result:
    """The first solve's result with the least time of ``repeat`` solves."""
    result = solve()
    for _ in range(repeat - 1):
        if result.failure:
            break
        result.seconds = min(result.seconds, solve().seconds)
    return result


def errors(ys: np.ndarray, ref: np.ndarray, rtol: float, atol: float) -> tuple[float, float]:
    """The maximum absolute error and the maximum of |y - y_ref| / (rtol |y_ref| + atol)."""
    diff = np.abs(ys - ref)
    return float(diff.max()), float((diff / (rtol * np.abs(ref) + atol)).max())


@dataclass(frozen=True)
class Key:
    problem: str
    rtol: float
    method: str


def run_table(
    problems: Sequence[StiffProblem],
    tols: Sequence[float],
    methods: Sequence[str],
    skip: set[tuple[str, str]],
    repeat: int,
    cap: int,
) -> tuple[dict[str, np.ndarray], dict[Key, Result]]:
    refs: dict[str, np.ndarray] = {}
    results: dict[Key, Result] = {}
    for p in problems:
        y0 = p.initial_state().numpy()
        t = output_times(p)
        ref = scipy_solve(p.func, y0, t, "Radau", REF_TOL, REF_TOL * p.atol_factor)
        if ref.ys is None:
            raise SystemExit(f"the reference solve of {p.name} failed: {ref.failure}")
        refs[p.name] = ref.ys
        for rtol in tols:
            atol = rtol * p.atol_factor
            for m in methods:
                if (m, p.name) in skip:
                    continue
                if m in SCIPY_METHODS:
                    solve = partial(scipy_solve, p.func, y0, t, m, rtol, atol)
                else:
                    solve = partial(physode_solve, p.func, y0, t, m, rtol, atol, cap)
                results[Key(p.name, rtol, m)] = timed(solve, repeat)
                print(
                    f"  {p.name} {rtol:.0e} {m}: {results[Key(p.name, rtol, m)].seconds:.2f} s",
                    file=sys.stderr,
                )
    return refs, results


def fmt_int(value: int | None) -> str:
    return "-" if value is None else str(value)


def work_precision_table(
    problems: Sequence[StiffProblem],
    tols: Sequence[float],
    methods: Sequence[str],
    refs: dict[str, np.ndarray],
    results: dict[Key, Result],
) -> str:
    header = ["problem", "rtol", "method", "f evals", "f calls", "jacs", "LUs", "err", "err/tol"]
    header.append("ms")
    rows = []
    for p in problems:
        for rtol in tols:
            for m in methods:
                r = results.get(Key(p.name, rtol, m))
                if r is None:
                    rows.append([p.name, f"{rtol:.0e}", m, *["skipped"] + ["-"] * 6])
                    continue
                if r.ys is None:
                    rows.append([p.name, f"{rtol:.0e}", m, "fail", *["-"] * 6])
                    continue
                err, scaled = errors(r.ys, refs[p.name], rtol, rtol * p.atol_factor)
                rows.append(
                    [
                        p.name,
                        f"{rtol:.0e}",
                        m,
                        str(r.evals),
                        str(r.calls),
                        fmt_int(r.jacobians),
                        fmt_int(r.lus),
                        f"{err:.1e}",
                        f"{scaled:.2g}",
                        f"{1e3 * r.seconds:.0f}",
                    ]
                )
    table = markdown_table(header, rows, n_text=3)
    failures = [
        f"- {k.problem}, rtol {k.rtol:.0e}, {k.method}: {r.failure}"
        for k, r in results.items()
        if r.ys is None and k.method in methods
    ]
    return table + ("\n\nFailures:\n\n" + "\n".join(failures) if failures else "")


def radau_error(p: StiffProblem, match_tol: float, refs, results) -> tuple[Result, float] | None:
    """Radau's result at ``match_tol`` and its max absolute error (None if it failed)."""
    radau = results.get(Key(p.name, match_tol, "Radau"))
    if radau is None or radau.ys is None:
        return None
    return radau, errors(radau.ys, refs[p.name], match_tol, match_tol * p.atol_factor)[0]


def finer_match(
    p: StiffProblem,
    method: str,
    tols: Sequence[float],
    target: float,
    refs: dict[str, np.ndarray],
    results: dict[Key, Result],
    cap: int,
    per_decade: int = 4,
) -> tuple[float, int, float] | None:
    """``(rtol, evals, err)`` at the loosest rtol, on a grid of ``per_decade`` points a
    decade, at which ``method``'s max absolute error is at most ``target``: the table's
    tolerances first, then a scan down from the loosest one that misses it to the first
    that meets it. None where no table tolerance meets it."""
    missed, hit = None, None
    for rtol in sorted(tols, reverse=True):
        r = results.get(Key(p.name, rtol, method))
        if r is None or r.ys is None:
            continue
        err = errors(r.ys, refs[p.name], rtol, rtol * p.atol_factor)[0]
        if err <= target:
            hit = (rtol, r.evals, err)
            break
        missed = rtol
    if hit is None or missed is None:
        return hit
    y0, t = p.initial_state().numpy(), output_times(p)
    rtol = missed
    while (rtol := rtol * 10 ** (-1 / per_decade)) > hit[0] * (1 + 1e-9):
        r = physode_solve(p.func, y0, t, method, rtol, rtol * p.atol_factor, cap)
        if r.ys is not None:
            err = errors(r.ys, refs[p.name], rtol, rtol * p.atol_factor)[0]
            if err <= target:
                return rtol, r.evals, err
    return hit


def match_table(
    problems: Sequence[StiffProblem],
    tols: Sequence[float],
    physode_methods: Sequence[str],
    match_tol: float,
    refs: dict[str, np.ndarray],
    results: dict[Key, Result],
    matches: dict[tuple[str, str], tuple[float, int, float] | None],
) -> str:
    header = ["problem", "method"]
    for rtol in tols:
        header += [f"evals @{rtol:.0e}", f"err @{rtol:.0e}"]
    header += ["matched at", "evals there", "err there", "evals / Radau's"]
    rows = []
    for p in problems:
        found = radau_error(p, match_tol, refs, results)
        if found is None:
            continue
        radau, radau_err = found
        cells = ["-", "-"] * len(tols)
        if match_tol in tols:
            i = 2 * list(tols).index(match_tol)
            cells[i : i + 2] = [str(radau.evals), f"{radau_err:.1e}"]
        rows.append([p.name, f"Radau @{match_tol:.0e}", *cells, "-", "-", "-", "-"])
        for m in physode_methods:
            cells = []
            for rtol in tols:  # loosest first
                r = results.get(Key(p.name, rtol, m))
                if r is None or r.ys is None:
                    cells += ["skipped" if r is None else "fail", "-"]
                    continue
                err = errors(r.ys, refs[p.name], rtol, rtol * p.atol_factor)[0]
                cells += [str(r.evals), f"{err:.1e}"]
            matched = matches.get((p.name, m))
            tail = ["n/a"] * 4
            if matched is not None:
                rtol, evals, err = matched
                tail = [f"{rtol:.2g}", str(evals), f"{err:.1e}", f"{evals / radau.evals:.2f}"]
            rows.append([p.name, m, *cells, *tail])
    return markdown_table(header, rows, n_text=2)


# --- gradient cost ----------------------------------------------------------------------


@dataclass(frozen=True)
class GradCase:
    """A loss of the outputs of a solve whose right-hand side depends on ``param``."""

    name: str
    param: Callable[[], torch.Tensor]  # a fresh leaf tensor
    func: Callable[[torch.Tensor], Func]  # param -> right-hand side
    y0: torch.Tensor
    t: torch.Tensor
    weights: torch.Tensor  # loss = sum(weights * ys)
    atol_factor: float


def grad_cases() -> list[GradCase]:
    rob, hires = PROBLEMS["robertson"], PROBLEMS["hires"]
    return [
        GradCase(
            "robertson",
            lambda: torch.tensor([0.04, 3e7, 1e4], dtype=F64),
            lambda k: lambda t, y: robertson_rhs(t, y, k=(k[0], k[1], k[2])),
            rob.initial_state(),
            torch.tensor([0.0, 1.0, 10.0, 100.0], dtype=F64),
            torch.tensor([1.0, 1e4, 1.0], dtype=F64),  # y2 is about 1e-5 of the others
            rob.atol_factor,
        ),
        GradCase(
            "hires",
            lambda: torch.tensor(1.0, dtype=F64),
            lambda s: lambda t, y: hires.func(t, y) * s,
            hires.initial_state(),
            torch.from_numpy(output_times(hires)),
            torch.ones(8, dtype=F64),
            hires.atol_factor,
        ),
    ]


def grad_loss(case: GradCase, param: torch.Tensor, method: str, rtol: float, **kw) -> torch.Tensor:
    sol = physode.solve(
        case.func(param),
        case.y0,
        case.t,
        method=method,
        rtol=rtol,
        atol=rtol * case.atol_factor,
        **kw,
    )
    return (sol.ys * case.weights).sum()


def scipy_loss(case: GradCase, param: torch.Tensor) -> float:
    t = case.t.numpy()
    r = scipy_solve(
        case.func(param), case.y0.numpy(), t, "Radau", FD_TOL, FD_TOL * case.atol_factor
    )
    if r.ys is None:
        raise SystemExit(f"the finite-difference solve of {case.name} failed: {r.failure}")
    return float((r.ys * case.weights.numpy()).sum())


def fd_gradient(case: GradCase) -> torch.Tensor:
    """Central differences of the loss in each parameter (relative step FD_STEP)."""
    base = case.param()
    grad = torch.zeros_like(base).reshape(-1)
    for i in range(base.numel()):
        h = FD_STEP * abs(float(base.reshape(-1)[i]))
        plus, minus = base.clone().reshape(-1), base.clone().reshape(-1)
        plus[i] += h
        minus[i] -= h
        up = scipy_loss(case, plus.reshape(base.shape))
        down = scipy_loss(case, minus.reshape(base.shape))
        grad[i] = (up - down) / (2 * h)
    return grad.reshape(base.shape)


def grad_row(case: GradCase, method: str, rtol: float, fd: torch.Tensor, rounds: int) -> list[str]:
    """Forward (no graph) and forward + backward (ACA) timed alternately ``rounds`` times
    (so that a slow spell of the machine hits both); the ratios are the medians of the
    rounds' ratios, the times the medians of the rounds' times."""
    forwards, boths = [], []
    for _ in range(rounds):
        start = time.perf_counter()
        with torch.no_grad():
            grad_loss(case, case.param(), method, rtol)
        forwards.append(time.perf_counter() - start)
        param = case.param().requires_grad_()
        start = time.perf_counter()
        try:
            loss = grad_loss(case, param, method, rtol, grad="aca", params=(param,))
            (grad,) = torch.autograd.grad(loss, param)
        except physode.SolverError as exc:
            ms = f"{1e3 * statistics.median(forwards):.0f}"
            return [case.name, method, ms, f"fail: {type(exc).__name__}"]
        boths.append(time.perf_counter() - start)
    ratios = [b / f for f, b in zip(forwards, boths, strict=True)]
    # relative to the largest entry: the rate constants' gradients span many decades
    scale = fd.abs().max()
    rel = float((grad - fd).abs().max() / scale)
    return [
        case.name,
        method,
        f"{1e3 * statistics.median(forwards):.0f}",
        f"{1e3 * statistics.median(boths):.0f}",
        f"{statistics.median(ratios):.2f}",
        f"{statistics.median(ratios) - 1:.2f}",
        f"{rel:.1e}",
    ]


def gradient_table(methods: Sequence[str], rtol: float, repeat: int) -> str:
    header = [
        "problem",
        "method",
        "forward ms",
        "fwd+bwd (aca) ms",
        "ratio",
        "bwd / fwd",
        "grad rel err",
    ]
    rows = []
    for case in grad_cases():
        fd = fd_gradient(case)
        for m in methods:
            rows.append(grad_row(case, m, rtol, fd, repeat))
            print(f"  gradient {case.name} {m}", file=sys.stderr)
    rows = [r + ["-"] * (len(header) - len(r)) for r in rows]
    return markdown_table(header, rows, n_text=2)


# --- driver -----------------------------------------------------------------------------


def parse_skip(items: Sequence[str]) -> set[tuple[str, str]]:
    pairs = set()
    for item in items:
        method, sep, problem = item.partition(":")
        if not sep or problem not in PROBLEMS:
            raise SystemExit(f"--skip: expected METHOD:PROBLEM, got {item!r}")
        pairs.add((method, problem))
    return pairs


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tols", type=float, nargs="+", default=[1e-4, 1e-6, 1e-8])
    parser.add_argument("--problems", nargs="+", choices=sorted(PROBLEMS), default=None)
    parser.add_argument("--skip", nargs="*", default=[], metavar="METHOD:PROBLEM")
    parser.add_argument("--repeat", type=int, default=1, help="time the least of N solves")
    parser.add_argument("--max-steps", type=int, default=20000, help="physode's step cap")
    parser.add_argument("--match-tol", type=float, default=1e-6, help="Radau's rtol in table 2")
    parser.add_argument("--grad-tol", type=float, default=1e-6, help="rtol of table 3")
    parser.add_argument("--no-gradients", action="store_true", help="leave out table 3")
    parser.add_argument(
        "--grad-rounds", type=int, default=7, help="alternating timings per row of table 3"
    )
    add_arguments(parser)
    args = parser.parse_args()
    if args.repeat < 1:
        raise SystemExit(f"--repeat must be at least 1, got {args.repeat}")
    return args


def main() -> None:
    args = parse_args()
    tols = sorted(set(args.tols), reverse=True)  # loosest first
    problems = [PROBLEMS[n] for n in (args.problems or PROBLEMS)]
    methods = [*STIFF_METHODS, *SCIPY_METHODS]
    skip = parse_skip(args.skip)
    start = time.perf_counter()
    with applied(args) as conditions:
        refs, results = run_table(problems, tols, methods, skip, args.repeat, args.max_steps)
        if args.match_tol not in tols:  # Radau at the matching rtol, for table 2
            _, extra = run_table(problems, [args.match_tol], ["Radau"], skip, args.repeat, 0)
            results.update(extra)
        match_tols = sorted(set(tols) | {args.match_tol}, reverse=True)
        matches = {}
        for p in problems:
            found = radau_error(p, args.match_tol, refs, results)
            for m in STIFF_METHODS:
                if found is not None and (m, p.name) not in skip:
                    matches[p.name, m] = finer_match(
                        p, m, tols, found[1], refs, results, args.max_steps
                    )
        grads = None
        if not args.no_gradients:
            grads = gradient_table(STIFF_METHODS, args.grad_tol, args.grad_rounds)
    print(conditions, end="\n\n")
    print(
        f"Work-precision on the stiff problems, float64, {N_OUTPUTS} equally spaced outputs on "
        f"[t0, t1], atol = rtol * atol_factor. Reference: scipy Radau at rtol {REF_TOL:.0e}, "
        f"atol {REF_TOL:.0e} * atol_factor. err: max absolute error over outputs and "
        "components; err/tol: max of |y - y_ref| / (rtol |y_ref| + atol). f evals: as the "
        "solver reports (scipy's nfev leaves out its finite-difference Jacobian columns); "
        "f calls: calls of the right-hand side counted by a wrapper. ms: one solve"
        f"{'' if args.repeat == 1 else f', the least of {args.repeat}'}; physode capped at "
        f"{args.max_steps} steps.",
        end="\n\n",
    )
    print(work_precision_table(problems, tols, methods, refs, results), end="\n\n")
    print(
        f"Matching Radau: evaluations (as reported) and max absolute error; the last columns "
        f"give the loosest rtol (four a decade, scanned down from the loosest table rtol "
        f"that misses it) at which the physode method's error is at most Radau's at rtol "
        f"{args.match_tol:.0e}, its evaluations and error there, and those evaluations over "
        "Radau's.",
        end="\n\n",
    )
    print(match_table(problems, match_tols, STIFF_METHODS, args.match_tol, refs, results, matches))
    if grads is not None:
        print(
            f"\nGradient cost at rtol {args.grad_tol:.0e} (atol = rtol * atol_factor), "
            f"{args.grad_rounds} rounds each of a forward and a forward + backward solve, "
            "alternating; medians of the times and of the rounds' ratios: robertson at "
            "t = 0, 1, 10, 100 with the rate constants (k1, k2, k3) "
            "learnable, loss = sum over outputs of y1 + 1e4 y2 + y3; hires at its 11 outputs "
            "with a learnable scale of the right-hand side (1.0), loss = sum of all outputs. "
            "forward: under torch.no_grad(); fwd+bwd: grad='aca' with params=(param,); ratio: "
            "fwd+bwd / forward; bwd / fwd: that ratio less one (the backward pass alone). "
            "grad rel err: max |g - g_fd| / max |g_fd|, "
            f"g_fd central differences (relative step {FD_STEP:.0e}) of scipy Radau solves at "
            f"rtol {FD_TOL:.0e}.",
            end="\n\n",
        )
        print(grads)
    print(f"\nWhole run {time.perf_counter() - start:.0f} s.")


if __name__ == "__main__":
    main()
