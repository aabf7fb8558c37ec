"""What a gradient method is: an object with its options that solves a request and says
which solvers it accepts.

``odeint(grad=...)`` takes one of these objects or a name (a shorthand for the
object with default options): ``Direct()``, ``Adjoint(rtol=None, atol=None)``,
``ACA()``, ``MALI(checkpoint_every=None, on_drift="warn")``. A new method is one
file with a subclass and one line in :data:`physode.gradients.GRADIENT_METHODS`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import torch

from ..solvers.base import Solver
from ..solvers.loop import SolveOptions, Stats


@dataclass(frozen=True)
class SolveRequest:
    """One solve, as every gradient method receives it.

    Attributes:
        func: the right-hand side ``f(t, y)``.
        y0: the initial state, any shape ``S``.
        times: output times (float64 numbers), ``times[0]`` the start.
        solver: the one-step method.
        options: tolerances, the step-size controller and the step limits.
        params: tensors (beyond ``func``'s own parameters) that receive gradients.
    """

    func: Callable
    y0: torch.Tensor
    times: list[float]
    solver: Solver
    options: SolveOptions
    params: tuple[torch.Tensor, ...]


class GradientMethod(ABC):
    """How gradients flow through a solve.

    Attributes:
        name: the shorthand ``odeint(grad=name)`` takes.
        default_method: the solver used when ``method`` is left out.
    """

    name: ClassVar[str]
    default_method: ClassVar[str] = "dopri5"

    def accepts(self, solver: Solver) -> bool:
        """Whether this method can differentiate solves of ``solver``."""
        return True

    def refusal(self, solver: Solver) -> str:
        """Why :meth:`accepts` is false for ``solver`` (a message naming the fix)."""
        return f"grad={self.name!r} does not work with method {solver.name!r}"

    def check_solver(self, solver: Solver) -> None:
        """Raise ``ValueError`` (naming ``method``) unless :meth:`accepts` ``solver``."""
        if not self.accepts(solver):
            raise ValueError(f"method: {self.refusal(solver)}")

    @abstractmethod
    def solve(self, request: SolveRequest) -> tuple[torch.Tensor, Stats]:
        """States at ``request.times`` as ``(len(times), *y0.shape)``, with the statistics."""
