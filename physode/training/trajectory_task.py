"""Fitting a right-hand side to trajectories: physics with unknown parameters, a hybrid of
physics and a neural term, or a neural ODE.

Each trajectory is integrated from its state at the start of the fit window
(or a learned one) over the window's times; the loss (MSE or MAE) compares it
with the data wherever the data was observed (the file's ``/mask`` and
``data.observed``), plus the model's own penalty (a hybrid's APHYNITY term).
A batch is a set of trajectories; several processes each solve their share.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .config import Config
from .distributed import Distributed, unwrap
from .initial_state import estimate_initial_state
from .problem import (
    FitSetupError,
    Problem,
    TrainedSystem,
    build_model,
    check_model_output,
    load_problem,
    match_variables,
    solve_batch,
)
from .report import predict, score_predictions, write_outputs
from .task import StepOutput, Task

__all__ = ["TrajectoryTask", "flat_parameters"]


def flat_parameters(params: Mapping[str, Any]) -> dict[str, float]:
    """Physical parameters as ``name -> float`` (a vector ``m`` as ``m_0, m_1, ...``)."""
    flat: dict[str, float] = {}
    for name, value in params.items():
        if isinstance(value, list):
            values = torch.as_tensor(value, dtype=torch.float64).reshape(-1).tolist()
            flat.update({f"{name}_{i}": v for i, v in enumerate(values)})
        else:
            flat[name] = float(value)
    return flat


class TrajectoryTask(Task):
    """The fit of a right-hand side ``f(t, y)`` to trajectory data (``model.physics`` /
    ``model.neural``, or a model given to :func:`physode.fit`)."""

    def setup(self, device: torch.device, dtype: torch.dtype) -> nn.Module:
        config = self.config
        problem = load_problem(config, dtype, device)
        if self.given_model is not None:
            model = self.given_model.to(device=device, dtype=dtype)
            built = config.model
        elif config.model.python is not None:
            raise FitSetupError(
                f"model.python: the model of this run ({config.model.python}) was given to "
                "physode.fit from Python and the config does not describe it; give it again: "
                "physode.fit(model, ..., resume=True) or physode.evaluate(run_dir, model=model)"
            )
        else:
            model, built = build_model(config.model, problem.variables, dtype, device)
        problem, note = match_variables(model, problem)
        if note is not None:
            self.notes.append(note)
        check_model_output(model, problem)
        initial = self._initial_states(model, problem)
        self.problem = problem
        self.module = TrainedSystem(model, initial)
        # A window taken from the data file and the arguments the model was built with
        # are written into the run's config: the run directory says what was fitted.
        data = config.data.model_copy(update={"fit_window": problem.fit_window})
        self._as_run = config.model_copy(update={"data": data, "model": built})
        return self.module

    def _initial_states(self, model: nn.Module, problem: Problem) -> torch.Tensor | None:
        """The learned initial states' start, ``(N, D)``, or ``None`` (taken from the data)."""
        start = problem.mask[:, 0]
        if not self.config.train.learn_initial_state:
            if not bool(start.all()):
                hidden = [
                    v
                    for v, seen in zip(problem.variables, start.all(0).tolist(), strict=True)
                    if not seen
                ]
                raise FitSetupError(
                    f"{problem.path}: the state at the start of the fit window "
                    f"(t = {float(problem.time[0]):g}) is not fully observed ({', '.join(hidden)} "
                    "unobserved, through /mask or data.observed); the fit starts from it: set "
                    "train.learn_initial_state: true to learn the unobserved values"
                )
            return None
        n = problem.n_fit
        estimate = estimate_initial_state(
            problem.time[:n].numpy(),
            problem.state[:, :n].double().cpu().numpy(),
            problem.mask[:, :n].cpu().numpy(),
            second_order=bool(getattr(model, "second_order", False)),
        )
        return torch.as_tensor(estimate, dtype=problem.state.dtype, device=problem.state.device)

    def config_as_run(self) -> Config:
        return self._as_run

    def ode_modules(self) -> list[nn.Module]:
        return [self.module.model]

    def metric_fields(self) -> list[str]:
        return ["loss", "fit_mse", *flat_parameters(self.module.physical_parameters())]

    def batches(self, epoch: int, generator: torch.Generator) -> Iterable[torch.Tensor]:
        n = self.problem.state.shape[0]
        size = self.config.train.batch_size
        device = self.problem.state.device
        if size is None or size >= n:
            return [torch.arange(n, device=device)]
        return [rows.to(device) for rows in torch.randperm(n, generator=generator).split(size)]

    def shard(self, batch: torch.Tensor, ctx: Distributed) -> tuple[torch.Tensor, float]:
        # Rank r solves every world-th trajectory from r on, like DistributedSampler. The
        # weight is its share of the batch's observed entries: DDP averages the ranks'
        # gradients, and the loss is a mean over those entries.
        mine = ctx.shard(batch)
        if not ctx.active:
            return mine, 1.0
        observed = self.problem.mask[:, : self.problem.n_fit]
        share = float(observed[mine].sum()) / max(float(observed[batch].sum()), 1.0)
        # A rank whose share is empty still takes part in the step (DDP needs every rank).
        return (mine if len(mine) else batch[:1]), (share * ctx.world if len(mine) else 0.0)

    def step(self, module: nn.Module, batch: torch.Tensor) -> StepOutput:
        p = self.problem
        pred, _ = solve_batch(self.config, module, p, batch, p.fit_time)
        mask = p.mask[batch, : p.n_fit]
        err = (pred - p.state[batch, : p.n_fit])[mask]
        if err.numel() == 0:
            loss = pred.sum() * 0.0
        else:
            loss = err.square().mean() if self.config.train.loss == "mse" else err.abs().mean()
        loss = loss + unwrap(module).regularization(pred)
        detached = err.detach()
        totals = {
            "loss": loss.item() * len(batch),
            "trajectories": float(len(batch)),
            "sq": detached.square().sum().item(),
            "count": float(detached.numel()),
        }
        return StepOutput(loss, totals)

    def epoch_metrics(self, totals: Mapping[str, float], module: nn.Module) -> dict[str, Any]:
        return {
            "loss": totals["loss"] / max(totals["trajectories"], 1.0),
            "fit_mse": totals["sq"] / max(totals["count"], 1.0),
            **flat_parameters(self.module.physical_parameters()),
        }

    def progress_values(self, row: Mapping[str, Any], module: nn.Module) -> dict[str, Any]:
        return self.module.physical_parameters()

    def parameters(self, module: nn.Module) -> dict[str, Any]:
        return self.module.physical_parameters()

    def finish(self, module: nn.Module, run_dir: Path) -> dict[str, Any]:
        return write_outputs(self.config_as_run(), self.module, self.problem, run_dir)

    def evaluate(self, module: nn.Module) -> dict[str, Any]:
        pred = predict(self.config, self.module, self.problem)
        _, scores = score_predictions(self.config, self.module, self.problem, pred)
        return scores
