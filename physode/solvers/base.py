"""What a solver is: the abstract base every one-step method implements.

A solver advances a *state* whose first part is the solution ``y`` and whose
second part ``d`` is differentiable too (the derivative ``f(t, y)`` for a
Runge-Kutta method, the velocity for the asynchronous leapfrog); anything
after those two is bookkeeping. The stepping loop and the gradient methods
reach the parts only through the accessors here (:meth:`Solver.solution`,
:meth:`Solver.slope`, :meth:`Solver.with_parts`, ...), so a new solver is one
subclass with ``init``, ``step`` and ``interpolant``; the other hooks have
defaults that fit a method without restarts.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, NamedTuple

import torch

from .norms import error_ratio

#: A right-hand side as the solvers call it: ``f(t, y)`` with ``t`` a Python float (float64).
StepFunction = Callable[[float, torch.Tensor], torch.Tensor]


class StepResult(NamedTuple):
    """One attempted step.

    Attributes:
        state: the solver state at ``t + h``.
        error: local error estimate with the solution's shape, or ``None``
            (no estimate, or ``estimate_error=False``). Computed without a graph.
        stages: whatever the solver's interpolant needs besides the two end states.
        restart_due: a function returning a 0-dim bool tensor, by which the solver
            asks to restart its state once this step is accepted (ALF, when its
            parasitic mode dominates the error estimate); adaptive solves call it
            and honour it, fixed-step solves (whose results must not depend on
            the batch) neither.
        work: counts of work besides evaluations of ``f`` (``{"n_jacobians": 1, ...}``),
            added to the solve's ``Stats.extra``; ``None``: none.
        retry: where the step is rejected, the state to try the shorter step from
            (an implicit method's fresh Jacobian); ``None``: the same start state.
        failed: why the step could not be taken (an implicit method's Newton iteration
            did not converge), ``""`` if it was: an adaptive solve rejects it, a
            fixed-step solve raises a ``SolverError`` saying so.
    """

    state: Any
    error: torch.Tensor | None
    stages: Any
    restart_due: Callable[[], torch.Tensor] | None = None
    work: dict | None = None
    retry: Any = None
    failed: str = ""


class Solver(ABC):
    """A one-step method.

    Attributes:
        name: the method's name.
        order: order of the propagated solution.
        error_order: order of the embedded estimate, so that the local error
            estimate behaves as ``h ** (error_order + 1)``; ``None`` when the
            method has no estimate and needs a fixed step.
        failure_hint: said when a solve with this method fails (``""``: nothing).
        controller_defaults: the default :class:`~physode.solvers.PIDController`'s
            settings for this method (``{}``: the controller's own defaults).
    """

    name: str = "solver"
    order: int = 1
    error_order: int | None = None
    failure_hint: str = ""
    #: An implicit method (for stiff problems).
    implicit: bool = False
    controller_defaults: dict = {}  # noqa: RUF012 (read-only data)

    @property
    def adaptive(self) -> bool:
        """Whether the method estimates its error (and so can choose its steps)."""
        return self.error_order is not None

    # -- what every solver implements -------------------------------------------------------

    @abstractmethod
    def init(self, func: StepFunction, t0: float, y0: torch.Tensor) -> Any:
        """The state at ``(t0, y0)`` (usually evaluates ``func`` once)."""

    @abstractmethod
    def step(
        self, func: StepFunction, t: float, h: float, state: Any, estimate_error: bool = True
    ) -> StepResult:
        """Advance from ``t`` to ``t + h`` (``h`` may be negative).

        ``estimate_error=False`` (a fixed step, or a re-run of an accepted step)
        leaves out the error estimate and any forward-only bookkeeping.
        """

    @abstractmethod
    def interpolant(self, h: float, state0: Any, state1: Any, stages: Any):
        """Dense output on the step from ``state0`` to ``state1``: a callable mapping a list
        of fractions ``theta`` to the states there, ``(len(thetas), *y.shape)``."""

    # -- hooks with defaults ----------------------------------------------------------------

    def complete(
        self,
        func: StepFunction,
        t: float,
        state: Any,
        restart: bool | None = None,
        gradient_restart: bool = True,
    ) -> Any:
        """Fill in what ``step`` left out of an accepted state (once per accepted step).

        A solver may restart part of its state here (ALF's velocity), which
        :meth:`restarted` then tells. ``restart``: ``None`` lets the solver decide
        by its own schedule; ``True`` restarts (an adaptive solve honouring
        ``StepResult.restart_due``, or a re-run of a step that restarted);
        ``False`` does not. A solver may also change how the state's second part
        is differentiated (ALF's gradient restart); ``gradient_restart=False``
        leaves that out. Default: the state as it is.
        """
        return state

    def error_ratio(
        self,
        result: StepResult,
        y0: torch.Tensor,
        y1: torch.Tensor,
        rtol: float,
        atol: float,
        norm: Callable[[torch.Tensor], torch.Tensor] | None,
    ) -> torch.Tensor:
        """The step's error ratio, a 0-dim tensor (the step is accepted when it is <= 1).
        Default: ``norm`` (RMS when ``None``) of the estimate scaled by
        ``atol + rtol * max(|y0|, |y1|)``; a method with two estimates combines them here."""
        return error_ratio(result.error, y0, y1, rtol, atol, norm)

    def for_tolerances(self, rtol: float, atol: float) -> Solver:
        """This solver as one solve with these tolerances uses it (an implicit method's
        Newton tolerance follows them). Default: the solver itself."""
        return self

    def gradient_restart_after(self, state0: Any, restart: bool) -> bool:
        """Whether ``complete`` applies a gradient restart at the end of the step from
        ``state0`` (``restart``: whether that step ends with a restart). Default: never."""
        return False

    # -- the parts of a state ---------------------------------------------------------------

    def solution(self, state: Any) -> torch.Tensor:
        """The solution ``y`` of a state."""
        return state[0]

    def slope(self, state: Any) -> torch.Tensor:
        """The state's second differentiable part (a derivative, a velocity)."""
        return state[1]

    def with_parts(self, state: Any, y: torch.Tensor, d: torch.Tensor) -> Any:
        """A state like ``state`` with the solution ``y`` and second part ``d``."""
        return type(state)(y, d, *state[2:])

    def restarted(self, state: Any) -> bool:
        """Whether the state was just restarted (a gradient method must keep it: no
        inverse step goes back past a restart). Default: never."""
        return False

    def for_keeping(self, state: Any) -> Any:
        """The state as a gradient method stores it: without forward-only bookkeeping."""
        return state

    def keep_step(self, state: Any, result: StepResult) -> Any:
        """The start state of an accepted step (``result``) as a gradient method stores it
        to re-run the step. An implicit method keeps the step's converged stages here, so
        that the re-run differentiates them instead of repeating its Newton iterations.
        Default: :meth:`for_keeping`."""
        return self.for_keeping(state)


REQUIRED = ("init", "step", "interpolant")


def check_solver(obj: Any, name: str = "method") -> Solver:
    """``obj`` if it is a usable solver; else a ValueError naming what is missing."""
    if isinstance(obj, Solver):
        return obj
    missing = [m for m in REQUIRED if not callable(getattr(obj, m, None))]
    raise ValueError(
        f"{name}: expected a method name or a physode.solvers.Solver, got "
        f"{type(obj).__name__}"
        + (f" (it lacks {', '.join(missing)})" if missing else " (subclass Solver)")
    )
