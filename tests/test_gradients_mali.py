"""MALI: the ALF requirement, accuracy on damped problems, the reconstruction-drift check."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from test_gradients import (
    A_STIFF,
    F64,
    linear_gradients,
    linear_reference,
    rel,
)

import physode
from physode.solvers import AsyncLeapfrog

#: ALF exactly as the paper's: no velocity restarts, no gradient restarts.
PLAIN_ALF = AsyncLeapfrog(auto_restart=False, gradient_restart_every=None)


def decay(t, y):
    return -y


Y1 = torch.tensor([1.0, -0.5], dtype=F64)


# --------------------------------------------------------------------------------------------
# 7. MALI needs ALF, and picks it by default.


@pytest.mark.parametrize(
    "kwargs", [{"method": "dopri5"}, {"method": "tsit5"}, {"method": "rk4", "step_size": 0.1}]
)
def test_mali_refuses_other_solvers(kwargs):
    y0 = Y1.clone().requires_grad_()
    with pytest.raises(ValueError, match="method"):
        physode.odeint(decay, y0, [0.0, 1.0], grad="mali", **kwargs)


def test_mali_defaults_to_alf():
    y0 = Y1.clone().requires_grad_()
    t = torch.linspace(0.0, 1.0, 5, dtype=F64)
    sol = physode.solve(decay, y0, t, grad="mali", rtol=1e-6, atol=1e-8)
    # ALF costs one evaluation per (accepted or rejected) step, plus the initial
    # velocity, the initial step-size probe and one per velocity restart; dopri5
    # would cost six per step.
    stats = sol.stats
    assert stats.n_accepted > 10
    assert stats.n_f_evals == stats.n_steps + 2 + stats.extra.get("velocity_restarts", 0)
    alf = physode.solve(decay, Y1, t, method="alf", rtol=1e-6, atol=1e-8)
    assert torch.equal(sol.ys.detach(), alf.ys)
    assert rel(sol.ys.detach(), torch.exp(-t)[:, None] * Y1) < 1e-4
    (g,) = torch.autograd.grad(sol.ys[-1].sum(), y0)
    assert abs(g[0].item() / math.exp(-1.0) - 1) < 1e-4
    assert "mali_drift" in stats.extra


def test_mali_accepts_an_alf_solver_object():
    k = torch.tensor(1.0, dtype=F64, requires_grad=True)
    y0 = Y1.clone().requires_grad_()
    # eta < 1: the inverse step amplifies round-off by 1/(2 eta - 1) = 1.25 per step,
    # so 1000 steps need checkpoints (without them the drift is ~1e82).
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ys = physode.odeint(
            lambda t, y: -k * y,
            y0,
            [0.0, 1.0],
            method=AsyncLeapfrog(eta=0.9),
            grad=physode.MALI(checkpoint_every=20),
            step_size=1e-3,
            params=(k,),
        )
        g_y0, g_k = torch.autograd.grad(ys[-1].sum(), (y0, k))
    # eta < 1 makes ALF first order: ~h-sized relative error.
    assert abs(g_y0[0].item() / math.exp(-1.0) - 1) < 1e-2
    assert abs(g_k.item() / (-math.exp(-1.0) * Y1.sum().item()) - 1) < 1e-2


# --------------------------------------------------------------------------------------------
# 5. Damped linear systems against matrix_exp.

# ALF with eta = 1 cannot solve A_STIFF (eigenvalues -20, -5) over t in [0, 2]:
# its parasitic mode grows like e^{|lambda| t} = e^{40} in the *forward* solve
# (relative error ~1e9 at h = 1e-3, and adaptive ALF at rtol 1e-6 hits max_steps).
# That is ALF's own limit, so accuracy is checked on a milder damped system, and
# on A_STIFF MALI is checked against direct backprop through the same ALF steps.
A_MILD = torch.tensor([[-3.0, 1.0], [0.0, -1.0]], dtype=F64)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"step_size": 2e-3, "checkpoint_every": 10},
        {"step_size": 2e-3},
        {"rtol": 1e-8, "atol": 1e-8, "checkpoint_every": 10},
    ],
    ids=["fixed-checkpoints", "fixed", "adaptive-checkpoints"],
)
def test_mali_damped_linear_system_against_matrix_exp(kwargs):
    ref = linear_reference(A_MILD)
    mali = physode.MALI(checkpoint_every=kwargs.pop("checkpoint_every", None))
    got, stats = linear_gradients(A_MILD, mali, **kwargs)
    assert stats.n_accepted >= 500
    assert 0 <= stats.extra["mali_drift"] < 1
    for g, r in zip(got, ref, strict=True):
        assert rel(g, r) < 1e-4


def test_mali_with_checkpoints_equals_direct_alf_on_the_stiff_system():
    kwargs = {"method": PLAIN_ALF, "step_size": 5e-3}
    ref, _ = linear_gradients(A_STIFF, "direct", **kwargs)
    # The forward ALF solution itself is far off here (see above) ...
    exact = linear_reference(A_STIFF)
    assert rel(ref[1], exact[1]) > 1e3
    # ... but with checkpoints MALI still gives the gradient of what was computed.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got, stats = linear_gradients(A_STIFF, physode.MALI(checkpoint_every=10), **kwargs)
    assert stats.extra["mali_drift"] < 1e-3
    for g, r in zip(got, ref, strict=True):
        assert rel(g, r) < 1e-10
    # Without checkpoints the inverse steps amplify round-off beyond repair.
    with pytest.warns(RuntimeWarning, match=r"MALI\(checkpoint_every=K\)"):
        bad, stats = linear_gradients(A_STIFF, "mali", **kwargs)
    assert stats.extra["mali_drift"] > 1e10
    assert rel(bad[1], ref[1]) > 1.0


# --------------------------------------------------------------------------------------------
# 8. The drift check on a strongly contracting system.

# y' = -k y, k = 50, with the damped ALF (eta = 0.9; first order, stable at h k = 0.05).
# Going backwards, the inverse step amplifies ALF's parasitic mode by ~1.19 per step
# against 1.05 for the true solution: over 500 steps round-off grows by ~1e26.
K_FAST = 50.0
T_FAST = torch.linspace(0.0, 0.5, 6, dtype=F64)
W_FAST = torch.arange(1.0, 7.0, dtype=F64)[:, None]
# Velocity restarts would act as exact checkpoints here: these tests are about the drift
# check itself, so they are switched off.
ETA09 = {"method": AsyncLeapfrog(eta=0.9, gradient_restart_every=None), "step_size": 1e-3}


def fast_decay_gradients(grad, **kwargs):
    k = torch.tensor(K_FAST, dtype=F64, requires_grad=True)
    y0 = Y1.clone().requires_grad_()
    sol = physode.solve(lambda t, y: -k * y, y0, T_FAST, grad=grad, params=(k,), **ETA09, **kwargs)
    exact = torch.exp(-K_FAST * T_FAST)[:, None] * Y1
    # The forward solve is stable and first-order accurate (6% relative here).
    assert rel(sol.ys[-1].detach(), exact[-1]) < 0.1
    grads = torch.autograd.grad((W_FAST * sol.ys).sum(), (y0, k))
    return grads, sol.stats


def test_drift_without_checkpoints_warns():
    ref, _ = fast_decay_gradients("direct")
    with pytest.warns(RuntimeWarning, match="drifted"):
        got, stats = fast_decay_gradients("mali")
    assert stats.extra["mali_drift"] > 1e6
    assert stats.n_accepted == 500
    # The warning is deserved: dL/dk is far off.
    assert rel(got[1], ref[1]) > 1.0


def test_drift_without_checkpoints_raises_when_asked():
    with pytest.raises(physode.SolverError, match="drifted") as info:
        fast_decay_gradients(physode.MALI(on_drift="error"))
    assert info.value.reason == "mali_drift"


def test_checkpoints_bound_the_drift():
    ref, _ = fast_decay_gradients("direct")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got, stats = fast_decay_gradients(physode.MALI(checkpoint_every=5))
    assert stats.extra["mali_drift"] < 1e-6
    # The exact gradient of the discrete solve, and (to ALF's first order) of the ODE:
    # dL/dk = -sum_k w_k t_k e^{-k t_k} sum(y0).
    for g, r in zip(got, ref, strict=True):
        assert rel(g, r) < 1e-10
    exact_dk = -(W_FAST[:, 0] * T_FAST * torch.exp(-K_FAST * T_FAST)).sum() * Y1.sum()
    assert abs(got[1].item() / exact_dk.item() - 1) < 0.1


def test_drift_is_measured_in_tolerance_units():
    # The same fixed steps with rtol and atol both ten times looser: the drift,
    # |rebuilt - true| / (atol + rtol |true|) (RMS), is ten times smaller.
    _, tight = fast_decay_gradients(physode.MALI(checkpoint_every=5), rtol=1e-6, atol=1e-8)
    _, loose = fast_decay_gradients(physode.MALI(checkpoint_every=5), rtol=1e-5, atol=1e-7)
    assert tight.extra["mali_drift"] > 0
    assert abs(tight.extra["mali_drift"] / loose.extra["mali_drift"] - 10) < 1e-9


@pytest.mark.parametrize("on_drift", ["warn", "error"])
def test_a_reconstruction_that_overflows_is_reported(on_drift):
    # eta = 0.6: the inverse step multiplies ALF's parasitic mode by ~5, so within a few
    # hundred of the 600 inverse steps the rebuilt state overflows to inf and then NaN,
    # and the gradient comes out NaN.
    # BUG: mali.py combines drifts with Python's max(); max(d, nan) returns d, so
    # the NaN drift is dropped: stats.extra["mali_drift"] reads 0.0, no warning is
    # emitted and mali_on_drift="error" does not raise, while dL/dk is NaN.
    k = torch.tensor(K_FAST, dtype=F64, requires_grad=True)
    y0 = Y1.clone().requires_grad_()
    sol = physode.solve(
        lambda t, y: -k * y,
        y0,
        [0.0, 0.6],
        method=AsyncLeapfrog(eta=0.6, gradient_restart_every=None),
        grad=physode.MALI(on_drift=on_drift),
        step_size=1e-3,
        params=(k,),
    )
    assert torch.isfinite(sol.ys).all()
    loss = sol.ys[-1].sum()
    if on_drift == "error":
        with pytest.raises(physode.SolverError, match="drifted"):
            torch.autograd.grad(loss, (y0, k))
        return
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _, g_k = torch.autograd.grad(loss, (y0, k))
    drift = sol.stats.extra["mali_drift"]
    assert math.isnan(g_k.item())  # what the user gets ...
    assert not drift <= 1.0, f"a NaN reconstruction was reported as drift {drift}"
    assert any(issubclass(w.category, RuntimeWarning) for w in caught)


# --------------------------------------------------------------------------------------------
# 9. Velocity restarts: ALF with eta = 1 on a contracting limit cycle.


class VanDerPol(torch.nn.Module):
    def __init__(self, mu: float = 1.0):
        super().__init__()
        self.mu = torch.nn.Parameter(torch.tensor(mu, dtype=F64))

    def forward(self, t, y):
        z, v = y[..., 0], y[..., 1]
        return torch.stack([v, self.mu * (1.0 - z * z) * v - z], dim=-1)


def vdp_gradient(grad: str, t_end: float, **kwargs) -> tuple[torch.Tensor, physode.Solution]:
    func = VanDerPol()
    y0 = torch.tensor([2.0, 0.0], dtype=F64, requires_grad=True)
    sol = physode.solve(func, y0, [0.0, t_end], grad=grad, **kwargs)
    g = torch.autograd.grad(sol.ys[-1].square().sum(), (y0, func.mu))
    return torch.cat([x.reshape(-1) for x in g]), sol


def test_mali_with_default_alf_finishes_van_der_pol_accurately():
    # ALF's parasitic velocity mode grows on the limit cycle's contracting phases.
    # The default gradient restarts (every 100 steps) keep MALI's gradient as
    # accurate as its forward solve.
    ref, _ = vdp_gradient("aca", 10.0, rtol=1e-11, atol=1e-11)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got, sol = vdp_gradient("mali", 10.0, rtol=1e-7, atol=1e-7)
    assert rel(got, ref) < 1e-3
    assert sol.stats.n_accepted > 1000  # so about ten gradient restarts happened
    assert sol.stats.extra["mali_drift"] < 1e-3


def test_velocity_restarts_let_alf_finish_van_der_pol_and_leave_gradients_accurate():
    # Van der Pol, T = 20, rtol 1e-5: the parasitic mode grows on the contracting
    # phases of the limit cycle until it drives the error estimate; without
    # velocity restarts the step size collapses.
    with pytest.raises(physode.SolverError, match="max_steps"):
        vdp_gradient("mali", 20.0, method=PLAIN_ALF, rtol=1e-5, atol=1e-5, max_steps=20_000)
    ref, _ = vdp_gradient("aca", 20.0, rtol=1e-11, atol=1e-11)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got, sol = vdp_gradient("mali", 20.0, rtol=1e-5, atol=1e-5)
    assert sol.stats.extra["velocity_restarts"] > 5
    assert rel(got, ref) < 0.05
    # Gradient restarts change what is differentiated, never the forward values.
    no_gradient_restarts = AsyncLeapfrog(gradient_restart_every=None)
    _, bare = vdp_gradient("mali", 20.0, method=no_gradient_restarts, rtol=1e-5, atol=1e-5)
    assert torch.equal(bare.ys, sol.ys)


def damped_matrix(n: int = 8, seed: int = 0) -> torch.Tensor:
    """A symmetric matrix with eigenvalues -1, ..., -n in a random orthonormal basis."""
    gen = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=gen, dtype=F64))
    return q @ torch.diag(-torch.arange(1.0, n + 1, dtype=F64)) @ q.T


def test_velocity_restarts_fire_where_the_flow_contracts_and_rarely_elsewhere():
    a = damped_matrix()
    y0 = torch.ones(8, dtype=F64)
    t = torch.tensor([0.0, 5.0], dtype=F64)
    rhs = lambda tt, y: a @ y  # noqa: E731
    # Plain ALF: the parasitic mode grows as e^{8 t} and takes over the error estimate.
    with pytest.raises(physode.SolverError, match="max_steps"):
        physode.solve(rhs, y0, t, method=PLAIN_ALF, rtol=1e-6, atol=1e-8, max_steps=20_000)
    sol = physode.solve(rhs, y0, t, method="alf", rtol=1e-6, atol=1e-8)
    assert sol.stats.extra["velocity_restarts"] > 5
    assert sol.stats.n_accepted < 10_000
    exact = torch.linalg.matrix_exp(a * 5.0) @ y0
    assert rel(sol.ys[-1], exact) < 1e-3
    # A rotation neither contracts nor expands: (almost) nothing to restart, so MALI
    # keeps (almost) no state.
    rot = torch.tensor([[0.0, 1.0], [-1.0, 0.0]], dtype=F64)
    sol = physode.solve(
        lambda tt, y: rot @ y, Y1[:2], [0.0, 60.0], method="alf", rtol=1e-6, atol=1e-8
    )
    assert sol.stats.n_accepted > 2_000
    assert sol.stats.extra.get("velocity_restarts", 0) <= sol.stats.n_accepted // 500


SOLVERS_WITH_RESTARTS = {
    **{f"restart_every={k}": AsyncLeapfrog(restart_every=k) for k in (1, 3, 7)},
    **{
        f"gradient_restart_every={k}": AsyncLeapfrog(auto_restart=False, gradient_restart_every=k)
        for k in (1, 3, 7)
    },
}


@pytest.mark.parametrize("n_outputs", [2, 7])
@pytest.mark.parametrize("grad", ["mali", "aca"])
@pytest.mark.parametrize("name", list(SOLVERS_WITH_RESTARTS))
def test_mali_and_aca_through_restarts_equal_direct_alf(name, grad, n_outputs):
    # With 2 outputs no output lies inside a step, so a gradient restart's f(t, z) is
    # pulled back on its own before the step (see step_vjp); with 7 some lie inside.
    solver = SOLVERS_WITH_RESTARTS[name]
    restart_every = int(name.split("=")[1])
    t = torch.linspace(0.0, 3.0, n_outputs, dtype=F64)

    def grads(grad):
        func = VanDerPol()
        y0 = torch.tensor([2.0, 0.0], dtype=F64, requires_grad=True)
        sol = physode.solve(func, y0, t, method=solver, grad=grad, rtol=1e-5, atol=1e-5)
        w = torch.arange(1.0, n_outputs + 1.0, dtype=F64)[:, None]
        return torch.autograd.grad((w * sol.ys).sum(), (y0, func.mu)), sol.stats

    ref, ref_stats = grads("direct")
    got, stats = grads(grad)
    assert stats.n_accepted == ref_stats.n_accepted > 3 * restart_every
    if grad == "mali":
        assert stats.extra["mali_drift"] < 1e-6
    for g, r in zip(got, ref, strict=True):
        assert rel(g, r) < 1e-10


def test_mali_second_derivatives_through_restarts():
    # Double backward replays the steps, restarts included: d/dmu of dL/dy0 against
    # central differences of the first derivative.
    solver = AsyncLeapfrog(restart_every=2)
    t = torch.tensor([0.0, 2.0], dtype=F64)

    def first(mu: float, create_graph: bool):
        func = VanDerPol(mu)
        y0 = torch.tensor([2.0, 0.0], dtype=F64, requires_grad=True)
        ys = physode.odeint(func, y0, t, method=solver, grad="mali", step_size=0.01)
        (g,) = torch.autograd.grad(ys[-1].square().sum(), y0, create_graph=create_graph)
        return g, func

    g, func = first(1.0, True)
    (second,) = torch.autograd.grad(g.sum(), func.mu)
    eps = 1e-5
    fd = (first(1.0 + eps, False)[0].sum() - first(1.0 - eps, False)[0].sum()) / (2 * eps)
    assert abs(second.item() / fd.item() - 1) < 1e-6


def test_adjoint_backward_failure_says_it_is_the_reverse_solve():
    # Van der Pol's limit cycle contracts forwards, so integrating y backwards from a
    # loose forward solution blows up in finite time: the error says where and why.
    with pytest.raises(physode.SolverError, match="reverse-time solve") as info:
        vdp_gradient("adjoint", 20.0, rtol=1e-3, atol=1e-3)
    assert info.value.reason == "step_underflow"
    assert 0.0 < info.value.t < 20.0
