"""Radau IIA of order 5: the three-stage collocation method of Hairer & Wanner's RADAU5
(Solving ODEs II, section IV.8), the method behind scipy's ``Radau``.

The stage increments ``Z_i = y(t + c_i h) - y0`` solve ``Z = h (A x I) F(y0 + Z)``. Simplified
Newton decouples that system through the eigenvalues of ``A^{-1}`` (one real, one conjugate
pair): each iteration solves one real ``n x n`` system and one complex one, with ``J`` (autograd)
kept from step to step until Newton's convergence slows. The first guess is the previous
step's collocation polynomial continued; Newton's first convergence test uses the previous
contraction rate. A Newton iteration that fails with a kept Jacobian is retried with a fresh
one; with a fresh one, the step is rejected (and retried from the fresh Jacobian).

The error estimate is Hairer's third-order one, filtered by ``(I - h gamma0 J)^{-1}`` and,
where it exceeds the tolerance, filtered again through one more evaluation (which keeps
it bounded as ``h J`` grows). Dense output is the collocation polynomial (degree 3).

Gradients: with a graph the converged stages are differentiated as the root of the whole
collocation system (:func:`~physode.solvers.implicit.differentiable_root`, with the exact
Jacobian at each stage), not through the Newton iterations, so a re-run reproduces the
forward step's values exactly.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np
import torch

from .base import StepFunction, StepResult
from .implicit import (
    ImplicitSolver,
    IterationMatrix,
    differentiable_root,
    evaluations_with_jacobians,
    newton_failure,
    with_jacobian,
)
from .interpolation import LinearDense
from .small import is_small
from .stiff_tableaus import CollocationTableau


class RadauState(NamedTuple):
    """``y`` and ``f(t, y)`` (read by the error estimate alone); then bookkeeping: the
    Jacobian being reused (``None``: compute afresh), the last step's stage increments and
    size (the next Newton guess), Newton's last ``theta / (1 - theta)``, and in a recorded
    start state, the step's converged increments (a re-run differentiates them instead of
    repeating Newton)."""

    y: torch.Tensor
    f: torch.Tensor
    jac: torch.Tensor | None = None
    previous: tuple[torch.Tensor, float] | None = None
    eta: float = 1.0
    converged: torch.Tensor | None = None


class _Transform(NamedTuple):
    """What simplified Newton needs from the tableau, derived once from ``A``."""

    T: np.ndarray  # (3, 3): Z = T W
    TI: np.ndarray  # (3, 3): W = T^{-1} Z
    gamma: float  # the real eigenvalue of A^{-1}
    mu: complex  # alpha + i beta, of the pair alpha +- i beta
    P: np.ndarray  # (3, 3): the collocation polynomial's coefficients Q = P^T Z


def _transform(tab: CollocationTableau) -> _Transform:
    """``A^{-1} = T diag(gamma, [[alpha, -beta], [beta, alpha]]) T^{-1}`` and the collocation
    polynomial's coefficients (``y0 + sum_k Q_k theta^k`` through ``(c_i, y0 + Z_i)``)."""
    a_inv = np.linalg.inv(np.array(tab.a))
    values, vectors = np.linalg.eig(a_inv)
    real = int(np.argmin(np.abs(values.imag)))
    lower = int(np.argmin(values.imag))  # alpha - i beta
    v = vectors[:, lower]
    T = np.stack([vectors[:, real].real, v.real, v.imag], axis=1)
    c = np.array(tab.c)
    vandermonde = np.stack([c, c**2, c**3], axis=1)  # Z_i = sum_k Q_k c_i^k
    return _Transform(
        T=T,
        TI=np.linalg.inv(T),
        gamma=float(values[real].real),
        mu=complex(values[lower].conjugate()),
        P=np.linalg.inv(vandermonde).T,
    )


def _combine(matrix: np.ndarray, stacked: torch.Tensor) -> torch.Tensor:
    """``matrix @ stacked`` along the stage axis: ``(3, *S)`` -> ``(3, *S)`` (elementwise
    for a small state on the CPU, off threaded BLAS: see ``small.py``)."""
    m = torch.as_tensor(matrix, dtype=stacked.dtype, device=stacked.device)
    if is_small(stacked):
        flat = stacked.reshape(1, stacked.shape[0], -1)
        return (m.unsqueeze(-1) * flat).sum(1).reshape(m.shape[0], *stacked.shape[1:])
    return torch.tensordot(m, stacked, dims=1)


def _rms(x: torch.Tensor) -> float:
    return float(x.square().mean().sqrt())


