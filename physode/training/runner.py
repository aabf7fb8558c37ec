"""The one fit loop behind ``physode fit`` and :func:`physode.fit`, for every task.

The runner owns what every fit shares: the run directory, the optimiser and its
schedule, the epochs and their batches, checkpoints and resume, ``metrics.csv``,
progress, several processes (DistributedDataParallel) and the stopping rule. A
:class:`~physode.training.task.Task` supplies the rest: the data and the model,
one step's loss, an epoch's metrics and the outputs at the end.

A run directory holds::

    config.yaml        the config as run (defaults, the data's window, the model's arguments)
    metrics.csv        one row per epoch: epoch, the task's columns, evaluations, seconds, lr
    metrics.json       the summary at the end: the task's scores, epochs, seconds, stopping
    checkpoints/       last.pt and best.pt (lowest ``task.monitor``), written atomically
    ...                the task's outputs (predictions.nc, plots/, params.json, ...)

Resume: every epoch seeds its batch order from ``(train.seed, epoch)`` and
reseeds torch's global generator the same way; the optimiser, schedule and
stopping states are in the checkpoint, so a resumed fit ends, bit for bit on
the CPU, where an uninterrupted one does.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

import torch
from torch import nn

from .._atomic import write_json, write_text
from ..errors import SolverError
from .checkpoints import BEST, LAST, PREVIOUS, CheckpointError, load_with_fallback, save_checkpoint
from .config import (
    Config,
    ConfigError,
    config_to_yaml,
    load_config,
    resolve_dtype,
    resolve_run_dir,
)
from .distributed import Distributed, join, launched_world, leave, wrap
from .evaluations import EvaluationCounter
from .interrupts import FitInterrupted, Interrupts
from .progress import Progress
from .resume import check_resume
from .run_dir import RunDirectory, RunDirectoryError, os_reason
from .stopping import StopOnPlateau
from .task import Task
from .tasks import make_task

__all__ = [
    "FitError",
    "FitResult",
    "MetricsCSV",
    "fit",
    "make_optimizer",
    "make_schedule",
]


class FitError(RuntimeError):
    """A fit that cannot go on (solver failure, non-finite loss, bad run directory)."""


class _RankFailure(RuntimeError):
    """A solve failed on some rank (the message names it)."""


@dataclass
class FitResult:
    """What a fit returns.

    Attributes:
        run_dir: the run directory.
        epochs: the epochs run (fewer than ``train.epochs`` when ``train.stop`` ended the fit).
        final_loss: the last epoch's loss.
        parameters: the physical parameters by name, plain numbers (``params.json``).
        metrics: the summary, as ``metrics.json`` holds it.
    """

    run_dir: Path
    epochs: int
    final_loss: float
    parameters: dict[str, Any]
    metrics: dict[str, Any]


def make_optimizer(config: Config, params) -> torch.optim.Optimizer:
    train = config.train
    if train.optimizer == "adam":
        return torch.optim.Adam(params, lr=train.lr)
    if train.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=train.lr)
    if train.optimizer == "adamax":
        return torch.optim.Adamax(params, lr=train.lr)
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
    lowest = s.floor / config.train.lr
    # The k-th rate (k epochs or optimiser steps in) is lr * max(gamma^k, floor / lr).
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda k: max(s.gamma**k, lowest), last_epoch=-1
    )


def schedule_every(config: Config) -> str:
    """``"epoch"`` or ``"step"``: when the schedule advances."""
    return getattr(config.train.schedule, "every", "epoch")


def _digest(path: Path) -> str:
    """SHA-256 of a file's content, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(2**20), b""):
            h.update(block)
    return h.hexdigest()


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of an epoch's batch order and of torch's global generator in it."""
    return seed * 100_003 + epoch


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
            # csv writes repr(float): every digit of a float64 survives.
            csv.DictWriter(fh, self.fields).writerow(row)
            fh.flush()
            os.fsync(fh.fileno())


def fit(
    config: Config,
    run_dir: Path | None = None,
    *,
    resume: bool = False,
    stream: TextIO | None = sys.stderr,
    model: nn.Module | None = None,
) -> FitResult:
    """Fit what ``config`` describes, writing the run directory as it goes.

    Args:
        config: a validated config (see :func:`~physode.training.load_config`).
        run_dir: where to write; default ``output.dir`` or a new timestamped folder.
        resume: continue from ``run_dir/checkpoints/last.pt``; the result is the
            same, bit for bit on the CPU, as a run that was never interrupted.
        stream: where progress goes (``None``: silent).
        model: a right-hand side given from Python (the config's ``model`` section
            then only records its class).

    Raises:
        FitError: the solver failed (the message gives the epoch and the solver's
            reason; the last good checkpoint is kept), the loss became non-finite,
            the run directory cannot be used (in use, holds other files, ...), a
            resume changes what it may not, or a write failed (the path and why).
        FitSetupError: the data do not suit the config or the model.
        FitInterrupted: SIGINT or SIGTERM (where the fit stood is in its attributes).
    """
    task = make_task(config, model)
    if task.single_process is not None and launched_world() > 1:
        raise FitError(task.single_process)
    ctx = join(config.train.device)
    try:
        with Interrupts().installed() as interrupts:
            result = _Runner(config, task, ctx, stream, interrupts).run(run_dir, resume)
        ctx.barrier()  # no rank tears the group down while another still uses it
        return result
    finally:
        leave(ctx)


class _Runner:
    def __init__(self, config: Config, task: Task, ctx: Distributed, stream, interrupts) -> None:
        self.config, self.task, self.ctx = config, task, ctx
        self.stream = stream if ctx.is_main else None
        self.interrupts = interrupts
        # What a checkpoint holds besides the module, optimiser and schedule states.
        self.state: dict[str, Any] = {"epoch": 0, "best": math.inf, "seconds": 0.0}
        self.state["loss"] = math.nan
        self.saved_epoch = 0

    def run(self, run_dir: Path | None, resume: bool) -> FitResult:
        """Lock the run directory (rank 0), fit, and release it; a set-up that fails
        leaves no folder it created."""
        ctx = self.ctx
        directory = None
        # Rank 0 chooses the run directory (a timestamp could differ between ranks) and
        # alone writes to it.
        if ctx.is_main:
            path = Path(run_dir) if run_dir is not None else resolve_run_dir(self.config)
            try:
                directory = RunDirectory.open(path, resume=resume)
            except RunDirectoryError as exc:
                raise FitError(str(exc)) from None
        self.run_dir = ctx.broadcast(directory.path if directory else None)
        try:
            return self._run(directory, resume)
        except FitInterrupted as exc:
            exc.run_dir, exc.epoch, exc.saved_epoch = (
                self.run_dir,
                self.state["epoch"],
                self.saved_epoch,
            )
            raise
        except OSError as exc:
            raise FitError(f"{os_reason(exc)}. {self._kept()}") from exc
        finally:
            if directory is not None:
                directory.release()

    def _kept(self) -> str:
        if not self.saved_epoch:
            return "No checkpoint was written"
        return (
            f"The last good checkpoint (epoch {self.saved_epoch}) is kept in "
            f"{self.run_dir / 'checkpoints'}"
        )

    def _run(self, directory: RunDirectory | None, resume: bool) -> FitResult:
        ctx, task, train = self.ctx, self.task, self.config.train
        torch.manual_seed(train.seed)
        if not ctx.is_main:
            ctx.barrier()  # rank 0 may be simulating the data file
        module = task.setup(ctx.device, resolve_dtype(train.dtype))
        if ctx.is_main:
            ctx.barrier()
        config = task.config_as_run()
        # The data file's content, so that a resume on another file of the same name is refused.
        self.state["data_sha256"] = _digest(Path(config.data.path)) if ctx.is_main else None
        self.optimizer = make_optimizer(
            self.config, [p for p in module.parameters() if p.requires_grad]
        )
        self.schedule = make_schedule(self.config, self.optimizer)
        stop = StopOnPlateau(train.stop)
        if resume:
            ckpt, used, changes = self._resume_point(config)
            self._restore(ckpt, module, stop)
        # Nothing in the run directory changes before here, where the fit is known to start.
        if ctx.is_main:
            directory.start()
            if not resume or changes:
                write_text(self.run_dir / "config.yaml", config_to_yaml(config))
            if resume:
                self._record_resume(ckpt["epoch"], used, changes)
        self.counter = EvaluationCounter(task.ode_modules())
        progress = Progress(train.epochs, self.stream, train.log_every)
        for note in task.notes:
            progress.message(note)
        if resume:
            progress.message(f"resuming {self.run_dir} after epoch {self.state['epoch']}")
        trained = wrap(module, ctx)
        fields = ["epoch", *task.metric_fields(), "n_f_evals", "n_f_evals_backward"]
        fields += ["seconds", "lr"]
        if ctx.is_main:
            metrics = MetricsCSV(self.run_dir / "metrics.csv", fields, self.state["epoch"])
        state = self.state
        while state["epoch"] < train.epochs and not stop.stopped:
            epoch = state["epoch"] = state["epoch"] + 1
            tic = time.perf_counter()
            totals = self._epoch(trained, epoch)
            if self.schedule is not None and schedule_every(self.config) == "epoch":
                self.schedule.step()
            elapsed = time.perf_counter() - tic
            state["seconds"] += elapsed
            row = {
                "epoch": epoch,
                **task.epoch_metrics(totals, module),
                "n_f_evals": int(totals["n_f_evals"]),
                "n_f_evals_backward": int(totals["n_f_evals_backward"]),
                "seconds": elapsed,
                "lr": self.optimizer.param_groups[0]["lr"],
            }
            state["loss"] = row["loss"]
            stop.update(epoch, row["loss"])  # the same on every rank: the loss is global
            if not ctx.is_main:
                continue
            with self.interrupts.critical():
                metrics.add(row)
                self._checkpoint(module, stop, row[task.monitor])
            progress.epoch(epoch, row, task.progress_values(row, module))
            if stop.stopped:
                progress.message(f"stopped after epoch {epoch}: {stop.reason()}")
        self.counter.close()
        summary: dict[str, Any] = {}
        if ctx.is_main:
            summary = task.finish(module, self.run_dir)
            summary["epochs"], summary["seconds"] = state["epoch"], state["seconds"]
            summary["stopped_early"] = (
                {"epoch": stop.stopped_at, "reason": stop.reason()} if stop.stopped else None
            )
            write_json(self.run_dir / "metrics.json", summary)
            progress.message(f"wrote {self.run_dir}")
        parameters = task.parameters(module)
        return FitResult(self.run_dir, state["epoch"], state["loss"], parameters, summary)

    def _resume_point(self, config: Config) -> tuple[dict[str, Any], str, dict]:
        """The checkpoint to resume from, its file's name and the (safe) changes of the
        config, after checking that it changes only what a resume may change (rank 0
        decides; every rank hears it)."""
        ctx, folder = self.ctx, self.run_dir / "checkpoints"
        try:
            ckpt, note = load_with_fallback(folder, LAST, ctx.device)
        except CheckpointError as exc:
            raise FitError(f"--resume: {exc}") from None
        self.saved_epoch = ckpt["epoch"]
        refusal, changes = None, {}
        if ctx.is_main:
            try:
                recorded = load_config(self.run_dir / "config.yaml")
            except ConfigError as exc:
                refusal = f"--resume: the run's config cannot be read: {exc}"
            else:
                changes, refusal = check_resume(recorded, config, ckpt["epoch"])
                was = ckpt.get("data_sha256")
                if refusal is None and was is not None and was != self.state["data_sha256"]:
                    refusal = (
                        f"--resume: {config.data.path} is not the file the run was fitted to "
                        "(its content changed since); fit it in a new run directory (-o)"
                    )
        refusal = ctx.broadcast(refusal)
        if refusal is not None:
            raise FitError(refusal)
        if note is not None:
            self.task.notes.append(note)
        return ckpt, PREVIOUS if note is not None else LAST, changes

    def _record_resume(self, epoch: int, used: str, changes: dict) -> None:
        """``resumes.json``: each resume, from which checkpoint, with the changes it applied."""
        path = self.run_dir / "resumes.json"
        try:
            history = json.loads(path.read_text()) if path.exists() else []
        except (OSError, ValueError):
            history = []
        history.append(
            {
                "after_epoch": epoch,
                "from": used,
                "changes": {k: [a, b] for k, (a, b) in changes.items()},
                "at": datetime.now().isoformat(timespec="seconds"),
            }
        )
        write_text(path, json.dumps(history, indent=2) + "\n")

    def _restore(self, ckpt: dict[str, Any], module: nn.Module, stop: StopOnPlateau) -> None:
        try:
            module.load_state_dict(ckpt["model"])
            self.optimizer.load_state_dict(ckpt["optimizer"])
            if self.schedule is not None:
                self.schedule.load_state_dict(ckpt["schedule"])
            stop.load_state_dict(ckpt["stop"])
            self.state.update({k: ckpt[k] for k in ("epoch", "best", "seconds", "loss")})
        except (KeyError, RuntimeError, ValueError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise FitError(
                f"--resume: the checkpoint of {self.run_dir} does not fit this model and "
                f"optimiser: {first}"
            ) from None
        self.saved_epoch = self.state["epoch"]

    def _checkpoint(self, module: nn.Module, stop: StopOnPlateau, monitored: float) -> None:
        """``best.pt`` when the epoch's ``task.monitor`` is the lowest yet; ``last.pt``
        every ``train.checkpoint_every`` epochs and at the end."""
        train, state = self.config.train, self.state
        improved = monitored < state["best"]
        state["best"] = min(state["best"], monitored)
        ckpt = {
            **state,
            "model": module.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict() if self.schedule is not None else {},
            "stop": stop.state_dict(),
            "world_size": self.ctx.world,
            **self.task.checkpoint_extra(),
        }
        folder = self.run_dir / "checkpoints"
        if improved:
            save_checkpoint(ckpt, folder / BEST)
        epoch = state["epoch"]
        if epoch % train.checkpoint_every == 0 or epoch == train.epochs or stop.stopped:
            save_checkpoint(ckpt, folder / LAST, keep_previous=True)
            self.saved_epoch = epoch

    def _epoch(self, trained: nn.Module, epoch: int) -> dict[str, float]:
        """One epoch's optimiser steps; the totals of its steps, summed over the ranks."""
        seed = epoch_seed(self.config.train.seed, epoch)
        generator = torch.Generator().manual_seed(seed)
        torch.manual_seed(seed)  # whatever the task draws (samples of a latent state)
        self.task.begin_epoch(epoch)
        totals: dict[str, float] = {}
        try:
            for batch in self.task.batches(epoch, generator):
                loss = self._step(trained, batch, totals)
                if not math.isfinite(loss):
                    raise FitError(
                        f"epoch {epoch}: the loss is {loss}; lower train.lr or check the "
                        f"data. {self._kept()}"
                    )
        except (SolverError, _RankFailure) as exc:
            if isinstance(exc, _RankFailure):
                self.ctx.barrier()  # every rank is here: leave together
            raise FitError(
                f"epoch {epoch}: the solver failed: {exc}. {self._kept()}; fix the config "
                "and continue with --resume"
            ) from exc
        counts = self.counter.take()
        totals["n_f_evals"], totals["n_f_evals_backward"] = counts["fwd"], counts["bwd"]
        keys = sorted(totals)  # the same order on every rank
        return dict(zip(keys, self.ctx.sum([totals[k] for k in keys]), strict=True))

    def _step(self, trained: nn.Module, batch: Any, totals: dict[str, float]) -> float:
        """One optimiser step on a global batch (this rank computes its part); adds this
        rank's totals to the epoch's. Returns the global batch's loss."""
        ctx, task = self.ctx, self.task
        part, weight = task.shard(batch, ctx)
        last: dict[str, Any] = {}

        def closure():
            self.optimizer.zero_grad(set_to_none=True)
            failure, out = None, None
            try:
                with self.counter.counting("fwd"):
                    out = task.step(trained, part)
            except SolverError as exc:
                if not ctx.active:
                    raise
                failure = f"rank {ctx.rank}: {exc}"
            # Every rank learns of a failure before any enters backward's all-reduce.
            if not ctx.all_ok(failure is None):
                raise _RankFailure("; ".join(f for f in ctx.gather(failure) if f))
            # The global batch's loss, the same on every rank (L-BFGS's line search uses
            # it); where it is not finite no rank steps, and the fit stops after the step.
            value = ctx.sum([out.loss.item() * weight])[0] / ctx.world
            if math.isfinite(value):
                with self.counter.counting("bwd"):
                    (out.loss * weight).backward()
            last["out"], last["value"] = out, value
            return value

        self.optimizer.step(closure)
        if self.schedule is not None and schedule_every(self.config) == "step":
            self.schedule.step()
        for key, value in last["out"].totals.items():
            # A rank with no share of the batch adds zeros: every rank holds the same keys.
            totals[key] = totals.get(key, 0.0) + (value if weight > 0 else 0.0)
        return last["value"]
