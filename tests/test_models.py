"""Models: the Physics base (declared, constrained parameters), NBodyGravity, MLP and Hybrid."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import physode
from physode.models import MLP, Hybrid, NBodyGravity, Physics

F64 = torch.float64

# The three-body problem of the ACA paper's experiment.
G3 = 1.45136
MASSES3 = (1.1, 1.1, 0.9)
R3 = ((0.0, 0.2, 0.0), (0.5, 0.0, 0.5), (0.0, 0.0, 0.5))
V3 = tuple(tuple(7.239324 * x for x in v) for v in ((0, 0.1, 0), (0, 0, 0.1), (0.1, 0, 0)))


def three_body() -> tuple[NBodyGravity, torch.Tensor]:
    model = NBodyGravity(3, dim=3, G=G3, masses=MASSES3).to(F64)
    y0 = model.join(torch.tensor(R3, dtype=F64), torch.tensor(V3, dtype=F64))
    return model, y0


def reference_accelerations(pos: torch.Tensor, m: torch.Tensor, G: float, eps: float = 0.0):
    """The textbook double loop over bodies, one state at a time."""
    flat = pos.reshape(-1, *pos.shape[-2:])
    out = torch.zeros_like(flat)
    n = pos.shape[-2]
    for b in range(flat.shape[0]):
        for i in range(n):
            for j in range(n):
                if i != j:
                    d = flat[b, j] - flat[b, i]
                    out[b, i] += G * m[j] * d / (d.dot(d) + eps**2) ** 1.5
    return out.reshape(pos.shape)


class Oscillator(Physics):
    """dx/dt = v, dv/dt = -k x - c v, written as a first-order system."""

    def __init__(self) -> None:
        super().__init__(state_size=2)
        self.declare("k", 4.0, units="1/s^2")
        self.declare("c", 0.1, constraint="real", units="1/s")

    def forward(self, t, y):
        x, v = y[..., :1], y[..., 1:]
        return torch.cat([v, -self.k * x - self.c * v], dim=-1)


class Spring(Physics):
    """The same oscillator as a second-order system."""

    second_order = True

    def __init__(self) -> None:
        super().__init__(state_size=2)
        self.declare("k", 4.0, units="1/s^2")

    def acceleration(self, t, q, v):
        return -self.k * q


# -- NBodyGravity ------------------------------------------------------------------------------


def test_three_body_conserves_energy_and_momentum():
    model, y0 = three_body()
    t = torch.linspace(0.0, 2.0, 101, dtype=F64)
    with torch.no_grad():
        ys = physode.odeint(model, y0, t, method="dopri5", rtol=1e-10, atol=1e-10)
        energy = model.total_energy(ys)
        momentum = model.momentum(ys)
    assert energy.shape == (101,) and momentum.shape == (101, 3)
    # The bodies really interact: kinetic energy changes by far more than the drift allowed.
    kinetic = model.kinetic_energy(ys)
    assert (kinetic.max() - kinetic.min()) / energy[0].abs() > 0.5
    drift = ((energy - energy[0]) / energy[0]).abs().max().item()
    assert drift < 1e-8
    # Runge-Kutta methods preserve linear invariants exactly, up to rounding.
    assert (momentum - momentum[0]).abs().max().item() < 1e-10
    com_velocity = momentum[0] / sum(MASSES3)
    com = model.center_of_mass(ys)
    expected = com[0] + t[:, None] * com_velocity
    assert (com - expected).abs().max().item() < 1e-10


@pytest.mark.parametrize("dim", [2, 3])
@pytest.mark.parametrize("batch", [(), (4,), (2, 3)])
def test_accelerations_match_double_loop(dim, batch):
    torch.manual_seed(dim + len(batch))
    n = 4
    masses = torch.rand(n, dtype=F64) + 0.5
    model = NBodyGravity(n, dim=dim, G=0.7, masses=masses.tolist()).to(F64)
    pos = torch.randn(*batch, n, dim, dtype=F64)
    acc = model.accelerations(pos)
    assert acc.shape == (*batch, n, dim)
    torch.testing.assert_close(acc, reference_accelerations(pos, masses, 0.7), rtol=1e-12, atol=0)
    # The same through forward on the flattened state: [v, a].
    vel = torch.randn(*batch, n, dim, dtype=F64)
    dy = model(torch.tensor(0.0, dtype=F64), model.join(pos, vel))
    assert dy.shape == (*batch, 2 * n * dim)
    dq, dv = model.split(dy)
    assert torch.equal(dq, vel)
    torch.testing.assert_close(dv, acc, rtol=1e-12, atol=0)


def test_softening_matches_reference_and_removes_singularity():
    model = NBodyGravity(2, dim=2, G=1.0, softening=0.1).to(F64)
    pos = torch.tensor([[0.0, 0.0], [0.3, 0.4]], dtype=F64)
    ref = reference_accelerations(pos, torch.ones(2, dtype=F64), 1.0, eps=0.1)
    torch.testing.assert_close(model.accelerations(pos), ref, rtol=1e-13, atol=0)
    # |a| = m r / (r^2 + eps^2)^{3/2} = 0.5 / 0.26^1.5
    assert model.accelerations(pos)[0].norm().item() == pytest.approx(0.5 / 0.26**1.5, rel=1e-13)
    # Coincident bodies: zero force instead of inf / NaN.
    same = torch.zeros(2, 2, dtype=F64)
    assert torch.equal(model.accelerations(same), torch.zeros(2, 2, dtype=F64))
    # The softened potential is the one whose force is the softened acceleration.
    y = model.join(pos.requires_grad_(), torch.zeros(2, 2, dtype=F64))
    (grad,) = torch.autograd.grad(model.potential_energy(y), pos)
    torch.testing.assert_close(-grad, model.accelerations(pos.detach()), rtol=1e-12, atol=0)


def test_gradcheck_accelerations_in_masses_and_positions():
    torch.manual_seed(1)
    model = NBodyGravity(3, dim=2, G=1.3).to(F64)
    pos = torch.randn(2, 3, 2, dtype=F64, requires_grad=True)
    masses = (torch.rand(3, dtype=F64) + 0.5).requires_grad_()
    assert torch.autograd.gradcheck(lambda p, m: model.accelerations(p, masses=m), (pos, masses))
    assert torch.autograd.gradgradcheck(
        lambda p, m: model.accelerations(p, masses=m), (pos, masses)
    )


def test_gradcheck_forward_through_log_masses():
    torch.manual_seed(2)
    model = NBodyGravity(3, dim=3, G=0.9, masses=[0.5, 2.0, 30.0]).to(F64)
    y = torch.randn(2, 18, dtype=F64, requires_grad=True)
    t = torch.tensor(0.0, dtype=F64)
    raw = model.raw_masses.detach().clone().requires_grad_()

    def f(raw, y):
        return torch.func.functional_call(model, {"raw_masses": raw}, (t, y))

    assert torch.autograd.gradcheck(f, (raw, y))
    # d a / d log m_j = m_j d a / d m_j: the log parameter is the scale-free one.
    out = f(raw, y.detach()).sum()
    (g_raw,) = torch.autograd.grad(out, raw)
    masses = model.value("masses").detach().requires_grad_()
    pos, _ = model.split(y.detach())
    (g_m,) = torch.autograd.grad(model.accelerations(pos, masses=masses).sum(), masses)
    torch.testing.assert_close(g_raw, g_m * masses.detach(), rtol=1e-12, atol=1e-14)


def test_no_nan_gradient_on_the_diagonal():
    for softening in (0.0, 0.05):
        model = NBodyGravity(3, dim=3, softening=softening).to(F64)
        pos = torch.randn(3, 3, dtype=F64, requires_grad=True)
        y = model.join(pos, torch.randn(3, 3, dtype=F64))
        loss = model.accelerations(pos).square().sum() + model.total_energy(y)
        loss.backward()
        assert torch.isfinite(pos.grad).all()
        assert torch.isfinite(model.raw_masses.grad).all()
        assert model.raw_masses.grad.abs().min() > 0


def test_gradient_through_solve_with_aca_reaches_masses():
    model, y0 = three_body()
    t = torch.linspace(0.0, 0.3, 4, dtype=F64)
    ys = physode.odeint(model, y0, t, method="dopri5", grad="aca", rtol=1e-9, atol=1e-9)
    ys[-1].square().sum().backward()
    g_aca = model.raw_masses.grad.clone()
    model.zero_grad()
    ys = physode.odeint(model, y0, t, method="dopri5", grad="direct", rtol=1e-9, atol=1e-9)
    ys[-1].square().sum().backward()
    assert g_aca.abs().min() > 0
    torch.testing.assert_close(g_aca, model.raw_masses.grad, rtol=1e-7, atol=0)


def test_nbody_parameters_layout_and_buffers():
    model = NBodyGravity(2, dim=2, G=2.0, masses=[1.0, 3.0])
    assert model.state_size == 8
    assert model.variable_names() == ["x1", "y1", "x2", "y2", "vx1", "vy1", "vx2", "vy2"]
    assert NBodyGravity(1).variable_names() == ["x1", "y1", "z1", "vx1", "vy1", "vz1"]
    params = model.physical_parameters()
    assert params["masses"] == pytest.approx([1.0, 3.0], rel=1e-6)
    assert params["G"] == 2.0
    assert model.parameter_units() == {"masses": "mass", "G": "length^3/(mass*time^2)"}
    assert [n for n, _ in model.named_parameters()] == ["raw_masses"]
    assert "raw_G" in dict(model.named_buffers())

    frozen = NBodyGravity(2, dim=2, masses=[1.0, 3.0], learn_masses=False)
    assert list(frozen.parameters()) == []
    assert "raw_masses" in dict(frozen.named_buffers())
    assert frozen.parameter_specs()["masses"].learn is False
    assert not frozen.value("masses").requires_grad

    y = torch.arange(8.0)
    pos, vel = model.split(y)
    assert pos.tolist() == [[0.0, 1.0], [2.0, 3.0]] and vel.tolist() == [[4.0, 5.0], [6.0, 7.0]]
    assert torch.equal(model.join(pos, vel), y)
    # momentum = 1 * (4, 5) + 3 * (6, 7); center of mass = (1 * (0, 1) + 3 * (2, 3)) / 4
    torch.testing.assert_close(model.momentum(y), torch.tensor([22.0, 26.0]))
    torch.testing.assert_close(model.center_of_mass(y), torch.tensor([1.5, 2.5]))
    # kinetic = (1 * 41 + 3 * 85) / 2; potential = -2 * 1 * 3 / sqrt(8)
    assert model.kinetic_energy(y).item() == pytest.approx(148.0, rel=1e-6)
    assert model.potential_energy(y).item() == pytest.approx(-6 / math.sqrt(8), rel=1e-6)


def test_nbody_rejects_bad_input():
    with pytest.raises(ValueError, match="masses"):
        NBodyGravity(3, masses=[1.0, 2.0])
    with pytest.raises(ValueError, match=r"masses.*positive"):
        NBodyGravity(2, masses=[1.0, -2.0])
    with pytest.raises(ValueError, match="n_bodies"):
        NBodyGravity(0)
    with pytest.raises(ValueError, match="softening"):
        NBodyGravity(2, softening=-1.0)
    model = NBodyGravity(2, dim=3)
    with pytest.raises(ValueError, match="12"):
        model(torch.tensor(0.0), torch.zeros(10))
    with pytest.raises(ValueError, match="positions"):
        model.accelerations(torch.zeros(2, 2))


def test_nbody_float32_and_float64():
    model, y0 = three_body()
    t = torch.tensor(0.0, dtype=F64)
    ref = model(t, y0)
    assert ref.dtype == F64
    model32 = NBodyGravity(3, G=G3, masses=MASSES3)
    out = model32(t.float(), y0.float())
    assert out.dtype == torch.float32
    torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=1e-5)
    # A float32 module on a float64 state computes in float64 (masses are cast, not the state).
    assert model32(t, y0).dtype == F64


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_nbody_on_cuda():
    model, y0 = three_body()
    cuda = model.to("cuda")
    out = cuda(torch.tensor(0.0, dtype=F64, device="cuda"), y0.cuda())
    assert out.device.type == "cuda"
    cpu = NBodyGravity(3, G=G3, masses=MASSES3).to(F64)
    torch.testing.assert_close(out.cpu(), cpu(torch.tensor(0.0, dtype=F64), y0))


# -- Physics -----------------------------------------------------------------------------------


def test_declare_constraints_and_values():
    class Model(Physics):
        def __init__(self):
            super().__init__(state_size=3)
            self.declare("m", [1e-3, 1.0, 1e3], units="kg")
            self.declare("x0", -2.5, constraint="real", units="m")
            self.declare("e", 0.3, constraint="bounded", bounds=(0.0, 1.0))
            self.declare("g", 9.81, constraint="fixed", units="m/s^2")
            self.declare("k", 2.0, learn=False)

    model = Model().to(F64)
    torch.testing.assert_close(model.raw_m, torch.tensor([1e-3, 1.0, 1e3], dtype=F64).log())
    assert model.raw_x0.item() == -2.5
    assert model.raw_e.item() == pytest.approx(math.log(0.3 / 0.7), rel=1e-12)
    values = model.physical_parameters()
    assert values["m"] == pytest.approx([1e-3, 1.0, 1e3], rel=1e-12)
    assert isinstance(values["x0"], float) and values["x0"] == -2.5
    assert values["e"] == pytest.approx(0.3, rel=1e-12)
    assert values["g"] == 9.81 and values["k"] == pytest.approx(2.0, rel=1e-12)
    assert sorted(n for n, _ in model.named_parameters()) == ["raw_e", "raw_m", "raw_x0"]
    assert sorted(n for n, _ in model.named_buffers()) == ["raw_g", "raw_k"]
    assert model.parameter_units() == {"m": "kg", "x0": "m", "e": "", "g": "m/s^2", "k": ""}
    specs = model.parameter_specs()
    assert specs["e"].bounds == (0.0, 1.0) and specs["e"]["constraint"] == "bounded"
    assert specs["g"].learn is False and specs["m"].shape == (3,)
    assert specs["m"].as_dict() == {
        "name": "m",
        "constraint": "positive",
        "learn": True,
        "units": "kg",
        "bounds": None,
        "shape": [3],
    }
    # Attribute access is value(); the fixed and frozen ones carry no gradient.
    assert torch.equal(model.m, model.value("m")) and model.m.requires_grad
    assert not model.g.requires_grad and not model.k.requires_grad
    (model.m.sum() + model.e + model.x0).backward()
    # d exp(raw)/d raw = value; d sigmoid = p (1 - p)
    torch.testing.assert_close(model.raw_m.grad, torch.tensor([1e-3, 1.0, 1e3], dtype=F64))
    assert model.raw_e.grad.item() == pytest.approx(0.3 * 0.7, rel=1e-12)
    assert model.raw_x0.grad.item() == 1.0


def test_bounded_stays_in_bounds_and_positive_stays_positive():
    class Model(Physics):
        def __init__(self):
            super().__init__()
            self.declare("e", 0.5, constraint="bounded", bounds=(0.1, 0.9))
            self.declare("m", 1.0)

    model = Model().to(F64)
    for sign, e_end in ((1.0, 0.1), (-1.0, 0.9)):
        opt = torch.optim.Adam(model.parameters(), lr=1.0)
        m_start = model.m.item()
        for _ in range(30):
            opt.zero_grad()
            (sign * (model.e + model.m)).backward()
            opt.step()
            assert 0.1 < model.e.item() < 0.9
            assert model.m.item() > 0
        # Pushed against the bound, the value approaches it from inside.
        assert model.e.item() == pytest.approx(e_end, abs=0.02)
        assert (model.m.item() / m_start) ** sign < 1e-2
    with torch.no_grad():
        model.raw_e.fill_(-800.0)
        model.raw_m.fill_(-800.0)
    assert model.e.item() == 0.1 and 0.0 <= model.m.item() < 1e-300


def test_set_value_keeps_the_parameter_and_checks_constraints():
    model = Oscillator()
    param = model.raw_k
    model.set_value("k", 9.0)
    assert model.raw_k is param
    assert model.physical_parameters()["k"] == pytest.approx(9.0, rel=1e-6)
    model.k = 16.0  # attribute assignment goes through set_value
    assert model.raw_k is param and model.k.item() == pytest.approx(16.0, rel=1e-6)
    with pytest.raises(ValueError, match=r"'k'.*positive"):
        model.set_value("k", -1.0)
    with pytest.raises(ValueError, match=r"'nope'.*not declared"):
        model.set_value("nope", 1.0)
    with pytest.raises(ValueError, match=r"'nope'.*not declared"):
        model.value("nope")
    with pytest.raises(ValueError, match="shape"):
        model.set_value("k", [1.0, 2.0])


def test_double_keeps_declared_values_exact():
    model = NBodyGravity(3, G=G3, masses=MASSES3)  # created in float32
    assert model.physical_parameters()["G"] != G3
    model.double()
    assert model.raw_G.dtype == F64
    assert model.physical_parameters()["G"] == G3
    assert model.physical_parameters()["masses"] == pytest.approx(MASSES3, rel=1e-15)
    # A value changed in place since (an optimiser step) is converted, not reset.
    model.float()
    with torch.no_grad():
        model.raw_masses.add_(0.5)
    moved = model.raw_masses.double()
    model.double()
    assert torch.equal(model.raw_masses, moved)
    assert model.physical_parameters()["G"] == G3


def test_state_dict_round_trip():
    a, b = Oscillator(), Oscillator()
    a.set_value("k", 2.5)
    b.load_state_dict(a.state_dict())
    assert b.physical_parameters() == a.physical_parameters()
    assert set(a.state_dict()) == {"raw_k", "raw_c"}


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"init": 0.0}, r"'p'.*positive.*> 0"),
        ({"init": -1.0}, r"'p'.*positive.*> 0"),
        ({"init": [1.0, 0.0]}, r"'p'.*positive"),
        ({"init": float("nan"), "constraint": "real"}, "'p'.*finite"),
        ({"init": "a"}, "'p'.*number"),
        ({"init": 1.0, "constraint": "log"}, "'p'.*unknown constraint 'log'.*positive"),
        ({"init": 0.5, "constraint": "bounded"}, "'p'.*needs bounds"),
        ({"init": 2.0, "constraint": "bounded", "bounds": (0, 1)}, r"'p'.*0.0 < value < 1.0"),
        ({"init": 1.0, "constraint": "bounded", "bounds": (0, 1)}, r"'p'.*0.0 < value < 1.0"),
        ({"init": 0.5, "constraint": "bounded", "bounds": (1, 0)}, "'p'.*lo < hi"),
        ({"init": 0.5, "bounds": (0, 1)}, "'p'.*only used with constraint='bounded'"),
    ],
)
def test_declare_errors(kwargs, match):
    model = Physics()
    with pytest.raises(ValueError, match=match):
        model.declare("p", **kwargs)


def test_declare_name_errors():
    model = Physics()
    model.declare("p", 1.0)
    with pytest.raises(ValueError, match=r"'p'.*already declared"):
        model.declare("p", 2.0)
    with pytest.raises(ValueError, match=r"'forward'.*clashes"):
        model.declare("forward", 2.0)
    with pytest.raises(ValueError, match="identifier"):
        model.declare("a b", 2.0)


def test_repr_shows_values_and_units():
    class Model(Physics):
        def __init__(self):
            super().__init__()
            self.declare("L", 1.25, units="m")
            self.declare("masses", [1.0, 2.0], units="kg")
            self.declare("n", 3.0, constraint="fixed")

    assert repr(Model().to(F64)) == "Model(L=1.25 m, masses=[1, 2] kg, n=3)"


def test_first_and_second_order_forward():
    t = torch.tensor(0.0, dtype=F64)
    y = torch.tensor([[1.0, 2.0], [3.0, -1.0]], dtype=F64)
    dy = Oscillator().to(F64)(t, y)
    torch.testing.assert_close(dy, torch.tensor([[2.0, -4.2], [-1.0, -11.9]], dtype=F64))
    spring = Spring().to(F64)
    dy = spring(t, y)
    assert torch.equal(dy[..., 0], y[..., 1])
    torch.testing.assert_close(dy[..., 1], -4.0 * y[..., 0])
    assert spring.variable_names() == ["y0", "y1"]
    with pytest.raises(ValueError, match="last dimension of 2"):
        spring(t, torch.zeros(4, dtype=F64))
    with pytest.raises(NotImplementedError, match="forward"):
        Physics()(t, y)
    # Solved: x(t) = cos(2 t).
    ts = torch.linspace(0.0, 3.0, 7, dtype=F64)
    ys = physode.odeint(spring, torch.tensor([1.0, 0.0], dtype=F64), ts, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(ys[:, 0], torch.cos(2 * ts), rtol=0, atol=1e-8)


# -- MLP ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("activation", ["tanh", "relu", "softplus", "silu", "swish", "elu", "gelu"])
def test_mlp_activations(activation):
    torch.manual_seed(0)
    mlp = MLP(3, 2, hidden=(8, 5), activation=activation)
    assert [type(m).__name__ for m in mlp.net][:2] == ["Linear", type(mlp.net[1]).__name__]
    assert len(mlp.net) == 5 and mlp.net[-1].out_features == 2
    x = torch.randn(4, 7, 3)
    out = mlp(x)
    assert out.shape == (4, 7, 2)
    manual = mlp.net[4](mlp.net[3](mlp.net[2](mlp.net[1](mlp.net[0](x)))))
    assert torch.equal(out, manual)


def test_mlp_activation_table_and_errors():
    expected = {
        "tanh": nn.Tanh,
        "relu": nn.ReLU,
        "softplus": nn.Softplus,
        "silu": nn.SiLU,
        "swish": nn.SiLU,
        "elu": nn.ELU,
        "gelu": nn.GELU,
    }
    for name, cls in expected.items():
        assert isinstance(MLP(1, 1, hidden=(2,), activation=name).net[1], cls)
    with pytest.raises(ValueError, match=r"unknown activation 'sigmoid'.*tanh.*relu.*gelu"):
        MLP(2, 2, activation="sigmoid")
    with pytest.raises(ValueError, match="in_features"):
        MLP(0, 2)
    with pytest.raises(ValueError, match="last dimension of 3"):
        MLP(3, 1)(torch.zeros(2, 4))
    linear = MLP(3, 2, hidden=())
    assert len(linear.net) == 1


def test_mlp_final_zero():
    mlp = MLP(4, 3, final_zero=True)
    x = torch.randn(5, 4)
    assert torch.equal(mlp(x), torch.zeros(5, 3))
    # Still trainable: the last layer gets a gradient at once.
    mlp(x).sum().backward()
    assert mlp.net[-1].weight.grad.abs().sum() > 0


# -- Hybrid ------------------------------------------------------------------------------------


def test_hybrid_second_order_adds_to_accelerations_only():
    torch.manual_seed(0)
    physics, y0 = three_body()
    neural = MLP(18, 9, hidden=(16,)).to(F64)
    hybrid = Hybrid(physics, neural)
    assert hybrid.second_order and hybrid.state_size == 18
    t = torch.tensor(0.0, dtype=F64)
    y = y0 + 0.01 * torch.randn(5, 18, dtype=F64)
    dy = hybrid(t, y)
    assert torch.equal(dy[..., :9], y[..., 9:])  # dq/dt = v exactly
    torch.testing.assert_close(dy[..., 9:], physics(t, y)[..., 9:] + neural(y), rtol=0, atol=0)
    assert torch.equal(hybrid.neural_term(t, y), neural(y))
    assert hybrid.variable_names() == physics.variable_names()
    assert hybrid.physical_parameters() == physics.physical_parameters()
    assert hybrid.parameter_units() == physics.parameter_units()
    # Trained together: the physics' parameters and the network's are all found.
    names = {n for n, _ in hybrid.named_parameters()}
    assert "physics.raw_masses" in names and "neural.net.0.weight" in names
    with pytest.raises(ValueError, match="neural: returns 18 outputs but must return 9"):
        Hybrid(physics, MLP(18, 18))


def test_hybrid_first_order_adds_everywhere():
    torch.manual_seed(0)
    physics = Oscillator().to(F64)
    neural = MLP(2, 2, hidden=(8,)).to(F64)
    hybrid = Hybrid(physics, neural)
    t = torch.tensor(0.3, dtype=F64)
    y = torch.randn(3, 4, 2, dtype=F64)
    torch.testing.assert_close(hybrid(t, y), physics(t, y) + neural(y), rtol=0, atol=0)
    with pytest.raises(ValueError, match="neural: returns 1 outputs but must return 2"):
        Hybrid(physics, MLP(2, 1))
    with pytest.raises(ValueError, match="neural: takes 3 inputs"):
        Hybrid(physics, MLP(3, 2))
    # final_zero: the hybrid starts as its physics, exactly.
    start = Hybrid(physics, MLP(2, 2, final_zero=True).to(F64))
    assert torch.equal(start(t, y), physics(t, y))


def test_hybrid_neural_only_and_physics_only():
    torch.manual_seed(0)
    mlp = MLP(3, 3, hidden=(8,)).to(F64)
    only = Hybrid(neural=mlp)
    assert only.state_size == 3 and only.variable_names() == ["y0", "y1", "y2"]
    assert only.physical_parameters() == {}
    y = torch.randn(2, 3, dtype=F64)
    t = torch.tensor(0.0, dtype=F64)
    assert torch.equal(only(t, y), mlp(y))
    assert torch.equal(mlp.as_ode()(t, y), mlp(y))
    ys = physode.odeint(only, y, torch.linspace(0, 1, 3, dtype=F64), grad="aca")
    ys.sum().backward()
    assert mlp.net[0].weight.grad.abs().sum() > 0

    physics = Oscillator().to(F64)
    plain = Hybrid(physics, penalty=1.0)
    y2 = torch.randn(4, 2, dtype=F64)
    assert torch.equal(plain(t, y2), physics(t, y2))
    assert plain.neural_term(t, y2) is None
    assert plain.regularization(t, y2).item() == 0.0

    with pytest.raises(ValueError, match="at least one"):
        Hybrid()
    with pytest.raises(ValueError, match=r"nn\.Module"):
        Hybrid(lambda t, y: y)
    with pytest.raises(ValueError, match="penalty"):
        Hybrid(physics, penalty=-1.0)


def test_regularization_is_penalty_times_mean_square():
    torch.manual_seed(0)
    physics = Spring().to(F64)
    neural = MLP(2, 1, hidden=(8,)).to(F64)
    ys = torch.randn(6, 5, 2, dtype=F64)
    hybrid = Hybrid(physics, neural, penalty=0.25)
    expected = 0.25 * neural(ys).square().mean()
    torch.testing.assert_close(hybrid.regularization(None, ys), expected, rtol=1e-14, atol=0)
    hybrid.regularization(None, ys).backward()
    assert neural.net[0].weight.grad.abs().sum() > 0
    zero = Hybrid(physics, neural, penalty=0.0).regularization(None, ys)
    assert zero.item() == 0.0 and zero.dtype == F64
