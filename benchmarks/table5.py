"""Table 5 of the ACA paper, "ODE" row: three-body mass fitting with each gradient method.

Zhuang et al. (ICML 2020, "Adaptive Checkpoint Adjoint Method for Gradient Estimation
in Neural ODE"), Table 5, fit the masses of a three-body system from its trajectory
on t in [0, 1] and score the prediction over [0, 2]. This script fits physode's
default three-body setup (``examples/threebody.yaml``: 2 000 times in [0, 2], fit
window [0, 1], true masses (1.1, 1.1, 0.9), L-BFGS, float64) with ``grad`` =
``direct`` (the paper's "naive"), ``adjoint``, ``aca`` (dopri5) and ``mali`` (alf),
each from several seeds, through :func:`physode.training.fit.fit` (what
``physode fit`` runs).

A seed sets ``train.seed`` and draws the initial masses, uniform in [0.8, 1.2] per
body from ``numpy.random.default_rng(seed)``; every method starts from the same draw.

Score, as in the paper: the squared error summed over the 9 position coordinates,
averaged over the 2 000 times in [0, 2] (the data file's times). This is the fit's
``position_score`` when the fit window starts at the file's first time (it then
predicts from t = 0 on); the script checks that, and recomputes every score from the
learned masses with a fresh solve (same solver settings) to verify the definition.
It also gives the score of the learned masses re-solved with a reference solver
(dopri5, rtol 1e-10, atol 1e-12), which separates the error of the masses from the
integration error of the fit's own solver (which matters for ALF, second order).

Columns: the score per seed and its mean ± std (sample std over seeds); the
relative error of the masses (max over bodies, mean over seeds); fit seconds (the
epochs only, mean over seeds); function evaluations forward + backward over the
whole fit (mean over seeds, from ``metrics.csv``); the paper's number. A fit that
fails gets a ``fail (reason)`` cell. Target: ACA and MALI at or below 7e-6, a
hundred times better than the paper's ACA (0.0007).

Run from the repository root::

    python benchmarks/table5.py                    # 4 methods x 3 seeds: ~25 minutes on 2 cores
    python benchmarks/table5.py --quick            # 1 seed, 3 epochs: a smoke run
    python benchmarks/table5.py --methods aca,mali --seeds 0,1 --out runs/table5
    python benchmarks/table5.py --mali-rtol 1e-9 --mali-atol 1e-10

The data file is the config's ``data.path`` (``examples/threebody.h5``, simulated
once if missing) and is shared by every fit. Run directories go under ``--out``
(default: a temporary directory, deleted at the end). Progress goes to stderr; the
table to stdout.
"""

from __future__ import annotations

import argparse
import csv
import math
import shutil
import statistics
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

import physode
from physode.datasets import read_trajectories, simulate
from physode.errors import SolverError
from physode.models import NBodyGravity
from physode.training import config_from_dict, config_to_dict, load_config
from physode.training.runner import fit

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = ROOT / "examples" / "threebody.yaml"

METHODS = ("direct", "adjoint", "aca", "mali")
#: Table 5 of Zhuang et al. 2020, "ODE" row (MALI is not in the paper).
PAPER = {"direct": "0.0025 (naive)", "adjoint": "0.0025", "aca": "0.0007", "mali": "-"}
TARGET = 7e-6
TARGET_METHODS = ("aca", "mali")
#: Initial masses: uniform in this range per body.
MASS_RANGE = (0.8, 1.2)
#: The reference solve of the learned masses.
REFERENCE = {"method": "dopri5", "rtol": 1e-10, "atol": 1e-12}
#: The paper's score averages over this many times in [0, 2].
N_TIMES = 2000


@dataclass
class Run:
    method: str
    seed: int
    score: float | None = None
    reference_score: float | None = None
    mass_error: float | None = None
    seconds: float | None = None
    wall: float | None = None
    evals: int | None = None
    masses: list[float] = field(default_factory=list)
    failure: str | None = None


class _Prefixed:
    """A text stream that writes each line with a prefix (the fit's progress lines)."""

    def __init__(self, stream, prefix: str) -> None:
        self.stream, self.prefix, self.at_start = stream, prefix, True

    def write(self, text: str) -> int:
        out = []
        for piece in text.splitlines(keepends=True):
            if self.at_start and piece.strip():
                out.append(self.prefix)
            out.append(piece)
            self.at_start = piece.endswith("\n")
        self.stream.write("".join(out))
        return len(text)

    def flush(self) -> None:
        self.stream.flush()

    def isatty(self) -> bool:
        return False


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def initial_masses(seed: int, n_bodies: int) -> list[float]:
    """Seed ``seed``'s initial masses: uniform in :data:`MASS_RANGE`, the same for every method."""
    return np.random.default_rng(seed).uniform(*MASS_RANGE, size=n_bodies).tolist()


