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

import torch

from ..errors import SolverError
from ..solvers.alf import AsyncLeapfrog
from ..solvers.loop import SolveOptions, Stats
from .common import (
    RunningAdjoint,
    apply_method,
    double_backward,
    recorded_forward,
    step_vjp,
)
from .options import GradientOptions, SolveRequest


def _drift(rebuilt: torch.Tensor, true: torch.Tensor, options: SolveOptions) -> float:
    scale = true.abs() * options.rtol + options.atol
    drift = ((rebuilt - true) / scale).square().mean().sqrt().item()
    # A rebuilt state that overflowed is the worst drift, not a missing one.
    return drift if math.isfinite(drift) else math.inf


class _MALI(torch.autograd.Function):
    @staticmethod
    def forward(ctx, run: dict, y0: torch.Tensor, *params: torch.Tensor) -> torch.Tensor:
        return recorded_forward(
            ctx, run, y0, params, keep_state_every=run["grad_options"].checkpoint_every
        )

    @staticmethod
    def backward(ctx, grad_ys: torch.Tensor):
        run, steps = ctx.run, ctx.steps
        y0, *params = ctx.saved_tensors
        solver, times, options = run["solver"], run["times"], run["options"]
        func, stats = run["backward_func"], run["stats"]
        if torch.is_grad_enabled():
            grads = double_backward(solver, func, y0, params, steps, times, grad_ys)
            stats.n_f_evals_backward = func.count
            return (None, *grads)
        state = ctx.final
        adjoint = RunningAdjoint(y0, len(params))
        drift = 0.0
        for step in reversed(steps):
            adjoint.add_outputs_at_end(step, grad_ys)
            with torch.no_grad():
                start = solver.inverse(func, step.t, step.h, state)
            if step.state is not None:  # an exact checkpoint: measure, then restart from it
                drift = max(drift, _drift(start.z, step.state.z, options))
                start = step.state
            step_vjp(solver, func, step, start, adjoint, grad_ys, params, end=state)
            state = start
        if steps and steps[0].state is None:
            drift = max(drift, _drift(state.z, y0, options))
        stats.extra["mali_drift"] = drift
        _report_drift(drift, run["grad_options"], times[0], len(steps))
        adjoint.y = adjoint.y + grad_ys[0]
        if steps:  # v0 = f(t0, z0)
            adjoint.pull_through_slope(func, times[0], y0, tuple(params))
        stats.n_f_evals_backward = func.count
        return (None, adjoint.y, *adjoint.parameter_gradients(params))


def _report_drift(drift: float, grad_options: GradientOptions, t0: float, n: int) -> None:
    if drift <= 1.0:
        return
    message = (
        f"MALI: the states rebuilt by the inverse ALF step drifted from the true ones by "
        f"{drift:.3g} times the tolerance over {n} steps, so the gradient may be inaccurate. "
        "Pass mali_checkpoint_every=K (exact checkpoints every K steps), tighten the "
        "tolerances, or use grad='aca'"
    )
    if grad_options.mali_on_drift == "error":
        raise SolverError(message, t=t0, h=None, n_steps=n, reason="mali_drift")
    warnings.warn(message, RuntimeWarning, stacklevel=3)


def solve(request: SolveRequest) -> tuple[torch.Tensor, Stats]:
    """States at ``times`` with gradients by MALI; see the module docstring."""
    if not isinstance(request.solver, AsyncLeapfrog):
        raise ValueError(
            f"method: grad='mali' needs the asynchronous leapfrog (method='alf'), got "
            f"{request.solver.name!r}; leave method unset to get ALF"
        )
    return apply_method(_MALI, "mali", request, grad_options=request.grad_options)
