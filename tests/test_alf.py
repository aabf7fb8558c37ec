"""The asynchronous leapfrog: exact inverse, symmetry, damping parameter."""

from __future__ import annotations

import math

import pytest
import torch
from ode_problems import F64, fitted_slope, oscillator_rhs, pendulum_rhs

import physode
from physode.solvers import AsyncLeapfrog


def _float_time(rhs):
    """The solvers call func with a float time; the user-facing rhs takes a tensor."""
    return lambda t, y: rhs(torch.tensor(t, dtype=y.dtype), y)


def _round_trip(solver, rhs, z0, h, n_steps):
    f = _float_time(rhs)
    start = solver.init(f, 0.0, z0)
    state = start
    for i in range(n_steps):
        state = solver.step(f, i * h, h, state).state
    end = state
    for i in reversed(range(n_steps)):
        state = solver.inverse(f, i * h, h, state)
    return start, end, state


def test_inverse_rebuilds_1000_steps_of_the_oscillator():
    z0 = torch.tensor([1.0, 0.3], dtype=F64)
    start, end, back = _round_trip(AsyncLeapfrog(), oscillator_rhs, z0, 0.01, 1000)
    # The forward run went somewhere (10 time units, 1.6 periods) ...
    assert (end.z - start.z).abs().max().item() > 0.5
    # ... and the inverse steps bring z and v back to round-off.
    assert (back.z - start.z).abs().max().item() < 1e-11
    assert (back.v - start.v).abs().max().item() < 1e-11


def test_damped_inverse_rebuilds_a_short_run():
    # With eta < 1 the forward map damps ALF's parasitic velocity mode by
    # |1 - 2 eta| per step, so the inverse amplifies round-off by
    # 1 / |1 - 2 eta| = 1.25 per step at eta = 0.9: 1000 inverse steps turn
    # 1e-16 into ~1e80 (inherent to the method, not a defect). Over 20 steps
    # the growth is ~90x and the round trip must still be at round-off.
    z0 = torch.tensor([1.0, 0.3], dtype=F64)
    start, _, back = _round_trip(AsyncLeapfrog(eta=0.9), oscillator_rhs, z0, 0.01, 20)
    assert (back.z - start.z).abs().max().item() < 1e-11
    assert (back.v - start.v).abs().max().item() < 1e-11


@pytest.mark.parametrize("eta", [0.2, 0.7, 0.9, 1.0])
def test_one_inverse_step_undoes_one_step(eta):
    solver = AsyncLeapfrog(eta=eta)
    f = _float_time(pendulum_rhs)
    # Any (z, v), not only v = f(z): the inverse is exact for every state.
    state = physode.solvers.alf.ALFState(
        torch.tensor([0.7, -0.2], dtype=F64), torch.tensor([0.1, 0.4], dtype=F64)
    )
    t, h = 0.3, 0.05
    forward = solver.step(f, t, h, state).state
    assert (forward.z - state.z).abs().max().item() > 1e-3
    back = solver.inverse(f, t, h, forward)
    scale = 1.0 / abs(2 * eta - 1)
    assert (back.z - state.z).abs().max().item() < 1e-14 * scale
    assert (back.v - state.v).abs().max().item() < 1e-14 * scale


def test_undamped_alf_is_symmetric():
    # With eta = 1 ALF is self-adjoint: the inverse of a step of h from t is
    # the forward step of -h from t + h.
    solver = AsyncLeapfrog()
    f = _float_time(pendulum_rhs)
    state = solver.init(f, 0.0, torch.tensor([1.2, 0.0], dtype=F64))
    h = 0.1
    forward = solver.step(f, 0.0, h, state).state
    inverse = solver.inverse(f, 0.0, h, forward)
    backward = solver.step(f, h, -h, forward).state
    assert torch.allclose(inverse.z, backward.z, rtol=0, atol=1e-15)
    assert torch.allclose(inverse.v, backward.v, rtol=0, atol=1e-15)


def test_float32_round_trip():
    z0 = torch.tensor([1.0, 0.3], dtype=torch.float32)
    start, end, back = _round_trip(AsyncLeapfrog(), oscillator_rhs, z0, 0.01, 100)
    assert end.z.dtype == torch.float32 and back.v.dtype == torch.float32
    assert (back.z - start.z).abs().max().item() < 1e-5


@pytest.mark.parametrize("eta", [0.5, 0.5 + 1e-9, 0.0, -0.1, 1.0 + 1e-9, 1.5, math.nan])
def test_bad_eta_is_rejected(eta):
    with pytest.raises(ValueError, match="eta"):
        AsyncLeapfrog(eta=eta)


def test_eta_attributes():
    assert (AsyncLeapfrog().order, AsyncLeapfrog().error_order) == (2, 1)
    assert (AsyncLeapfrog(eta=0.9).order, AsyncLeapfrog(eta=0.9).error_order) == (1, 1)
    assert AsyncLeapfrog(eta=1).eta == 1.0


