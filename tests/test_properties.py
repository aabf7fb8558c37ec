"""Property-based tests: random stable linear systems against the matrix exponential."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from ode_problems import F64, rotation_exact, rotation_rhs

import physode

entry = st.floats(min_value=-1.0, max_value=1.0, allow_nan=False, allow_infinity=False)
matrix3 = st.lists(entry, min_size=9, max_size=9).map(
    lambda xs: torch.tensor(xs, dtype=F64).reshape(3, 3)
)
vector3 = st.lists(entry, min_size=3, max_size=3).map(lambda xs: torch.tensor(xs, dtype=F64))
epsilon = st.floats(min_value=0.01, max_value=1.0)

SETTINGS = settings(max_examples=25, deadline=None)


def stable_matrix(s: torch.Tensor, k: torch.Tensor, eps: float) -> torch.Tensor:
    """-S S^T - eps I + (K - K^T): symmetric part negative definite, so every solution decays."""
    return -s @ s.T - eps * torch.eye(3, dtype=F64) + (k - k.T)


@SETTINGS
@given(s=matrix3, k=matrix3, eps=epsilon, y0=vector3)
def test_random_stable_linear_systems_match_matrix_exp(s, k, eps, y0):
    a = stable_matrix(s, k, eps)
    t = torch.linspace(0.0, 1.0, 6, dtype=F64)
    exact = torch.stack([torch.linalg.matrix_exp(a * float(ti)) @ y0 for ti in t])
    for method in ("dopri5", "tsit5"):
        ys = physode.odeint(lambda t, y: a @ y, y0, t, method=method, rtol=1e-8, atol=1e-8)
        # Observed worst case over many draws ~6e-9.
        assert (ys - exact).abs().max().item() < 1e-6, method


@SETTINGS
@given(s=matrix3, k=matrix3, eps=epsilon, y0=vector3)
def test_random_stable_linear_systems_backward_in_time(s, k, eps, y0):
    # Integrating the stable system backwards from y(1) recovers y0
    # (backwards the system expands, by at most exp(|A|) here).
    a = stable_matrix(s, k, eps)
    y1 = torch.linalg.matrix_exp(a) @ y0
    ys = physode.odeint(lambda t, y: a @ y, y1, [1.0, 0.0], method="dopri5", rtol=1e-9, atol=1e-9)
    growth = torch.linalg.matrix_norm(torch.linalg.matrix_exp(-a), ord=2).item()
    assert (ys[-1] - y0).abs().max().item() < 1e-8 * max(1.0, growth)


@SETTINGS
@given(
    method=st.sampled_from(["dopri5", "tsit5", "bosh3", "alf"]),
    s=st.floats(min_value=0.0, max_value=5.0, exclude_min=True, exclude_max=True),
    extra=st.lists(st.floats(min_value=0.0, max_value=5.0), min_size=0, max_size=20),
)
def test_other_output_times_do_not_change_a_solution_value(method, s, extra):
    # Without land_on_outputs the steps depend on (t0, t_end) only, so the
    # value at s is the same interpolant whatever other times are requested.
    t_alone = torch.tensor([0.0, s, 5.0], dtype=F64)
    others = sorted({s, *extra} - {0.0, 5.0})
    t_many = torch.tensor([0.0, *others, 5.0], dtype=F64)
    alone = physode.solve(rotation_rhs, rotation_exact([0.0])[0], t_alone, method=method)
    many = physode.solve(rotation_rhs, rotation_exact([0.0])[0], t_many, method=method)
    assert many.stats.n_f_evals == alone.stats.n_f_evals
    i = others.index(s) + 1
    assert torch.allclose(many.ys[i], alone.ys[1], rtol=1e-13, atol=1e-14)
    assert torch.equal(many.ys[-1], alone.ys[-1])
