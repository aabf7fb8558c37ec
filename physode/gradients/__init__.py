"""How gradients flow through a solve: one module per method, one registry line each.

Every method is a function
``solve(func, y0, times, solver, options, params, grad_options)``
returning ``(ys, stats)``.
"""

from __future__ import annotations

from . import aca, adjoint, direct, mali
from .options import GradientOptions

GRADIENT_METHODS = {
    "direct": direct.solve,
    "adjoint": adjoint.solve,
    "aca": aca.solve,
    "mali": mali.solve,
}

__all__ = ["GRADIENT_METHODS", "GradientOptions"]