def test_alf_solver_object_through_odeint():
    # The harmonic oscillator is ALF's home ground (eta = 1 is neutrally
    # stable): adaptive ALF tracks cos/sin over two periods.
    t = torch.linspace(0.0, 4 * math.pi, 9, dtype=F64)
    z0 = torch.tensor([1.0, 0.0], dtype=F64)
    exact = torch.stack([torch.cos(t), -torch.sin(t)], dim=1)
    for method in ("alf", AsyncLeapfrog()):
        ys = physode.odeint(oscillator_rhs, z0, t, method=method, rtol=1e-6, atol=1e-6)
        assert (ys - exact).abs().max().item() < 1e-4
    damped = physode.odeint(
        oscillator_rhs, z0, t, method=AsyncLeapfrog(eta=0.9), rtol=1e-5, atol=1e-5
    )
    assert (damped - exact).abs().max().item() < 2e-2


def test_alf_tolerance_means_what_it_means_for_heun_euler():
    # Both second order, both estimating the error against an Euler step: the
    # global error follows the tolerance (x100 for two decades, not x100^(2/3))
    # and stays within a few times heun_euler's at the same rtol, for half the
    # evaluations (one per step against two).
    w = 3.0

    def rhs(t, y):
        return torch.stack([y[1], -(w**2) * y[0]])

    t = torch.linspace(0.0, 10.0, 101, dtype=F64)
    y0 = torch.tensor([1.0, 0.0], dtype=F64)
    exact = torch.stack([torch.cos(w * t), -w * torch.sin(w * t)], dim=1)
    errors, evals = {}, {}
    for method in ("alf", "heun_euler"):
        for rtol in (1e-3, 1e-5):
            sol = physode.solve(rhs, y0, t, method=method, rtol=rtol, atol=rtol / 100)
            errors[method, rtol] = (sol.ys - exact).abs().max().item()
            evals[method, rtol] = sol.stats.n_f_evals
    assert 30 < errors["alf", 1e-3] / errors["alf", 1e-5] < 300
    for rtol in (1e-3, 1e-5):
        assert 0.2 < errors["alf", rtol] / errors["heun_euler", rtol] < 5
        assert evals["alf", rtol] < 0.6 * evals["heun_euler", rtol]


def test_inverse_goes_back_past_velocity_restarts():
    # A restart loses the old velocity, so the restarted states are kept (as MALI
    # does); from each, the inverse step goes back exactly with the velocity it replaced.
    solver = AsyncLeapfrog(restart_every=4, auto_restart=False)
    f = _float_time(pendulum_rhs)
    h, n = 0.01, 23
    state = start = solver.init(f, 0.0, torch.tensor([1.0, 0.3], dtype=F64))
    kept = {}
    for i in range(n):
        state = solver.complete(f, (i + 1) * h, solver.step(f, i * h, h, state).state)
        if state.restarted:
            kept[i + 1] = state
    assert sorted(kept) == [4, 8, 12, 16, 20]
    assert (state.step, state.watch.since_restart) == (n, n % 4)
    for i in reversed(range(n)):
        if i + 1 in kept:
            assert torch.allclose(state.z, kept[i + 1].z, rtol=0, atol=1e-13)
            state = kept[i + 1]
        state = solver.inverse(f, i * h, h, state)
    assert state.step == 0
    assert torch.allclose(state.z, start.z, rtol=0, atol=1e-13)
    assert torch.allclose(state.v, start.v, rtol=0, atol=1e-13)


def test_restarts_keep_alf_second_order():
    # Each restart replaces v by the exact f(t, z): the global error stays O(h^2).
    solver = AsyncLeapfrog(restart_every=3)
    z0 = torch.tensor([1.0, 0.3], dtype=F64)
    hs = [0.02, 0.01, 0.005]
    errors = []
    ref = physode.odeint(pendulum_rhs, z0, [0.0, 2.0], rtol=1e-12, atol=1e-12)[-1]
    for h in hs:
        end = physode.odeint(pendulum_rhs, z0, [0.0, 2.0], method=solver, step_size=h)[-1]
        errors.append((end - ref).norm().item())
    assert fitted_slope(hs, errors) == pytest.approx(2.0, abs=0.15)


@pytest.mark.parametrize("name", ["restart_every", "gradient_restart_every"])
@pytest.mark.parametrize("bad", [0, -3, 2.5, True])
def test_bad_restart_settings_are_rejected(name, bad):
    with pytest.raises(ValueError, match=name):
        AsyncLeapfrog(**{name: bad})
    with pytest.raises(ValueError, match="auto_restart"):
        AsyncLeapfrog(auto_restart=1)
