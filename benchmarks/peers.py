"""torchode called in physode's layout, for the comparison columns of the benchmarks.

torchode solves a batch ``(B, N)`` with a step size per batch member and returns
``(B, T, N)``; physode and torchdiffeq share one step over the whole state and return
``(T, *y0.shape)``. :func:`torchode_solve` maps between the two: the first axis of a
2-D or higher ``y0`` is torchode's batch, a 1-D ``y0`` is a batch of one. ``func``
receives the state in ``y0``'s shape and torchode's per-member times (shape ``(B,)``),
so it must be autonomous or broadcast a time vector over its first axis; every
benchmark problem here is autonomous.

Optional: ``pip install --no-deps torchode==1.0.1 torchtyping typeguard<3``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

try:
    import torchode
except ImportError:  # optional comparison
    torchode = None

#: torchode's adaptive methods by physode's name for them.
TORCHODE_METHODS = {"dopri5": "Dopri5", "tsit5": "Tsit5"}


class TorchodeFailed(RuntimeError):
    """torchode ended a solve with a non-zero status (e.g. its step cap)."""


@dataclass
class TorchodeResult:
    ys: torch.Tensor  # (T, *y0.shape)
    n_f_evals: int  # evaluations of func over the whole batch (one call evaluates all members)
    n_steps: int  # the most steps any batch member took (accepted + rejected)
    n_accepted: int


class _Term(nn.Module):
    """``func`` seen through torchode's ``(B, N)`` layout; an ``nn.Module`` so that the
    adjoint finds ``func``'s parameters. ``y`` arrives as ``(B, N)``, or as one member's
    ``(N,)`` where torchode maps over the batch (its adjoint)."""

    def __init__(self, func: Callable, member_shape: torch.Size):
        super().__init__()
        self.func = func
        self.member_shape = member_shape

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.func(t, y.reshape(*y.shape[:-1], *self.member_shape)).reshape(y.shape)


def torchode_solve(
    func: Callable,
    y0: torch.Tensor,
    t: torch.Tensor,
    *,
    method: str = "dopri5",
    rtol: float,
    atol: float,
    adjoint: bool = False,
    max_steps: int | None = None,
) -> TorchodeResult:
    """Solve ``dy/dt = func(t, y)`` with torchode, outputs at ``t``, shape ``(T, *y0.shape)``.

    ``adjoint=False``: backprop through the solver (``AutoDiffAdjoint``); ``True``: the
    continuous adjoint (``BacksolveAdjoint``).
    """
    if torchode is None:
        raise ImportError("torchode is not installed")
    if method not in TORCHODE_METHODS:
        raise ValueError(f"torchode has no {method!r}; it has {sorted(TORCHODE_METHODS)}")
    batch = y0.shape[0] if y0.dim() > 1 else 1
    flat = y0.reshape(batch, -1)
    term = torchode.ODETerm(_Term(func, y0.shape[1:] if y0.dim() > 1 else y0.shape))
    step = getattr(torchode, TORCHODE_METHODS[method])(term=term)
    control = torchode.IntegralController(atol=atol, rtol=rtol, term=term)
    if adjoint:
        solver = torchode.BacksolveAdjoint(term, step, control)
    else:
        solver = torchode.AutoDiffAdjoint(step, control, max_steps=max_steps)
    t_eval = t.to(y0.dtype).expand(batch, -1)
    sol = solver.solve(torchode.InitialValueProblem(y0=flat, t_eval=t_eval))
    if bool((sol.status != 0).any()):
        raise TorchodeFailed(f"torchode status {sorted(set(sol.status.tolist()))}")
    ys = sol.ys.transpose(0, 1).reshape(len(t), *y0.shape)
    stats = sol.stats
    return TorchodeResult(
        ys,
        int(stats["n_f_evals"].max()),
        int(stats["n_steps"].max()),
        int(stats["n_accepted"].max()),
    )
