"""``physode simulate SYSTEM -o FILE``: simulate a system and write a trajectory file."""

from __future__ import annotations

from pathlib import Path

import click

from ..datasets import TrajectoryFormatError
from ..datasets import simulate as run_simulator


def _write(name: str, output: Path, overwrite: bool, compression: str, **options) -> None:
    """Run the simulator and report; every expected failure becomes a ClickException."""
    try:
        data = run_simulator(
            name,
            output,
            overwrite=overwrite,
            compression=None if compression == "none" else compression,
            **options,
        )
    except FileExistsError:
        raise click.ClickException(f"{output} exists; pass --overwrite to replace it") from None
    except (ValueError, TrajectoryFormatError, OSError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"wrote {output.resolve()}")
    click.echo(data.summary())


_output = click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    help="Trajectory file to write (HDF5, e.g. threebody.h5).",
)
_overwrite = click.option(
    "--overwrite/--no-overwrite",
    default=False,
    show_default=True,
    help="Replace OUTPUT if it exists.",
)
_compression = click.option(
    "--compression",
    type=click.Choice(["gzip", "lzf", "none"]),
    default="gzip",
    show_default=True,
    help="HDF5 compression of /state and /mask.",
)


# The simulators' own settings differ in names, bounds, defaults and help, but
# each is a bounded number or a seed whose default --help shows: one factory a kind.


def _count_option(*names: str, minimum: int, default: int, help: str):
    """An integer option of at least ``minimum``."""
    return click.option(
        *names, type=click.IntRange(min=minimum), default=default, show_default=True, help=help
    )


def _float_option(name: str, bounds: click.FloatRange, default: float, help: str):
    """A real-valued option restricted to ``bounds``."""
    return click.option(name, type=bounds, default=default, show_default=True, help=help)


def _seed_option(default: int, help: str):
    """The ``--seed`` of a simulator's random draws."""
    return click.option("--seed", type=int, default=default, show_default=True, help=help)


@click.group()
def simulate() -> None:
    """Simulate a system and write its trajectories to an HDF5 trajectory file.

    The file follows physode's trajectory schema (see docs/data.md); inspect it
    with `physode info FILE`.
    """


@simulate.command("threebody")
@_output
@_count_option(
    "--n-trajectories",
    minimum=1,
    default=1,
    help="Number of trajectories N. Trajectory 0 is the ACA paper's initial condition; "
    "the others are random perturbations of it.",
)
@_count_option(
    "--n-times",
    minimum=2,
    default=2000,
    help="Number of sample times T, evenly spaced on [0, T_END].",
)
@_float_option(
    "--t-end",
    click.FloatRange(min=0.0, min_open=True),
    default=2.0,
    help="Last sample time (Alpha-Centauri time units). The fit window is [0, 1].",
)
@_float_option(
    "--noise",
    click.FloatRange(min=0.0),
    default=0.0,
    help="Standard deviation of Gaussian observation noise added to every stored value.",
)
@_seed_option(default=0, help="Seed for the random initial conditions and the noise.")
@click.option(
    "--random-initial",
    is_flag=True,
    help="Perturb every trajectory's initial condition, trajectory 0 included.",
)
@_overwrite
@_compression
def threebody(
    output: Path,
    n_trajectories: int,
    n_times: int,
    t_end: float,
    noise: float,
    seed: int,
    random_initial: bool,
    overwrite: bool,
    compression: str,
) -> None:
    """The ACA paper's three-body problem (3 bodies in 3-D, 18 variables).

    Defaults reproduce the paper's experiment: one trajectory, 2000 times on
    [0, 2], masses (1.1, 1.1, 0.9), G = K1*K2 = 1.45136, solved with scipy's
    DOP853 at rtol = atol = 1e-12.

    Example: physode simulate threebody -o threebody.h5 --n-trajectories 8 --noise 0.01
    """
    _write(
        "threebody",
        output,
        overwrite,
        compression,
        n_trajectories=n_trajectories,
        n_times=n_times,
        t_end=t_end,
        noise=noise,
        seed=seed,
        random_initial=True if random_initial else None,
    )


@simulate.command("hopper")
@_output
@_count_option(
    "--n",
    "--n-trajectories",
    "n_trajectories",
    minimum=1,
    default=10_000,
    help="Number of trajectories N.",
)
@_count_option(
    "--n-steps",
    minimum=1,
    default=200,
    help="Records per trajectory T, 0.005 s apart (the first is the initial state).",
)
@_seed_option(
    default=123, help="Seed of the random initial states (123 gives the reference data set)."
)
@_overwrite
@_compression
def hopper(
    output: Path,
    n_trajectories: int,
    n_steps: int,
    seed: int,
    overwrite: bool,
    compression: str,
) -> None:
    """MuJoCo hopper trajectories (14 variables: qpos, qvel), as in Rubanova et al. 2019.

    dm_control's hopper 'stand' task without control, from random initial
    states. Needs the optional extra: pip install 'physode[mujoco]'.

    Example: physode simulate hopper -o hopper.h5 --n 10000 --seed 123
    """
    try:
        _write(
            "hopper",
            output,
            overwrite,
            compression,
            n_trajectories=n_trajectories,
            n_steps=n_steps,
            seed=seed,
        )
    except ImportError as exc:
        raise click.ClickException(str(exc)) from None
