"""Simulators by name: the registry that ``physode simulate`` and fit configs
(``data.simulate: threebody``) look names up in."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from .hopper import simulate_hopper
from .threebody import simulate_threebody
from .trajectories import Trajectories, write_trajectories

#: name -> function returning :class:`Trajectories`. Another simulator is one more entry.
SIMULATORS: dict[str, Callable[..., Trajectories]] = {
    "threebody": simulate_threebody,
    "hopper": simulate_hopper,
}


def get_simulator(name: str) -> Callable[..., Trajectories]:
    """The simulator registered as ``name``; ValueError listing the known ones otherwise."""
    try:
        return SIMULATORS[name]
    except (KeyError, TypeError):
        known = ", ".join(sorted(SIMULATORS))
        raise ValueError(f"simulator: unknown name {name!r}; known: {known}") from None


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
    write_trajectories(path, data, compression=compression, overwrite=overwrite)
    return data
