"""Sequence models (``model.latent``) on irregularly sampled windows, as in Rubanova
et al. (2019): their data, their model, their scores. The fit itself is the
runner's, with :class:`~physode.training.sequence_task.SequenceTask`.

The protocol, from ``task``:

- the trajectories are split ``train_fraction`` / rest (the first ones train
  unless ``split_seed`` is set), and every feature is normalised by
  ``(x - min) / max`` over the training data;
- each trajectory gets one random window of ``window`` points, fixed for the
  whole fit (the reference's); the points the encoder reads are drawn afresh
  for every batch (``interpolation``: ``observed_fraction`` of the window, the
  MSE over all of it; ``extrapolation``: the first third, the MSE over the rest);
- the loss is the model's own (minus the IWAE bound over ``n_samples`` samples
  of ``z0`` for the latent ODE, with the KL weight annealed by
  :func:`~physode.models.latent.kl_annealing`; minus the Gaussian
  log-likelihood for the baselines);
- the test trajectories get their own windows and masks, drawn from seed 0
  whatever ``train.seed`` is, so every run of a config is scored on the same
  test set; predictions are deterministic (the latent ODE decodes the
  posterior mean of ``z0``), and the MSE is in normalised units, as the
  reference reports it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..datasets.irregular import (
    IrregularDataset,
    MinMaxStats,
    apply_normalization,
    normalize_minmax,
    train_test_split,
)
from ..models.latent import ODERNN, GRUBaseline, LatentODE, encoder_gradient
from .config import Config
from .problem import FitSetupError, ensure_data_file, observed_columns, read_selected

__all__ = [
    "EVAL_BATCH",
    "TEST_SEED",
    "SequenceData",
    "build_sequence_model",
    "load_sequence_data",
    "ode_modules",
    "score",
    "score_all",
]

#: Windows predicted at once when scoring the test set.
EVAL_BATCH = 500
#: Seed of the test windows and of their masks (independent of ``train.seed``).
TEST_SEED = 0


# --------------------------------------------------------------------------- data


@dataclass
class SequenceData:
    """The data of a sequence fit, normalised, on the CPU.

    Attributes:
        times: ``(T,)`` float64, the file's times (inside ``data.fit_window``).
        train: ``(N_train, T, D)`` normalised training trajectories, in the run's dtype.
        test: ``(N_test, T, D)`` normalised test trajectories.
        train_ids, test_ids: each trajectory's index in the file.
        stats: the normalisation (``stats.invert`` gives the data's units back).
        variables: the ``D`` variable names.
        time_units: the file's time units.
        state_units: the file's units per variable (or ``None``).
    """

    times: np.ndarray
    train: torch.Tensor
    test: torch.Tensor
    train_ids: list[int]
    test_ids: list[int]
    stats: MinMaxStats
    variables: list[str]
    time_units: str
    state_units: list[str] | None

    def datasets(self, config: Config) -> dict[str, IrregularDataset]:
        """The windows of the fit: ``train`` (task windows, seeded by ``train.seed``)
        and ``test`` (interpolation windows, seeded by :data:`TEST_SEED`), plus
        ``test_extrapolation`` for the extrapolation task."""
        task = config.task
        common = {"window": task.window, "observed_fraction": task.observed_fraction}
        out = {
            "train": IrregularDataset(
                self.train, self.times, task=task.name, seed=config.train.seed, **common
            ),
            "test": IrregularDataset(
                self.test, self.times, task="interpolation", seed=TEST_SEED, **common
            ),
        }
        if task.name == "extrapolation":
            out["test_extrapolation"] = IrregularDataset(
                self.test, self.times, task="extrapolation", seed=TEST_SEED, **common
            )
        return out


def load_sequence_data(config: Config, dtype: torch.dtype = torch.float32) -> SequenceData:
    """Read (or simulate) the trajectory file of ``config``, split and normalise it.

    Raises:
        FitSetupError: the file and the config do not fit together (too few
            trajectories or times for the split and the window, unevenly spaced
            times, a partly observed file); the message names the key.
    """
    path = ensure_data_file(config)
    data = read_selected(config, path)
    task = config.task
    times = np.asarray(data.time, dtype=np.float64)
    keep = np.ones(times.shape, dtype=bool)
    if config.data.fit_window is not None:
        start, end = config.data.fit_window
        keep = (times >= start) & (times <= end)
    columns = observed_columns(config, data.variables, path)
    if data.mask is not None and not data.mask[:, keep][..., columns].all():
        raise FitSetupError(
            f"{path}: /mask: the file has unobserved entries; a sequence fit draws its own "
            "observation masks (task.observed_fraction) and needs fully observed trajectories"
        )
    state = np.asarray(data.state[:, keep][..., columns])
    times = times[keep]
    n, n_times = state.shape[:2]
    window = n_times if task.window is None else task.window
    if window > n_times:
        where = " inside data.fit_window" if config.data.fit_window is not None else ""
        raise FitSetupError(f"task.window: {window} points, but {path} has {n_times} times{where}")
    if n_times > 1:
        steps = np.diff(times)
        if not np.allclose(steps, steps[0], rtol=1e-6, atol=0.0):
            raise FitSetupError(
                f"{path}: the times are not evenly spaced; the windows of a sequence fit "
                "share one time grid"
            )
    try:
        train_rows, test_rows = train_test_split(n, task.train_fraction, task.split_seed)
    except ValueError as exc:
        raise FitSetupError(
            f"task.train_fraction: cannot split the {n} trajectories of {path}: {exc}"
        ) from None
    ids = np.arange(n) if config.data.trajectories is None else np.asarray(config.data.trajectories)
    over = state if task.normalize_over == "all" else state[train_rows]
    _, stats = normalize_minmax(over.astype(np.float64))
    train = apply_normalization(state[train_rows].astype(np.float64), stats)
    test = apply_normalization(state[test_rows].astype(np.float64), stats)
    units = None if data.state_units is None else [data.state_units[i] for i in columns]
    return SequenceData(
        times=times,
        train=torch.as_tensor(train, dtype=dtype),
        test=torch.as_tensor(test, dtype=dtype),
        train_ids=ids[train_rows].tolist(),
        test_ids=ids[test_rows].tolist(),
        stats=stats,
        variables=[data.variables[i] for i in columns],
        time_units=data.time_units,
        state_units=units,
    )


# --------------------------------------------------------------------------- model


def build_sequence_model(
    config: Config, data_dim: int, dtype: torch.dtype, device: torch.device
) -> nn.Module:
    """The model ``model.latent`` describes, for ``data_dim`` variables.

    The latent ODE is solved with the ``solver`` section; its encoder (and the
    ODE-RNN) with ``model.latent.encoder_method`` (``None``: ``solver.method``).
    """
    spec, s = config.model.latent, config.solver
    options = None if s.max_steps is None else {"max_steps": s.max_steps}
    if spec.kind == "gru":
        model = GRUBaseline(
            data_dim,
            spec.hidden_dim,
            decoder_hidden=tuple(spec.decoder_hidden),
            activation=spec.activation,
            obs_std=spec.obs_std,
        )
    elif spec.kind == "ode_rnn":
        method = s.method if spec.encoder_method is None else spec.encoder_method
        grad = encoder_gradient(method, s.grad)
        step = spec.encoder_step_size
        if step is None and spec.encoder_method is None:
            step = s.step_size
        model = ODERNN(
            data_dim,
            spec.hidden_dim,
            dynamics_hidden=spec.dynamics_hidden,
            decoder_hidden=tuple(spec.decoder_hidden),
            activation=spec.activation,
            obs_std=spec.obs_std,
            method=method,
            grad=grad,
            rtol=s.rtol,
            atol=s.atol,
            step_size=step,
            solver_options=options,
        )
    else:
        model = LatentODE(
            data_dim,
            spec.latent_dim,
            spec.hidden_dim,
            dynamics_hidden=spec.dynamics_hidden,
            encoder_dynamics_hidden=spec.encoder_dynamics_hidden,
            decoder_hidden=tuple(spec.decoder_hidden),
            z0_hidden=tuple(spec.z0_hidden),
            activation=spec.activation,
            obs_std=spec.obs_std,
            method=s.method,
            grad=s.grad,
            rtol=s.rtol,
            atol=s.atol,
            step_size=s.step_size,
            encoder_method=spec.encoder_method,
            encoder_step_size=spec.encoder_step_size,
            encoder_cell=spec.encoder_cell,
            init=spec.init,
            solver_options=options,
        )
    return model.to(device=device, dtype=dtype)


def ode_modules(model: nn.Module) -> list[nn.Module]:
    """The right-hand side whose evaluations are counted: the latent ODE's, or the ODE-RNN's."""
    if isinstance(model, LatentODE):
        return [model.dynamics]
    if isinstance(model, ODERNN):
        return [model.core.dynamics]
    return []


# --------------------------------------------------------------------------- scoring


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: (v if k == "times" else v.to(device)) for k, v in batch.items()}


@torch.no_grad()
def score(
    model: nn.Module,
    dataset: IrregularDataset,
    *,
    device: torch.device | str = "cpu",
    seed: int = TEST_SEED,
    batch_size: int = EVAL_BATCH,
    samples: int = 0,
) -> float:
    """MSE of the predictions over the scored entries of ``dataset``'s windows.

    ``samples = 0``: ``model.predict``, the latent ODE from the posterior mean of
    ``z0``; ``samples = S``: ``model.sample_predict`` with ``S`` draws of ``z0``, the
    squared errors averaged over them (the reference's scoring). The masks and the
    draws come from generators seeded by ``seed``, so the score is the same on every
    call. The MSE is in the dataset's (normalised) units, summed in float64.
    """
    g = torch.Generator().manual_seed(seed)
    sq, count = 0.0, 0
    with torch.random.fork_rng(devices=[] if torch.device(device).type == "cpu" else None):
        torch.manual_seed(seed)
        for batch in dataset.batches(batch_size, shuffle=False, generator=g):
            b = to_device(batch, torch.device(device))
            if samples:
                pred = model.sample_predict(b["times"], b["values"], b["encoder_mask"], samples)
            else:
                pred = model.predict(b["times"], b["values"], b["encoder_mask"]).unsqueeze(0)
            err = (pred - b["values"])[:, b["target_mask"]]
            sq += err.double().square().sum().item() / pred.shape[0]
            count += err[0].numel()
    return sq / max(count, 1)


def score_all(
    model: nn.Module, sets: dict[str, IrregularDataset], device, samples: int = 3
) -> dict[str, float]:
    """Test MSE from the posterior mean (``test_mse``, also ``test_mse_mean``) and from
    ``samples`` draws of ``z0`` (``test_mse_sampled``, the reference's scoring), and
    the extrapolation MSE (posterior mean) for the extrapolation task."""
    model.eval()
    mean = score(model, sets["test"], device=device)
    out = {"test_mse": mean, "test_mse_mean": mean}
    out["test_mse_sampled"] = score(model, sets["test"], device=device, samples=samples)
    if "test_extrapolation" in sets:
        out["test_extrapolation_mse"] = score(model, sets["test_extrapolation"], device=device)
    model.train()
    return out
