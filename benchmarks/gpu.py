"""GPU check: the CUDA tests, then physode against torchdiffeq and torchode on the device.

Prints a short header (torch, device, library versions, date, the CUDA tests' outcome)
and ONE markdown table. Rows:

- ``3body bN fwd+bwd``: the Newtonian three-body problem of ``engine.py``
  (``build_three_body``), N initial states (shape (N, 18), float64), dopri5, rtol 1e-7,
  atol 1e-8, t = linspace(0, 2, 100); loss = sum of squares of the whole solution,
  gradient with respect to y0 (``engine.ThreeBody`` holds its masses as buffers: no
  learnable parameters). Default batches 4096 (the target) and 256 (the size that
  fits: backprop through 4096 members needs ~35 000 shared steps, ~212 000
  evaluations, ~1.5 MiB saved per evaluation by physode and ~3 MiB by torchdiffeq,
  i.e. hundreds of GiB; measured on CPU, so expect ``OutOfMemoryError`` cells there).
- ``mlp-f32`` / ``mlp-f64``: the neural ODE of ``engine.py`` (``build_mlp``), forward
  only (under ``torch.no_grad()``) and forward+backward (gradient w.r.t. y0 and the
  weights).

Each library gets the same module, y0, t and tolerances through ``engine.solve_physode``
/ ``solve_torchdiffeq`` / ``solve_torchode`` (physode ``grad="direct"``, torchdiffeq
``odeint`` and torchode ``AutoDiffAdjoint``: backprop through the solver). Per row: one
untimed warm-up per library (it also counts the evaluations, through ``engine.Counting``),
then timed rounds, the libraries taking turns (order rotated each round), until
``--repeats`` rounds or ``--row-budget`` seconds of timed solves. Cells: median wall
time (``torch.cuda.synchronize()`` before each clock reading on CUDA), the ratios
physode / peer, forward evaluations (torchode: the most any batch member took, one call
evaluating the whole batch), peak ``torch.cuda.max_memory_allocated`` (reset before each
timed solve; the maximum over them), and max |ys_physode - ys_torchdiffeq| of the
warm-up solutions (the three-body problem is chaotic: expect more than the tolerances).
A failing cell shows the error's type and first line; rows that would start after
``--deadline`` seconds are skipped. Rows run cheapest first (MLP, then the three-body
batches in increasing size), so that an expensive row cannot starve the others.

Run from the repository root::

    PYTHONPATH=. python benchmarks/gpu.py                        # ~3-6 minutes on a GPU
    PYTHONPATH=. python benchmarks/gpu.py --device cpu --quick --no-tests   # smoke run, ~1 min

``--quick``: batch 256 only, 1 round, and the three-body problem on the outputs of
t = linspace(0, 2, 100) up to t = 0.5 (``--t-end``; the full horizon costs minutes per
solve on a CPU). Numbers from ``--quick`` are a smoke test, not a benchmark.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import gc
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

import physode

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conditions import add_arguments, applied  # the sibling modules, found through the line above
from engine import (
    Counting,
    Problem,
    build_mlp,
    build_three_body,
    markdown_table,
    solve_physode,
    solve_torchdiffeq,
    solve_torchode,
)
from peers import torchode

try:
    import torchdiffeq
except ImportError:  # optional comparison
    torchdiffeq = None

ROOT = Path(__file__).resolve().parent.parent
LIBS = ("physode", "torchdiffeq", "torchode")
SOLVE: dict[str, Callable[[Problem, Callable], torch.Tensor]] = {
    "physode": solve_physode,
    "torchdiffeq": solve_torchdiffeq,
    "torchode": solve_torchode,
}
ABSENT = "n/a (not installed)"


def available(lib: str) -> bool:
    return {"physode": physode, "torchdiffeq": torchdiffeq, "torchode": torchode}[lib] is not None


def version(module: object | None) -> str:
    return "absent" if module is None else str(getattr(module, "__version__", "?"))


# ----------------------------------------------------------------------------- CUDA tests


@dataclasses.dataclass
class PytestOutcome:
    summary: str  # e.g. "1 passed, 0 failed, 1 skipped (rc 0)"
    details: list[str]  # FAILED / ERROR / SKIPPED lines of pytest's short summary


def run_cuda_tests(timeout_s: float) -> PytestOutcome:
    """``pytest -q -k cuda tests`` in a subprocess; counts from pytest's last line."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", "cuda", "tests"]
    try:
        proc = subprocess.run(
            cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout_s
        )
    except subprocess.TimeoutExpired:
        return PytestOutcome(f"timed out after {timeout_s:.0f} s", [])
    lines = [line.strip() for line in proc.stdout.splitlines() if line.strip()]
    last = lines[-1] if lines else (proc.stderr.strip().splitlines() or ["no output"])[-1]
    counts = {
        word.rstrip("s") if word.startswith("error") else word: int(n)
        for n, word in re.findall(
            r"(\d+) (passed|failed|skipped|deselected|errors?|xfailed|xpassed)", last
        )
    }
    if not counts:
        summary = f"{last[:80]} (rc {proc.returncode})"
    else:
        parts = [f"{counts.get(k, 0)} {k}" for k in ("passed", "failed", "skipped")]
        parts += [f"{counts[k]} {k}" for k in ("error", "xfailed", "xpassed") if k in counts]
        summary = ", ".join(parts) + f" (rc {proc.returncode})"
        if "deselected" in counts:
            summary += f"; {counts['deselected']} deselected"
    details = [line for line in lines if line.startswith(("FAILED", "ERROR", "SKIPPED"))]
    return PytestOutcome(summary, details[:8])


