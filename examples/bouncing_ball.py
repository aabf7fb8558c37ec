"""Learn a ball's coefficient of restitution from the times it bounces.

A ball dropped from height ``h0`` (m) falls under gravity, ``dx/dt = v``,
``dv/dt = -g``; at each impact (``x = 0``) its velocity reverses and shrinks,
``v -> -e v``. Given the observed times of the first few bounces, ``e`` is fitted by
gradient descent: each bounce time comes from :func:`physode.odeint_event`, whose
event time is differentiable (implicit function theorem) with respect to ``e`` through
the state after every earlier bounce.

Bounce times are also known in closed form: the first at ``t1 = sqrt(2 h0 / g)``,
then each flight lasts ``2 e^k v1 / g`` with ``v1 = g t1``; :func:`analytic_bounce_times`
gives them for the tests.

Run: ``python examples/bouncing_ball.py [--grad aca] [--steps 8]``.
"""

from __future__ import annotations

import argparse
import math

import torch

import physode

G = 9.81  # m/s^2
E_TRUE, H0 = 0.75, 2.0


def fall(t: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
    """Free flight: ``state = [x (m), v (m/s)]``."""
    return torch.stack([state[1], torch.full_like(state[1], -G)])


def hits_ground(t: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
    return state[0]


def bounce_times(e: torch.Tensor, h0: float, n: int, grad: str = "aca") -> torch.Tensor:
    """The times (s) of the first ``n`` impacts, differentiable in ``e``; shape ``(n,)``."""
    state = torch.tensor([h0, 0.0], dtype=e.dtype)
    t = torch.zeros((), dtype=e.dtype)
    times = []
    for _ in range(n):
        t, ys = physode.odeint_event(fall, state, t, hits_ground, grad=grad, rtol=1e-9, atol=1e-11)
        times.append(t)
        landed = ys[-1]
        # The impact: back at the ground, velocity reversed and shrunk.
        state = torch.stack([torch.zeros_like(landed[0]), -e * landed[1]])
    return torch.stack(times)


def analytic_bounce_times(e: float, h0: float, n: int) -> list[float]:
    t1 = math.sqrt(2 * h0 / G)
    times, flight = [t1], 2 * t1  # the flight after an impact at speed v lasts 2 v / g
    for _ in range(n - 1):
        flight *= e
        times.append(times[-1] + flight)
    return times


def fit(
    observed: torch.Tensor,
    h0: float = H0,
    e_start: float = 0.5,
    steps: int = 8,
    grad: str = "aca",
    verbose: bool = True,
) -> float:
    """Fit ``e`` to the observed bounce times by least squares (Gauss-Newton: each
    iteration takes the derivative of every bounce time with respect to ``e``)."""
    e = torch.tensor(e_start, dtype=torch.float64, requires_grad=True)
    for step in range(steps):
        residuals = bounce_times(e, h0, len(observed), grad) - observed
        jacobian = torch.stack([torch.autograd.grad(r, e, retain_graph=True)[0] for r in residuals])
        with torch.no_grad():
            e -= (jacobian @ residuals.detach()) / (jacobian @ jacobian)
            e.clamp_(0.05, 0.999)
        if verbose:
            loss = residuals.detach().square().mean().item()
            print(f"step {step:2d}  loss {loss:.3e}  e -> {e.item():.6f}")
    return e.item()


def main(argv: list[str] | None = None) -> float:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grad", default="aca", choices=["direct", "adjoint", "aca"])
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--bounces", type=int, default=5)
    parser.add_argument("--noise", type=float, default=1e-3, help="std of the timing noise (s)")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    true = torch.tensor(analytic_bounce_times(E_TRUE, H0, args.bounces), dtype=torch.float64)
    observed = true + args.noise * torch.randn_like(true)
    e = fit(observed, steps=args.steps, grad=args.grad)
    print(f"fitted e = {e:.5f} (true {E_TRUE})")
    return e


if __name__ == "__main__":
    main()
