"""What a config describes, made concrete: the data as tensors and the model to fit.

``load_problem`` reads (or simulates) the trajectory file, picks the
trajectories, the fit window and the observed variables; ``build_model``
turns ``model:`` into an ``nn.Module`` right-hand side in the run's dtype and
on its device.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..datasets import Trajectories, TrajectoryFile, read_trajectories, simulate
from ..models import MLP, Hybrid, NBodyGravity
from ..odeint import solve
from .config import Config, ModelConfig
from .distributed import unwrap


class FitSetupError(ValueError):
    """The config and the data do not fit together (names the key, file or dataset at fault)."""


@dataclass
class Problem:
    """The data of a fit, on the run's device and in its dtype.

    Attributes:
        data: the trajectories as read from the file (numpy, all times).
        time: all times from the start of the fit window on, ``(T,)`` float64.
        state: the trajectories at those times, ``(N, T, D)``.
        mask: True where observed and where the loss looks, ``(N, T, D)`` bool.
        n_fit: how many of the ``T`` times lie in the fit window.
        ids: each trajectory's index in the file, ``(N,)``.
        fit_window: ``(start, end)`` in the file's time units: ``data.fit_window``
            or, when the config leaves it out, the file's ``fit_window`` attribute.
    """

    data: Trajectories
    time: torch.Tensor
    state: torch.Tensor
    mask: torch.Tensor
    n_fit: int
    ids: list[int]
    fit_window: tuple[float, float]

    @property
    def fit_time(self) -> torch.Tensor:
        return self.time[: self.n_fit]

    @property
    def variables(self) -> list[str]:
        return list(self.data.variables)


def ensure_data_file(config: Config) -> Path:
    """``data.path``, simulated first with ``data.simulate`` when it is missing."""
    path = Path(config.data.path)
    if path.exists():
        return path
    if config.data.simulate is None:
        raise FitSetupError(
            f"data.path: {path} does not exist (set data.simulate to create it with a simulator)"
        )
    simulate(config.data.simulate, path, **config.data.simulate_options)
    return path


def read_selected(config: Config, path: Path) -> Trajectories:
    """The trajectories ``data.trajectories`` picks from ``path`` (all when it is unset)."""
    wanted = config.data.trajectories
    if wanted is not None:
        with TrajectoryFile(path) as f:
            n = f.n_trajectories
        missing = [i for i in wanted if i >= n]
        if missing:
            raise FitSetupError(
                f"data.trajectories: {missing} out of range: {path} holds {n} "
                f"trajector{'y' if n == 1 else 'ies'} (indices 0 to {n - 1})"
            )
    return read_trajectories(path, indices=wanted)


def observed_columns(config: Config, variables: list[str], path: Path) -> list[int]:
    """Indices of the variables ``data.observed`` names (all when it is unset)."""
    if config.data.observed is None:
        return list(range(len(variables)))
    unknown = [v for v in config.data.observed if v not in variables]
    if unknown:
        raise FitSetupError(
            f"data.observed: {unknown} are not variables of {path} (it has {', '.join(variables)})"
        )
    return [i for i, v in enumerate(variables) if v in config.data.observed]


def fit_window(config: Config, data: Trajectories, path: Path) -> tuple[float, float]:
    """``data.fit_window``, or the file's ``fit_window`` attribute when the config leaves it out."""
    if config.data.fit_window is not None:
        return config.data.fit_window
    if data.fit_window is None:
        raise FitSetupError(
            f"data.fit_window: not set in the config, and {path} has no fit_window "
            "attribute to take it from; set data.fit_window: [start, end] (times after "
            "end are extrapolation)"
        )
    return data.fit_window


