"""Progress of a fit on stderr: a bar that redraws itself in a terminal, one line per
epoch otherwise (log files, CI)."""

from __future__ import annotations

import sys
import time
from typing import TextIO


def format_parameters(params: dict[str, float | list]) -> str:
    def fmt(v):
        return f"{v:.6g}" if isinstance(v, float) else "[" + ", ".join(fmt(x) for x in v) + "]"

    return " ".join(f"{k}={fmt(v)}" for k, v in params.items())


class Progress:
    """Reports epochs of a fit.

    Args:
        total: the number of epochs of the whole fit.
        stream: where to write (default stderr); ``None`` writes nothing.
        every: in line mode, report every this many epochs (and the last).
    """

    def __init__(self, total: int, stream: TextIO | None = sys.stderr, every: int = 1) -> None:
        self.total = total
        self.stream = stream
        self.every = every
        self.tty = bool(stream is not None and getattr(stream, "isatty", lambda: False)())
        self.start = time.perf_counter()

    def message(self, text: str) -> None:
        if self.stream is not None:
            self.stream.write(("\n" if self.tty else "") + text + "\n")
            self.stream.flush()

    def epoch(self, epoch: int, row: dict, params: dict) -> None:
        if self.stream is None:
            return
        text = (
            f"epoch {epoch}/{self.total} loss {row['loss']:.4e} "
            f"evals {row['n_f_evals']}+{row['n_f_evals_backward']} "
            f"{format_parameters(params)}"
        )
        if self.tty:
            width = 20
            done = int(width * epoch / self.total)
            bar = "#" * done + "-" * (width - done)
            elapsed = time.perf_counter() - self.start
            self.stream.write(f"\r[{bar}] {text} {elapsed:.0f}s\x1b[K")
            if epoch == self.total:
                self.stream.write("\n")
        elif epoch % self.every == 0 or epoch == self.total:
            self.stream.write(text + f" {row['seconds']:.2f}s\n")
        self.stream.flush()
