"""The fit loop for sequence models (``model.latent``): the latent ODE, the
ODE-RNN and the GRU baseline of :mod:`physode.models.latent`, trained on
irregularly sampled windows of a trajectory file as in Rubanova et al. (2019).

``physode fit CONFIG.yaml`` comes here when the config has ``model.latent``
(see docs/fitting.md and docs/latent.md). The protocol, from ``task``:

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

The run directory is the one ``physode fit`` writes for any model::

    config.yaml          the resolved config
    metrics.csv          one row per epoch: loss, train MSE, KL weight, KL,
                         evaluations of the ODE, seconds, learning rate, test MSE
                         (on the epochs task.eval_every selects)
    metrics.json         test MSE (interpolation; and extrapolation for that task),
                         train MSE, epochs, seconds, sizes of the split
    normalization.json   the per-feature minimum and divisor of the training data
    checkpoints/         last.pt and best.pt (lowest train MSE), written atomically,
                         readable with torch.load(weights_only=True)
    predictions.nc       a few test windows, true and predicted, in the data's units

Resume: every epoch draws its batch order and its masks from a generator seeded
by ``(train.seed, epoch)`` and reseeds torch's global generator (the samples of
``z0``) the same way, so a resumed fit ends, bit for bit on the CPU, where an
uninterrupted one does.
"""

from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

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
from ..errors import SolverError
from ..models.latent import ODERNN, GRUBaseline, LatentODE, kl_annealing
from ..solvers import FIXED_STEP_METHODS
from .checkpoints import BEST, LAST, load_checkpoint, restore_training, save_checkpoint
from .config import Config, config_to_yaml, resolve_device, resolve_dtype
from .fit import FitError, FitResult, MetricsCSV, make_optimizer, make_schedule, prepare_run_dir
from .outputs import predictions_dataset, write_predictions
from .problem import FitSetupError, ensure_data_file, observed_columns, read_selected
from .progress import Progress
from .report import write_json

__all__ = [
    "EVAL_BATCH",
    "TEST_SEED",
    "SequenceData",
    "build_sequence_model",
    "fit_sequence",
    "load_sequence_data",
    "restore_sequence",
    "score",
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
    train, stats = normalize_minmax(state[train_rows].astype(np.float64))
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
        if method in FIXED_STEP_METHODS:
            grad = "direct"  # the same gradient of the same fixed steps, computed cheapest
        elif s.grad == "mali" and method != "alf":
            grad = "aca"
        else:
            grad = s.grad
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
            solver_options=options,
        )
    return model.to(device=device, dtype=dtype)


def _ode_modules(model: nn.Module) -> list[nn.Module]:
    """The right-hand side whose evaluations are counted: the latent ODE's, or the ODE-RNN's."""
    if isinstance(model, LatentODE):
        return [model.dynamics]
    if isinstance(model, ODERNN):
        return [model.core.dynamics]
    return []


class _Evaluations:
    """Counts calls of the ODE right-hand side, during the loss (``fwd``) and the
    backward pass (``bwd``: replays and adjoint solves)."""

    def __init__(self, modules: list[nn.Module]) -> None:
        self.phase: str | None = None
        self.counts = {"fwd": 0, "bwd": 0}
        for m in modules:
            m.register_forward_hook(self._hook)

    def _hook(self, module: nn.Module, args: Any, output: Any) -> None:
        if self.phase is not None:
            self.counts[self.phase] += 1


# --------------------------------------------------------------------------- scoring


def _to(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: (v if k == "times" else v.to(device)) for k, v in batch.items()}


@torch.no_grad()
def score(
    model: nn.Module,
    dataset: IrregularDataset,
    *,
    device: torch.device | str = "cpu",
    seed: int = TEST_SEED,
    batch_size: int = EVAL_BATCH,
) -> float:
    """MSE of ``model.predict`` over the scored entries of ``dataset``'s windows.

    The masks come from a generator seeded by ``seed``, so the score is the
    same on every call. The latent ODE predicts from the posterior mean of
    ``z0``. The MSE is in the dataset's (normalised) units, summed in float64.
    """
    g = torch.Generator().manual_seed(seed)
    sq, count = 0.0, 0
    for batch in dataset.batches(batch_size, shuffle=False, generator=g):
        b = _to(batch, torch.device(device))
        pred = model.predict(b["times"], b["values"], b["encoder_mask"])
        err = (pred - b["values"])[b["target_mask"]]
        sq += err.double().square().sum().item()
        count += err.numel()
    return sq / max(count, 1)


