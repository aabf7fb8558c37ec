"""MALI: the memory-efficient ALF integrator (Zhuang et al., ICLR 2021).

Forward runs the asynchronous leapfrog without a graph and keeps only the
final state ``(z_N, v_N)`` and each accepted step's time and size (float64
numbers). Backward rebuilds ``(z_i, v_i)`` from ``(z_{i+1}, v_{i+1})`` with
the exact inverse step, re-runs step ``i`` with a graph, pulls the adjoint
back through it (and through the interpolant for outputs inside the step) and
goes on from the rebuilt state; the gradient reaches ``z0`` and the
parameters through ``v0 = f(t0, z0)``. Memory is constant in the number of
steps.

The inverse is exact in algebra, not in floating point: on contracting
dynamics the reverse map amplifies round-off (and by ``1 / (2 eta - 1)`` per
step when ``eta < 1``). So MALI checks itself: the rebuilt states are
compared with the true ones at ``t0`` (and at every checkpoint), the largest
difference in units of the tolerance (``atol + rtol |z|``, RMS) is reported
as ``stats.extra["mali_drift"]``, and a drift above 1 warns (or raises
``SolverError`` with ``mali_on_drift="error"``). ``checkpoint_every=K``
keeps an exact state every K steps, which bounds the drift at memory O(N/K).
ALF's velocity restarts (see ``AsyncLeapfrog``: when its parasitic mode
dominates the error estimate, or every K steps on request) replace ``v`` by
``f(t, z)``, which no inverse step can undo: the restarted states are kept,
with the velocity they replaced, and act as exact checkpoints. Where the flow
does not contract they are rare, and memory is constant in the number of steps.
ALF's gradient restarts need no memory: they change how ``v`` is
differentiated, not its value, and the re-run steps apply them as the forward
solve did.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

import torch

from .._checks import optional_positive_int
from ..errors import SolverError
from ..solvers.alf import AsyncLeapfrog
from ..solvers.base import Solver
from ..solvers.loop import AcceptedStep, SolveOptions
from .common import RecordedMethod


def _drift(rebuilt: torch.Tensor, true: torch.Tensor, options: SolveOptions) -> float:
    scale = true.abs() * options.rtol + options.atol
    drift = ((rebuilt - true) / scale).square().mean().sqrt().item()
    # A rebuilt state that overflowed is the worst drift, not a missing one.
    return drift if math.isfinite(drift) else math.inf


@dataclass(frozen=True)
class MALI(RecordedMethod):
    """The memory-efficient ALF integrator: only the final state and the step sizes are
    stored; states are rebuilt by the inverse ALF step. Double backward works.

    Args:
        checkpoint_every: keep an exact state every K steps, bounding the
            reconstruction drift at memory O(N/K) (``None``: only the final state).
        on_drift: ``"warn"`` (default) or ``"error"`` when the rebuilt states drift
            from the true ones by more than the tolerance.
    """

    checkpoint_every: int | None = None
    on_drift: str = "warn"

    name = "mali"
    default_method = "alf"

    def __post_init__(self) -> None:
        optional_positive_int("checkpoint_every", self.checkpoint_every)
        if self.on_drift not in ("warn", "error"):
            raise ValueError(f"on_drift: must be 'warn' or 'error', got {self.on_drift!r}")

    @property
    def keep_state_every(self) -> int | None:  # type: ignore[override]
        return self.checkpoint_every

    def accepts(self, solver: Solver) -> bool:
        return isinstance(solver, AsyncLeapfrog)

    def refusal(self, solver: Solver) -> str:
        return (
            f"grad='mali' needs the asynchronous leapfrog (method='alf'), got "
            f"{solver.name!r}; leave method unset to get ALF"
        )

    def start_of(self, step: AcceptedStep, end: Any, sweep: dict) -> Any:
        solver, options = sweep["solver"], sweep["options"]
        with torch.no_grad():
            start = solver.inverse(sweep["func"], step.t, step.h, end)
        if step.state is not None:  # an exact checkpoint: measure, then restart from it
            sweep["drift"] = max(sweep.get("drift", 0.0), _drift(start.z, step.state.z, options))
            start = step.state
        return start

    def finish(self, sweep: dict, y0: torch.Tensor, first_state: Any, run: dict) -> None:
        steps = sweep["steps"]
        drift = sweep.get("drift", 0.0)
        if steps and steps[0].state is None:  # rebuilt all the way: compare with y0
            drift = max(drift, _drift(first_state.z, y0, sweep["options"]))
        run["stats"].extra["mali_drift"] = drift
        _report_drift(drift, self.on_drift, run["times"][0], len(steps))


def _report_drift(drift: float, on_drift: str, t0: float, n: int) -> None:
    if drift <= 1.0:
        return
    message = (
        f"MALI: the states rebuilt by the inverse ALF step drifted from the true ones by "
        f"{drift:.3g} times the tolerance over {n} steps, so the gradient may be inaccurate. "
        "Pass MALI(checkpoint_every=K) (exact checkpoints every K steps), tighten the "
        "tolerances, or use grad='aca'"
    )
    if on_drift == "error":
        raise SolverError(message, t=t0, h=None, n_steps=n, reason="mali_drift")
    warnings.warn(message, RuntimeWarning, stacklevel=3)
