"""The starting estimate of initial states the data does not observe."""

from __future__ import annotations

import numpy as np

from physode.training.initial_state import estimate_initial_state


def test_velocities_of_a_second_order_state_from_its_positions():
    # q(t) = 1 + 2 t - t^2 + 0.5 t^3: a cubic through the first four samples is exact,
    # so the estimate is q'(0) = 2 to round-off, also from uneven times.
    t = np.array([0.0, 0.1, 0.25, 0.3, 0.5])
    q = 1 + 2 * t - t**2 + 0.5 * t**3
    state = np.stack([q, np.zeros_like(t)], axis=-1)[None]
    mask = np.zeros_like(state, dtype=bool)
    mask[..., 0] = True
    out = estimate_initial_state(t, state, mask, second_order=True)
    np.testing.assert_allclose(out, [[1.0, 2.0]], rtol=0, atol=1e-12)


def test_a_velocity_whose_position_starts_late_is_extrapolated_to_the_start():
    t = np.linspace(0.0, 1.0, 11)
    q = 3.0 * t
    state = np.stack([q, np.zeros_like(t)], axis=-1)[None]
    mask = np.zeros_like(state, dtype=bool)
    mask[0, 2:, 0] = True  # the position is first seen at t = 0.2
    out = estimate_initial_state(t, state, mask, second_order=True)
    np.testing.assert_allclose(out[0, 1], 3.0, atol=1e-12)
    np.testing.assert_allclose(out[0, 0], 0.6)  # its first observed value


def test_other_values_fall_back_in_order():
    t = np.linspace(0.0, 1.0, 5)
    state = np.arange(2 * 5 * 3, dtype=float).reshape(2, 5, 3)
    mask = np.ones_like(state, dtype=bool)
    mask[0, :2, 0] = False  # first seen at t[2]: that value
    mask[1, 0, 1] = False  # seen later in its trajectory: that value
    mask[0, :, 2] = False  # never in its trajectory: the mean of the others' starts
    out = estimate_initial_state(t, state, mask, second_order=False)
    assert out[0, 0] == state[0, 2, 0]
    assert out[1, 1] == state[1, 1, 1]
    assert out[0, 2] == state[1, 0, 2]
    never = np.ones_like(mask)
    never[..., 1] = False
    out = estimate_initial_state(t, state, never, second_order=False)
    assert (out[:, 1] == 0.0).all()  # never observed anywhere
