"""What the stiff methods share: Jacobians by autograd, the iteration matrix and its LU
factors, and the simplified Newton iteration of an implicit stage.

States of any shape ``S`` are handled flat, ``N = prod(S)``; with ``batch_dims = 1`` the
leading dimension holds independent systems (the right-hand side does not couple its
rows), the Jacobian is block diagonal, ``(B, n, n)``, and every factorization and solve
is batched over the blocks.
"""

from __future__ import annotations

import copy
import math
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import NamedTuple

import torch

from ..errors import SolverError
from .base import Solver, StepResult


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
    return _rows(func, t, y, batch_dims, create_graph, with_time=False)[0]


def jacobian_and_time_derivative(
    func: Callable, t: float, y: torch.Tensor, batch_dims: int = 0, create_graph: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """``df/dy`` (as :func:`jacobian`) and ``df/dt`` (``y``'s shape) at ``(t, y)``.

    For one coupled system both come from the same batched product (``t`` is one more
    input of it); with ``batch_dims = 1`` (one time shared by the blocks) or a function
    with its own Jacobian, ``df/dt`` is a :func:`directional_derivative`.
    """
    if batch_dims or getattr(func, "jacobian", None) is not None:
        jac = jacobian(func, t, y, batch_dims, create_graph)
        return jac, directional_derivative(func, t, y, None, create_graph)
    return _rows(func, t, y, 0, create_graph, with_time=True)


class ImplicitSolver(Solver):
    """What the stiff methods share: a tableau, the blocks of the state (``batch_dims``:
    1 when the leading dimension holds independent systems, block-diagonal Jacobians),
    and the solve's tolerances, which their Newton iterations follow."""

    implicit = True
    failure_hint = "An implicit method failing repeatedly often means a wrong or singular Jacobian"

    def __init__(self, tableau, batch_dims: int = 0) -> None:
        self.tableau = tableau
        self.name = tableau.name
        self.order = tableau.order
        self.error_order = tableau.error_order
        self.batch_dims = batch_dims
        self._rtol, self._atol = 1e-6, 1e-8

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, batch_dims={self.batch_dims})"

    def for_tolerances(self, rtol: float, atol: float) -> ImplicitSolver:
        configured = copy.copy(self)
        configured._rtol, configured._atol = rtol, atol
        return configured


def _basis(y: torch.Tensor, batch_dims: int) -> torch.Tensor:
    """The cotangents whose batched VJP gives the Jacobian's rows: ``(n, *y.shape)``."""
    if batch_dims:
        n = y[0].numel()
        basis = torch.eye(n, dtype=y.dtype, device=y.device)
        return basis.reshape(n, 1, *y.shape[1:]).expand(n, y.shape[0], *y.shape[1:])
    n = y.numel()
    return torch.eye(n, dtype=y.dtype, device=y.device).reshape(n, *y.shape)


def _matrix(rows: torch.Tensor | None, y: torch.Tensor, batch_dims: int) -> torch.Tensor:
    """The Jacobian from the batched VJP's rows (zeros where ``f`` ignores ``y``)."""
    if rows is None:
        rows = torch.zeros_like(_basis(y, batch_dims))
    if batch_dims:  # rows[i, b] = d f_b[i] / d y_b
        n = y[0].numel()
        return rows.reshape(n, y.shape[0], n).transpose(0, 1)
    return rows.reshape(y.numel(), y.numel())


def _rows(func, t, y, batch_dims, create_graph, with_time):
    """The Jacobian by one batched VJP, and with ``with_time`` ``df/dt`` from the same
    product (``None`` otherwise)."""
    with torch.enable_grad():
        x = y if create_graph and y.requires_grad else y.detach().requires_grad_()
        tt = torch.tensor(t, dtype=torch.float64, requires_grad=True) if with_time else t
        out = func(tt, x)
        rows = f_t = None
        if out.requires_grad:
            inputs = (x, tt) if with_time else (x,)
            rows, *time = torch.autograd.grad(
                out,
                inputs,
                _basis(y, batch_dims),
                is_grads_batched=True,
                create_graph=create_graph,
                allow_unused=True,
            )
            f_t = time[0] if time else None
    if with_time:
        f_t = torch.zeros_like(y) if f_t is None else f_t.to(y.dtype).reshape(y.shape)
    return _matrix(rows, y, batch_dims), f_t


