"""What the stiff methods share: Jacobians by autograd, the iteration matrix and its LU
factors, and the simplified Newton iteration of an implicit stage.

States of any shape ``S`` are handled flat, ``N = prod(S)``; with ``batch_dims = 1`` the
leading dimension holds independent systems (the right-hand side does not couple its
rows), the Jacobian is block diagonal, ``(B, n, n)``, and every factorization and solve
is batched over the blocks.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch

from ..errors import SolverError


def jacobian(
    func: Callable, t: float, y: torch.Tensor, batch_dims: int = 0, create_graph: bool = False
) -> torch.Tensor:
    """``df/dy`` at ``(t, y)``: ``(N, N)``, or ``(B, n, n)`` with ``batch_dims = 1``.

    One evaluation of ``func`` and one vector-Jacobian product batched over the ``n``
    rows (vmapped; with ``create_graph`` too: its graph differentiates 3-5x faster than
    ``n`` separate products on HIRES). A function with a ``jacobian(t, y, batch_dims)``
    method gives its own (the continuous adjoint's augmented system does: autograd
    cannot see through it).
    ``create_graph``: the result is differentiable (for exact gradients of a step).
    """
    own = getattr(func, "jacobian", None)
    if own is not None:
        return own(t, y, batch_dims)
    with torch.enable_grad():
        x = y if create_graph and y.requires_grad else y.detach().requires_grad_()
        out = func(t, x)
        if batch_dims:
            b = y.shape[0]
            n = y[0].numel()
            basis = torch.eye(n, dtype=y.dtype, device=y.device)
            cot = basis.reshape(n, 1, *y.shape[1:]).expand(n, b, *y.shape[1:])
        else:
            n = y.numel()
            cot = torch.eye(n, dtype=y.dtype, device=y.device).reshape(n, *y.shape)
        if not out.requires_grad:
            rows = torch.zeros_like(cot)
        else:
            (rows,) = torch.autograd.grad(
                out, x, cot, is_grads_batched=True, create_graph=create_graph, allow_unused=True
            )
            if rows is None:
                rows = torch.zeros_like(cot)
    if batch_dims:  # rows[i, b] = d f_b[i] / d y_b
        return rows.reshape(n, y.shape[0], n).transpose(0, 1)
    return rows.reshape(n, n)


def directional_derivative(
    func: Callable,
    t: float,
    y: torch.Tensor,
    v: torch.Tensor | None,
    create_graph: bool = False,
) -> torch.Tensor:
    """``df/dt + (df/dy) v`` at ``(t, y)`` (``v = None``: ``df/dt`` alone), the
    forward-mode product in the direction ``(1, v)`` by two reverse passes; zeros where
    ``f`` depends on neither. With ``v = f(t, y)`` it is ``y''`` along the solution.
    ``create_graph``: the result is differentiable in ``y``, ``v`` and the parameters."""
    with torch.enable_grad():
        tt = torch.tensor(t, dtype=torch.float64, requires_grad=True)
        if v is None:
            x = y if create_graph else y.detach()
        else:
            x = y if create_graph and y.requires_grad else y.detach().requires_grad_()
        out = func(tt, x)
        if not out.requires_grad:
            return torch.zeros_like(y)
        u = torch.zeros_like(out, requires_grad=True)
        inputs = (tt,) if v is None else (tt, x)
        grads = torch.autograd.grad(out, inputs, u, create_graph=True, allow_unused=True)
        total = None
        if grads[0] is not None and grads[0].requires_grad:
            total = grads[0].to(y.dtype)
        if v is not None and grads[1] is not None and grads[1].requires_grad:
            along = (grads[1] * (v if create_graph else v.detach())).sum()
            total = along if total is None else total + along
        if total is None:
            return torch.zeros_like(y)
        (d,) = torch.autograd.grad(total, u, create_graph=create_graph, allow_unused=True)
    return torch.zeros_like(y) if d is None else d.to(y.dtype)


class IterationMatrix:
    """``I - scale J`` factorized once, solved many times (batched over blocks).

    Attributes:
        scale: the factor of ``J`` (``h gamma`` for a stage equation).
    """

    def __init__(self, jac: torch.Tensor, scale: float, t: float) -> None:
        n = jac.shape[-1]
        eye = torch.eye(n, dtype=jac.dtype, device=jac.device)
        self.scale = scale
        self.matrix = eye - scale * jac
        self._inverse: torch.Tensor | None = None
        self.lu, self.pivots, info = torch.linalg.lu_factor_ex(self.matrix.detach())
        if bool((info != 0).any()) or not bool(torch.isfinite(self.lu).all()):
            raise SolverError(
                f"the iteration matrix I - h gamma J is singular at t={t:.10g} "
                f"(h gamma={scale:.6g}). Check the Jacobian for rows of zeros or non-finite "
                "entries, or try a smaller first_step",
                t=t,
                h=scale,
                n_steps=0,
                reason="singular_matrix",
            )

    def solve(self, b: torch.Tensor) -> torch.Tensor:
        """``(I - scale J)^{-1} b`` for ``b`` of the state's shape."""
        if self.lu.dim() == 3:
            rhs = b.reshape(b.shape[0], -1, 1)
        else:
            rhs = b.reshape(-1, 1)
        if self.matrix.requires_grad:
            # Differentiated through the matrix (a Rosenbrock step with a graph): the
            # backward of lu_solve spends milliseconds in tril/triu on each small
            # matrix, that of a product with the inverse microseconds.
            if self._inverse is None:
                self._inverse = torch.linalg.inv(self.matrix)
            return (self._inverse @ rhs).reshape(b.shape)
        return torch.linalg.lu_solve(self.lu, self.pivots, rhs).reshape(b.shape)


