"""Fixed-step solves: convergence orders, step counting, output handling."""

from __future__ import annotations

import math

import pytest
import torch
from ode_problems import (
    F64,
    Y0_ROT,
    RecordingRHS,
    fitted_slope,
    rotation_exact,
    rotation_rhs,
)

import physode
from physode.solvers import AsyncLeapfrog

T_END = 2.0


def _end_error(method, h: float) -> float:
    ys = physode.odeint(rotation_rhs, Y0_ROT, [0.0, T_END], method=method, step_size=h)
    return (ys[-1] - rotation_exact([T_END])[0]).abs().max().item()


HALVINGS_COARSE = [0.1, 0.05, 0.025, 0.0125]


@pytest.mark.parametrize(
    ("method", "order", "hs"),
    [
        ("euler", 1, HALVINGS_COARSE),
        ("midpoint", 2, HALVINGS_COARSE),
        ("heun", 2, HALVINGS_COARSE),
        ("heun3", 3, [0.2, 0.1, 0.05, 0.025]),
        ("rk4", 4, [0.2, 0.1, 0.05, 0.025]),
        ("alf", 2, HALVINGS_COARSE),
    ],
)
def test_fixed_step_methods_converge_at_their_order(method, order, hs):
    errors = [_end_error(method, h) for h in hs]
    slope = fitted_slope(hs, errors)
    assert abs(slope - order) <= 0.15, (slope, errors)


@pytest.mark.parametrize(
    ("method", "order", "hs", "upper_slack"),
    [
        ("heun_euler", 2, HALVINGS_COARSE, 0.15),
        ("bosh3", 3, [0.2, 0.1, 0.05, 0.025], 0.15),
        # Smallest errors here are ~1e-12, far above round-off (~1e-15).
        ("dopri5", 5, [0.2, 0.1, 0.05, 0.025], 0.15),
        # On y' = A y only R(z) - e^z matters; for tsit5 that is
        # 4.3e-5 z^6 - 2.0e-4 z^7 + ... (|z| = h here): the z^7 term is
        # 4.6 |z| times the leading one, 92 % down to 11 % over h = 0.2 .. 0.025,
        # which lifts the fitted slope to about 5.2 (local slopes 5.27, 5.20,
        # 5.12, falling towards 5); smaller h would put the error at round-off.
        ("tsit5", 5, [0.2, 0.1, 0.05, 0.025], 0.25),
    ],
)
def test_adaptive_tableaus_with_fixed_step_converge_at_propagated_order(
    method, order, hs, upper_slack
):
    errors = [_end_error(method, h) for h in hs]
    slope = fitted_slope(hs, errors)
    assert order - 0.15 <= slope <= order + upper_slack, (slope, errors)
    # The slope over the last halving is within 0.15 of the order for every pair.
    last = math.log2(errors[-2] / errors[-1])
    assert abs(last - order) <= 0.15, (last, errors)


def test_damped_alf_is_first_order():
    solver = AsyncLeapfrog(eta=0.9)
    assert solver.order == 1
    errors = [_end_error(AsyncLeapfrog(eta=0.9), h) for h in HALVINGS_COARSE]
    slope = fitted_slope(HALVINGS_COARSE, errors)
    assert abs(slope - 1) <= 0.15, (slope, errors)


@pytest.mark.parametrize(
    ("method", "evals_per_step"),
    # Non-FSAL tableaus: stages 2..s in the step, plus f(t1, y1) once per
    # accepted step (``complete``), which the next step reuses as its k1.
    [
        ("euler", 1),
        ("midpoint", 2),
        ("heun", 2),
        ("heun3", 3),
        ("rk4", 4),
        # FSAL tableaus: stages 2..s, the last of which is f(t1, y1).
        ("bosh3", 3),
        ("dopri5", 6),
        ("tsit5", 6),
        # ALF: one evaluation per step.
        ("alf", 1),
    ],
)
@pytest.mark.parametrize(("t_end", "h", "n_steps"), [(1.0, 0.1, 10), (1.0, 0.3, 4)])
def test_fixed_step_function_evaluation_count(method, evals_per_step, t_end, h, n_steps):
    sol = physode.solve(rotation_rhs, Y0_ROT, [0.0, t_end], method=method, step_size=h)
    assert sol.stats.n_accepted == n_steps
    assert sol.stats.n_rejected == 0
    # One evaluation at the initial state, then evals_per_step per step.
    assert sol.stats.n_f_evals == 1 + evals_per_step * n_steps


