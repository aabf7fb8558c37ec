"""The engine's pieces as objects: gradient methods with options, step-size controllers
with their state returned, a solver written in a few lines, structured states, time
gradients, and a right-hand side that ignores y or a parameter."""

from __future__ import annotations

import math
from collections import namedtuple
from dataclasses import dataclass, replace
from typing import NamedTuple

import pytest
import torch

import physode
from physode.solvers import ControllerState, Solver, StepResult, StepSizeController
from physode.solvers.interpolation import hermite_dense

F64 = torch.float64
METHODS = {
    "direct": {"method": "dopri5"},
    "adjoint": {"method": "dopri5"},
    "aca": {"method": "dopri5"},
    "mali": {"method": "alf"},
}
TIGHT = {"rtol": 1e-10, "atol": 1e-12}


# ---------------------------------------------------------------------------- gradient methods


def _decay_grads(grad, **kwargs):
    k = torch.tensor(0.8, dtype=F64, requires_grad=True)
    y0 = torch.tensor([1.0, -0.5], dtype=F64, requires_grad=True)
    ys = physode.odeint(lambda t, y: -k * y, y0, [0.0, 0.5, 1.0], grad=grad, params=(k,), **kwargs)
    return torch.autograd.grad(ys.square().sum(), (y0, k))


@pytest.mark.parametrize(
    ("name", "obj"),
    [
        ("direct", physode.Direct()),
        ("adjoint", physode.Adjoint()),
        ("aca", physode.ACA()),
        ("mali", physode.MALI()),
    ],
)
def test_a_name_is_the_object_with_default_options(name, obj):
    # (MALI's ALF is of order 2: at the tight tolerances it takes ~10^5 steps.)
    tolerances = {"rtol": 1e-6, "atol": 1e-8} if name == "mali" else TIGHT
    by_name = _decay_grads(name, **tolerances)
    by_object = _decay_grads(obj, **tolerances)
    for a, b in zip(by_name, by_object, strict=True):
        assert torch.equal(a, b)


def test_the_adjoints_own_tolerances_set_its_reverse_solve():
    k = torch.tensor(0.8, dtype=F64, requires_grad=True)
    y0 = torch.tensor([1.0, -0.5], dtype=F64)

    def backward_evals(method):
        sol = physode.solve(
            lambda t, y: -k * y, y0, [0.0, 2.0], grad=method, params=(k,), rtol=1e-6
        )
        sol.ys[-1].sum().backward()
        return sol.stats.n_f_evals_backward

    default, tight = (
        backward_evals(physode.Adjoint()),
        backward_evals(physode.Adjoint(rtol=1e-11, atol=1e-13)),
    )
    assert tight > 2 * default


def test_each_method_says_which_solvers_it_accepts():
    alf, dopri5 = physode.solvers.make_solver("alf"), physode.solvers.make_solver("dopri5")
    assert physode.MALI().accepts(alf) and not physode.MALI().accepts(dopri5)
    assert all(m.accepts(dopri5) for m in (physode.Direct(), physode.Adjoint(), physode.ACA()))
    assert physode.MALI().default_method == "alf" and physode.ACA().default_method == "dopri5"
    with pytest.raises(ValueError, match=r"method: grad='mali' needs the asynchronous leapfrog"):
        physode.odeint(
            lambda t, y: -y, torch.ones(1), [0.0, 1.0], method="dopri5", grad=physode.MALI()
        )


# ---------------------------------------------------------------------------- controllers


def test_the_controllers_state_is_returned_and_the_object_is_reused():
    controller = physode.PIDController(safety=0.8)
    a = physode.solve(lambda t, y: -y, torch.ones(3, dtype=F64), [0.0, 3.0], controller=controller)
    b = physode.solve(
        lambda t, y: -2 * y, torch.ones(3, dtype=F64), [0.0, 3.0], controller=controller
    )
    assert isinstance(a.controller_state, ControllerState) and a.controller_state.h > 0
    assert a.controller_state.k == 5  # dopri5's embedded estimate is of order 4
    assert a.controller_state != b.controller_state  # nothing was kept on the object
    again = physode.solve(
        lambda t, y: -y, torch.ones(3, dtype=F64), [0.0, 3.0], controller=controller
    )
    assert torch.equal(again.ys, a.ys) and again.stats.n_accepted == a.stats.n_accepted


