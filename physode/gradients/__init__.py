"""How gradients flow through a solve: one module per method, one registry line each.

Every method is a function ``solve(request: SolveRequest) -> (ys, stats)``.
"""

from __future__ import annotations

from . import aca, adjoint, direct, mali
from .options import GradientOptions, SolveRequest

GRADIENT_METHODS = {
    "direct": direct.solve,
    "adjoint": adjoint.solve,
    "aca": aca.solve,
    "mali": mali.solve,
}

__all__ = ["GRADIENT_METHODS", "GradientOptions", "SolveRequest"]
