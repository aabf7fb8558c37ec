"""The continuous adjoint (Chen et al., NeurIPS 2018).

After the forward solve (no graph, nothing stored but the outputs), the
augmented system ``(y, a = dL/dy, g = dL/dtheta)`` with ``dy/dt = f``,
``da/dt = -a df/dy``, ``dg/dt = -a df/dtheta`` is integrated backwards in time
with the same solver, one output interval at a time; ``dL/dy(t_k)`` is added
to ``a`` at each output time, where ``y`` restarts from the forward solution
(as in Chen et al.'s implementation). The state is re-integrated in reverse,
so on dynamics that are unstable backwards (contracting forwards) the
gradient can be far off: this method is the baseline that shows why ACA and
MALI exist. Memory is constant in the number of steps.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from ..errors import SolverError
from ..solvers import Solver, make_solver
from ..solvers.loop import CountedFunction, Stats, integrate
from ..solvers.norms import LeadingRMS
from .base import GradientMethod, SolveRequest
from .common import apply_function, run_record, vjp


class _Augmented:
    """The reverse-time augmented dynamics on one flat vector ``[y, a, g]``.

    Called by the solvers with a float time, like a ``CountedFunction``; the
    evaluations of the user's function are counted by ``func``.
    """

    def __init__(self, func: CountedFunction, shape: torch.Size, params) -> None:
        self.func = func
        self.shape = shape
        self.n = shape.numel()
        self.params = params

    def __call__(self, t: float, s: torch.Tensor) -> torch.Tensor:
        return self._dynamics(t, s, differentiable=False)

    def _dynamics(self, t: float, s: torch.Tensor, differentiable: bool) -> torch.Tensor:
        y = s[: self.n].view(self.shape)
        a = s[self.n : 2 * self.n].view(self.shape)
        with torch.enable_grad():
            if not differentiable:
                y = y.detach().requires_grad_()
            f = self.func(t, y)
            # da/dt = -a df/dy and dg/dt = -a df/dtheta: one VJP with -a (zeros where
            # f does not depend on y or on a parameter).
            vjps = vjp([f], [y, *self.params], [-a], create_graph=differentiable)
        parts = [(f if differentiable else f.detach()).reshape(-1), vjps[0].reshape(-1)]
        parts += [g.reshape(-1).to(s.dtype) for g in vjps[1:]]
        return torch.cat(parts)

    def jacobian(self, t: float, s: torch.Tensor, batch_dims: int = 0) -> torch.Tensor:
        """The augmented system's Jacobian, for an implicit method's reverse solve: by
        autograd through the dynamics built with a graph (second derivatives of f)."""
        from ..solvers.implicit import jacobian

        def dynamics(tt, x):
            return self._dynamics(tt, x, differentiable=True)

        return jacobian(dynamics, t, s, 0).detach()


class _Adjoint(torch.autograd.Function):
    @staticmethod
    def forward(ctx, run: dict, y0: torch.Tensor, *params: torch.Tensor) -> torch.Tensor:
        trajectory = integrate(
            run["solver"], run["func"], y0, run["times"], run["options"], run["stats"]
        )
        ys = trajectory.ys
        ctx.run = run
        ctx.save_for_backward(ys, *params)
        return ys

    @staticmethod
    def backward(ctx, grad_ys: torch.Tensor):
        if torch.is_grad_enabled():
            raise RuntimeError(
                "grad='adjoint' does not support double backward (create_graph=True); "
                "use grad='aca' or grad='mali'"
            )
        run = ctx.run
        ys, *params = ctx.saved_tensors
        times, stats = run["times"], run["stats"]
        shape = ys.shape[1:]
        counted = CountedFunction(run["func"].func, ys[0])
        augmented = _Augmented(counted, shape, params)
        n_params = sum(p.numel() for p in params)
        g = torch.zeros(n_params, dtype=ys.dtype, device=ys.device)
        a = grad_ys[-1].reshape(-1)
        for k in range(len(times) - 1, 0, -1):
            s = torch.cat([ys[k].reshape(-1), a, g])
            try:
                traj = integrate(
                    run["adjoint_solver"],
                    augmented,
                    s,
                    [times[k], times[k - 1]],
                    run["adjoint_options"],
                    Stats(),
                )
            except SolverError as exc:
                raise _backward_failure(exc, times[k], times[k - 1]) from exc
            s = traj.ys[-1]
            a = s[shape.numel() : 2 * shape.numel()] + grad_ys[k - 1].reshape(-1)
            g = s[2 * shape.numel() :]
        stats.n_f_evals_backward = counted.count
        grads, offset = [], 0
        for p in params:
            grads.append(g[offset : offset + p.numel()].view_as(p).to(p.dtype))
            offset += p.numel()
        return (None, a.view(shape), *grads)


def _backward_failure(exc: SolverError, t_from: float, t_to: float) -> SolverError:
    # Reverse-time reconstruction of y is often unstable where the forward flow
    # contracts (limit cycles, damping): say so, and point to the methods that
    # never integrate y backwards.
    message = (
        f"grad='adjoint': the reverse-time solve of the augmented system (y, dL/dy, dL/dtheta) "
        f"from t={t_from:.10g} to t={t_to:.10g} failed: {exc} Integrating y backwards in time "
        "is unstable where the forward dynamics contract; grad='aca' (or 'mali') needs no "
        "reverse-time reconstruction of y"
    )
    return SolverError(message, t=exc.t, h=exc.h, n_steps=exc.n_steps, reason=exc.reason)


@dataclass(frozen=True)
class Adjoint(GradientMethod):
    """The continuous adjoint: nothing stored, the state re-integrated backwards.

    Args:
        rtol, atol: tolerances of the reverse-time solve (``None``: the forward ones).
        norm: the error norm of the reverse-time solve: ``None``, the RMS over the whole
            augmented state ``(y, dL/dy, dL/dtheta)``; ``"seminorm"``, the RMS over
            ``(y, dL/dy)`` only (Kidger, Chen & Lyons 2021): the parameter gradients,
            which feed back into nothing, no longer shrink the steps, so the backward
            solve takes fewer evaluations for the same control of ``y`` and ``dL/dy``.
        method: the method of the reverse-time solve (a name or a solver; ``None``: the
            forward one). It takes the forward solve's step settings.
    """

    rtol: float | None = None
    atol: float | None = None
    norm: str | None = None
    method: str | Solver | None = None

    name = "adjoint"

    def __post_init__(self) -> None:
        for key in ("rtol", "atol"):
            value = getattr(self, key)
            if value is not None and not (isinstance(value, (int, float)) and value > 0):
                raise ValueError(f"{key}: must be a number > 0 or None, got {value!r}")
        if self.norm not in (None, "seminorm"):
            raise ValueError(f"norm: must be None or 'seminorm', got {self.norm!r}")

    def solve(self, request: SolveRequest) -> tuple[torch.Tensor, Stats]:
        options = request.options
        # The forward norm (if any) is the user's, for y's structure: not the augmented
        # state's.
        n = request.y0.numel()
        adjoint_options = dataclasses.replace(
            options,
            rtol=self.rtol or options.rtol,
            atol=self.atol or options.atol,
            first_step=None,
            norm=LeadingRMS(2 * n) if self.norm == "seminorm" else None,
        )
        solver = request.solver if self.method is None else make_solver(self.method)
        solver = solver.for_tolerances(adjoint_options.rtol, adjoint_options.atol)
        adjoint_options.controller_for(solver).check(solver)
        run, params = run_record(
            self, request, adjoint_options=adjoint_options, adjoint_solver=solver
        )
        return apply_function(_Adjoint, run, request.y0, params)