class NewtonResult(NamedTuple):
    z: torch.Tensor | None  # None: the iteration failed
    iterations: int
    rate: float  # the last contraction factor ||dz_k|| / ||dz_(k-1)|| (0 if unknown)
    eta: float = 1.0  # rate / (1 - rate): what the next stage's first test starts from


def newton_stage(
    func: Callable,
    t: float,
    base: torch.Tensor,
    matrix: IterationMatrix,
    guess: torch.Tensor,
    scale: torch.Tensor,
    tol: float,
    max_iterations: int,
    eta: float = 1.0,
) -> NewtonResult:
    """Solve ``z = base + h gamma f(t, z)`` by simplified Newton (no graph).

    The iteration stops when the estimated remaining error ``eta ||dz||`` (RMS of
    ``dz / scale``; ``eta = theta / (1 - theta)`` with the contraction factor ``theta``)
    is below ``tol``; before ``theta`` is known, ``eta`` is the previous stage's (Hairer
    & Wanner's Radau5 rule, ``max(eta, eps) ** 0.8``). It fails when it diverges
    (``theta >= 1``) or has not converged after ``max_iterations``.
    """
    z = guess
    previous = math.inf
    rate = 0.0
    eta = max(eta, 1e-16) ** 0.8
    with torch.no_grad():
        for k in range(1, max_iterations + 1):
            residual = base + matrix.scale * func(t, z) - z
            dz = matrix.solve(residual)
            z = z + dz
            size = float((dz / scale).square().mean().sqrt())
            if not math.isfinite(size):
                return NewtonResult(None, k, math.inf)
            if size == 0.0:
                return NewtonResult(z, k, rate, eta)
            if k > 1:
                rate = size / previous
                if rate >= 1.0:
                    return NewtonResult(None, k, rate)
                eta = rate / (1.0 - rate)
            if eta * size <= tol:
                return NewtonResult(z, k, rate, eta)
            previous = size
    return NewtonResult(None, max_iterations, rate)


class _FirstDerivativeOnly(torch.autograd.Function):
    """The identity, whose backward refuses to be differentiated again: a stage's implicit
    derivative is exact to first order only (the detached inverse)."""

    @staticmethod
    def forward(ctx, z: torch.Tensor) -> torch.Tensor:
        return z.clone()

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled():  # a backward with create_graph=True
            raise RuntimeError(
                "second derivatives (double backward) through an ESDIRK method's implicit "
                "stages are not provided: each stage is differentiated once, by the "
                "implicit function theorem. Use method='rodas5p', whose steps are "
                "differentiable to any order"
            )
        return grad


def implicit_gradient(
    func: Callable,
    t: float,
    z: torch.Tensor,
    base: torch.Tensor,
    scale: float,
    batch_dims: int,
) -> torch.Tensor:
    """``z`` (a converged stage, no graph) with the derivative the implicit function
    theorem gives it through ``z = base + scale f(t, z)``: ``dz = (I - scale J(z))^{-1}
    (dbase + scale df/dtheta dtheta)``. The value stays ``z`` exactly; the Newton
    iterations are not differentiated. Differentiating that derivative again raises."""
    exact = IterationMatrix(jacobian(func, t, z, batch_dims).detach(), scale, t)
    # The residual is ~0 in value; only its derivative in base and the parameters
    # (z held fixed) is used, mapped by the detached inverse of the exact matrix.
    residual = base + scale * func(t, z) - z
    correction = exact.solve(residual)
    return _FirstDerivativeOnly.apply(z + (correction - correction.detach()))
