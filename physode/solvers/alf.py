"""The asynchronous leapfrog (ALF) step of MALI (Zhuang et al. 2021) and its exact inverse."""

from __future__ import annotations

from typing import NamedTuple

import torch

from .base import StepFunction, StepResult
from .interpolation import hermite_dense


class ALFState(NamedTuple):
    """ALF carries a velocity ``v`` (an estimate of dz/dt) beside the solution ``z``.

    ``slope_change`` is ``(u - v) / h`` of the step that produced this state,
    kept (without a graph) for the next step's error estimate; ``None`` at the
    start and on states rebuilt by the inverse step.
    """

    z: torch.Tensor
    v: torch.Tensor
    slope_change: torch.Tensor | None = None


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

    Args:
        eta: damping in (0, 1]; ``eta = 0.5`` makes the inverse singular.
    """

    name = "alf"
    order = 2
    failure_hint = (
        "ALF with eta=1 is only neutrally stable: on contracting (dissipative) dynamics its "
        "velocity error grows step after step; try AsyncLeapfrog(eta<1) or another method"
    )

    def __init__(self, eta: float = 1.0) -> None:
        eta = float(eta)
        if not 0.0 < eta <= 1.0:
            raise ValueError(f"eta: the ALF damping must lie in (0, 1], got {eta}")
        if abs(2.0 * eta - 1.0) < 1e-6:
            raise ValueError(
                "eta: 0.5 makes the inverse ALF step divide by 2*eta - 1 = 0; "
                "choose a value away from 0.5 (1.0 is the usual choice)"
            )
        self.eta = eta
        self.error_order = 2 if eta == 1.0 else 1
        if eta != 1.0:
            self.order = 1

    def __repr__(self) -> str:
        return f"AsyncLeapfrog(eta={self.eta})"

    def init(self, func: StepFunction, t0: float, z0: torch.Tensor) -> ALFState:
        return ALFState(z0, func(t0, z0))

    def step(self, func: StepFunction, t: float, h: float, state: ALFState) -> StepResult:
        z, v, previous = state[0], state[1], state[2]
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
        return StepResult(ALFState(z1, v1, slope_change), error, None)

    def inverse(self, func: StepFunction, t: float, h: float, state: ALFState) -> ALFState:
        """Rebuild the state at ``t`` from the state at ``t + h`` (one evaluation)."""
        z1, v1 = state[0], state[1]
        z_half = z1.add(v1, alpha=-0.5 * h)
        u = func(t + 0.5 * h, z_half)
        v = (u * (2.0 * self.eta) - v1) / (2.0 * self.eta - 1.0)
        return ALFState(z_half.add(v, alpha=-0.5 * h), v)

    def complete(self, func: StepFunction, t: float, state: ALFState) -> ALFState:
        return state

    def interpolant(self, h: float, state0: ALFState, state1: ALFState, stages):
        return hermite_dense(state0.z, state1.z, state0.v, state1.v, h)
