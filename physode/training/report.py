"""The outputs of a trained model: predictions over the whole time range, scores,
``predictions.nc``, ``metrics.json``, ``params.json`` and the plots."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._atomic import write_json
from .config import Config, config_to_yaml
from .outputs import extrapolation_scores, predictions_dataset, write_predictions
from .plots import plot_predictions
from .problem import Problem, TrainedSystem, solve_batch

#: Trajectories predicted at once when writing outputs (bounds memory on big ensembles).
PREDICT_BATCH = 256


@torch.no_grad()
def predict(config: Config, system: TrainedSystem, problem: Problem, **solver) -> torch.Tensor:
    """Trajectories from the start of the fit window to the last time: ``(N, T, D)``.

    ``solver`` overrides the config's solver settings (method, rtol, atol, ...).
    """
    n = problem.state.shape[0]
    parts = []
    for rows in torch.arange(n, device=problem.state.device).split(PREDICT_BATCH):
        pred, _ = solve_batch(
            config, system, problem, rows, problem.time, **{"grad": "direct", **solver}
        )
        parts.append(pred)
    return torch.cat(parts)


def _true_parameter_errors(data, learned: dict) -> dict[str, Any]:
    """Relative error of each learned parameter whose true value the data file holds."""
    out = {}
    for name, value in learned.items():
        if name in data.parameters:
            true = np.asarray(data.parameters[name], dtype=float)
            got = np.asarray(value, dtype=float)
            if true.shape == got.shape and np.all(true != 0):
                out[name] = {
                    "true": true.tolist(),
                    "relative_error": (np.abs(got - true) / np.abs(true)).tolist(),
                }
    return out


def roles(system: TrainedSystem, variables: list[str]) -> list[str]:
    """Each variable's role: positions then velocities for a second-order model
    (state ``[q, v]``), else ``"state"``."""
    n = len(variables)
    if getattr(system.model, "second_order", False) and n % 2 == 0:
        return ["position"] * (n // 2) + ["velocity"] * (n // 2)
    return ["state"] * n


def score_predictions(
    config: Config, system: TrainedSystem, problem: Problem, pred: torch.Tensor, **attrs
):
    """The predictions as an xarray Dataset, and its scores."""
    data = problem.data
    ds = predictions_dataset(
        problem.time.numpy(),
        np.asarray(data.state[:, problem.first :], dtype=np.float64),
        pred.detach().cpu().double().numpy(),
        problem.variables,
        fit_start=problem.fit_window[0],
        fit_end=problem.fit_window[1],
        time_units=data.time_units,
        state_units=data.state_units,
        config_yaml=config_to_yaml(config),
        mask=problem.mask.cpu().numpy() if not bool(problem.mask.all()) else None,
        attrs=attrs,
        trajectory_ids=problem.ids,
        roles=roles(system, problem.variables),
    )
    return ds, extrapolation_scores(ds)


def write_outputs(
    config: Config, system: TrainedSystem, problem: Problem, run_dir: Path
) -> dict[str, Any]:
    """Write predictions.nc, params.json and plots/; returns the summary's scores and
    parameters (the learned ones, and their errors where the data file has true values)."""
    pred = predict(config, system, problem)
    s = config.solver
    ds, scores = score_predictions(
        config, system, problem, pred, method=s.method, grad=s.grad, rtol=s.rtol, atol=s.atol
    )
    write_predictions(ds, run_dir / "predictions.nc")
    params = system.physical_parameters()
    write_json(run_dir / "params.json", params)
    plot_predictions(ds, run_dir / "plots")
    return {
        **scores,
        "parameters": params,
        "true_parameters": _true_parameter_errors(problem.data, params),
    }