# --------------------------------------------------------------------------- the loop


def _epoch_seed(seed: int, epoch: int) -> int:
    # The same derivation as the batch order of the three-body fit.
    return seed * 100_003 + epoch


def _train_step(model, optimizer, batch, config: Config, kl_weight: float, counter, total) -> float:
    """One optimiser step on ``batch``; adds to the epoch's ``total``."""
    last: dict[str, Any] = {}

    def closure():
        optimizer.zero_grad(set_to_none=True)
        counter.phase = "fwd"
        loss, info = model.loss(
            batch["times"],
            batch["values"],
            batch["target_mask"],
            obs_times_mask=batch["encoder_mask"],
            kl_weight=kl_weight,
            n_samples=config.task.n_samples,
        )
        if not torch.isfinite(loss):
            counter.phase = None
            last["loss"], last["info"] = loss.detach(), info
            return loss
        counter.phase = "bwd"
        loss.backward()
        counter.phase = None
        last["loss"], last["info"] = loss.detach(), info
        return loss

    if isinstance(optimizer, torch.optim.LBFGS):
        optimizer.step(closure)
    else:
        loss = closure()
        if torch.isfinite(loss):
            optimizer.step()
    value = last["loss"].item()
    rows = batch["values"].shape[0]
    info = last["info"]
    total["loss"] += value * rows
    total["mse"] += info["mse"].item() * rows
    total["kl"] += info["kl"].item() * rows
    total["likelihood"] += info["likelihood"].item() * rows
    total["rows"] += rows
    return value


def _write_predictions(
    config: Config, model: nn.Module, data: SequenceData, sets, device, run_dir: Path
) -> Path | None:
    """``predictions.nc``: the first ``task.n_predictions`` test windows of the task,
    true and predicted, in the data's units (times relative to each window's start)."""
    n = min(config.task.n_predictions, int(data.test.shape[0]))
    dataset = sets.get("test_extrapolation", sets["test"])
    if n == 0 or dataset.window < 2:
        return None
    g = torch.Generator().manual_seed(TEST_SEED)
    batch = next(iter(dataset.batches(n, shuffle=False, generator=g)))
    b = _to(batch, device)
    with torch.no_grad():
        pred = model.predict(b["times"], b["values"], b["encoder_mask"])
    times = batch["times"].numpy()
    if dataset.task == "extrapolation":
        first = dataset.window // 3
        fit_end = 0.5 * (times[first - 1] + times[first])
    else:
        fit_end = float(times[-1])
    stats = data.stats
    s = config.solver
    ds = predictions_dataset(
        times,
        stats.invert(batch["values"].double().numpy()),
        stats.invert(pred.detach().cpu().double().numpy()),
        data.variables,
        fit_end=fit_end,
        time_units=data.time_units,
        state_units=data.state_units,
        config_yaml=config_to_yaml(config),
        mask=batch["encoder_mask"].numpy(),
        trajectory_ids=[data.test_ids[i] for i in batch["indices"].tolist()],
        attrs={
            "model": config.model.latent.kind,
            "task": dataset.task,
            "observed_fraction": config.task.observed_fraction,
            "window_start": batch["starts"].numpy().astype(np.int64),
            "time_origin": "time is relative to each window's start (window_start, "
            "an index into the file's times)",
            "mask_meaning": "entries the model read (the encoder's observations)",
            "method": s.method,
            "grad": s.grad,
            "rtol": s.rtol,
            "atol": s.atol,
        },
    )
    return write_predictions(ds, run_dir / "predictions.nc")


