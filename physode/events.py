"""Events: solve until ``event_fn(t, y)`` crosses zero, with gradients of the event time.

The event is located in two passes. The first solves without a graph, checks the sign
of ``event_fn`` after each accepted step and, where it changed, finds the crossing on
the step's dense output (Illinois' regula falsi, to a few ulps of t). The second solves
to that time with the chosen gradient method, and the event time is made
differentiable by the implicit function theorem: with ``g(t, y(t; p)) = 0`` at
``t = t*``,

    dt*/dp = -(dg/dp) / (dg/dt + dg/dy . f(t*, y*)),

where ``dg/dp`` runs through ``y* = y(t*; y0, t0, params)``, so every gradient method
gives it. The state returned at the event moves with the event time:
``dy(t*)/dt* = f(t*, y*)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from ._tree import StateStructure
from .errors import SolverError
from .odeint import _Flat, solve


def _signs(g: torch.Tensor) -> torch.Tensor:
    return torch.sign(g.detach().reshape(-1))


class _Locator:
    """The ``stop`` hook of the first pass: after each accepted step, whether
    ``event_fn`` changed sign in it; if so, where (``self.time``)."""

    def __init__(self, event_fn: Callable, t0: float, y0: torch.Tensor) -> None:
        self.event_fn = event_fn
        self.sign0 = _signs(self._g(t0, y0))
        self.time: float | None = None

    def _g(self, t: float, y: torch.Tensor) -> torch.Tensor:
        return self.event_fn(torch.scalar_tensor(t, dtype=y.dtype, device=y.device), y)

    def _crossed(self, t: float, y: torch.Tensor) -> bool:
        s = _signs(self._g(t, y))
        # A channel that starts at exactly zero counts from its first non-zero sign.
        self.sign0 = torch.where(self.sign0 == 0, s, self.sign0)
        return bool(((s != self.sign0) & (self.sign0 != 0)).any())

    def __call__(self, t: float, h: float, y0, y1, dense: Callable) -> bool:
        if not self._crossed(t + h, y1):
            return False
        interpolant = dense()
        lo, hi = 0.0, 1.0  # not crossed at lo, crossed at hi (fractions of the step)
        for _ in range(200):
            if abs(hi - lo) * abs(h) <= 4 * math.ulp(abs(t) + abs(h)):
                break
            mid = 0.5 * (lo + hi)
            y = interpolant([mid])[0]
            s = _signs(self._g(t + mid * h, y))
            if bool(((s != self.sign0) & (self.sign0 != 0)).any()):
                hi = mid
            else:
                lo = mid
        self.time = t + hi * h
        return True


def odeint_event(
    func: Callable[[torch.Tensor, Any], Any],
    y0: Any,
    t0: float | torch.Tensor,
    event_fn: Callable[[torch.Tensor, Any], torch.Tensor],
    *,
    reverse_time: bool = False,
    t_max: float | None = None,
    **solve_options: Any,
) -> tuple[torch.Tensor, Any]:
    """Solve ``dy/dt = func(t, y)`` from ``(t0, y0)`` until ``event_fn(t, y)`` crosses zero.

    Args:
        func: the right-hand side, as for :func:`physode.solve`.
        y0: the initial state (a tensor, or a tuple/dict of tensors).
        t0: the start time (a number, or a 0-dim tensor; one that requires grad gets
            the gradient of the event time and of the state with respect to it).
        event_fn: ``event_fn(t, y) -> tensor``: one number, or several (the event is
            the first zero crossing of any of them). Differentiable in ``y`` and in any
            parameters it uses.
        reverse_time: search backwards in time from ``t0``.
        t_max: give up (a ``SolverError``) if no crossing has happened by this time
            (default: no bound but ``max_steps``).
        **solve_options: ``method``, ``grad``, ``rtol``, ``atol``, ``step_size``,
            ``max_steps``, ``params``, ... as for :func:`physode.solve`.

    Returns:
        ``(t_event, ys)``: the event time (0-dim tensor in y0's dtype) and the states
        at ``[t0, t_event]`` (``(2, *y0.shape)``, or y0's structure), both
        differentiable with respect to ``y0``, ``t0`` and the parameters.

    Raises:
        physode.SolverError: no crossing before ``t_max`` (or ``max_steps``).
        ValueError: bad input, or an event that the trajectory only touches
            (``dg/dt = 0`` there: its time has no derivative).
    """
    if not callable(event_fn):
        raise ValueError(f"event_fn: must be callable, got {type(event_fn).__name__}")
    structure, flat_y0 = StateStructure.of(y0)
    f = func if structure is None else _Flat(func, structure)

    def g(t, y):
        return event_fn(t, y if structure is None else structure.unflatten(y))

    t_start = t0 if isinstance(t0, torch.Tensor) else torch.tensor(float(t0), dtype=torch.float64)
    start = float(t_start.detach())
    direction = -1.0 if reverse_time else 1.0
    horizon = direction * math.inf if t_max is None else float(t_max)
    if direction * (horizon - start) <= 0:
        raise ValueError(f"t_max: {t_max} lies {'after' if reverse_time else 'before'} t0={start}")

    locator = _Locator(g, start, flat_y0.detach())
    with torch.no_grad():
        _locate(f, flat_y0.detach(), start, horizon, locator, solve_options)
    t_star = locator.time
    if t_star is None:
        raise SolverError(
            f"event_fn: no zero crossing between t0={start:.10g} and t_max={horizon:.10g}",
            t=horizon,
            h=None,
            n_steps=0,
            reason="no_event",
        )

    times = torch.stack(
        [t_start.to(torch.float64).reshape(()), torch.tensor(t_star, dtype=torch.float64)]
    )
    sol = solve(f, flat_y0, times, **solve_options)
    y_star = sol.ys[1]
    t_event = _event_time(f, g, t_star, y_star)
    # dy(t*)/dt* = f(t*, y*): the returned state moves with the event time.
    with torch.no_grad():
        slope = f(torch.scalar_tensor(t_star, dtype=y_star.dtype, device=y_star.device), y_star)
    y_end = y_star + slope * (t_event - t_star)
    ys = torch.stack([sol.ys[0], y_end])
    return t_event, ys if structure is None else structure.unflatten_series(ys)


def _locate(f, y0, start, horizon, locator, solve_options) -> None:
    from .gradients import make_gradient
    from .solvers.loop import CountedFunction, Stats, integrate

    options = dict(solve_options)
    options.pop("grad", None)
    options.pop("params", None)
    # The front door's own checks and choices, then the loop with the locator.
    from .odeint import _options
    from .solvers import make_solver

    method = options.pop("method", None)
    solver = make_solver(method if method is not None else make_gradient("direct").default_method)
    opts = _options(
        solver,
        options.pop("rtol", 1e-6),
        options.pop("atol", 1e-8),
        options.pop("step_size", None),
        options.pop("first_step", None),
        options.pop("max_steps", None),
        False,
        options.pop("controller", None),
        options.pop("norm", None),
        options.pop("jump_t", None),
        options.pop("perturb", False),
    )
    solver = solver.for_tolerances(opts.rtol, opts.atol)
    integrate(solver, CountedFunction(f, y0), y0, [start, horizon], opts, Stats(), stop=locator)


def _event_time(f, g, t_star: float, y_star: torch.Tensor) -> torch.Tensor:
    """``t*`` as a tensor whose derivative is the implicit function theorem's."""
    dtype, device = y_star.dtype, y_star.device
    with torch.enable_grad():
        tt = torch.tensor(t_star, dtype=dtype, device=device, requires_grad=True)
        yy = y_star.detach().requires_grad_()
        values = g(tt, yy).reshape(-1)
        k = int(values.detach().abs().argmin())  # the channel that crossed
        g_t, g_y = torch.autograd.grad(values[k], (tt, yy), allow_unused=True)
    with torch.no_grad():
        slope = f(torch.scalar_tensor(t_star, dtype=dtype, device=device), y_star.detach())
        rate = (0.0 if g_t is None else g_t) + (0.0 if g_y is None else (g_y * slope).sum())
        rate = torch.as_tensor(rate, dtype=dtype, device=device)
    if not bool(torch.isfinite(rate)) or float(rate) == 0.0:
        raise ValueError(
            f"event_fn: its rate of change along the solution is {float(rate):.3g} at the "
            f"event (t={t_star:.10g}); a zero that is only touched has no differentiable time"
        )
    value = g(torch.tensor(t_star, dtype=dtype, device=device), y_star).reshape(-1)[k]
    return t_star - (value - value.detach()) / rate