def position_indices(variables: list[str]) -> list[int]:
    return [i for i, v in enumerate(variables) if not v.startswith("v")]


def check_data(path: Path, fit_window: tuple[float, float]) -> None:
    """The file holds the paper's 2 000 times in [0, 2], 9 positions, and the fit window
    starts at its first time, so ``position_score`` averages over all of them."""
    data = read_trajectories(path)
    t = np.asarray(data.time)
    positions = position_indices(list(data.variables))
    problems = []
    if data.n_trajectories != 1:
        problems.append(f"{data.n_trajectories} trajectories (expected 1)")
    if len(t) != N_TIMES or t[0] != 0.0 or t[-1] != 2.0:
        problems.append(f"{len(t)} times in [{t[0]:g}, {t[-1]:g}] (expected {N_TIMES} in [0, 2])")
    if len(positions) != 9:
        problems.append(f"{len(positions)} position variables (expected 9)")
    if fit_window[0] != t[0]:
        problems.append(
            f"the fit window starts at {fit_window[0]:g}, not at the first time {t[0]:g}: "
            "position_score would skip the earlier times"
        )
    if problems:
        raise SystemExit(f"{path}: not the paper's setup: " + "; ".join(problems))


def rescore(path: Path, config, masses: list[float], **solver) -> float:
    """The paper's score of the learned ``masses``, from a fresh solve over the file's times."""
    data = read_trajectories(path)
    model = NBodyGravity(**{**config.model.physics.arguments, "masses": masses})
    model = model.double()
    state = torch.as_tensor(np.asarray(data.state[0]), dtype=torch.float64)
    t = torch.as_tensor(np.asarray(data.time), dtype=torch.float64)
    with torch.no_grad():
        ys = physode.solve(model, state[0], t, grad="direct", **solver).ys
    idx = position_indices(list(data.variables))
    return float((ys[:, idx] - state[:, idx]).square().sum(-1).mean())


def total_evals(run_dir: Path) -> int:
    # Evaluations are per epoch in metrics.csv only (the summary does not carry them).
    with open(run_dir / "metrics.csv", newline="") as fh:
        return sum(int(r["n_f_evals"]) + int(r["n_f_evals_backward"]) for r in csv.DictReader(fh))


def failure_reason(exc: BaseException) -> str:
    """A short cell text: the solver's reason when a ``SolverError`` is in the chain."""
    chain, seen = [], set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        chain.append(e)
        e = e.__cause__ or e.__context__
    for e in chain:
        if isinstance(e, SolverError):
            return f"SolverError: {e.reason} at t={e.t:.3g}"
    cause = chain[-1]
    text = str(cause).splitlines()[0] if str(cause) else ""
    text = text if len(text) <= 60 else text[:57] + "..."
    return f"{type(cause).__name__}: {text}" if text else type(cause).__name__


def run_one(base: dict, method: str, seed: int, args, out: Path, data_path: Path) -> Run:
    d = {k: dict(v) if isinstance(v, dict) else v for k, v in base.items()}
    d["model"] = {**base["model"], "physics": dict(base["model"]["physics"])}
    physics = d["model"]["physics"]
    masses0 = initial_masses(seed, physics["n_bodies"])
    physics["masses"], physics["learn_masses"] = masses0, True
    rtol, atol = (args.mali_rtol, args.mali_atol) if method == "mali" else (args.rtol, args.atol)
    d["solver"] = {
        **base["solver"],
        "grad": method,
        "method": "alf" if method == "mali" else "dopri5",
        "rtol": rtol if rtol is not None else base["solver"]["rtol"],
        "atol": atol if atol is not None else base["solver"]["atol"],
    }
    d["train"] = {**base["train"], "seed": seed, "device": args.device}
    if args.epochs is not None:
        d["train"]["epochs"] = args.epochs
    run_dir = out / f"{method}-seed{seed}"
    d["output"] = {"dir": str(run_dir)}
    config = config_from_dict(d)
    run = Run(method, seed)
    prefix = f"[{method} seed {seed}] "
    log(
        f"{prefix}start: masses0 = [{', '.join(f'{m:.4f}' for m in masses0)}], "
        f"{config.solver.method} rtol {config.solver.rtol:g} atol {config.solver.atol:g}, "
        f"{config.train.epochs} epochs"
    )
    tic = time.perf_counter()
    try:
        result = fit(config, run_dir, stream=_Prefixed(sys.stderr, prefix))
    except Exception as exc:  # a failed fit is a table cell, not the end of the table
        run.failure = failure_reason(exc)
        run.wall = time.perf_counter() - tic
        log(f"{prefix}FAILED after {run.wall:.1f}s: {run.failure}")
        if args.verbose:
            traceback.print_exc()
        return run
    run.wall = time.perf_counter() - tic
    s = result.metrics
    run.score = s["position_score"]
    run.seconds = s["seconds"]
    run.masses = list(s["parameters"]["masses"])
    run.mass_error = max(s["true_parameters"]["masses"]["relative_error"])
    run.evals = total_evals(run_dir)
    # Verify the score's definition: recompute it from the learned masses with the
    # fit's own solver settings (as the fit's predictions use), then with the reference.
    s_cfg = config.solver
    check = rescore(
        data_path, config, run.masses, method=s_cfg.method, rtol=s_cfg.rtol, atol=s_cfg.atol
    )
    if not math.isclose(check, run.score, rel_tol=1e-6, abs_tol=1e-15):
        log(f"{prefix}WARNING: position_score {run.score:.6e} but the recomputed score {check:.6e}")
    run.reference_score = rescore(data_path, config, run.masses, **REFERENCE)
    log(
        f"{prefix}done in {run.wall:.1f}s (fit {run.seconds:.1f}s): score {run.score:.3e} "
        f"(recomputed {check:.3e}, reference solver {run.reference_score:.3e}), "
        f"masses [{', '.join(f'{m:.7f}' for m in run.masses)}], "
        f"max rel. error {run.mass_error:.2e}, evals {run.evals}"
    )
    return run


