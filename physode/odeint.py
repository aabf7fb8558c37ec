"""The front door: validate the inputs, pick the solver, the controller and the gradient
method, solve, and give the result back in the state's structure."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ._tree import StateStructure
from .gradients import GradientMethod, SolveRequest, make_gradient
from .solvers import FIXED_STEP_METHODS, Solver, make_solver
from .solvers.controller import ConstantStep, StepSizeController
from .solvers.loop import DEFAULT_MAX_STEPS, SolveOptions, Stats


@dataclass
class Solution:
    """The result of :func:`solve`.

    Attributes:
        ys: states at the output times: ``(len(t), *y0.shape)`` for a tensor ``y0``;
            for a tuple or dict ``y0``, the same structure with each leaf
            ``(len(t), *leaf.shape)``. In y0's dtype and on its device.
        t: the output times, float64 tensor of shape ``(len(t),)`` on the CPU.
        stats: function evaluations (forward; backward once gradients are
            computed), accepted and rejected steps, the controller's final state.
    """

    ys: Any
    t: torch.Tensor
    stats: Stats

    @property
    def controller_state(self):
        """The step-size controller's state at the end of the solve."""
        return self.stats.controller_state


def _positive(name: str, value, allow_zero: bool = False) -> float:
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: expected a number, got {value!r}") from None
    if not math.isfinite(x) or x < 0 or (x == 0 and not allow_zero):
        raise ValueError(f"{name}: must be a finite number > 0, got {value!r}")
    return x


def _times(t, name: str = "t", ordered: bool = True) -> tuple[list[float], torch.Tensor | None]:
    """The times as float64 numbers, and ``t`` itself when it requires grad.
    ``ordered``: they must be strictly monotonic (output times; not jump times)."""
    differentiable = t if isinstance(t, torch.Tensor) and t.requires_grad else None
    if isinstance(t, torch.Tensor):
        tt = t.detach().to(device="cpu", dtype=torch.float64)
    else:
        try:
            tt = torch.as_tensor(t, dtype=torch.float64)
        except (TypeError, ValueError, RuntimeError):
            raise ValueError(
                f"{name}: expected a 1-D tensor or sequence of times, got {t!r}"
            ) from None
    if tt.ndim != 1:
        raise ValueError(f"{name}: must be 1-D, got shape {tuple(tt.shape)}")
    if len(tt) == 0 and ordered:
        raise ValueError(f"{name}: needs at least one time (the start)")
    if not bool(torch.isfinite(tt).all()):
        raise ValueError(f"{name}: contains NaN or inf")
    if len(tt) > 1 and ordered:
        d = tt.diff()
        if not (bool((d > 0).all()) or bool((d < 0).all())):
            k = int(torch.nonzero(d * d[0].sign() <= 0)[0])
            raise ValueError(
                f"t: must be strictly increasing or strictly decreasing; "
                f"t[{k}]={tt[k].item():.10g} is followed by t[{k + 1}]={tt[k + 1].item():.10g}"
            )
    return tt.tolist(), differentiable


def _check_state(y0: torch.Tensor) -> None:
    if y0.dtype not in (torch.float32, torch.float64):
        raise ValueError(f"y0: must be float32 or float64, got {y0.dtype}")
    if y0.numel() == 0:
        raise ValueError("y0: is empty")


def _options(
    solver: Solver,
    rtol,
    atol,
    step_size,
    first_step,
    max_steps,
    land_on_outputs: bool,
    controller: StepSizeController | None,
    norm: Callable[[torch.Tensor], torch.Tensor] | None = None,
    jump_t=None,
    perturb: bool = False,
) -> SolveOptions:
    rtol = _positive("rtol", rtol)
    atol = _positive("atol", atol)
    if controller is not None:
        if not isinstance(controller, StepSizeController):
            raise ValueError(
                "controller: expected a physode.solvers.StepSizeController (PIDController, "
                f"ConstantStep), got {type(controller).__name__}"
            )
        if step_size is not None:
            raise ValueError(
                "step_size: give either step_size or controller (ConstantStep(step_size) "
                "is the same as step_size)"
            )
    if step_size is not None:
        step_size = _positive("step_size", step_size)
        controller = ConstantStep(step_size)
    elif controller is None and not solver.adaptive:
        raise ValueError(
            f"step_size: method {solver.name!r} is a fixed-step method and needs step_size "
            f"(fixed-step methods: {', '.join(FIXED_STEP_METHODS)})"
        )
    options = SolveOptions(
        rtol=rtol,
        atol=atol,
        step_size=step_size,
        first_step=None if first_step is None else _positive("first_step", first_step),
        max_steps=DEFAULT_MAX_STEPS if max_steps is None else max_steps,
        land_on_outputs=bool(land_on_outputs),
        controller=controller,
        norm=norm,
        jump_times=() if jump_t is None else tuple(_times(jump_t, "jump_t", ordered=False)[0]),
        perturb=bool(perturb),
    )
    if (
        isinstance(options.max_steps, bool)
        or not isinstance(options.max_steps, int)
        or (options.max_steps < 1)
    ):
        raise ValueError(f"max_steps: must be a positive integer, got {max_steps!r}")
    options.controller_for(solver).check(solver)
    return options


