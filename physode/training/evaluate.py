"""Re-scoring a trained model with another solver, without retraining.

A model trained with one solver is a function of that solver's errors too;
scoring it with others (another method, tighter tolerances) tells whether it
learned the dynamics or the discretisation.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from .._atomic import write_json
from .checkpoints import LAST
from .config import load_config, resolve_device
from .task import Task
from .tasks import make_task


def restore_run(
    run_dir: str | Path,
    *,
    checkpoint: str = LAST,
    device: str | None = None,
    model: nn.Module | None = None,
    solver: dict[str, Any] | None = None,
) -> tuple[Task, nn.Module]:
    """The task of a run directory and its trained module, from a checkpoint.

    Args:
        run_dir: a run directory (its ``config.yaml`` and ``checkpoints/``).
        checkpoint: ``last.pt`` or ``best.pt``.
        device: where to load it (default: the run's ``train.device``).
        model: the model of a run made by :func:`physode.fit` with a model object
            (the checkpoint's weights are loaded into it).
        solver: keys of the ``solver`` section to change (a sequence model is
            built with its solver, so a re-score rebuilds it).
    """
    run_dir = Path(run_dir)
    config_path = run_dir / "config.yaml"
    if not config_path.exists():
        raise FileNotFoundError(f"{run_dir}: not a run directory (no config.yaml)")
    config = load_config(config_path)
    if solver:
        config = config.model_copy(update={"solver": config.solver.model_copy(update=solver)})
    task = make_task(config, model)
    module = task.restore(run_dir, checkpoint, resolve_device(device or config.train.device))
    return task, module


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
    model: nn.Module | None = None,
) -> dict[str, Any]:
    """Scores of the model in ``run_dir`` predicted with the given solver settings.

    Unset settings keep the run's. The result (the task's scores, the solver used)
    is also written to ``run_dir/evaluations/<method>-rtol<rtol>-atol<atol>-<checkpoint>.json``.
    ``model`` is the model of a run made by :func:`physode.fit` with a model object
    (its config only records the class); the checkpoint's weights are loaded into it.
    """
    run_dir = Path(run_dir)
    config_path = run_dir / "config.yaml"
    if not config_path.exists():
        raise FileNotFoundError(f"{run_dir}: not a run directory (no config.yaml)")
    s = load_config(config_path).solver
    chosen = {
        "method": method or s.method,
        # Prediction takes no gradient: the trained gradient method (MALI needs ALF)
        # must not stop a re-score with another solver.
        "grad": grad or "direct",
        "rtol": rtol if rtol is not None else s.rtol,
        "atol": atol if atol is not None else s.atol,
        "step_size": step_size if step_size is not None else s.step_size,
    }
    task, module = restore_run(
        run_dir, checkpoint=checkpoint, device=device, model=model, solver=chosen
    )
    scores = task.evaluate(module)
    result = {**scores, "solver": chosen, "trained_with": s.model_dump(), "checkpoint": checkpoint}
    if task.notes:
        result["notes"] = list(task.notes)
    name = f"{chosen['method']}-rtol{chosen['rtol']:g}-atol{chosen['atol']:g}"
    if chosen["step_size"] is not None:
        name += f"-h{chosen['step_size']:g}"
    name += f"-{Path(checkpoint).stem}"  # best.pt and last.pt do not overwrite each other
    (run_dir / "evaluations").mkdir(exist_ok=True)
    write_json(run_dir / "evaluations" / f"{name}.json", result)
    return result
