"""Bad input raises ValueError naming the argument; unfinishable solves raise SolverError."""

from __future__ import annotations

import math
import re

import pytest
import torch
from ode_problems import F64, Y0_ROT, rotation_rhs

import physode

Y1 = torch.tensor([1.0], dtype=F64)


def decay(t, y):
    return -y


def _call(**overrides):
    kwargs = {"func": decay, "y0": Y1, "t": [0.0, 1.0]}
    kwargs.update(overrides)
    return physode.odeint(kwargs.pop("func"), kwargs.pop("y0"), kwargs.pop("t"), **kwargs)


@pytest.mark.parametrize(
    ("overrides", "name"),
    [
        ({"t": torch.zeros(2, 2, dtype=F64)}, "t"),
        ({"t": torch.tensor(1.0, dtype=F64)}, "t"),
        ({"t": []}, "t"),
        ({"t": torch.zeros(0, dtype=F64)}, "t"),
        ({"t": [0.0, math.nan, 1.0]}, "t"),
        ({"t": [0.0, math.inf]}, "t"),
        ({"t": [0.0, 0.5, 0.5, 1.0]}, "t"),
        ({"t": [0.0, 0.0]}, "t"),
        ({"t": [1.0, 0.5, 0.5, 0.0]}, "t"),
        ({"t": [0.0, 1.0, 0.5]}, "t"),
        ({"t": [1.0, 0.0, 0.5]}, "t"),
        ({"t": "soon"}, "t"),
        ({"func": lambda t, y: torch.zeros(2, dtype=F64)}, "func"),
        ({"func": lambda t, y: torch.zeros((), dtype=F64)}, "func"),
        ({"func": lambda t, y: (-y).float()}, "func"),
        ({"func": lambda t, y: 1.0}, "func"),
        ({"func": 3}, "func"),
        ({"method": "rk45"}, "method"),
        ({"method": object()}, "method"),
        ({"grad": "backprop"}, "grad"),
        ({"method": "rk4"}, "step_size"),
        ({"method": "euler"}, "step_size"),
        ({"method": "rk4", "step_size": 0.0}, "step_size"),
        ({"method": "rk4", "step_size": -0.1}, "step_size"),
        ({"rtol": 0.0}, "rtol"),
        ({"rtol": -1e-6}, "rtol"),
        ({"rtol": math.nan}, "rtol"),
        ({"rtol": "tight"}, "rtol"),
        ({"atol": 0.0}, "atol"),
        ({"atol": -1e-8}, "atol"),
        ({"atol": math.inf}, "atol"),
        ({"y0": torch.tensor([1, 2])}, "y0"),
        ({"y0": torch.tensor([1.0], dtype=torch.float16)}, "y0"),
        ({"y0": torch.tensor([True])}, "y0"),
        ({"y0": [1.0]}, "y0"),
        ({"y0": torch.zeros(0, dtype=F64)}, "y0"),
        ({"max_steps": 0}, "max_steps"),
        ({"max_steps": 10.0}, "max_steps"),
        ({"first_step": -1.0}, "first_step"),
        ({"controller": "pid"}, "controller"),
        ({"controller": physode.ConstantStep(0.1), "step_size": 0.1}, "step_size"),
        ({"method": "rk4", "controller": physode.PIDController()}, "step_size"),
        ({"y0": (Y1, Y1.float())}, "y0"),
        ({"y0": {"a": Y1, "b": 2.0}}, "y0"),
        ({"y0": (Y1,), "func": lambda t, y: (y[0], y[0])}, "func"),
        ({"y0": (Y1,), "func": lambda t, y: (y[0].unsqueeze(0),)}, "func"),
        ({"grad": "mali", "method": "dopri5"}, "method"),
        ({"grad": physode.MALI(), "method": "rk4", "step_size": 0.1}, "method"),
    ],
)
def test_bad_input_names_the_argument(overrides, name):
    with pytest.raises(ValueError, match=rf"^{re.escape(name)}\b"):
        _call(**overrides)