def test_heun_euler_with_fixed_step_count():
    # heun_euler is non-FSAL: 1 stage in the step and f(t1, y1) in ``complete``.
    sol = physode.solve(rotation_rhs, Y0_ROT, [0.0, 1.0], method="heun_euler", step_size=0.125)
    assert sol.stats.n_accepted == 8
    assert sol.stats.n_f_evals == 1 + 2 * 8


def test_fixed_step_ends_exactly_on_the_last_time():
    # 0.3 does not divide 1: the last step is shortened to land on t=1.
    rhs = RecordingRHS(rotation_rhs)
    ys = physode.odeint(rhs, Y0_ROT, [0.0, 1.0], method="rk4", step_size=0.3)
    assert max(rhs.times) == 1.0
    # rk4 with h = 0.3: error well below 1e-4, far below a missed 0.2 of time.
    assert (ys[-1] - rotation_exact([1.0])[0]).abs().max().item() < 1e-4


def test_fixed_step_never_evaluates_outside_span():
    rhs = RecordingRHS(rotation_rhs)
    physode.odeint(rhs, Y0_ROT, [0.0, 0.35, 1.0], method="rk4", step_size=0.3)
    assert 0.0 <= min(rhs.times) and max(rhs.times) <= 1.0


def test_fixed_step_dense_outputs_between_steps():
    # Output times off the step grid come from the Hermite interpolant: for
    # rk4 its error on this problem is O(h^4) locally, well below 1e-6 at h=0.05.
    t = torch.linspace(0.0, 2.0, 37, dtype=F64)
    sol = physode.solve(rotation_rhs, Y0_ROT, t, method="rk4", step_size=0.05)
    assert sol.stats.n_accepted == 40
    err = (sol.ys - rotation_exact(t)).abs().max().item()
    assert err < 1e-6


def test_fixed_step_land_on_outputs_takes_extra_steps():
    t = torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0], dtype=F64)
    plain = physode.solve(rotation_rhs, Y0_ROT, t, method="rk4", step_size=0.1)
    landed = physode.solve(
        rotation_rhs, Y0_ROT, t, method="rk4", step_size=0.1, land_on_outputs=True
    )
    assert plain.stats.n_accepted == 10
    # Each interval of 0.25 needs ceil(2.5) = 3 steps of at most 0.1.
    assert landed.stats.n_accepted == 4 * 3
    exact = rotation_exact(t)
    assert (landed.ys - exact).abs().max().item() < 1e-6
    assert (plain.ys - exact).abs().max().item() < 1e-6


def test_fixed_step_land_on_outputs_on_the_grid_fits_in_max_steps():
    # Every output is on the step grid: the solve takes exactly 10 steps,
    # so max_steps=10 must suffice.
    t = torch.linspace(0.0, 1.0, 11, dtype=F64)
    sol = physode.solve(
        rotation_rhs,
        Y0_ROT,
        t,
        method="rk4",
        step_size=0.1,
        land_on_outputs=True,
        max_steps=10,
    )
    assert sol.stats.n_accepted == 10


def test_fixed_step_decreasing_time():
    t = torch.linspace(2.0, 0.0, 9, dtype=F64)
    y2 = rotation_exact([2.0])[0]
    ys = physode.odeint(rotation_rhs, y2, t, method="rk4", step_size=0.01)
    assert ys.shape == (9, 2)
    exact = torch.stack([rotation_exact([s - 2.0], y2)[0] for s in t.tolist()])
    assert (ys - exact).abs().max().item() < 1e-9


def test_fixed_step_larger_than_span_is_one_step():
    sol = physode.solve(rotation_rhs, Y0_ROT, [0.0, 0.01], method="rk4", step_size=1.0)
    assert sol.stats.n_accepted == 1
    assert sol.stats.n_f_evals == 5
    err = (sol.ys[-1] - rotation_exact([0.01])[0]).abs().max().item()
    assert err < 1e-12


def test_fixed_step_counts_are_independent_of_output_times():
    few = physode.solve(rotation_rhs, Y0_ROT, [0.0, 1.0], method="rk4", step_size=0.1)
    many = physode.solve(
        rotation_rhs, Y0_ROT, torch.linspace(0, 1, 500, dtype=F64), method="rk4", step_size=0.1
    )
    assert many.stats.n_f_evals == few.stats.n_f_evals
    assert math.isclose(many.ys[-1, 0].item(), few.ys[-1, 0].item(), rel_tol=0, abs_tol=1e-15)
