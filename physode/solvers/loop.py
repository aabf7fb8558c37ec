"""The stepping loop: from a solver, a step-size controller and output times to a trajectory.

One loop serves every solver, every controller (adaptive or a fixed grid) and
every gradient method. It can run with a graph (direct backprop), or without
one while recording each accepted step ``(t, h, state)`` so that a gradient
method can re-run any step later from its stored state. Time is kept in Python
floats (float64) whatever the state's dtype; a step costs at most one
host-device synchronisation (reading the error ratio with the finiteness flag,
or the finiteness flag alone for a fixed step).
"""

from __future__ import annotations

import itertools
import math
from array import array
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, NamedTuple

import torch

from ..errors import SolverError
from .base import Solver, StepFunction
from .controller import ConstantStep, ControllerState, PIDController, StepSizeController
from .discontinuities import JumpTimes, beyond, end_time, step_function
from .norms import safe_error_ratio

DEFAULT_MAX_STEPS = 100_000


@dataclass(frozen=True)
class SolveOptions:
    """Settings of one solve (see ``physode.odeint`` for their meaning).

    ``controller`` chooses the steps; ``None`` means :class:`ConstantStep` of
    ``step_size`` when one is given, else a default :class:`PIDController`.
    """

    rtol: float = 1e-6
    atol: float = 1e-8
    step_size: float | None = None
    first_step: float | None = None
    max_steps: int = DEFAULT_MAX_STEPS
    land_on_outputs: bool = False
    controller: StepSizeController | None = None
    #: The error norm of a step: the flat scaled error -> one number (default: RMS).
    norm: Callable[[torch.Tensor], torch.Tensor] | None = None
    #: Times where the right-hand side jumps: steps end on them and restart there.
    jump_times: tuple[float, ...] = ()
    #: Treat every step's end as a jump (one-sided evaluations; see discontinuities.py).
    perturb: bool = False

    def controller_for(self, solver: Solver) -> StepSizeController:
        """The controller of a solve with ``solver``: the one given, else a
        :class:`ConstantStep` of ``step_size``, else a :class:`PIDController` with the
        solver's own defaults (``Solver.controller_defaults``)."""
        if self.controller is not None:
            return self.controller
        if self.step_size is not None:
            return ConstantStep(self.step_size)
        return PIDController(**solver.controller_defaults)


@dataclass
class Stats:
    """Work done by a solve.

    Attributes:
        n_f_evals: evaluations of the right-hand side in the forward solve.
        n_f_evals_backward: evaluations made while computing gradients.
        n_accepted: accepted steps.
        n_rejected: rejected steps.
        extra: method-specific figures (e.g. MALI's reconstruction drift).
        controller_state: the step-size controller's state at the end of the solve
            (the next step it would try, its last error ratios).
    """

    n_f_evals: int = 0
    n_f_evals_backward: int = 0
    n_accepted: int = 0
    n_rejected: int = 0
    extra: dict = field(default_factory=dict)
    controller_state: ControllerState | None = None

    @property
    def n_steps(self) -> int:
        return self.n_accepted + self.n_rejected

    def as_dict(self) -> dict:
        return {**asdict(self), "n_steps": self.n_steps}


class AcceptedStep(NamedTuple):
    """One accepted step, as recorded for the gradient methods.

    ``outputs`` lists ``(k, theta)``: output time ``k`` lies at ``t + theta h``
    in this step (``theta == 1.0`` exactly when it is the step's end).
    ``restart``: the solver restarted its state at the step's end (ALF's
    velocity restart); a re-run of the step must do the same.
    ``jump``: the step ends on a jump of the right-hand side: it was evaluated one-sided
    and the state restarted just past its end (see ``discontinuities.py``).
    """

    t: float
    h: float
    state: Any
    outputs: tuple[tuple[int, float], ...]
    restart: bool = False
    jump: bool = False


