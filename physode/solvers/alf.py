"""The asynchronous leapfrog (ALF) step of MALI (Zhuang et al. 2021) and its exact inverse."""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import torch

from .._checks import optional_positive_int
from .base import Solver, StepFunction, StepResult
from .interpolation import hermite_dense
from .small import dot


class ParasiteWatch(NamedTuple):
    """Forward-only data of ALF's error estimate and restart test (no graph).

    ``slope_change`` is ``q = (u - v) / h`` of the step that produced the state,
    ``difference`` its change from the step before (``None`` until known);
    ``since_restart`` counts the accepted steps since the velocity was last set to
    ``f(t, z)``.
    """

    slope_change: torch.Tensor
    difference: torch.Tensor | None = None
    since_restart: int = 0


class ALFState(NamedTuple):
    """ALF carries a velocity ``v`` (an estimate of dz/dt) beside the solution ``z``.

    ``step`` is the number of accepted steps since ``t0`` (the inverse step
    counts it down). On a state whose velocity was just restarted,
    ``pre_restart_v`` keeps the velocity it replaced, which is what the inverse
    step needs to go back past it. ``watch`` is forward-only bookkeeping
    (``None`` at the start, on rebuilt states and on states kept by the
    gradient methods).
    """

    z: torch.Tensor
    v: torch.Tensor
    step: int = 0
    pre_restart_v: torch.Tensor | None = None
    watch: ParasiteWatch | None = None

    @property
    def restarted(self) -> bool:
        """Whether this state's velocity was just restarted (MALI must keep such states)."""
        return self.pre_restart_v is not None


