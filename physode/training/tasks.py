"""The kinds of fit, by name: a new one is a :class:`~physode.training.task.Task`
subclass and one line here (and, if it needs one, its config section)."""

from __future__ import annotations

from torch import nn

from ..registry import Registry
from .config import Config
from .sequence_task import SequenceTask
from .task import Task
from .trajectory_task import TrajectoryTask

#: name -> Task class.
TASKS: Registry[type[Task]] = Registry(
    "task", {"trajectory": TrajectoryTask, "sequence": SequenceTask}
)


def task_name(config: Config) -> str:
    """Which task a config describes: ``sequence`` for ``model.latent``, else ``trajectory``."""
    return "sequence" if config.model.latent is not None else "trajectory"


def make_task(config: Config, model: nn.Module | None = None) -> Task:
    """The task of ``config``, fitting ``model`` when one is given from Python."""
    return TASKS[task_name(config)](config, model)