def fit_sequence(
    config: Config,
    run_dir: Path | None = None,
    *,
    resume: bool = False,
    stream: TextIO | None = sys.stderr,
) -> FitResult:
    """Fit the sequence model of ``config`` (``model.latent``), writing the run directory.

    Arguments as for :func:`~physode.training.fit.fit`.

    Returns:
        A :class:`~physode.training.fit.FitResult`; ``parameters`` is empty (no
        physical parameters) and ``summary`` is what ``metrics.json`` holds.

    Raises:
        FitError: the solver failed, the loss became non-finite, or the run
            directory does not suit ``resume``.
        FitSetupError: the data do not suit the config.
    """
    if config.model.latent is None or config.task is None:
        raise ValueError("config: fit_sequence needs model.latent (and its task section)")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise FitError(
            "model.latent: a sequence model trains in one process; run it without --nproc "
            "(or torchrun)"
        )
    dtype, device = resolve_dtype(config.train.dtype), resolve_device(config.train.device)
    run_dir = prepare_run_dir(config, run_dir, resume)
    (run_dir / "config.yaml").write_text(config_to_yaml(config))
    train_cfg, task = config.train, config.task
    torch.manual_seed(train_cfg.seed)
    data = load_sequence_data(config, dtype)
    sets = data.datasets(config)
    model = build_sequence_model(config, len(data.variables), dtype, device)
    counter = _Evaluations(_ode_modules(model))
    optimizer = make_optimizer(config, [p for p in model.parameters() if p.requires_grad])
    schedule = make_schedule(config, optimizer)
    start_epoch, best, seconds = 0, math.inf, 0.0
    progress = Progress(train_cfg.epochs, stream, train_cfg.log_every)
    if resume:
        ckpt = load_checkpoint(run_dir / "checkpoints" / LAST, device)
        restore_training(ckpt, "model", model, optimizer, schedule)
        start_epoch, best, seconds = ckpt["epoch"], ckpt["best_mse"], ckpt["seconds"]
        progress.message(f"resuming {run_dir} after epoch {start_epoch}")
    write_json(
        run_dir / "normalization.json",
        {
            "formula": "(x - minimum) / scale, per variable, over the training trajectories",
            "variables": data.variables,
            "minimum": data.stats.minimum.tolist(),
            "scale": data.stats.scale.tolist(),
        },
    )
    extrapolating = task.name == "extrapolation"
    fields = [
        "epoch",
        "loss",
        "train_mse",
        "kl_weight",
        "kl",
        "likelihood",
        "n_f_evals",
        "n_f_evals_backward",
        "seconds",
        "lr",
        "test_mse",
    ]
    if extrapolating:
        fields.append("test_extrapolation_mse")
    metrics = MetricsCSV(run_dir / "metrics.csv", fields, start_epoch)
    normalization = {
        "minimum": torch.as_tensor(data.stats.minimum),
        "scale": torch.as_tensor(data.stats.scale),
    }
    batch_size = train_cfg.batch_size or int(data.train.shape[0])
    loss_value, train_mse, scored = math.nan, math.nan, {}
    for epoch in range(start_epoch + 1, train_cfg.epochs + 1):
        tic = time.perf_counter()
        kl_weight = kl_annealing(epoch - 1, warmup=task.kl_warmup, rate=task.kl_rate)
        g = torch.Generator().manual_seed(_epoch_seed(train_cfg.seed, epoch))
        torch.manual_seed(_epoch_seed(train_cfg.seed, epoch))  # the samples of z0
        total = dict.fromkeys(("loss", "mse", "kl", "likelihood", "rows"), 0.0)
        counter.counts = {"fwd": 0, "bwd": 0}
        model.train()
        try:
            for batch in sets["train"].batches(batch_size, generator=g):
                loss = _train_step(
                    model, optimizer, _to(batch, device), config, kl_weight, counter, total
                )
                if not math.isfinite(loss):
                    raise FitError(
                        f"epoch {epoch}: the loss is {loss}; lower train.lr or check the "
                        f"data. The last good checkpoint is kept in {run_dir / 'checkpoints'}"
                    )
        except SolverError as exc:
            raise FitError(
                f"epoch {epoch}: the solver failed: {exc}. The last good checkpoint (epoch "
                f"{epoch - 1}) is kept in {run_dir / 'checkpoints'}; fix the config and "
                "continue with --resume"
            ) from exc
        finally:
            counter.phase = None
        if schedule is not None:
            schedule.step()
        elapsed = time.perf_counter() - tic
        seconds += elapsed
        rows = max(total["rows"], 1.0)
        loss_value, train_mse = total["loss"] / rows, total["mse"] / rows
        row = {
            "epoch": epoch,
            "loss": loss_value,
            "train_mse": train_mse,
            "kl_weight": kl_weight,
            "kl": total["kl"] / rows,
            "likelihood": total["likelihood"] / rows,
            "n_f_evals": counter.counts["fwd"],
            "n_f_evals_backward": counter.counts["bwd"],
            "seconds": elapsed,
            "lr": optimizer.param_groups[0]["lr"],
        }
        shown = {"mse": train_mse, "kl_weight": kl_weight}
        scored = {}
        if task.eval_every is not None and (
            epoch % task.eval_every == 0 or epoch == train_cfg.epochs
        ):
            scored = score_all(model, sets, device)
            row.update(scored)
            shown.update(scored)
        metrics.add(row)
        progress.epoch(epoch, row, shown)
        state = {
            "epoch": epoch,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "schedule": schedule.state_dict() if schedule is not None else {},
            "best_mse": min(best, train_mse),
            "seconds": seconds,
            "kind": config.model.latent.kind,
            "variables": list(data.variables),
            "normalization": normalization,
        }
        if train_mse < best:
            best = train_mse
            save_checkpoint(state, run_dir / "checkpoints" / BEST)
        if epoch % train_cfg.checkpoint_every == 0 or epoch == train_cfg.epochs:
            save_checkpoint(state, run_dir / "checkpoints" / LAST)
    if not scored:
        scored = score_all(model, sets, device)
    ckpt = load_checkpoint(run_dir / "checkpoints" / LAST, device)
    summary: dict[str, Any] = {
        "model": config.model.latent.kind,
        "task": task.name,
        "observed_fraction": task.observed_fraction,
        "window": sets["train"].window,
        "test_mse": scored["test_mse"],
    }
    if extrapolating:
        summary["extrapolation_mse"] = scored["test_extrapolation_mse"]
    summary.update(
        {
            "train_mse": train_mse if math.isfinite(train_mse) else None,
            "mse_units": "normalised: (x - min) / max per variable over the training data",
            "epochs": train_cfg.epochs,
            "seconds": ckpt["seconds"],
            "n_train": int(data.train.shape[0]),
            "n_test": int(data.test.shape[0]),
            "n_parameters": sum(p.numel() for p in model.parameters()),
            "solver": {
                "method": config.solver.method,
                "grad": config.solver.grad,
                "rtol": config.solver.rtol,
                "atol": config.solver.atol,
            },
        }
    )
    write_json(run_dir / "metrics.json", summary)
    _write_predictions(config, model, data, sets, device, run_dir)
    message = f"test MSE ({task.name} windows, {task.observed_fraction:g} observed): "
    message += f"{scored['test_mse']:.4g}"
    if extrapolating:
        message += f"; extrapolation: {scored['test_extrapolation_mse']:.4g}"
    progress.message(message)
    progress.message(f"wrote {run_dir}")
    return FitResult(run_dir, train_cfg.epochs, loss_value, {}, summary)


