"""ESDIRK methods: singly diagonally implicit Runge-Kutta with an explicit first stage.

Each implicit stage ``z_i = y + h sum_(j<i) a_ij k_j + h gamma f(t + c_i h, z_i)`` is
solved by simplified Newton with the iteration matrix ``I - h gamma J``. The Jacobian
``J`` (autograd, at a step's start) is kept and reused from step to step until Newton's
convergence slows; the matrix is refactorized every step (``h`` changes). A stage whose
Newton iteration fails (diverges, or is not done in ``max_iterations``) rejects the step,
which the controller retries with a step ``dfactor`` times shorter.

Gradients: with a graph (direct backprop, or ACA's re-run of a step) each converged stage
is differentiated implicitly (``implicit.implicit_gradient``: the stage equation, not the
Newton iterations), so a re-run reproduces the forward step's values exactly and its
gradient is that of the same accepted steps.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from .base import Solver, StepFunction, StepResult
from .implicit import IterationMatrix, implicit_gradient, jacobian, newton_stage
from .interpolation import hermite_dense
from .stiff_tableaus import DiagonallyImplicitTableau


class ImplicitState(NamedTuple):
    """``y``, its slope ``f``, and the Jacobian being reused (``None``: compute afresh)."""

    y: torch.Tensor
    f: torch.Tensor
    jac: torch.Tensor | None = None


class _Failed(NamedTuple):
    """Stages of a step whose Newton iteration failed (no dense output: never accepted)."""


class ESDIRK(Solver):
    """An adaptive ESDIRK method (stiffly accurate: the last stage is the new solution).

    Args:
        tableau: the method's coefficients.
        batch_dims: 1 when the state's leading dimension holds independent systems
            (block-diagonal Jacobian); 0 (default) for one coupled system.
        newton_tol: Newton stops when its estimated error is below this fraction of
            the step's tolerance.
        max_iterations: Newton iterations before a stage counts as failed.
        slow_rate: a contraction factor above which ``J`` is refreshed next step.
    """

    failure_hint = "An implicit method failing repeatedly often means a wrong or singular Jacobian"

    implicit = True

    def __init__(
        self,
        tableau: DiagonallyImplicitTableau,
        batch_dims: int = 0,
        newton_tol: float = 0.03,
        max_iterations: int = 10,
        slow_rate: float = 0.02,
    ) -> None:
        self.tableau = tableau
        self.name = tableau.name
        self.order = tableau.order
        self.error_order = tableau.error_order
        self.batch_dims = batch_dims
        self.newton_tol = newton_tol
        self.max_iterations = max_iterations
        self.slow_rate = slow_rate
        self._rtol, self._atol = 1e-6, 1e-8

    def __repr__(self) -> str:
        return f"ESDIRK({self.name!r}, batch_dims={self.batch_dims})"

    def for_tolerances(self, rtol: float, atol: float) -> ESDIRK:
        configured = ESDIRK(
            self.tableau, self.batch_dims, self.newton_tol, self.max_iterations, self.slow_rate
        )
        configured._rtol, configured._atol = rtol, atol
        return configured

    def init(self, func: StepFunction, t0: float, y0: torch.Tensor) -> ImplicitState:
        return ImplicitState(y0, func(t0, y0))

    def step(self, func, t, h, state: ImplicitState, estimate_error: bool = True) -> StepResult:
        tab = self.tableau
        y0, f0 = state.y, state.f
        work = {"n_jacobians": 0, "n_lu": 1, "n_newton": 0}
        jac = state.jac
        if jac is None:
            jac = jacobian(func, t, y0, self.batch_dims).detach()
            work["n_jacobians"] = 1
        gh = h * tab.gamma
        matrix = IterationMatrix(jac, gh, t)
        scale = y0.detach().abs() * self._rtol + self._atol
        # Stages need their implicit derivative only where something needs a gradient.
        graph = torch.is_grad_enabled() and (y0.requires_grad or f0.requires_grad)
        ks = [f0]
        z = y0
        slow = False
        eta = 1.0
        for i in range(1, len(tab.c)):
            base = y0
            for j, a in enumerate(tab.a[i][:i]):
                if a:
                    base = base + (h * a) * ks[j]
            ti = t + tab.c[i] * h
            # The previous stage's slope continued (the published stage predictors of
            # Kvaerno5 took more iterations on three of the four test problems).
            guess = base.detach() + gh * ks[-1].detach()
            found = newton_stage(
                func,
                ti,
                base.detach(),
                matrix,
                guess,
                scale,
                self.newton_tol,
                self.max_iterations,
                eta,
            )
            eta = found.eta
            work["n_newton"] += found.iterations
            if found.z is None:  # an infinite error: the controller rejects the step
                inf = torch.full_like(y0.detach(), float("inf"))
                return StepResult(state, inf, _Failed(), work=work)
            slow = slow or found.rate > self.slow_rate
            z = found.z
            if graph:
                z = implicit_gradient(func, ti, z, base, gh, self.batch_dims)
                work["n_jacobians"] += 1
            ks.append((z - base) / gh)
        # Stiffly accurate: the last stage is y1, its slope f(t + h, y1).
        error = None
        if estimate_error:
            with torch.no_grad():
                # The plain embedded difference: filtering it by the iteration matrix
                # (as Radau5 does) let HIRES and OREGO end 6-10x further past the tolerance.
                error = sum(ks[j] * (h * e) for j, e in enumerate(tab.b_error) if e)
        new = ImplicitState(z, ks[-1], None if slow else jac)
        return StepResult(new, error, ks, work=work)

    def interpolant(self, h: float, state0: ImplicitState, state1: ImplicitState, stages):
        # Cubic Hermite. A quintic one with y'' = f_t + J f at both ends was 1e3-1e5x
        # worse on the stiff problems: J amplifies the end states' small errors.
        return hermite_dense(state0.y, state1.y, state0.f, state1.f, h)

    def for_keeping(self, state: ImplicitState) -> ImplicitState:
        # The Jacobian is kept by reference: shared by every step that reused it, and
        # what a re-run needs to repeat the forward Newton iterations exactly.
        return state
