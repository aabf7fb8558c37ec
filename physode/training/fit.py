"""The fit loop behind ``physode fit``: epochs over mini-batches of trajectories,
checkpoints, per-epoch metrics, resume, and the outputs at the end.

A run directory holds::

    config.yaml        the resolved config
    metrics.csv        one row per epoch: loss, fit MSE, evaluations, seconds, parameters
    metrics.json       the summary at the end: fit and extrapolation MSE, epochs, seconds
    params.json        the learned physical parameters
    checkpoints/       last.pt and best.pt (lowest epoch loss), written atomically
    predictions.nc     true and predicted trajectories over all times (xarray, h5netcdf)
    plots/             the extrapolation figures
"""

from __future__ import annotations

import csv
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import torch

from ..errors import SolverError
from .checkpoints import BEST, LAST, load_checkpoint, restore_training, save_checkpoint
from .config import Config, config_to_yaml, resolve_device, resolve_dtype, resolve_run_dir
from .distributed import Distributed, join, leave, unwrap, wrap
from .problem import TrainedSystem, build_model, load_problem, solve_batch
from .progress import Progress
from .report import write_outputs


class FitError(RuntimeError):
    """A fit that cannot go on (solver failure, non-finite loss, bad run directory)."""


@dataclass
class FitResult:
    run_dir: Path
    epochs: int
    final_loss: float
    parameters: dict
    summary: dict


def _flat_parameters(params: dict) -> dict[str, float]:
    flat: dict[str, float] = {}
    for name, value in params.items():
        if isinstance(value, list):
            for i, v in enumerate(torch.as_tensor(value).reshape(-1).tolist()):
                flat[f"{name}_{i}"] = v
        else:
            flat[name] = value
    return flat


def make_optimizer(config: Config, params) -> torch.optim.Optimizer:
    train = config.train
    if train.optimizer == "adam":
        return torch.optim.Adam(params, lr=train.lr)
    if train.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=train.lr)
    if train.optimizer == "sgd":
        return torch.optim.SGD(params, lr=train.lr, momentum=0.9)
    # torch's default tolerances stop L-BFGS once the loss changes by less than 1e-9 in
    # absolute terms, which depends on the data's units and ends noise-free physics fits
    # early (three-body: masses to 1e-5 instead of 1e-6); these stop it only at round-off.
    return torch.optim.LBFGS(
        params,
        lr=train.lr,
        line_search_fn="strong_wolfe",
        tolerance_grad=1e-12,
        tolerance_change=1e-15,
    )


def make_schedule(config: Config, optimizer):
    s = config.train.schedule
    if s is None:
        return None
    if s.name == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(
            optimizer, T_max=config.train.epochs, eta_min=s.eta_min
        )
    if s.name == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=s.step_size, gamma=s.gamma)
    return torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=s.gamma)


def batch_loss(config: Config, pred, true, mask) -> torch.Tensor:
    diff = (pred - true)[mask]
    if diff.numel() == 0:
        return pred.sum() * 0.0
    return diff.square().mean() if config.train.loss == "mse" else diff.abs().mean()


def _batches(n: int, batch_size: int | None, seed: int, epoch: int) -> list[torch.Tensor]:
    """The global batches of an epoch. The order depends on (seed, epoch) only, as in
    ``DistributedSampler``, so a resumed run and any number of ranks see the same batches."""
    if batch_size is None or batch_size >= n:
        return [torch.arange(n)]
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed + epoch))
    return list(order.split(batch_size))


def _train_step(config, system, problem, optimizer, rows, total: dict, ctx: Distributed) -> float:
    """One optimiser step on the global batch ``rows`` (this rank solves its share);
    adds this rank's part to the epoch's ``total``. Returns the global batch's loss."""
    mine = ctx.shard(rows)
    # DDP averages gradients over ranks: weighting by this rank's share of the batch
    # makes that average the gradient of the global batch's loss. A rank whose share
    # is empty still takes part in the step (DDP needs every rank), with weight 0.
    weight = len(mine) * ctx.world / len(rows)
    if len(mine) == 0:
        mine = rows[:1]
    true = problem.state[mine, : problem.n_fit]
    mask = problem.mask[mine, : problem.n_fit]
    last = {}

    def closure():
        optimizer.zero_grad(set_to_none=True)
        try:
            pred, stats = solve_batch(config, system, problem, mine, problem.fit_time)
            failure = None
        except SolverError as exc:
            if not ctx.active:
                raise
            failure = f"rank {ctx.rank}: {exc}"
        # Every rank learns of a failure before any enters backward's all-reduce.
        if not ctx.all_ok(failure is None):
            raise _RankFailure("; ".join(f for f in ctx.gather(failure) if f))
        model = unwrap(system).model
        loss = batch_loss(config, pred, true, mask) + model.regularization(None, pred)
        (loss * weight).backward()
        total["fwd"] += stats.n_f_evals
        total["bwd"] += stats.n_f_evals_backward
        last["loss"], last["pred"] = loss.detach(), pred.detach()
        # The global batch's loss, the same on every rank (L-BFGS's line search uses it).
        last["global"] = ctx.sum([loss.item() * weight])[0] / ctx.world
        return last["global"] if ctx.active else loss

    optimizer.step(closure)
    if weight > 0:
        err = (last["pred"] - true)[mask]
        total["loss"] += last["loss"].item() * len(mine)
        total["sq"] += err.square().sum().item()
        total["count"] += err.numel()
    return last["global"]