def score_all(model: nn.Module, sets: dict[str, IrregularDataset], device) -> dict[str, float]:
    """Test MSE (and extrapolation MSE for the extrapolation task) of ``model``."""
    model.eval()
    out = {"test_mse": score(model, sets["test"], device=device)}
    if "test_extrapolation" in sets:
        out["test_extrapolation_mse"] = score(model, sets["test_extrapolation"], device=device)
    model.train()
    return out


def restore_sequence(
    run_dir: str | Path,
    config: Config | None = None,
    which: str = LAST,
    device: str | None = None,
) -> tuple[nn.Module, SequenceData]:
    """The trained sequence model of a run directory, with its data: ``(model, data)``.

    ``config`` defaults to the run's ``config.yaml``; ``which`` is ``last.pt``
    or ``best.pt``.
    """
    from .config import load_config

    run_dir = Path(run_dir)
    config = config or load_config(run_dir / "config.yaml")
    dtype = resolve_dtype(config.train.dtype)
    dev = resolve_device(device or config.train.device)
    data = load_sequence_data(config, dtype)
    model = build_sequence_model(config, len(data.variables), dtype, dev)
    ckpt = load_checkpoint(run_dir / "checkpoints" / which, dev)
    model.load_state_dict(ckpt["model"])
    return model, data