def test_pid_coefficients_and_limits_change_the_steps():
    f, y0 = (lambda t, y: torch.cos(3 * t) * y), torch.ones(2, dtype=F64)
    steps = {}
    for name, c in {
        "pi": physode.PIDController(),
        "pid": physode.PIDController(beta1=0.7, beta2=0.4, beta3=0.1),
        "capped": physode.PIDController(ifactor=1.2),
        "max_step": physode.PIDController(max_step=0.01),
    }.items():
        sol = physode.solve(f, y0, [0.0, 4.0], controller=c, rtol=1e-8)
        exact = torch.exp(torch.sin(torch.tensor(12.0, dtype=F64)) / 3)
        assert (sol.ys[-1] - exact).abs().max() < 1e-6, name
        steps[name] = sol.stats.n_accepted
    assert steps["pid"] != steps["pi"]
    assert steps["max_step"] >= 400 > steps["pi"]


def test_a_constant_step_is_the_step_size_shorthand():
    f, y0 = (lambda t, y: -y), torch.ones(2, dtype=F64)
    a = physode.solve(f, y0, [0.0, 0.35, 1.0], method="rk4", step_size=0.1)
    b = physode.solve(f, y0, [0.0, 0.35, 1.0], method="rk4", controller=physode.ConstantStep(0.1))
    assert torch.equal(a.ys, b.ys) and a.stats.n_accepted == b.stats.n_accepted == 10


@dataclass(frozen=True)
class Halving(StepSizeController):
    """A controller written by a user: start at h0, halve after a rejection, never grow."""

    h0: float = 0.1

    def init(self, solver, func, t0, state, t_end, rtol, atol, first_step):
        return ControllerState(h=self.h0)

    def propose(self, cstate, t, target, direction):
        left = abs(target - t)  # land on the target rather than leave a sliver of a step
        return direction * (left if left <= 1.01 * cstate.h else cstate.h), cstate

    def adapt(self, cstate, h, ratio):
        return (True, cstate) if ratio <= 1 else (False, replace(cstate, h=h / 2))


def test_a_custom_controller_in_a_few_lines():
    y0 = torch.ones(1, dtype=F64)
    sol = physode.solve(
        lambda t, y: -y, y0, [0.0, 1.0], controller=Halving(), rtol=1e-12, atol=1e-14
    )
    assert abs(sol.ys[-1].item() - math.exp(-1)) < 1e-11
    assert sol.stats.n_rejected >= 1
    assert sol.controller_state.h < 0.1


# ---------------------------------------------------------------------------- a solver


class MidpointState(NamedTuple):
    y: torch.Tensor
    f: torch.Tensor


class ExplicitMidpoint(Solver):
    """A user's solver: the explicit midpoint rule with a Heun-like embedded estimate."""

    name, order, error_order = "my_midpoint", 2, 1

    def init(self, func, t0, y0):
        return MidpointState(y0, func(t0, y0))

    def step(self, func, t, h, state, estimate_error=True):
        k2 = func(t + h / 2, state.y + h / 2 * state.f)
        y1 = state.y + h * k2
        error = h * (k2 - state.f) if estimate_error else None
        return StepResult(MidpointState(y1, func(t + h, y1)), error, None)

    def interpolant(self, h, state0, state1, stages):
        return hermite_dense(state0.y, state1.y, state0.f, state1.f, h)


@pytest.mark.parametrize("grad", ["direct", "adjoint", "aca"])
def test_a_custom_solver_in_a_few_lines_with_every_gradient_method(grad):
    k = torch.tensor(0.8, dtype=F64, requires_grad=True)
    y0 = torch.tensor([1.0, -0.5], dtype=F64, requires_grad=True)
    ys = physode.odeint(
        lambda t, y: -k * y,
        y0,
        [0.0, 0.5, 1.0],
        method=ExplicitMidpoint(),
        grad=grad,
        params=(k,),
        rtol=1e-9,
        atol=1e-11,
    )
    assert torch.allclose(ys[-1], y0 * math.exp(-0.8), rtol=1e-6)
    g_y0, g_k = torch.autograd.grad(ys[-1].sum(), (y0, k))
    assert torch.allclose(g_y0, torch.full_like(g_y0, math.exp(-0.8)), rtol=1e-6)
    assert abs(g_k.item() - (-1.0 * 0.5 * math.exp(-0.8))) < 1e-6


