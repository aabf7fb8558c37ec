"""physode.torchdiffeq: torchdiffeq's calls, names and defaults over physode. Checked on
their own, and against torchdiffeq itself where it is installed (the ``bench`` extra)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import physode.torchdiffeq as tdq

F64 = torch.float64


class Decay(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.k = nn.Parameter(torch.tensor(0.7, dtype=F64))
        self.nfe = 0

    def forward(self, t, y):
        self.nfe += 1
        return -self.k * y


T = torch.linspace(0.0, 2.0, 5, dtype=F64)
Y0 = torch.tensor([1.0, 2.0], dtype=F64)


def _exact(k=0.7):
    return Y0 * torch.exp(-k * T).unsqueeze(1)


@pytest.mark.parametrize(
    "method", ["dopri5", "dopri8", "bosh3", "adaptive_heun", "tsit5", "fehlberg2", None]
)
def test_adaptive_methods_with_torchdiffeq_default_tolerances(method):
    ys = tdq.odeint(Decay(), Y0, T, method=method)
    # torchdiffeq's defaults are rtol 1e-7, atol 1e-9 (fehlberg2 overshoots, see its docs)
    bound = 1e-4 if method == "fehlberg2" else 1e-6
    assert (ys - _exact()).abs().max().item() < bound


def test_fixed_grid_without_step_size_steps_between_output_times():
    f = Decay()
    ys = tdq.odeint(f, Y0, T, method="euler")
    h = 0.5
    expected = Y0 * torch.tensor([(1 - 0.7 * h) ** k for k in range(5)], dtype=F64).unsqueeze(1)
    torch.testing.assert_close(ys, expected, rtol=1e-13, atol=1e-13)
    assert f.nfe == 5  # one evaluation per step, and f(t0, y0)
    # With grid_constructor: the user's grid.
    grid = lambda func, y0, t: torch.linspace(0, 2, 21)  # noqa: E731
    ys = tdq.odeint(Decay(), Y0, T, method="euler", options={"grid_constructor": grid})
    assert ys[-1, 0].item() == pytest.approx((1 - 0.07) ** 20, rel=1e-6)


@pytest.mark.parametrize(
    "method", ["euler", "midpoint", "heun2", "heun3", "rk4", "explicit_adams", "implicit_adams"]
)
def test_fixed_methods_with_step_size(method):
    ys = tdq.odeint(Decay(), Y0, T, method=method, options={"step_size": 0.01})
    order = 1 if method == "euler" else 2
    assert (ys - _exact()).abs().max().item() < 5 * 0.01**order


def test_tuple_states_and_time_gradients():
    t = T.clone().requires_grad_()
    y0 = (Y0.clone().requires_grad_(), torch.tensor(3.0, dtype=F64))
    out = tdq.odeint(lambda t, s: (-s[0], -2 * s[1]), y0, t)
    assert isinstance(out, tuple) and out[0].shape == (5, 2) and out[1].shape == (5,)
    (dt,) = torch.autograd.grad(out[1][-1], t)
    # d y(t_end)/d t_end = f = -2 y(t_end); d y(t_end)/d t0 = +2 y(t_end) for this linear ODE
    y_end = 3.0 * math.exp(-4.0)
    assert dt[-1].item() == pytest.approx(-2 * y_end, rel=1e-6)
    assert dt[0].item() == pytest.approx(2 * y_end, rel=1e-6)


@pytest.mark.parametrize("grad", ["adjoint", "aca", "mali"])
def test_odeint_adjoint_gradients(grad):
    f = Decay()
    ys = tdq.odeint_adjoint(f, Y0, T, grad=grad, rtol=1e-9, atol=1e-11)
    ys[-1].sum().backward()
    # d/dk sum(y0 e^{-kT}) = -T sum(y0) e^{-kT}
    expected = -2.0 * 3.0 * math.exp(-1.4)
    assert f.k.grad.item() == pytest.approx(expected, rel=1e-5)


def test_odeint_adjoint_seminorm_saves_backward_evaluations():
    counts = []
    for options in ({}, {"norm": "seminorm"}):
        f = Decay()
        ys = tdq.odeint_adjoint(f, Y0, T, rtol=1e-8, atol=1e-10, adjoint_options=options)
        f.nfe = 0
        ys.sum().backward()
        counts.append(f.nfe)
    assert counts[1] < counts[0]


def test_options_errors_and_unsupported_features():
    with pytest.raises(tdq.Unsupported, match="scipy_solver"):
        tdq.odeint(Decay(), Y0, T, method="scipy_solver", options={"solver": "RK45"})
    with pytest.raises(tdq.Unsupported, match="complex"):
        tdq.odeint(lambda t, y: -y, torch.ones(2, dtype=torch.complex64), T)
    with pytest.raises(ValueError, match="unknown option"):
        tdq.odeint(Decay(), Y0, T, options={"stepsize": 0.1})
    with pytest.raises(ValueError, match="method"):
        tdq.odeint(Decay(), Y0, T, method="dopri6")
    with pytest.raises(ValueError, match="adjoint_params"):
        tdq.odeint_adjoint(lambda t, y: -y, Y0, T)
    with pytest.raises(Exception, match="max_steps"):
        tdq.odeint(Decay(), Y0, T, options={"max_num_steps": 2})


def test_events_through_odeint_and_odeint_event():
    def fall(t, y):
        return torch.stack([y[1], -9.81 * torch.ones_like(y[1])])

    y0 = torch.tensor([10.0, 0.0], dtype=F64)
    landing = math.sqrt(2 * 10.0 / 9.81)
    t_event, ys = tdq.odeint(
        fall, y0, torch.tensor([0.0, 1.0], dtype=F64), event_fn=lambda t, y: y[0]
    )
    assert t_event.item() == pytest.approx(landing, abs=1e-9)
    t_event, ys = tdq.odeint_event(
        fall, y0, torch.tensor(0.0, dtype=F64), event_fn=lambda t, y: y[0]
    )
    assert t_event.item() == pytest.approx(landing, abs=1e-9) and ys.shape == (2, 2)


@pytest.mark.parametrize("method", ["dopri5", "dopri8", "bosh3", "adaptive_heun", "rk4"])
def test_against_torchdiffeq(method):
    torchdiffeq = pytest.importorskip("torchdiffeq")
    options = {"step_size": 0.05} if method == "rk4" else None
    ours = tdq.odeint(Decay(), Y0, T, method=method, options=options)
    theirs = torchdiffeq.odeint(Decay(), Y0, T, method=method, options=options)
    # The same answer to torchdiffeq's accuracy, and ours at least as close to the exact
    # one (torchdiffeq's adaptive outputs come from its interpolants, which at these
    # tolerances are the larger error: e.g. bosh3 3e-5 against our 9e-8).
    ours_err = (ours - _exact()).abs().max().item()
    theirs_err = (theirs - _exact()).abs().max().item()
    assert ours_err <= 1.5 * theirs_err + 1e-12, (ours_err, theirs_err)
    assert (ours - theirs).abs().max().item() <= 2 * theirs_err + 1e-12
