"""The methods beyond the classical ones: dopri8 (DOP853), fehlberg2, the fixed-step Adams
methods, and stepping on a given grid. Orders by convergence, accuracy against the exact
solution and scipy, gradients against finite differences in float64."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from ode_problems import F64, Y0_ROT, fitted_slope, rotation_exact, rotation_rhs
from scipy.integrate import solve_ivp

import physode
from physode.solvers import FIXED_STEP_METHODS, GridSteps

T_END = 2.0


def _end_error(method: str, h: float) -> float:
    ys = physode.odeint(rotation_rhs, Y0_ROT, [0.0, T_END], method=method, step_size=h)
    return (ys[-1] - rotation_exact([T_END])[0]).abs().max().item()


@pytest.mark.parametrize(
    ("method", "order", "hs"),
    [
        ("dopri8", 8, [0.5, 0.4, 0.3, 0.25]),
        ("fehlberg2", 2, [0.1, 0.05, 0.025, 0.0125]),
        ("ab4", 4, [0.1, 0.05, 0.025, 0.0125]),
        ("abm4", 4, [0.1, 0.05, 0.025, 0.0125]),
    ],
)
def test_methods_converge_at_their_order(method, order, hs):
    errors = [_end_error(method, h) for h in hs]
    slope = fitted_slope(hs, errors)
    assert abs(slope - order) <= 0.25, (slope, errors)


def test_adams_methods_are_fixed_step_and_cost_what_they_should():
    assert {"ab4", "abm4"} <= set(FIXED_STEP_METHODS)
    # 20 steps of 0.1: RK4 start (4 evaluations a step for 3 steps), then one (AB) or
    # two (PECE) a step, plus f(t0, y0).
    for method, per_step in (("ab4", 1), ("abm4", 2)):
        sol = physode.solve(rotation_rhs, Y0_ROT, [0.0, T_END], method=method, step_size=0.1)
        assert sol.stats.n_f_evals == 1 + 3 * 4 + 17 * per_step
    with pytest.raises(ValueError, match="step_size"):
        physode.odeint(rotation_rhs, Y0_ROT, [0.0, 1.0], method="ab4")


def test_adams_restarts_when_the_step_changes():
    # A shortened last step (0.05 of 0.1) must not reuse slopes taken with the longer
    # one: the error stays what it is on the full grid (reusing them would add an
    # O(h) error, ~1e-2 here).
    def end_error(t_end):
        sol = physode.solve(rotation_rhs, Y0_ROT, [0.0, t_end], method="ab4", step_size=0.1)
        return (sol.ys[-1] - rotation_exact([t_end])[0]).abs().max().item()

    assert end_error(1.95) < 1.5 * end_error(2.0)


@pytest.mark.parametrize("tol", [1e-6, 1e-9, 1e-12])
def test_dopri8_meets_tolerance_and_matches_scipy_dop853_work(tol):
    t = torch.linspace(0.0, 10.0, 11, dtype=F64)
    sol = physode.solve(rotation_rhs, Y0_ROT, t, method="dopri8", rtol=tol, atol=tol)
    err = (sol.ys - rotation_exact(t)).abs().max().item()
    assert err < 20 * tol
    A = np.array([[-0.1, 1.0], [-1.0, -0.1]])
    ref = solve_ivp(lambda s, y: A @ y, (0, 10), Y0_ROT.numpy(), "DOP853", rtol=tol, atol=tol)
    # Same pair, same error norm, a similar controller: similar work.
    assert 0.6 < sol.stats.n_f_evals / ref.nfev < 1.6, (sol.stats.n_f_evals, ref.nfev)


def test_dopri8_dense_output_is_seventh_order():
    # One step of size h with an output inside: the interpolant's local error is O(h^8)
    # (its three extra stages are evaluated only for such a step).
    errors, hs = [], [0.8, 0.4, 0.2]
    for h in hs:
        sol = physode.solve(rotation_rhs, Y0_ROT, [0.0, 0.37 * h, h], method="dopri8", step_size=h)
        errors.append((sol.ys[1] - rotation_exact([0.37 * h])[0]).abs().max().item())
        assert sol.stats.n_f_evals == 1 + 12 + 3
    assert abs(fitted_slope(hs, errors) - 8) < 0.3, errors


def test_fehlberg2_overshoots_its_tolerance_as_documented():
    # Its estimate is the first-order solution's: the propagated second-order one ends
    # far past the tolerance (the reason it is kept only for torchdiffeq's code).
    t = torch.linspace(0.0, 6.0, 7, dtype=F64)
    err = (
        (
            physode.odeint(rotation_rhs, Y0_ROT, t, method="fehlberg2", rtol=1e-4, atol=1e-4)
            - rotation_exact(t)
        )
        .abs()
        .max()
        .item()
    )
    assert 1e-3 < err < 1.0


def _loss(method, grad, k, y0, **options):
    W = torch.tensor([[0.3, -0.5, 0.1], [0.4, 0.2, -0.6], [-0.2, 0.5, 0.3]], dtype=F64)

    def f(t, y):
        return torch.tanh(W @ y) * k[0] + k[1] * y * torch.sin(t)

    ys = physode.odeint(
        f,
        y0,
        torch.linspace(0, 1.3, 4, dtype=F64),
        method=method,
        grad=grad,
        params=(k,),
        **options,
    )
    return (ys**2).sum()


CASES = [
    ("dopri8", {"rtol": 1e-11, "atol": 1e-13}),
    ("fehlberg2", {"step_size": 0.01}),
    ("ab4", {"step_size": 0.05}),
    ("abm4", {"step_size": 0.05}),
]


@pytest.mark.parametrize(("method", "options"), CASES)
@pytest.mark.parametrize("grad", ["direct", "aca", "adjoint"])
def test_gradients_of_every_new_method(method, options, grad):
    k = torch.tensor([0.7, -0.3], dtype=F64, requires_grad=True)
    y0 = torch.tensor([0.5, -1.0, 0.2], dtype=F64, requires_grad=True)
    (gk,) = torch.autograd.grad(_loss(method, grad, k, y0, **options), (k,))
    eps, fd = 1e-6, []
    for i in range(2):
        step = eps * torch.eye(2, dtype=F64)[i]
        fd.append(
            (
                _loss(method, "direct", k.detach() + step, y0.detach(), **options)
                - _loss(method, "direct", k.detach() - step, y0.detach(), **options)
            )
            / (2 * eps)
        )
    fd = torch.stack(fd)
    rel = ((gk - fd).abs().max() / fd.abs().max()).item()
    # direct and ACA differentiate the discrete solve exactly; the continuous adjoint
    # is the exact gradient up to the backward solve's error.
    assert rel < (1e-7 if grad != "adjoint" or method == "dopri8" else 5e-4), rel


@pytest.mark.parametrize(("method", "options"), CASES[2:])
def test_aca_equals_direct_through_the_adams_history(method, options):
    # ACA pulls the adjoint back through the whole slope history of the multistep
    # state: to round-off the same gradient as backprop through the same steps.
    k = torch.tensor([0.7, -0.3], dtype=F64, requires_grad=True)
    y0 = torch.tensor([0.5, -1.0, 0.2], dtype=F64, requires_grad=True)
    direct = torch.autograd.grad(_loss(method, "direct", k, y0, **options), (k, y0))
    aca = torch.autograd.grad(_loss(method, "aca", k, y0, **options), (k, y0))
    for a, b in zip(direct, aca, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


def test_grid_steps_step_on_the_grid_and_interpolate_between():
    grid = [i / 10 for i in range(11)]
    f = lambda t, x: x  # noqa: E731
    x0 = torch.tensor(1.0, dtype=F64, requires_grad=True)
    sol = physode.solve(f, x0, [0.0, 0.55, 1.0], method="euler", controller=GridSteps(grid))
    assert sol.stats.n_accepted == 10
    assert sol.ys[-1].item() == pytest.approx(1.1**10, rel=1e-13)
    # 0.55 lies in the middle of the 6th step: cubic Hermite from its ends and slopes.
    y0, y1, h = 1.1**5, 1.1**6, 0.1
    hermite = 0.5 * (y0 + y1) + h / 8 * (y0 - y1)
    assert sol.ys[1].item() == pytest.approx(hermite, rel=1e-13)
    (grad,) = torch.autograd.grad(sol.ys[-1], x0)
    assert grad.item() == pytest.approx(1.1**10, rel=1e-13)
    back = physode.solve(
        f, torch.tensor(1.0, dtype=F64), [1.0, 0.0], method="rk4", controller=GridSteps(grid)
    )
    assert back.stats.n_accepted == 10
    assert back.ys[-1].item() == pytest.approx(math.exp(-1), rel=1e-6)
    with pytest.raises(ValueError, match="grid"):
        GridSteps(())
