"""The Adaptive Checkpoint Adjoint (ACA; Zhuang et al., ICML 2020).

Forward: the solve runs without a graph and keeps each accepted step's start
state ``(y_i, f_i)``, its time and size; the step-size search never enters a
graph. Backward walks the steps in reverse, re-runs step ``i`` from its stored
state with a graph, pulls the running adjoint back through it (and through
the interpolant for output times inside it), accumulates the parameter
gradients and drops the local graph. Memory: the stored states plus one
step's graph. The gradient is that of the accepted discrete steps with the
step sizes held fixed, i.e. as accurate as the forward solve.
"""

from __future__ import annotations

import torch

from ..solvers.loop import Stats
from .common import (
    RunningAdjoint,
    apply_method,
    double_backward,
    recorded_forward,
    step_vjp,
)
from .options import SolveRequest


class _ACA(torch.autograd.Function):
    @staticmethod
    def forward(ctx, run: dict, y0: torch.Tensor, *params: torch.Tensor) -> torch.Tensor:
        return recorded_forward(ctx, run, y0, params, keep_state_every=1)

    @staticmethod
    def backward(ctx, grad_ys: torch.Tensor):
        run, steps = ctx.run, ctx.steps
        y0, *params = ctx.saved_tensors
        solver, times = run["solver"], run["times"]
        func = run["backward_func"]
        if torch.is_grad_enabled():
            grads = double_backward(solver, func, y0, params, steps, times, grad_ys)
            run["stats"].n_f_evals_backward = func.count
            return (None, *grads)
        adjoint = RunningAdjoint(y0, len(params))
        end = ctx.final
        for step in reversed(steps):
            adjoint.add_outputs_at_end(step, grad_ys)
            step_vjp(solver, func, step, step.state, adjoint, grad_ys, params, end=end)
            end = step.state
        adjoint.y = adjoint.y + grad_ys[0]
        if steps:  # the first step's f0 = f(t0, y0)
            adjoint.pull_through_slope(func, times[0], y0, tuple(params))
        run["stats"].n_f_evals_backward = func.count
        return (None, adjoint.y, *adjoint.parameter_gradients(params))


def solve(request: SolveRequest) -> tuple[torch.Tensor, Stats]:
    """States at ``times`` with gradients by ACA; see the module docstring."""
    return apply_method(_ACA, "aca", request)
