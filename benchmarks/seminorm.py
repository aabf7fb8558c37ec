"""The continuous adjoint's seminorm: backward evaluations saved, at the same gradient error.

``physode.Adjoint(norm="seminorm")`` leaves the parameter-gradient channels out of the
reverse solve's error test (Kidger, Chen & Lyons, ICML 2021). On an MLP vector field
(4-32-4, tanh, batch 16, t in [0, 2], float64) this table gives, per tolerance, the
backward evaluations with the full norm and with the seminorm and the relative error of
the parameter gradient of each against ACA at rtol 1e-12 (the exact gradient of a solve
whose error is far below both).

Run: ``python benchmarks/seminorm.py [--threads 1]``.
"""

from __future__ import annotations

import argparse
import os
import sys

import torch
from torch import nn

import physode

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from conditions import add_arguments, applied  # sibling modules, found through the line above
from engine import markdown_table

F64 = torch.float64
TOLERANCES = (1e-5, 1e-7, 1e-9)


def make_field() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 32), nn.Tanh(), nn.Linear(32, 4)).to(F64)


class Field(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = make_field()

    def forward(self, t, y):
        return self.net(y)


def parameter_gradient(grad, rtol: float) -> tuple[torch.Tensor, int]:
    """The flattened parameter gradient of ``sum(y(T)^2)`` and the backward evaluations."""
    field = Field()
    y0 = torch.randn(16, 4, dtype=F64, generator=torch.Generator().manual_seed(1))
    sol = physode.solve(field, y0, [0.0, 2.0], grad=grad, rtol=rtol, atol=rtol * 1e-2)
    sol.ys[-1].square().sum().backward()
    flat = torch.cat([p.grad.reshape(-1) for p in field.parameters()])
    return flat, sol.stats.n_f_evals_backward


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    args = parser.parse_args()
    with applied(args) as conditions:
        print(conditions)
        exact, _ = parameter_gradient("aca", 1e-12)
        rows = []
        for tol in TOLERANCES:
            cells = [f"{tol:.0e}"]
            results = [parameter_gradient(physode.Adjoint(norm=n), tol) for n in (None, "seminorm")]
            for _, evals in results:
                cells.append(str(evals))
            for g, _ in results:
                cells.append(f"{((g - exact).norm() / exact.norm()).item():.1e}")
            cells.append(f"{1 - results[1][1] / results[0][1]:.0%}")
            rows.append(cells)
    header = ["rtol", "evals full", "evals seminorm", "err full", "err seminorm", "saved"]
    print(markdown_table(header, rows))


if __name__ == "__main__":
    main()
