"""Counting calls of a model's right-hand side during training."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from torch import nn


class EvaluationCounter:
    """Counts the calls of ``modules`` made inside :meth:`counting`: ``fwd`` while
    the loss is computed, ``bwd`` during the backward pass (ACA's re-run steps,
    MALI's inverse steps, the adjoint's reverse solve). Calls made elsewhere
    (predictions, the scores of an evaluation) are not counted."""

    def __init__(self, modules: list[nn.Module]) -> None:
        self.phase: str | None = None
        self.counts = {"fwd": 0, "bwd": 0}
        self._handles = [m.register_forward_hook(self._hook) for m in modules]

    def _hook(self, module: nn.Module, args: Any, output: Any) -> None:
        if self.phase is not None:
            self.counts[self.phase] += 1

    @contextmanager
    def counting(self, phase: str) -> Iterator[None]:
        self.phase = phase
        try:
            yield
        finally:
            self.phase = None

    def take(self) -> dict[str, int]:
        """The counts so far, which start again from zero."""
        counts, self.counts = self.counts, {"fwd": 0, "bwd": 0}
        return counts

    def close(self) -> None:
        for handle in self._handles:
            handle.remove()
