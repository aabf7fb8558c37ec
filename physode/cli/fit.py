"""``physode fit``, ``physode evaluate`` and ``physode plot``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import click

from ..datasets import TrajectoryFormatError
from ..solvers import METHODS


def _fail(exc: Exception) -> click.ClickException:
    """A one-line error: what physode says, or an OS error's path and reason."""
    if isinstance(exc, OSError) and exc.filename is not None:
        from ..training.run_dir import os_reason

        return click.ClickException(os_reason(exc))
    return click.ClickException(str(exc))


def _echo_scores(scores: dict) -> None:
    for key in ("fit_mse", "extrapolation_mse", "position_score", "test_mse"):
        if scores.get(key) is not None:
            click.echo(f"{key}: {scores[key]:.4g}")


@click.command()
@click.argument("config_file", metavar="CONFIG", type=click.Path(path_type=Path))
@click.option(
    "-o",
    "--output",
    "run_dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Run directory (default: output.dir of the config, else runs/<name>-<time> "
    "next to the config file).",
)
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY.PATH=VALUE",
    help="Override a config value, e.g. --set train.epochs=5 --set solver.grad=mali "
    "(values are read as YAML; repeatable).",
)
@click.option(
    "--resume",
    is_flag=True,
    help="Continue the fit in the run directory from its "
    "last checkpoint (same result as an uninterrupted run).",
)
@click.option(
    "--nproc",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Train with this many processes (DistributedDataParallel) on this machine, "
    "through torchrun: one per GPU, or gloo processes on the CPU.",
)
@click.option("--print-config", is_flag=True, help="Print the resolved config and exit.")
@click.option("--quiet", "-q", is_flag=True, help="No progress output.")
def fit(
    config_file: Path,
    run_dir: Path | None,
    overrides: tuple[str, ...],
    resume: bool,
    nproc: int,
    print_config: bool,
    quiet: bool,
) -> None:
    """Fit the model described by the YAML file CONFIG to its trajectory data.

    Writes a run directory: config.yaml, metrics.csv (per epoch), metrics.json,
    params.json (learned physical parameters), checkpoints/ (last.pt, best.pt),
    predictions.nc (xarray, true and predicted trajectories over all times) and
    plots/. Progress goes to stderr. A solver failure stops the fit with the
    epoch and the reason, keeping the last good checkpoint.

    Several processes: --nproc N here, or `torchrun --nproc_per_node=N -m physode
    fit CONFIG` (and torchrun's --nnodes/--node-rank/--rdzv-endpoint across machines).
    """
    if nproc > 1 and "WORLD_SIZE" not in os.environ and not print_config:
        args = [str(config_file), *(["-o", str(run_dir)] if run_dir else [])]
        args += [a for o in overrides for a in ("--set", o)]
        args += ["--resume"] * resume + ["--quiet"] * quiet
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
        launcher += [f"--nproc_per_node={nproc}", "-m", "physode", "fit", *args]
        sys.exit(subprocess.call(launcher))
    from ..errors import SolverError
    from ..training import ConfigError, config_to_yaml, load_config
    from ..training.interrupts import FitInterrupted
    from ..training.problem import FitSetupError
    from ..training.runner import FitError
    from ..training.runner import fit as run_fit

    try:
        config = load_config(config_file, overrides)
        if print_config:
            click.echo(config_to_yaml(config), nl=False)
            return
        result = run_fit(config, run_dir, resume=resume, stream=None if quiet else sys.stderr)
    except FitInterrupted as exc:
        click.echo(_interrupted(exc, config_file, overrides), err=True)
        sys.exit(exc.exit_code)
    except (ConfigError, FitError, FitSetupError, TrajectoryFormatError, SolverError) as exc:
        raise _fail(exc) from None
    # physode raises ValueError for bad input (a device this machine lacks, ...), naming
    # the setting at fault, ImportError for a missing optional extra (MuJoCo for
    # data.simulate: hopper) and OSError where the disk refuses (read-only, full): a
    # one-line error, not a traceback.
    except (OSError, ValueError, ImportError) as exc:
        raise _fail(exc) from None
    if int(os.environ.get("RANK", "0")) != 0:
        return
    summary = result.metrics
    click.echo(f"run directory: {result.run_dir}")
    for name, value in result.parameters.items():
        click.echo(f"learned {name}: {value}")
    _echo_scores(summary)


