"""The methods by name: ``odeint(method="dopri5")`` looks the name up here. A new method is
a :class:`~physode.solvers.base.Solver` subclass and one line below (an explicit
Runge-Kutta method is only its tableau, in ``tableaus.py``)."""

from __future__ import annotations

from functools import partial
from typing import Any

from ..registry import Registry
from .adams import Adams
from .alf import AsyncLeapfrog
from .base import Solver, check_solver
from .dop853 import DormandPrince853
from .esdirk import ESDIRK
from .radau import Radau
from .rosenbrock import Rosenbrock
from .runge_kutta import ExplicitRungeKutta
from .stiff_tableaus import KVAERNO5, RADAU_IIA5, RODAS5P
from .tableaus import ALL as TABLEAUS

#: name -> a callable that builds the solver.
SOLVERS: Registry = Registry(
    "method",
    {
        **{name: partial(ExplicitRungeKutta, tableau) for name, tableau in TABLEAUS.items()},
        "ab4": Adams,
        "abm4": partial(Adams, corrector=True),
        "dopri8": DormandPrince853,
        "alf": AsyncLeapfrog,
        "radau5": partial(Radau, RADAU_IIA5),
        "kvaerno5": partial(ESDIRK, KVAERNO5),
        "rodas5p": partial(Rosenbrock, RODAS5P),
    },
)

FIXED_STEP_METHODS = (*(name for name, tab in TABLEAUS.items() if not tab.adaptive), "ab4", "abm4")
ADAPTIVE_METHODS = tuple(name for name in SOLVERS if name not in FIXED_STEP_METHODS)
METHODS = (*FIXED_STEP_METHODS, *ADAPTIVE_METHODS)
#: The implicit methods for stiff problems.
STIFF_METHODS = ("radau5", "rodas5p", "kvaerno5")


def make_solver(method: str | Solver | Any) -> Solver:
    """The solver for a method name, or ``method`` itself when it is a solver object.

    Raises:
        ValueError: an unknown name (the known ones listed, the closest suggested), or
            an object that is not a :class:`Solver` (naming what it lacks).
    """
    if isinstance(method, str):
        try:
            return check_solver(SOLVERS.resolve(method)())
        except ValueError as exc:
            raise ValueError(f"method: {exc}") from None
    return check_solver(method)
