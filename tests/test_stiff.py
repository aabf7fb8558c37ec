"""The stiff methods (radau5, rodas5p, kvaerno5): tableaus, orders, the classical stiff
problems against scipy's Radau, gradients by every mode against finite differences, error
paths."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from ode_problems import F64, fitted_slope
from scipy.integrate import solve_ivp
from test_tableaus import condition_residuals

import physode
from physode.cli.main import main
from physode.datasets.stiff_problems import HIRES, PROBLEMS, ROBERTSON, robertson_rhs
from physode.solvers import STIFF_METHODS
from physode.solvers.implicit import IterationMatrix, evaluations_with_jacobians, jacobian
from physode.solvers.radau import _transform
from physode.solvers.stiff_tableaus import KVAERNO5, RADAU_IIA5


def test_stiff_methods_are_listed_and_usable_by_name():
    assert set(STIFF_METHODS) == {"radau5", "kvaerno5", "rodas5p"}
    for name in STIFF_METHODS:
        assert physode.solvers.make_solver(name).implicit


def test_radau_iia5_is_the_collocation_method_of_order_5():
    # B(5): the quadrature of the last row is exact to degree 4; C(3): each stage is
    # exact to degree 2 (stage order 3); so order 2s - 1 = 5.
    c, a = np.array(RADAU_IIA5.c), np.array(RADAU_IIA5.a)
    for k in range(1, 6):
        assert abs(a[-1] @ c ** (k - 1) - 1 / k) < 1e-15, k
    assert abs(a[-1] @ c**5 - 1 / 6) > 1e-5  # not order 6
    for k in range(1, 4):
        np.testing.assert_allclose(a @ c ** (k - 1), c**k / k, rtol=0, atol=1e-15)
    # The transformation Newton uses: A^{-1} = T diag(gamma, [[alpha, -beta], [beta, alpha]])
    # T^{-1}, and P maps the increments to the collocation polynomial's coefficients.
    tr = _transform(RADAU_IIA5)
    block = tr.TI @ np.linalg.inv(a) @ tr.T
    expected = np.array(
        [[tr.gamma, 0, 0], [0, tr.mu.real, -tr.mu.imag], [0, tr.mu.imag, tr.mu.real]]
    )
    np.testing.assert_allclose(block, expected, atol=1e-12)
    Z = np.random.default_rng(0).normal(size=(3, 2))
    Q = tr.P.T @ Z
    for i, ci in enumerate(c):
        np.testing.assert_allclose(Q.T @ np.array([ci, ci**2, ci**3]), Z[i], atol=1e-13)


@pytest.mark.parametrize(("weights", "order"), [("b", 5), ("b_hat", 4)])
def test_kvaerno5_order_conditions(weights, order):
    # The implicit A (with its diagonal) in the same tree conditions as the explicit ones.
    tab = KVAERNO5
    w = list(tab.b) if weights == "b" else [b - e for b, e in zip(tab.b, tab.b_error, strict=True)]
    for p in range(1, order + 1):
        for k, r in enumerate(condition_residuals(tab, w, p)):
            assert abs(r) < 1e-12, (weights, p, k, r)
    if order < 5:
        assert max(abs(r) for r in condition_residuals(tab, w, order + 1)) > 1e-5


def _lotka_volterra(t, y):
    x, z = y[..., 0], y[..., 1]
    return torch.stack([1.5 * x - x * z, -3.0 * z + x * z], dim=-1)


@pytest.mark.parametrize("method", STIFF_METHODS)
def test_stiff_methods_converge_at_their_order(method):
    # A nonlinear problem (Rosenbrock methods reach order 6 on linear ones, and Radau IIA
    # is nearly exact on y' = -y^2), against scipy's DOP853 at 1e-13; tight tolerances
    # for Newton's iterations. Measured slopes 4.96-5.15.
    y0 = torch.tensor([1.0, 1.0], dtype=F64)
    ref = solve_ivp(
        lambda t, y: _lotka_volterra(t, torch.from_numpy(y)).numpy(),
        (0.0, 2.0),
        y0.numpy(),
        "DOP853",
        rtol=1e-13,
        atol=1e-14,
    ).y[:, -1]
    hs = [0.1, 0.05, 0.025, 0.0125]
    errors = []
    for h in hs:
        ys = physode.odeint(
            _lotka_volterra, y0, [0.0, 2.0], method=method, step_size=h, rtol=1e-12, atol=1e-14
        )
        errors.append(float(np.abs(ys[-1].numpy() - ref).max()))
    assert abs(fitted_slope(hs, errors) - 5) < 0.3, errors


def _radau(problem, times, rtol):
    def f(t, y):
        return problem.func(torch.tensor(t), torch.from_numpy(y)).numpy()

    sol = solve_ivp(
        f,
        (times[0], times[-1]),
        problem.y0,
        "Radau",
        rtol=rtol,
        atol=rtol * problem.atol_factor,
        t_eval=times,
    )
    return sol.y.T, sol.nfev


REFERENCE: dict = {}


def _reference(name, times):
    key = (name, len(times))
    if key not in REFERENCE:
        REFERENCE[key] = _radau(PROBLEMS[name], times, 1e-12)[0]
    return REFERENCE[key]


def _scaled_error(name: str, method: str, rtol: float, n_out: int = 11):
    """The solve's largest ``|y - y_ref| / (rtol |y_ref| + atol)`` at ``n_out`` outputs
    against Radau at 1e-12, and the solution."""
    problem = PROBLEMS[name]
    times = np.linspace(problem.t0, problem.t1, n_out)
    ref = _reference(name, times)
    atol = rtol * problem.atol_factor
    sol = physode.solve(
        problem.func,
        problem.initial_state(),
        torch.from_numpy(times),
        method=method,
        rtol=rtol,
        atol=atol,
    )
    return (np.abs(sol.ys.numpy() - ref) / (rtol * np.abs(ref) + atol)).max(), sol


# Measured at rtol 1e-6 / 1e-8: rodas5p at most 6.5 (HIRES at 1e-6), with its own dense
# output (the cubic Hermite had left 8-27); radau5 at most 6.2 / 5.9 (HIRES, where an
# output falls in a steep transient; scipy's Radau itself 1.0 / 3.4 there).
@pytest.mark.parametrize("method", ["radau5", "rodas5p"])
@pytest.mark.parametrize("name", ["robertson", "van_der_pol", "hires", "orego"])
@pytest.mark.parametrize("rtol", [1e-6, 1e-8])
def test_within_ten_times_the_tolerance_of_radau(method, name, rtol):
    scaled, _ = _scaled_error(name, method, rtol, n_out=5 if name == "orego" else 11)
    assert scaled < 10, scaled


@pytest.mark.parametrize("name", ["robertson", "van_der_pol", "hires", "orego"])
def test_radau5_evaluations_match_scipys_radau(name):
    # The same method and Newton iteration as scipy's Radau: within 20 % of its
    # evaluations (measured 1.07-1.11x at rtol 1e-6: the controller's safety 0.8, Newton's
    # first test from the last step's rate, and exact Jacobians, which scipy's evaluation
    # count leaves out).
    problem = PROBLEMS[name]
    n_out = 5 if name == "orego" else 11  # the references above
    _, sol = _scaled_error(name, "radau5", 1e-6, n_out=n_out)
    _, nfev = _radau(problem, np.linspace(problem.t0, problem.t1, n_out), 1e-6)
    assert sol.stats.n_f_evals < 1.2 * nfev, (sol.stats.n_f_evals, nfev)
    assert sol.stats.extra["n_jacobians"] < sol.stats.n_accepted / 2  # reused


@pytest.mark.parametrize(
    ("method", "slope", "h_max"), [("rodas5p", 5, 0.2), ("radau5", 4, 0.1), ("kvaerno5", 4, 0.2)]
)
def test_dense_output_local_order(method, slope, h_max):
    # One step of y' = -y^2 from y(0) = 1 with an output inside: Rodas5P's fourth-order
    # interpolant has a local error O(h^5), Radau IIA's collocation polynomial (degree 3)
    # and the ESDIRK's cubic Hermite O(h^4).
    hs = [h_max / 2**i for i in range(4)]
    errors = []
    for h in hs:
        sol = physode.solve(
            lambda t, y: -y * y,
            torch.ones(1, dtype=F64),
            [0.0, 0.37 * h, h],
            method=method,
            step_size=h,
        )
        errors.append(abs(sol.ys[1].item() - 1.0 / (1.0 + 0.37 * h)))
    assert abs(fitted_slope(hs, errors) - slope) < 0.3, errors


@pytest.mark.parametrize("name", ["robertson", "hires"])
def test_kvaerno5_against_radau(name):
    scaled, sol = _scaled_error(name, "kvaerno5", 1e-6)
    # Measured 17 (robertson) and 107 (hires): the ESDIRK's estimate is less strict.
    assert scaled < 300, scaled
    assert sol.stats.extra["n_jacobians"] < sol.stats.n_accepted  # Jacobians are reused


@pytest.mark.parametrize("method", STIFF_METHODS)
def test_robertson_conserves_total_concentration(method):
    times = torch.tensor([0.0, 1e-3, 1.0, 1e2, 1e4, 1e5], dtype=F64)
    ys = physode.odeint(
        ROBERTSON.func, ROBERTSON.initial_state(), times, method=method, rtol=1e-7, atol=1e-11
    )
    # The three rates sum to zero, and both methods preserve linear invariants.
    assert (ys.sum(-1) - 1.0).abs().max().item() < 1e-12


def _robertson_loss(k, grad, method):
    times = torch.tensor([0.0, 0.1, 1.0, 10.0], dtype=F64)
    ys = physode.odeint(
        lambda t, y: robertson_rhs(t, y, k),
        ROBERTSON.initial_state(),
        times,
        method=method,
        grad=grad,
        params=(k,),
        rtol=1e-9,
        atol=1e-13,
    )
    return (ys[1:, 0] * torch.tensor([1.0, 2.0, 3.0], dtype=F64)).sum()


@pytest.mark.parametrize("method", STIFF_METHODS)
def test_gradients_direct_and_aca_against_finite_differences(method):
    k0 = torch.tensor([0.04, 3e7, 1e4], dtype=F64)
    grads = {}
    for grad in ("direct", "aca"):
        k = k0.clone().requires_grad_()
        (grads[grad],) = torch.autograd.grad(_robertson_loss(k, grad, method), k)
    # ACA re-runs each step from its recorded converged stages and differentiates them
    # as backprop does: the same gradient to round-off.
    torch.testing.assert_close(grads["aca"], grads["direct"], rtol=1e-12, atol=0)
    fd = []
    for i in range(3):
        e = torch.zeros(3, dtype=F64)
        e[i] = 1e-5 * k0[i]
        diff = _robertson_loss(k0 + e, "direct", method) - _robertson_loss(k0 - e, "direct", method)
        fd.append(diff / (2 * e[i]))
    fd = torch.stack(fd).detach()
    assert ((grads["aca"] - fd) / fd).abs().max().item() < 1e-4


@pytest.mark.parametrize("method", STIFF_METHODS)
@pytest.mark.parametrize(
    ("after", "jumps", "exponent", "rtol", "atol"),
    [(1.0, None, 0.5, 1e-5, 1e-9), (2.0, [0.25], 0.75, 1e-7, 1e-12)],
)
def test_adjoint_gradient_on_a_mildly_stiff_linear_system(
    method, after, jumps, exponent, rtol, atol
):
    # Eigenvalues -30 and -1: stiff enough for the implicit step, while the reverse-time
    # reconstruction of y (which grows like e^{30 t}) stays accurate over t in [0, 0.5].
    # With a jump the rates are multiplied by `after` from t = 0.25 (y(0.5) = y0
    # e^{0.75 lam}): the reverse solve's one-sided steps still see the augmented
    # system's exact Jacobian.
    lam = torch.tensor([-30.0, -1.0], dtype=F64, requires_grad=True)
    y0 = torch.tensor([1.0, 2.0], dtype=F64)
    ys = physode.odeint(
        lambda t, y: lam * y * (1.0 if t < 0.25 else after),
        y0,
        [0.0, 0.5],
        method=method,
        grad="adjoint",
        params=(lam,),
        rtol=1e-9,
        atol=1e-12,
        jump_t=jumps,
    )
    (g,) = torch.autograd.grad(ys[-1].sum(), lam)
    exact = exponent * y0 * torch.exp(exponent * lam.detach())  # d/dlam y0 e^{c lam}
    torch.testing.assert_close(g, exact, rtol=rtol, atol=atol)


def test_batched_jacobian_is_block_diagonal():
    y = torch.rand(4, 3, dtype=F64) * 1e-3
    full = jacobian(robertson_rhs, 0.0, y)
    blocks = jacobian(robertson_rhs, 0.0, y, batch_dims=1)
    assert blocks.shape == (4, 3, 3)
    for b in range(4):
        torch.testing.assert_close(full[3 * b : 3 * b + 3, 3 * b : 3 * b + 3], blocks[b])
    # A batch of independent systems solved at once equals each solved alone.
    from physode.solvers import Rosenbrock
    from physode.solvers.stiff_tableaus import RODAS5P

    y0 = torch.tensor([[1.0, 0.0, 0.0], [0.5, 0.0, 0.5]], dtype=F64)
    batched = physode.odeint(robertson_rhs, y0, [0.0, 10.0], method=Rosenbrock(RODAS5P, 1))
    alone = physode.odeint(robertson_rhs, y0, [0.0, 10.0], method="rodas5p")
    torch.testing.assert_close(batched, alone, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("grad", ["direct", "aca"])
def test_radau5_with_independent_systems_in_the_batch(grad):
    # Block-diagonal Jacobians and batched complex LUs give the same solution and the same
    # gradients as the coupled (N x N) form, to the Newton tolerance.
    from physode.solvers import Radau

    y0 = torch.tensor([[1.0, 0.0, 0.0], [0.5, 1e-5, 0.5]], dtype=F64)
    results = []
    for method in (Radau(RADAU_IIA5, batch_dims=1), "radau5"):
        k = torch.tensor([0.04, 3e7, 1e4], dtype=F64, requires_grad=True)
        ys = physode.odeint(
            lambda t, y, k=k: robertson_rhs(t, y, k),
            y0,
            [0.0, 1.0, 10.0],
            method=method,
            grad=grad,
            params=(k,),
            rtol=1e-9,
            atol=1e-13,
        )
        (g,) = torch.autograd.grad(ys[:, :, 0].sum(), k)
        results.append((ys.detach(), g))
    torch.testing.assert_close(results[0][0], results[1][0], rtol=1e-8, atol=1e-13)
    torch.testing.assert_close(results[0][1], results[1][1], rtol=1e-6, atol=0)


def test_evaluations_with_jacobians_at_several_points():
    # One batched product gives every point's Jacobian (each in its own point only), and
    # the evaluations keep their graph: here to y0 through the points y0 + z_i.
    y0 = torch.tensor([0.9, 1e-5, 0.1], dtype=F64, requires_grad=True)
    zs = [torch.tensor([0.0, 1e-6, 0.0], dtype=F64), torch.tensor([-0.1, 2e-5, 0.1], dtype=F64)]
    outs, jacs = evaluations_with_jacobians(robertson_rhs, [(0.0, y0 + z) for z in zs])
    for z, out, jac in zip(zs, outs, jacs, strict=True):
        point = (y0 + z).detach()
        torch.testing.assert_close(
            jac,
            torch.autograd.functional.jacobian(lambda y: robertson_rhs(0.0, y), point),
            rtol=1e-14,
            atol=0,
        )
        torch.testing.assert_close(out, robertson_rhs(0.0, point), rtol=0, atol=0)
    (g,) = torch.autograd.grad(outs[1].sum(), y0)
    # (the column sums cancel to ~1e-13 of the entries, which reach 3e7 * 2e-5)
    scale = jacs[1].abs().max().item()
    torch.testing.assert_close(g, jacs[1].sum(0), rtol=0, atol=1e-15 * scale)


@pytest.mark.parametrize("method", ["radau5", "kvaerno5"])
def test_aca_backward_differentiates_the_recorded_stages_without_newton(method):
    # The recorded steps keep their converged stages, so the backward pass evaluates f
    # only to differentiate them: no Newton iteration (the forward made several a step).
    k = torch.tensor([0.04, 3e7, 1e4], dtype=F64, requires_grad=True)
    sol = physode.solve(
        lambda t, y: robertson_rhs(t, y, k),
        ROBERTSON.initial_state(),
        [0.0, 1.0, 10.0],
        method=method,
        grad="aca",
        params=(k,),
        rtol=1e-8,
        atol=1e-12,
    )
    sol.ys[-1, 0].backward()
    steps = sol.stats.n_accepted
    # The forward: at least one Newton iteration a step (radau5: of all three stages at
    # once, three evaluations each) or a stage (kvaerno5: six implicit stages).
    stages, per_iteration = (3, 3) if method == "radau5" else (6, 1)
    assert sol.stats.extra["n_newton"] * per_iteration >= stages * steps
    # The backward: one evaluation at each implicit stage (with its Jacobian), plus f at
    # each step's end and at the start.
    assert sol.stats.n_f_evals_backward <= steps * (stages + 1) + 1


def test_singular_iteration_matrix_is_a_solver_error():
    jac = torch.eye(2, dtype=F64) * 2.0  # I - 0.5 J = 0
    with pytest.raises(physode.SolverError, match="singular") as info:
        IterationMatrix(jac, 0.5, t=1.25)
    assert info.value.t == 1.25 and info.value.reason == "singular_matrix"


@pytest.mark.parametrize("method", ["radau5", "kvaerno5"])
def test_a_failed_newton_iteration(method):
    # y' = y^2 from 1 blows up at t = 1; an implicit step of h = 0.9 has no real solution
    # (z = 1 + h gamma z^2 needs 4 h gamma <= 1): with a fixed step that is an error
    # naming the step, adaptively a rejected step and a shorter one.
    with pytest.raises(physode.SolverError, match="Newton") as info:
        physode.solve(
            lambda t, y: y * y, torch.ones(1, dtype=F64), [0.0, 0.9], method=method, step_size=0.9
        )
    assert info.value.reason == "step_failed" and info.value.h == 0.9
    sol = physode.solve(
        lambda t, y: y * y,
        torch.ones(1, dtype=F64),
        [0.0, 0.5],
        method=method,
        first_step=0.5,
        rtol=1e-8,
        atol=1e-10,
    )
    assert sol.stats.extra["failed_steps"] >= 1
    assert abs(sol.ys[-1].item() - 2.0) < 1e-6  # y = 1 / (1 - t)


def test_an_explicit_method_on_a_stiff_problem_says_so():
    with pytest.raises(physode.SolverError, match="looks stiff") as info:
        physode.solve(
            ROBERTSON.func, ROBERTSON.initial_state(), [0.0, 1e5], method="dopri5", max_steps=2000
        )
    assert "kvaerno5" in str(info.value) and "STIFF_METHODS" in str(info.value)


def test_hires_with_kvaerno5_in_float32_runs():
    sol = physode.solve(
        HIRES.func,
        HIRES.initial_state().float(),
        [0.0, 5.0],
        method="kvaerno5",
        rtol=1e-4,
        atol=1e-7,
    )
    assert sol.ys.dtype == torch.float32 and bool(torch.isfinite(sol.ys).all())
    assert math.isclose(sol.ys[-1].sum().item(), sol.ys[-1].sum().item())


@pytest.mark.slow
def test_physode_fit_recovers_robertsons_rate_constants(tmp_path):
    # The example's config, run by the command line on a copy of the example folder:
    # rodas5p with ACA gradients, 1 % noise; measured relative errors 1.2e-2, 6e-3, 1.4e-2
    # (the noise's), 27 s.
    examples = Path(__file__).resolve().parents[1] / "examples"
    for name in ("robertson.py", "robertson.yaml"):
        shutil.copy(examples / name, tmp_path / name)
    result = CliRunner().invoke(
        main, ["fit", str(tmp_path / "robertson.yaml"), "-o", str(tmp_path / "run"), "-q"]
    )
    assert result.exit_code == 0, result.output
    params = json.loads((tmp_path / "run" / "params.json").read_text())
    for name, true in {"k1": 0.04, "k2": 3e7, "k3": 1e4}.items():
        assert abs(params[name] / true - 1) < 0.05, (name, params[name])
