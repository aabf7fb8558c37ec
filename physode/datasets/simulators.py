"""Simulators by name: the registry that ``physode simulate`` and fit configs
(``data.simulate: threebody``) look names up in. A config may also name the user's
own simulator, ``path/to/file.py:function``: any function whose keyword arguments
are the config's ``simulate_options`` and that returns :class:`Trajectories`."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from ..registry import Registry
from .hopper import simulate_hopper
from .threebody import simulate_threebody
from .trajectories import Trajectories, write_trajectories


def _callable(obj: Any, name: str) -> None:
    if not callable(obj):
        raise ValueError(f"{name}: names a {type(obj).__name__}, not a function")


#: name -> function returning :class:`Trajectories`. Another simulator is one more entry.
SIMULATORS: Registry[Callable[..., Trajectories]] = Registry(
    "simulator", {"threebody": simulate_threebody, "hopper": simulate_hopper}, check=_callable
)


def get_simulator(
    name: str, base_dir: str | os.PathLike | None = None
) -> Callable[..., Trajectories]:
    """The simulator registered as ``name``, or the function a reference names
    (``file.py:function``, relative to ``base_dir``)."""
    if not isinstance(name, str):
        raise ValueError(f"simulator: expected a name, got {name!r}")
    return SIMULATORS.resolve(name, base_dir)


def simulate(
    name: str,
    path: str | os.PathLike,
    *,
    overwrite: bool = True,
    compression: str | None = "gzip",
    **options: Any,
) -> Trajectories:
    """Run the simulator ``name`` with ``options`` and write its trajectory file to ``path``.

    Returns the simulated :class:`Trajectories` (as written).
    """
    simulator = get_simulator(name)
    # Checked before simulating, so a write that is bound to fail costs nothing.
    if not overwrite and os.path.exists(path):
        raise FileExistsError(17, "file exists (pass overwrite=True to replace it)", str(path))
    folder = os.path.dirname(os.fspath(path)) or "."
    if not os.path.isdir(folder):
        raise FileNotFoundError(2, "folder does not exist", folder)
    data = simulator(**options)
    if not isinstance(data, Trajectories):
        raise ValueError(
            f"simulator {name!r}: returned a {type(data).__name__}, "
            "not physode.datasets.Trajectories"
        )
    write_trajectories(path, data, compression=compression, overwrite=overwrite)
    return data