# ----------------------------------------------------------------------------- table


def fmt(x: float | None, spec: str = ".2e") -> str:
    return "-" if x is None else format(x, spec)


def mean_std(values: list[float]) -> str:
    if not values:
        return "-"
    m = statistics.fmean(values)
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{m:.2e} ± {sd:.1e}"


def markdown_table(header: list[str], rows: list[list[str]], n_text: int = 1) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]

    def line(cells: list[str]) -> str:
        return (
            "| "
            + " | ".join(
                c.ljust(w) if i < n_text else c.rjust(w)
                for i, (c, w) in enumerate(zip(cells, widths, strict=True))
            )
            + " |"
        )

    rules = ["-" * (w + 2) if i < n_text else "-" * (w + 1) + ":" for i, w in enumerate(widths)]
    return "\n".join([line(header), "|" + "|".join(rules) + "|", *(line(r) for r in rows)])


def solver_label(method: str, args, base: dict) -> str:
    rtol, atol = (args.mali_rtol, args.mali_atol) if method == "mali" else (args.rtol, args.atol)
    rtol = rtol if rtol is not None else base["solver"]["rtol"]
    atol = atol if atol is not None else base["solver"]["atol"]
    return f"{'alf' if method == 'mali' else 'dopri5'} {rtol:g}/{atol:g}"


def table(runs: dict[tuple[str, int], Run], methods, seeds, args, base) -> str:
    header = ["method", "solver rtol/atol"]
    header += [f"score seed {s}" for s in seeds]
    header += [
        "mean ± std",
        "ref. solver mean",
        "mass rel. err",
        "fit s",
        "evals fwd+bwd",
        "paper (ACA Table 5)",
    ]
    rows = []
    for m in methods:
        rs = [runs[(m, s)] for s in seeds]
        ok = [r for r in rs if r.failure is None]
        cells = [m, solver_label(m, args, base)]
        cells += [fmt(r.score) if r.failure is None else f"fail ({r.failure})" for r in rs]
        cells.append(mean_std([r.score for r in ok]))
        cells.append(fmt(statistics.fmean(r.reference_score for r in ok)) if ok else "-")
        cells.append(fmt(statistics.fmean(r.mass_error for r in ok)) if ok else "-")
        cells.append(fmt(statistics.fmean(r.seconds for r in ok), ".1f") if ok else "-")
        cells.append(f"{statistics.fmean(r.evals for r in ok):.0f}" if ok else "-")
        cells.append(PAPER.get(m, "-"))
        rows.append(cells)
    return markdown_table(header, rows, n_text=2)


