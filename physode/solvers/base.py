"""What every solver provides to the stepping loop."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple, Protocol

import torch

#: A right-hand side as the solvers call it: ``f(t, y)`` with ``t`` a Python float (float64).
StepFunction = Callable[[float, torch.Tensor], torch.Tensor]


class StepResult(NamedTuple):
    """One attempted step.

    Attributes:
        state: the solver state at ``t + h``; ``state[0]`` is the solution.
        error: local error estimate with the solution's shape, or ``None``
            for a method without one. Computed without a graph.
        stages: whatever the solver's interpolant needs besides the two end states.
        restart_due: a function returning a 0-dim bool tensor, by which the solver
            asks to restart its state once this step is accepted (ALF, when its
            parasitic mode dominates the error estimate); adaptive solves call it
            and honour it, fixed-step solves (whose results must not depend on
            the batch) neither.
    """

    state: Any
    error: torch.Tensor | None
    stages: Any
    restart_due: Callable[[], torch.Tensor] | None = None


class Solver(Protocol):
    """A one-step method. States are tuples whose first element is the solution ``y``.

    Attributes:
        name: the method's name.
        order: order of the propagated solution.
        error_order: order of the embedded estimate, so that the local error
            estimate behaves as ``h ** (error_order + 1)``; ``None`` when the
            method has no estimate and needs a fixed ``step_size``.
    """

    name: str
    order: int
    error_order: int | None

    def init(self, func: StepFunction, t0: float, y0: torch.Tensor) -> Any:
        """The state at ``(t0, y0)`` (evaluates ``func`` once)."""

    def step(
        self, func: StepFunction, t: float, h: float, state: Any, estimate_error: bool = True
    ) -> StepResult:
        """Advance from ``t`` to ``t + h`` (``h`` may be negative).

        ``estimate_error=False`` (a re-run of an accepted step) leaves out the error
        estimate and any forward-only bookkeeping.
        """

    def complete(
        self,
        func: StepFunction,
        t: float,
        state: Any,
        restart: bool | None = None,
        gradient_restart: bool = True,
    ) -> Any:
        """Fill in what ``step`` left out of an accepted state (once per accepted step).

        A solver may restart part of its state here (ALF's velocity), which the
        returned state's ``restarted`` attribute tells. ``restart``: ``None`` lets
        the solver decide by its own schedule; ``True`` restarts (an adaptive solve
        honouring ``StepResult.restart_due``, or a re-run of a step that restarted);
        ``False`` does not (a re-run of a step that did not). A solver may also
        change how the state's second part is differentiated (ALF's gradient
        restart: the value stays, the derivative is that of ``f(t, y)``);
        ``gradient_restart=False`` leaves that out.
        """

    def gradient_restart_after(self, state0: Any, restart: bool) -> bool:
        """Whether ``complete`` applies a gradient restart at the end of the step from
        ``state0`` (``restart``: whether that step ends with a restart)."""

    def interpolant(self, h: float, state0: Any, state1: Any, stages: Any):
        """Dense output on the step from ``state0`` to ``state1``: a callable of fractions theta."""