@pytest.mark.parametrize(
    ("make", "name"),
    [
        (lambda: physode.PIDController(min_step=1.0, max_step=0.1), "min_step"),
        (lambda: physode.PIDController(safety=1.5), "safety"),
        (lambda: physode.PIDController(dfactor=2.0), "dfactor"),
        (lambda: physode.ConstantStep(0.0), "step_size"),
        (lambda: physode.MALI(checkpoint_every=0), "checkpoint_every"),
        (lambda: physode.MALI(on_drift="ignore"), "on_drift"),
        (lambda: physode.Adjoint(rtol=-1.0), "rtol"),
    ],
)
def test_bad_options_of_the_engine_objects_name_the_argument(make, name):
    with pytest.raises(ValueError, match=rf"^{re.escape(name)}\b"):
        make()


def test_solve_validates_like_odeint():
    with pytest.raises(ValueError, match="rtol"):
        physode.solve(decay, Y1, [0.0, 1.0], rtol=0.0)


def test_solver_error_is_a_runtime_error():
    assert issubclass(physode.SolverError, RuntimeError)


def test_max_steps_adaptive():
    with pytest.raises(physode.SolverError) as info:
        _call(t=[0.0, 10.0], max_steps=3)
    err = info.value
    assert err.reason == "max_steps"
    assert err.n_steps == 3
    assert 0.0 < err.t < 10.0
    assert err.h is not None and err.h > 0
    message = str(err)
    assert "t=" in message and "max_steps" in message


def test_max_steps_counts_rejections():
    # A far too large first step is rejected; with max_steps=1 nothing is left.
    with pytest.raises(physode.SolverError) as info:
        physode.odeint(rotation_rhs, Y0_ROT, [0.0, 10.0], first_step=5.0, max_steps=1)
    assert info.value.reason == "max_steps"
    assert info.value.n_steps == 1
    assert info.value.t == 0.0


def test_max_steps_exactly_enough():
    sol = physode.solve(rotation_rhs, Y0_ROT, [0.0, 1.0], method="rk4", step_size=0.1)
    again = physode.solve(
        rotation_rhs, Y0_ROT, [0.0, 1.0], method="rk4", step_size=0.1, max_steps=10
    )
    assert sol.stats.n_accepted == again.stats.n_accepted == 10
    adaptive = physode.solve(rotation_rhs, Y0_ROT, [0.0, 3.0])
    n = adaptive.stats.n_steps
    assert physode.solve(rotation_rhs, Y0_ROT, [0.0, 3.0], max_steps=n).stats.n_steps == n
    with pytest.raises(physode.SolverError, match="max_steps"):
        physode.solve(rotation_rhs, Y0_ROT, [0.0, 3.0], max_steps=n - 1)


def test_max_steps_fixed_step_raises_before_stepping():
    calls = []

    def f(t, y):
        calls.append(float(t))
        return -y

    with pytest.raises(physode.SolverError) as info:
        physode.odeint(f, Y1, [0.0, 10.0], method="rk4", step_size=0.1, max_steps=50)
    err = info.value
    assert err.reason == "max_steps"
    assert err.n_steps == 0
    assert err.t == 0.0
    assert err.h == pytest.approx(0.1)
    assert "max_steps" in str(err) and "t=" in str(err)
    # At most the evaluation at the initial state: no step was taken.
    assert len(calls) <= 1


def _message_time(err) -> float:
    match = re.search(r"t=([-+0-9.eE]+)", str(err))
    assert match, str(err)
    return float(match.group(1))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_finite_time_blow_up(dtype):
    # y' = y^2, y(0) = 1: y = 1 / (1 - t) blows up at t = 1.
    with pytest.raises(physode.SolverError) as info:
        physode.odeint(lambda t, y: y * y, torch.ones(1, dtype=dtype), [0.0, 2.0])
    err = info.value
    assert err.reason in ("step_underflow", "non_finite")
    assert abs(err.t - 1.0) < 1e-3
    assert abs(_message_time(err) - 1.0) < 1e-3
    assert err.n_steps > 10
    assert err.h is not None and abs(err.h) < 1e-6


