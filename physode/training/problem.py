"""What a trajectory fit's config describes, made concrete: the data as tensors and the
model to fit.

``load_problem`` reads (or simulates) the trajectory file and picks the
trajectories, the fit window and the observed variables; ``build_model`` turns
``model:`` into an ``nn.Module`` right-hand side (built-in model types or the
user's own classes); ``match_variables`` puts the data's variables in the
model's order.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..datasets import Trajectories, TrajectoryFile, read_trajectories, simulate
from ..models import Hybrid
from ..odeint import solve
from .config import Config, ModelConfig
from .config_arguments import parameters_of, plain_defaults
from .config_schema import _Component
from .distributed import unwrap


class FitSetupError(ValueError):
    """The config and the data do not fit together (names the key, file or dataset at fault)."""


@dataclass
class Problem:
    """The data of a fit, on the run's device and in its dtype.

    Attributes:
        data: the trajectories as read from the file (numpy, all times), with the
            variables in the model's order.
        path: the trajectory file.
        time: all times from the start of the fit window on, ``(T,)`` float64.
        state: the trajectories at those times, ``(N, T, D)`` (0 where not observed).
        mask: True where observed and where the loss looks, ``(N, T, D)`` bool.
        n_fit: how many of the ``T`` times lie in the fit window.
        ids: each trajectory's index in the file, ``(N,)``.
        fit_window: ``(start, end)`` in the file's time units: ``data.fit_window``
            or, when the config leaves it out, the file's ``fit_window`` attribute.
    """

    data: Trajectories
    path: Path
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

    @property
    def first(self) -> int:
        """Index of the fit window's start among the file's times."""
        return len(self.data.time) - len(self.time)

    def with_variables(self, names: list[str]) -> Problem:
        """The same problem with its variables in the order ``names``."""
        cols = torch.as_tensor([self.variables.index(n) for n in names], device=self.state.device)
        return replace(
            self,
            data=self.data.with_variables(names),
            state=self.state.index_select(-1, cols),
            mask=self.mask.index_select(-1, cols),
        )


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
    ``data.simulate`` is set) and cut it to the fit window and observed variables.

    The variables are in the file's order (see :meth:`Problem.with_variables`).
    """
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
    ids = (
        list(range(data.n_trajectories))
        if config.data.trajectories is None
        else list(config.data.trajectories)
    )
    state = np.where(mask, data.state, 0.0)[:, first:]
    return Problem(
        data=data,
        path=path,
        time=torch.as_tensor(times[first:], dtype=torch.float64),
        state=torch.as_tensor(state, dtype=dtype, device=device),
        mask=torch.as_tensor(mask[:, first:], device=device),
        n_fit=n_fit,
        ids=ids,
        fit_window=(float(start), float(end)),
    )


# --------------------------------------------------------------------------- the model


def _construct(
    section: str, spec: _Component, supplied: dict[str, Any]
) -> tuple[nn.Module, _Component]:
    """Build ``model.<section>`` with the config's arguments, plus those of ``supplied``
    that its constructor takes and the config leaves out. Returns the module and the
    section as built (every argument given and every plain default written out)."""
    target = spec.target()
    params = parameters_of(target)
    kwargs = {k: v for k, v in supplied.items() if k in params and k not in spec.arguments}
    kwargs.update(spec.arguments)
    label = getattr(target, "__name__", spec.name)
    try:
        module = target(**kwargs)
    except (ValueError, TypeError) as exc:
        raise FitSetupError(f"model.{section} ({label}): {exc}") from exc
    if not isinstance(module, nn.Module):
        raise FitSetupError(
            f"model.{section}: {spec.name} returned a {type(module).__name__}, not an nn.Module"
        )
    given = {**plain_defaults(target), **kwargs}
    record = {k: given[k] for k in params if k in given}  # in the signature's order
    own = {k: getattr(spec, k) for k in type(spec).model_fields}
    return module, type(spec).model_validate({**own, **record})


