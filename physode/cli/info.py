"""``physode info FILE``: describe a trajectory file."""

from __future__ import annotations

from pathlib import Path

import click

from ..datasets import TrajectoryFormatError, describe


@click.command()
@click.argument("file", type=click.Path(path_type=Path))
def info(file: Path) -> None:
    """Describe the trajectory file FILE.

    Prints the system, description, N trajectories x T times x D variables,
    the time range and units, the variables, dtype, the fraction observed,
    the ground-truth parameters and the file size. Every value is checked, so a
    file that breaks the schema is reported with the dataset and the rule.
    """
    try:
        text = describe(file)
    except FileNotFoundError:
        raise click.ClickException(f"{file}: no such file") from None
    except TrajectoryFormatError as exc:
        raise click.ClickException(f"not a valid trajectory file: {exc}") from None
    except OSError as exc:
        raise click.ClickException(f"{file}: cannot be read: {exc}") from None
    click.echo(text)