def test_nan_after_some_time_adaptive():
    def f(t, y):
        return -y if float(t) < 0.5 else torch.full_like(y, math.nan)

    with pytest.raises(physode.SolverError) as info:
        physode.odeint(f, Y1, [0.0, 1.0])
    err = info.value
    assert err.reason in ("step_underflow", "non_finite")
    assert abs(err.t - 0.5) < 1e-6
    assert "non-finite" in str(err)


@pytest.mark.parametrize("method", ["rk4", "euler", "dopri5", "alf"])
def test_nan_after_some_time_fixed_step(method):
    def f(t, y):
        return -y if float(t) < 0.5 else torch.full_like(y, math.nan)

    with pytest.raises(physode.SolverError) as info:
        physode.odeint(f, Y1, [0.0, 1.0], method=method, step_size=0.1)
    err = info.value
    assert err.reason == "non_finite"
    assert 0.3 <= err.t <= 0.6
    assert err.h == pytest.approx(0.1)


def test_non_finite_at_the_initial_state():
    with pytest.raises(physode.SolverError) as info:
        physode.odeint(lambda t, y: y * math.inf, Y1, [0.0, 1.0])
    err = info.value
    assert (err.reason, err.t, err.h, err.n_steps) == ("non_finite", 0.0, None, 0)


def test_min_step_too_large_for_the_tolerance():
    # cos(10 t) y needs steps far below 0.1 at rtol 1e-10.
    with pytest.raises(physode.SolverError) as info:
        physode.odeint(
            lambda t, y: torch.cos(10 * t) * y,
            Y1,
            [0.0, 1.0],
            rtol=1e-10,
            atol=1e-12,
            controller=physode.PIDController(min_step=0.1),
        )
    err = info.value
    assert err.reason == "min_step"
    assert abs(err.h) == pytest.approx(0.1)
    assert err.n_steps >= 1
    assert "min_step" in str(err)


# ---------------------------------------------------------------------------- scale-safe norms


def test_states_of_very_different_sizes_solve():
    # y' = (y1, -y0) from (1, 1e300): the squares of the scaled norms overflowed float64
    # and the initial-step heuristic divided by a zero step.
    t = torch.linspace(0.0, 2.0, 5, dtype=torch.float64)
    ys = physode.odeint(
        lambda t, y: torch.stack([y[1], -y[0]]), torch.tensor([1.0, 1e300], dtype=torch.float64), t
    )
    exact = torch.stack([torch.cos(t) + 1e300 * torch.sin(t), -torch.sin(t) + 1e300 * torch.cos(t)])
    assert ((ys.T - exact).abs() / 1e300).max() < 1e-5


def test_a_large_derivative_in_float32_is_not_a_step_underflow():
    # y' = 1e12 from y = 0 in float32: the scaled derivative's square (1e40) overflowed
    # float32 and the heuristic proposed a zero first step.
    sol = physode.solve(
        lambda t, y: torch.full_like(y, 1e12), torch.zeros(2), torch.linspace(0, 1, 3)
    )
    torch.testing.assert_close(sol.ys[:, 0], torch.tensor([0.0, 5e11, 1e12]), rtol=1e-6, atol=0.0)
    assert sol.stats.n_rejected == 0


def test_the_scale_safe_rms_matches_the_plain_one_where_both_are_finite():
    from physode.solvers.norms import rms

    x = torch.randn(1000, dtype=torch.float64)
    torch.testing.assert_close(rms(x), x.square().mean().sqrt(), rtol=1e-14, atol=0)
    assert rms(torch.zeros(3)) == 0.0
    big = torch.tensor([1e30, -1e30, 0.0, 0.0], dtype=torch.float32)  # squares overflow float32
    assert rms(big).item() == pytest.approx(1e30 / 2**0.5, rel=1e-6)
    assert not torch.isfinite(rms(torch.tensor([1.0, float("inf")])))
