"""SIGINT and SIGTERM during a fit: stop at a consistent point, say where, exit 130 / 143.

While a fit runs, both signals raise :class:`FitInterrupted` in the main thread,
except inside :meth:`Interrupts.critical` blocks (a checkpoint being saved, a
metrics row being written), which finish first. Every file a fit writes is
written atomically, so outside those blocks any point is consistent: the run
directory holds the last checkpoint saved, and ``--resume`` continues from it.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

__all__ = ["FitInterrupted", "Interrupts"]

_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class FitInterrupted(BaseException):
    """A fit stopped by SIGINT or SIGTERM (a ``BaseException``, like ``KeyboardInterrupt``,
    so that ``except Exception`` in user code does not swallow it).

    Attributes:
        signum: the signal's number; ``exit_code`` is ``128 + signum`` (130, 143).
        run_dir, epoch, saved_epoch: where the fit was (set by the runner).
    """

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.run_dir = None
        self.epoch: int | None = None
        self.saved_epoch: int | None = None

    @property
    def exit_code(self) -> int:
        return 128 + self.signum

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name


class Interrupts:
    """The handlers of one fit; a no-op outside the main thread (signals go there)."""

    def __init__(self) -> None:
        self._depth = 0
        self._pending: int | None = None
        self._previous: dict[int, object] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self._depth:
            self._pending = signum
            return
        raise FitInterrupted(signum)

    @contextmanager
    def installed(self) -> Iterator[Interrupts]:
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        self._previous = {s: signal.signal(s, self._handle) for s in _SIGNALS}
        try:
            yield self
        finally:
            for s, handler in self._previous.items():
                signal.signal(s, handler)

    @contextmanager
    def critical(self) -> Iterator[None]:
        """A block a signal does not cut short; the signal takes effect after it."""
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1
            if not self._depth and self._pending is not None:
                signum, self._pending = self._pending, None
                raise FitInterrupted(signum)
