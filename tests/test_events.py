"""Events: the crossing time located on the dense output, and its gradients (implicit
function theorem) for every gradient method, against closed forms."""

from __future__ import annotations

import math

import pytest
import torch
from example_modules import load_example

import physode

F64 = torch.float64
G, H0, V0 = 9.81, 10.0, 3.0
S = math.sqrt(V0**2 + 2 * G * H0)
LANDING = (V0 + S) / G  # the time a projectile thrown up at V0 from H0 lands


def _projectile(g):
    return lambda t, y: torch.stack([y[1], -g * torch.ones_like(y[1])])


def _height(t, y):
    return y[0]


GRADS = [
    ("direct", "dopri5", {"rtol": 1e-10, "atol": 1e-12}),
    ("aca", "dopri5", {"rtol": 1e-10, "atol": 1e-12}),
    ("adjoint", "dopri5", {"rtol": 1e-10, "atol": 1e-12}),
    ("aca", "dopri8", {"rtol": 1e-10, "atol": 1e-12}),
    ("aca", "rk4", {"step_size": 0.05}),
    ("mali", "alf", {"rtol": 1e-6, "atol": 1e-8}),
]


@pytest.mark.parametrize(("grad", "method", "options"), GRADS)
def test_projectile_landing_time_and_its_gradients(grad, method, options):
    g = torch.tensor(G, dtype=F64, requires_grad=True)
    y0 = torch.tensor([H0, V0], dtype=F64, requires_grad=True)
    t0 = torch.tensor(0.5, dtype=F64, requires_grad=True)
    t_event, ys = physode.odeint_event(
        _projectile(g), y0, t0, _height, method=method, grad=grad, params=(g,), **options
    )
    # Polynomial motion: every method here is exact up to its tolerance and round-off.
    tol = 1e-5 if method == "alf" else 1e-12
    assert t_event.item() == pytest.approx(0.5 + LANDING, abs=tol)
    assert abs(ys[1, 0].item()) < tol
    assert ys[1, 1].item() == pytest.approx(V0 - G * LANDING, abs=10 * tol)
    dh, dv = 1 / S, (1 + V0 / S) / G
    dg = -(V0 + S) / G**2 + H0 / (G * S)
    grads = torch.autograd.grad(t_event, (y0, t0, g))
    torch.testing.assert_close(grads[0], torch.tensor([dh, dv], dtype=F64), rtol=tol, atol=tol)
    assert grads[1].item() == pytest.approx(1.0, abs=tol)
    assert grads[2].item() == pytest.approx(dg, abs=tol)


def test_state_at_the_event_moves_with_the_event_time():
    # v(t*) = v0 - g (t* - t0): dv(t*)/dv0 = 1 - g dt*/dv0, dv(t*)/dh0 = -g dt*/dh0.
    y0 = torch.tensor([H0, V0], dtype=F64, requires_grad=True)
    _, ys = physode.odeint_event(_projectile(G), y0, 0.0, _height, rtol=1e-10, atol=1e-12)
    (grad,) = torch.autograd.grad(ys[1, 1], y0)
    expected = torch.tensor([-G / S, 1 - (1 + V0 / S)], dtype=F64)
    torch.testing.assert_close(grad, expected, rtol=1e-9, atol=1e-9)


def test_reverse_time_several_channels_and_tuple_states():
    # Backwards from t=0 on x' = 1: x = t; the first of x = -0.3 and x = -0.7 is met first.
    def f(t, state):
        x, c = state
        return torch.ones_like(x), torch.zeros_like(c)

    def events(t, state):
        x, _ = state
        return torch.stack([x + 0.7, x + 0.3]).reshape(-1)

    state = (torch.zeros(1, dtype=F64), torch.ones(1, dtype=F64))
    t_event, (xs, cs) = physode.odeint_event(f, state, 0.0, events, reverse_time=True)
    assert t_event.item() == pytest.approx(-0.3, abs=1e-12)
    assert xs.shape == (2, 1) and cs.shape == (2, 1)
    assert xs[1].item() == pytest.approx(-0.3, abs=1e-12)


def test_event_errors_name_the_problem():
    with pytest.raises(physode.SolverError, match="no zero crossing"):
        physode.odeint_event(
            _projectile(G),
            torch.tensor([H0, V0], dtype=F64),
            0.0,
            lambda t, y: y[0] + 1e6,
            t_max=5.0,
        )
    with pytest.raises(ValueError, match="t_max"):
        physode.odeint_event(
            _projectile(G), torch.tensor([H0, V0], dtype=F64), 0.0, _height, t_max=-1.0
        )
    with pytest.raises(ValueError, match="event_fn"):
        physode.odeint_event(_projectile(G), torch.tensor([H0, V0], dtype=F64), 0.0, None)


@pytest.fixture(scope="module")
def ball():
    return load_example("bouncing_ball.py")


def test_bounce_times_and_their_derivative_in_e(ball):
    e = torch.tensor(0.6, dtype=F64, requires_grad=True)
    times = ball.bounce_times(e, 2.0, 4)
    exact = ball.analytic_bounce_times(0.6, 2.0, 4)
    torch.testing.assert_close(times, torch.tensor(exact, dtype=F64), rtol=1e-9, atol=1e-9)
    # t_4 = t1 + 2 t1 (e + e^2 + e^3): dt_4/de = 2 t1 (1 + 2e + 3e^2).
    t1 = math.sqrt(2 * 2.0 / ball.G)
    (grad,) = torch.autograd.grad(times[-1], e)
    assert grad.item() == pytest.approx(2 * t1 * (1 + 2 * 0.6 + 3 * 0.36), rel=1e-8)


def test_bouncing_ball_fit_recovers_the_restitution(ball):
    observed = torch.tensor(ball.analytic_bounce_times(0.75, 2.0, 5), dtype=F64)
    e = ball.fit(observed, steps=6, verbose=False)
    assert e == pytest.approx(0.75, abs=1e-6)
