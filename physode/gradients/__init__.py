"""How gradients flow through a solve: one module per method, one registry line each.

Every method is a function ``solve(func, y0, times, solver, options, params)``
returning ``(ys, stats)``.
"""

from __future__ import annotations

from . import direct

GRADIENT_METHODS = {
    "direct": direct.solve,
}

__all__ = ["GRADIENT_METHODS"]
