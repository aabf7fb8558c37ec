"""The record of accepted steps that ACA and MALI re-run (``solvers.loop.StepLog``)."""

from __future__ import annotations

import pytest
import torch
from ode_problems import F64

from physode.solvers import AsyncLeapfrog, make_solver
from physode.solvers.loop import (
    AcceptedStep,
    CountedFunction,
    SolveOptions,
    Stats,
    StepLog,
    integrate,
)


def _record(solver, keep_state_every, rhs, y0, times):
    stats = Stats()
    trajectory = integrate(
        solver,
        CountedFunction(rhs, y0),
        y0,
        times,
        SolveOptions(rtol=1e-6, atol=1e-8),
        stats,
        record=True,
        keep_state_every=keep_state_every,
    )
    return trajectory, stats


def test_recorded_steps_chain_exactly_and_cover_every_output():
    a = torch.tensor([[-4.0, 1.0], [0.0, -3.0]], dtype=F64)
    rhs = lambda t, y: y @ a.T  # noqa: E731
    times = [0.0, 0.3, 0.7, 1.0, 2.5]
    # A contracting flow: ALF restarts its velocity now and then; those states are kept.
    trajectory, stats = _record(AsyncLeapfrog(), None, rhs, torch.ones(2, dtype=F64), times)
    steps = trajectory.steps
    assert isinstance(steps, StepLog)
    assert len(steps) == stats.n_accepted > 20
    for before, after in zip(list(steps)[:-1], list(steps)[1:], strict=True):
        assert before.t + before.h == after.t  # exactly: time is float64 on both sides
    assert steps[0].t == 0.0 and steps[-1].t + steps[-1].h == 2.5
    covered = sorted(k for step in steps for k, _ in step.outputs)
    assert covered == [1, 2, 3, 4]
    kept = [i for i, step in enumerate(steps) if step.state is not None]
    restarted = [i for i, step in enumerate(steps) if step.restart]
    assert len(restarted) == stats.extra.get("velocity_restarts", 0)
    # MALI keeps only the states whose velocity was restarted (the inverse step cannot
    # go back past a restart without the velocity it replaced).
    assert all(steps[i].state.restarted for i in kept)


def test_every_kth_state_is_kept():
    rhs = lambda t, y: -y  # noqa: E731
    y0 = torch.ones(3, dtype=F64)
    trajectory, _ = _record(make_solver("dopri5"), 4, rhs, y0, [0.0, 3.0])
    steps = trajectory.steps
    assert len(steps) > 8
    assert [i for i, s in enumerate(steps) if s.state is not None] == list(range(0, len(steps), 4))
    assert torch.equal(steps[0].state.y, y0)
    # The kept state is the step's start: y(t) = e^{-t} to the solve's accuracy.
    assert abs(steps[8].state.y[0].item() - torch.exp(torch.tensor(-steps[8].t)).item()) < 1e-6


def test_indexing():
    log = StepLog()
    log.append(AcceptedStep(0.0, 0.5, None, (), False))
    log.append(AcceptedStep(0.5, 0.25, "state", ((1, 1.0),), True))
    assert len(log) == 2
    assert log[-1] == AcceptedStep(0.5, 0.25, "state", ((1, 1.0),), True)
    assert [s.t for s in reversed(log)] == [0.5, 0.0]
    with pytest.raises(IndexError):
        log[2]
