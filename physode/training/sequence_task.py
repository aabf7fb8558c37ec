"""Fitting a sequence model (``model.latent``: the latent ODE, the ODE-RNN or the GRU
baseline) to irregularly sampled windows of a trajectory file (see
:mod:`physode.training.sequence` for the protocol).

Its outputs, besides the runner's::

    normalization.json   the per-feature minimum and divisor of the training data
    predictions.nc       a few test windows, true and predicted, in the data's units

``metrics.csv`` holds the loss, the train MSE, the KL weight, the KL, the
likelihood and, on the epochs ``task.eval_every`` selects, the test MSE;
``best.pt`` follows the train MSE (the loss itself moves with the KL weight).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .._atomic import write_json
from ..models.latent import kl_annealing
from .config import config_to_yaml
from .outputs import predictions_dataset, write_predictions
from .problem import FitSetupError
from .sequence import (
    TEST_SEED,
    build_sequence_model,
    load_sequence_data,
    ode_modules,
    score_all,
    to_device,
)
from .task import StepOutput, Task

__all__ = ["SequenceTask"]


class SequenceTask(Task):
    """The fit of a sequence model on the windows ``task`` describes."""

    monitor = "train_mse"
    single_process = (
        "model.latent: a sequence model trains in one process; run it without --nproc (or torchrun)"
    )

    def setup(self, device: torch.device, dtype: torch.dtype) -> nn.Module:
        if self.given_model is not None:
            raise FitSetupError(
                "model: physode.fit takes a right-hand side f(t, y); fit a sequence model "
                "through a config with model.latent"
            )
        self.device = device
        self.data = load_sequence_data(self.config, dtype)
        self.sets = self.data.datasets(self.config)
        self.model = build_sequence_model(self.config, len(self.data.variables), dtype, device)
        self.scored: dict[str, float] = {}
        self.train_mse: float | None = None
        return self.model

    def ode_modules(self) -> list[nn.Module]:
        return ode_modules(self.model)

    def metric_fields(self) -> list[str]:
        fields = ["loss", "train_mse", "kl_weight", "kl", "likelihood", "test_mse"]
        fields += ["test_mse_mean", "test_mse_sampled"]
        if self.config.task.name == "extrapolation":
            fields.append("test_extrapolation_mse")
        return fields

    def begin_epoch(self, epoch: int) -> None:
        task = self.config.task
        self.epoch = epoch
        self.kl_weight = kl_annealing(epoch - 1, warmup=task.kl_warmup, rate=task.kl_rate)
        self.model.train()

    def batches(self, epoch: int, generator: torch.Generator) -> Iterable[dict]:
        size = self.config.train.batch_size or int(self.data.train.shape[0])
        for batch in self.sets["train"].batches(size, generator=generator):
            yield to_device(batch, self.device)

    def step(self, module: nn.Module, batch: dict) -> StepOutput:
        loss, info = module.loss(
            batch["times"],
            batch["values"],
            batch["target_mask"],
            obs_times_mask=batch["encoder_mask"],
            kl_weight=self.kl_weight,
            n_samples=self.config.task.n_samples,
        )
        rows = float(batch["values"].shape[0])
        totals = {"rows": rows, "loss": loss.item() * rows}
        for key in ("mse", "kl", "likelihood"):
            totals[key] = info[key].item() * rows
        return StepOutput(loss, totals)

    def epoch_metrics(self, totals: Mapping[str, float], module: nn.Module) -> dict[str, Any]:
        rows = max(totals["rows"], 1.0)
        row = {
            "loss": totals["loss"] / rows,
            "train_mse": totals["mse"] / rows,
            "kl_weight": self.kl_weight,
            "kl": totals["kl"] / rows,
            "likelihood": totals["likelihood"] / rows,
        }
        self.train_mse = row["train_mse"]
        every = self.config.task.eval_every
        last = self.epoch == self.config.train.epochs
        self.scored = {}
        if every is not None and (self.epoch % every == 0 or last):
            self.scored = self._score()
        row.update(self.scored)
        return row

    def progress_values(self, row: Mapping[str, Any], module: nn.Module) -> dict[str, Any]:
        return {"mse": row["train_mse"], "kl_weight": row["kl_weight"], **self.scored}

    def checkpoint_extra(self) -> dict[str, Any]:
        stats = self.data.stats
        return {
            "kind": self.config.model.latent.kind,
            "variables": list(self.data.variables),
            "normalization": {
                "minimum": torch.as_tensor(stats.minimum),
                "scale": torch.as_tensor(stats.scale),
            },
        }

    def finish(self, module: nn.Module, run_dir: Path) -> dict[str, Any]:
        config, data, task = self.config, self.data, self.config.task
        scored = self.scored or self._score()
        over = "every trajectory" if task.normalize_over == "all" else "the training trajectories"
        write_json(
            run_dir / "normalization.json",
            {
                "formula": f"(x - minimum) / scale, per variable, over {over}",
                "variables": data.variables,
                "minimum": data.stats.minimum.tolist(),
                "scale": data.stats.scale.tolist(),
            },
        )
        self._write_predictions(run_dir)
        summary: dict[str, Any] = {
            "model": config.model.latent.kind,
            "task": task.name,
            "observed_fraction": task.observed_fraction,
            "window": self.sets["train"].window,
            "test_mse": scored["test_mse"],
            "test_mse_mean": scored["test_mse_mean"],
            "test_mse_sampled": scored["test_mse_sampled"],
            "score_samples": task.score_samples,
        }
        if "test_extrapolation_mse" in scored:
            summary["extrapolation_mse"] = scored["test_extrapolation_mse"]
        summary.update(
            {
                "train_mse": self.train_mse,
                "mse_units": f"normalised: (x - min) / max per variable over {over}",
                "mse_scoring": (
                    "test_mse = test_mse_mean: decoded from the posterior mean of z0; "
                    "test_mse_sampled: averaged over score_samples draws of z0 (the reference's)"
                ),
                "n_train": int(data.train.shape[0]),
                "n_test": int(data.test.shape[0]),
                "n_parameters": sum(p.numel() for p in self.model.parameters()),
                "solver": {
                    "method": config.solver.method,
                    "grad": config.solver.grad,
                    "rtol": config.solver.rtol,
                    "atol": config.solver.atol,
                },
            }
        )
        return summary

    def evaluate(self, module: nn.Module) -> dict[str, Any]:
        return self._score()

    def _score(self) -> dict[str, float]:
        return score_all(self.model, self.sets, self.device, self.config.task.score_samples)

    def _write_predictions(self, run_dir: Path) -> Path | None:
        """``predictions.nc``: the first ``task.n_predictions`` test windows of the task,
        true and predicted, in the data's units (times relative to each window's start)."""
        config, data = self.config, self.data
        n = min(config.task.n_predictions, int(data.test.shape[0]))
        dataset = self.sets.get("test_extrapolation", self.sets["test"])
        if n == 0 or dataset.window < 2:
            return None
        g = torch.Generator().manual_seed(TEST_SEED)
        batch = next(iter(dataset.batches(n, shuffle=False, generator=g)))
        b = to_device(batch, self.device)
        with torch.no_grad():
            pred = self.model.predict(b["times"], b["values"], b["encoder_mask"])
        times = batch["times"].numpy()
        if dataset.task == "extrapolation":
            first = dataset.window // 3
            fit_end = 0.5 * (times[first - 1] + times[first])
        else:
            fit_end = float(times[-1])
        s = config.solver
        ds = predictions_dataset(
            times,
            data.stats.invert(batch["values"].double().numpy()),
            data.stats.invert(pred.detach().cpu().double().numpy()),
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
