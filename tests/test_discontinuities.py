"""Right-hand sides with jumps: jump_t and perturb, against the exact solution, with the
evaluation times checked and the gradients of every method."""

from __future__ import annotations

import math

import pytest
import torch

import physode

F64 = torch.float64
X0 = torch.tensor([1.0, 2.0], dtype=F64)


class Switched:
    """dx/dt = -x/2 before t = 0.5, x^2 after; records the times it is called at."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def __call__(self, t, x):
        self.times.append(float(t))
        return -0.5 * x if t < 0.5 else x**2


X_HALF = X0 * math.exp(-0.25)
EXACT = X_HALF / (1 - 0.5 * X_HALF)
# d x(1) / d x0 = e^{-1/4} / (1 - x(1/2) / 2)^2 (each component on its own)
EXACT_GRAD = math.exp(-0.25) / (1 - 0.5 * X_HALF) ** 2


@pytest.mark.parametrize("method", ["dopri5", "tsit5", "dopri8", "bosh3"])
@pytest.mark.parametrize("grad", ["direct", "aca", "adjoint"])
def test_jump_t_is_cheaper_and_more_accurate(method, grad):
    results = {}
    for jumps in (None, [0.5]):
        f = Switched()
        x0 = X0.clone().requires_grad_()
        ys = physode.odeint(
            f, x0, [0.0, 1.0], method=method, grad=grad, rtol=1e-7, atol=1e-9, jump_t=jumps
        )
        evals = len(f.times)
        (g,) = torch.autograd.grad(ys[-1].sum(), x0)
        results[jumps is None] = (
            evals,
            (ys[-1] - EXACT).abs().max().item(),
            (g - EXACT_GRAD).abs().max().item(),
            f.times,
        )
    (plain_evals, *_), (evals, err, grad_err, times) = results[True], results[False]
    assert evals < plain_evals
    assert err < 1e-5 and grad_err < 1e-4
    # Never evaluated exactly on the jump: only just before and just after it.
    assert 0.5 not in times
    assert any(0.5 - 1e-15 < s < 0.5 for s in times) and any(0.5 < s < 0.5 + 1e-15 for s in times)


def test_aca_and_direct_agree_through_a_jump():
    grads = []
    for grad in ("direct", "aca"):
        x0 = X0.clone().requires_grad_()
        ys = physode.odeint(Switched(), x0, [0.0, 0.3, 0.5, 1.0], grad=grad, jump_t=[0.5])
        grads.append(torch.autograd.grad(ys.sum(), x0)[0])
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("method", ["euler", "midpoint", "rk4", "ab4", "abm4"])
@pytest.mark.parametrize("grad", ["direct", "adjoint", "aca"])
def test_perturb_never_evaluates_on_the_grid(dtype, method, grad):
    ends = []
    times: list[float] = []

    def f(t, x):
        times.append(t.item())
        return -x

    for perturb in (True, False):
        times.clear()

        x0 = torch.tensor([1.0, 2.0], dtype=dtype, requires_grad=True)
        xs = physode.odeint(
            f, x0, [0.0, 1.0], method=method, step_size=0.5, perturb=perturb, grad=grad
        )
        forward = set(times)
        times.clear()
        xs.sum().backward()
        backward = set(times)
        on_grid = {0.0, 0.5} & forward, {0.5, 1.0} & backward
        if perturb:
            assert on_grid == (set(), set())
        else:
            assert {0.0, 0.5} <= forward
        ends.append(xs[-1].detach())
    # f does not depend on t here: one-sided times change nothing but the restarts
    # (which re-evaluate the same slope).
    torch.testing.assert_close(ends[0], ends[1])
