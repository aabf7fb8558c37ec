"""Table 4 of the ACA paper: latent ODE on the MuJoCo hopper, interpolation test MSE.

Zhuang et al. (ICML 2020, "Adaptive Checkpoint Adjoint Method for Gradient Estimation
in Neural ODE"), Table 4, train the latent ODE of Rubanova et al. (2019) on the
hopper data set (10 000 trajectories of 200 steps; 100-point windows; the encoder
sees 10 %, 20 % or 50 % of the points; MSE over all 100 points of the test windows,
in normalised units, reported x 1e-2) with the latent ODE's gradient computed by
direct backprop ("naive"), the adjoint, or ACA. This script runs the same protocol
through ``physode fit`` (the sequence task, :mod:`physode.training.sequence_task`) for each
(gradient method, observed fraction) cell and prints our number next to the
published one. MALI runs with the ALF solver (``solver.method=alf``), the others
with dopri5; everything else is the config's.

Two sizes:

- default: ``examples/mujoco_small.yaml``, a REDUCED CPU configuration (1 000
  trajectories, 2 x 64-unit ODE networks, 30 epochs; the cells: direct and aca at
  10 / 20 / 50 %, mali and adjoint at 50 %). About 25 minutes of CPU time; its
  numbers show the methods side by side under one budget and are NOT comparable
  with the published full-size ones (they are several times larger: far fewer
  trajectories, epochs and units).
- ``--full``: ``examples/mujoco.yaml``, the reference's sizes (10 000 trajectories,
  4 x 300 units, 300 epochs), all 12 cells. It needs a GPU (``train.device: auto``).

Run from the repository root::

    python benchmarks/latent_hopper.py                       # the reduced table (2 jobs)
    python benchmarks/latent_hopper.py --full --jobs 1       # full size, on a GPU
    python benchmarks/latent_hopper.py --cells aca:10,50 --set train.epochs=5
    python benchmarks/latent_hopper.py --out runs/latent_hopper   # reuses finished cells

Each cell is one ``physode fit`` in a subprocess (``--jobs`` at a time, each on one
CPU thread when more than one runs); its run directory is ``OUT/<grad>-<percent>``,
its progress ``OUT/<grad>-<percent>.log``. A cell whose ``metrics.json`` exists is
not run again; one killed half-way is resumed. The data file is simulated once,
before the cells start. The table goes to stdout and to ``OUT/table.md``, the
numbers to ``OUT/results.json``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
SMALL = ROOT / "examples" / "mujoco_small.yaml"
FULL = ROOT / "examples" / "mujoco.yaml"
METHODS = ("direct", "adjoint", "aca", "mali")
PERCENTS = (10, 20, 50)
SMALL_CELLS = "direct:10,20,50 aca:10,20,50 mali:50 adjoint:50"
FULL_CELLS = " ".join(f"{m}:10,20,50" for m in METHODS)

#: Interpolation test MSE x 1e-2 at 10 / 20 / 50 % observed, as published.
PUBLISHED = {
    "direct": ((0.36, 0.30, 0.29), "Rubanova et al. 2019 (ACA paper: 'naive')"),
    "adjoint": ((0.47, 0.44, 0.40), "ACA paper, Table 4"),
    "aca": ((0.31, 0.27, 0.26), "ACA paper, Table 4"),
    "mali": (None, "not published for this task"),
}
TARGET = (0.30, 0.26, 0.25)  # ACA and MALI at or below these


def parse_cells(text: str) -> list[tuple[str, int]]:
    """``"aca:10,20,50 mali:50"`` -> ``[("aca", 10), ("aca", 20), ("aca", 50), ("mali", 50)]``."""
    cells = []
    for part in text.split():
        method, _, percents = part.partition(":")
        if method not in METHODS:
            raise SystemExit(f"--cells: unknown method {method!r}; choose from {METHODS}")
        for p in percents.split(",") if percents else map(str, PERCENTS):
            if int(p) not in PERCENTS:
                raise SystemExit(f"--cells: percent {p} is not one of {PERCENTS}")
            cells.append((method, int(p)))
    return cells


def cell_overrides(method: str, percent: int) -> list[str]:
    sets = [f"solver.grad={method}", f"task.observed_fraction={percent / 100}"]
    sets.append("solver.method=alf" if method == "mali" else "solver.method=dopri5")
    return sets


def prepare_data(config_path: Path, overrides: list[str]) -> Path:
    """Simulate the config's data file once (so that parallel cells do not race)."""
    from physode.datasets import simulate
    from physode.training import load_config

    config = load_config(config_path, overrides)
    path = Path(config.data.path)
    if not path.exists():
        if config.data.simulate is None:
            raise SystemExit(f"{path}: missing, and the config has no data.simulate")
        print(f"simulating {path} ...", file=sys.stderr)
        simulate(config.data.simulate, path, **config.data.simulate_options)
    return path