class Radau(ImplicitSolver):
    """Radau IIA (order 5, embedded order 3): an adaptive implicit collocation method.

    Args:
        tableau: the method's coefficients (``RADAU_IIA5``).
        batch_dims: 1 when the state's leading dimension holds independent systems
            (block-diagonal Jacobian); 0 (default) for one coupled system.
        max_iterations: Newton iterations before a step counts as failed.
        slow_rate: a contraction factor above which ``J`` is refreshed next step.
    """

    # Outputs between steps come from the collocation polynomial, whose error (not the
    # step's) dominates there: at the PI controller's usual 0.9 HIRES ended 14x past
    # rtol 1e-8 (scipy's Radau: 3.4x). 0.8 is RADAU5's own safety at two to three Newton
    # iterations (0.9 * 15 / (2 * 7 + n_newton)); it keeps the four stiff test problems
    # within Radau's error at 1.04-1.17x its evaluations.
    controller_defaults = {"safety": 0.8}  # noqa: RUF012 (read-only data)

    def __init__(
        self,
        tableau: CollocationTableau,
        batch_dims: int = 0,
        max_iterations: int = 7,
        slow_rate: float = 1e-3,
    ) -> None:
        super().__init__(tableau, batch_dims)
        self.max_iterations = max_iterations
        self.slow_rate = slow_rate
        self._t = _transform(tableau)

    def _newton_tol(self, dtype: torch.dtype) -> float:
        # Hairer's RADAU5 (and scipy's Radau): Newton's error below this fraction of the
        # tolerance, never below what round-off allows.
        return max(10 * torch.finfo(dtype).eps / self._rtol, min(0.03, self._rtol**0.5))

    def init(self, func: StepFunction, t0: float, y0: torch.Tensor) -> RadauState:
        return RadauState(y0, func(t0, y0))

    # -- one step ---------------------------------------------------------------------------

    def step(self, func, t, h, state: RadauState, estimate_error: bool = True) -> StepResult:
        y0 = state.y
        work = {"n_jacobians": 0, "n_lu": 0, "n_newton": 0}
        if state.converged is not None:  # a re-run of a recorded step: no Newton
            Z, iterations, rate, eta, real = state.converged, 0, 0.0, state.eta, None
            jac = None
        else:

            def attempt(jac):
                real = IterationMatrix(jac, h / self._t.gamma, t)
                pair = IterationMatrix(jac, h / self._t.mu, t)
                work["n_lu"] += 2
                Z, iterations, rate, eta = self._newton(func, t, h, y0.detach(), real, pair, state)
                work["n_newton"] += iterations
                return None if Z is None else (Z, iterations, rate, eta, real)

            found, jac = with_jacobian(attempt, func, t, y0, state.jac, self.batch_dims, work)
            if found is None:
                return newton_failure(state, jac, work, "Newton's iteration did not converge")
            Z, iterations, rate, eta, real = found
        # The stages need their implicit derivative only where something needs a gradient.
        if torch.is_grad_enabled() and (y0.requires_grad or state.f.requires_grad):
            Z = self._differentiable(func, t, h, y0, Z)
        y1 = y0 + Z[-1]
        error = None
        if estimate_error:
            error = self._error(func, t, h, state, Z, y1, real)
        slow = iterations > 2 and rate > self.slow_rate
        new = RadauState(y1, None, None if slow else jac, (Z.detach(), h), eta)
        return StepResult(new, error, Z, work=work)

    def _newton(self, func, t, h, y0, real, pair, state):
        """Simplified Newton on the transformed system; ``(Z or None, iterations, rate,
        eta)``."""
        tr, c = self._t, self.tableau.c
        if state.previous is None:
            Z = torch.zeros((3, *y0.shape), dtype=y0.dtype, device=y0.device)
        else:  # the last step's collocation polynomial, continued to this step's nodes
            Zp, hp = state.previous
            Q = _combine(tr.P.T, Zp)
            x = [1.0 + ci * h / hp for ci in c]
            powers = np.array([[xi**k - 1.0 for k in (1, 2, 3)] for xi in x])
            Z = _combine(powers, Q)
        W = _combine(tr.TI, Z)
        scale = y0.abs() * self._rtol + self._atol
        tol = self._newton_tol(y0.dtype)
        eta = max(state.eta, 1e-16) ** 0.8
        previous, rate = math.inf, 0.0
        with torch.no_grad():
            for k in range(1, self.max_iterations + 1):
                F = torch.stack([func(t + ci * h, y0 + Z[i]) for i, ci in enumerate(c)])
                G = _combine(tr.TI, F)
                d_real = real.solve((h / tr.gamma) * G[0] - W[0])
                rhs = (h / tr.mu) * (G[1] + 1j * G[2]) - (W[1] + 1j * W[2])
                d_pair = pair.solve(rhs)
                dW = torch.stack([d_real, d_pair.real, d_pair.imag]).to(y0.dtype)
                size = _rms(dW / scale)
                if not math.isfinite(size):
                    return None, k, math.inf, 1.0
                W = W + dW
                Z = _combine(tr.T, W)
                if size == 0.0:
                    return Z, k, rate, eta
                if k > 1:
                    rate = size / previous
                    # Diverging. (RADAU5 also gives up where the rate predicts no
                    # convergence in the iterations left: that saved 2 % of the
                    # evaluations here or cost as much, and failed fixed steps that
                    # converge.)
                    if rate >= 1.0:
                        return None, k, rate, 1.0
                    eta = rate / (1.0 - rate)
                if eta * size <= tol:
                    return Z, k, rate, eta
                previous = size
        return None, self.max_iterations, rate, 1.0

    def _differentiable(self, func, t, h, y0, Z):
        """The converged increments with their implicit derivatives in ``y0`` and the
        parameters: the root of ``Z - h (A x I) F(y0 + Z)`` with the exact Jacobians at the
        stages."""
        tab = self.tableau
        Z = Z.detach()
        times = [t + ci * h for ci in tab.c]
        # One evaluation at each stage gives both its exact Jacobian and the residual.
        F, jacs = evaluations_with_jacobians(
            func, [(ti, y0 + Z[i]) for i, ti in enumerate(times)], self.batch_dims
        )
        # M = I - h (A x I) diag(J_j): (3N, 3N), or per block (B, 3n, 3n).
        rows = [
            torch.cat([(h * tab.a[i][j]) * jacs[j] for j in range(3)], dim=-1) for i in range(3)
        ]
        matrix = IterationMatrix(torch.cat(rows, dim=-2), 1.0, t)

        def solve(r: torch.Tensor) -> torch.Tensor:  # r: (3, *S)
            if self.batch_dims:  # (3, B, ...) -> (B, 3 * n), the blocks' order
                flat = r.reshape(3, r.shape[1], -1).transpose(0, 1).reshape(r.shape[1], -1)
                out = matrix.solve(flat)
                return out.reshape(r.shape[1], 3, -1).transpose(0, 1).reshape(r.shape)
            return matrix.solve(r.reshape(-1)).reshape(r.shape)

        h_a = h * np.array(tab.a)

        def residual(x: torch.Tensor) -> torch.Tensor:
            return (
                _combine(h_a, torch.stack([func(ti, y0 + x[i]) for i, ti in enumerate(times)])) - x
            )

        return differentiable_root(residual, Z, solve, _combine(h_a, torch.stack(F)) - Z)

    def _error(self, func, t, h, state, Z, y1, real) -> torch.Tensor:
        """Hairer's estimate ``(I - h gamma0 J)^{-1} gamma0 (h f0 + sum e_i Z_i)``, filtered
        once more through ``f(t, y0 + err)`` where it exceeds the tolerance."""
        g0 = 1.0 / self._t.gamma
        with torch.no_grad():
            y0 = state.y.detach()
            ze = sum(e * Z[i].detach() for i, e in enumerate(self.tableau.error_weights))
            error = real.solve(g0 * (h * state.f.detach() + ze))
            scale = self._atol + self._rtol * torch.maximum(y0.abs(), y1.detach().abs())
            if _rms(error / scale) > 1.0:
                error = real.solve(g0 * (h * func(t, y0 + error) + ze))
        return error

    # -- the rest of a step -----------------------------------------------------------------

    def complete(self, func, t, state: RadauState, restart=None, gradient_restart=True):
        if restart:  # past a jump the last step's polynomial is no guess
            return state._replace(f=func(t, state.y), previous=None)
        if state.f is None:
            return state._replace(f=func(t, state.y))
        return state

    def keep_step(self, state: RadauState, result: StepResult) -> RadauState:
        # The converged increments (not the Jacobian or the guess): a re-run differentiates
        # them as found.
        return state._replace(jac=None, previous=None, converged=result.stages.detach())

    def interpolant(self, h: float, state0: RadauState, state1: RadauState, stages: Any):
        Q = _combine(self._t.P.T, stages)
        return LinearDense(state0.y, list(Q), lambda th: [th, th * th, th * th * th])