def load_problem(config: Config, dtype: torch.dtype, device: torch.device) -> Problem:
    """Read the data a config names (simulating the file first if it is missing and
    ``data.simulate`` is set) and cut it to the fit window and observed variables."""
    path = ensure_data_file(config)
    data = read_selected(config, path)
    start, end = fit_window(config, data, path)
    where = "data.fit_window" if config.data.fit_window is not None else f"{path}: fit_window"
    times = data.time
    keep = times >= start
    n_fit = int(np.count_nonzero(keep & (times <= end)))
    if n_fit < 2:
        raise FitSetupError(
            f"{where}: [{start:g}, {end:g}] holds {n_fit} of the times in {path} "
            f"(which run from {times[0]:g} to {times[-1]:g}); the fit needs at least two"
        )
    mask = np.ones(data.state.shape, dtype=bool) if data.mask is None else data.mask.copy()
    seen = np.zeros(len(data.variables), dtype=bool)
    seen[observed_columns(config, data.variables, path)] = True
    mask &= seen[None, None, :]
    first = int(np.argmax(keep))
    if not mask[:, first].all():
        raise FitSetupError(
            f"{path}: /mask: the state at the start of the fit window (t = {times[first]:g}) "
            "must be fully observed, since the fit starts from it"
        )
    ids = (
        list(range(data.n_trajectories))
        if config.data.trajectories is None
        else list(config.data.trajectories)
    )
    state = np.where(mask, data.state, 0.0)[:, first:]
    return Problem(
        data=data,
        time=torch.as_tensor(times[first:], dtype=torch.float64),
        state=torch.as_tensor(state, dtype=dtype, device=device),
        mask=torch.as_tensor(mask[:, first:], device=device),
        n_fit=n_fit,
        ids=ids,
        fit_window=(float(start), float(end)),
    )


def build_model(
    config: ModelConfig, variables: list[str], dtype: torch.dtype, device: torch.device
) -> Hybrid:
    """The right-hand side ``model:`` describes, for states with these ``variables``."""
    n = len(variables)
    physics = None
    if config.physics is not None:
        p = config.physics
        physics = NBodyGravity(
            p.n_bodies,
            dim=p.dim,
            G=p.G,
            masses=p.masses.init,
            learn_masses=p.masses.learn,
            softening=p.softening,
        )
        if physics.state_size != n:
            raise FitSetupError(
                f"model.physics: n_bodies={p.n_bodies}, dim={p.dim} means "
                f"{physics.state_size} state variables, but the data has {n} "
                f"({', '.join(variables)})"
            )
    neural = None
    if config.neural is not None:
        second_order = physics is not None and physics.second_order
        neural = MLP(
            n,
            n // 2 if second_order else n,
            hidden=tuple(config.neural.hidden),
            activation=config.neural.activation,
            # A hybrid starts as its physics; a neural-only model needs a non-zero start.
            final_zero=physics is not None,
        )
    penalty = 0.0 if config.neural is None else config.neural.penalty
    return Hybrid(physics, neural, penalty, state_size=n).to(device=device, dtype=dtype)


class TrainedSystem(nn.Module):
    """The model plus, when ``train.learn_initial_state`` is set, the learned initial states.

    ``initial`` has shape ``(N, D)`` (one row per trajectory) or is ``None``.
    """

    def __init__(self, model: Hybrid, initial: torch.Tensor | None) -> None:
        super().__init__()
        self.model = model
        self.initial = None if initial is None else nn.Parameter(initial.clone())

    def initial_state(self, state: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """The states at the start of the fit window for trajectories ``rows``: ``(B, D)``."""
        return state[rows, 0] if self.initial is None else self.initial[rows]

    def forward(
        self, state: torch.Tensor, rows: torch.Tensor, times: torch.Tensor, options: dict
    ) -> torch.Tensor:
        """Trajectories ``rows`` solved from the start of the window over ``times``.

        Args:
            state: the data, ``(N, T, D)`` (its first time is the window's start).
            rows: trajectory indices, ``(B,)``.
            times: output times, ``(T',)``.
            options: keyword arguments of :func:`physode.solve` (method, grad, ...).

        Returns:
            ``(B, T', D)``; the solver statistics are left in ``self.last_stats``.
        """
        sol = solve(self.model, self.initial_state(state, rows), times, **options)
        self.last_stats = sol.stats
        return sol.ys.transpose(0, 1)


def solver_options(config: Config, **overrides) -> dict:
    """The keyword arguments of :func:`physode.solve` that ``solver:`` describes."""
    s = config.solver
    return {
        "method": s.method,
        "grad": s.grad,
        "rtol": s.rtol,
        "atol": s.atol,
        "step_size": s.step_size,
        "max_steps": s.max_steps,
        **overrides,
    }


def solve_batch(config: Config, system: nn.Module, problem: Problem, rows, times, **overrides):
    """Predicted trajectories of trajectories ``rows`` at ``times``: ``(B, T, D)``, with stats.

    ``system`` is a :class:`TrainedSystem`, or one wrapped in DistributedDataParallel.
    """
    pred = system(problem.state, rows, times, solver_options(config, **overrides))
    return pred, unwrap(system).last_stats