def _launch(config_path, run, log, sets, threads):
    args = [sys.executable, "-m", "physode", "fit", str(config_path), "-o", str(run)]
    for s in sets:
        args += ["--set", s]
    if (run / "checkpoints" / "last.pt").exists():
        args.append("--resume")
    env = dict(os.environ)
    if threads:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    fh = open(log, "a")  # closed when the process ends
    fh.write(" ".join(args) + "\n")
    fh.flush()
    return subprocess.Popen(args, stdout=fh, stderr=subprocess.STDOUT, env=env), fh


def read_cell(run: Path) -> dict:
    metrics = json.loads((run / "metrics.json").read_text())
    with open(run / "metrics.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    return {
        "test_mse": metrics["test_mse"],
        "train_mse": metrics["train_mse"],
        "seconds": metrics["seconds"],
        "epochs": metrics["epochs"],
        "n_f_evals": sum(int(r["n_f_evals"]) for r in rows),
        "n_f_evals_backward": sum(int(r["n_f_evals_backward"]) for r in rows),
        "n_train": metrics["n_train"],
        "n_test": metrics["n_test"],
        "n_parameters": metrics["n_parameters"],
        "solver": metrics["solver"],
    }


def run_cells(config_path, cells, out: Path, overrides, jobs: int) -> dict:
    """Run the cells not finished yet, ``jobs`` at a time: ``{(method, percent): result}``."""
    pending = []
    for method, percent in cells:
        run = out / f"{method}-{percent}"
        if (run / "metrics.json").exists():
            print(f"{run.name}: finished before, reused", file=sys.stderr)
        else:
            pending.append((method, percent, run))
    running = []
    threads = 1 if jobs > 1 else 0
    while pending or running:
        while pending and len(running) < jobs:
            method, percent, run = pending.pop(0)
            log = out / f"{run.name}.log"
            sets = [*cell_overrides(method, percent), *overrides]
            proc, fh = _launch(config_path, run, log, sets, threads)
            running.append((run, proc, fh, time.perf_counter()))
            print(f"{run.name}: started (log {log})", file=sys.stderr)
        time.sleep(1.0)
        for item in list(running):
            run, proc, fh, start = item
            if proc.poll() is None:
                continue
            fh.close()
            running.remove(item)
            took = time.perf_counter() - start
            state = "done" if proc.returncode == 0 else f"FAILED (exit {proc.returncode})"
            print(f"{run.name}: {state} in {took:.0f} s", file=sys.stderr)
    results = {}
    for method, percent in cells:
        run = out / f"{method}-{percent}"
        if (run / "metrics.json").exists():
            results[(method, percent)] = read_cell(run)
        else:
            log = out / f"{run.name}.log"
            tail = log.read_text().strip().splitlines()[-1:] if log.exists() else ["no log"]
            results[(method, percent)] = {"error": tail[0]}
    return results


def _fmt(x: float | None, scale: float = 100.0) -> str:
    return "-" if x is None else f"{x * scale:.2f}"