def target_lines(runs, methods, seeds) -> list[str]:
    lines = []
    for m in TARGET_METHODS:
        if m not in methods:
            continue
        rs = [runs[(m, s)] for s in seeds]
        ok = [r.score for r in rs if r.failure is None]
        if len(ok) < len(rs):
            verdict = f"NOT MET ({len(rs) - len(ok)} of {len(rs)} fits failed)"
        elif max(ok) <= TARGET:
            verdict = f"met (worst seed {max(ok):.2e})"
        else:
            verdict = f"NOT MET (worst seed {max(ok):.2e}, mean {statistics.fmean(ok):.2e})"
        lines.append(f"- {m}: {verdict}")
    return lines


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="base config")
    ap.add_argument("--seeds", default=None, help="comma-separated seeds (default 0,1,2)")
    ap.add_argument("--methods", default=",".join(METHODS), help="comma-separated grad methods")
    ap.add_argument("--epochs", type=int, default=None, help="L-BFGS epochs (default: config's)")
    ap.add_argument("--quick", action="store_true", help="smoke run: seed 0 only, 3 epochs")
    ap.add_argument("--out", type=Path, default=None, help="run directories (default: temp dir)")
    ap.add_argument("--rtol", type=float, default=None, help="dopri5 rtol (default: config's)")
    ap.add_argument("--atol", type=float, default=None, help="dopri5 atol (default: config's)")
    ap.add_argument("--mali-rtol", type=float, default=None, help="alf rtol (default: --rtol)")
    ap.add_argument("--mali-atol", type=float, default=None, help="alf atol (default: --atol)")
    ap.add_argument("--device", default="cpu", help="train.device (default cpu)")
    ap.add_argument("--verbose", action="store_true", help="tracebacks of failed fits")
    args = ap.parse_args(argv)
    if args.seeds is None:
        args.seeds = "0" if args.quick else "0,1,2"
    if args.quick and args.epochs is None:
        args.epochs = 3
    args.seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    args.methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in args.methods if m not in METHODS]
    if unknown:
        ap.error(f"--methods: unknown {unknown}; choose from {', '.join(METHODS)}")
    if args.mali_rtol is None:
        args.mali_rtol = args.rtol
    if args.mali_atol is None:
        args.mali_atol = args.atol
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    config = load_config(args.config)
    base = config_to_dict(config)
    data_path = Path(config.data.path)
    if not data_path.exists():  # simulated once here, then shared by every fit
        if config.data.simulate is None:
            raise SystemExit(f"{data_path} is missing and the config sets no simulator")
        log(f"simulating {data_path} ({config.data.simulate})")
        simulate(config.data.simulate, data_path, **config.data.simulate_options)
    check_data(data_path, tuple(config.data.fit_window))
    base["data"] = {**base["data"], "path": str(data_path), "simulate": None}

    temporary = args.out is None
    out = Path(tempfile.mkdtemp(prefix="table5-")) if temporary else args.out
    out.mkdir(parents=True, exist_ok=True)
    log(
        f"table 5: methods {', '.join(args.methods)}; seeds {args.seeds}; "
        f"run directories in {out}; data {data_path}"
    )
    runs: dict[tuple[str, int], Run] = {}
    tic = time.perf_counter()
    try:
        for seed in args.seeds:
            for m in args.methods:
                run_dir = out / f"{m}-seed{seed}"
                if run_dir.exists():
                    shutil.rmtree(run_dir)
                runs[(m, seed)] = run_one(base, m, seed, args, out, data_path)
    finally:
        if temporary:
            shutil.rmtree(out, ignore_errors=True)
    total = time.perf_counter() - tic

    epochs = args.epochs if args.epochs is not None else base["train"]["epochs"]
    t = base["train"]
    print(
        f"## ACA paper Table 5, ODE row: three-body problem, {len(args.seeds)} seed(s)\n\n"
        f"Score: squared error summed over the 9 positions, mean over the {N_TIMES} times "
        f"in [0, 2]; fit window {list(base['data']['fit_window'])}. {t['optimizer']} "
        f"(lr {t['lr']:g}), {epochs} epochs, {t['dtype']}, device {args.device}; initial "
        f"masses uniform in {list(MASS_RANGE)} from default_rng(seed); true masses "
        f"(1.1, 1.1, 0.9).\n"
    )
    print(table(runs, args.methods, args.seeds, args, base))
    print(
        f"\nref. solver: the learned masses re-solved with {REFERENCE['method']} "
        f"rtol {REFERENCE['rtol']:g} atol {REFERENCE['atol']:g}. mass rel. err: max over "
        "bodies, mean over seeds. fit s: epochs only, mean over seeds. evals: forward + "
        "backward function evaluations of the whole fit, mean over seeds."
    )
    lines = target_lines(runs, args.methods, args.seeds)
    if lines:
        print(f"\nTarget: ACA and MALI at or below {TARGET:g} on every seed (paper's ACA / 100).")
        print("\n".join(lines))
    print(
        f"\nTotal {total:.0f} s on {torch.get_num_threads()} threads, "
        f"physode {physode.__version__}, torch {torch.__version__}."
    )
    return 0 if all(r.failure is None for r in runs.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