def test_a_rejected_step_is_retried_from_the_state_the_solver_names():
    # A solver may name, with a rejected step, the state to retry from (an implicit
    # method's fresh Jacobian): here the first attempt fails and marks its retry state,
    # and every later attempt must start from a marked state.
    class Marked(NamedTuple):
        y: torch.Tensor
        f: torch.Tensor
        marked: bool = False

    class FailsFirst(ExplicitMidpoint):
        def __init__(self):
            self.starts = []

        def init(self, func, t0, y0):
            return Marked(y0, func(t0, y0))

        def step(self, func, t, h, state, estimate_error=True):
            self.starts.append(state.marked)
            if len(self.starts) == 1:
                return StepResult(
                    state, None, None, retry=state._replace(marked=True), failed="a test"
                )
            result = super().step(func, t, h, state, estimate_error)
            return result._replace(state=Marked(*result.state, marked=True))

    solver = FailsFirst()
    sol = physode.solve(lambda t, y: -y, torch.ones(2, dtype=F64), [0.0, 1.0], method=solver)
    assert solver.starts[0] is False and all(solver.starts[1:])
    assert sol.stats.n_rejected >= 1 and sol.stats.extra["failed_steps"] == 1
    assert abs(sol.ys[-1, 0].item() - math.exp(-1.0)) < 1e-5


def test_an_object_that_is_no_solver_is_refused_when_passed_in():
    class Half:
        def step(self, *args):
            return None

    with pytest.raises(
        ValueError,
        match=r"method: expected a method name or a physode.solvers.Solver, got Half "
        r"\(it lacks init, interpolant\)",
    ):
        physode.odeint(lambda t, y: -y, torch.ones(1), [0.0, 1.0], method=Half())


# ---------------------------------------------------------------------------- structured states


Pair = namedtuple("Pair", ["q", "p"])


def _oscillator(t, state):
    q, p = state
    return (p, -4.0 * q)