# ----------------------------------------------------------------------------- cases


@dataclasses.dataclass
class Case:
    label: str
    problem: Problem  # on the device
    backward: bool
    order: int  # execution order: cheapest first


def on_device(p: Problem, device: torch.device) -> Problem:
    return dataclasses.replace(p, func=p.func.to(device), y0=p.y0.to(device), t=p.t.to(device))


def build_cases(args: argparse.Namespace, device: torch.device) -> list[Case]:
    """The rows, in the order they are printed."""
    cases = []
    for k, batch in enumerate(args.batch):
        p = build_three_body(batch)
        label = f"3body b{batch} f64 fwd+bwd (d/dy0)"
        if args.t_end is not None:
            t = p.t[p.t <= args.t_end + 1e-12]
            p = dataclasses.replace(p, t=t)
            label += f", t=[0,{t[-1].item():.3g}] ({len(t)} pts)"
        cases.append(Case(label, on_device(p, device), True, 100 + batch * 10 + k))
    for k, dtype in enumerate((torch.float32, torch.float64)):
        p = on_device(build_mlp(dtype), device)
        cases.append(Case(f"{p.name} fwd", p, False, 2 * k))
        cases.append(Case(f"{p.name} fwd+bwd", p, True, 2 * k + 1))
    return cases


# ----------------------------------------------------------------------------- measuring


def describe(exc: BaseException) -> str:
    first = (str(exc).strip().splitlines() or [""])[0]
    text = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
    return text if len(text) <= 70 else text[:67] + "..."


def call(lib: str, case: Case, func: Callable) -> torch.Tensor:
    """One solve (and backward, for a fwd+bwd case); the solution, detached."""
    p = case.problem
    if not case.backward:
        with torch.no_grad():
            return SOLVE[lib](p, func)
    y0 = p.y0.detach().clone().requires_grad_(True)
    ys = SOLVE[lib](dataclasses.replace(p, y0=y0), func)
    params = [q for q in p.func.parameters() if q.requires_grad]
    torch.autograd.grad(ys.square().sum(), [y0, *params])
    return ys.detach()


@dataclasses.dataclass
class Cell:
    times: list[float] = dataclasses.field(default_factory=list)
    warm_s: float | None = None  # the warm-up solve's time
    evals: int | None = None
    peak_bytes: int = 0
    error: str | None = None
    ys: torch.Tensor | None = None


class Clock:
    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.device = device

    def now(self) -> float:
        if self.cuda:
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def reset_peak(self) -> None:
        if self.cuda:
            torch.cuda.reset_peak_memory_stats(self.device)

    def peak(self) -> int:
        return torch.cuda.max_memory_allocated(self.device) if self.cuda else 0

    def release(self) -> None:
        gc.collect()
        if self.cuda:
            torch.cuda.empty_cache()