def evaluations_with_jacobians(
    func: Callable, points: list[tuple[float, torch.Tensor]], batch_dims: int = 0
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """``f(t_i, x_i)`` at each point with its graph (to be differentiated later), and the
    Jacobians ``df/dy`` there (detached), all from one batched VJP.

    Each Jacobian is with respect to ``x_i`` itself, which may carry a graph (a stage
    ``y0 + Z_i`` whose ``y0`` needs gradients): one evaluation serves both the exact
    Jacobian and the residual of an implicit stage (:func:`differentiable_root`).
    """
    own = getattr(func, "jacobian", None)
    with torch.enable_grad():
        xs = [x if x.requires_grad else x.detach().requires_grad_() for _, x in points]
        outs = [func(t, x) for (t, _), x in zip(points, xs, strict=True)]
        if own is not None:
            jacs = [own(t, x.detach(), batch_dims) for (t, _), x in zip(points, xs, strict=True)]
            return outs, jacs
        live = [i for i, out in enumerate(outs) if out.requires_grad]
        rows: list = [None] * len(points)
        if live:
            # Each output depends on its own point only: one product, summed cotangents.
            cot = _basis(xs[0], batch_dims)
            found = torch.autograd.grad(
                [outs[i] for i in live],
                [xs[i] for i in live],
                [cot] * len(live),
                is_grads_batched=True,
                retain_graph=True,
                allow_unused=True,
            )
            for i, g in zip(live, found, strict=True):
                rows[i] = g
    return outs, [_matrix(r, x, batch_dims) for r, x in zip(rows, xs, strict=True)]


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
        scale: the factor of ``J`` (``h gamma`` for a stage equation); a complex scale
            gives a complex matrix (Radau's conjugate pair of eigenvalues).
    """

    def __init__(self, jac: torch.Tensor, scale: float | complex, t: float) -> None:
        n = jac.shape[-1]
        eye = torch.eye(n, dtype=jac.dtype, device=jac.device)
        self.scale = scale
        self.matrix = eye - scale * jac
        self.lu = self.pivots = self._inverse = None
        if self.matrix.requires_grad:
            # Differentiated through the matrix (a Rosenbrock step with a graph): the
            # backward of lu_solve spends milliseconds in tril/triu on each small
            # matrix, that of a product with the inverse microseconds.
            self._inverse, info = torch.linalg.inv_ex(self.matrix)
            factors = self._inverse
        else:
            self.lu, self.pivots, info = torch.linalg.lu_factor_ex(self.matrix)
            factors = self.lu
        if bool((info != 0).any()) or not bool(torch.isfinite(factors).all()):
            raise SolverError(
                f"the iteration matrix I - h gamma J is singular at t={t:.10g} "
                f"(h gamma={scale:.6g}). Check the Jacobian for rows of zeros or non-finite "
                "entries, or try a smaller first_step",
                t=t,
                h=abs(scale),
                n_steps=0,
                reason="singular_matrix",
            )

    def solve(self, b: torch.Tensor) -> torch.Tensor:
        """``(I - scale J)^{-1} b`` for ``b`` of the state's shape."""
        if self.matrix.dim() == 3:
            rhs = b.reshape(b.shape[0], -1, 1)
        else:
            rhs = b.reshape(-1, 1)
        rhs = rhs.to(self.matrix.dtype)  # a real right-hand side of a complex matrix
        if self._inverse is not None:
            return (self._inverse @ rhs).reshape(b.shape)
        return torch.linalg.lu_solve(self.lu, self.pivots, rhs).reshape(b.shape)


def with_jacobian(
    attempt: Callable[[torch.Tensor], object | None],
    func: Callable,
    t: float,
    y0: torch.Tensor,
    jac: torch.Tensor | None,
    batch_dims: int,
    work: dict,
) -> tuple[object | None, torch.Tensor]:
    """``attempt(J)`` (a step's Newton iterations; ``None`` where they fail) with ``jac``,
    a Jacobian kept from an earlier step (``None``: compute it at ``(t, y0)``), and where
    a kept one fails, once more with a fresh one. Returns the result and the Jacobian
    last used; counts the Jacobians in ``work``."""
    fresh = False
    while True:
        if jac is None:
            jac, fresh = jacobian(func, t, y0, batch_dims).detach(), True
            work["n_jacobians"] += 1
        found = attempt(jac)
        if found is not None or fresh:
            return found, jac
        jac = None


def newton_failure(state, jac: torch.Tensor, work: dict, why: str) -> StepResult:
    """A step whose Newton iterations failed even with a fresh Jacobian: rejected, and
    retried (shorter) from ``state`` with that Jacobian."""
    return StepResult(state, None, None, work=work, retry=state._replace(jac=jac), failed=why)


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


_graph = threading.local()


@contextmanager
def first_derivatives_only() -> Iterator[None]:
    """Within this block, implicit stages carry first derivatives only (one chord step
    instead of two: a quarter to a third less backward work): for a graph that is
    differentiated once, such as a gradient method's re-run of one step."""
    before = getattr(_graph, "first_only", False)
    _graph.first_only = True
    try:
        yield
    finally:
        _graph.first_only = before


def differentiable_root(
    residual: Callable[[torch.Tensor], torch.Tensor],
    z: torch.Tensor,
    solve: Callable[[torch.Tensor], torch.Tensor],
    residual_at_z: torch.Tensor | None = None,
) -> torch.Tensor:
    """``z``, a root of ``residual`` found without a graph (by Newton), with the first and
    second derivatives the implicit function theorem gives it in whatever ``residual``
    depends on (a stage's base, the parameters); the value stays ``z`` exactly, and the
    Newton iterations are not differentiated.

    ``solve(r)`` must apply ``M^{-1}`` with ``M = -d residual / dz`` at ``z`` exact and
    detached. Two chord steps ``z_(k+1) = z_k + M^{-1} residual(z_k)`` from ``z`` with
    their values removed: the first step's error in the parameters ``p`` is
    ``O(|p - p_0|^2)``, the second's ``O(|p - p_0|^3)``, so first and second derivatives
    are exact (a third derivative raises a RuntimeError). Within :func:`first_derivatives_only`, the
    first step alone. ``residual_at_z``: ``residual(z)`` where already evaluated.
    """
    correction = solve(residual(z) if residual_at_z is None else residual_at_z)
    z1 = z + (correction - correction.detach())
    if getattr(_graph, "first_only", False):
        return z1
    correction = solve(residual(z1))
    return _Differentiable.apply(z1 + (correction - correction.detach()), 2)


_NO_THIRD = (
    "third derivatives through an implicit method's stages are not provided (its converged "
    "stages are differentiated to second order); use method='rodas5p', whose steps are "
    "differentiable to any order"
)


class _Differentiable(torch.autograd.Function):
    """The identity, differentiable ``times`` more times: the derivative it passes on is
    itself this identity with one fewer, and differentiating it at zero raises."""

    @staticmethod
    def forward(ctx, z: torch.Tensor, times: int) -> torch.Tensor:
        ctx.times = times
        return z.clone()

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        if ctx.times == 0:
            raise RuntimeError(_NO_THIRD)
        if torch.is_grad_enabled():  # a backward with create_graph=True
            return _Differentiable.apply(grad, ctx.times - 1), None
        return grad, None


def implicit_gradient(
    func: Callable,
    t: float,
    z: torch.Tensor,
    base: torch.Tensor,
    scale: float,
    batch_dims: int,
) -> torch.Tensor:
    """``z`` (a converged stage ``z = base + scale f(t, z)``, no graph) with its implicit
    first and second derivatives (:func:`differentiable_root`, with the exact Jacobian at
    ``z``, from the same evaluation as the residual there)."""
    (f_z,), (jac,) = evaluations_with_jacobians(func, [(t, z)], batch_dims)
    exact = IterationMatrix(jac, scale, t)
    return differentiable_root(
        lambda x: base + scale * func(t, x) - x, z, exact.solve, base + scale * f_z - z
    )
