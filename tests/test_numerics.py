"""End-to-end accuracy: scipy reference solutions, dtypes, time direction, batch shapes."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from ode_problems import F64, Y0_ROT, rotation_exact, rotation_rhs
from scipy.integrate import solve_ivp

import physode

METHODS_ADAPTIVE = ["heun_euler", "bosh3", "dopri5", "tsit5", "alf"]


def _reference(rhs_np, y0, t_eval):
    sol = solve_ivp(
        rhs_np,
        (t_eval[0], t_eval[-1]),
        np.asarray(y0, dtype=np.float64),
        method="DOP853",
        rtol=1e-12,
        atol=1e-12,
        t_eval=t_eval,
    )
    assert sol.success
    return torch.from_numpy(sol.y.T.copy())


MU = 5.0


def vdp_torch(t, y):
    return torch.stack([y[1], MU * (1 - y[0] ** 2) * y[1] - y[0]])


def vdp_numpy(t, y):
    return [y[1], MU * (1 - y[0] ** 2) * y[1] - y[0]]


@pytest.mark.parametrize("method", ["dopri5", "tsit5"])
def test_van_der_pol_matches_scipy(method):
    t = np.linspace(0.0, 10.0, 41)
    ref = _reference(vdp_numpy, [2.0, 0.0], t)
    ys = physode.odeint(
        vdp_torch,
        torch.tensor([2.0, 0.0], dtype=F64),
        torch.from_numpy(t),
        method=method,
        rtol=1e-8,
        atol=1e-10,
    )
    # Observed ~3e-8; at rtol=1e-6 the error is ~2e-6, so 1e-6 is a real bound.
    assert (ys - ref).abs().max().item() < 1e-6


MASSES = torch.tensor([1.0, 1.1, 0.9], dtype=F64)


def three_body(t, y):
    """Newtonian gravity, G = 1: y = 9 positions then 9 velocities."""
    x = y[:9].reshape(3, 3)
    v = y[9:]
    diff = x[None, :, :] - x[:, None, :]  # diff[i, j] = x_j - x_i
    r2 = diff.square().sum(-1) + torch.eye(3, dtype=y.dtype)  # no self-interaction
    acc = (MASSES.to(y.dtype)[None, :, None] * diff / r2.pow(1.5)[..., None]).sum(1)
    return torch.cat([v, acc.reshape(-1)])


def three_body_numpy(t, y):
    return three_body(None, torch.from_numpy(y)).numpy()


THREE_BODY_Y0 = torch.cat(
    [
        torch.tensor([[1.0, 0, 0], [-0.5, 0.9, 0.1], [-0.5, -0.9, -0.1]], dtype=F64).reshape(-1),
        torch.tensor([[0, 0.5, 0.1], [-0.45, -0.25, 0], [0.45, -0.25, -0.1]], dtype=F64).reshape(
            -1
        ),
    ]
)


@pytest.mark.parametrize("method", ["dopri5", "tsit5"])
def test_three_body_matches_scipy(method):
    t = np.linspace(0.0, 1.0, 11)
    ref = _reference(three_body_numpy, THREE_BODY_Y0.numpy(), t)
    # The bodies really move (no collision, distances stay of order 1).
    assert (ref[-1] - ref[0]).abs().max().item() > 0.1
    ys = physode.odeint(
        three_body, THREE_BODY_Y0, torch.from_numpy(t), method=method, rtol=1e-9, atol=1e-9
    )
    # Observed ~3e-9; at rtol=1e-6 the error is ~1e-6.
    assert (ys - ref).abs().max().item() < 1e-7


@pytest.mark.parametrize("method", ["dopri5", "tsit5", "bosh3", "alf"])
def test_output_dtype_and_float32_agrees_with_float64(method):
    t = torch.linspace(0.0, 5.0, 11)
    rtol = 1e-5
    y32 = physode.odeint(rotation_rhs, Y0_ROT.float(), t, method=method, rtol=rtol, atol=1e-7)
    y64 = physode.odeint(rotation_rhs, Y0_ROT, t, method=method, rtol=rtol, atol=1e-7)
    assert y32.dtype == torch.float32
    assert y64.dtype == torch.float64
    # Step sequences differ between the dtypes, so compare each with the exact solution:
    # float32 is as accurate as float64 up to its own rounding.
    exact = rotation_exact(t)
    err32 = (y32.double() - exact).abs().max().item()
    err64 = (y64 - exact).abs().max().item()
    assert err64 < 1e-3
    assert err32 < 1.5 * err64 + 1e-5


@pytest.mark.parametrize("method", ["dopri5", "rk4", "alf"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_func_receives_a_0_dim_time_in_the_state_dtype(method, dtype):
    seen = []

    def f(t, y):
        seen.append((type(t), t.dtype, t.shape, t.device))
        return -y

    step = 0.1 if method == "rk4" else None
    ys = physode.odeint(f, torch.ones(3, dtype=dtype), [0.0, 1.0], method=method, step_size=step)
    assert ys.dtype == dtype
    assert len(seen) > 3
    assert set(seen) == {(torch.Tensor, dtype, torch.Size([]), torch.device("cpu"))}


def test_solution_times_are_float64():
    sol = physode.solve(rotation_rhs, Y0_ROT.float(), torch.linspace(0, 1, 4))
    assert sol.t.dtype == torch.float64
    assert sol.t.tolist() == pytest.approx([0.0, 1 / 3, 2 / 3, 1.0], abs=1e-7)


@pytest.mark.parametrize("method", ["dopri5", "tsit5", "bosh3", "alf"])
def test_decreasing_time_matches_exact_solution(method):
    y1 = rotation_exact([1.0])[0]
    t = torch.linspace(1.0, 0.0, 6, dtype=F64)
    ys = physode.odeint(rotation_rhs, y1, t, method=method, rtol=1e-8, atol=1e-10)
    assert ys.shape == (6, 2)
    exact = torch.stack([rotation_exact([s - 1.0], y1)[0] for s in t.tolist()])
    tol = 1e-7 if method != "alf" else 1e-5
    assert (ys - exact).abs().max().item() < tol
    assert (ys[-1] - Y0_ROT).abs().max().item() < tol


@pytest.mark.parametrize("method", ["dopri5", "tsit5", "bosh3"])
def test_forward_then_backward_returns_to_y0(method):
    def nonlinear(t, y):
        return torch.stack([y[1], -torch.sin(y[0]) + 0.1 * torch.cos(t)])

    y0 = torch.tensor([1.0, -0.3], dtype=F64)
    forward = physode.odeint(nonlinear, y0, [0.0, 3.0], method=method, rtol=1e-9, atol=1e-11)
    backward = physode.odeint(
        nonlinear, forward[-1], [3.0, 0.0], method=method, rtol=1e-9, atol=1e-11
    )
    assert (forward[-1] - y0).abs().max().item() > 0.1
    assert (backward[-1] - y0).abs().max().item() < 1e-7


@pytest.mark.parametrize("shape", [(), (3,), (4, 3), (2, 4, 3)])
@pytest.mark.parametrize("method", ["dopri5", "rk4"])
def test_batch_shapes(shape, method):
    # y' = -cos(t) y, y = y0 exp(-sin t), elementwise for any shape.
    y0 = torch.linspace(0.5, 1.5, math.prod(shape), dtype=F64).reshape(shape)
    t = torch.linspace(0.0, 2.0, 5, dtype=F64)
    step = 0.01 if method == "rk4" else None
    ys = physode.odeint(
        lambda t, y: -torch.cos(t) * y, y0, t, method=method, step_size=step, rtol=1e-8, atol=1e-10
    )
    assert ys.shape == (len(t), *shape)
    exact = y0[None] * torch.exp(-torch.sin(t)).reshape(-1, *[1] * len(shape))
    assert (ys - exact).abs().max().item() < 1e-7


@pytest.mark.parametrize("method", METHODS_ADAPTIVE)
def test_batch_of_problems_matches_individual_solves(method):
    # Four independent rotations with different initial states: one shared
    # step size for the batch, so the answers agree to tolerance, not bits.
    y0 = torch.tensor([[1.0, 0.5], [-0.3, 2.0], [0.0, 1.0], [4.0, -1.0]], dtype=F64)
    t = torch.linspace(0.0, 3.0, 7, dtype=F64)
    tol = 1e-8 if method not in ("heun_euler", "alf") else 1e-5
    batch = physode.odeint(rotation_rhs, y0, t, method=method, rtol=tol, atol=tol)
    assert batch.shape == (7, 4, 2)
    alone = torch.stack(
        [
            physode.odeint(rotation_rhs, y0[i], t, method=method, rtol=tol, atol=tol)
            for i in range(4)
        ],
        dim=1,
    )
    exact = torch.stack([rotation_exact(t, y0[i]) for i in range(4)], dim=1)
    error_scale = (alone - exact).abs().max().item()
    assert error_scale < 1e-3
    # As accurate as solving alone, and equal to the individual solves to that scale.
    assert (batch - exact).abs().max().item() < 10 * error_scale
    assert (batch - alone).abs().max().item() < 10 * error_scale


def test_single_output_time_returns_y0():
    ys = physode.odeint(rotation_rhs, Y0_ROT, [0.5])
    assert ys.shape == (1, 2)
    assert torch.equal(ys[0], Y0_ROT)


def test_outputs_start_with_y0():
    ys = physode.odeint(rotation_rhs, Y0_ROT, torch.linspace(0, 1, 3, dtype=F64))
    assert torch.equal(ys[0], Y0_ROT)
