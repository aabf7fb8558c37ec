"""Step-size controllers: objects that choose each step, with their state passed in and out.

A controller is asked for the step to try from ``t`` toward ``target``
(:meth:`StepSizeController.propose`) and told how the step went
(:meth:`StepSizeController.adapt`); what it remembers between steps is a
:class:`ControllerState` it returns, never hidden on the object, so one
controller object serves any number of solves and the state after a solve is
part of its result. Two kinds:

- :class:`PIDController`: adaptive steps from the error ratio (PI by default,
  Hairer's DOPRI5 coefficients), with safety factor and growth limits;
- :class:`ConstantStep`: a fixed grid of ``step_size`` (every step accepted);
- :class:`GridSteps`: steps between the points of a given grid.

One stepping loop (:mod:`physode.solvers.loop`) serves both.
"""

from __future__ import annotations

import bisect
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, replace
from typing import Any

from .base import Solver, StepFunction
from .norms import initial_step

__all__ = [
    "ConstantStep",
    "ControllerState",
    "GridSteps",
    "PIController",
    "PIDController",
    "StepSizeController",
]


@dataclass(frozen=True)
class ControllerState:
    """What a controller carries from one step to the next.

    Attributes:
        h: the magnitude of the next step to try.
        k: the solver's ``error_order + 1`` (the exponent of the error's growth).
        previous_ratios: the error ratios of the last accepted steps, newest first.
        just_rejected: the last step tried was rejected.
        anchor, index: a fixed grid's last landing point and the steps since (the
            grid is ``anchor + index * h``, so round-off does not accumulate).
    """

    h: float
    k: int = 1
    previous_ratios: tuple[float, ...] = ()
    just_rejected: bool = False
    anchor: float = 0.0
    index: int = 0


class StepSizeController(ABC):
    """Chooses the steps of a solve. ``adaptive``: whether it reads error estimates."""

    adaptive: bool = True

    @abstractmethod
    def init(
        self,
        solver: Solver,
        func: StepFunction,
        t0: float,
        state: Any,
        t_end: float,
        rtol: float,
        atol: float,
        first_step: float | None,
    ) -> ControllerState:
        """The state at the start of a solve from ``t0`` to ``t_end``."""

    @abstractmethod
    def propose(
        self, cstate: ControllerState, t: float, target: float, direction: float
    ) -> tuple[float, ControllerState]:
        """The (signed) step to try from ``t``, and the state to adapt from; ``target``
        is the next time the solve must land on (the end, or the next output with
        ``land_on_outputs``)."""

    @abstractmethod
    def adapt(
        self, cstate: ControllerState, h: float, ratio: float
    ) -> tuple[bool, ControllerState]:
        """Whether the step of magnitude ``h`` with error ratio ``ratio`` is accepted,
        and the state for the next step."""

    def check(self, solver: Solver) -> None:  # noqa: B027 (a hook: most accept any solver)
        """Refuse a solver this controller cannot drive (raises ``ValueError``)."""


@dataclass(frozen=True)
class PIDController(StepSizeController):
    """Adaptive steps by PID control of the error ratio (Gustafsson; Soderlind).

    After an accepted step with ratio ``r_n`` the next step is
    ``h * safety * r_n ** (-beta1 / k) * r_{n-1} ** (beta2 / k) * r_{n-2} ** (-beta3 / k)``
    with ``k = error_order + 1``, clipped to ``[dfactor, ifactor]`` times ``h`` (and to
    ``[min_step, max_step]``). The defaults ``beta1 = 0.85, beta2 = 0.2, beta3 = 0`` are
    the PI controller of Hairer's DOPRI5 (``0.17`` and ``0.04`` for ``k = 5``). After a
    rejection the step is ``h * reject_safety * r ** (-1 / k)``, clipped to
    ``[dfactor, 1]``, and the next accepted step may not grow: the lower safety after
    a rejection avoids chains of rejections where the error changes fast.

    Args:
        beta1, beta2, beta3: the proportional, integral and derivative exponents.
        safety, reject_safety: factors below 1 on the proposed steps.
        ifactor, dfactor: the largest growth and the largest shrinking per step.
        min_step, max_step: bounds on the step's magnitude (a step that fails
            the error test at ``min_step`` is a ``SolverError``).
        stretch: a step that would end within this fraction of its target is
            stretched onto it (Hairer's 1.01 rule), rather than leave a sliver.
    """

    beta1: float = 0.85
    beta2: float = 0.2
    beta3: float = 0.0
    safety: float = 0.9
    reject_safety: float = 0.8
    ifactor: float = 10.0
    dfactor: float = 0.2
    min_step: float = 0.0
    max_step: float = math.inf
    stretch: float = 0.01

    adaptive = True

    def __post_init__(self) -> None:
        for name in ("safety", "reject_safety"):
            value = getattr(self, name)
            if not 0.0 < value <= 1.0:
                raise ValueError(f"{name}: must lie in (0, 1], got {value!r}")
        if not self.dfactor < 1.0 < self.ifactor or self.dfactor <= 0.0:
            raise ValueError(
                f"dfactor, ifactor: need 0 < dfactor < 1 < ifactor, got {self.dfactor!r}, "
                f"{self.ifactor!r}"
            )
        if not 0.0 <= self.min_step <= self.max_step:
            raise ValueError(f"min_step: {self.min_step} must lie in [0, max_step={self.max_step}]")

    def check(self, solver: Solver) -> None:
        if not solver.adaptive:
            raise ValueError(
                f"step_size: method {solver.name!r} has no error estimate and needs a fixed "
                "step_size (or controller=ConstantStep(h))"
            )

    def init(self, solver, func, t0, state, t_end, rtol, atol, first_step) -> ControllerState:
        self.check(solver)
        if first_step is not None:
            h = abs(first_step)
        else:
            y0, f0 = solver.solution(state), solver.slope(state)
            direction = 1.0 if t_end >= t0 else -1.0
            h = initial_step(
                func, t0, y0, f0, solver.error_order, rtol, atol, direction, abs(t_end - t0)
            )
        h = min(max(h, self.min_step), self.max_step, abs(t_end - t0))
        return ControllerState(h=h, k=solver.error_order + 1)

    def propose(self, cstate, t, target, direction) -> tuple[float, ControllerState]:
        h = direction * cstate.h
        lands = direction * (t + (1.0 + self.stretch) * h - target) >= 0
        if lands and abs(target - t) <= self.max_step:
            h = target - t
        return h, cstate

    def adapt(self, cstate, h, ratio) -> tuple[bool, ControllerState]:
        k = cstate.k
        if not math.isfinite(ratio):
            return False, replace(cstate, h=h * self.dfactor, just_rejected=True)
        if ratio <= 1.0:
            if ratio == 0.0:
                factor = self.ifactor
            else:
                factor = self.safety * ratio ** (-self.beta1 / k)
                previous = cstate.previous_ratios
                if previous:
                    factor *= previous[0] ** (self.beta2 / k)
                if len(previous) > 1 and self.beta3:
                    factor *= previous[1] ** (-self.beta3 / k)
            upper = 1.0 if cstate.just_rejected else self.ifactor
            factor = min(upper, max(self.dfactor, factor))
            ratios = (max(ratio, 1e-4), *cstate.previous_ratios[:1])
            h_next = min(max(h * factor, self.min_step), self.max_step)
            return True, ControllerState(h=h_next, k=k, previous_ratios=ratios)
        factor = min(1.0, max(self.dfactor, self.reject_safety * ratio ** (-1.0 / k)))
        return False, replace(cstate, h=max(h * factor, self.min_step), just_rejected=True)


