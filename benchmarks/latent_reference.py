"""The latent ODE side by side with the reference (Rubanova et al. 2019) on the same hopper data.

The reference is ``run_models.py`` of a copy of github.com/YuliaRubanova/latent_ode outside
the project (``--reference DIR``; fetch it yourself, nothing of it is copied here). Both
train on the same trajectories: the first ``-n`` of a physode hopper file, saved as the
reference's ``data/HopperPhysics/training.pt`` in a scratch directory. For each observed
fraction the two run one after the other at the same thread count, with the reference's
hopper sizes (latent 15, encoder 30, GRU 100 units, ODE right-hand sides of 3 hidden layers
of 300 tanh units), ``--epochs`` passes over the training set, batches of 50, Adamax
1e-2 x0.999 a step down to 1e-3, obs std 1e-3, 3 samples of z0, KL warm-up 10 epochs.

Printed: per observed fraction, the test MSE of each (the reference's own, from 3 sampled
z0; physode's ``test_mse_sampled`` and its posterior-mean ``test_mse``), the time per
training iteration of each (the reference: between its first and last optimiser step,
less its per-epoch test evaluations; physode: the sum of metrics.csv's per-epoch
``seconds``, which leave the scoring out, over the number of steps) and their ratio.

    python benchmarks/latent_reference.py --reference /path/to/latent_ode -n 300 --epochs 40
    python benchmarks/latent_reference.py --reference DIR -n 300 --epochs 60 --seeds 3 \
        --variant reference-unit:model.latent.encoder_cell=reference,model.latent.init=reference

The reference needs scikit-learn and pandas; its import of torchvision (for a download
helper the hopper never calls) is answered by a stub module, so torchvision need not be
installed.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from conditions import add_arguments, applied
from engine import markdown_table

ROOT = Path(__file__).resolve().parent.parent
REFERENCE_ARGS = [
    "--dataset", "hopper", "--latent-ode", "-l", "15", "--rec-dims", "30",
    "--gru-units", "100", "--units", "300", "--gen-layers", "3", "--rec-layers", "3",
]  # fmt: skip

# Run inside the reference's scratch directory: times the optimiser steps and the test
# evaluations, keeps the test MSE at full precision, and answers torchvision's import.
DRIVER = """
import json, runpy, sys, time, types
reference, out, args = sys.argv[1], sys.argv[2], sys.argv[3:]
stub = types.ModuleType("torchvision")
stub.datasets = types.ModuleType("torchvision.datasets")
stub.datasets.utils = types.ModuleType("torchvision.datasets.utils")
stub.datasets.utils.download_url = None
sys.modules.update({"torchvision": stub, "torchvision.datasets": stub.datasets,
                    "torchvision.datasets.utils": stub.datasets.utils})
sys.path.insert(0, reference)
import torch
import lib.utils as U
record = {"steps": [], "eval_seconds": 0.0, "mse": []}
evaluate = U.compute_loss_all_batches
def timed_evaluate(*a, **k):
    start = time.perf_counter()
    res = evaluate(*a, **k)
    record["eval_seconds"] += time.perf_counter() - start
    record["mse"].append(float(res["mse"]))
    return res
U.compute_loss_all_batches = timed_evaluate
step = torch.optim.Adamax.step
def timed_step(self, *a, **k):
    result = step(self, *a, **k)
    record["steps"].append(time.perf_counter())
    return result
torch.optim.Adamax.step = timed_step
sys.argv = [reference + "/run_models.py", *args]
try:
    runpy.run_path(reference + "/run_models.py", run_name="__main__")
finally:
    with open(out, "w") as fh:
        json.dump(record, fh)
