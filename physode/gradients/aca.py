"""The Adaptive Checkpoint Adjoint (ACA; Zhuang et al., ICML 2020).

Forward: the solve runs without a graph and keeps each accepted step's start
state ``(y_i, f_i)``, its time and size; the step-size search never enters a
graph. Backward walks the steps in reverse, re-runs step ``i`` from its stored
state with a graph, pulls the running adjoint back through it (and through
the interpolant for output times inside it), accumulates the parameter
gradients and drops the local graph. Memory: the stored states plus one
step's graph. The gradient is that of the accepted discrete steps with the
step sizes held fixed, i.e. as accurate as the forward solve.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..solvers.loop import AcceptedStep
from .common import RecordedMethod


@dataclass(frozen=True)
class ACA(RecordedMethod):
    """Adaptive Checkpoint Adjoint: every accepted step's start state is stored; double
    backward works."""

    name = "aca"
    keep_state_every = 1

    def start_of(self, step: AcceptedStep, end: Any, sweep: dict) -> Any:
        return step.state
