"""Stopping a fit that has converged: ``train.stop``."""

from __future__ import annotations

import math
from typing import Any

from .config import StopConfig


class StopOnPlateau:
    """Stops after ``patience`` epochs in a row whose loss changed by at most ``rtol``
    relative to the epoch before (``|L_k - L_{k-1}| <= rtol |L_{k-1}|``).

    ``config=None`` never stops. The state (:meth:`state_dict`) goes into every
    checkpoint, so a resumed fit stops where an uninterrupted one does.
    """

    def __init__(self, config: StopConfig | None) -> None:
        self.config = config
        self.previous: float | None = None
        self.calm = 0
        self.stopped_at: int | None = None

    @property
    def stopped(self) -> bool:
        return self.stopped_at is not None

    def update(self, epoch: int, loss: float) -> bool:
        """Record an epoch's loss; True when the fit should stop after it."""
        if self.config is None or not math.isfinite(loss):
            return False
        if self.previous is not None:
            change = abs(loss - self.previous)
            self.calm = self.calm + 1 if change <= self.config.rtol * abs(self.previous) else 0
        self.previous = loss
        if self.calm >= self.config.patience:
            self.stopped_at = epoch
        return self.stopped

    def reason(self) -> str:
        c = self.config
        return (
            f"converged: the loss changed by at most rtol={c.rtol:g} (relative) for "
            f"{c.patience} epoch{'s' if c.patience != 1 else ''} in a row"
        )

    def state_dict(self) -> dict[str, Any]:
        return {"previous": self.previous, "calm": self.calm, "stopped_at": self.stopped_at}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.previous, self.calm = state["previous"], state["calm"]
        self.stopped_at = state["stopped_at"]
