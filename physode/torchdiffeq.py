"""torchdiffeq's interface over physode: ``import physode.torchdiffeq as torchdiffeq``.

``odeint``, ``odeint_adjoint`` and ``odeint_event`` take torchdiffeq's arguments, method
names, option names and default tolerances (``rtol=1e-7``, ``atol=1e-9``), and behave as
its functions do: tuple states, gradients with respect to ``t``, a fixed-grid method
without ``step_size`` steps between the output times, ``options={"jump_t": ...,
"perturb": ..., "norm": ...}``, ``adjoint_options={"norm": "seminorm"}``, events.
``odeint_adjoint`` also takes ``grad="aca"`` or ``grad="mali"`` (physode's checkpointed
and constant-memory gradients) in place of the continuous adjoint.

Deliberate differences:

- ``options["min_step"]``: a step that fails the error test at the minimum step is a
  :class:`physode.SolverError`, not accepted regardless of its error.
- A fixed-grid method's outputs between grid points come from the method's own dense
  output (cubic Hermite, or the tableau's continuous extension), not from linear
  interpolation; ``options["interp"]`` is accepted and has no effect.
- ``rk4`` is the classical fourth-order method (torchdiffeq's is the 3/8 rule, also of
  order 4). ``explicit_adams`` is fourth-order Adams-Bashforth and ``implicit_adams``
  (and ``fixed_adams``) the Adams-Bashforth-Moulton predictor-corrector with one
  correction (PECE); both start with RK4 steps rather than with lower orders, and
  ``max_order`` other than 4 is not provided.
- ``fehlberg2`` is torchdiffeq's pair: its error estimate is that of the first-order
  solution, so the propagated second-order one ends far past the tolerance (about 1000x
  on a rotation).

Not provided (an :class:`Unsupported` error naming the feature): ``scipy_solver``, the
implicit fixed-grid methods, complex states, ``options["step_t"]``, step callbacks
(``func.callback_step`` and the like) and a callable adjoint norm.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from . import events
from .gradients import ACA, MALI, Adjoint
from .odeint import solve
from .solvers import GridSteps, PIDController, make_solver

__all__ = ["Unsupported", "odeint", "odeint_adjoint", "odeint_event"]


class Unsupported(NotImplementedError):
    """A torchdiffeq feature that physode does not provide; the message starts with the
    feature's name."""


#: torchdiffeq's method names -> physode's.
METHODS = {
    "dopri8": "dopri8",
    "dopri5": "dopri5",
    "bosh3": "bosh3",
    "fehlberg2": "fehlberg2",
    "adaptive_heun": "heun_euler",
    "tsit5": "tsit5",
    "euler": "euler",
    "midpoint": "midpoint",
    "heun2": "heun",
    "heun3": "heun3",
    "rk4": "rk4",
    "explicit_adams": "ab4",
    "implicit_adams": "abm4",
    "fixed_adams": "abm4",
}
_NOT_PROVIDED = (
    "scipy_solver",
    "implicit_euler",
    "implicit_midpoint",
    "trapezoid",
    "radauIIA3",
    "gl4",
    "radauIIA5",
    "gl6",
    "sdirk2",
    "trbdf2",
)
#: Options of the adaptive step-size controller, by torchdiffeq's names.
_CONTROLLER = {"min_step", "max_step", "safety", "ifactor", "dfactor"}
_IGNORED = {"interp", "dtype", "eps"}
_KNOWN = {
    "step_size",
    "first_step",
    "max_num_steps",
    "jump_t",
    "perturb",
    "norm",
    "grid_constructor",
    "max_order",
    *_CONTROLLER,
    *_IGNORED,
}


_CALLBACKS = (
    "callback_step",
    "callback_accept_step",
    "callback_reject_step",
    "callback_step_adjoint",
    "callback_accept_step_adjoint",
    "callback_reject_step_adjoint",
)


def _method(method: str | None) -> str:
    name = "dopri5" if method is None else method
    if name in _NOT_PROVIDED:
        raise Unsupported(f"method {name!r}: not provided by physode.torchdiffeq")
    if name not in METHODS:
        raise ValueError(
            f"method: unknown method {name!r}; torchdiffeq's methods here: {', '.join(METHODS)}"
        )
    return METHODS[name]


def _leaves(y0: Any) -> list[torch.Tensor]:
    if isinstance(y0, torch.Tensor):
        return [y0]
    if isinstance(y0, dict):
        return list(y0.values())
    return list(y0)