def _interrupted(exc, config_file: Path, overrides: tuple[str, ...]) -> str:
    """Where an interrupted fit stands, and the command that continues it."""
    if exc.run_dir is None:
        return f"interrupted by {exc.name} before the fit started; nothing was written"
    saved = (
        f"checkpoints/last.pt holds epoch {exc.saved_epoch}"
        if exc.saved_epoch
        else "no epoch was saved yet"
    )
    sets = "".join(f" --set {o}" for o in overrides)
    return (
        f"interrupted by {exc.name} during epoch {exc.epoch}; {saved} in {exc.run_dir}. "
        f"Continue with: physode fit {config_file} -o {exc.run_dir}{sets} --resume"
    )


@click.command()
@click.argument("run_dir", type=click.Path(path_type=Path, exists=True, file_okay=False))
@click.option(
    "--method",
    type=click.Choice(METHODS),
    default=None,
    help="Solver to predict with (default: the one trained with).",
)
@click.option(
    "--grad",
    default=None,
    hidden=True,
    help="Accepted for symmetry with fit; prediction needs no gradients.",
)
@click.option("--rtol", type=float, default=None, help="Relative tolerance.")
@click.option("--atol", type=float, default=None, help="Absolute tolerance.")
@click.option("--step-size", type=float, default=None, help="Step size for fixed-step methods.")
@click.option(
    "--checkpoint",
    type=click.Choice(["last.pt", "best.pt"]),
    default="last.pt",
    show_default=True,
    help="Which checkpoint to score.",
)
def evaluate(
    run_dir: Path,
    method: str | None,
    grad: str | None,
    rtol: float | None,
    atol: float | None,
    step_size: float | None,
    checkpoint: str,
) -> None:
    """Re-score the model trained in RUN_DIR with another solver, without retraining.

    Prints the fit-window and extrapolation MSE and the position score, and
    writes them to RUN_DIR/evaluations/.
    """
    from ..errors import SolverError
    from ..training import ConfigError
    from ..training.evaluate import evaluate_run

    try:
        result = evaluate_run(
            run_dir,
            method=method,
            grad=grad,
            rtol=rtol,
            atol=atol,
            step_size=step_size,
            checkpoint=checkpoint,
        )
    except (ConfigError, SolverError, ValueError, OSError) as exc:
        raise _fail(exc) from None
    for note in result.get("notes", []):
        click.echo(note, err=True)
    s = result["solver"]
    click.echo(f"solver: {s['method']} ({s['grad']}) rtol={s['rtol']:g} atol={s['atol']:g}")
    _echo_scores(result)


@click.command()
@click.argument("run_dir", type=click.Path(path_type=Path, exists=True, file_okay=False))
@click.option(
    "--trajectory",
    type=int,
    default=0,
    show_default=True,
    help="Which trajectory (position in predictions.nc) to draw.",
)
def plot(run_dir: Path, trajectory: int) -> None:
    """Draw the extrapolation plots of RUN_DIR from its predictions.nc into RUN_DIR/plots."""
    import xarray as xr

    from ..training import plot_predictions

    path = run_dir / "predictions.nc"
    if not path.exists():
        raise click.ClickException(f"{path}: missing (the fit did not finish?)")
    try:
        with xr.open_dataset(path, engine="h5netcdf") as ds:
            ds = ds.load()
    except (OSError, ValueError, KeyError) as exc:
        raise click.ClickException(
            f"{path}: cannot be read as a predictions dataset ({exc})"
        ) from None
    if "trajectory" not in ds.sizes or not {"true", "predicted"} <= set(ds.data_vars):
        raise click.ClickException(f"{path}: not a physode predictions dataset")
    if not 0 <= trajectory < ds.sizes["trajectory"]:
        raise click.ClickException(
            f"--trajectory: {trajectory} is out of range (0..{ds.sizes['trajectory'] - 1})"
        )
    try:
        files = plot_predictions(ds, run_dir / "plots", trajectory=trajectory)
    except (OSError, ValueError, KeyError) as exc:
        raise _fail(exc) from None
    for f in files:
        click.echo(str(f))
