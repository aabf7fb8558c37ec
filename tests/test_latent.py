"""Latent ODE, ODE-RNN and GRU baseline; the irregular-sampling protocol."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from physode.datasets.irregular import (
    IrregularDataset,
    apply_normalization,
    extrapolation_batch,
    interpolation_batch,
    iter_batches,
    normalize_minmax,
    train_test_split,
    window_starts,
)
from physode.models.latent import ODERNN, SEQUENCE_MODELS, GRUBaseline, LatentODE, kl_annealing

TINY = {"dynamics_hidden": (8,), "encoder_dynamics_hidden": (8,), "z0_hidden": (8,)}


def _state(n: int = 6, t: int = 200, d: int = 3, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, t, d)).astype(np.float32)


def _hopper_times(t: int = 200) -> np.ndarray:
    return np.arange(t) * 0.005


# --------------------------------------------------------------------------- protocol


def test_normalize_minmax_hand_case():
    train = np.array([[[1.0, -2.0, 0.0], [3.0, -4.0, 0.0]], [[5.0, -1.0, 0.0], [2.0, -3.0, 0.0]]])
    scaled, stats = normalize_minmax(train)
    # (x - min) / max per feature; a feature whose max is 0 is divided by 1.
    np.testing.assert_array_equal(stats.minimum, [1.0, -4.0, 0.0])
    np.testing.assert_array_equal(stats.scale, [5.0, -1.0, 1.0])
    np.testing.assert_allclose(scaled[0, 1], [(3 - 1) / 5, (-4 + 4) / -1, 0.0])
    np.testing.assert_allclose(scaled[1, 0], [(5 - 1) / 5, (-1 + 4) / -1, 0.0])
    test = np.array([[[6.0, 0.0, 2.0]]])
    np.testing.assert_allclose(apply_normalization(test, stats), [[[1.0, -4.0, 2.0]]])
    np.testing.assert_allclose(stats.invert(scaled), train)
    as_tensor = apply_normalization(torch.tensor(test, dtype=torch.float32), stats)
    assert as_tensor.dtype == torch.float32
    np.testing.assert_allclose(as_tensor.numpy(), [[[1.0, -4.0, 2.0]]])


def test_train_test_split():
    train, test = train_test_split(10)
    np.testing.assert_array_equal(train, np.arange(8))
    np.testing.assert_array_equal(test, [8, 9])
    a = train_test_split(50, 0.8, seed=3)
    b = train_test_split(50, 0.8, seed=3)
    np.testing.assert_array_equal(a[0], b[0])
    assert len(a[0]) == 40 and len(a[1]) == 10
    assert sorted(np.concatenate(a).tolist()) == list(range(50))
    with pytest.raises(ValueError, match="fraction"):
        train_test_split(10, 1.5)


@pytest.mark.parametrize("fraction,expected", [(0.1, 10), (0.2, 20), (0.5, 50)])
def test_interpolation_batch(fraction, expected):
    state = _state()
    batch = interpolation_batch(state, _hopper_times(), observed_fraction=fraction, generator=7)
    times = batch["times"]
    assert times.shape == (100,)
    assert times[0] == 0 and times[-1] == pytest.approx(0.495)
    np.testing.assert_allclose(times.diff().numpy(), 0.005, rtol=1e-9)
    values, enc, target = batch["values"], batch["encoder_mask"], batch["target_mask"]
    assert values.shape == enc.shape == target.shape == (6, 100, 3)
    assert enc.dtype == torch.bool and bool(target.all())
    # A chosen time point is observed in all its features, and exactly `expected` are chosen.
    assert bool((enc.all(-1) == enc.any(-1)).all())
    assert enc.any(-1).sum(1).tolist() == [expected] * 6
    for i, s in enumerate(batch["starts"].tolist()):
        assert 0 <= s <= 100
        np.testing.assert_array_equal(values[i].numpy(), state[i, s : s + 100])
    again = interpolation_batch(state, _hopper_times(), observed_fraction=fraction, generator=7)
    assert torch.equal(again["encoder_mask"], enc) and torch.equal(again["starts"], batch["starts"])
    other = interpolation_batch(state, _hopper_times(), observed_fraction=fraction, generator=8)
    assert not torch.equal(other["encoder_mask"], enc)


def test_interpolation_batch_checks():
    with pytest.raises(ValueError, match="observed_fraction"):
        interpolation_batch(_state(), _hopper_times(), observed_fraction=0.0)
    with pytest.raises(ValueError, match="evenly spaced"):
        interpolation_batch(_state(t=5), np.array([0.0, 1.0, 2.0, 4.0, 5.0]), window=3)
    with pytest.raises(ValueError, match="window"):
        interpolation_batch(_state(t=50), _hopper_times(50))


def test_extrapolation_batch():
    state = _state(t=30)
    batch = extrapolation_batch(state, _hopper_times(30), generator=0)
    enc, target = batch["encoder_mask"], batch["target_mask"]
    assert batch["times"].shape == (30,) and batch["starts"].tolist() == [0] * 6
    assert bool(enc[:, :10].all()) and not bool(enc[:, 10:].any())
    assert not bool(target[:, :10].any()) and bool(target[:, 10:].all())
    half = extrapolation_batch(state, _hopper_times(30), observed_fraction=0.5, generator=0)
    assert half["encoder_mask"].any(-1).sum(1).tolist() == [5] * 6


def test_iter_batches_and_dataset():
    state = _state(n=7, t=120)
    seen = []
    for batch in iter_batches(state, _hopper_times(120), batch_size=3, generator=1):
        assert batch["values"].shape[1:] == (100, 3)
        seen += batch["indices"].tolist()
    assert sorted(seen) == list(range(7))
    data = IrregularDataset(state, _hopper_times(120), observed_fraction=0.2, seed=4)
    assert len(data) == 7 and data[2].shape == (100, 3)
    assert torch.equal(data.starts, window_starts(7, 120, 100, 4))
    for batch in data.batches(4, generator=0):
        # Windows stay fixed from epoch to epoch; masks are redrawn.
        assert torch.equal(batch["starts"], data.starts[batch["indices"]])
        assert batch["encoder_mask"].any(-1).sum(1).tolist() == [20] * len(batch["indices"])


# --------------------------------------------------------------------------- models


def _batch(b: int = 3, t: int = 12, d: int = 2, seed: int = 0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    times = torch.arange(t, dtype=dtype) * 0.05
    values = torch.randn(b, t, d, generator=g, dtype=dtype)
    mask = (torch.rand(b, t, 1, generator=g) < 0.5).expand(b, t, d).clone()
    mask[:, 3] = True
    return times, values, mask


def _models(d: int = 2):
    return [
        LatentODE(d, 3, 5, **TINY),
        ODERNN(d, 5, dynamics_hidden=(8,)),
        GRUBaseline(d, 5),
    ]


def test_latent_shapes():
    torch.manual_seed(0)
    times, values, mask = _batch()
    model = LatentODE(2, 3, 5, **TINY)
    mean, std = model.encode(times, values, mask)
    assert mean.shape == std.shape == (3, 3) and bool((std > 0).all())
    t_pred = torch.linspace(0.1, 0.9, 7)
    assert model(times, values, mask, t_pred, n_samples=4).shape == (4, 3, 7, 2)
    assert model.predict(times, values, mask).shape == (3, 12, 2)
    loss, info = model.loss(times, values, mask.float(), n_samples=2)
    assert loss.ndim == 0 and set(info) >= {"mse", "likelihood", "kl"}
    with pytest.raises(ValueError, match="times_pred"):
        model(times, values, mask, torch.tensor([-1.0, 0.0]))


@pytest.mark.parametrize("index", [0, 1, 2])
def test_models_read_only_observed_values(index):
    torch.manual_seed(0)
    model = _models()[index]
    times, values, mask = _batch()
    pred = model.predict(times, values, mask)
    assert pred.shape == (3, 12, 2)
    hidden = values.masked_fill(mask, 0.0) + 100.0 * (~mask)
    torch.testing.assert_close(model.predict(times, values.where(mask, hidden), mask), pred)
    loss, info = model.loss(times, values, torch.ones_like(mask), obs_times_mask=mask)
    assert torch.isfinite(loss) and info["mse"] >= 0


def test_obs_times_mask_shapes():
    torch.manual_seed(0)
    model = LatentODE(2, 3, 5, **TINY)
    times, values, _ = _batch()
    target = torch.zeros(3, 12, 2)
    target[:, 4:] = 1.0
    first = torch.arange(12) < 4
    torch.manual_seed(1)
    by_time, _ = model.loss(times, values, target, obs_times_mask=first)
    torch.manual_seed(1)
    full = first[None, :, None].expand(3, 12, 2)
    by_entry, _ = model.loss(times, values, target, obs_times_mask=full)
    torch.testing.assert_close(by_time, by_entry)
    with pytest.raises(ValueError, match="obs_times_mask"):
        model.loss(times, values, target, obs_times_mask=torch.ones(5))


def _damped_sinusoids(b: int = 8, t: int = 15):
    g = torch.Generator().manual_seed(0)
    times = torch.linspace(0.0, 2.0, t)
    freq = 3.0 + 2.0 * torch.rand(b, 1, generator=g)
    phase = 6.28 * torch.rand(b, 1, generator=g)
    decay = torch.exp(-0.3 * times)
    values = torch.stack(
        [decay * torch.sin(freq * times + phase), decay * torch.cos(freq * times + phase)], -1
    )
    return times, values, torch.ones_like(values)


@pytest.mark.parametrize("index", [0, 1, 2])
def test_tiny_training_lowers_loss(index):
    torch.manual_seed(0)
    times, values, mask = _damped_sinusoids()
    model = [
        LatentODE(2, 4, 12, dynamics_hidden=(24,), encoder_dynamics_hidden=(12,), obs_std=0.1),
        ODERNN(2, 12, dynamics_hidden=(12,), obs_std=0.1),
        GRUBaseline(2, 12, obs_std=0.1),
    ][index]
    opt = torch.optim.Adam(model.parameters(), lr=2e-2)
    losses, mses = [], []
    for _ in range(30):
        opt.zero_grad()
        loss, info = model.loss(times, values, mask, n_samples=2)
        loss.backward()
        opt.step()
        losses.append(loss.item())
        mses.append(info["mse"].item())
    assert np.mean(losses[-5:]) < 0.75 * losses[0]
    assert np.mean(mses[-5:]) < 0.75 * mses[0]


@pytest.mark.parametrize(
    "method,options", [("rk4", {"step_size": 0.05}), ("dopri5", {"rtol": 1e-10, "atol": 1e-10})]
)
def test_latent_gradients_aca_match_direct(method, options):
    def gradients(grad: str) -> tuple[torch.Tensor, torch.Tensor]:
        torch.manual_seed(0)
        # The encoder ODE uses the same gradient method (by default a fixed-step
        # encoder uses direct backprop), and with dopri5 the same adaptive solver.
        encoder = None if method == "dopri5" else "euler"
        model = LatentODE(
            2,
            3,
            4,
            method=method,
            grad=grad,
            encoder_grad=grad,
            encoder_method=encoder,
            **TINY,
            **options,
        ).double()
        times, values, mask = _batch(t=8, dtype=torch.float64)
        torch.manual_seed(1)
        loss, _ = model.loss(times, values, mask, n_samples=2)
        grads = torch.autograd.grad(loss, list(model.parameters()))
        return loss.detach(), torch.cat([g.flatten() for g in grads])

    loss_aca, g_aca = gradients("aca")
    loss_direct, g_direct = gradients("direct")
    torch.testing.assert_close(loss_aca, loss_direct, rtol=1e-12, atol=0)
    assert g_direct.norm() > 0
    assert ((g_aca - g_direct).norm() / g_direct.norm()).item() < 1e-6


@pytest.mark.parametrize("grad,method", [("adjoint", "dopri5"), ("mali", "alf")])
def test_other_gradient_methods(grad, method):
    torch.manual_seed(0)
    model = LatentODE(2, 3, 4, method=method, grad=grad, **TINY)
    times, values, mask = _batch(t=6)
    loss, _ = model.loss(times, values, mask, n_samples=2)
    loss.backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and bool(torch.isfinite(g).all()) for g in grads)
    assert model.dynamics.neural.net[0].weight.grad.abs().sum() > 0


def test_bad_arguments():
    with pytest.raises(ValueError, match="data_dim"):
        LatentODE(0)
    with pytest.raises(ValueError, match="obs_std"):
        ODERNN(2, obs_std=0.0)
    model = GRUBaseline(2, 4)
    times, values, mask = _batch()
    with pytest.raises(ValueError, match="mask"):
        model.loss(times, values, mask[:, :5])
    with pytest.raises(ValueError, match="times"):
        model.loss(times.flip(0), values, mask)
    with pytest.raises(ValueError, match="times_pred"):
        model.predict(times, values, mask, times_pred=times[:3])
    with pytest.raises(ValueError, match="kl_weight"):
        LatentODE(2, 3, 5, **TINY).loss(times, values, mask, kl_weight=-1.0)


def test_kl_annealing_and_registry():
    assert kl_annealing(0) == 0.0 and kl_annealing(9) == 0.0
    assert kl_annealing(10) == 0.0
    assert kl_annealing(11) == pytest.approx(0.01)
    assert kl_annealing(5000) == pytest.approx(1.0)
    assert set(SEQUENCE_MODELS.values()) == {LatentODE, ODERNN, GRUBaseline}