class StepLog(Sequence[AcceptedStep]):
    """The accepted steps of a recorded solve, as a sequence of ``AcceptedStep``.

    Kept compactly, because MALI's memory must not grow with the number of
    steps: start times and step sizes in two float64 arrays (16 bytes a step,
    exact), and the covered outputs, restart flags and kept states only for the
    steps that have them.
    """

    def __init__(self) -> None:
        self._t = array("d")
        self._h = array("d")
        self._states: dict[int, Any] = {}
        self._outputs: dict[int, tuple[tuple[int, float], ...]] = {}
        self._restarts: set[int] = set()
        self._jumps: set[int] = set()

    def append(self, step: AcceptedStep) -> None:
        i = len(self._t)
        self._t.append(step.t)
        self._h.append(step.h)
        if step.state is not None:
            self._states[i] = step.state
        if step.outputs:
            self._outputs[i] = step.outputs
        if step.restart:
            self._restarts.add(i)
        if step.jump:
            self._jumps.add(i)

    def __len__(self) -> int:
        return len(self._t)

    def __getitem__(self, i: int) -> AcceptedStep:  # type: ignore[override]
        if not isinstance(i, int):
            raise TypeError(f"StepLog indices must be integers, got {type(i).__name__}")
        i = range(len(self._t))[i]  # negative indices and the IndexError
        return AcceptedStep(
            self._t[i],
            self._h[i],
            self._states.get(i),
            self._outputs.get(i, ()),
            i in self._restarts,
            i in self._jumps,
        )


class Trajectory(NamedTuple):
    ys: torch.Tensor  # (len(times), *y0.shape)
    steps: StepLog | None
    final_state: Any