"""


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", type=Path, required=True, help="latent_ode checkout")
    parser.add_argument("--data", type=Path, default=None, help="physode hopper file")
    parser.add_argument("-n", type=int, default=300, help="trajectories (the first n)")
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.1, 0.2, 0.5])
    parser.add_argument("--seed", type=int, default=1991, help="the reference's -r")
    parser.add_argument(
        "--seeds",
        type=int,
        default=1,
        help="runs per fraction and implementation, seeds --seed, --seed + 1, ... (the "
        "reference's -r, physode's train.seed)",
    )
    parser.add_argument("--work", type=Path, default=Path("latent_reference_runs"))
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a further override of physode's runs, e.g. model.latent.encoder_cell=reference",
    )
    parser.add_argument(
        "--variant",
        dest="variants",
        action="append",
        default=[],
        metavar="NAME:KEY=VALUE,...",
        help="a further physode configuration run beside the first (--set applies to all), "
        "e.g. reference-cell:model.latent.encoder_cell=reference,model.latent.init=reference",
    )
    add_arguments(parser)
    args = parser.parse_args()
    if not (args.reference / "run_models.py").is_file():
        raise SystemExit(f"--reference: no run_models.py in {args.reference}")
    if args.n < 10 or args.epochs < 1:
        raise SystemExit("-n must be at least 10 and --epochs at least 1")
    variants = {"physode": []}
    for item in args.variants:
        name, sep, sets = item.partition(":")
        if not sep or not name or name in variants or "/" in name:
            raise SystemExit(f"--variant: expected a new NAME:KEY=VALUE,..., got {item!r}")
        variants[name] = [s for s in sets.split(",") if s]
    args.variants = variants
    return args


def child_env(args: argparse.Namespace) -> dict[str, str]:
    """The runs' environment: ``--threads`` reaches them as OMP/MKL thread counts."""
    env = dict(os.environ, MPLBACKEND="Agg")
    if args.threads is not None:
        env.update(OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    return env


def hopper_file(args: argparse.Namespace) -> Path:
    """A hopper file holding exactly the first ``n`` trajectories (of ``--data``, or
    simulated), which both models read."""
    from physode.datasets import read_trajectories, write_trajectories

    path = args.work / f"hopper_first_{args.n}.h5"
    if path.exists():
        return path
    source = args.data or args.work / f"hopper_{args.n}.h5"
    if not source.exists():
        cmd = ["physode", "simulate", "hopper", "-o", str(source)]
        subprocess.run([*cmd, "--n-trajectories", str(args.n)], check=True)
    data = read_trajectories(source)
    if data.state.shape[0] < args.n:
        raise SystemExit(f"--data: {source} has {data.state.shape[0]} trajectories, -n is {args.n}")
    first = dataclasses.replace(data, state=data.state[: args.n])
    if getattr(first, "mask", None) is not None:
        first = dataclasses.replace(first, mask=first.mask[: args.n])
    write_trajectories(path, first)
    return path


def run_reference(args, data: Path, fraction: float, seed: int) -> dict:
    from physode.datasets import read_trajectories

    work = (args.work / f"reference_{fraction:g}_{seed}").resolve()
    (work / "data" / "HopperPhysics").mkdir(parents=True, exist_ok=True)
    state = torch.as_tensor(read_trajectories(data).state[: args.n]).float()
    torch.save(state, work / "data" / "HopperPhysics" / "training.pt")
    (work / "driver.py").write_text(DRIVER)
    out = work / "record.json"
    cmd = [sys.executable, "driver.py", str(args.reference.resolve()), str(out)]
    cmd += [*REFERENCE_ARGS, "-n", str(args.n), "--niters", str(args.epochs)]
    cmd += ["-s", str(fraction), "-r", str(seed), "-b", "50"]
    proc = subprocess.run(cmd, cwd=work, capture_output=True, text=True, env=child_env(args))
    if proc.returncode != 0 or not out.exists():
        raise SystemExit(f"the reference failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    record = json.loads(out.read_text())
    steps = record["steps"]
    # Between the first and the last step, less the evaluations in between (all but the
    # last come before the last step).
    evals_between = record["eval_seconds"] * (len(record["mse"]) - 1) / max(len(record["mse"]), 1)
    per_iter = (steps[-1] - steps[0] - evals_between) / (len(steps) - 1)
    return {"mse": record["mse"][-1], "per_iteration": per_iter, "iterations": len(steps)}


def run_physode(args, data: Path, fraction: float, seed: int, variant: str) -> dict:
    run = (args.work / f"{variant}_{fraction:g}_{seed}").resolve()
    sets = {
        "train.seed": seed,
        "data.path": str(data.resolve()),
        "data.simulate": "null",
        # The reference runs n_batches * (niters + 1) - 1 steps: one epoch more.
        "train.epochs": args.epochs + 1,
        "train.device": "cpu",
        "train.checkpoint_every": args.epochs,
        "task.observed_fraction": fraction,
        "task.eval_every": "null",
        "task.n_predictions": 0,
    }
    cmd = ["physode", "fit", str(ROOT / "examples" / "mujoco.yaml"), "-o", str(run), "--quiet"]
    if run.exists():
        shutil.rmtree(run)
    extra = args.overrides + args.variants[variant]
    for item in [f"{key}={value}" for key, value in sets.items()] + extra:
        cmd += ["--set", item]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=child_env(args))
    if proc.returncode != 0:
        raise SystemExit(f"physode fit failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    metrics = json.loads((run / "metrics.json").read_text())
    with open(run / "metrics.csv", newline="") as fh:
        seconds = sum(float(r["seconds"]) for r in csv.DictReader(fh))
    steps = (args.epochs + 1) * math.ceil(metrics["n_train"] / 50)
    return {
        "mse": metrics["test_mse_sampled"],
        "mse_mean": metrics["test_mse"],
        "per_iteration": seconds / steps,
        "iterations": steps,
    }


def mean_std(values: list[float], digits: int = 5, scale: float = 1.0) -> str:
    """``mean +- std`` (the std over the runs; the value alone for one run)."""
    mean = statistics.mean(values) * scale
    if len(values) == 1:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {statistics.stdev(values) * scale:.{digits}f}"


def main() -> None:
    args = parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    data = hopper_file(args)
    rows, runs = [], []
    seeds = [args.seed + i for i in range(args.seeds)]
    start = time.perf_counter()
    with applied(args) as conditions:
        for fraction in args.fractions:
            ref, ours = [], {name: [] for name in args.variants}
            for seed in seeds:  # interleaved: a slow spell of the machine hits all
                ref.append(run_reference(args, data, fraction, seed))
                print(f"  reference {fraction:g} {seed}: {ref[-1]}", file=sys.stderr, flush=True)
                run = {"fraction": fraction, "seed": seed, "reference": ref[-1]}
                for name in args.variants:
                    ours[name].append(run_physode(args, data, fraction, seed, name))
                    run[name] = ours[name][-1]
                    print(f"  {name} {fraction:g} {seed}: {run[name]}", file=sys.stderr, flush=True)
                runs.append(run)
            for name, mine in ours.items():
                pairs = list(zip(ref, mine, strict=True))
                ratios = [o["per_iteration"] / r["per_iteration"] for r, o in pairs]
                at_or_below = sum(o["mse"] <= r["mse"] for r, o in pairs)
                rows.append(
                    [
                        f"{fraction:g}",
                        name,
                        mean_std([r["mse"] for r in ref]),
                        mean_std([o["mse"] for o in mine]),
                        mean_std([o["mse_mean"] for o in mine]),
                        f"{at_or_below} / {len(seeds)}",
                        mean_std([r["per_iteration"] for r in ref], 0, 1e3),
                        mean_std([o["per_iteration"] for o in mine], 0, 1e3),
                        mean_std(ratios, 2),
                        f"{ref[0]['iterations']} / {mine[0]['iterations']}",
                    ]
                )
    (args.work / "runs.json").write_text(json.dumps(runs, indent=1))
    print(f"{conditions}; both runs in subprocesses; torch {torch.__version__}", end="\n\n")
    print(
        f"Hopper, the first {args.n} trajectories of {data.name} (80 % train), windows of "
        f"100 points, batches of 50, the reference's --niters {args.epochs}; seeds "
        f"{', '.join(map(str, seeds))} (the reference's -r and physode's train.seed). test "
        "MSE in normalised units (x 100 for the paper's x 1e-2), mean ± std over the seeds: "
        "the reference's (3 sampled z0), physode's sampled (3 z0, the same scoring) and "
        "from the posterior mean; 'physode <= ref': the seeds where physode's sampled MSE is "
        "at or below the reference's of the same seed; ms per training iteration."
        + (f" physode's overrides: {', '.join(args.overrides)}." if args.overrides else "")
        + "".join(f" {name}: {', '.join(sets)}." for name, sets in args.variants.items() if sets),
        end="\n\n",
    )
    header = ["observed", "physode", "reference", "physode (sampled)", "physode (mean)"]
    header += ["physode <= ref", "ref ms/it", "physode ms/it", "time ratio"]
    header += ["iterations ref / physode"]
    print(markdown_table(header, rows, n_text=2))
    print(f"\nPer run: {args.work / 'runs.json'}. Whole run {time.perf_counter() - start:.0f} s.")


if __name__ == "__main__":
    main()
