"""The error norm of a step and the initial step size (Hairer, Norsett & Wanner II.4)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:  # base imports this module
    from .base import StepFunction


def _error_scale(y0: torch.Tensor, y1: torch.Tensor, rtol: float, atol: float) -> torch.Tensor:
    return torch.maximum(y0.abs(), y1.abs()).mul_(rtol).add_(atol)


def error_ratio(
    error: torch.Tensor,
    y0: torch.Tensor,
    y1: torch.Tensor,
    rtol: float,
    atol: float,
    norm: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """A step's error ratio (0-dim tensor): ``norm`` of ``error / (atol + rtol * max(|y0|,
    |y1|))``, by default the RMS over the whole state.

    One number for the whole batch: every trajectory in a batch shares the step size.
    The default's squares overflow (to ``inf``) for ratios beyond ~1e19 in float32,
    ~1e154 in float64; :func:`safe_error_ratio` gives the true value then.
    """
    with torch.no_grad():
        scaled = error / _error_scale(y0, y1, rtol, atol)
        if norm is None:
            return scaled.square().mean().sqrt()
        value = norm(scaled)
        if not isinstance(value, torch.Tensor):
            value = torch.as_tensor(value, dtype=error.dtype, device=error.device)
        if value.numel() != 1:
            raise ValueError(
                f"norm: must return one number (a 0-dim tensor or a float), got shape "
                f"{tuple(value.shape)}"
            )
        return value.reshape(()).to(error.dtype)


class LeadingRMS:
    """RMS over the first ``n`` entries of the flat scaled error only: a seminorm.

    The continuous adjoint's seminorm (Kidger, Chen & Lyons, ICML 2021) leaves the
    parameter-gradient channels out of the error test: they never feed back into the
    dynamics, so their error needs no control, and the steps are chosen by ``y`` and
    ``dL/dy`` alone.
    """

    def __init__(self, n: int) -> None:
        self.n = n

    def __call__(self, scaled: torch.Tensor) -> torch.Tensor:
        return rms(scaled[: self.n])

    def __repr__(self) -> str:
        return f"LeadingRMS({self.n})"


def safe_error_ratio(
    error: torch.Tensor, y0: torch.Tensor, y1: torch.Tensor, rtol: float, atol: float
) -> float:
    """:func:`error_ratio` computed without overflow (two passes more, so kept off the
    common path: the loop calls it only when the plain ratio came out infinite)."""
    with torch.no_grad():
        return rms(error / _error_scale(y0, y1, rtol, atol)).item()


def rms(x: torch.Tensor) -> torch.Tensor:
    """``sqrt(mean(x**2))`` that neither overflows nor underflows: ``x`` is divided by
    ``max |x|`` before it is squared (a zero ``x`` gives 0; a non-finite one NaN or inf)."""
    peak = x.abs().amax()
    unit = torch.where(peak > 0, peak, torch.ones_like(peak))
    return peak * (x / unit).square().mean().sqrt()


def _rms_scaled(x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return rms(x / scale)


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
    Returns a positive magnitude. The norms are scale-safe (:func:`rms`), so states
    of 1e300 or derivatives of 1e12 in float32 neither overflow nor give a zero step;
    what the heuristic cannot size (a non-finite trial) falls back to a small step
    that the controller then adapts.
    """
    with torch.no_grad():
        scale = y0.abs().mul(rtol).add_(atol)
        d0, d1 = torch.stack([_rms_scaled(y0, scale), _rms_scaled(f0, scale)]).tolist()
        h0 = 0.01 * d0 / d1 if d0 >= 1e-5 and d1 >= 1e-5 else 1e-6
        # Never a zero (or tiny) step: 0.01 d0 / d1 underflows where f0 dwarfs y0.
        floor = 1e-12 * span if math.isfinite(span) else 0.0
        h0 = min(max(h0, floor), span)
        f1 = func(t0 + direction * h0, y0.add(f0, alpha=direction * h0))
        d2 = _rms_scaled(f1 - f0, scale).item() / h0
    if not math.isfinite(d2) or not math.isfinite(d1):
        return h0
    if max(d1, d2) <= 1e-15:
        h1 = max(1e-6, h0 * 1e-3)
    else:
        h1 = (0.01 / max(d1, d2)) ** (1.0 / (error_order + 1))
    return max(min(100.0 * h0, h1), floor)
