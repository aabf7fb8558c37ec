"""Direct backpropagation: plain autograd through every operation of the solve.

The graph holds every stage of every accepted and rejected step, so memory
grows with the number of steps (the "naive" method of the ACA paper). The
step-size decisions are taken on detached numbers and so are not
differentiated.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..solvers.loop import CountedFunction, Stats, integrate
from .base import GradientMethod, SolveRequest


@dataclass(frozen=True)
class Direct(GradientMethod):
    """Autograd through the whole solve; double backward works."""

    name = "direct"

    def solve(self, request: SolveRequest) -> tuple[torch.Tensor, Stats]:
        r = request
        stats = Stats()
        counted = CountedFunction(r.func, r.y0)
        try:
            trajectory = integrate(r.solver, counted, r.y0, r.times, r.options, stats)
        finally:
            stats.n_f_evals = counted.count
        return trajectory.ys, stats
