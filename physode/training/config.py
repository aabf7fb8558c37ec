"""The ``physode fit`` configuration: a YAML file, validated section by section.

A config has five sections, and a sixth for sequence models::

    data:    the trajectory file, the fit window, which trajectories and variables
    model:   physics (a discriminated union on ``name``), an optional neural term;
             or ``latent``: a sequence model (latent ODE, ODE-RNN, GRU)
    solver:  method, gradient method, tolerances
    train:   epochs, optimizer, learning rate, seed, dtype, device, ...
    output:  the run directory
    task:    (``model.latent`` only) interpolation or extrapolation on random
             windows, the observed fraction, samples of z0, KL annealing

:func:`load_config` reads a file (with ``--set key.path=value`` overrides) and
returns a :class:`Config`; every problem it finds is reported at once in one
:class:`ConfigError`, each line naming the file, the dotted key path and what
is wrong (with the closest valid key for a misspelt one).
"""

from __future__ import annotations

import difflib
import inspect
import os
import re
import types
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import torch
import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from ..datasets import SIMULATORS
from ..gradients import GRADIENT_METHODS
from ..models.neural import ACTIVATIONS as _MLP_ACTIVATIONS
from ..solvers import FIXED_STEP_METHODS, METHODS

__all__ = [
    "ACTIVATIONS",
    "Config",
    "ConfigError",
    "ConfigLoader",
    "CosineSchedule",
    "DataConfig",
    "ExponentialSchedule",
    "LatentConfig",
    "MassesConfig",
    "ModelConfig",
    "NBodyConfig",
    "NeuralConfig",
    "OutputConfig",
    "SolverConfig",
    "StepSchedule",
    "TaskConfig",
    "TrainConfig",
    "config_from_dict",
    "config_to_dict",
    "config_to_yaml",
    "load_config",
    "parse_yaml",
    "resolve_device",
    "resolve_dtype",
    "resolve_run_dir",
]

#: Activation names accepted by ``model.neural.activation`` (those of :class:`physode.models.MLP`).
ACTIVATIONS = tuple(_MLP_ACTIVATIONS)

_SECTIONS = ("data", "model", "solver", "train", "output", "task")


# --------------------------------------------------------------------------- errors


class ConfigError(ValueError):
    """A config that cannot be used. One problem per line, each prefixed by the file.

    Attributes:
        problems: the individual problems (without the file prefix).
        source: the config file as the user named it (``None`` for a config
            built from a mapping).
    """

    def __init__(
        self, problems: str | Sequence[str], source: str | os.PathLike[str] | None = None
    ) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        self.source = None if source is None else os.fspath(source)
        prefix = f"{self.source}: " if self.source is not None else ""
        super().__init__("\n".join(prefix + p for p in self.problems))

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.problems, self.source))


# --------------------------------------------------------------------------- YAML

# PyYAML follows YAML 1.1, where a float needs a dot and a signed exponent:
# `1e-3` and `1.0e3` would come back as strings and only be turned into numbers
# (or not) by whatever reads them next. This resolver accepts the YAML 1.2
# forms too, so every number in a config is a number from the start.
_FLOAT_RE = re.compile(
    r"""^(?:
        [-+]?[0-9][0-9_]*\.[0-9_]*(?:[eE][-+]?[0-9]+)?
      | [-+]?[0-9][0-9_]*[eE][-+]?[0-9]+
      | [-+]?\.[0-9][0-9_]*(?:[eE][-+]?[0-9]+)?
      | [-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\.[0-9_]*
      | [-+]?\.(?:inf|Inf|INF)
      | \.(?:nan|NaN|NAN)
    )$""",
    re.VERBOSE,
)
_FLOAT_TAG = "tag:yaml.org,2002:float"


class ConfigLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that also reads ``1e-3``, ``1E5`` and ``1.0e3`` as floats."""


ConfigLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != _FLOAT_TAG]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
ConfigLoader.add_implicit_resolver(_FLOAT_TAG, _FLOAT_RE, list("-+0123456789."))


def parse_yaml(text: str) -> Any:
    """Parse YAML text with :class:`ConfigLoader` (a SafeLoader: plain data only)."""
    return yaml.load(text, Loader=ConfigLoader)


# --------------------------------------------------------------------------- field types


def _integral(value: Any) -> Any:
    # `epochs: 1e3` is read as the float 1000.0; an integer written in
    # exponent form is still that integer, a fractional one is an error.
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _window_pair(value: Any) -> Any:
    # YAML has no tuples; strict validation would refuse the list otherwise.
    if isinstance(value, list):
        if len(value) != 2:
            raise _config_error(f"expected [start, end], two numbers, got {_show(value)}")
        return tuple(value)
    return value


PositiveInt = Annotated[int, BeforeValidator(_integral), Field(gt=0)]
NonNegativeInt = Annotated[int, BeforeValidator(_integral), Field(ge=0)]
PositiveFloat = Annotated[float, Field(gt=0, allow_inf_nan=False)]
NonNegativeFloat = Annotated[float, Field(ge=0, allow_inf_nan=False)]
FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]
# Paths are strings in YAML; strict mode would only take Path objects.
PathField = Annotated[Path, Field(strict=False)]

_DEVICE_RE = re.compile(r"^(auto|cpu|cuda(:[0-9]+)?)$")


def _config_error(message: str, at: str | None = None) -> PydanticCustomError:
    """An error raised inside a validator; ``at`` is a key path below the validated section."""
    ctx: dict[str, Any] = {"message": message}
    if at:
        ctx["at"] = at
    return PydanticCustomError("config", "{message}", ctx)


def _resolve_path(value: Path | None, info: ValidationInfo) -> Path | None:
    if value is None:
        return None
    value = value.expanduser()
    if not value.is_absolute():
        base = (info.context or {}).get("base_dir") or Path.cwd()
        value = Path(base) / value
    return Path(os.path.normpath(value))


class _Section(BaseModel):
    # strict: a quoted "0.05" or a `true` where a number belongs is an error,
    # not something pydantic quietly converts.
    model_config = ConfigDict(extra="forbid", strict=True)


class _Tagged(_Section):
    """A member of a discriminated union on ``name`` (the union's key appears in error paths)."""


# --------------------------------------------------------------------------- sections


class DataConfig(_Section):
    """``data``: the trajectory file and what part of it is fitted.

    Attributes:
        path: the trajectory file (HDF5); relative paths are taken from the
            config file's folder, so ``path`` is absolute after loading.
        simulate: simulator that creates the file when it is missing
            (``None``: never simulate).
        simulate_options: keyword arguments for the simulator.
        fit_window: ``(start, end)`` in the file's time units; times after
            ``end`` are extrapolation. Required (it may not be left out) except
            with ``model.latent``, where it is optional and only restricts the
            times used (``None``: all).
        trajectories: indices of the trajectories to use (``None``: all).
        observed: names of the variables the loss sees (``None``: all).
    """

    path: PathField
    simulate: Literal[tuple(SIMULATORS)] | None = None  # type: ignore[valid-type]
    simulate_options: dict[str, Any] = Field(default_factory=dict)
    # Required (no default); None is admitted for sequence models only, where
    # Config fills it in when the key is left out (see Config._sequence_fit_window).
    fit_window: Annotated[tuple[FiniteFloat, FiniteFloat], BeforeValidator(_window_pair)] | None
    trajectories: list[NonNegativeInt] | None = None
    observed: list[str] | None = None

    @field_validator("path")
    @classmethod
    def _path_absolute(cls, value: Path, info: ValidationInfo) -> Path:
        return _resolve_path(value, info)

    @model_validator(mode="after")
    def _simulator_options(self) -> DataConfig:
        # Checked here rather than when the file is first simulated, which
        # may be long after the config was written.
        if self.simulate is None or not self.simulate_options:
            return self
        parameters = inspect.signature(SIMULATORS[self.simulate]).parameters
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
            return self
        for key in self.simulate_options:
            if key not in parameters:
                close = difflib.get_close_matches(key, list(parameters), n=1, cutoff=0.6)
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                raise _config_error(
                    f"unknown option of simulator {self.simulate!r}{hint}; "
                    f"its options: {', '.join(parameters)}",
                    at=f"simulate_options.{key}",
                )
        return self

    @field_validator("fit_window")
    @classmethod
    def _window_increasing(cls, value: tuple[float, float] | None) -> tuple[float, float] | None:
        if value is not None and not value[0] < value[1]:
            raise _config_error(
                f"must be [start, end] with start < end, got [{value[0]}, {value[1]}]"
            )
        return value

    @field_validator("trajectories", "observed")
    @classmethod
    def _nonempty_unique(cls, value: list | None) -> list | None:
        if value is None:
            return None
        if not value:
            raise _config_error("must list at least one entry (or be null for all)")
        repeated = sorted({v for v in value if value.count(v) > 1}, key=str)
        if repeated:
            raise _config_error(f"lists {', '.join(map(repr, repeated))} more than once")
        return value


class MassesConfig(_Section):
    """``model.physics.masses``: initial masses and whether they are learned."""

    init: list[PositiveFloat]
    learn: bool = True


class NBodyConfig(_Tagged):
    """``model.physics`` with ``name: nbody``: Newtonian gravity between point masses.

    The state is positions then velocities, ``2 * n_bodies * dim`` numbers.
    ``masses`` defaults to ones (learned) and is filled in on loading.
    """

    name: Literal["nbody"]
    n_bodies: PositiveInt = 3
    dim: PositiveInt = 3
    G: NonNegativeFloat = 1.0
    softening: NonNegativeFloat = 0.0
    masses: MassesConfig | None = None

    @model_validator(mode="after")
    def _masses_match(self) -> NBodyConfig:
        if self.masses is None:
            self.masses = MassesConfig(init=[1.0] * self.n_bodies)
        elif len(self.masses.init) != self.n_bodies:
            raise _config_error(
                f"has {len(self.masses.init)} value(s) but n_bodies is {self.n_bodies}",
                at="masses.init",
            )
        return self


# A later model kind is one more class here (with its own `name` literal).
PhysicsConfig = Annotated[Union[NBodyConfig], Field(discriminator="name")]  # noqa: UP007


class NeuralConfig(_Section):
    """``model.neural``: an MLP term added to the physics (or the whole model).

    Attributes:
        hidden: widths of the hidden layers.
        activation: one of :data:`ACTIVATIONS`.
        penalty: weight of an L2 penalty on the neural term's output.
    """

    hidden: list[PositiveInt] = Field(default_factory=lambda: [64, 64])
    activation: Literal[ACTIVATIONS] = "tanh"  # type: ignore[valid-type]
    penalty: NonNegativeFloat = 0.0


#: The sequence models of ``model.latent.kind`` (those of
#: :data:`physode.models.latent.SEQUENCE_MODELS`).
SEQUENCE_KINDS = ("latent_ode", "ode_rnn", "gru")

# The keys of `model.latent` only some kinds read, with the default each is
# given where it is read and left out. Where a kind does not read a key, the
# key must be null (or left out), so that a written config reads back as it was.
_KIND_KEYS = {
    "latent_dim": (("latent_ode",), 15),
    "z0_hidden": (("latent_ode",), [100]),
    "encoder_dynamics_hidden": (("latent_ode",), None),
    "dynamics_hidden": (("latent_ode", "ode_rnn"), None),
    "encoder_method": (("latent_ode", "ode_rnn"), "euler"),
    "encoder_step_size": (("latent_ode", "ode_rnn"), None),
}


class LatentConfig(_Section):
    """``model.latent``: a model of irregularly sampled time series (docs/latent.md).

    Fitted on its own (``model.physics`` and ``model.neural`` must be null) by
    :func:`physode.training.sequence.fit_sequence`, on the windows that
    ``task`` describes.

    Attributes:
        kind: ``latent_ode`` (:class:`~physode.models.LatentODE`), ``ode_rnn``
            (:class:`~physode.models.ODERNN`) or ``gru``
            (:class:`~physode.models.GRUBaseline`).
        latent_dim: size of ``z`` (latent_ode only; default 15).
        hidden_dim: size of the encoder's (or the RNN's) hidden state.
        dynamics_hidden: hidden widths of the ODE right-hand side (``None``:
            the reference's 4 x 300).
        encoder_dynamics_hidden: hidden widths of the encoder's ODE
            (latent_ode only; ``None``: ``dynamics_hidden``).
        decoder_hidden: hidden widths of the decoder (``[]``: linear).
        z0_hidden: hidden widths of the map from the encoder state to ``q(z0)``
            (latent_ode only; default ``[100]``).
        activation: one of :data:`ACTIVATIONS`.
        obs_std: the fixed observation noise std of the likelihood (normalised units).
        encoder_method: solver of the encoder's ODE (latent_ode) or of the
            ODE-RNN; default ``euler`` (the reference's); ``null`` written out
            means ``solver.method``.
        encoder_step_size: its fixed step (``None``: span / 50 for a fixed-step
            method, as in the reference).

    The latent ODE itself is solved with the ``solver`` section (method, grad,
    rtol, atol, step_size, max_steps). Keys a kind does not read must be left
    out (or null); the others are filled in with their defaults on loading.
    """

    kind: Literal[SEQUENCE_KINDS] = "latent_ode"  # type: ignore[valid-type]
    latent_dim: PositiveInt | None = None
    hidden_dim: PositiveInt = 30
    dynamics_hidden: list[PositiveInt] | None = None
    encoder_dynamics_hidden: list[PositiveInt] | None = None
    decoder_hidden: list[PositiveInt] = Field(default_factory=list)
    z0_hidden: list[PositiveInt] | None = None
    activation: Literal[ACTIVATIONS] = "tanh"  # type: ignore[valid-type]
    obs_std: PositiveFloat = 0.01
    encoder_method: Literal[METHODS] | None = None  # type: ignore[valid-type]
    encoder_step_size: PositiveFloat | None = None

    @model_validator(mode="after")
    def _keys_of_kind(self) -> LatentConfig:
        for key, (kinds, default) in _KIND_KEYS.items():
            if self.kind in kinds:
                if key not in self.model_fields_set:
                    setattr(self, key, list(default) if isinstance(default, list) else default)
            elif getattr(self, key) is not None:
                only = " and ".join(repr(k) for k in kinds)
                raise _config_error(
                    f"is read by kind {only} only, not by {self.kind!r}; leave it out (or null)",
                    at=key,
                )
        return self


class ModelConfig(_Section):
    """``model``: physics, a neural term, or both (a hybrid); or, alone, a
    sequence model (``latent``)."""

    physics: PhysicsConfig | None = None
    neural: NeuralConfig | None = None
    latent: LatentConfig | None = None

    @model_validator(mode="after")
    def _something_to_fit(self) -> ModelConfig:
        if self.latent is not None:
            if self.physics is not None or self.neural is not None:
                both = [k for k in ("physics", "neural") if getattr(self, k) is not None]
                raise _config_error(
                    "a sequence model is fitted on its own: set "
                    + " and ".join(f"model.{k}" for k in both)
                    + " to null",
                    at="latent",
                )
            return self
        if self.physics is None and self.neural is None:
            raise _config_error(
                "needs model.physics, model.neural or both (or model.latent for a "
                "sequence model); all are null"
            )
        return self


class SolverConfig(_Section):
    """``solver``: arguments of :func:`physode.odeint` used in training.

    ``method`` left out (null) means ``dopri5``, or ``alf`` with
    ``grad: mali``; it is filled in on loading.
    """

    method: Literal[METHODS] | None = None  # type: ignore[valid-type]
    grad: Literal[tuple(GRADIENT_METHODS)] = "aca"  # type: ignore[valid-type]
    rtol: PositiveFloat = 1.0e-7
    atol: PositiveFloat = 1.0e-8
    step_size: PositiveFloat | None = None
    max_steps: PositiveInt | None = None

    @model_validator(mode="after")
    def _consistent(self) -> SolverConfig:
        if self.method is None:
            self.method = "alf" if self.grad == "mali" else "dopri5"
        if self.grad == "mali" and self.method != "alf":
            raise _config_error(f"grad 'mali' needs method 'alf', got {self.method!r}", at="method")
        if self.method in FIXED_STEP_METHODS and self.step_size is None:
            raise _config_error(
                f"method {self.method!r} is a fixed-step method and needs a step_size",
                at="step_size",
            )
        return self


class CosineSchedule(_Tagged):
    """``train.schedule`` with ``name: cosine``: cosine annealing over all epochs."""

    name: Literal["cosine"]
    eta_min: NonNegativeFloat = 0.0


class StepSchedule(_Tagged):
    """``train.schedule`` with ``name: step``: multiply the rate by ``gamma`` every ``step_size`` epochs."""  # noqa: E501

    name: Literal["step"]
    step_size: PositiveInt
    gamma: PositiveFloat = 0.1


class ExponentialSchedule(_Tagged):
    """``train.schedule`` with ``name: exponential``: multiply the rate by ``gamma`` every epoch."""

    name: Literal["exponential"]
    gamma: PositiveFloat


ScheduleConfig = Annotated[
    Union[CosineSchedule, StepSchedule, ExponentialSchedule],  # noqa: UP007
    Field(discriminator="name"),
]


class TrainConfig(_Section):
    """``train``: the optimisation.

    Attributes:
        epochs: passes over the (selected) trajectories.
        lr: learning rate.
        seed: seeds torch (and the batch order); a fit is reproducible from it.
        dtype: ``float32`` or ``float64`` (see :func:`resolve_dtype`).
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` (see :func:`resolve_device`).
        optimizer: ``adam``, ``adamw``, ``sgd`` or ``lbfgs``.
        schedule: learning-rate schedule, or ``None`` for a constant rate.
        batch_size: trajectories per step (``None``: all at once).
        loss: ``mse`` or ``mae`` over the observed entries in the fit window.
        log_every, checkpoint_every: in epochs.
        learn_initial_state: also fit the initial states.
    """

    epochs: PositiveInt = 100
    lr: PositiveFloat = 0.05
    seed: NonNegativeInt = 0
    dtype: Literal["float32", "float64"] = "float64"
    device: str = "auto"
    optimizer: Literal["adam", "adamw", "sgd", "lbfgs"] = "adam"
    schedule: ScheduleConfig | None = None
    batch_size: PositiveInt | None = None
    loss: Literal["mse", "mae"] = "mse"
    log_every: PositiveInt = 1
    checkpoint_every: PositiveInt = 1
    learn_initial_state: bool = False

    @field_validator("device")
    @classmethod
    def _device_name(cls, value: str) -> str:
        if not _DEVICE_RE.match(value):
            raise _config_error(f"expected auto, cpu, cuda or cuda:N, got {value!r}")
        return value


class TaskConfig(_Section):
    """``task``: what a sequence model (``model.latent``) is trained and scored on.

    The protocol of Rubanova et al. (2019), see :mod:`physode.datasets.irregular`:
    the trajectories are split ``train_fraction`` / rest, normalised per
    feature by ``(x - min) / max`` over the training data, and cut into one
    random window of ``window`` points each.

    Attributes:
        name: ``interpolation`` (the encoder sees ``observed_fraction`` of the
            window's points, the MSE is taken over all of them) or
            ``extrapolation`` (the encoder sees the first third, or
            ``observed_fraction`` of it; the rest is predicted and scored).
        window: points per window (``None``: whole trajectories).
        observed_fraction: fraction of the (observed part of the) window the
            encoder reads; the reference reports 0.1, 0.2 and 0.5.
        train_fraction: share of the trajectories used for training.
        split_seed: ``None``: the first trajectories train (the reference's
            split); a seed: a random split.
        n_samples: samples of ``z0`` per window in the loss (IWAE).
        kl_warmup, kl_rate: KL annealing: weight 0 for ``kl_warmup`` epochs,
            then ``1 - kl_rate ** (epoch - kl_warmup)``.
        eval_every: score the test set every this many epochs (``None``: at
            the end only).
        n_predictions: test windows written to ``predictions.nc`` (0: none).
    """

    name: Literal["interpolation", "extrapolation"] = "interpolation"
    window: PositiveInt | None = 100
    observed_fraction: Annotated[float, Field(gt=0, le=1, allow_inf_nan=False)] = 0.5
    train_fraction: Annotated[float, Field(gt=0, lt=1, allow_inf_nan=False)] = 0.8
    split_seed: NonNegativeInt | None = None
    n_samples: PositiveInt = 3
    kl_warmup: NonNegativeInt = 10
    kl_rate: Annotated[float, Field(ge=0, lt=1, allow_inf_nan=False)] = 0.99
    eval_every: PositiveInt | None = None
    n_predictions: NonNegativeInt = 8

    @model_validator(mode="after")
    def _window_holds_a_third(self) -> TaskConfig:
        if self.name == "extrapolation" and self.window is not None and self.window < 3:
            raise _config_error(
                f"extrapolation observes the first third of the window and needs "
                f"at least 3 points, got {self.window}",
                at="window",
            )
        return self


#: solver tolerances a sequence model gets when the config leaves them out (the reference's).
SEQUENCE_SOLVER_DEFAULTS = {"rtol": 1.0e-3, "atol": 1.0e-4}


class OutputConfig(_Section):
    """``output``: ``dir`` is the run directory; ``None`` lets :func:`resolve_run_dir` pick one."""

    dir: PathField | None = None

    @field_validator("dir")
    @classmethod
    def _dir_absolute(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        return _resolve_path(value, info)


class Config(_Section):
    """A whole ``physode fit`` config. ``source`` is the file it was read from (or ``None``)."""

    data: DataConfig
    model: ModelConfig
    solver: SolverConfig = Field(default_factory=SolverConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    output: OutputConfig = Field(default_factory=OutputConfig)
    task: TaskConfig | None = None

    _source: Path | None = PrivateAttr(default=None)

    @model_validator(mode="before")
    @classmethod
    def _sequence_fit_window(cls, data: Any) -> Any:
        # `data.fit_window` is required, except for a sequence model, where
        # leaving it out means all times.
        if not isinstance(data, Mapping):
            return data
        model, section = data.get("model"), data.get("data")
        latent = isinstance(model, Mapping) and model.get("latent") is not None
        if latent and isinstance(section, Mapping) and "fit_window" not in section:
            data = {**data, "data": {**section, "fit_window": None}}
        return data

    @model_validator(mode="after")
    def _sequence_settings(self) -> Config:
        if self.model.latent is None:
            if self.task is not None:
                raise _config_error(
                    "is used only with model.latent (a sequence model); remove it or set it "
                    "to null",
                    at="task",
                )
            if self.data.fit_window is None:
                raise _config_error(
                    "must be [start, end] (null is for model.latent only)", at="data.fit_window"
                )
            return self
        if self.task is None:
            self.task = TaskConfig()
        if self.train.loss != "mse":
            raise _config_error(
                f"a sequence model is trained on its likelihood and scored by the MSE; "
                f"{self.train.loss!r} is not available with model.latent",
                at="train.loss",
            )
        if self.train.learn_initial_state:
            raise _config_error(
                "not available with model.latent (its encoder infers the initial state)",
                at="train.learn_initial_state",
            )
        for key, value in SEQUENCE_SOLVER_DEFAULTS.items():
            if key not in self.solver.model_fields_set:
                setattr(self.solver, key, value)
        return self

    @property
    def source(self) -> Path | None:
        """The config file this was loaded from (absolute), or ``None``."""
        return self._source


# --------------------------------------------------------------------------- error paths


def _sections_in(annotation: Any) -> list[type[_Section]]:
    """Section classes a field can hold (unwrapping Optional, Annotated and unions)."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return _sections_in(get_args(annotation)[0])
    if origin is Union or origin is types.UnionType:
        return [s for arg in get_args(annotation) for s in _sections_in(arg)]
    if isinstance(annotation, type) and issubclass(annotation, _Section):
        return [annotation]
    return []


def _tag(section: type[_Section]) -> str:
    return get_args(section.model_fields["name"].annotation)[0]


def _walk(loc: Sequence[str | int]) -> tuple[list[str | int], list[type[_Section] | None]]:
    """A pydantic error location as the user's key path, with the section owning each key.

    Discriminated unions put the tag into the location (``model.physics.nbody.G``);
    it is dropped here, since the user never wrote it.
    """
    shown: list[str | int] = []
    owners: list[type[_Section] | None] = []
    section: type[_Section] | None = Config
    i = 0
    while i < len(loc):
        key = loc[i]
        i += 1
        shown.append(key)
        owners.append(section)
        found = section is not None and isinstance(key, str) and key in section.model_fields
        inner = _sections_in(section.model_fields[key].annotation) if found else []
        section = None
        if inner and issubclass(inner[0], _Tagged):
            by_tag = {_tag(s): s for s in inner}
            if i < len(loc) and loc[i] in by_tag:
                section = by_tag[loc[i]]
                i += 1
        elif inner:
            section = inner[0]
    return shown, owners


def _dotted(parts: Sequence[str | int]) -> str:
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


def _all_paths(section: type[_Section], prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    for name, field in section.model_fields.items():
        path = (*prefix, name)
        yield path
        for inner in _sections_in(field.annotation):
            yield from _all_paths(inner, path)


def _suggest(key: str, owner: type[_Section] | None, parent: Sequence[str | int]) -> str | None:
    """The closest valid key path: a sibling first, else the same name in another section."""
    if owner is not None:
        close = difflib.get_close_matches(key, list(owner.model_fields), n=1, cutoff=0.6)
        if close:
            return _dotted([*parent, close[0]])
    everywhere = {p[-1]: p for p in sorted(set(_all_paths(Config)), key=len, reverse=True)}
    close = difflib.get_close_matches(key, list(everywhere), n=1, cutoff=0.8)
    return ".".join(everywhere[close[0]]) if close else None


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


_EXPECTED = {
    "int_type": "expected an integer",
    "int_parsing": "expected an integer",
    "int_from_float": "expected an integer",
    "float_type": "expected a number",
    "float_parsing": "expected a number",
    "finite_number": "expected a finite number",
    "bool_type": "expected true or false",
    "bool_parsing": "expected true or false",
    "string_type": "expected a string",
    "list_type": "expected a list",
    "tuple_type": "expected a list",
    "dict_type": "expected a mapping",
    "model_type": "expected a mapping",
    "model_attributes_type": "expected a mapping",
    "path_type": "expected a path (a string)",
}


def _problem(error: Mapping[str, Any]) -> tuple[list[str | int], str]:
    """One pydantic error as ``(key path, message)``."""
    kind = error["type"]
    ctx = error.get("ctx") or {}
    shown, owners = _walk(error["loc"])
    value = error.get("input")
    if kind == "extra_forbidden":
        key = str(shown[-1])
        hint = _suggest(key, owners[-1] if owners else None, shown[:-1])
        return shown, f"unknown key '{_dotted(shown)}'" + (
            f" (did you mean '{hint}'?)" if hint else ""
        )
    if kind == "config":
        if ctx.get("at"):
            shown = [*shown, *ctx["at"].split(".")]
        return shown, ctx["message"]
    if kind == "missing":
        return shown, "missing required key"
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        section = owners[-1] if owners else None
        field = section.model_fields.get(str(shown[-1])) if section is not None else None
        tags = [_tag(s) for s in _sections_in(field.annotation)] if field is not None else []
        choices = ", ".join(tags)
        if kind == "union_tag_not_found":
            return [*shown, "name"], f"missing required key (choose one of: {choices})"
        tag = str(ctx.get("tag"))
        close = difflib.get_close_matches(tag, tags, n=1, cutoff=0.5)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        return [*shown, "name"], f"unknown name {tag!r}{hint}; choose one of: {choices}"
    if kind == "literal_error":
        options = re.findall(r"'((?:[^'\\]|\\.)*)'", str(ctx.get("expected", "")))
        close = difflib.get_close_matches(str(value), options, n=1, cutoff=0.5)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        return shown, f"unknown value {_show(value)}{hint}; choose one of: {', '.join(options)}"
    if kind == "greater_than":
        return shown, f"must be > {ctx['gt']}, got {_show(value)}"
    if kind == "greater_than_equal":
        return shown, f"must be >= {ctx['ge']}, got {_show(value)}"
    if kind == "less_than":
        return shown, f"must be < {ctx['lt']}, got {_show(value)}"
    if kind == "less_than_equal":
        return shown, f"must be <= {ctx['le']}, got {_show(value)}"
    if kind in _EXPECTED:
        return shown, f"{_EXPECTED[kind]}, got {_show(value)} ({type(value).__name__})"
    message = str(error.get("msg", kind))
    message = message.removeprefix("Value error, ")
    message = message[:1].lower() + message[1:]
    return shown, f"{message}, got {_show(value)}"


# --------------------------------------------------------------------------- line numbers


def _key_lines(
    node: yaml.Node | None, prefix: tuple[str | int, ...] = ()
) -> tuple[dict[tuple[str | int, ...], int], list[str]]:
    """Line (1-based) of every key in a composed YAML tree, and the keys written twice."""
    lines: dict[tuple[str | int, ...], int] = {}
    duplicates: list[str] = []
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                continue
            path = (*prefix, key_node.value)
            line = key_node.start_mark.line + 1
            if path in lines:
                duplicates.append(
                    f"duplicate key '{_dotted(path)}' (lines {lines[path]} and {line}); "
                    "write it once"
                )
            lines[path] = line
            sub, dup = _key_lines(value_node, path)
            lines.update(sub)
            duplicates += dup
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            lines[(*prefix, i)] = item.start_mark.line + 1
            sub, dup = _key_lines(item, (*prefix, i))
            lines.update(sub)
            duplicates += dup
    return lines, duplicates


# --------------------------------------------------------------------------- overrides


def _parse_override(text: str) -> tuple[tuple[str, ...], Any]:
    key, sep, raw = text.partition("=")
    path = tuple(key.strip().split("."))
    if not sep or not all(path):
        raise ConfigError(f"--set {text!r}: expected key.path=value, e.g. train.epochs=5")
    try:
        value = parse_yaml(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {text!r}: cannot parse the value: {exc}") from None
    return path, value


def _apply_override(data: dict[str, Any], path: tuple[str, ...], value: Any, text: str) -> None:
    node = data
    for i, key in enumerate(path[:-1]):
        child = node.get(key)
        if child is None:
            # Setting a key inside a null section (model.neural.hidden with
            # `neural: null`) switches that section on with its defaults.
            child = node[key] = {}
        elif not isinstance(child, dict):
            raise ConfigError(
                f"--set {text}: '{'.'.join(path[: i + 1])}' is a value, not a section"
            )
        node = child
    node[path[-1]] = value


# --------------------------------------------------------------------------- loading


def _not_a_mapping(data: Any) -> str:
    kind = "an empty file" if data is None else f"a {type(data).__name__}"
    return f"the top level must be a mapping with the sections {', '.join(_SECTIONS)}; got {kind}"


def config_from_dict(
    data: Mapping[str, Any],
    *,
    source: str | os.PathLike[str] | None = None,
    base_dir: str | os.PathLike[str] | None = None,
) -> Config:
    """Validate a config mapping (as read from YAML) into a :class:`Config`.

    Args:
        data: the parsed config.
        source: the file it came from, used in error messages and kept as
            ``config.source``.
        base_dir: folder that relative paths are resolved against (default:
            ``source``'s folder, else the working directory).

    Raises:
        ConfigError: listing every problem, one per line.
    """
    return _validate(data, source, base_dir, {}, {})


def _validate(
    data: Any,
    source: str | os.PathLike[str] | None,
    base_dir: str | os.PathLike[str] | None,
    lines: Mapping[tuple[str | int, ...], int],
    overrides: Mapping[tuple[str, ...], str],
) -> Config:
    """:func:`config_from_dict`, with each problem located by its line in the
    file or by the ``--set`` override that caused it."""
    if not isinstance(data, Mapping):
        raise ConfigError(_not_a_mapping(data), source)
    source_path = Path(os.path.abspath(source)) if source is not None else None
    if base_dir is None:
        base_dir = source_path.parent if source_path is not None else Path.cwd()
    try:
        config = Config.model_validate(
            dict(data), context={"base_dir": Path(os.path.abspath(base_dir))}
        )
    except ValidationError as exc:
        raise ConfigError(_problems(exc, lines, overrides), source) from None
    config._source = source_path
    return config


def _problems(
    exc: ValidationError,
    lines: Mapping[tuple[str | int, ...], int],
    overrides: Mapping[tuple[str, ...], str],
) -> list[str]:
    found = [(error, *_problem(error)) for error in exc.errors()]
    # A misspelt required key shows up twice, as unknown and as missing;
    # the unknown key with its suggestion says it all.
    suggested = [m for _, _, m in found if m.startswith("unknown key")]
    problems = []
    for error, shown, message in found:
        path = _dotted(shown)
        if error["type"] == "missing" and any(f"(did you mean '{path}'?)" in m for m in suggested):
            continue
        keys = tuple(shown)
        origin = next((o for p, o in overrides.items() if keys[: len(p)] == p), None)
        where = ""
        if origin is not None:
            where = f" (from --set {origin})"
        else:
            line = next(
                (lines[keys[:n]] for n in range(len(keys), 0, -1) if keys[:n] in lines), None
            )
            if line is not None:
                where = f" (line {line})"
        if message.startswith("unknown key") or not path:
            problems.append(message + where)
        else:
            problems.append(f"{path}: {message}{where}")
    return problems


def load_config(path: str | os.PathLike[str], overrides: Sequence[str] = ()) -> Config:
    """Read, override and validate a config file.

    Args:
        path: the YAML file. Relative ``data.path`` and ``output.dir`` are
            taken from its folder.
        overrides: ``key.path=value`` strings (``--set``); each value is parsed
            as YAML, so ``train.epochs=5`` is an int, ``solver.grad=mali`` a
            string and ``data.fit_window=[0,0.5]`` a list.

    Returns:
        The validated :class:`Config`, with ``config.source`` the file's absolute path.

    Raises:
        ConfigError: for a missing or unreadable file, a YAML syntax error
            (with its line), a top level that is not a mapping, a bad
            override, or any invalid or unknown key (all listed at once).
    """
    name = os.fspath(path)
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError("config file not found", name) from None
    except IsADirectoryError:
        raise ConfigError("is a directory, not a config file", name) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the config file: {exc}", name) from None
    try:
        data = parse_yaml(text)
        lines, duplicates = _key_lines(yaml.compose(text, Loader=ConfigLoader))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        what = " ".join(s for s in (exc.context, exc.problem) if s)
        raise ConfigError(f"YAML syntax error{where}: {what}", name) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"YAML error: {exc}", name) from None
    if duplicates:
        raise ConfigError(duplicates, name)
    if not isinstance(data, dict):
        raise ConfigError(_not_a_mapping(data), name)
    origins: dict[tuple[str, ...], str] = {}
    for text_override in overrides:
        try:
            key_path, value = _parse_override(text_override)
            _apply_override(data, key_path, value, text_override)
        except ConfigError as exc:
            raise ConfigError(exc.problems, name) from None
        origins[key_path] = text_override
    return _validate(data, name, None, lines, origins)


class _ConfigDumper(yaml.SafeDumper):
    """Sections as block mappings, short lists of numbers or names on one line."""


def _represent_list(dumper: yaml.SafeDumper, value: list) -> yaml.Node:
    flat = all(isinstance(v, (int, float, str, bool)) or v is None for v in value)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", value, flow_style=flat)


_ConfigDumper.add_representer(list, _represent_list)


def config_to_dict(config: Config) -> dict[str, Any]:
    """The config as plain data (paths as strings, tuples as lists): what YAML can hold."""
    return config.model_dump(mode="json")


def config_to_yaml(config: Config) -> str:
    """The resolved config as YAML; :func:`load_config` on it gives the same config back.

    Every default is written out and paths are absolute, so the text stands on
    its own wherever it is saved.
    """
    return yaml.dump(
        config_to_dict(config),
        Dumper=_ConfigDumper,
        sort_keys=False,
        default_flow_style=False,
        allow_unicode=True,
    )


def resolve_run_dir(config: Config, now: datetime | None = None) -> Path:
    """The run directory: ``output.dir``, else ``runs/<config stem>-<YYYYmmdd-HHMMSS>``
    next to the config file (or in the working directory for a config without a file)."""
    if config.output.dir is not None:
        return config.output.dir
    now = now or datetime.now()
    base = config.source.parent if config.source is not None else Path.cwd()
    stem = config.source.stem if config.source is not None else "run"
    return base / "runs" / f"{stem}-{now:%Y%m%d-%H%M%S}"


# --------------------------------------------------------------------------- torch settings


def resolve_dtype(name: str) -> torch.dtype:
    """``"float32"`` or ``"float64"`` as a ``torch.dtype``."""
    dtypes = {"float32": torch.float32, "float64": torch.float64}
    if name not in dtypes:
        raise ValueError(f"dtype: expected float32 or float64, got {name!r}")
    return dtypes[name]


def resolve_device(name: str) -> torch.device:
    """The ``torch.device`` for ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.

    ``auto`` is the current CUDA device when one is available, else the CPU.
    Asking for CUDA where there is none is an error rather than a silent CPU run.
    """
    if not isinstance(name, str) or not _DEVICE_RE.match(name):
        raise ValueError(f"device: expected auto, cpu, cuda or cuda:N, got {name!r}")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        build = torch.version.cuda
        why = "no CUDA device was found" if build else "this torch build has no CUDA support"
        raise ValueError(
            f"device: {name!r} was asked for but {why} (torch {torch.__version__}); "
            "use device: cpu or device: auto"
        )
    device = torch.device(name)
    count = torch.cuda.device_count()
    if device.index is not None and device.index >= count:
        raise ValueError(
            f"device: {name!r} does not exist; this machine has {count} CUDA device(s) "
            f"(cuda:0 to cuda:{count - 1})"
        )
    return device