@pytest.mark.parametrize("grad", list(METHODS))
def test_tuple_and_dict_states_through_every_method_against_gradcheck(grad):
    opts = {**METHODS[grad], "rtol": 1e-9, "atol": 1e-10}
    if grad == "mali":
        opts = {"method": "alf", "step_size": 0.01}

    def tuple_solve(q0, p0):
        ys = physode.odeint(_oscillator, (q0, p0), [0.0, 0.3, 0.7], grad=grad, **opts)
        return ys[0][-1], ys[1][-1]

    def dict_solve(z, logp):
        def f(t, s):
            return {"z": -s["z"], "logp": s["z"].sum(-1, keepdim=True)}

        ys = physode.odeint(f, {"z": z, "logp": logp}, [0.0, 0.5], grad=grad, **opts)
        return ys["z"], ys["logp"]

    q0 = torch.tensor([0.3, -0.2], dtype=F64, requires_grad=True)
    p0 = torch.tensor([0.1, 0.4], dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(tuple_solve, (q0, p0), atol=1e-6, rtol=1e-5)
    z = torch.tensor([[0.5, 1.0]], dtype=F64, requires_grad=True)
    logp = torch.zeros(1, 1, dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(dict_solve, (z, logp), atol=1e-6, rtol=1e-5)


def test_a_structured_state_comes_back_in_its_structure_with_one_error_norm():
    q0, p0 = torch.ones(3, dtype=F64), torch.zeros(3, dtype=F64)
    ys = physode.odeint(
        _oscillator, Pair(q0, p0), torch.linspace(0, 1, 5, dtype=F64), rtol=1e-10, atol=1e-12
    )
    assert isinstance(ys, Pair) and ys.q.shape == (5, 3) and ys.p.shape == (5, 3)
    t = torch.linspace(0, 1, 5, dtype=F64)[:, None]
    torch.testing.assert_close(ys.q, torch.cos(2 * t).expand(5, 3), rtol=1e-8, atol=1e-9)
    # The same steps as the flat state [q, p]: the norm runs over every leaf.
    flat = physode.solve(
        lambda t, y: torch.cat([y[3:], -4 * y[:3]]), torch.cat([q0, p0]), [0.0, 1.0]
    )
    tree = physode.solve(_oscillator, (q0, p0), [0.0, 1.0])
    assert flat.stats.n_accepted == tree.stats.n_accepted
    torch.testing.assert_close(tree.ys[0][-1], flat.ys[-1, :3], rtol=0, atol=0)


# ---------------------------------------------------------------------------- a func that ignores y


@pytest.mark.parametrize("grad", list(METHODS))
def test_a_missing_dependence_is_a_zero_gradient(grad):
    # f ignores y: dL/dy0 is that of the identity, 1 per output; f ignores its parameter
    # k2 as well: a zero gradient, not an error.
    opts = METHODS[grad]
    y0 = torch.tensor([1.0], dtype=F64, requires_grad=True)
    ys = physode.odeint(
        lambda t, y: -0.1 * torch.exp(-0.1 * t).expand_as(y),
        y0,
        torch.linspace(0, 1, 10),
        grad=grad,
        **opts,
    )
    (g,) = torch.autograd.grad(ys.sum(), y0)
    assert g.item() == pytest.approx(10.0, rel=1e-12)
    k, k2 = (torch.tensor(0.5, dtype=F64, requires_grad=True) for _ in range(2))
    y0 = torch.zeros(1, dtype=F64, requires_grad=True)
    ys = physode.odeint(
        lambda t, y: (k * t).expand_as(y), y0, [0.0, 2.0], grad=grad, params=(k, k2), **opts
    )
    g_y0, g_k, g_k2 = torch.autograd.grad(ys[-1].sum(), (y0, k, k2), allow_unused=True)
    # Direct backprop's autograd says None for a tensor not in the graph; the others
    # return their parameter gradients, and a zero for k2.
    assert g_y0.item() == 1.0 and (g_k2 is None if grad == "direct" else g_k2.item() == 0.0)
    assert g_k.item() == pytest.approx(2.0, rel=1e-6)  # y(2) = k t^2 / 2


# ---------------------------------------------------------------------------- time gradients


@pytest.mark.parametrize("grad", list(METHODS))
def test_gradients_with_respect_to_the_times_against_finite_differences(grad):
    k = torch.tensor(0.7, dtype=F64)

    def f(t, y):
        return -k * y + torch.sin(t)

    y0 = torch.tensor([1.0, 2.0], dtype=F64)
    t = torch.tensor([0.1, 0.5, 1.2, 2.0], dtype=F64, requires_grad=True)
    # ALF is second order: 1e-8 is as tight as its step count allows.
    tol = {"rtol": 1e-11, "atol": 1e-12} if grad != "mali" else {"rtol": 1e-8, "atol": 1e-10}
    ys = physode.odeint(f, y0, t, grad=grad, params=(k,), **{**METHODS[grad], **tol})
    (g,) = torch.autograd.grad(ys.square().sum(), t)

    def loss(times):
        return physode.odeint(f, y0, times, rtol=1e-12, atol=1e-13).square().sum().item()

    fd = []
    for i in range(4):
        e = torch.zeros(4, dtype=F64)
        e[i] = 1e-6
        fd.append((loss(t.detach() + e) - loss(t.detach() - e)) / 2e-6)
    torch.testing.assert_close(
        g, torch.tensor(fd, dtype=F64), rtol=1e-6 if grad != "mali" else 1e-5, atol=1e-7
    )


def test_a_forward_only_solve_with_times_that_require_grad_runs():
    t = torch.linspace(0, 1, 3, dtype=F64, requires_grad=True)
    with torch.no_grad():
        ys = physode.odeint(lambda t, y: -y, torch.ones(1, dtype=F64), t)
    assert torch.allclose(ys[-1], torch.tensor([math.exp(-1)], dtype=F64))