def build_model(
    config: ModelConfig, variables: list[str], dtype: torch.dtype, device: torch.device
) -> tuple[Hybrid, ModelConfig]:
    """The right-hand side ``model:`` describes, for states with these ``variables``,
    and the section as built (with the arguments filled in from the data).

    Arguments filled in when the class takes them and the config leaves them out:
    the physics' ``state_size`` (the number of variables); the neural term's
    ``in_features`` (the same), ``out_features`` (that, or half of it for a
    second-order physics, whose accelerations the term adds to) and
    ``final_zero`` (true when there is physics: the hybrid starts as its physics).
    """
    n = len(variables)
    physics = neural = None
    built: dict[str, Any] = {}
    if config.physics is not None:
        physics, built["physics"] = _construct("physics", config.physics, {"state_size": n})
        size = getattr(physics, "state_size", None)
        if size is not None and size != n:
            raise FitSetupError(
                f"model.physics: {type(physics).__name__} has {size} state variables, but "
                f"the data has {n} ({', '.join(variables)})"
            )
    if config.neural is not None:
        second_order = bool(getattr(physics, "second_order", False))
        supplied = {
            "in_features": n,
            "out_features": n // 2 if second_order else n,
            "final_zero": physics is not None,
        }
        neural, built["neural"] = _construct("neural", config.neural, supplied)
    penalty = 0.0 if config.neural is None else config.neural.penalty
    try:
        model = Hybrid(physics, neural, penalty, state_size=n)
    except ValueError as exc:
        raise FitSetupError(f"model: {exc}") from exc
    return model.to(device=device, dtype=dtype), config.model_copy(update=built)


def model_variables(model: nn.Module) -> list[str] | None:
    """The names a model gives its state's variables, or ``None`` when it cannot say
    (no ``variable_names()``, or a state size it does not know)."""
    names = getattr(model, "variable_names", None)
    if not callable(names):
        return None
    try:
        return list(names())
    except ValueError:  # the model does not know its state size
        return None


def match_variables(model: nn.Module, problem: Problem) -> tuple[Problem, str | None]:
    """``problem`` with its variables in the model's order, and a note when they were reordered.

    A model that names its variables is matched by name: the same names in
    another order are reordered; other names are refused, listing both. A model
    with default names (``y0, y1, ...``) is matched by position (the count checked).

    Raises:
        FitSetupError: naming the file and both lists of variables.
    """
    names = model_variables(model)
    have = problem.variables
    if names is None or names == have:
        return problem, None
    if names == [f"y{i}" for i in range(len(names))]:  # default names: by position
        if len(names) != len(have):
            raise FitSetupError(
                f"{problem.path}: /state has {len(have)} variables ({', '.join(have)}) but "
                f"the model has {len(names)}"
            )
        return problem, None
    if sorted(names) == sorted(have):
        note = (
            f"{problem.path}: the variables are in another order than the model's; "
            f"reordered to the model's: {', '.join(names)}"
        )
        return problem.with_variables(names), note
    missing = [n for n in names if n not in have]
    extra = [n for n in have if n not in names]
    raise FitSetupError(
        f"{problem.path}: /state variables ({', '.join(have)}) do not match the model's "
        f"({', '.join(names)}): the file lacks {', '.join(missing) or 'none'}; the model "
        f"lacks {', '.join(extra) or 'none'}"
    )


def check_model_output(model: nn.Module, problem: Problem) -> None:
    """Evaluate the model once at the first data point: a wrong output shape, or an
    error the state's shape causes, is reported before the fit starts."""
    y = problem.state[:1, 0]
    t = torch.zeros((), dtype=y.dtype, device=y.device) + float(problem.time[0])
    where = f"a state of shape {tuple(y.shape)} (the variables of {problem.path}: " + (
        ", ".join(problem.variables) + ")"
    )
    try:
        with torch.no_grad():
            out = model(t, y)
    except (RuntimeError, ValueError, IndexError, TypeError) as exc:
        raise FitSetupError(
            f"model: evaluating it on {where} raised {type(exc).__name__}: {exc}"
        ) from exc
    shape = tuple(getattr(out, "shape", ()))
    if not isinstance(out, torch.Tensor) or shape != tuple(y.shape):
        got = f"shape {shape}" if isinstance(out, torch.Tensor) else type(out).__name__
        raise FitSetupError(f"model: returned dy/dt of {got} for {where}")


class TrainedSystem(nn.Module):
    """The model plus, when ``train.learn_initial_state`` is set, the learned initial states.

    ``initial`` has shape ``(N, D)`` (one row per trajectory) or is ``None``.
    """

    def __init__(self, model: nn.Module, initial: torch.Tensor | None) -> None:
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

    def regularization(self, pred: torch.Tensor) -> torch.Tensor:
        """The model's own penalty on predicted states (a hybrid's APHYNITY term), or 0."""
        penalty = getattr(self.model, "regularization", None)
        return pred.new_zeros(()) if penalty is None else penalty(None, pred)

    def physical_parameters(self) -> dict[str, Any]:
        """The model's physical parameters as plain numbers (empty when it has none)."""
        get = getattr(self.model, "physical_parameters", None)
        return get() if callable(get) else {}


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
