"""physode: fit physical systems with neural ODEs.

The front door is :func:`physode.odeint` (states at the requested times) and
:func:`physode.solve` (the same, with solver statistics).
"""

from __future__ import annotations

from ._version import __version__
from .errors import SolverError
from .odeint import Solution, odeint, solve

__all__ = ["Solution", "SolverError", "__version__", "odeint", "solve"]
