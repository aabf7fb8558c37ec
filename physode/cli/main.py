"""``physode``: the command-line entry point."""

from __future__ import annotations

import click

from .._version import __version__
from .fit import evaluate, fit, plot
from .info import info
from .simulate import simulate


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="physode")
def main() -> None:
    """physode: fit physical systems with neural ODEs."""


main.add_command(fit)
main.add_command(evaluate)
main.add_command(plot)
main.add_command(simulate)
main.add_command(info)


if __name__ == "__main__":  # pragma: no cover
    main()