class _RankFailure(RuntimeError):
    """A solve failed on some rank (the message names it)."""


class MetricsCSV:
    """metrics.csv, one row per epoch; on resume, rows after the checkpoint are dropped."""

    def __init__(self, path: Path, fields: list[str], keep_until: int) -> None:
        self.path, self.fields = path, fields
        rows = []
        if keep_until > 0 and path.exists():
            with open(path, newline="") as fh:
                for row in csv.DictReader(fh):
                    try:
                        if int(row["epoch"]) <= keep_until and None not in row.values():
                            rows.append(row)
                    except (KeyError, TypeError, ValueError):
                        continue  # a row cut short by a kill
        with open(path, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fields)
            writer.writeheader()
            writer.writerows(rows)

    def add(self, row: dict) -> None:
        with open(self.path, "a", newline="") as fh:
            csv.DictWriter(fh, self.fields).writerow(row)
            fh.flush()
            os.fsync(fh.fileno())


def prepare_run_dir(config: Config, run_dir: Path | None, resume: bool) -> Path:
    run_dir = Path(run_dir) if run_dir is not None else resolve_run_dir(config)
    last = run_dir / "checkpoints" / LAST
    if resume:
        if not last.exists():
            raise FitError(f"--resume: {run_dir} holds no checkpoint ({last} is missing)")
    elif last.exists():
        raise FitError(
            f"{run_dir} already holds a fit (checkpoints/{LAST}); pass --resume to continue "
            "it, or choose another run directory with -o"
        )
    (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    return run_dir


def fit(
    config: Config,
    run_dir: Path | None = None,
    *,
    resume: bool = False,
    stream: TextIO | None = sys.stderr,
) -> FitResult:
    """Fit the model of ``config`` to its data, writing the run directory as it goes.

    Args:
        config: a validated config (see :func:`~physode.training.load_config`).
        run_dir: where to write; default ``output.dir`` or a new timestamped folder.
        resume: continue from ``run_dir/checkpoints/last.pt``; the result is the
            same, bit for bit on the CPU, as a run that was never interrupted.
        stream: where progress goes (``None``: silent).

    Raises:
        FitError: the solver failed (the message gives the epoch and the solver's
            reason; the last good checkpoint is kept), the loss became non-finite,
            or the run directory does not suit ``resume``.
    """
    if config.model.latent is not None:  # a sequence model: physode/training/sequence.py
        from .sequence import fit_sequence

        return fit_sequence(config, run_dir, resume=resume, stream=stream)
    ctx = join(config.train.device)
    try:
        result = _fit(config, run_dir, resume, stream, ctx)
        ctx.barrier()  # no rank tears the group down while another still uses it
        return result
    finally:
        leave(ctx)


def _fit(config: Config, run_dir, resume: bool, stream, ctx: Distributed) -> FitResult:
    dtype, device = resolve_dtype(config.train.dtype), ctx.device
    # Rank 0 chooses the run directory (a timestamp could differ between ranks) and
    # alone writes to it.
    if ctx.is_main:
        run_dir = prepare_run_dir(config, run_dir, resume)
    run_dir = ctx.broadcast(run_dir)
    torch.manual_seed(config.train.seed)
    if not ctx.is_main:
        ctx.barrier()  # rank 0 may be simulating the data file
    problem = load_problem(config, dtype, device)
    if ctx.is_main:
        ctx.barrier()
    # A window taken from the data file is written into the run's config, so the run
    # directory says what was fitted even if the file changes later.
    data = config.data.model_copy(update={"fit_window": problem.fit_window})
    config = config.model_copy(update={"data": data})
    if ctx.is_main:
        (run_dir / "config.yaml").write_text(config_to_yaml(config))
    model = build_model(config.model, problem.variables, dtype, device)
    system = TrainedSystem(model, problem.state[:, 0] if config.train.learn_initial_state else None)
    optimizer = make_optimizer(config, [p for p in system.parameters() if p.requires_grad])
    schedule = make_schedule(config, optimizer)
    start_epoch, best, seconds = 0, math.inf, 0.0
    stream = stream if ctx.is_main else None
    progress = Progress(config.train.epochs, stream, config.train.log_every)
    if resume:
        ckpt = load_checkpoint(run_dir / "checkpoints" / LAST, device)
        restore_training(ckpt, "system", system, optimizer, schedule)
        start_epoch, best, seconds = ckpt["epoch"], ckpt["best_loss"], ckpt["seconds"]
        progress.message(f"resuming {run_dir} after epoch {start_epoch}")
    trained = wrap(system, ctx)
    params_now = model.physical_parameters()
    fields = ["epoch", "loss", "fit_mse", "n_f_evals", "n_f_evals_backward", "seconds", "lr"]
    fields += list(_flat_parameters(params_now))
    if ctx.is_main:
        metrics = MetricsCSV(run_dir / "metrics.csv", fields, start_epoch)
    n = problem.state.shape[0]
    loss_value = math.nan
    for epoch in range(start_epoch + 1, config.train.epochs + 1):
        tic = time.perf_counter()
        total = {"loss": 0.0, "sq": 0.0, "count": 0, "fwd": 0, "bwd": 0}
        try:
            for rows in _batches(n, config.train.batch_size, config.train.seed, epoch):
                loss = _train_step(config, trained, problem, optimizer, rows.to(device), total, ctx)
                if not math.isfinite(loss):
                    raise FitError(
                        f"epoch {epoch}: the loss is {loss}; lower train.lr or check the "
                        f"data. The last good checkpoint is kept in {run_dir / 'checkpoints'}"
                    )
        except (SolverError, _RankFailure) as exc:
            if isinstance(exc, _RankFailure):
                ctx.barrier()  # every rank is here: leave together
            raise FitError(
                f"epoch {epoch}: the solver failed: {exc}. The last good checkpoint (epoch "
                f"{epoch - 1}) is kept in {run_dir / 'checkpoints'}; fix the config and "
                "continue with --resume"
            ) from exc
        if schedule is not None:
            schedule.step()
        seconds += time.perf_counter() - tic
        loss_sum, sq, count, fwd, bwd = ctx.sum(
            [total["loss"], total["sq"], total["count"], total["fwd"], total["bwd"]]
        )
        loss_value = loss_sum / n
        params_now = model.physical_parameters()
        if not ctx.is_main:
            continue
        row = {
            "epoch": epoch,
            "loss": loss_value,
            "fit_mse": sq / max(count, 1),
            "n_f_evals": int(fwd),
            "n_f_evals_backward": int(bwd),
            "seconds": time.perf_counter() - tic,
            "lr": optimizer.param_groups[0]["lr"],
            **_flat_parameters(params_now),
        }
        metrics.add(row)
        progress.epoch(epoch, row, params_now)
        state = {
            "epoch": epoch,
            "system": system.state_dict(),
            "optimizer": optimizer.state_dict(),
            "schedule": schedule.state_dict() if schedule is not None else {},
            "best_loss": min(best, loss_value),
            "seconds": seconds,
            "world_size": ctx.world,
        }
        if loss_value < best:
            best = loss_value
            save_checkpoint(state, run_dir / "checkpoints" / BEST)
        if epoch % config.train.checkpoint_every == 0 or epoch == config.train.epochs:
            save_checkpoint(state, run_dir / "checkpoints" / LAST)
    summary = {}
    if ctx.is_main:
        summary = write_outputs(config, system, problem, run_dir, seconds=seconds)
        progress.message(f"wrote {run_dir}")
    return FitResult(run_dir, config.train.epochs, loss_value, params_now, summary)


def restore(run_dir: Path, config: Config, which: str = LAST, device: str | None = None):
    """The trained system of a run directory, with its problem: ``(system, problem)``."""
    dtype = resolve_dtype(config.train.dtype)
    dev = resolve_device(device or config.train.device)
    problem = load_problem(config, dtype, dev)
    model = build_model(config.model, problem.variables, dtype, dev)
    system = TrainedSystem(model, problem.state[:, 0] if config.train.learn_initial_state else None)
    ckpt = load_checkpoint(Path(run_dir) / "checkpoints" / which, dev)
    system.load_state_dict(ckpt["system"])
    return system, problem