class CountedFunction:
    """The user's ``func(t, y)`` as the solvers call it, with a float time.

    Counts evaluations, builds the 0-dim time tensor in the state's dtype and
    device (without a host-device synchronisation), and checks the first
    output's shape, dtype and device.
    """

    def __init__(self, func: Callable, like: torch.Tensor) -> None:
        self.func = func
        self.count = 0
        self._shape, self._dtype, self._device = like.shape, like.dtype, like.device
        self._checked = False

    def __call__(self, t: float | torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self.count += 1
        if isinstance(t, torch.Tensor):  # a time to differentiate with respect to
            tt = t.to(dtype=self._dtype, device=self._device)
        else:
            tt = torch.scalar_tensor(t, dtype=self._dtype, device=self._device)
        out = self.func(tt, y)
        if not self._checked:
            self._check(out)
        return out

    def _check(self, out: Any) -> None:
        if not isinstance(out, torch.Tensor):
            raise ValueError(f"func: must return a tensor, got {type(out).__name__}")
        if out.shape != self._shape:
            raise ValueError(
                f"func: returned shape {tuple(out.shape)} for a state of shape "
                f"{tuple(self._shape)}; dy/dt must have y's shape"
            )
        if out.dtype != self._dtype or out.device != self._device:
            raise ValueError(
                f"func: returned {out.dtype} on {out.device} for a state of {self._dtype} "
                f"on {self._device}; keep dy/dt in y's dtype and device"
            )
        self._checked = True


def _fail(reason: str, detail: str, hint: str, t: float, h: float | None, n: int) -> SolverError:
    h_text = "not chosen yet" if h is None else f"{h:.6g}"
    return SolverError(
        f"solve stopped at t={t:.10g} (step size {h_text}, after {n} steps): {detail}. {hint}",
        t=t,
        h=h,
        n_steps=n,
        reason=reason,
    )


_HINT_STIFF = (
    "Check the tolerances (too tight for the dtype?), whether the problem is stiff or "
    "blows up in finite time, and whether a learned parameter has gone wrong"
)


def _hint(solver: Solver) -> str:
    extra = getattr(solver, "failure_hint", "")
    return _HINT_STIFF + (f". {extra}" if extra else "")


def _stiffness_note(solver: Solver, func, t: float, state, h: float) -> str:
    """For an explicit adaptive method that ran out of steps: whether the steps were held
    down by stability rather than accuracy, i.e. ``h`` times the Jacobian's spectral
    radius (a few power iterations, by differences of ``f``) is beyond ~1, which is
    what a stiff problem does to an explicit method. ``""`` if not."""
    if not solver.adaptive or getattr(solver, "implicit", False):
        return ""
    with torch.no_grad():
        y = solver.solution(state)
        f0 = func(t, y)
        v = torch.randn(y.shape, dtype=y.dtype, generator=torch.Generator().manual_seed(0))
        v = v.to(y.device)
        radius = 0.0
        for _ in range(6):
            v = v / v.norm()
            eps = 1e-7 * (1.0 + float(y.norm()))
            jv = (func(t, y + eps * v) - f0) / eps
            radius = float(jv.norm())
            if not math.isfinite(radius) or radius == 0.0:
                return ""
            v = jv
    if h * radius <= 1.0:
        return ""
    from .registry import STIFF_METHODS  # the registry imports the solvers, not the loop

    return (
        f"The problem looks stiff: the steps (h={h:.3g}) are held down by stability, "
        f"h times the Jacobian's spectral radius being {h * radius:.3g}; use an implicit "
        f"method ({', '.join(STIFF_METHODS)}: physode.solvers.STIFF_METHODS). "
    )


class OutputBlocks:
    """The states at the output times, gathered step by step.

    Kept as one block per step (the step's dense output, and its end state where
    an output lies there), in the order of the times, and joined once at the
    end: with a graph that is a few nodes a step, not one per output time.
    """

    def __init__(self, y0: torch.Tensor) -> None:
        self.blocks: list[torch.Tensor] = [y0.unsqueeze(0)]

    @property
    def ys(self) -> torch.Tensor:
        """The states at every output time filled so far, ``(n, *y0.shape)``."""
        return self.blocks[0] if len(self.blocks) == 1 else torch.cat(self.blocks)

    def fill(self, covered, y1: torch.Tensor, dense: Callable) -> None:
        """Add the outputs ``covered`` (``(k, theta)`` pairs) of a step ending at ``y1``;
        ``dense`` maps fractions of the step to states."""
        # Inside the step (theta < 1) come first, then any output at its end.
        inner = [th for _, th in covered if th != 1.0]
        if inner:
            self.blocks.append(dense(inner))
        at_end = len(covered) - len(inner)
        if at_end:
            self.blocks.append(y1.unsqueeze(0).expand(at_end, *y1.shape))


class _Outputs(OutputBlocks):
    """Finds the output times that an accepted step covers and fills them."""

    def __init__(
        self, times: list[float], y0: torch.Tensor, direction: float, stop: Callable | None
    ) -> None:
        super().__init__(y0)
        self.times = times
        self.direction = direction
        self.next = 1
        self.stop = stop
        self.stopped = False

    @property
    def done(self) -> bool:
        return self.stopped or self.next >= len(self.times)

    def covered(self, t: float, h: float, t1: float) -> tuple[tuple[int, float], ...]:
        """``(k, theta)`` for the output times in ``(t, t1]``."""
        found = []
        # An output within a few ulps of the step's end is that end (the step landed on it).
        slack = 4 * math.ulp(abs(t1))
        while (
            self.next < len(self.times) and self.direction * (self.times[self.next] - t1) <= slack
        ):
            tk = self.times[self.next]
            found.append((self.next, 1.0 if abs(tk - t1) <= slack else (tk - t) / h))
            self.next += 1
        return tuple(found)


def _check_finite(y: torch.Tensor, t: float, h: float, n: int) -> None:
    if not bool(torch.isfinite(y).all()):
        raise _fail("non_finite", "the state became non-finite (NaN or inf)", _HINT_STIFF, t, h, n)


def integrate(
    solver: Solver,
    func: StepFunction,
    y0: torch.Tensor,
    times: list[float],
    options: SolveOptions,
    stats: Stats,
    record: bool = False,
    keep_state_every: int | None = 1,
    stop: Callable | None = None,
) -> Trajectory:
    """Solve from ``times[0]`` to ``times[-1]``, returning the states at every time in ``times``.

    Args:
        solver: the one-step method.
        func: the right-hand side, called with a float time (usually a ``CountedFunction``).
        y0: the initial state, any shape ``S``.
        times: strictly monotonic output times (float64), ``times[0]`` the start.
        options: tolerances and step-size settings.
        stats: filled in place.
        record: keep every accepted step (start time, step size, start state)
            and the output times it covers. The step ends at exactly ``t + h``.
            The final state is then returned as the gradient methods keep it.
        keep_state_every: with ``record``, keep the start state of every
            K-th accepted step only (``None``: none), the others as ``None``.
        stop: called after each accepted step as ``stop(t, h, y0, y1, dense)``
            (``dense()`` builds the step's dense output); the solve ends after the
            step for which it returns True (an event, :mod:`physode.events`).

    Returns:
        ``ys`` (one ``S``-shaped tensor per output time), the recorded steps
        (``None`` unless ``record``) and the final solver state.
    """
    t = times[0]
    outputs = _Outputs(times, y0, 1.0 if len(times) < 2 or times[-1] > t else -1.0, stop)
    steps = StepLog() if record else None
    recorder = _Recorder(solver, steps, keep_state_every) if record else None
    state = solver.init(func, initial_time(times, options, y0.dtype), y0)
    if outputs.done:
        return Trajectory(outputs.ys, steps, state)
    if not bool(torch.isfinite(solver.slope(state)).all()):
        raise _fail(
            "non_finite",
            "func returned non-finite values at the initial state",
            "Check the initial state and the model's parameters",
            t,
            None,
            0,
        )
    state, stats.controller_state = _steps(
        solver, func, state, times, outputs, options, stats, recorder
    )
    final = solver.for_keeping(state) if record else state
    return Trajectory(outputs.ys, steps, final)


def dense_end(solver: Solver, func, t: float, h: float, result, end, jump: bool):
    """The end state the dense output of a step uses: ``end``, or where the state was
    restarted past a jump, the state completed on the step's own side (``f(t1-)``)."""
    if not jump:
        return end
    one_sided = step_function(func, t, h, True, solver.solution(end).dtype)
    return solver.complete(one_sided, t + h, result.state, restart=False)


def initial_time(times: Sequence[float], options: SolveOptions, dtype: torch.dtype) -> float:
    """Where the initial state is evaluated: ``times[0]``, or just past it with ``perturb``."""
    if options.perturb and len(times) > 1:
        return beyond(times[0], times[-1] - times[0], dtype)
    return times[0]


class _Recorder:
    def __init__(self, solver: Solver, steps: StepLog, keep_state_every: int | None) -> None:
        self.solver = solver
        self.steps = steps
        self.every = keep_state_every

    def add(self, t: float, h: float, state, result, covered, restart: bool, jump: bool) -> None:
        keep = self.every is not None and len(self.steps) % self.every == 0
        # A state whose velocity was restarted cannot be rebuilt by an inverse step.
        keep = keep or self.solver.restarted(state)
        kept = self.solver.keep_step(state, result) if keep else None
        self.steps.append(AcceptedStep(t, h, kept, covered, restart, jump))


def _accept(solver, func, t, h, state, result, outputs, stats, recorder, restart, jump):
    """Book-keeping once a step is accepted; returns ``(t1, new state)``.

    ``restart``: passed on to ``solver.complete`` (``None``: the solver's own schedule).
    ``jump``: the step ends on a jump: the state is restarted just past it.
    """
    t1 = t + h
    if jump:
        restart = True
    dtype = solver.solution(state).dtype
    new_state = solver.complete(func, end_time(t, h, jump, dtype), result.state, restart=restart)
    covered = outputs.covered(t, h, t1)
    if covered or outputs.stop is not None:
        end = dense_end(solver, func, t, h, result, new_state, jump)
    if covered:
        dense = solver.interpolant(h, state, end, result.stages)
        outputs.fill(covered, solver.solution(new_state), dense)
    if outputs.stop is not None:
        y0, y1 = solver.solution(state), solver.solution(end)
        outputs.stopped = outputs.stop(
            t, h, y0, y1, lambda: solver.interpolant(h, state, end, result.stages)
        )
    restarted = solver.restarted(new_state)
    if restarted:
        stats.extra["velocity_restarts"] = stats.extra.get("velocity_restarts", 0) + 1
    if recorder is not None:
        recorder.add(t, h, state, result, covered, restarted, jump)
    stats.n_accepted += 1
    return t1, new_state


def _steps(solver, func, state, times, outputs, options, stats, recorder):
    """Step from ``times[0]`` until every output is filled; returns the final solver
    state and the controller's state."""
    controller = options.controller_for(solver)
    adaptive = controller.adaptive
    direction = outputs.direction
    t, t_end = times[0], times[-1]
    if isinstance(controller, ConstantStep) and math.isfinite(t_end):
        spans = (
            [abs(b - a) for a, b in itertools.pairwise(times)]
            if options.land_on_outputs
            else [abs(t_end - t)]
        )
        needed = controller.steps_needed(spans)
        if needed > options.max_steps:
            raise _fail(
                "max_steps",
                f"step_size={controller.step_size:.6g} needs {needed} steps, more than "
                f"max_steps={options.max_steps}",
                "Pass a larger step_size or max_steps",
                t,
                direction * controller.step_size,
                0,
            )
    cstate = controller.init(
        solver, func, t, state, t_end, options.rtol, options.atol, options.first_step
    )
    min_step = getattr(controller, "min_step", 0.0)
    jumps = JumpTimes(options.jump_times, t, t_end, direction)
    dtype = solver.solution(state).dtype
    nonfinite_trial = False
    while not outputs.done:
        if stats.n_steps >= options.max_steps:
            raise _fail(
                "max_steps",
                f"reached max_steps={options.max_steps}",
                _stiffness_note(solver, func, t, state, cstate.h)
                + "Raise max_steps or loosen the tolerances. "
                + _hint(solver),
                t,
                direction * cstate.h,
                stats.n_steps,
            )
        target = jumps.target(times[outputs.next] if options.land_on_outputs else t_end)
        h, cstate = controller.propose(cstate, t, target, direction)
        h, on_jump = jumps.landing(t, h)
        jump = on_jump or options.perturb
        reach = abs(target) if math.isfinite(target) else 0.0  # an event search has no end
        if adaptive and abs(h) <= 16 * math.ulp(max(abs(t), reach)):
            detail = "the step size underflowed"
            if nonfinite_trial:
                detail += " (the last trial steps gave a non-finite state: NaN or inf)"
            raise _fail("step_underflow", detail, _hint(solver), t, h, stats.n_steps)
        # Fixed steps still estimate: the solver's bookkeeping may need it (ALF's count
        # of steps since its velocity restart lives beside its estimate).
        result = solver.step(step_function(func, t, h, jump, dtype), t, h, state)
        if result.work:
            for key, count in result.work.items():
                stats.extra[key] = stats.extra.get(key, 0) + count
        y1 = solver.solution(result.state)
        due = None
        if result.failed and not adaptive:
            raise _fail(
                "step_failed",
                f"the step failed: {result.failed}",
                "Pass a smaller step_size, or leave it out for adaptive steps",
                t,
                h,
                stats.n_steps,
            )
        if result.failed:  # rejected: the controller tries a shorter step
            ratio = math.inf
        elif adaptive:
            y0 = solver.solution(state)
            ratio_t = solver.error_ratio(result, y0, y1, options.rtol, options.atol, options.norm)
            flags = [ratio_t, torch.isfinite(y1).all().to(ratio_t.dtype)]
            if result.restart_due is not None:
                flags.append(result.restart_due().to(ratio_t.dtype))
            # One host-device transfer for the error ratio and both flags.
            ratio, finite, *due = torch.stack(flags).tolist()
            nonfinite_trial = not finite
            if nonfinite_trial:
                ratio = math.inf
            elif math.isinf(ratio) and options.norm is None:  # the squares overflowed
                ratio = safe_error_ratio(result.error, y0, y1, options.rtol, options.atol)
        else:
            _check_finite(y1, t, h, stats.n_steps)
            ratio = 0.0
        accepted, cstate = controller.adapt(cstate, abs(h), ratio)
        if not accepted:
            stats.n_rejected += 1
            if result.failed:
                failures = stats.extra.get("failed_steps", 0) + 1
                stats.extra["failed_steps"] = failures
            if result.retry is not None:
                state = result.retry
            if abs(h) <= min_step:
                raise _fail(
                    "min_step",
                    f"the error test failed (error ratio {ratio:.3g}) at min_step={min_step:.6g}",
                    _hint(solver),
                    t,
                    h,
                    stats.n_steps,
                )
            continue
        restart = True if due and due[0] else None
        if on_jump:
            jumps.consume()
        t, state = _accept(
            solver, func, t, h, state, result, outputs, stats, recorder, restart, jump
        )
    return state, cstate
