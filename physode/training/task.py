"""What differs between kinds of fit: a :class:`Task` builds its data and model, computes
one training step's loss, turns an epoch's totals into metrics, and writes its outputs.

Everything else (the run directory, the optimiser and its schedule, checkpoints,
resume, ``metrics.csv``, progress, several processes, stopping) is the runner's
(:mod:`physode.training.runner`), the same for every task. A new kind of fit is
a subclass of :class:`Task` and one line in :data:`physode.training.tasks.TASKS`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from .checkpoints import CheckpointError, load_with_fallback
from .config import Config, resolve_dtype
from .distributed import Distributed

__all__ = ["StepOutput", "Task"]


@dataclass
class StepOutput:
    """What one training step computes.

    Attributes:
        loss: the 0-dim loss that backward differentiates (this process's part of the batch).
        totals: additive quantities for the epoch (sums and counts), added up over the
            batches and the processes and handed to :meth:`Task.epoch_metrics`.
    """

    loss: torch.Tensor
    totals: dict[str, float] = field(default_factory=dict)


class Task(ABC):
    """One kind of fit.

    Args:
        config: the validated config.
        model: a model given from Python (:func:`physode.fit`); ``None`` builds the
            one the config describes.

    Attributes:
        monitor: the ``metrics.csv`` column ``best.pt`` follows (lowest is best).
        single_process: ``None`` if several processes may train the task, else why not.
        notes: what :meth:`setup` found worth telling the user (the runner shows it).
    """

    monitor: ClassVar[str] = "loss"
    single_process: ClassVar[str | None] = None

    def __init__(self, config: Config, model: nn.Module | None = None) -> None:
        self.config = config
        self.given_model = model
        self.notes: list[str] = []

    # -- set-up ----------------------------------------------------------------------------

    @abstractmethod
    def setup(self, device: torch.device, dtype: torch.dtype) -> nn.Module:
        """Read the data and build the module the optimiser trains, on ``device`` in ``dtype``.

        Raises:
            FitSetupError: the data and the config (or the model) do not fit together.
        """

    def config_as_run(self) -> Config:
        """The config to record in the run directory, with what :meth:`setup` resolved
        (a window taken from the data file, the arguments a model was built with)."""
        return self.config

    def ode_modules(self) -> list[nn.Module]:
        """The right-hand sides whose calls are counted in ``n_f_evals`` (after :meth:`setup`)."""
        return []

    @abstractmethod
    def metric_fields(self) -> list[str]:
        """The task's columns of ``metrics.csv``, in order (after :meth:`setup`)."""

    # -- an epoch --------------------------------------------------------------------------

    def begin_epoch(self, epoch: int) -> None:  # noqa: B027 (an optional hook)
        """Called before the epoch's first batch (epochs count from 1)."""

    @abstractmethod
    def batches(self, epoch: int, generator: torch.Generator) -> Iterable[Any]:
        """The epoch's global batches; ``generator`` is seeded by ``(train.seed, epoch)``,
        so a resumed run sees the batches an uninterrupted one sees."""

    def shard(self, batch: Any, ctx: Distributed) -> tuple[Any, float]:
        """This process's part of a global batch and its weight: the factor that makes
        the average over processes of ``weight * loss`` the global batch's loss. A
        part that is empty is still given (every process takes part in a step) with
        weight 0. One process: the whole batch, weight 1."""
        return batch, 1.0

    @abstractmethod
    def step(self, module: nn.Module, batch: Any) -> StepOutput:
        """The loss of one (part of a) batch; ``module`` may be wrapped in DDP."""

    @abstractmethod
    def epoch_metrics(self, totals: Mapping[str, float], module: nn.Module) -> dict[str, Any]:
        """The task's columns of an epoch's row, from the epoch's summed totals."""

    def progress_values(self, row: Mapping[str, Any], module: nn.Module) -> dict[str, Any]:
        """What the progress line shows besides the loss."""
        return {}

    def checkpoint_extra(self) -> dict[str, Any]:
        """Entries a checkpoint holds besides the training state (tensors, numbers, strings)."""
        return {}

    # -- the end ---------------------------------------------------------------------------

    def parameters(self, module: nn.Module) -> dict[str, Any]:
        """The model's physical parameters as plain numbers (empty when it has none)."""
        return {}

    @abstractmethod
    def finish(self, module: nn.Module, run_dir: Path) -> dict[str, Any]:
        """Write the task's outputs into ``run_dir``; return the summary for ``metrics.json``."""

    @abstractmethod
    def evaluate(self, module: nn.Module) -> dict[str, Any]:
        """Scores of a trained module, solved with the config's ``solver`` section."""

    def restore(self, run_dir: Path, which: str, device: torch.device) -> nn.Module:
        """The trained module of a run directory: :meth:`setup`, then the checkpoint ``which``
        (``previous.pt`` when ``which`` is ``last.pt`` and unreadable: :attr:`notes` says so)."""
        module = self.setup(device, resolve_dtype(self.config.train.dtype))
        ckpt, note = load_with_fallback(Path(run_dir) / "checkpoints", which, device)
        if note is not None:
            self.notes.append(note)
        try:
            module.load_state_dict(ckpt["model"])
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()[0]
            raise CheckpointError(
                f"{Path(run_dir) / 'checkpoints' / which}: does not fit the model: {first}"
            ) from None
        return module
