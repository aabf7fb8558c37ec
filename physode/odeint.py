"""The front door: validate the inputs, pick the solver and the gradient method, solve."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from ._checks import optional_positive_int
from .gradients import GRADIENT_METHODS, GradientOptions, SolveRequest
from .solvers import FIXED_STEP_METHODS, Solver, make_solver
from .solvers.loop import DEFAULT_MAX_STEPS, SolveOptions, Stats


@dataclass
class Solution:
    """The result of :func:`solve`.

    Attributes:
        ys: states at the output times, shape ``(len(t), *y0.shape)``, y0's dtype and device.
        t: the output times, float64 tensor of shape ``(len(t),)`` on the CPU.
        stats: function evaluations (forward; backward once gradients are
            computed), accepted and rejected steps.
    """

    ys: torch.Tensor
    t: torch.Tensor
    stats: Stats


def _positive(name: str, value, allow_zero: bool = False) -> float:
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: expected a number, got {value!r}") from None
    if not math.isfinite(x) or x < 0 or (x == 0 and not allow_zero):
        raise ValueError(f"{name}: must be a finite number > 0, got {value!r}")
    return x


def _times(t) -> list[float]:
    if isinstance(t, torch.Tensor):
        if t.requires_grad:
            raise ValueError(
                "t: gradients with respect to the output times are not supported; pass t.detach()"
            )
        tt = t.detach().to(device="cpu", dtype=torch.float64)
    else:
        try:
            tt = torch.as_tensor(t, dtype=torch.float64)
        except (TypeError, ValueError, RuntimeError):
            raise ValueError(f"t: expected a 1-D tensor or sequence of times, got {t!r}") from None
    if tt.ndim != 1:
        raise ValueError(f"t: must be 1-D, got shape {tuple(tt.shape)}")
    if len(tt) == 0:
        raise ValueError("t: needs at least one time (the start)")
    if not bool(torch.isfinite(tt).all()):
        raise ValueError("t: contains NaN or inf")
    if len(tt) > 1:
        d = tt.diff()
        if not (bool((d > 0).all()) or bool((d < 0).all())):
            k = int(torch.nonzero(d * d[0].sign() <= 0)[0])
            raise ValueError(
                f"t: must be strictly increasing or strictly decreasing; "
                f"t[{k}]={tt[k].item():.10g} is followed by t[{k + 1}]={tt[k + 1].item():.10g}"
            )
    return tt.tolist()


def _check_state(y0) -> None:
    if not isinstance(y0, torch.Tensor):
        raise ValueError(f"y0: expected a tensor, got {type(y0).__name__}")
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
    min_step,
    max_step,
    max_steps,
    land_on_outputs: bool,
) -> SolveOptions:
    rtol = _positive("rtol", rtol)
    atol = _positive("atol", atol)
    if step_size is not None:
        step_size = _positive("step_size", step_size)
    elif solver.error_order is None:
        raise ValueError(
            f"step_size: method {solver.name!r} is a fixed-step method and needs step_size "
            f"(fixed-step methods: {', '.join(FIXED_STEP_METHODS)})"
        )
    if first_step is not None:
        first_step = _positive("first_step", first_step)
    min_step = 0.0 if min_step is None else _positive("min_step", min_step, allow_zero=True)
    max_step = math.inf if max_step is None else _positive("max_step", max_step)
    if min_step > max_step:
        raise ValueError(f"min_step: {min_step} is larger than max_step={max_step}")
    if max_steps is None:
        max_steps = DEFAULT_MAX_STEPS
    elif isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 1:
        raise ValueError(f"max_steps: must be a positive integer, got {max_steps!r}")
    return SolveOptions(
        rtol=rtol,
        atol=atol,
        step_size=step_size,
        first_step=first_step,
        min_step=min_step,
        max_step=max_step,
        max_steps=max_steps,
        land_on_outputs=bool(land_on_outputs),
    )


def _gradient_options(adjoint_rtol, adjoint_atol, checkpoint_every, on_drift) -> GradientOptions:
    if adjoint_rtol is not None:
        adjoint_rtol = _positive("adjoint_rtol", adjoint_rtol)
    if adjoint_atol is not None:
        adjoint_atol = _positive("adjoint_atol", adjoint_atol)
    optional_positive_int("mali_checkpoint_every", checkpoint_every)
    if on_drift not in ("warn", "error"):
        raise ValueError(f"mali_on_drift: must be 'warn' or 'error', got {on_drift!r}")
    return GradientOptions(adjoint_rtol, adjoint_atol, checkpoint_every, on_drift)


def solve(
    func: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    y0: torch.Tensor,
    t,
    method: str | Solver | None = None,
    grad: str = "direct",
    rtol: float = 1e-6,
    atol: float = 1e-8,
    step_size: float | None = None,
    max_steps: int | None = None,
    *,
    first_step: float | None = None,
    min_step: float | None = None,
    max_step: float | None = None,
    land_on_outputs: bool = False,
    params: Sequence[torch.Tensor] | None = None,
    adjoint_rtol: float | None = None,
    adjoint_atol: float | None = None,
    mali_checkpoint_every: int | None = None,
    mali_on_drift: str = "warn",
) -> Solution:
    """Solve ``dy/dt = func(t, y)`` from ``y(t[0]) = y0`` and return the states at ``t``.

    Args:
        func: the right-hand side ``func(t, y)``: ``t`` a 0-dim tensor in
            y's dtype and device, returns dy/dt with y's shape. Usually an
            ``nn.Module`` whose parameters receive gradients.
        y0: initial state, float32 or float64, any shape ``S`` (leading
            dimensions are batch; one step size serves the whole batch).
        t: output times, 1-D, strictly increasing or strictly decreasing;
            ``t[0]`` is the start. Held in float64 internally.
        method: ``euler``, ``midpoint``, ``heun``, ``rk4`` (fixed step, need
            ``step_size``); ``heun_euler``, ``bosh3``, ``dopri5``, ``tsit5``
            (adaptive); ``alf`` (asynchronous leapfrog, adaptive or fixed); or
            a solver object such as ``physode.solvers.AsyncLeapfrog(eta=0.9)``.
            Default: ``dopri5``, or ``alf`` with ``grad="mali"``.
        grad: how gradients are computed: ``direct`` (autograd through every
            operation of the solver); ``adjoint`` (reverse-time augmented ODE,
            Chen et al. 2018); ``aca`` (Adaptive Checkpoint Adjoint: stored
            accepted states, each step re-run locally in backward); ``mali``
            (ALF only: final state and step sizes stored, states rebuilt with
            the exact inverse step; memory constant in the number of steps).
            ``aca`` and ``mali`` support double backward.
        rtol, atol: relative and absolute tolerances of the adaptive methods.
            The error norm is the RMS over the whole state of
            ``err / (atol + rtol * max(|y|, |y_new|))``.
        step_size: fixed step (in t's units). Required by the fixed-step
            methods; with an adaptive method it switches adaptivity off.
        max_steps: bound on accepted plus rejected steps (default 100 000).
        first_step: initial step of an adaptive solve (default: chosen as in
            Hairer, Norsett & Wanner II.4).
        min_step, max_step: bounds on the adaptive step size. A step that
            fails the error test at ``min_step`` raises ``SolverError``.
        land_on_outputs: end steps exactly on every output time instead of
            interpolating between steps.
        params: tensors that ``func`` closes over and that need gradients
            (needed by every gradient method but ``direct``; an ``nn.Module``'s
            own parameters are found automatically).
        adjoint_rtol, adjoint_atol: tolerances of the reverse solve of
            ``grad="adjoint"`` (default: ``rtol``, ``atol``).
        mali_checkpoint_every: with ``grad="mali"``, keep an exact state every
            K steps, bounding the reconstruction drift at memory O(N/K).
        mali_on_drift: ``"warn"`` (default) or ``"error"`` when MALI's rebuilt
            states drift from the true ones by more than the tolerance.

    Returns:
        A :class:`Solution` with ``ys`` of shape ``(len(t), *S)``.

    Raises:
        ValueError: for bad input, naming the argument.
        physode.SolverError: when the solve cannot finish (too many steps,
            step size underflow, a non-finite state).
    """
    if not callable(func):
        raise ValueError(f"func: must be callable, got {type(func).__name__}")
    _check_state(y0)
    times = _times(t)
    if grad not in GRADIENT_METHODS:
        raise ValueError(
            f"grad: unknown gradient method {grad!r}; choose one of {', '.join(GRADIENT_METHODS)}"
        )
    solver = make_solver(method if method is not None else ("alf" if grad == "mali" else "dopri5"))
    grad_options = _gradient_options(
        adjoint_rtol, adjoint_atol, mali_checkpoint_every, mali_on_drift
    )
    options = _options(
        solver, rtol, atol, step_size, first_step, min_step, max_step, max_steps, land_on_outputs
    )
    params = tuple(params) if params is not None else ()
    request = SolveRequest(func, y0, times, solver, options, params, grad_options)
    ys, stats = GRADIENT_METHODS[grad](request)
    return Solution(ys=ys, t=torch.tensor(times, dtype=torch.float64), stats=stats)


def odeint(
    func: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    y0: torch.Tensor,
    t,
    method: str | Solver | None = None,
    grad: str = "direct",
    rtol: float = 1e-6,
    atol: float = 1e-8,
    step_size: float | None = None,
    max_steps: int | None = None,
    **kwargs,
) -> torch.Tensor:
    """States at the times ``t``, shape ``(len(t), *y0.shape)``: :func:`solve` without stats."""
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