class AsyncLeapfrog(Solver):
    """Asynchronous leapfrog: a second-order, explicitly invertible one-step method.

    Forward step from ``(z, v)`` at ``t`` with step ``h``::

        z_half = z + h/2 v;  u = f(t + h/2, z_half)
        v' = v + 2 eta (u - v);  z' = z_half + h/2 v'

    and its inverse rebuilds ``(z, v)`` from ``(z', v')`` with one evaluation.

    Local error estimate. ``h (u - v)`` is the difference between ALF's step
    and an Euler step from ``(z, v)``, O(h^2), used with error_order 1: the
    controller keeps the local error of the first-order companion near the
    tolerance while the second-order solution is propagated, as every embedded
    pair does (heun_euler's estimate is the same difference). The global
    error then scales with the tolerance like the other methods' (see
    ``benchmarks/work_precision.py``). A sharper O(h^3) estimate, such as the
    change of ``(u - v) / h`` from one step to the next, makes the controller
    hold ALF's own local error at the tolerance instead; its global error then
    grows like tol^(2/3) and at rtol 1e-6 runs 100-1000x past what the other
    methods reach, so it serves only the restart test below.

    The parasitic mode. With ``eta = 1`` ALF is only neutrally stable: its
    velocity carries a mode ``(-1)^i e`` that no step damps (the step's two
    eigenvalues multiply to -1), so where the flow contracts, the mode grows
    as the flow shrinks. It does harm in two ways, handled separately:

    - Its *sensitivity* grows even while its size stays at round-off, so the exact
      derivative of the discrete solution can be wrong by orders of magnitude before
      anything shows in the forward values. Gradient restarts cure this at no memory
      cost: every ``gradient_restart_every`` accepted steps the velocity keeps its
      value but is differentiated as ``f(t, z)``, i.e.
      ``v = f(t, z) + (v - f(t, z)).detach()``. The gradient is then that of ALF
      with its velocity re-derived there, taken along the computed trajectory; it
      differs from the derivative of the computed solution by the size of ALF's
      velocity error and no longer carries the mode's growth. Direct backprop, ACA
      and MALI apply the same rule, so they agree to round-off. It costs one
      evaluation per restart, and only when a graph is built.
    - Its *size* grows on strongly contracting dynamics until it drives the error
      estimate and the step size collapses. A velocity restart sets ``v = f(t, z)``
      (one evaluation), which removes the mode while keeping the method second order
      and invertible: the replaced velocity is kept on the restarted state, so MALI
      stores that state (one per restart) and goes back past it exactly. With
      ``auto_restart`` an adaptive solve restarts when the alternating part of the
      step-to-step change of ``(u - v) / h`` (which comes from the mode) exceeds
      twice its smooth part, at least 10 steps after the last restart and with the
      mode's amplitude above 1000 rounding errors of ``v``. (The decision looks at
      the whole batch, so a fixed-step solve, whose steps and results must not
      depend on the batch, does not make it.) ``restart_every=K`` restarts after
      every K accepted steps besides. Where the flow does not contract, restarts are
      rare (on a rotation, at most one in 500 steps) and MALI's memory is constant
      in the number of steps.

    Args:
        eta: damping in (0, 1]; ``eta = 0.5`` makes the inverse singular.
        restart_every: restart the velocity after every this many accepted
            steps (``None``, the default: only as ``auto_restart`` decides).
        auto_restart: restart the velocity when the parasitic mode dominates
            the error estimate (``eta = 1``, adaptive solves only).
        gradient_restart_every: differentiate the velocity as ``f(t, z)``
            every this many accepted steps (``None``: never; the gradient is
            then the exact derivative of the discrete solution).
    """

    name = "alf"
    order = 2
    error_order = 1
    failure_hint = (
        "ALF with eta=1 is only neutrally stable: on contracting (dissipative) dynamics its "
        "velocity error grows step after step; restart the velocity more often "
        "(AsyncLeapfrog(restart_every=K) with a small K) or use another method"
    )
    #: Steps after a restart before the next may be triggered, the factor by which
    #: the alternating part must exceed the smooth part, and the mode's amplitude
    #: floor in rounding errors of ``v``.
    _RESTART_MIN_STEPS, _RESTART_DOMINANCE, _RESTART_FLOOR_EPS = 10, 2.0, 1000.0

    def __init__(
        self,
        eta: float = 1.0,
        restart_every: int | None = None,
        auto_restart: bool = True,
        gradient_restart_every: int | None = 100,
    ) -> None:
        eta = float(eta)
        if not 0.0 < eta <= 1.0:
            raise ValueError(f"eta: the ALF damping must lie in (0, 1], got {eta}")
        if abs(2.0 * eta - 1.0) < 1e-6:
            raise ValueError(
                "eta: 0.5 makes the inverse ALF step divide by 2*eta - 1 = 0; "
                "choose a value away from 0.5 (1.0 is the usual choice)"
            )
        if not isinstance(auto_restart, bool):
            raise ValueError(f"auto_restart: expected True or False, got {auto_restart!r}")
        self.eta = eta
        self.restart_every = optional_positive_int("restart_every", restart_every)
        self.auto_restart = auto_restart and eta == 1.0
        self.gradient_restart_every = optional_positive_int(
            "gradient_restart_every", gradient_restart_every
        )
        if eta != 1.0:
            self.order = 1

    def __repr__(self) -> str:
        return (
            f"AsyncLeapfrog(eta={self.eta}, restart_every={self.restart_every}, "
            f"auto_restart={self.auto_restart}, "
            f"gradient_restart_every={self.gradient_restart_every})"
        )

    def init(self, func: StepFunction, t0: float, z0: torch.Tensor) -> ALFState:
        return ALFState(z0, func(t0, z0))

    def step(
        self, func: StepFunction, t: float, h: float, state: ALFState, estimate_error: bool = True
    ) -> StepResult:
        z, v, watch = state.z, state.v, state.watch
        z_half = z.add(v, alpha=0.5 * h)
        u = func(t + 0.5 * h, z_half)
        v1 = v.add(u - v, alpha=2.0 * self.eta)
        z1 = z_half.add(v1, alpha=0.5 * h)
        if not estimate_error:
            return StepResult(ALFState(z1, v1, state.step), None, None)
        with torch.no_grad():
            slope_change = (u - v) / h
            error = slope_change * (h * h)
            difference = due = None
            if watch is not None and self.eta == 1.0:
                difference = slope_change - watch.slope_change
                if (
                    self.auto_restart
                    and watch.difference is not None
                    and watch.since_restart >= self._RESTART_MIN_STEPS
                ):
                    # Asked for by adaptive solves only: fixed-step ones skip the work.
                    due = partial(self._parasite_dominates, difference, watch.difference, v, h)
        since = 0 if watch is None else watch.since_restart
        new_watch = ParasiteWatch(slope_change, difference, since)
        return StepResult(ALFState(z1, v1, state.step, None, new_watch), error, None, due)

    @torch.no_grad()
    def _parasite_dominates(
        self, difference: torch.Tensor, previous: torch.Tensor, v: torch.Tensor, h: float
    ) -> torch.Tensor:
        """Whether the mode ``(-1)^i e`` dominates the error estimate (0-dim bool tensor).

        Consecutive differences ``d_i = q_i - q_{i-1}`` carry the mode as
        ``-+2 e / h`` with alternating sign: ``d_i - d_{i-1}`` is its part,
        ``d_i + d_{i-1}`` the smooth part of the estimate. Their norms come from
        dot products, so the test allocates nothing of the state's size.
        """
        d, d_prev = difference.reshape(-1), previous.reshape(-1)
        square_sum = dot(d, d) + dot(d_prev, d_prev)
        cross = 2.0 * dot(d, d_prev)
        alternating, smooth = square_sum - cross, square_sum + cross
        # |d_i - d_{i-1}| = 4 |e| / h: the amplitude floor in the same units.
        scale = 4.0 * self._RESTART_FLOOR_EPS * torch.finfo(v.dtype).eps / abs(h)
        flat_v = v.detach().reshape(-1)
        dominant = alternating > self._RESTART_DOMINANCE**2 * smooth
        return dominant & (alternating > scale**2 * dot(flat_v, flat_v))

    def inverse(self, func: StepFunction, t: float, h: float, state: ALFState) -> ALFState:
        """Rebuild the state at ``t`` from the state at ``t + h`` (one evaluation)."""
        z1 = state.z
        v1 = state.v if state.pre_restart_v is None else state.pre_restart_v
        z_half = z1.add(v1, alpha=-0.5 * h)
        u = func(t + 0.5 * h, z_half)
        v = (u * (2.0 * self.eta) - v1) / (2.0 * self.eta - 1.0)
        return ALFState(z_half.add(v, alpha=-0.5 * h), v, state.step - 1)

    def gradient_restart_after(self, state0: ALFState, restart: bool) -> bool:
        """Whether the step from ``state0`` ends with a gradient restart (when a graph is
        built), given whether it ends with a velocity restart."""
        every = self.gradient_restart_every
        return not restart and every is not None and (state0.step + 1) % every == 0

    def complete(
        self,
        func: StepFunction,
        t: float,
        state: ALFState,
        restart: bool | None = None,
        gradient_restart: bool = True,
    ) -> ALFState:
        """Count the accepted step, then restart the velocity or apply a gradient restart.

        ``restart``: ``None`` restarts every ``restart_every`` steps; ``True`` or
        ``False`` is the caller's decision (see ``Solver.complete``).
        ``gradient_restart=False`` leaves a due gradient restart out, for a caller
        that pulls the velocity's adjoint through ``f(t, z)`` itself.
        """
        watch, step = state.watch, state.step + 1
        since = (0 if watch is None else watch.since_restart) + 1
        if restart is None:
            restart = self.restart_every is not None and since >= self.restart_every
        if watch is not None:
            watch = watch._replace(since_restart=0 if restart else since)
        if restart:
            if watch is not None:  # the mode is gone: the next difference starts afresh
                watch = watch._replace(difference=None)
            return ALFState(state.z, func(t, state.z), step, state.v, watch)
        v = state.v
        if gradient_restart and v.requires_grad and self.gradient_restart_after(state, False):
            slope = func(t, state.z)
            v = slope + (v - slope).detach()
        return ALFState(state.z, v, step, None, watch)

    def interpolant(self, h: float, state0: ALFState, state1: ALFState, stages):
        return hermite_dense(state0.z, state1.z, state0.v, state1.v, h)

    def restarted(self, state: ALFState) -> bool:
        return state.restarted

    def for_keeping(self, state: ALFState) -> ALFState:
        # ``watch`` only feeds the forward error estimate and restart test.
        return state if state.watch is None else state._replace(watch=None)