def measure(
    case: Case, libs: list[str], repeats: int, budget_s: float, deadline: float, clock: Clock
) -> dict[str, Cell]:
    """Warm-up (with counting) per library, then interleaved timed rounds; no solve starts
    after ``deadline`` (a ``time.perf_counter()`` value)."""
    cells = {lib: Cell() for lib in libs}
    for lib in libs:
        if time.perf_counter() > deadline:
            cells[lib].error = "skipped (--deadline)"
            continue
        counting = Counting(case.problem.func)
        try:
            start = clock.now()
            cells[lib].ys = call(lib, case, counting)
            cells[lib].warm_s = clock.now() - start
            cells[lib].evals = counting.n_evals
        except Exception as exc:
            cells[lib].error = describe(exc)
        clock.release()
    live = [lib for lib in libs if cells[lib].error is None]
    spent = 0.0
    for r in range(repeats):
        if (r > 0 and spent >= budget_s) or time.perf_counter() > deadline:
            break
        k = r % len(live) if live else 0
        for lib in live[k:] + live[:k]:
            if cells[lib].error is not None:
                continue
            clock.reset_peak()
            try:
                start = clock.now()
                call(lib, case, case.problem.func)
                elapsed = clock.now() - start
            except Exception as exc:
                cells[lib].error = describe(exc)
                clock.release()
                continue
            cells[lib].times.append(elapsed)
            cells[lib].peak_bytes = max(cells[lib].peak_bytes, clock.peak())
            spent += elapsed
    return cells


# ----------------------------------------------------------------------------- table


def _ms(seconds: float) -> str:
    ms = seconds * 1e3
    return f"{ms:.1f}" if ms >= 100 else f"{ms:.2f}" if ms >= 1 else f"{ms:.3f}"


def median(cell: Cell | None) -> float | None:
    return statistics.median(cell.times) if cell is not None and cell.times else None


def time_cell(lib: str, cell: Cell | None, skipped: str | None) -> str:
    if not available(lib):
        return ABSENT
    if skipped is not None:
        return skipped
    if cell is None:
        return "-"
    if cell.error is not None:
        return cell.error
    m = median(cell)
    if m is None:
        return f"{_ms(cell.warm_s)}*" if cell.warm_s is not None else "-"
    return _ms(m)


def ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}" if a is not None and b else "n/a"


def triple(values: list[str]) -> str:
    return " / ".join(values)


def row_cells(case: Case, cells: dict | None, skipped: str | None, cuda: bool) -> list[str]:
    cells = cells or {}
    get = cells.get
    times = [time_cell(lib, get(lib), skipped) for lib in LIBS]
    p, td, to = (median(get(lib)) for lib in LIBS)
    evals = triple(
        [str(get(lib).evals) if get(lib) and get(lib).evals is not None else "-" for lib in LIBS]
    )
    if cuda:
        mem = triple(
            [
                f"{get(lib).peak_bytes / 2**20:.0f}" if get(lib) and get(lib).times else "-"
                for lib in LIBS
            ]
        )
    else:
        mem = "-"
    a, b = get("physode"), get("torchdiffeq")
    if a is not None and b is not None and a.ys is not None and b.ys is not None:
        diff = f"{(a.ys - b.ys).abs().max().item():.2e}"
    else:
        diff = "n/a"
    rounds = max((len(c.times) for c in cells.values()), default=0)
    return [case.label, *times, ratio(p, td), ratio(p, to), evals, mem, diff, str(rounds)]


HEADER = [
    "case",
    "physode ms",
    "torchdiffeq ms",
    "torchode ms",
    "physode/torchdiffeq",
    "physode/torchode",
    "f evals (p / td / to)",
    "peak MiB (p / td / to)",
    "max abs(ys_p - ys_td)",
    "rounds",
]


