"""Settings of the gradient methods (beside the step-size settings of the forward solve)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..solvers.base import Solver
from ..solvers.loop import SolveOptions


@dataclass(frozen=True)
class GradientOptions:
    """Attributes:
    adjoint_rtol, adjoint_atol: tolerances of the reverse-time solve of
        ``grad="adjoint"`` (default: the forward ones).
    checkpoint_every: ``grad="mali"`` keeps an exact state every K steps
        (``None``: only the final state).
    mali_on_drift: ``"warn"`` or ``"error"`` when MALI's rebuilt states drift
        beyond the tolerance.
    """

    adjoint_rtol: float | None = None
    adjoint_atol: float | None = None
    checkpoint_every: int | None = None
    mali_on_drift: str = "warn"


@dataclass(frozen=True)
class SolveRequest:
    """One solve, as every gradient method receives it.

    Attributes:
        func: the right-hand side ``f(t, y)``.
        y0: the initial state, any shape ``S``.
        times: output times (float64 numbers), ``times[0]`` the start.
        solver: the one-step method.
        options: step-size settings of the forward solve.
        params: tensors (beyond ``func``'s own parameters) that receive gradients.
        grad_options: settings of the gradient methods.
    """

    func: Callable
    y0: torch.Tensor
    times: list[float]
    solver: Solver
    options: SolveOptions
    params: tuple[torch.Tensor, ...]
    grad_options: GradientOptions
