"""Re-scoring a trained model with another solver, without retraining.

A model trained with one solver is a function of that solver's errors too;
scoring it with others (another method, tighter tolerances) tells whether it
learned the dynamics or the discretisation.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .checkpoints import LAST
from .config import load_config
from .fit import restore
from .report import predict, score_predictions, write_json


def _score_sequence(run_dir: Path, config, chosen: dict, checkpoint: str, device) -> dict:
    """A sequence model (latent ODE, ...) rebuilt with the ``chosen`` solver and scored on
    the run's test windows."""
    from .sequence import restore_sequence, score_all

    config = config.model_copy(update={"solver": config.solver.model_copy(update=chosen)})
    model, data = restore_sequence(run_dir, config, checkpoint, device)
    return score_all(model, data.datasets(config), next(model.parameters()).device)


def evaluate_run(
    run_dir: str | Path,
    *,
    method: str | None = None,
    grad: str | None = None,
    rtol: float | None = None,
    atol: float | None = None,
    step_size: float | None = None,
    checkpoint: str = LAST,
    device: str | None = None,
) -> dict[str, Any]:
    """Scores of the model in ``run_dir`` predicted with the given solver settings.

    Unset settings keep the run's. The result (fit and extrapolation MSE, the
    position score, the solver used) is also written to
    ``run_dir/evaluations/<method>-rtol<rtol>-atol<atol>.json``.
    """
    run_dir = Path(run_dir)
    config_path = run_dir / "config.yaml"
    if not config_path.exists():
        raise FileNotFoundError(f"{run_dir}: not a run directory (no config.yaml)")
    config = load_config(config_path)
    s = config.solver
    chosen = {
        "method": method or s.method,
        # Prediction takes no gradient: the trained gradient method (MALI needs ALF)
        # must not stop a re-score with another solver.
        "grad": grad or "direct",
        "rtol": rtol if rtol is not None else s.rtol,
        "atol": atol if atol is not None else s.atol,
        "step_size": step_size if step_size is not None else s.step_size,
    }
    if config.model.latent is not None:
        scores = _score_sequence(run_dir, config, chosen, checkpoint, device)
    else:
        system, problem = restore(run_dir, config, checkpoint, device)
        pred = predict(config, system, problem, **chosen)
        _, scores = score_predictions(config, problem, pred)
    result = {**scores, "solver": chosen, "trained_with": s.model_dump(), "checkpoint": checkpoint}
    name = f"{chosen['method']}-rtol{chosen['rtol']:g}-atol{chosen['atol']:g}"
    if chosen["step_size"] is not None:
        name += f"-h{chosen['step_size']:g}"
    (run_dir / "evaluations").mkdir(exist_ok=True)
    write_json(run_dir / "evaluations" / f"{name}.json", result)
    return result