def _solve_arguments(func, y0, t, rtol, atol, method, options) -> dict:
    """physode.solve's keyword arguments for torchdiffeq's."""
    if any(torch.is_complex(leaf) for leaf in _leaves(y0)):
        raise Unsupported("complex states: physode solves real float32/float64 states")
    for hook in _CALLBACKS:
        if callable(getattr(func, hook, None)):
            raise Unsupported(f"step callbacks: func.{hook} would not be called")
    name = _method(method)
    options = dict(options or {})
    unknown = sorted(set(options) - _KNOWN)
    if unknown == ["step_t"]:
        raise Unsupported("options['step_t']: use options['jump_t'] (which also restarts)")
    if unknown:
        raise ValueError(f"options: unknown option(s) {unknown}; known: {sorted(_KNOWN)}")
    if options.get("max_order", 4) != 4:
        raise Unsupported("options['max_order']: the Adams methods here are of order 4")
    solver = make_solver(name)
    kwargs: dict[str, Any] = {"method": name, "rtol": rtol, "atol": atol}
    if options.get("max_num_steps") is not None:
        kwargs["max_steps"] = int(options["max_num_steps"])
    for key in ("first_step", "jump_t", "norm"):
        if options.get(key) is not None:
            kwargs[key] = options[key]
    if options.get("perturb"):
        kwargs["perturb"] = True
    if solver.adaptive:
        limits = {k: float(v) for k, v in options.items() if k in _CONTROLLER}
        if limits:
            kwargs["controller"] = PIDController(**limits)
    elif options.get("step_size") is not None:
        kwargs["step_size"] = float(options["step_size"])
    else:
        # No step size: step on the grid torchdiffeq would use, the output times or
        # the user's grid.
        construct = options.get("grid_constructor")
        grid = t if construct is None else construct(func, y0, t)
        kwargs["controller"] = GridSteps(tuple(torch.as_tensor(grid).detach().cpu().tolist()))
    return kwargs


def odeint(
    func: Callable,
    y0: Any,
    t: torch.Tensor,
    *,
    rtol: float = 1e-7,
    atol: float = 1e-9,
    method: str | None = None,
    options: dict | None = None,
    event_fn: Callable | None = None,
) -> Any:
    """torchdiffeq's ``odeint``: the states at ``t`` (``(len(t), *y0.shape)``, or y0's
    tuple structure), differentiated by autograd through the solver. With
    ``event_fn``: ``(event_t, states at [t[0], event_t])``."""
    return _odeint(func, y0, t, rtol, atol, method, options, event_fn, "direct", ())


def odeint_adjoint(
    func: Callable,
    y0: Any,
    t: torch.Tensor,
    *,
    rtol: float = 1e-7,
    atol: float = 1e-9,
    method: str | None = None,
    options: dict | None = None,
    event_fn: Callable | None = None,
    adjoint_rtol: float | None = None,
    adjoint_atol: float | None = None,
    adjoint_method: str | None = None,
    adjoint_options: dict | None = None,
    adjoint_params: Sequence[torch.Tensor] | None = None,
    grad: str = "adjoint",
) -> Any:
    """torchdiffeq's ``odeint_adjoint``: gradients by the continuous adjoint (Chen et al.
    2018), or with ``grad="aca"`` / ``"mali"`` by physode's checkpointed (ACA) or
    constant-memory (MALI, with the ``alf`` method) reverse sweep. ``func`` must be an
    ``nn.Module`` unless ``adjoint_params`` names the tensors that need gradients."""
    if adjoint_params is None and not isinstance(func, nn.Module):
        raise ValueError(
            "func must be an instance of nn.Module to specify the adjoint parameters; "
            "alternatively they can be specified explicitly via the `adjoint_params` argument"
        )
    if grad == "adjoint":
        adjoint_options = dict(adjoint_options or {})
        norm = adjoint_options.pop("norm", None)
        if callable(norm):
            raise Unsupported("adjoint_options['norm'] callable: use 'seminorm' or none")
        if adjoint_options:
            raise ValueError(f"adjoint_options: unknown option(s) {sorted(adjoint_options)}")
        gradient = Adjoint(
            rtol=adjoint_rtol,
            atol=adjoint_atol,
            norm=norm,
            method=None if adjoint_method is None else _method(adjoint_method),
        )
    elif grad == "aca":
        gradient = ACA()
    elif grad == "mali":
        gradient = MALI()
        method = "alf" if method is None else method
    else:
        raise ValueError(f"grad: expected 'adjoint', 'aca' or 'mali', got {grad!r}")
    params = tuple(adjoint_params or ())
    return _odeint(func, y0, t, rtol, atol, method, options, event_fn, gradient, params)


def _odeint(func, y0, t, rtol, atol, method, options, event_fn, grad, params) -> Any:
    if method == "alf":  # physode's own, reachable through grad="mali"
        kwargs = {"method": "alf", "rtol": rtol, "atol": atol}
    else:
        kwargs = _solve_arguments(func, y0, t, rtol, atol, method, options)
    kwargs.update(grad=grad, params=params)
    if event_fn is not None:
        tt = torch.as_tensor(t)
        reverse = tt.numel() > 1 and bool(tt.reshape(-1)[1] < tt.reshape(-1)[0])
        if isinstance(kwargs.get("controller"), GridSteps):
            raise ValueError("options['step_size']: a fixed-grid event search needs a step size")
        return events.odeint_event(
            func, y0, tt.reshape(-1)[0], event_fn, reverse_time=reverse, **kwargs
        )
    return solve(func, y0, t, **kwargs).ys


def odeint_event(
    func: Callable,
    y0: Any,
    t0: torch.Tensor,
    *,
    event_fn: Callable,
    reverse_time: bool = False,
    odeint_interface: Callable = odeint,
    **kwargs: Any,
) -> tuple[torch.Tensor, Any]:
    """torchdiffeq's ``odeint_event``: ``(event_t, states at [t0, event_t])``, with
    ``odeint_interface`` (``odeint`` or ``odeint_adjoint``) choosing the gradients."""
    t = torch.stack([torch.as_tensor(t0).reshape(()), torch.as_tensor(t0).reshape(()) + 1.0])
    if reverse_time:
        t = torch.stack([t[0], t[0] - 1.0])
    return odeint_interface(func, y0, t, event_fn=event_fn, **kwargs)
