"""Pieces shared by the gradient methods that run the forward solve without a graph:
parameter collection, vector-Jacobian products, the running adjoint, and the one
reverse sweep of ACA and MALI."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable, Sequence
from typing import Any

import torch

from ..solvers.base import Solver
from ..solvers.discontinuities import end_time, step_function
from ..solvers.implicit import first_derivatives_only
from ..solvers.loop import (
    AcceptedStep,
    CountedFunction,
    OutputBlocks,
    Stats,
    dense_end,
    initial_time,
    integrate,
)
from .base import GradientMethod, SolveRequest


def collect_params(func: Callable, params: Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
    """The tensors that receive gradients: ``func``'s parameters (if a module) plus ``params``."""
    found: list[torch.Tensor] = []
    if isinstance(func, torch.nn.Module):
        found.extend(p for p in func.parameters() if p.requires_grad)
    for p in params:
        if not isinstance(p, torch.Tensor):
            raise ValueError(f"params: expected tensors, got {type(p).__name__}")
        found.append(p)
    unique: dict[int, torch.Tensor] = {}
    for p in found:
        unique.setdefault(id(p), p)
    return tuple(unique.values())


def _graph_leaves(out: torch.Tensor) -> list[torch.Tensor]:
    """The leaf tensors requiring grad that ``out`` was computed from."""
    leaves, seen, stack = [], set(), [out.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        if hasattr(node, "variable"):
            leaves.append(node.variable)
        stack.extend(nxt for nxt, _ in node.next_functions)
    return leaves


class CheckedFunction(CountedFunction):
    """A counted function whose first call also checks that every tensor ``func`` needs
    gradients for is known: otherwise its gradient would be silently lost."""

    def __init__(
        self, func: Callable, like: torch.Tensor, params: Sequence[torch.Tensor], grad: str
    ) -> None:
        super().__init__(func, like)
        self._known = {id(p) for p in params}
        self._grad = grad
        self._leaves_checked = False

    def __call__(self, t: float, y: torch.Tensor) -> torch.Tensor:
        if self._leaves_checked:
            return super().__call__(t, y)
        with torch.enable_grad():
            out = super().__call__(t, y.detach())
        if out.requires_grad:
            unknown = [p for p in _graph_leaves(out) if id(p) not in self._known]
            if unknown:
                shapes = ", ".join(str(tuple(p.shape)) for p in unknown[:4])
                raise ValueError(
                    f"params: func uses tensors that require grad but were not given "
                    f"(shapes {shapes}); with grad={self._grad!r} pass them as "
                    "params=(...) or make func an nn.Module that owns them"
                )
        self._leaves_checked = True
        return out.detach()


def vjp(
    outputs: Sequence[torch.Tensor],
    inputs: Sequence[torch.Tensor],
    cotangents: Sequence[torch.Tensor],
    create_graph: bool = False,
) -> list[torch.Tensor]:
    """``sum_k cotangent_k^T d output_k / d input`` for every input; zeros where an
    output does not depend on an input at all (``f`` that ignores ``y``, or a
    parameter it does not use), so that a missing dependence is a zero gradient."""
    pairs = [(o, c) for o, c in zip(outputs, cotangents, strict=True) if o.requires_grad]
    wanted = [x for x in inputs if x.requires_grad]
    grads = iter(
        torch.autograd.grad(
            [o for o, _ in pairs],
            wanted,
            [c for _, c in pairs],
            allow_unused=True,
            create_graph=create_graph,
        )
        if pairs and wanted
        else [None] * len(wanted)
    )
    found = [next(grads) if x.requires_grad else None for x in inputs]
    return [torch.zeros_like(x) if g is None else g for g, x in zip(found, inputs, strict=True)]


class RunningAdjoint:
    """The adjoint carried backwards through the accepted steps.

    ``y`` is dL/dy and ``d`` dL/dd at the current time (``d`` the state's second
    part: the derivative for Runge-Kutta, the velocity for ALF; ``None`` stands
    for zero), ``params`` the parameter gradients gathered so far (``None``:
    none yet). Kept in one object and replaced as each step is pulled back, so
    no stale copy outlives the step that needed it: MALI's memory must not grow.
    """

    def __init__(self, y0: torch.Tensor, d: torch.Tensor, n_params: int) -> None:
        self.y = torch.zeros_like(y0)
        self.d: torch.Tensor | None = torch.zeros_like(d)
        self.params: list = [None] * n_params

    def add_outputs_at_end(self, step: AcceptedStep, grad_ys: torch.Tensor) -> None:
        """Add dL/dy of the outputs that lie exactly at ``step``'s end."""
        for k, theta in step.outputs:
            if theta == 1.0:
                self.y = self.y + grad_ys[k]

    def add_params(self, grads: Sequence) -> None:
        for i, g in enumerate(grads):
            if g is not None:
                self.params[i] = g if self.params[i] is None else self.params[i] + g

    def pull_through_slope(
        self, func: CountedFunction, t: float, y: torch.Tensor, params: tuple[torch.Tensor, ...]
    ) -> None:
        """Pull ``d`` back through ``d = f(t, y)`` into ``y`` and the parameters (``d`` -> 0)."""
        self.pull_through(lambda x: func(t, x), y, params)

    def pull_through_start(
        self, solver: Solver, func: CountedFunction, t0: float, y0: torch.Tensor, params
    ) -> None:
        """Pull ``d`` back through the solver's initial state at ``(t0, y0)`` (``d`` is
        ``f(t0, y0)`` for most methods; a multistep method's history)."""
        self.pull_through(lambda x: solver.slope(solver.init(func, t0, x)), y0, params)

    def pull_through(self, slope_of: Callable, y: torch.Tensor, params) -> None:
        """Pull ``d`` back through ``d = slope_of(y)`` into ``y`` and the parameters."""
        if self.d is None:
            return
        with torch.enable_grad():
            x = y.detach().requires_grad_()
            dy, *grads = vjp([slope_of(x)], [x, *params], [self.d])
        self.d = None
        self.add_params(grads)
        self.y = self.y + dy

    def parameter_gradients(self, params: Sequence[torch.Tensor]) -> tuple:
        return tuple(
            torch.zeros_like(p) if g is None else g
            for g, p in zip(self.params, params, strict=True)
        )


def step_vjp(
    solver: Solver,
    func: CountedFunction,
    step: AcceptedStep,
    state0,
    adjoint: RunningAdjoint,
    grad_ys: torch.Tensor,
    params: tuple[torch.Tensor, ...],
    end=None,
) -> None:
    """Re-run one accepted step from ``state0`` with a graph and pull ``adjoint`` back through it.

    Args:
        state0: the solver state at the step's start (values only).
        adjoint: the adjoint at the step's end (gradients of outputs at the step's
            end already included); replaced by the adjoint at its start, with the
            step's parameter gradients added.
        grad_ys: dL/d(outputs), one row per output time.
        end: the solver state at the step's end (values only), if known. Where
            the step ends with a gradient restart (ALF: ``d`` differentiated as
            ``f(t1, y1)``) and no output lies inside it, the adjoint of ``d`` is
            then pulled through ``f(t1, y1)`` first, so that this evaluation's
            graph and the step's are never alive together.
    """
    inner = [(k, th) for k, th in step.outputs if th != 1.0]
    split = end is not None and not inner and solver.gradient_restart_after(state0, step.restart)
    dtype = solver.solution(state0).dtype
    t1 = end_time(step.t, step.h, step.jump, dtype)
    if split:
        adjoint.pull_through_slope(func, t1, solver.solution(end), params)
    # The step's graph is differentiated once (double backward replays the steps instead).
    with torch.enable_grad(), first_derivatives_only():
        y = solver.solution(state0).detach().requires_grad_()
        d = solver.slope(state0).detach().requires_grad_()
        start = solver.with_parts(state0, y, d)
        stepped = step_function(func, step.t, step.h, step.jump, dtype)
        result = solver.step(stepped, step.t, step.h, start, estimate_error=False)
        rerun_end = solver.complete(
            func,
            t1,
            result.state,
            restart=step.restart or step.jump,
            gradient_restart=not split,
        )
        outs, cotangents = [solver.solution(rerun_end)], [adjoint.y]
        if adjoint.d is not None:
            outs.append(solver.slope(rerun_end))
            cotangents.append(adjoint.d)
        if inner:
            end = dense_end(solver, func, step.t, step.h, result, rerun_end, step.jump)
            dense = solver.interpolant(step.h, start, end, result.stages)
            outs.append(dense([th for _, th in inner]))
            cotangents.append(grad_ys[[k for k, _ in inner]])
        grads = vjp(outs, (y, d, *params), cotangents)
    adjoint.y, adjoint.d = grads[0], grads[1]
    adjoint.add_params(grads[2:])


def replay(
    solver: Solver,
    func: CountedFunction,
    y0: torch.Tensor,
    t0: float,
    steps: Sequence[AcceptedStep],
) -> torch.Tensor:
    """Re-run the accepted steps from ``y0`` with a graph (step sizes held fixed).

    Used for double backward: the result is differentiable in ``y0`` and the
    parameters to any order. Returns ``(n, *y0.shape)``: y0, then one row per later
    output time.
    """
    outputs = OutputBlocks(y0)
    state = solver.init(func, t0, y0)
    for step in steps:
        stepped = step_function(func, step.t, step.h, step.jump, y0.dtype)
        result = solver.step(stepped, step.t, step.h, state, estimate_error=False)
        t1 = end_time(step.t, step.h, step.jump, y0.dtype)
        end = solver.complete(func, t1, result.state, restart=step.restart or step.jump)
        if step.outputs:
            dense_at = dense_end(solver, func, step.t, step.h, result, end, step.jump)
            dense = solver.interpolant(step.h, state, dense_at, result.stages)
            outputs.fill(step.outputs, solver.solution(end), dense)
        state = end
    return outputs.ys


def double_backward(
    solver: Solver,
    func: CountedFunction,
    y0: torch.Tensor,
    params: Sequence[torch.Tensor],
    steps: Sequence[AcceptedStep],
    t0: float,
    grad_ys: torch.Tensor,
) -> tuple:
    """First derivatives that are themselves differentiable (``create_graph=True``).

    Replays the accepted steps from the saved ``y0`` with a graph, so the
    result depends on ``y0`` and the parameters to any order. Returns the
    gradients of ``y0`` and of each parameter (``None`` where not needed).
    """
    with torch.enable_grad():
        ys = replay(solver, func, y0, t0, steps)
        wanted = [x for x in (y0, *params) if x.requires_grad]
        found = iter(
            torch.autograd.grad(ys, wanted, grad_ys, create_graph=True, allow_unused=True)
            if ys.requires_grad and wanted
            else [None] * len(wanted)
        )
    grads = [next(found) if x.requires_grad else None for x in (y0, *params)]
    zeros = [
        torch.zeros_like(p) if g is None else g for g, p in zip(grads[1:], params, strict=True)
    ]
    return grads[0], *zeros


def run_record(method: GradientMethod, request: SolveRequest, **extra) -> tuple[dict, tuple]:
    """The ``run`` record an ``autograd.Function`` of a method shares between its passes:
    the method, solver, the checked forward function, a plain counted function for
    backward, the times, options and the ``Stats`` both passes fill. Returns it with
    the parameters that receive gradients."""
    func, y0 = request.func, request.y0
    params = collect_params(func, request.params)
    run = {
        "method": method,
        "solver": request.solver,
        "func": CheckedFunction(func, y0, params, method.name),
        "times": request.times,
        "options": request.options,
        "stats": Stats(),
        "backward_func": CountedFunction(func, y0),
        **extra,
    }
    return run, params


def apply_function(function: type[torch.autograd.Function], run: dict, y0, params):
    """``function.apply(run, y0, *params)``, counting the forward evaluations even if it fails."""
    try:
        ys = function.apply(run, y0, *params)
    finally:
        run["stats"].n_f_evals = run["func"].count
    return ys, run["stats"]


# ---------------------------------------------------------------------------- ACA and MALI


class RecordedMethod(GradientMethod):
    """A method that solves without a graph while recording the accepted steps, then
    sweeps them backwards, re-running each step with a graph (ACA, MALI).

    They differ only in where a step's start state comes from
    (:meth:`start_of`: stored, or rebuilt), what they keep
    (:attr:`keep_state_every`) and what they check at the end (:meth:`finish`).
    """

    #: Keep the start state of every K-th accepted step (``None``: none).
    keep_state_every: int | None = 1

    def solve(self, request: SolveRequest) -> tuple[torch.Tensor, Stats]:
        run, params = run_record(self, request)
        return apply_function(_Recorded, run, request.y0, params)

    @abstractmethod
    def start_of(self, step: AcceptedStep, end: Any, sweep: dict) -> Any:
        """The solver state at ``step``'s start, given the state at its end (values only).
        ``sweep`` is scratch space for the whole backward pass."""

    def finish(self, sweep: dict, y0: torch.Tensor, first_state: Any, run: dict) -> None:
        """Called after the sweep with the first step's start state (checks, stats);
        ``sweep`` holds the function, solver, options and steps of the backward pass."""


class _Recorded(torch.autograd.Function):
    @staticmethod
    def forward(ctx, run: dict, y0: torch.Tensor, *params: torch.Tensor) -> torch.Tensor:
        trajectory = integrate(
            run["solver"],
            run["func"],
            y0,
            run["times"],
            run["options"],
            run["stats"],
            record=True,
            keep_state_every=run["method"].keep_state_every,
        )
        ctx.run = run
        ctx.steps = trajectory.steps
        ctx.final = trajectory.final_state
        ctx.save_for_backward(y0, *params)
        return trajectory.ys

    @staticmethod
    def backward(ctx, grad_ys: torch.Tensor):
        run, steps = ctx.run, ctx.steps
        y0, *params = ctx.saved_tensors
        method, solver, times = run["method"], run["solver"], run["times"]
        func, stats = run["backward_func"], run["stats"]
        if torch.is_grad_enabled():
            t0 = initial_time(times, run["options"], y0.dtype)
            grads = double_backward(solver, func, y0, params, steps, t0, grad_ys)
            stats.n_f_evals_backward = func.count
            return (None, *grads)
        adjoint = RunningAdjoint(y0, solver.slope(ctx.final), len(params))
        sweep: dict = {"func": func, "solver": solver, "options": run["options"], "steps": steps}
        state = ctx.final
        for step in reversed(steps):
            adjoint.add_outputs_at_end(step, grad_ys)
            start = method.start_of(step, state, sweep)
            step_vjp(solver, func, step, start, adjoint, grad_ys, tuple(params), end=state)
            state = start
        method.finish(sweep, y0, state, run)
        adjoint.y = adjoint.y + grad_ys[0]
        if steps:  # the first step's second part is the initial state's (f(t0, y0))
            t0 = initial_time(times, run["options"], y0.dtype)
            adjoint.pull_through_start(solver, func, t0, y0, tuple(params))
        stats.n_f_evals_backward = func.count
        return (None, adjoint.y, *adjoint.parameter_gradients(params))
