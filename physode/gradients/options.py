"""Settings of the gradient methods (beside the step-size settings of the forward solve)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class GradientOptions:
    """Attributes:
    adjoint_rtol, adjoint_atol: tolerances of the reverse-time solve of
        ``grad="adjoint"`` (default: the forward ones).
    checkpoint_every: ``grad="mali"`` keeps an exact state every K steps
        (``None``: only the final state).
    mali_on_drift: ``"warn"`` or ``"error"`` when MALI's rebuilt states drift
        beyond the tolerance.
    """

    adjoint_rtol: float | None = None
    adjoint_atol: float | None = None
    checkpoint_every: int | None = None
    mali_on_drift: str = "warn"
