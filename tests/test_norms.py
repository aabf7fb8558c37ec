"""Error norms: a norm of one's own for the forward solve, the seminorm for the adjoint."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import physode
from physode.solvers.norms import rms

F64 = torch.float64


def _decay(t, y):
    return -y * (1.0 + torch.sin(t))


def test_a_scaled_norm_is_the_same_as_scaled_tolerances():
    # norm = 10 * RMS is RMS with atol and rtol ten times smaller: the same steps.
    y0 = torch.tensor([1.0, -2.0, 0.5], dtype=F64)
    t = torch.linspace(0.0, 3.0, 7, dtype=F64)
    common = {"first_step": 0.01}  # the first-step heuristic keeps the plain RMS
    mine = physode.solve(_decay, y0, t, rtol=1e-5, atol=1e-7, norm=lambda e: 10 * rms(e), **common)
    plain = physode.solve(_decay, y0, t, rtol=1e-6, atol=1e-8, **common)
    assert mine.stats.n_accepted == plain.stats.n_accepted
    assert mine.stats.n_rejected == plain.stats.n_rejected
    torch.testing.assert_close(mine.ys, plain.ys, rtol=1e-13, atol=0)


def test_the_max_norm_is_tighter_than_the_rms():
    # One fast component among slow ones: its error dominates the max, not the RMS.
    rates = torch.tensor([0.1, 0.1, 0.1, 3.0], dtype=F64)
    y0 = torch.ones(4, dtype=F64)
    t = torch.linspace(0.0, 3.0, 7, dtype=F64)
    exact = torch.exp(-rates * t.unsqueeze(-1))

    def f(t, y):
        return -rates * y

    rms_sol = physode.solve(f, y0, t, rtol=1e-6, atol=1e-9)
    max_sol = physode.solve(f, y0, t, rtol=1e-6, atol=1e-9, norm=lambda e: e.abs().max())
    assert max_sol.stats.n_accepted > rms_sol.stats.n_accepted
    assert (max_sol.ys - exact).abs().max() < (rms_sol.ys - exact).abs().max()
    assert (max_sol.ys - exact).abs().max() < 1e-6


def test_a_norm_on_a_structured_state_sees_its_structure():
    # Controlling (a, b) by a alone takes a's own steps: b rides along.
    a0 = torch.tensor([1.0, 0.3], dtype=F64)
    b0 = torch.tensor([5.0], dtype=F64)
    t = torch.linspace(0.0, 2.0, 5, dtype=F64)

    def pair(t, y):
        return {"a": _decay(t, y["a"]), "b": -30.0 * y["b"]}  # b alone would need tiny steps

    seen = []

    def only_a(e):
        seen.append(set(e))
        return rms(e["a"])

    both = physode.solve(pair, {"a": a0, "b": b0}, t, first_step=0.05, norm=only_a)
    alone = physode.solve(_decay, a0, t, first_step=0.05)
    assert seen[0] == {"a", "b"}
    assert both.stats.n_accepted == alone.stats.n_accepted
    torch.testing.assert_close(both.ys["a"], alone.ys, rtol=1e-14, atol=0)


@pytest.mark.parametrize("grad", ["direct", "aca", "adjoint"])
def test_every_gradient_method_runs_with_a_norm(grad):
    k = torch.tensor(0.7, dtype=F64, requires_grad=True)
    y0 = torch.tensor([1.0, 2.0], dtype=F64)
    t = torch.tensor([0.0, 1.5], dtype=F64)
    y = physode.odeint(
        lambda t, y: -k * y, y0, t, grad=grad, params=(k,), norm=lambda e: e.abs().max()
    )
    (g,) = torch.autograd.grad(y[-1].sum(), k)
    expected = -1.5 * torch.exp(-1.5 * k.detach()) * y0.sum()  # d/dk of sum y0 e^{-k t}
    torch.testing.assert_close(g, expected, rtol=1e-5, atol=0)


def test_a_bad_norm_is_refused_naming_the_argument():
    y0 = torch.ones(2, dtype=F64)
    t = torch.tensor([0.0, 1.0], dtype=F64)
    with pytest.raises(ValueError, match="norm: must be callable"):
        physode.odeint(_decay, y0, t, norm="max")
    with pytest.raises(ValueError, match=r"norm: must return one number.*\(2,\)"):
        physode.odeint(_decay, y0, t, norm=lambda e: e.abs())
    with pytest.raises(ValueError, match="norm: must be None or 'seminorm'"):
        physode.Adjoint(norm="l1")


class _Field(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(4, 32), nn.Tanh(), nn.Linear(32, 4)).to(F64)

    def forward(self, t, y):
        return self.net(y)


def test_the_seminorm_saves_backward_evaluations_and_keeps_the_gradient():
    func = _Field()
    y0 = torch.randn(16, 4, dtype=F64, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([0.0, 2.0], dtype=F64)
    grads, evals = {}, {}
    for label, grad in {
        "direct": "direct",
        "adjoint": physode.Adjoint(),
        "seminorm": physode.Adjoint(norm="seminorm"),
    }.items():
        sol = physode.solve(func, y0, t, grad=grad, rtol=1e-7, atol=1e-9)
        grads[label] = torch.autograd.grad(sol.ys[-1].square().sum(), list(func.parameters()))
        evals[label] = sol.stats.n_f_evals_backward
    assert evals["seminorm"] < 0.8 * evals["adjoint"], evals
    for label in ("adjoint", "seminorm"):
        for g, ref in zip(grads[label], grads["direct"], strict=True):
            torch.testing.assert_close(g, ref, rtol=1e-4, atol=1e-6)
