"""The model types a config can name: ``model.physics.name`` and ``model.neural.name``.

Each registry maps a built-in name to a class whose constructor's keyword
arguments are the config section's other keys. A config may also name the
user's own class (``path/to/file.py:Class`` or ``package.module:Class``); a
built-in model type is one more entry here.
"""

from __future__ import annotations

import inspect
from typing import Any

from torch import nn

from ..registry import Registry
from .nbody import NBodyGravity
from .neural import MLP

__all__ = ["NEURAL", "PHYSICS"]


def _module_factory(obj: Any, name: str) -> None:
    """A model type is an ``nn.Module`` subclass, or a function returning a module."""
    if inspect.isclass(obj):
        if not issubclass(obj, nn.Module):
            raise ValueError(
                f"{name}: {obj.__name__} is not an nn.Module subclass (a right-hand side must "
                "be a module, so that its parameters are trained)"
            )
    elif not callable(obj):
        raise ValueError(f"{name}: names a {type(obj).__name__}, not a class or a function")


#: Known physics, called as ``physics(t, y)``.
PHYSICS: Registry[type[nn.Module]] = Registry(
    "physics model", {"nbody": NBodyGravity}, check=_module_factory
)
#: Neural terms, called as ``neural(y)``.
NEURAL: Registry[type[nn.Module]] = Registry("neural term", {"mlp": MLP}, check=_module_factory)
