"""Recover a pendulum's length and damping from trajectories, learning an unmodelled drag.

The true system is a damped pendulum with an extra air drag:

    dtheta/dt = omega
    domega/dt = -(g / L) sin(theta) - c omega - k omega |omega|

The model knows the first two terms, with L and c unknown, and learns the rest
with a small network. ``--drag 0 --physics-only`` fits L and c alone on data
without drag.

Run: ``python examples/pendulum.py`` or ``python examples/pendulum.py --drag 0 --physics-only``.
"""

from __future__ import annotations

import argparse

import torch
from torch import nn

import physode
from physode.models import MLP, Hybrid, Physics

L_TRUE, C_TRUE, G_EARTH = 0.8, 0.25, 9.81


class Pendulum(Physics):
    """A damped pendulum; state ``[theta, omega]`` in rad and rad/s."""

    second_order = True

    def __init__(self, L: float = 1.0, c: float = 0.1) -> None:
        super().__init__(state_size=2)
        self.declare("L", L, units="m")
        self.declare("c", c, units="1/s")
        self.declare("g", G_EARTH, constraint="fixed", units="m/s^2")

    def variable_names(self) -> list[str]:
        return ["theta", "omega"]

    def acceleration(self, t, theta, omega):
        return -(self.g / self.L) * torch.sin(theta) - self.c * omega


class Drag(nn.Module):
    """Air drag ``-omega |omega| C(theta, omega)`` with an unknown coefficient ``C``, an MLP.

    The quadratic form is the physical prior (drag at high Reynolds number); the
    network learns how the coefficient varies. A bare ``MLP(theta, omega)`` could
    take over any part of ``-c omega`` (or of the gravity term) and leave L and c
    undetermined: the factor ``omega |omega|`` leaves the linear damping to the physics.
    """

    def __init__(self) -> None:
        super().__init__()
        # final_zero: the fit starts from the pure physics.
        self.coefficient = MLP(2, 1, hidden=(8,), final_zero=True)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        omega = y[..., 1:]
        return -omega * omega.abs() * self.coefficient(y)


def simulate(drag: float, y0: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Trajectories of the true system, ``(len(t), *y0.shape)``, solved to tight tolerance."""
    truth = Pendulum(L_TRUE, C_TRUE).to(y0.dtype)

    def rhs(t, y):
        omega = y[..., 1:]
        return truth(t, y) - drag * torch.cat([torch.zeros_like(omega), omega * omega.abs()], -1)

    with torch.no_grad():
        return physode.odeint(rhs, y0, t, method="dopri5", rtol=1e-10, atol=1e-12)


def main(
    drag: float = 0.1,
    physics_only: bool = False,
    n_traj: int = 16,
    t_end: float = 2.0,
    adam_steps: int = 0,
    lbfgs_steps: int = 100,
    penalty: float = 0.0,
    rtol: float = 1e-5,
    seed: int = 0,
    verbose: bool = True,
) -> dict[str, float]:
    """Simulate data, fit, and return the recovered and true L and c and the final loss."""
    torch.manual_seed(seed)
    dtype = torch.float64
    theta0 = torch.empty(n_traj, dtype=dtype).uniform_(-1.5, 1.5)
    omega0 = torch.empty(n_traj, dtype=dtype).uniform_(-1.0, 1.0)
    y0 = torch.stack([theta0, omega0], dim=-1)
    t = torch.linspace(0.0, t_end, 41, dtype=dtype)
    data = simulate(drag, y0, t)
    # Per trajectory and variable, so that small swings (where the linear damping
    # dominates) count as much as large ones (where the drag does).
    scale = data.abs().amax(dim=0)

    physics = Pendulum(L=1.1, c=0.1).to(dtype)
    model = physics if physics_only else Hybrid(physics, Drag().to(dtype), penalty=penalty)

    def loss_fn() -> torch.Tensor:
        pred = physode.odeint(model, y0, t, method="dopri5", grad="aca", rtol=rtol, atol=rtol / 100)
        loss = ((pred - data) / scale).square().mean()
        return (loss + model.regularization(t, pred)) if isinstance(model, Hybrid) else loss

    # LBFGS suits this small, full-batch, noise-free problem; Adam (an optional warm-up
    # here) is the usual choice for large networks or mini-batches.
    adam = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(adam_steps):
        adam.zero_grad()
        loss_fn().backward()
        adam.step()

    lbfgs = torch.optim.LBFGS(
        model.parameters(),
        max_iter=lbfgs_steps,
        tolerance_grad=1e-12,
        tolerance_change=1e-15,
        line_search_fn="strong_wolfe",
    )

    def closure() -> torch.Tensor:
        lbfgs.zero_grad()
        loss = loss_fn()
        loss.backward()
        return loss

    if lbfgs_steps:
        lbfgs.step(closure)
    with torch.no_grad():
        final = loss_fn().item()
    p = physics.physical_parameters()
    if verbose:
        print(physics)
        print(f"L = {p['L']:.4f} m  (true {L_TRUE}),  c = {p['c']:.4f} 1/s  (true {C_TRUE})")
        print(f"final loss {final:.2e}")
    return {"L": p["L"], "c": p["c"], "L_true": L_TRUE, "c_true": C_TRUE, "loss": final}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--drag", type=float, default=0.1, help="true drag k, in 1/rad")
    parser.add_argument("--physics-only", action="store_true", help="fit L and c without a network")
    parser.add_argument("--adam-steps", type=int, default=0)
    parser.add_argument("--lbfgs-steps", type=int, default=100)
    parser.add_argument("--penalty", type=float, default=0.0, help="APHYNITY weight")
    args = parser.parse_args()
    main(
        drag=args.drag,
        physics_only=args.physics_only,
        adam_steps=args.adam_steps,
        lbfgs_steps=args.lbfgs_steps,
        penalty=args.penalty,
    )
