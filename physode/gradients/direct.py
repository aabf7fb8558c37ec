"""Direct backpropagation: plain autograd through every operation of the solve.

The graph holds every stage of every accepted and rejected step, so memory
grows with the number of steps (the "naive" method of the ACA paper). The
step-size decisions are taken on detached numbers and so are not
differentiated.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from ..solvers.base import Solver
from ..solvers.loop import CountedFunction, SolveOptions, Stats, integrate
from .options import GradientOptions


def solve(
    func: Callable,
    y0: torch.Tensor,
    times: list[float],
    solver: Solver,
    options: SolveOptions,
    params: Sequence[torch.Tensor],
    grad_options: GradientOptions,
) -> tuple[torch.Tensor, Stats]:
    """States at ``times`` as a ``(len(times), *y0.shape)`` tensor, with the solve's statistics."""
    stats = Stats()
    counted = CountedFunction(func, y0)
    try:
        trajectory = integrate(solver, counted, y0, times, options, stats)
    finally:
        stats.n_f_evals = counted.count
    return torch.stack(trajectory.ys), stats
