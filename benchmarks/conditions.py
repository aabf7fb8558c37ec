"""The conditions a timing benchmark runs under: torch's thread count and competing load.

On a shared machine other processes hold cores, and a library that hands a small
product to a thread pool may wait for a core that is taken. ``--compete K`` makes
that reproducible: K busy processes run beside the benchmark for its whole run.
Every table states the threads and the load it was measured with.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import torch

_DEFAULT_THREADS = torch.get_num_threads()
_BUSY = "while True: pass"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds ``--threads`` and ``--compete``."""
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        metavar="N",
        help=f"torch's thread count (default: torch's default, {_DEFAULT_THREADS} here)",
    )
    parser.add_argument(
        "--compete",
        type=int,
        default=0,
        metavar="K",
        help="keep K busy processes running beside the benchmark, as on a shared machine",
    )


@contextmanager
def applied(args: argparse.Namespace) -> Iterator[str]:
    """Sets the threads, starts the competing processes; yields a line describing both."""
    if args.threads is not None:
        if args.threads < 1:
            raise SystemExit(f"--threads must be at least 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    if args.compete < 0:
        raise SystemExit(f"--compete must be 0 or more, got {args.compete}")
    load = os.getloadavg()[0]
    busy = [subprocess.Popen([sys.executable, "-c", _BUSY]) for _ in range(args.compete)]
    try:
        yield (
            f"{torch.get_num_threads()} torch threads (default {_DEFAULT_THREADS}), "
            f"{args.compete} competing busy process(es), {os.cpu_count()} CPUs, "
            f"load average {load:.2f} before the run"
        )
    finally:
        for process in busy:
            process.kill()
            process.wait()