#: The PI controller: a :class:`PIDController` with ``beta3 = 0`` (its default).
PIController = PIDController


@dataclass(frozen=True)
class ConstantStep(StepSizeController):
    """A fixed grid of steps ``step_size`` long (every step accepted, no error estimate).

    The grid restarts at every time the solve lands on (the end, or each output
    with ``land_on_outputs``); a step within ``1e-9 step_size`` of its target is
    snapped onto it.
    """

    step_size: float

    adaptive = False

    def __post_init__(self) -> None:
        if not (isinstance(self.step_size, (int, float)) and math.isfinite(self.step_size)) or (
            self.step_size <= 0
        ):
            raise ValueError(f"step_size: must be a finite number > 0, got {self.step_size!r}")

    def init(self, solver, func, t0, state, t_end, rtol, atol, first_step) -> ControllerState:
        return ControllerState(h=abs(float(self.step_size)), anchor=t0, index=0)

    def steps_needed(self, spans: list[float]) -> int:
        """How many steps cover intervals of these lengths (each grid restarting)."""
        return sum(math.ceil(span / abs(self.step_size) - 1e-9) for span in spans)

    def propose(self, cstate, t, target, direction) -> tuple[float, ControllerState]:
        h = direction * cstate.h
        t1 = cstate.anchor + (cstate.index + 1) * h
        if direction * (target - t1) <= 1e-9 * abs(h):  # snap onto the target: the grid
            return target - t, replace(cstate, anchor=target, index=0)  # restarts there
        return t1 - t, replace(cstate, index=cstate.index + 1)

    def adapt(self, cstate, h, ratio) -> tuple[bool, ControllerState]:
        return True, cstate


@dataclass(frozen=True)
class GridSteps(StepSizeController):
    """Steps between the points of a given grid (every step accepted, no error estimate).

    The solve steps from grid point to grid point (and onto every time it must land on);
    outputs between grid points come from the method's dense output. The grid's points
    outside the solve's span are ignored. ``GridSteps(t)`` with the output times steps
    between the outputs, as torchdiffeq's fixed-grid methods do without a step size.

    Args:
        grid: the grid's times (in t's units), in any order.
    """

    grid: tuple[float, ...]

    adaptive = False

    def __post_init__(self) -> None:
        points = tuple(sorted({float(t) for t in self.grid}))
        if not points or not all(math.isfinite(t) for t in points):
            raise ValueError(f"grid: needs finite times, got {self.grid!r}")
        object.__setattr__(self, "grid", points)

    def init(self, solver, func, t0, state, t_end, rtol, atol, first_step) -> ControllerState:
        return ControllerState(h=abs(t_end - t0))

    def propose(self, cstate, t, target, direction) -> tuple[float, ControllerState]:
        slack = 4 * math.ulp(max(abs(t), abs(target)))
        if direction > 0:
            i = bisect.bisect_right(self.grid, t + slack)
            nxt = self.grid[i] if i < len(self.grid) else math.inf
            return min(nxt, target) - t, cstate
        i = bisect.bisect_left(self.grid, t - slack) - 1
        nxt = self.grid[i] if i >= 0 else -math.inf
        return max(nxt, target) - t, cstate

    def adapt(self, cstate, h, ratio) -> tuple[bool, ControllerState]:
        return True, cstate
