"""Solve a damped harmonic oscillator with every method and compare with the exact solution.

Run: ``python examples/harmonic_oscillator.py``
"""

import torch

import physode

torch.set_default_dtype(torch.float64)

# x'' = -omega^2 x - 2 zeta omega x', as a first-order system y = (x, v).
omega, zeta = 2.0, 0.1
A = torch.tensor([[0.0, 1.0], [-(omega**2), -2 * zeta * omega]])


def rhs(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return y @ A.T


y0 = torch.tensor([1.0, 0.0])
t = torch.linspace(0.0, 10.0, 201)
exact = torch.stack([torch.linalg.matrix_exp(A * tk) @ y0 for tk in t])

print(f"{'method':>10} {'max error':>10} {'f evals':>8} {'steps':>6}")
for method in ("dopri5", "tsit5", "bosh3", "heun_euler", "alf"):
    sol = physode.solve(rhs, y0, t, method=method, rtol=1e-7, atol=1e-9)
    err = (sol.ys - exact).abs().max().item()
    print(f"{method:>10} {err:10.2e} {sol.stats.n_f_evals:8d} {sol.stats.n_accepted:6d}")
for method in ("euler", "midpoint", "heun", "rk4"):
    sol = physode.solve(rhs, y0, t, method=method, step_size=0.01)
    err = (sol.ys - exact).abs().max().item()
    print(f"{method:>10} {err:10.2e} {sol.stats.n_f_evals:8d} {sol.stats.n_accepted:6d}")
