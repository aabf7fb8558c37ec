"""A starting estimate of initial states that the data does not fully observe.

With ``train.learn_initial_state`` the state at the start of the fit window is
learned; where the data does not observe it, the optimiser starts from the
estimate made here, from the fit window's data only:

- a velocity of a second-order model (state ``[q, v]``) whose position is
  observed: the slope at the window's start of the polynomial (degree up to 2)
  through the position's first observed samples;
- any other unobserved value: the variable's first observed value in that
  trajectory; else the mean of its observed starting values over the other
  trajectories; else the mean of all its observed values; else 0.
"""

from __future__ import annotations

import numpy as np

#: Samples of a position used for the finite-difference slope (a cubic through four).
SLOPE_SAMPLES = 4


def _slope(t: np.ndarray, q: np.ndarray) -> float:
    """d q / d t at ``t[0]`` (= the window's start, 0 after shifting) of the interpolating
    polynomial through the (up to three) samples."""
    degree = min(len(t) - 1, 3)
    return float(np.polynomial.polynomial.polyfit(t, q, degree)[1])


def estimate_initial_state(
    time: np.ndarray, state: np.ndarray, mask: np.ndarray, *, second_order: bool
) -> np.ndarray:
    """Initial states ``(N, D)``: the data where ``mask[:, 0]`` observes it, an estimate elsewhere.

    Args:
        time: the fit window's times ``(T,)``, ``time[0]`` its start.
        state: ``(N, T, D)`` (values where ``mask`` is False are ignored).
        mask: ``(N, T, D)`` bool, True where observed.
        second_order: the state is ``[positions (D/2), velocities (D/2)]``.
    """
    n, _, d = state.shape
    out = np.where(mask[:, 0], state[:, 0], np.nan)
    shifted = np.asarray(time, dtype=np.float64) - float(time[0])
    if second_order and d % 2 == 0:
        half = d // 2
        for i in range(n):
            for k in range(half):
                if mask[i, 0, half + k]:
                    continue
                seen = np.flatnonzero(mask[i, :, k])[:SLOPE_SAMPLES]
                if len(seen) >= 2:
                    out[i, half + k] = _slope(shifted[seen], state[i, seen, k])
    for i in range(n):
        for k in np.flatnonzero(np.isnan(out[i])):
            seen = np.flatnonzero(mask[i, :, k])
            if len(seen):
                out[i, k] = state[i, seen[0], k]
    for k in range(d):
        missing = np.isnan(out[:, k])
        if not missing.any():
            continue
        starts = mask[:, 0, k]
        if starts.any():
            fill = state[starts, 0, k].mean()
        elif mask[..., k].any():
            fill = state[..., k][mask[..., k]].mean()
        else:
            fill = 0.0
        out[missing, k] = fill
    return out
