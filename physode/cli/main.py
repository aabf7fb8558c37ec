"""``physode``: the command-line entry point."""

from __future__ import annotations

import click

from .._version import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="physode")
def main() -> None:
    """physode: fit physical systems with neural ODEs."""


if __name__ == "__main__":  # pragma: no cover
    main()