def table(results: dict, config_path: Path, full: bool, overrides: list[str], jobs: int = 1) -> str:
    from physode.training import load_config

    threads = "one CPU thread per fit, " if jobs > 1 else ""
    threads += f"{jobs} fits at a time" if jobs > 1 else "one fit at a time"

    config = load_config(config_path, overrides)
    spec, train = config.model.latent, config.train
    any_cell = next((r for r in results.values() if "error" not in r), None)
    size = (
        f"{any_cell['n_train']} train / {any_cell['n_test']} test trajectories, "
        f"{any_cell['n_parameters']} parameters"
        if any_cell
        else ""
    )
    dyn = spec.dynamics_hidden or [300, 300, 300, 300]
    lines = [
        "Latent ODE on the MuJoCo hopper: interpolation test MSE (x 1e-2) at 10 / 20 / 50 % "
        "observed",
        "",
        (
            "FULL-SIZE configuration"
            if full
            else "REDUCED CPU configuration - NOT comparable with the published full-size numbers"
        )
        + f" ({config_path.relative_to(ROOT) if config_path.is_relative_to(ROOT) else config_path}"
        + (f" with {' '.join(overrides)}" if overrides else "")
        + f"): {size}, latent {spec.latent_dim}, hidden {spec.hidden_dim}, ODE MLPs "
        f"{'x'.join(map(str, dyn))}, {train.epochs} epochs of batch {train.batch_size}, "
        f"{train.optimizer} lr {train.lr:g}, {train.dtype}, {threads} on {platform.machine()} "
        f"(torch {torch.__version__}).",
        "",
        "| latent ODE gradient | ours 10 % | ours 20 % | ours 50 % | train s (10/20/50 %) "
        "| latent-ODE evals fwd+bwd (50 %) | published 10 / 20 / 50 % |",
        "|---|---|---|---|---|---|---|",
    ]
    for method in METHODS:
        cells = [results.get((method, p)) for p in PERCENTS]
        if all(c is None for c in cells):
            continue
        ours, secs = [], []
        for c in cells:
            if c is None:
                ours.append("not run")
                secs.append("-")
            elif "error" in c:
                ours.append("fail")
                secs.append("-")
            else:
                ours.append(_fmt(c["test_mse"]))
                secs.append(f"{c['seconds']:.0f}")
        c50 = results.get((method, 50))
        evals = (
            f"{c50['n_f_evals']}+{c50['n_f_evals_backward']}" if c50 and "error" not in c50 else "-"
        )
        pub, source = PUBLISHED[method]
        published = " / ".join(f"{x:.2f}" for x in pub) + f" ({source})" if pub else source
        name = f"{method} (alf)" if method == "mali" else f"{method} (dopri5)"
        lines.append(
            f"| {name} | {' | '.join(ours)} | {' / '.join(secs)} | {evals} | {published} |"
        )
    lines += [
        "",
        f"Target (full size): ACA and MALI at or below {' / '.join(f'{x:.2f}' for x in TARGET)}.",
        "MSE in normalised units ((x - min) / max per variable over the training data), over "
        "all 100 points of each test window; predictions decode the posterior mean of z0. "
        "Seconds: training epochs only (test scoring excluded); evaluations: calls of the "
        "latent ODE's right-hand side over the whole fit (the encoder's Euler steps are "
        "the same for every method and not counted).",
    ]
    same = []
    for p in PERCENTS:
        a, b = results.get(("direct", p)), results.get(("aca", p))
        if a and b and "error" not in a and "error" not in b:
            same.append(abs(a["test_mse"] - b["test_mse"]) / a["test_mse"])
    if same:
        lines.append(
            f"direct and aca: test MSEs within {max(same):.1e} (relative) of each other "
            "(same forward solve; gradients equal up to rounding)."
        )
    for key, c in results.items():
        if "error" in c:
            lines.append(f"{key[0]} {key[1]} %: failed: {c['error']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--full", action="store_true", help="examples/mujoco.yaml, all 12 cells")
    ap.add_argument("--config", type=Path, default=None, help="base config (overrides --full's)")
    ap.add_argument("--cells", default=None, help=f"e.g. '{SMALL_CELLS}'")
    ap.add_argument("--out", type=Path, default=None, help="run directories (default runs/...)")
    ap.add_argument("--jobs", type=int, default=2, help="fits at a time (default 2)")
    ap.add_argument(
        "--set", dest="overrides", action="append", default=[], help="config override, repeatable"
    )
    args = ap.parse_args(argv)
    config_path = (args.config or (FULL if args.full else SMALL)).resolve()
    cells = parse_cells(args.cells or (FULL_CELLS if args.full else SMALL_CELLS))
    out = args.out or ROOT / "runs" / ("latent_hopper_full" if args.full else "latent_hopper")
    out = out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    prepare_data(config_path, args.overrides)
    tic = time.perf_counter()
    results = run_cells(config_path, cells, out, args.overrides, max(1, args.jobs))
    text = table(results, config_path, args.full, args.overrides, max(1, args.jobs))
    print(text)
    (out / "table.md").write_text(text + "\n")
    (out / "results.json").write_text(
        json.dumps(
            {
                "config": str(config_path),
                "overrides": args.overrides,
                "full": args.full,
                "wall_seconds": time.perf_counter() - tic,
                "cells": [
                    {"method": m, "percent": p, **r} for (m, p), r in sorted(results.items())
                ],
                "published": {m: v[0] for m, v in PUBLISHED.items()},
            },
            indent=2,
        )
        + "\n"
    )
    print(f"\nwrote {out / 'table.md'} and {out / 'results.json'}", file=sys.stderr)
    return 0 if all("error" not in r for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
