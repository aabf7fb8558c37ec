"""The sections of the ``physode fit`` config as pydantic models (strict types,
no unknown keys); reading files, overrides and error messages are in ``config.py``."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Union

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationInfo,
    field_validator,
    model_validator,
)

from ..datasets import SIMULATORS
from ..gradients import GRADIENT_METHODS, make_gradient
from ..models.latent import ENCODER_CELLS, SEQUENCE_MODELS, WEIGHT_INITS
from ..models.neural import ACTIVATIONS as _MLP_ACTIVATIONS
from ..models.registry import NEURAL, PHYSICS
from ..registry import CodeReferenceError, Registry
from ..solvers import FIXED_STEP_METHODS, METHODS, make_solver
from .config_arguments import check_arguments
from .config_errors import config_error as _config_error
from .config_errors import show as _show

#: Activation names (those of :class:`physode.models.MLP`).
ACTIVATIONS = tuple(_MLP_ACTIVATIONS)


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


def _base_dir(info: ValidationInfo) -> Path:
    """The folder relative paths and file references are taken from (the config file's)."""
    return Path((info.context or {}).get("base_dir") or Path.cwd())


def _resolve_path(value: Path | None, info: ValidationInfo) -> Path | None:
    if value is None:
        return None
    value = value.expanduser()
    if not value.is_absolute():
        value = _base_dir(info) / value
    return Path(os.path.normpath(value))


def _resolve_name(registry: Registry, name: str, info: ValidationInfo, at: str = "name"):
    """``(object, name as recorded)`` for a built-in name or a reference to user code."""
    base = _base_dir(info)
    try:
        return registry.resolve(name, base), registry.canonical(name, base)
    except (CodeReferenceError, ValueError) as exc:
        raise _config_error(str(exc), at=at) from None


class _Section(BaseModel):
    # strict: a quoted "0.05" or a `true` where a number belongs is an error,
    # not something pydantic quietly converts.
    model_config = ConfigDict(extra="forbid", strict=True)


class _Tagged(_Section):
    """A member of a discriminated union on ``name`` (the union's key appears in error paths)."""


# --------------------------------------------------------------------------- sections


_Window = Annotated[tuple[FiniteFloat, FiniteFloat], BeforeValidator(_window_pair)]


class DataConfig(_Section):
    """``data``: the trajectory file and what part of it is fitted.

    Attributes:
        path: the trajectory file (HDF5); relative paths are taken from the
            config file's folder, so ``path`` is absolute after loading.
        simulate: simulator that creates the file when it is missing: a
            built-in name, or the user's function as ``path/to/file.py:function``
            (relative to the config file) or ``package.module:function``
            (``None``: never simulate).
        simulate_options: keyword arguments for the simulator, checked against
            its signature.
        fit_window: ``(start, end)`` in the file's time units; times after
            ``end`` are extrapolation. ``None`` (or left out): the data file's
            ``fit_window`` attribute, which must then exist. With
            ``model.latent`` it only restricts the times used (``None``: all).
        trajectories: indices of the trajectories to use (``None``: all).
        observed: names of the variables the loss sees (``None``: all).
    """

    path: PathField
    simulate: str | None = None
    simulate_options: dict[str, Any] = Field(default_factory=dict)
    fit_window: _Window | None = None
    trajectories: list[NonNegativeInt] | None = None
    observed: list[str] | None = None

    @field_validator("path")
    @classmethod
    def _path_absolute(cls, value: Path, info: ValidationInfo) -> Path:
        return _resolve_path(value, info)

    @model_validator(mode="after")
    def _simulator_options(self, info: ValidationInfo) -> DataConfig:
        # Checked here rather than when the file is first simulated, which
        # may be long after the config was written.
        if self.simulate is None:
            return self
        simulator, self.simulate = _resolve_name(SIMULATORS, self.simulate, info, at="simulate")
        self.simulate_options = check_arguments(
            simulator,
            self.simulate_options,
            label=f"simulator {self.simulate!r}",
            at="simulate_options",
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


class _Component(_Section):
    """A model part: ``name`` picks the class (a built-in name, or the user's own as
    ``path/to/file.py:Class``, relative to the config file, or ``package.module:Class``);
    the section's other keys are its constructor's keyword arguments, checked
    against its signature. A file reference is recorded with an absolute path.

    Arguments in :attr:`supplied` may be left out: the builder fills them in from
    the data (see :mod:`physode.training.tasks.trajectory`).
    """

    model_config = ConfigDict(extra="allow", strict=True)
    registry: ClassVar[Registry]
    supplied: ClassVar[tuple[str, ...]] = ()
    _own_keys: ClassVar[tuple[str, ...]] = ("name",)

    name: str

    @model_validator(mode="after")
    def _arguments_fit(self, info: ValidationInfo) -> _Component:
        target, self.name = _resolve_name(self.registry, self.name, info)
        label = getattr(target, "__name__", self.name)
        self.__pydantic_extra__ = check_arguments(
            target, self.arguments, label=label, supplied=self.supplied
        )
        return self

    @property
    def arguments(self) -> dict[str, Any]:
        """The constructor's keyword arguments the config gives."""
        return dict(self.__pydantic_extra__ or {})

    def target(self) -> Any:
        """The class (or function) ``name`` refers to."""
        return self.registry.resolve(self.name)


class PhysicsConfig(_Component):
    """``model.physics``: the known part of the right-hand side, called as ``physics(t, y)``.

    ``name: nbody`` is :class:`~physode.models.NBodyGravity`; its keys are
    ``n_bodies``, ``dim``, ``G``, ``masses``, ``learn_masses`` and ``softening``.
    ``state_size``, when the class takes it and the config leaves it out, is the
    number of the data's variables.
    """

    registry: ClassVar[Registry] = PHYSICS
    supplied: ClassVar[tuple[str, ...]] = ("state_size",)


class NeuralConfig(_Component):
    """``model.neural``: a learned term, called as ``neural(y)``: added to the physics
    (to its accelerations for a second-order physics), or the whole model.

    Attributes:
        name: ``mlp`` (:class:`~physode.models.MLP`: keys ``hidden``,
            ``activation``, ``final_zero``) or the user's own class.
        penalty: weight of an L2 penalty on the neural term's output (APHYNITY).

    ``in_features``, ``out_features`` and ``final_zero``, when the class takes them
    and the config leaves them out, are the state size, the size of what the term
    adds to (the state, or the accelerations) and "is there physics" (a hybrid
    starts as its physics).
    """

    registry: ClassVar[Registry] = NEURAL
    supplied: ClassVar[tuple[str, ...]] = ("in_features", "out_features", "final_zero")

    name: str = "mlp"
    penalty: NonNegativeFloat = 0.0


#: The sequence models of ``model.latent.kind`` (those of
#: :data:`physode.models.latent.SEQUENCE_MODELS`).
SEQUENCE_KINDS = tuple(SEQUENCE_MODELS)

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
    "encoder_cell": (("latent_ode",), "gru"),
    "init": (("latent_ode",), "torch"),
}


class LatentConfig(_Section):
    """``model.latent``: a model of irregularly sampled time series (docs/latent.md).

    Fitted on its own (``model.physics`` and ``model.neural`` must be null) by
    :class:`~physode.training.sequence_task.SequenceTask`, on the windows that
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
        encoder_cell: ``gru`` (default) or ``reference``: the reference's GRU unit
            (MLP gates, a std channel; latent_ode only).
        init: ``torch`` (default) or ``reference``: every linear layer drawn from
            N(0, 0.1) with zero biases, as the reference draws its networks
            (latent_ode only).

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
    encoder_cell: Literal[ENCODER_CELLS] | None = None  # type: ignore[valid-type]
    init: Literal[WEIGHT_INITS] | None = None  # type: ignore[valid-type]

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
    sequence model (``latent``).

    ``python`` records the class of a model given to :func:`physode.fit` as an
    object (``module:Class``): such a run's model is not described by the config,
    and whatever rebuilds it (a resume, an evaluation) is given the model again.
    """

    physics: PhysicsConfig | None = None
    neural: NeuralConfig | None = None
    latent: LatentConfig | None = None
    python: str | None = None

    def _alone(self, key: str, others: tuple[str, ...], why: str) -> None:
        """``model.<key>`` excludes the ``others``: an error naming those that are set."""
        given = [k for k in others if getattr(self, k) is not None]
        if given:
            names = " and ".join(f"model.{k}" for k in given)
            raise _config_error(f"{why}: set {names} to null", at=key)

    @model_validator(mode="after")
    def _something_to_fit(self) -> ModelConfig:
        if self.python is not None:
            self._alone("python", ("physics", "neural", "latent"), "records a model from Python")
            return self
        if self.latent is not None:
            self._alone("latent", ("physics", "neural"), "a sequence model is fitted on its own")
            return self
        if self.physics is None and self.neural is None:
            raise _config_error(
                "needs model.physics, model.neural or both (or model.latent for a "
                "sequence model); all are null"
            )
        return self


class SolverConfig(_Section):
    """``solver``: arguments of :func:`physode.odeint` used in training.

    ``method`` left out (null) means the gradient method's default (``dopri5``,
    or ``alf`` with ``grad: mali``); it is filled in on loading. Whether the
    gradient method accepts the method is the gradient method's own rule.
    """

    method: Literal[METHODS] | None = None  # type: ignore[valid-type]
    grad: Literal[tuple(GRADIENT_METHODS)] = "aca"  # type: ignore[valid-type]
    rtol: PositiveFloat = 1.0e-7
    atol: PositiveFloat = 1.0e-8
    step_size: PositiveFloat | None = None
    max_steps: PositiveInt | None = None

    @model_validator(mode="after")
    def _consistent(self) -> SolverConfig:
        gradient = make_gradient(self.grad)
        if self.method is None:
            self.method = gradient.default_method
        solver = make_solver(self.method)
        if not gradient.accepts(solver):
            raise _config_error(gradient.refusal(solver), at="method")
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
    """``train.schedule`` with ``name: exponential``: multiply the rate by ``gamma`` every
    epoch (``every: step``: every optimiser step), never below ``floor`` (an absolute
    rate; 0: no floor). The latent ODE's reference decays 0.999 a step to a floor of
    ``lr / 10``."""

    name: Literal["exponential"]
    gamma: PositiveFloat
    every: Literal["epoch", "step"] = "epoch"
    floor: NonNegativeFloat = 0.0


ScheduleConfig = Annotated[
    Union[CosineSchedule, StepSchedule, ExponentialSchedule],  # noqa: UP007
    Field(discriminator="name"),
]


class StopConfig(_Section):
    """``train.stop``: end the fit once it has converged.

    The fit stops after ``patience`` epochs in a row whose loss changed by at
    most ``rtol`` relative to the epoch before: ``|L_k - L_{k-1}| <= rtol |L_{k-1}|``.
    """

    rtol: PositiveFloat
    patience: PositiveInt = 2


class TrainConfig(_Section):
    """``train``: the optimisation.

    Attributes:
        epochs: passes over the (selected) trajectories.
        lr: learning rate.
        seed: seeds torch (and the batch order); a fit is reproducible from it.
        dtype: ``float32`` or ``float64`` (see :func:`resolve_dtype`).
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` (see :func:`resolve_device`).
        optimizer: ``adam``, ``adamw``, ``adamax`` (Adam with the infinity norm, the
            latent ODE reference's), ``sgd`` or ``lbfgs``.
        schedule: learning-rate schedule, or ``None`` for a constant rate.
        batch_size: trajectories per step (``None``: all at once).
        loss: ``mse`` or ``mae`` over the observed entries in the fit window.
        log_every, checkpoint_every: in epochs.
        learn_initial_state: also fit the initial states (needed when the
            state at the start of the fit window is not fully observed; the
            unobserved values start from an estimate).
        stop: a convergence rule that can end the fit before ``epochs`` (``None``: never).
    """

    epochs: PositiveInt = 100
    lr: PositiveFloat = 0.05
    seed: NonNegativeInt = 0
    dtype: Literal["float32", "float64"] = "float64"
    device: str = "auto"
    optimizer: Literal["adam", "adamw", "adamax", "sgd", "lbfgs"] = "adam"
    schedule: ScheduleConfig | None = None
    batch_size: PositiveInt | None = None
    loss: Literal["mse", "mae"] = "mse"
    log_every: PositiveInt = 1
    checkpoint_every: PositiveInt = 1
    learn_initial_state: bool = False
    stop: StopConfig | None = None

    @model_validator(mode="after")
    def _floor_below_rate(self) -> TrainConfig:
        floor = getattr(self.schedule, "floor", 0.0)
        if floor > self.lr:
            raise _config_error(
                f"the floor {floor:g} is above train.lr = {self.lr:g}", at="schedule.floor"
            )
        return self

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
    feature by ``(x - min) / max`` over the training data (``normalize_over:
    all``: over every trajectory, the reference's choice), and cut into one
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
        score_samples: draws of ``z0`` behind ``test_mse_sampled`` (the reference
            scores with 3); ``test_mse`` (= ``test_mse_mean``) uses the posterior mean.
        normalize_over: ``train`` (default: nothing of the test set leaks into the
            units) or ``all`` (the reference's).
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
    score_samples: PositiveInt = 3
    normalize_over: Literal["train", "all"] = "train"

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

    @model_validator(mode="after")
    def _sequence_settings(self) -> Config:
        if self.model.latent is None:
            if self.task is not None:
                raise _config_error(
                    "is used only with model.latent (a sequence model); remove it or set it "
                    "to null",
                    at="task",
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
