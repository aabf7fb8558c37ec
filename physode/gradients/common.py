"""Pieces shared by the gradient methods that run the forward solve without a graph."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from ..solvers.base import Solver
from ..solvers.loop import AcceptedStep, CountedFunction, OutputBlocks
from .options import SolveRequest


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


def make_state(template, y: torch.Tensor, d: torch.Tensor):
    """A solver state of ``template``'s kind from its two differentiable parts
    (the rest, such as ALF's step count, is copied)."""
    return type(template)(y, d, *template[2:])


class RunningAdjoint:
    """The adjoint carried backwards through the accepted steps.

    ``y`` is dL/dy and ``d`` dL/dd at the current time (``d`` the state's second
    part: the derivative for Runge-Kutta, the velocity for ALF; ``None`` stands
    for zero), ``params`` the parameter gradients gathered so far (``None``:
    none yet). Kept in one object and replaced as each step is pulled back, so
    no stale copy outlives the step that needed it: MALI's memory must not grow.
    """

    def __init__(self, y0: torch.Tensor, n_params: int) -> None:
        self.y = torch.zeros_like(y0)
        self.d: torch.Tensor | None = torch.zeros_like(y0)
        self.params: list = [None] * n_params

    def add_outputs_at_end(self, step: AcceptedStep, grad_ys: torch.Tensor) -> None:
        """Add dL/dy of the outputs that lie exactly at ``step``'s end."""
        for k, theta in step.outputs:
            if theta == 1.0:
                self.y = self.y + grad_ys[k]

    def add_params(self, grads: Sequence) -> None:
        add_grads(self.params, grads)

    def pull_through_slope(
        self, func: CountedFunction, t: float, y: torch.Tensor, params: tuple[torch.Tensor, ...]
    ) -> None:
        """Pull ``d`` back through ``d = f(t, y)`` into ``y`` and the parameters (``d`` -> 0)."""
        if self.d is None:
            return
        dy, grads = slope_vjp(func, t, y, self.d, params)
        self.d = None
        self.add_params(grads)
        self.y = self.y + dy

    def parameter_gradients(self, params: Sequence[torch.Tensor]) -> tuple:
        return zeros_for_unused(self.params, params)


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
    if split:
        adjoint.pull_through_slope(func, step.t + step.h, end[0], params)
    with torch.enable_grad():
        y = state0[0].detach().requires_grad_()
        d = state0[1].detach().requires_grad_()
        start = make_state(state0, y, d)
        result = solver.step(func, step.t, step.h, start, estimate_error=False)
        rerun_end = solver.complete(
            func, step.t + step.h, result.state, restart=step.restart, gradient_restart=not split
        )
        outs, cotangents = [rerun_end[0]], [adjoint.y]
        if adjoint.d is not None:
            outs.append(rerun_end[1])
            cotangents.append(adjoint.d)
        if inner:
            dense = solver.interpolant(step.h, start, rerun_end, result.stages)
            outs.append(dense([th for _, th in inner]))
            cotangents.append(grad_ys[[k for k, _ in inner]])
        grads = torch.autograd.grad(outs, (y, d, *params), cotangents, allow_unused=True)
    adjoint.y = torch.zeros_like(y) if grads[0] is None else grads[0]
    adjoint.d = grads[1]
    adjoint.add_params(grads[2:])


def slope_vjp(
    func: CountedFunction,
    t0: float,
    y0: torch.Tensor,
    a_d: torch.Tensor,
    params: tuple[torch.Tensor, ...],
) -> tuple[torch.Tensor, tuple]:
    """Pull ``dL/dd`` back through ``d = f(t0, y0)`` (the initial slope, or a gradient
    restart's): returns dL/dy0 and the parameter gradients."""
    with torch.enable_grad():
        y = y0.detach().requires_grad_()
        grads = torch.autograd.grad(func(t0, y), (y, *params), a_d, allow_unused=True)
    return grads[0], grads[1:]


def add_grads(total: list, new: Sequence) -> None:
    """Accumulate parameter gradients in place (``None`` means zero)."""
    for i, g in enumerate(new):
        if g is not None:
            total[i] = g if total[i] is None else total[i] + g


def zeros_for_unused(grads: Sequence, params: Sequence[torch.Tensor]) -> tuple:
    return tuple(
        torch.zeros_like(p) if g is None else g for g, p in zip(grads, params, strict=True)
    )


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
        result = solver.step(func, step.t, step.h, state, estimate_error=False)
        end = solver.complete(func, step.t + step.h, result.state, restart=step.restart)
        if step.outputs:
            dense = solver.interpolant(step.h, state, end, result.stages)
            outputs.fill(step.outputs, end[0], dense)
        state = end
    return outputs.ys


def double_backward(
    solver: Solver,
    func: CountedFunction,
    y0: torch.Tensor,
    params: Sequence[torch.Tensor],
    steps: Sequence[AcceptedStep],
    times: Sequence[float],
    grad_ys: torch.Tensor,
) -> tuple:
    """First derivatives that are themselves differentiable (``create_graph=True``).

    Replays the accepted steps from the saved ``y0`` with a graph, so the
    result depends on ``y0`` and the parameters to any order. Returns the
    gradients of ``y0`` and of each parameter (``None`` where not needed).
    """
    with torch.enable_grad():
        ys = replay(solver, func, y0, times[0], steps)
        inputs = [x for x in (y0, *params) if x.requires_grad]
        found = iter(torch.autograd.grad(ys, inputs, grad_ys, create_graph=True, allow_unused=True))
    grads = [next(found) if x.requires_grad else None for x in (y0, *params)]
    return grads[0], *zeros_for_unused(grads[1:], params)


def apply_method(
    function: type[torch.autograd.Function], name: str, request: SolveRequest, **extra
):
    """Run a gradient method's ``autograd.Function`` with the shared ``run`` record.

    ``run`` holds the solver, the checked forward function, a plain counted
    function for backward, the times, options and the ``Stats`` that both
    passes fill; ``extra`` adds method-specific entries.
    """
    from ..solvers.loop import Stats

    func, y0 = request.func, request.y0
    params = collect_params(func, request.params)
    stats = Stats()
    counted = CheckedFunction(func, y0, params, name)
    run = {
        "solver": request.solver,
        "func": counted,
        "times": request.times,
        "options": request.options,
        "stats": stats,
        "backward_func": CountedFunction(func, y0),
        **extra,
    }
    try:
        ys = function.apply(run, y0, *params)
    finally:
        stats.n_f_evals = counted.count
    return ys, stats


def recorded_forward(ctx, run: dict, y0: torch.Tensor, params, keep_state_every: int | None):
    """The forward pass of ACA and MALI: solve without a graph, recording the accepted steps
    (start states every ``keep_state_every`` steps) on ``ctx``; returns the stacked outputs."""
    from ..solvers.loop import integrate

    trajectory = integrate(
        run["solver"],
        run["func"],
        y0,
        run["times"],
        run["options"],
        run["stats"],
        record=True,
        keep_state_every=keep_state_every,
    )
    ctx.run = run
    ctx.steps = trajectory.steps
    ctx.final = trajectory.final_state
    ctx.save_for_backward(y0, *params)
    return trajectory.ys