# ----------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="torch device (default: cuda)")
    parser.add_argument("--quick", action="store_true", help="smoke run: batch 256, 1 round")
    parser.add_argument("--no-tests", action="store_true", help="skip the CUDA tests")
    parser.add_argument("--repeats", type=int, default=None, help="timed rounds (default 3)")
    parser.add_argument(
        "--batch",
        type=int,
        nargs="+",
        default=None,
        help="three-body batch sizes (default 4096 256; --quick: 256)",
    )
    parser.add_argument(
        "--t-end",
        type=float,
        default=None,
        help="three-body: keep the outputs of linspace(0, 2, 100) up to this time "
        "(default: all; --quick: 0.5)",
    )
    parser.add_argument(
        "--row-budget", type=float, default=10.0, help="seconds of timed solves per row"
    )
    parser.add_argument(
        "--deadline",
        type=float,
        default=420.0,
        help="seconds from the start after which no new row starts (default 420)",
    )
    parser.add_argument("--test-timeout", type=float, default=240.0, help="pytest timeout (s)")
    add_arguments(parser)
    args = parser.parse_args(argv)
    if args.repeats is None:
        args.repeats = 1 if args.quick else 3
    if args.batch is None:
        args.batch = [256] if args.quick else [4096, 256]
    if args.t_end is None and args.quick:
        args.t_end = 0.5
    if args.repeats < 1 or any(b < 1 for b in args.batch):
        parser.error("--repeats and --batch must be at least 1")
    return args


def resolve_device(name: str) -> torch.device:
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise SystemExit(f"gpu.py: --device {name!r}: {describe(exc)}") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise SystemExit(
                f"gpu.py: --device {name} asked for, but torch {torch.__version__} sees no "
                f"CUDA device (torch.version.cuda = {torch.version.cuda}); "
                "use --device cpu for a smoke run"
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise SystemExit(
                f"gpu.py: --device {name}: only {torch.cuda.device_count()} CUDA device(s)"
            )
        if device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
    elif device.type != "cpu":
        raise SystemExit(f"gpu.py: --device {name}: only cpu and cuda are supported")
    return device


def print_header(device: torch.device, conditions: str, tests: PytestOutcome | None) -> None:
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        where = (
            f"{torch.cuda.get_device_name(device)} ({props.total_memory / 2**30:.0f} GiB, "
            f"CUDA {torch.version.cuda}, TF32 matmul {torch.backends.cuda.matmul.allow_tf32})"
        )
    else:
        where = f"CPU ({platform.machine()}, {os.cpu_count()} cores)"
    print(f"# GPU check, {datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}")
    print()
    print(f"- device: {where}")
    print(
        f"- torch {torch.__version__}, physode {physode.__version__}, "
        f"torchdiffeq {version(torchdiffeq)}, torchode {version(torchode)}, "
        f"Python {platform.python_version()}"
    )
    print(f"- {conditions}")
    if tests is None:
        print("- CUDA tests: not run (--no-tests)")
    else:
        print(f"- CUDA tests (pytest -q -k cuda tests): {tests.summary}")
        for line in tests.details:
            print(f"  - {line}")
    print()


def main(argv: list[str] | None = None) -> None:
    start = time.perf_counter()
    args = parse_args(argv)
    device = resolve_device(args.device)
    with applied(args) as conditions:
        tests = None if args.no_tests else run_cuda_tests(args.test_timeout)
        clock = Clock(device)
        cases = build_cases(args, device)
        libs = [lib for lib in LIBS if available(lib)]
        results: dict[str, dict] = {}
        skipped: dict[str, str] = {}
        for case in sorted(cases, key=lambda c: c.order):
            deadline = start + args.deadline
            if time.perf_counter() > deadline:
                skipped[case.label] = f"skipped (--deadline {args.deadline:.0f} s)"
                continue
            print(f"running {case.label} ...", file=sys.stderr, flush=True)
            results[case.label] = measure(
                case, libs, args.repeats, args.row_budget, deadline, clock
            )
            clock.release()
        print_header(device, conditions, tests)
        body = [
            row_cells(c, results.get(c.label), skipped.get(c.label), device.type == "cuda")
            for c in cases
        ]
        if tests is not None:
            body.append([f"CUDA tests: {tests.summary}", *["-"] * (len(HEADER) - 1)])
        print(markdown_table(HEADER, body, n_text=1))
        print()
        print(
            f"Median of the timed rounds after one warm-up; {time.perf_counter() - start:.0f} s "
            "in all. Ratios < 1: physode faster. *: the warm-up solve's time (no timed round "
            "before the deadline)."
        )


if __name__ == "__main__":
    main()
