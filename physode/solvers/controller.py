"""Step-size control: the error norm, a PI controller and the initial step."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .base import StepFunction


def error_ratio(
    error: torch.Tensor, y0: torch.Tensor, y1: torch.Tensor, rtol: float, atol: float
) -> torch.Tensor:
    """RMS over the whole state of ``error / (atol + rtol * max(|y0|, |y1|))`` (0-dim tensor).

    One number for the whole batch: every trajectory in a batch shares the step size.
    """
    with torch.no_grad():
        scale = torch.maximum(y0.abs(), y1.abs()).mul_(rtol).add_(atol)
        return (error / scale).square().mean().sqrt()


def _rms_scaled(x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return (x / scale).square().mean().sqrt()


def initial_step(
    func: StepFunction,
    t0: float,
    y0: torch.Tensor,
    f0: torch.Tensor,
    error_order: int,
    rtol: float,
    atol: float,
    direction: float,
    span: float,
) -> float:
    """A first step size after Hairer, Norsett & Wanner, Solving ODEs I, section II.4.

    Costs one evaluation of ``func``, made inside ``[t0, t0 + direction * span]``.
    Returns a positive magnitude.
    """
    with torch.no_grad():
        scale = y0.abs().mul(rtol).add_(atol)
        d0, d1 = torch.stack([_rms_scaled(y0, scale), _rms_scaled(f0, scale)]).tolist()
        h0 = min(1e-6 if d0 < 1e-5 or d1 < 1e-5 else 0.01 * d0 / d1, span)
        f1 = func(t0 + direction * h0, y0.add(f0, alpha=direction * h0))
        d2 = _rms_scaled(f1 - f0, scale).item() / h0
    if not math.isfinite(d2):
        return h0
    if max(d1, d2) <= 1e-15:
        h1 = max(1e-6, h0 * 1e-3)
    else:
        h1 = (0.01 / max(d1, d2)) ** (1.0 / (error_order + 1))
    return min(100.0 * h0, h1)


@dataclass
class PIController:
    """Proportional-integral step-size control (Gustafsson; Soderlind).

    After an accepted step the new step is
    ``h * safety * ratio ** (-beta1 / k) * previous_ratio ** (beta2 / k)``
    with ``k = error_order + 1``, clipped to ``[dfactor, ifactor]`` times
    ``h``. The defaults ``beta1 = 0.85, beta2 = 0.2`` are those of Hairer's
    DOPRI5 (``0.17`` and ``0.04`` for ``k = 5``). After a rejection the step
    is ``h * reject_safety * ratio ** (-1 / k)``, clipped to ``[dfactor, 1]``,
    and the next accepted step may not grow: the lower safety after a
    rejection avoids chains of rejections where the error changes fast.
    """

    error_order: int
    safety: float = 0.9
    ifactor: float = 10.0
    dfactor: float = 0.2
    beta1: float = 0.85
    beta2: float = 0.2
    reject_safety: float = 0.8

    def __post_init__(self) -> None:
        self._previous_ratio = 1.0
        self._just_rejected = False

    def propose(self, h: float, ratio: float) -> tuple[bool, float]:
        """Whether a step with error ``ratio`` is accepted, and the next step size magnitude."""
        k = self.error_order + 1
        if not math.isfinite(ratio):
            self._just_rejected = True
            return False, h * self.dfactor
        if ratio <= 1.0:
            if ratio == 0.0:
                factor = self.ifactor
            else:
                factor = (
                    self.safety
                    * ratio ** (-self.beta1 / k)
                    * self._previous_ratio ** (self.beta2 / k)
                )
            upper = 1.0 if self._just_rejected else self.ifactor
            factor = min(upper, max(self.dfactor, factor))
            self._previous_ratio = max(ratio, 1e-4)
            self._just_rejected = False
            return True, h * factor
        factor = min(1.0, max(self.dfactor, self.reject_safety * ratio ** (-1.0 / k)))
        self._just_rejected = True
        return False, h * factor
