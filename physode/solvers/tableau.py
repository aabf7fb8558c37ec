"""The Butcher tableau: the data that defines an explicit Runge-Kutta method."""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction

import torch

Number = float | Fraction


@dataclass(frozen=True)
class ButcherTableau:
    """Coefficients of an explicit Runge-Kutta method.

    Stage ``i`` evaluates ``k_i = f(t + c_i h, y + h * sum_j a[i][j] k_j)``;
    the step returns ``y + h * sum_i b_i k_i``.

    Attributes:
        name: the method's name as given to ``odeint(method=...)``.
        order: order of the propagating solution ``b``.
        c: nodes, one per stage; ``c[0]`` must be 0.
        a: strictly lower-triangular rows; ``a[i]`` has ``i`` entries.
        b: weights of the propagated solution.
        b_error: ``b - b_hat`` for an embedded pair (local error estimate is
            ``h * sum_i b_error_i k_i``), or ``None`` for a fixed-step method.
        error_order: order of the embedded solution ``b_hat`` (the estimate
            behaves as ``h ** (error_order + 1)``).
        fsal: the last stage is ``f(t + h, y_new)`` (first same as last), so
            it is reused as the first stage of the next step.
        dense: optional continuous extension. ``dense[i][p]`` is the
            coefficient of ``theta ** (p + 1)`` in the weight ``b_i(theta)``,
            so that ``y(t + theta h) = y + h * sum_i b_i(theta) k_i``. Methods
            without one use cubic Hermite interpolation.
    """

    name: str
    order: int
    c: tuple[Number, ...]
    a: tuple[tuple[Number, ...], ...]
    b: tuple[Number, ...]
    b_error: tuple[Number, ...] | None = None
    error_order: int | None = None
    fsal: bool = False
    dense: tuple[tuple[Number, ...], ...] | None = None
    _cache: dict = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        s = len(self.c)
        if len(self.b) != s or len(self.a) != s:
            raise ValueError(f"tableau {self.name!r}: c, a and b need one entry per stage")
        if any(len(row) != i for i, row in enumerate(self.a)):
            raise ValueError(f"tableau {self.name!r}: a must be strictly lower triangular")
        if self.b_error is not None and len(self.b_error) != s:
            raise ValueError(f"tableau {self.name!r}: b_error needs one entry per stage")
        if self.dense is not None and len(self.dense) != s:
            raise ValueError(f"tableau {self.name!r}: dense needs one row per stage")

    @property
    def stages(self) -> int:
        return len(self.c)

    @property
    def adaptive(self) -> bool:
        return self.b_error is not None

    def dense_matrix(self, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """The dense-output coefficients as a ``(stages, degree)`` tensor, cached."""
        key = (dtype, device)
        if key not in self._cache:
            rows = [[float(x) for x in row] for row in self.dense]
            self._cache[key] = torch.tensor(rows, dtype=dtype, device=device)
        return self._cache[key]
