"""ESDIRK methods: singly diagonally implicit Runge-Kutta with an explicit first stage.

Each implicit stage ``z_i = y + h sum_(j<i) a_ij k_j + h gamma f(t + c_i h, z_i)`` is
solved by simplified Newton with the iteration matrix ``I - h gamma J``. The Jacobian
``J`` (autograd, at a step's start) is kept and reused from step to step until Newton's
convergence slows; the matrix is refactorized every step (``h`` changes). A stage whose
Newton iteration fails (diverges, or is not done in ``max_iterations``) is retried with a
fresh Jacobian where the one kept from an earlier step failed; with a fresh one it rejects
the step, which the controller retries with a step ``dfactor`` times shorter.

Gradients: with a graph (direct backprop, or ACA's re-run of a step) each converged stage
is differentiated implicitly (``implicit.implicit_gradient``: the stage equation, not the
Newton iterations; first and second derivatives), so a re-run reproduces the forward
step's values exactly and its gradient is that of the same accepted steps.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from .base import StepFunction, StepResult
from .implicit import (
    ImplicitSolver,
    IterationMatrix,
    implicit_gradient,
    newton_failure,
    newton_stage,
    with_jacobian,
)
from .interpolation import hermite_dense
from .stiff_tableaus import DiagonallyImplicitTableau


class ImplicitState(NamedTuple):
    """``y``, its slope ``f``, the Jacobian being reused (``None``: compute afresh), and in
    a recorded start state, the step's converged implicit stages (a re-run differentiates
    them instead of repeating Newton)."""

    y: torch.Tensor
    f: torch.Tensor
    jac: torch.Tensor | None = None
    converged: tuple[torch.Tensor, ...] | None = None


class ESDIRK(ImplicitSolver):
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

    def __init__(
        self,
        tableau: DiagonallyImplicitTableau,
        batch_dims: int = 0,
        newton_tol: float = 0.03,
        max_iterations: int = 10,
        slow_rate: float = 0.02,
    ) -> None:
        super().__init__(tableau, batch_dims)
        self.newton_tol = newton_tol
        self.max_iterations = max_iterations
        self.slow_rate = slow_rate

    def init(self, func: StepFunction, t0: float, y0: torch.Tensor) -> ImplicitState:
        return ImplicitState(y0, func(t0, y0))

    def step(self, func, t, h, state: ImplicitState, estimate_error: bool = True) -> StepResult:
        y0 = state.y
        work = {"n_jacobians": 0, "n_lu": 0, "n_newton": 0}
        if state.converged is not None:  # a re-run of a recorded step: no Newton, no J
            found, jac = self._stages(func, t, h, state, None, work), None
        else:
            found, jac = with_jacobian(
                lambda jac: self._stages(func, t, h, state, jac, work),
                func,
                t,
                y0,
                state.jac,
                self.batch_dims,
                work,
            )
            if found is None:
                return newton_failure(
                    state, jac, work, "a stage's Newton iteration did not converge"
                )
        ks, zs, slow = found
        error = None
        if estimate_error:
            with torch.no_grad():
                # The plain embedded difference: filtering it by the iteration matrix
                # (as Radau5 does) let HIRES and OREGO end 6-10x further past the tolerance.
                error = sum(ks[j] * (h * e) for j, e in enumerate(self.tableau.b_error) if e)
        # Stiffly accurate: the last stage is y1, its slope f(t + h, y1).
        new = ImplicitState(zs[-1], ks[-1], None if slow else jac)
        return StepResult(new, error, zs, work=work)

    def _stages(self, func, t, h, state: ImplicitState, jac, work):
        """The stages' slopes ``k_i`` by simplified Newton with ``jac`` (or from the recorded
        ``state.converged``), the implicit stages, and whether Newton was slow; ``None``
        where a stage's iteration failed."""
        tab = self.tableau
        y0, f0 = state.y, state.f
        gh = h * tab.gamma
        if state.converged is None:
            matrix = IterationMatrix(jac, gh, t)
            work["n_lu"] += 1
        scale = y0.detach().abs() * self._rtol + self._atol
        # Stages need their implicit derivative only where something needs a gradient.
        graph = torch.is_grad_enabled() and (y0.requires_grad or f0.requires_grad)
        ks = [f0]
        zs = []
        slow = False
        eta = 1.0
        for i in range(1, len(tab.c)):
            base = y0
            for j, a in enumerate(tab.a[i][:i]):
                if a:
                    base = base + (h * a) * ks[j]
            ti = t + tab.c[i] * h
            if state.converged is not None:
                z = state.converged[i - 1]
            else:
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
                if found.z is None:
                    return None
                slow = slow or found.rate > self.slow_rate
                z = found.z
            if graph:
                z = implicit_gradient(func, ti, z, base, gh, self.batch_dims)
                work["n_jacobians"] += 1
            ks.append((z - base) / gh)
            zs.append(z)
        return ks, zs, slow

    def interpolant(self, h: float, state0: ImplicitState, state1: ImplicitState, stages):
        # Cubic Hermite. A quintic one with y'' = f_t + J f at both ends was 1e3-1e5x
        # worse on the stiff problems: J amplifies the end states' small errors.
        return hermite_dense(state0.y, state1.y, state0.f, state1.f, h)

    def keep_step(self, state: ImplicitState, result: StepResult) -> ImplicitState:
        # The converged stages (not the Jacobian): a re-run differentiates them as found.
        return state._replace(jac=None, converged=tuple(z.detach() for z in result.stages))
