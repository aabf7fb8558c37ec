"""How gradients flow through a solve: one object per method, one registry line each.

A method is a :class:`GradientMethod` with its options (``Direct()``,
``Adjoint(rtol=...)``, ``ACA()``, ``MALI(checkpoint_every=...)``); the names in
:data:`GRADIENT_METHODS` are shorthands for the objects with default options.
"""

from __future__ import annotations

from typing import Any

from ..registry import Registry
from .aca import ACA
from .adjoint import Adjoint
from .base import GradientMethod, SolveRequest
from .direct import Direct
from .mali import MALI

#: name -> the method's class (called with no arguments for the defaults).
GRADIENT_METHODS: Registry[type[GradientMethod]] = Registry(
    "gradient method", {"direct": Direct, "adjoint": Adjoint, "aca": ACA, "mali": MALI}
)


def make_gradient(grad: str | GradientMethod | Any) -> GradientMethod:
    """The gradient method object for a name, or ``grad`` itself when it is one.

    Raises:
        ValueError: an unknown name (the known ones listed) or another kind of object.
    """
    if isinstance(grad, GradientMethod):
        return grad
    if isinstance(grad, str):
        try:
            return GRADIENT_METHODS.resolve(grad)()
        except ValueError as exc:
            raise ValueError(f"grad: {exc}") from None
    raise ValueError(
        f"grad: expected a gradient method name ({', '.join(GRADIENT_METHODS)}) or a "
        f"physode.gradients.GradientMethod, got {type(grad).__name__}"
    )


__all__ = [
    "ACA",
    "GRADIENT_METHODS",
    "MALI",
    "Adjoint",
    "Direct",
    "GradientMethod",
    "SolveRequest",
    "make_gradient",
]
