"""Rosenbrock-Wanner methods: linearly implicit, one Jacobian and one LU factorization a
step and no Newton iteration.

In Hairer & Wanner's transformed form (section IV.7) a step solves, for each stage,
``(I / (h gamma) - J) u_i = f(t + alpha_i h, y + sum_j a_ij u_j) + sum_j (c_ij / h) u_j
+ h gamma_i df/dt`` and returns ``y + sum_i m_i u_i``. ``J`` and ``df/dt`` are exact, by
autograd, at the step's start. Everything is differentiable as it stands: with a graph
the Jacobian is built with ``create_graph`` so that direct backprop and ACA's re-run of a
step give the exact derivative of the discrete step (through ``J`` too).
"""

from __future__ import annotations

import torch

from .base import StepFunction, StepResult
from .esdirk import ImplicitState
from .implicit import ImplicitSolver, IterationMatrix, jacobian_and_time_derivative
from .interpolation import hermite_dense, rosenbrock_dense
from .stiff_tableaus import RosenbrockTableau


def _weighted(weights: torch.Tensor, tensors: list[torch.Tensor]) -> torch.Tensor:
    """``sum_j weights[j] tensors[j]``."""
    stacked = torch.stack(tensors[: len(weights)])
    return (weights.reshape(-1, *([1] * (stacked.dim() - 1))) * stacked).sum(0)


class Rosenbrock(ImplicitSolver):
    """An adaptive Rosenbrock-Wanner method with an embedded estimate.

    Args:
        tableau: the method's coefficients.
        batch_dims: 1 when the state's leading dimension holds independent systems.
    """

    def __init__(self, tableau: RosenbrockTableau, batch_dims: int = 0) -> None:
        super().__init__(tableau, batch_dims)
        # Read off the tableau once: the last stage's argument is y1 (and at t + h).
        self._last_stage_is_solution = (
            tableau.alpha[-1] == 1.0
            and tuple(tableau.a[-1]) == tuple(tableau.m[:-1])
            and tableau.m[-1] == 0.0
        )
        self._rows: dict = {}

    def init(self, func: StepFunction, t0: float, y0: torch.Tensor) -> ImplicitState:
        return ImplicitState(y0, func(t0, y0))

    def step(self, func, t, h, state: ImplicitState, estimate_error: bool = True) -> StepResult:
        tab = self.tableau
        y0, f0 = state.y, state.f
        graph = torch.is_grad_enabled() and (y0.requires_grad or f0.requires_grad)
        jac, f_t = jacobian_and_time_derivative(func, t, y0, self.batch_dims, graph)
        matrix = IterationMatrix(jac, h * tab.gamma, t)
        a, c, m = self._coefficients(y0)
        us: list[torch.Tensor] = []
        fs = [f0]
        for i in range(len(tab.alpha)):
            if i:
                fs.append(func(t + tab.alpha[i] * h, y0 + _weighted(a[i], us)))
            rhs = fs[-1]
            if i:
                rhs = rhs + _weighted(c[i], us) / h
            if tab.gammas[i]:
                rhs = rhs + (h * tab.gammas[i]) * f_t
            # (I / (h gamma) - J) u = rhs  <=>  (I - h gamma J) u = h gamma rhs
            us.append(matrix.solve((h * tab.gamma) * rhs))
        y1 = y0 + _weighted(m, us)
        error = None
        if estimate_error:
            with torch.no_grad():
                error = sum(e * u for e, u in zip(tab.m_error, us, strict=True) if e)
        # Where the last stage is evaluated at (t + h, y1), it is the next f0.
        f1 = fs[-1] if self._last_stage_is_solution else None
        work = {"n_jacobians": 1, "n_lu": 1}
        return StepResult(ImplicitState(y1, f1), error, us, work=work)

    def _coefficients(self, like: torch.Tensor):
        """The rows of ``a`` and ``c`` and the weights ``m`` as tensors on ``like``'s device,
        for one weighted sum per stage instead of a product a coefficient."""
        key = (like.dtype, like.device)
        if key not in self._rows:
            tab = self.tableau

            def as_tensor(row):
                return torch.tensor(row, dtype=like.dtype, device=like.device)

            self._rows[key] = (
                [as_tensor(r) for r in tab.a],
                [as_tensor(r) for r in tab.c],
                as_tensor(tab.m),
            )
        return self._rows[key]

    def complete(self, func, t, state: ImplicitState, restart=None, gradient_restart=True):
        if state.f is None or restart:
            return ImplicitState(state.y, func(t, state.y))
        return state

    def interpolant(self, h: float, state0: ImplicitState, state1: ImplicitState, stages):
        if not self.tableau.dense:
            return hermite_dense(state0.y, state1.y, state0.f, state1.f, h)
        ks = [
            sum(d * u for d, u in zip(row, stages, strict=True) if d) for row in self.tableau.dense
        ]
        return rosenbrock_dense(state0.y, state1.y, ks)
