"""Trajectory files (HDF5, one validated schema) and the simulators that write them."""

from __future__ import annotations

from .simulators import SIMULATORS, get_simulator, simulate
from .threebody import ACA_THREEBODY, G_THREEBODY, default_initial_state, simulate_threebody
from .trajectories import (
    FORMAT,
    VERSION,
    Trajectories,
    TrajectoryFile,
    TrajectoryFormatError,
    describe,
    read_trajectories,
    write_trajectories,
)

__all__ = [
    "ACA_THREEBODY",
    "FORMAT",
    "G_THREEBODY",
    "SIMULATORS",
    "VERSION",
    "Trajectories",
    "TrajectoryFile",
    "TrajectoryFormatError",
    "default_initial_state",
    "describe",
    "get_simulator",
    "read_trajectories",
    "simulate",
    "simulate_threebody",
    "write_trajectories",
]