class _Flat(nn.Module):
    """A right-hand side on structured states, as the engine calls it: on one flat vector.
    The user's module is a submodule, so that its parameters are found."""

    def __init__(self, func: Callable, structure: StateStructure) -> None:
        super().__init__()
        self.func = func
        self.structure = structure

    def forward(self, t: torch.Tensor, flat: torch.Tensor) -> torch.Tensor:
        return self.structure.flatten(self.func(t, self.structure.unflatten(flat)))


class _StructuredNorm:
    """A user's norm on structured states, as the loop calls it: on the flat scaled error."""

    def __init__(self, norm: Callable, structure: StateStructure) -> None:
        self.norm, self.structure = norm, structure

    def __call__(self, scaled: torch.Tensor) -> Any:
        return self.norm(self.structure.unflatten(scaled))


def _slopes(func: Callable, times: Sequence[float], ys: torch.Tensor) -> torch.Tensor:
    """``f(t_k, y_k)`` for each row of ``ys`` (no graph)."""
    with torch.no_grad():
        return torch.stack(
            [
                func(torch.scalar_tensor(t, dtype=y.dtype, device=y.device), y)
                for t, y in zip(times, ys, strict=True)
            ]
        )


def solve(
    func: Callable[[torch.Tensor, Any], Any],
    y0: Any,
    t,
    method: str | Solver | None = None,
    grad: str | GradientMethod = "direct",
    rtol: float = 1e-6,
    atol: float = 1e-8,
    step_size: float | None = None,
    max_steps: int | None = None,
    *,
    controller: StepSizeController | None = None,
    first_step: float | None = None,
    land_on_outputs: bool = False,
    norm: Callable[[Any], torch.Tensor | float] | None = None,
    jump_t: Sequence[float] | torch.Tensor | None = None,
    perturb: bool = False,
    params: Sequence[torch.Tensor] | None = None,
) -> Solution:
    """Solve ``dy/dt = func(t, y)`` from ``y(t[0]) = y0`` and return the states at ``t``.

    Args:
        func: the right-hand side ``func(t, y)``: ``t`` a 0-dim tensor in
            y's dtype and device, returns dy/dt with y's shape (and structure).
            Usually an ``nn.Module`` whose parameters receive gradients.
        y0: initial state: a float32 or float64 tensor of any shape ``S``
            (leading dimensions are batch; one step size serves the whole
            batch), or a tuple, list or dict of such tensors (one dtype and
            device), e.g. ``(z, logp)``. The error norm runs over all of it.
        t: output times, 1-D, strictly increasing or strictly decreasing;
            ``t[0]`` is the start. Held in float64 internally. A tensor that
            requires grad receives gradients with respect to every time (the
            start and the outputs), for every gradient method.
        method: ``euler``, ``midpoint``, ``heun``, ``heun3``, ``rk4``, ``ab4``, ``abm4``
            (fixed step, need ``step_size``); ``heun_euler``, ``fehlberg2``, ``bosh3``,
            ``dopri5``, ``tsit5``, ``dopri8`` (adaptive); ``radau5``, ``rodas5p``,
            ``kvaerno5`` (implicit, for stiff problems:
            ``physode.solvers.STIFF_METHODS``); ``alf`` (asynchronous leapfrog,
            adaptive or fixed); or a :class:`physode.solvers.Solver` object. Default: the gradient
            method's (``dopri5``, or ``alf`` for MALI).
        grad: how gradients are computed: a :class:`physode.gradients.GradientMethod`
            (``physode.Direct()``, ``physode.Adjoint(rtol=...)``, ``physode.ACA()``,
            ``physode.MALI(checkpoint_every=...)``) or its name: ``direct`` (autograd
            through every operation of the solver); ``adjoint`` (reverse-time
            augmented ODE, Chen et al. 2018); ``aca`` (Adaptive Checkpoint Adjoint:
            stored accepted states, each step re-run locally in backward); ``mali``
            (ALF only: final state and step sizes stored, states rebuilt with the
            exact inverse step; memory constant in the number of steps). ``direct``,
            ``aca`` and ``mali`` support double backward.
        rtol, atol: relative and absolute tolerances of the adaptive methods.
            The error norm is the RMS over the whole state of
            ``err / (atol + rtol * max(|y|, |y_new|))``.
        step_size: fixed step (in t's units): ``controller=ConstantStep(step_size)``.
            Required by the fixed-step methods.
        max_steps: bound on accepted plus rejected steps (default 100 000).
        controller: the step-size controller
            (:class:`physode.solvers.PIDController` with its coefficients, safety,
            growth limits and ``min_step``/``max_step``, or
            :class:`physode.solvers.ConstantStep`); default: a PI controller.
        first_step: initial step of an adaptive solve (default: chosen as in
            Hairer, Norsett & Wanner II.4).
        land_on_outputs: end steps exactly on every output time instead of
            interpolating between steps.
        norm: the error norm of a step, in place of the RMS: called with the scaled
            error ``err / (atol + rtol * max(|y|, |y_new|))`` in ``y0``'s structure,
            returns one number; a step is accepted when it is <= 1 (e.g. the max norm,
            or a norm that ignores a component). The first step's heuristic keeps the RMS.
        jump_t: times (in t's units) where ``func`` jumps: steps end exactly on each,
            ``func`` is evaluated one-sided within a step (``t_j-`` before, ``t_j+``
            after) and the solver restarts past it, so no step straddles a jump.
        perturb: treat every step's end as such a jump (for a fixed grid placed on the
            discontinuities of ``func``): ``func`` is never evaluated exactly on a grid
            point, only just inside the step.
        params: tensors that ``func`` closes over and that need gradients
            (needed by every gradient method but ``direct``; an ``nn.Module``'s
            own parameters are found automatically).

    Returns:
        A :class:`Solution` with ``ys`` in ``y0``'s structure.

    Raises:
        ValueError: for bad input, naming the argument.
        physode.SolverError: when the solve cannot finish (too many steps,
            step size underflow, a non-finite state).
    """
    if not callable(func):
        raise ValueError(f"func: must be callable, got {type(func).__name__}")
    structure, flat_y0 = StateStructure.of(y0)
    _check_state(flat_y0)
    times, t_grad = _times(t)
    gradient = make_gradient(grad)
    solver = make_solver(method if method is not None else gradient.default_method)
    gradient.check_solver(solver)
    if norm is not None and not callable(norm):
        raise ValueError(f"norm: must be callable (scaled error -> number), got {norm!r}")
    flat_norm = norm if norm is None or structure is None else _StructuredNorm(norm, structure)
    options = _options(
        solver,
        rtol,
        atol,
        step_size,
        first_step,
        max_steps,
        land_on_outputs,
        controller,
        flat_norm,
        jump_t,
        perturb,
    )
    f = func if structure is None else _Flat(func, structure)
    start = flat_y0
    if t_grad is not None:
        # d y(t_k) / d t0 = -(d y(t_k) / d y0) f(t0, y0): a start shifted by dt0 is a
        # start state moved by -f dt0. The value is y0's; only the derivative is added.
        shift = (t_grad[0] - t_grad[0].detach()).to(flat_y0.dtype)
        start = flat_y0 - shift * _slopes(f, times[:1], flat_y0.unsqueeze(0))[0]
    solver = solver.for_tolerances(options.rtol, options.atol)
    request = SolveRequest(f, start, times, solver, options, tuple(params or ()))
    ys, stats = gradient.solve(request)
    if t_grad is not None:
        # d y(t_k) / d t_k = f(t_k, y(t_k)); y(t0) is y0 whatever t0 is.
        rest = ys[1:]
        if len(times) > 1:
            shifts = (t_grad[1:] - t_grad[1:].detach()).to(ys.dtype)
            shifts = shifts.reshape(-1, *[1] * (ys.dim() - 1))
            rest = rest + shifts * _slopes(f, times[1:], rest.detach())
        ys = torch.cat([flat_y0.unsqueeze(0), rest])
        stats.n_f_evals += len(times)
    out = ys if structure is None else structure.unflatten_series(ys)
    return Solution(ys=out, t=torch.tensor(times, dtype=torch.float64), stats=stats)


def odeint(
    func: Callable[[torch.Tensor, Any], Any],
    y0: Any,
    t,
    method: str | Solver | None = None,
    grad: str | GradientMethod = "direct",
    rtol: float = 1e-6,
    atol: float = 1e-8,
    step_size: float | None = None,
    max_steps: int | None = None,
    **kwargs,
) -> Any:
    """States at the times ``t`` (``(len(t), *y0.shape)``, or ``y0``'s structure):
    :func:`solve` without the statistics."""
    return solve(
        func,
        y0,
        t,
        method=method,
        grad=grad,
        rtol=rtol,
        atol=atol,
        step_size=step_size,
        max_steps=max_steps,
        **kwargs,
    ).ys
