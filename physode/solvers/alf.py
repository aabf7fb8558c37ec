"""The asynchronous leapfrog (ALF) step of MALI (Zhuang et al. 2021) and its exact inverse."""

from __future__ import annotations

from typing import NamedTuple

import torch

from .._checks import optional_positive_int
from .base import StepFunction, StepResult
from .interpolation import hermite_dense


class ALFState(NamedTuple):
    """ALF carries a velocity ``v`` (an estimate of dz/dt) beside the solution ``z``.

    ``slope_change`` is ``(u - v) / h`` of the step that produced this state,
    kept (without a graph) for the next step's error estimate; ``None`` at the
    start and on states rebuilt by the inverse step. ``count`` is the number
    of accepted steps since the velocity was last set to ``f(t, z)``; on a
    state where that just happened, ``pre_restart_v`` keeps the velocity it
    replaced, which is what the inverse step needs to go back past it.
    """

    z: torch.Tensor
    v: torch.Tensor
    slope_change: torch.Tensor | None = None
    count: int = 0
    pre_restart_v: torch.Tensor | None = None

    @property
    def restarted(self) -> bool:
        """Whether this state's velocity was just restarted (MALI must keep such states)."""
        return self.pre_restart_v is not None


class AsyncLeapfrog:
    """Asynchronous leapfrog: a second-order, explicitly invertible one-step method.

    Forward step from ``(z, v)`` at ``t`` with step ``h``::

        z_half = z + h/2 v;  u = f(t + h/2, z_half)
        v' = v + 2 eta (u - v);  z' = z_half + h/2 v'

    and its inverse rebuilds ``(z, v)`` from ``(z', v')`` with one evaluation.

    Local error estimate. The reference estimate ``h (u - v)`` is the local
    error of an Euler step, O(h^2), while ALF's own local error is O(h^3):
    a controller fed with it takes far more steps than the tolerance needs.
    With ``eta = 1`` physode removes the smooth O(h^2) part by differencing
    against the previous accepted step, ``E = h^2 (q_i - q_{i-1})`` with
    ``q = (u - v) / h``. Both what remains (the change of the solution's
    second derivative across a step, and ALF's alternating velocity error)
    are O(h^3), the order of the true local error; so the estimate is used
    with error_order 2. The first step, having no predecessor, uses the
    reference estimate. With ``eta < 1`` the update keeps a
    ``(1 - eta) h (v - u)`` term and the method is first order, so the
    reference estimate is the right one and is used.

    Velocity restarts. With ``eta = 1`` ALF is only neutrally stable: the
    velocity carries a parasitic mode ``(-1)^i e`` that no step damps, and on
    contracting dynamics (van der Pol's limit cycle, say) it grows until the
    solve fails. ``restart_every=K`` sets ``v = f(t, z)`` after every K
    accepted steps (one extra evaluation), which removes the mode while
    keeping the method second order and invertible: the replaced velocity
    is kept on the restarted state, so MALI stores one state per restart
    (memory O(N/K)) and goes back past it exactly.

    Args:
        eta: damping in (0, 1]; ``eta = 0.5`` makes the inverse singular.
        restart_every: restart the velocity after every this many accepted
            steps; ``None`` (default) never restarts, keeping MALI's memory
            constant in the number of steps.
    """

    name = "alf"
    order = 2
    failure_hint = (
        "ALF with eta=1 is only neutrally stable: on contracting (dissipative) dynamics its "
        "velocity error grows step after step; restart the velocity more often "
        "(AsyncLeapfrog(restart_every=K) with a smaller K) or use another method"
    )

    def __init__(self, eta: float = 1.0, restart_every: int | None = 100) -> None:
        eta = float(eta)
        if not 0.0 < eta <= 1.0:
            raise ValueError(f"eta: the ALF damping must lie in (0, 1], got {eta}")
        if abs(2.0 * eta - 1.0) < 1e-6:
            raise ValueError(
                "eta: 0.5 makes the inverse ALF step divide by 2*eta - 1 = 0; "
                "choose a value away from 0.5 (1.0 is the usual choice)"
            )
        self.eta = eta
        self.restart_every = optional_positive_int("restart_every", restart_every)
        self.error_order = 2 if eta == 1.0 else 1
        if eta != 1.0:
            self.order = 1

    def __repr__(self) -> str:
        return f"AsyncLeapfrog(eta={self.eta}, restart_every={self.restart_every})"

    def init(self, func: StepFunction, t0: float, z0: torch.Tensor) -> ALFState:
        return ALFState(z0, func(t0, z0))

    def step(self, func: StepFunction, t: float, h: float, state: ALFState) -> StepResult:
        z, v, previous = state.z, state.v, state.slope_change
        z_half = z.add(v, alpha=0.5 * h)
        u = func(t + 0.5 * h, z_half)
        v1 = v.add(u - v, alpha=2.0 * self.eta)
        z1 = z_half.add(v1, alpha=0.5 * h)
        with torch.no_grad():
            slope_change = (u - v) / h
            if previous is None or self.eta != 1.0:
                error = slope_change * (h * h)
            else:
                error = (slope_change - previous) * (h * h)
        return StepResult(ALFState(z1, v1, slope_change, state.count), error, None)

    def inverse(self, func: StepFunction, t: float, h: float, state: ALFState) -> ALFState:
        """Rebuild the state at ``t`` from the state at ``t + h`` (one evaluation)."""
        z1 = state.z
        v1 = state.v if state.pre_restart_v is None else state.pre_restart_v
        z_half = z1.add(v1, alpha=-0.5 * h)
        u = func(t + 0.5 * h, z_half)
        v = (u * (2.0 * self.eta) - v1) / (2.0 * self.eta - 1.0)
        count = state.count - 1 if state.count > 0 else (self.restart_every or 1) - 1
        return ALFState(z_half.add(v, alpha=-0.5 * h), v, None, count)

    def complete(self, func: StepFunction, t: float, state: ALFState) -> ALFState:
        count = state.count + 1
        if self.restart_every is None or count < self.restart_every:
            return state._replace(count=count)
        return ALFState(state.z, func(t, state.z), state.slope_change, 0, state.v)

    def interpolant(self, h: float, state0: ALFState, state1: ALFState, stages):
        return hermite_dense(state0.z, state1.z, state0.v, state1.v, h)
