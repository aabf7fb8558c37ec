"""The irregular-sampling protocol of Rubanova et al. (2019) for regularly sampled
trajectories (the MuJoCo hopper): normalisation, train/test split, and batches
with observation masks for the interpolation and extrapolation tasks.

A batch is a dict of tensors:

- ``times`` ``(W,)``: the window's times relative to its first point
  (``0, 0.005, ..., 0.495`` for the hopper's 100-point windows);
- ``values`` ``(B, W, D)``: every value of the window (all of them known);
- ``encoder_mask`` ``(B, W, D)`` bool: what the model may read;
- ``target_mask`` ``(B, W, D)`` bool: where predictions are scored;
- ``indices`` ``(B,)``: the trajectories the rows come from; ``starts`` ``(B,)``:
  where their windows start.

The models of :mod:`physode.models.latent` take ``times, values, encoder_mask``
and are scored on ``target_mask``; unobserved values are never read (the
models multiply the values by the mask first).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

Array = np.ndarray | torch.Tensor

#: The observed fractions of the reference's interpolation experiments.
OBSERVED_FRACTIONS = (0.1, 0.2, 0.5)
#: The reference's window length for interpolation (100 points of 0.005 s).
WINDOW = 100


# --------------------------------------------------------------------------- normalisation


@dataclass(frozen=True)
class MinMaxStats:
    """Per-feature statistics of :func:`normalize_minmax`, shape ``(D,)`` each.

    ``scale`` is the training maximum with zeros replaced by one.
    """

    minimum: np.ndarray
    scale: np.ndarray

    def apply(self, state: Array) -> Array:
        """``(x - minimum) / scale`` over the last axis; same type as ``state``."""
        return apply_normalization(state, self)

    def invert(self, scaled: Array) -> Array:
        """``scaled * scale + minimum``: back to the original units."""
        lo, sc = _like(self.minimum, scaled), _like(self.scale, scaled)
        return scaled * sc + lo


def _like(a: np.ndarray, x: Array) -> Array:
    if isinstance(x, torch.Tensor):
        return torch.as_tensor(a, dtype=x.dtype, device=x.device)
    return a.astype(np.result_type(x.dtype, np.float32), copy=False)


def normalize_minmax(train_state: Array) -> tuple[Array, MinMaxStats]:
    """Scale per feature as the reference does: ``(x - min) / max``.

    ``min`` and ``max`` are taken per feature (last axis) over every trajectory
    and time of ``train_state``. Note the divisor is the maximum, not the range
    ``max - min``: the result lies in ``[0, (max - min) / max]``, which is not
    ``[0, 1]`` in general (and is negative-scaled for a negative maximum). A
    feature whose maximum is exactly 0 is divided by 1 instead, the reference's
    guard against division by zero.

    Args:
        train_state: ``(..., D)``, e.g. ``(N, T, D)``; numpy array or tensor.

    Returns:
        ``(scaled, stats)``: ``scaled`` has ``train_state``'s shape and type;
        apply ``stats`` to other data (the test set) with
        :func:`apply_normalization`.

    Raises:
        ValueError: for empty or non-finite data.
    """
    x = train_state.detach().cpu().numpy() if isinstance(train_state, torch.Tensor) else train_state
    x = np.asarray(x)
    if x.ndim < 1 or x.size == 0:
        raise ValueError(f"train_state: must be a non-empty (..., D) array, got shape {x.shape}")
    flat = x.reshape(-1, x.shape[-1]).astype(np.float64)
    if not np.isfinite(flat).all():
        raise ValueError("train_state: contains NaN or inf")
    minimum = flat.min(axis=0)
    scale = flat.max(axis=0)
    scale[scale == 0.0] = 1.0
    stats = MinMaxStats(minimum=minimum, scale=scale)
    return apply_normalization(train_state, stats), stats


def apply_normalization(state: Array, stats: MinMaxStats) -> Array:
    """``(state - stats.minimum) / stats.scale`` over the last axis, in ``state``'s type.

    Args:
        state: ``(..., D)`` numpy array or tensor.
        stats: from :func:`normalize_minmax` on the training data.
    """
    if state.shape[-1] != stats.minimum.shape[0]:
        raise ValueError(
            f"state: last dimension {state.shape[-1]} does not match the "
            f"{stats.minimum.shape[0]} features of the statistics"
        )
    return (state - _like(stats.minimum, state)) / _like(stats.scale, state)


# --------------------------------------------------------------------------- split


def _generator(generator: torch.Generator | int | None) -> torch.Generator:
    if isinstance(generator, torch.Generator):
        return generator
    g = torch.Generator()
    if generator is None:
        g.seed()
    elif isinstance(generator, (int, np.integer)) and not isinstance(generator, bool):
        g.manual_seed(int(generator))
    else:
        raise ValueError(
            f"generator: expected a torch.Generator, an int seed or None, got {generator!r}"
        )
    return g


def train_test_split(
    n: int, fraction: float = 0.8, seed: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Indices of an ``fraction`` / ``1 - fraction`` split of ``n`` trajectories.

    With ``seed=None`` the split is the reference's: the first
    ``int(n * fraction)`` trajectories train, the rest test (the hopper's
    trajectories are independent draws, so no shuffling is needed). With a
    seed, the indices are a random permutation (sorted within each part).

    Returns:
        ``(train, test)`` int64 arrays, disjoint, together ``0..n-1``.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 2:
        raise ValueError(f"n: must be an integer >= 2, got {n!r}")
    if not 0.0 < float(fraction) < 1.0:
        raise ValueError(f"fraction: must lie strictly between 0 and 1, got {fraction!r}")
    n_train = int(n * fraction)
    if not 0 < n_train < n:
        raise ValueError(f"fraction: {fraction} of {n} trajectories leaves one part empty")
    if seed is None:
        order = np.arange(n, dtype=np.int64)
    else:
        order = np.random.default_rng(seed).permutation(n).astype(np.int64)
    return np.sort(order[:n_train]), np.sort(order[n_train:])


# --------------------------------------------------------------------------- batches


def _as_state(state: Array) -> torch.Tensor:
    x = torch.as_tensor(state)
    if x.ndim != 3:
        raise ValueError(f"state: must be (N, T, D), got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        x = x.to(torch.get_default_dtype())
    return x


def _relative_times(times: Array, n_times: int, start: int, length: int) -> torch.Tensor:
    source = torch.as_tensor(times)
    eps = torch.finfo(source.dtype).eps if source.is_floating_point() else 0.0
    t = source.to(device="cpu", dtype=torch.float64)
    if t.shape != (n_times,):
        raise ValueError(
            f"times: must have shape ({n_times},) like state's axis 1, got {tuple(t.shape)}"
        )
    if n_times > 1:
        steps = t.diff()
        if not bool((steps > 0).all()):
            raise ValueError("times: must be strictly increasing")
        # Windows at different starts share one relative time grid only on an even grid.
        # The tolerance admits the rounding of times stored in float32.
        slack = 16 * eps * float(t.abs().max()) + 1e-9 * float(steps[0])
        if not bool(((steps - steps[0]).abs() <= slack).all()):
            raise ValueError("times: must be evenly spaced (windows share one time grid)")
    return t[start : start + length] - t[start]


def _fraction(observed_fraction: float) -> float:
    f = float(observed_fraction)
    if not 0.0 < f <= 1.0:
        raise ValueError(f"observed_fraction: must lie in (0, 1], got {observed_fraction!r}")
    return f


def _n_observed(fraction: float, n_points: int) -> int:
    # The reference keeps int(n * fraction) points; the epsilon keeps 0.7 * 10 at 7.
    return max(1, min(n_points, math.floor(fraction * n_points + 1e-9)))


def window_starts(
    n: int, n_times: int, window: int = WINDOW, generator: torch.Generator | int | None = None
) -> torch.Tensor:
    """Random window starts, uniform on ``0 .. n_times - window``: ``(n,)`` int64."""
    if isinstance(window, bool) or not isinstance(window, int) or not 1 <= window <= n_times:
        raise ValueError(f"window: must be an integer in 1..{n_times}, got {window!r}")
    return torch.randint(0, n_times - window + 1, (n,), generator=_generator(generator))


def _cut(state: torch.Tensor, starts: torch.Tensor, window: int) -> torch.Tensor:
    offsets = starts.to(torch.int64)[:, None] + torch.arange(window)
    rows = torch.arange(state.shape[0])[:, None]
    return state[rows, offsets]


def _check_starts(starts: Array, n: int, n_times: int, window: int) -> torch.Tensor:
    s = torch.as_tensor(starts, dtype=torch.int64).reshape(-1)
    if s.shape != (n,):
        raise ValueError(f"starts: need one start per trajectory ({n}), got {tuple(s.shape)}")
    if bool((s < 0).any()) or bool((s > n_times - window).any()):
        raise ValueError(f"starts: must lie in 0..{n_times - window} for windows of {window}")
    return s


def _observe_times(
    batch: int, n_points: int, n_obs: int, generator: torch.Generator
) -> torch.Tensor:
    """``(batch, n_points)`` bool with exactly ``n_obs`` True per row, uniformly placed."""
    keys = torch.rand(batch, n_points, generator=generator)
    chosen = keys.argsort(dim=1)[:, :n_obs]
    mask = torch.zeros(batch, n_points, dtype=torch.bool)
    mask.scatter_(1, chosen, True)
    return mask


def _batch_settings(
    x: torch.Tensor,
    window: int,
    observed_fraction: float,
    generator: torch.Generator | int | None,
    starts: Array | None,
) -> tuple[torch.Generator, float, torch.Tensor]:
    """The checked generator, observed fraction and window starts of a batch of ``x``.

    The starts are ``starts`` checked, or drawn from the generator when None.
    One helper for every task, so that each checks its arguments in the same
    order and draws the starts before its masks.
    """
    n, n_times, _ = x.shape
    g = _generator(generator)
    frac = _fraction(observed_fraction)
    if starts is None:
        return g, frac, window_starts(n, n_times, window, g)
    return g, frac, _check_starts(starts, n, n_times, window)


def interpolation_batch(
    state: Array,
    times: Array,
    *,
    window: int = WINDOW,
    observed_fraction: float = 0.5,
    generator: torch.Generator | int | None = None,
    starts: Array | None = None,
) -> dict[str, torch.Tensor]:
    """The reference's interpolation task on the trajectories ``state``.

    Each row is a window of ``window`` consecutive points of its trajectory
    (random start unless ``starts`` is given). The encoder sees exactly
    ``int(observed_fraction * window)`` of its time points, chosen at random per
    row, with all ``D`` features of a chosen point; predictions are scored on
    all ``window`` points.

    Args:
        state: ``(B, T, D)``, already normalised.
        times: ``(T,)`` evenly spaced sample times of ``state``.
        window: points per window (100 in the reference: ``times`` 0 to 0.495).
        observed_fraction: fraction of the window's time points the encoder
            sees; the reference reports 0.1, 0.2 and 0.5.
        generator: torch generator or int seed; the same seed gives the same batch.
        starts: ``(B,)`` window starts, to keep windows fixed across epochs
            (see :func:`window_starts`).

    Returns:
        The batch dict described in the module docstring (``values`` in
        ``state``'s dtype, ``times`` float64).
    """
    x = _as_state(state)
    n, n_times, d = x.shape
    g, frac, s = _batch_settings(x, window, observed_fraction, generator, starts)
    t = _relative_times(times, n_times, 0, window)
    observed = _observe_times(n, window, _n_observed(frac, window), g)
    return {
        "times": t,
        "values": _cut(x, s, window),
        "encoder_mask": observed[:, :, None].expand(n, window, d).clone(),
        "target_mask": torch.ones(n, window, d, dtype=torch.bool),
        "starts": s,
    }


def extrapolation_batch(
    state: Array,
    times: Array,
    *,
    window: int | None = None,
    observed_fraction: float = 1.0,
    generator: torch.Generator | int | None = None,
    starts: Array | None = None,
) -> dict[str, torch.Tensor]:
    """The extrapolation task: observe the first third of a window, predict the rest.

    The first ``window // 3`` points are the observed part; of them the encoder
    sees ``int(observed_fraction * (window // 3))`` time points at random (all
    of them by default). Predictions are scored on the remaining
    ``window - window // 3`` points only.

    Args:
        state: ``(B, T, D)``, already normalised.
        times: ``(T,)`` evenly spaced sample times of ``state``.
        window: points per window; None (default) takes whole trajectories.
        observed_fraction, generator, starts: as in :func:`interpolation_batch`.

    Returns:
        The batch dict described in the module docstring.
    """
    x = _as_state(state)
    n, n_times, d = x.shape
    window = n_times if window is None else window
    g, frac, s = _batch_settings(x, window, observed_fraction, generator, starts)
    n_first = window // 3
    if n_first < 1:
        raise ValueError(f"window: needs at least 3 points to observe a third, got {window}")
    t = _relative_times(times, n_times, 0, window)
    observed = torch.zeros(n, window, dtype=torch.bool)
    observed[:, :n_first] = _observe_times(n, n_first, _n_observed(frac, n_first), g)
    target = torch.zeros(n, window, d, dtype=torch.bool)
    target[:, n_first:] = True
    return {
        "times": t,
        "values": _cut(x, s, window),
        "encoder_mask": observed[:, :, None].expand(n, window, d).clone(),
        "target_mask": target,
        "starts": s,
    }


_TASKS = {"interpolation": interpolation_batch, "extrapolation": extrapolation_batch}


def iter_batches(
    state: Array,
    times: Array,
    *,
    batch_size: int = 50,
    task: str = "interpolation",
    window: int | None = WINDOW,
    observed_fraction: float = 0.5,
    starts: Array | None = None,
    shuffle: bool = True,
    drop_last: bool = False,
    generator: torch.Generator | int | None = None,
) -> Iterator[dict[str, torch.Tensor]]:
    """One epoch of batches of ``task`` over the trajectories ``state`` ``(N, T, D)``.

    Masks are drawn afresh for every batch (as the reference does); windows too,
    unless ``starts`` ``(N,)`` fixes them. Each dict also holds ``indices``
    ``(B,)``: the rows of ``state`` it comes from. ``window=None`` takes whole
    trajectories.
    """
    if task not in _TASKS:
        raise ValueError(f"task: must be one of {', '.join(_TASKS)}, got {task!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size: must be a positive integer, got {batch_size!r}")
    x = _as_state(state)
    n = x.shape[0]
    window = x.shape[1] if window is None else window
    s = None if starts is None else _check_starts(starts, n, x.shape[1], window)
    g = _generator(generator)
    order = torch.randperm(n, generator=g) if shuffle else torch.arange(n)
    for lo in range(0, n, batch_size):
        idx = order[lo : lo + batch_size]
        if drop_last and len(idx) < batch_size:
            break
        batch = _TASKS[task](
            x[idx],
            times,
            window=window,
            observed_fraction=observed_fraction,
            generator=g,
            starts=None if s is None else s[idx],
        )
        batch["indices"] = idx
        yield batch


class IrregularDataset(Dataset):
    """Trajectories with their windows fixed once, as the reference fixes them.

    ``dataset[i]`` is the ``(window, D)`` tensor of trajectory ``i``;
    :meth:`batches` yields batch dicts with fresh masks on every call.

    Args:
        state: ``(N, T, D)``, already normalised.
        times: ``(T,)`` evenly spaced.
        task: ``"interpolation"`` or ``"extrapolation"``.
        window: points per window (None: whole trajectories).
        observed_fraction: see :func:`interpolation_batch`.
        seed: seed of the window starts.
    """

    def __init__(
        self,
        state: Array,
        times: Array,
        *,
        task: str = "interpolation",
        window: int | None = WINDOW,
        observed_fraction: float = 0.5,
        seed: int = 0,
    ) -> None:
        if task not in _TASKS:
            raise ValueError(f"task: must be one of {', '.join(_TASKS)}, got {task!r}")
        self.state = _as_state(state)
        n, n_times, _ = self.state.shape
        self.task = task
        self.window = n_times if window is None else window
        self.observed_fraction = _fraction(observed_fraction)
        self.starts = window_starts(n, n_times, self.window, seed)
        self.times = _relative_times(times, n_times, 0, self.window)
        self._source_times = torch.as_tensor(times, dtype=torch.float64)

    def __len__(self) -> int:
        return int(self.state.shape[0])

    def __getitem__(self, i: int) -> torch.Tensor:
        s = int(self.starts[i])
        return self.state[i, s : s + self.window]

    def batches(
        self,
        batch_size: int = 50,
        *,
        shuffle: bool = True,
        drop_last: bool = False,
        generator: torch.Generator | int | None = None,
    ) -> Iterator[dict[str, torch.Tensor]]:
        """One epoch of batch dicts (see :func:`iter_batches`) over the fixed windows."""
        return iter_batches(
            self.state,
            self._source_times,
            batch_size=batch_size,
            task=self.task,
            window=self.window,
            observed_fraction=self.observed_fraction,
            starts=self.starts,
            shuffle=shuffle,
            drop_last=drop_last,
            generator=generator,
        )
