"""The options of the latent ODE reference's protocol (Rubanova et al. 2019): Adamax, a
per-step exponential decay with a floor, sampled-z0 scoring, normalisation over every
trajectory, and an encoder that evaluates its dynamics once per gap."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from test_sequence_fit import CONFIG, N_TRAJ, _sines, run_cli

import physode
from physode.datasets import read_trajectories
from physode.models import LatentODE
from physode.training import load_config
from physode.training.runner import make_optimizer, make_schedule

F64 = torch.float64


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("protocol")
    _sines(folder / "sines.h5")
    return folder


def _config(folder: Path, extra: str) -> Path:
    path = folder / f"fit{abs(hash(extra))}.yaml"
    path.write_text(CONFIG + extra)
    return path


def _fit(folder: Path, name: str, *sets: str) -> Path:
    """``physode fit`` of the sines config with ``--set`` overrides; the run directory."""
    run = folder / name
    args = [a for key in sets for a in ("--set", key)]
    result = run_cli("fit", _config(folder, ""), "-o", run, "--quiet", *args)
    assert result.exit_code == 0, result.output
    return run


def test_adamax_with_a_per_step_decay_to_a_floor(folder):
    path = _config(folder, "")
    config = load_config(
        path,
        overrides=[
            "train.optimizer=adamax",
            "train.schedule={name: exponential, gamma: 0.5, every: step, floor: 0.003}",
        ],
    )
    param = torch.nn.Parameter(torch.zeros(2))
    optimizer = make_optimizer(config, [param])
    assert isinstance(optimizer, torch.optim.Adamax)
    schedule = make_schedule(config, optimizer)
    rates = []
    for _ in range(5):
        param.grad = torch.ones(2)
        optimizer.step()
        schedule.step()
        rates.append(optimizer.param_groups[0]["lr"])
    # lr 0.02 halved a step, never below 0.003.
    assert rates == pytest.approx([0.01, 0.005, 0.003, 0.003, 0.003])


def test_the_fit_advances_a_per_step_schedule_every_batch(folder):
    # 16 training trajectories in batches of 8: two optimiser steps an epoch.
    run = _fit(
        folder,
        "perstep",
        "train.epochs=2",
        "train.optimizer=adamax",
        "train.schedule={name: exponential, gamma: 0.9, every: step, floor: 0.0}",
    )
    with open(run / "metrics.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    n_train = int(0.8 * N_TRAJ)
    steps = math.ceil(n_train / 8)
    assert [float(r["lr"]) for r in rows] == pytest.approx(
        [0.02 * 0.9**steps, 0.02 * 0.9 ** (2 * steps)]
    )


def test_a_floor_above_the_rate_is_refused(folder):
    path = _config(folder, "")
    with pytest.raises(Exception, match="floor"):
        load_config(path, overrides=["train.schedule={name: exponential, gamma: 0.9, floor: 1.0}"])


def test_metrics_report_both_scorings_and_normalise_over_every_trajectory(folder):
    run = _fit(
        folder, "scored", "train.epochs=2", "task.normalize_over=all", "task.score_samples=4"
    )
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["test_mse"] == metrics["test_mse_mean"]
    assert metrics["score_samples"] == 4
    # Sampled z0 add the posterior's spread to the error: a different number.
    assert metrics["test_mse_sampled"] != pytest.approx(metrics["test_mse_mean"], rel=1e-6)
    norm = json.loads((run / "normalization.json").read_text())
    state = np.asarray(read_trajectories(folder / "sines.h5").state, dtype=np.float64)
    np.testing.assert_allclose(norm["minimum"], state.min(axis=(0, 1)), rtol=1e-6)
    np.testing.assert_allclose(norm["scale"], state.max(axis=(0, 1)), rtol=1e-6)
    assert "every trajectory" in norm["formula"]
    # The default: the training trajectories only (the first 80 %).
    train = state[: int(0.8 * N_TRAJ)]
    run2 = _fit(folder, "train_units", "train.epochs=1")
    norm2 = json.loads((run2 / "normalization.json").read_text())
    np.testing.assert_allclose(norm2["minimum"], train.min(axis=(0, 1)), rtol=1e-6)


def _model(**kwargs) -> LatentODE:
    torch.manual_seed(0)
    return LatentODE(
        data_dim=2, latent_dim=3, hidden_dim=5, dynamics_hidden=[8], z0_hidden=[8], **kwargs
    ).double()


def test_sample_predict_decodes_draws_of_the_posterior():
    model = _model()
    t = torch.linspace(0.0, 0.99, 100, dtype=F64)
    values = torch.randn(4, 100, 2, dtype=F64)
    mask = torch.ones_like(values)
    draws = model.sample_predict(t, values, mask, 5)
    assert draws.shape == (5, 4, 100, 2)
    assert (draws[0] - draws[1]).abs().max() > 1e-6  # different z0
    # With the posterior's std set to zero every draw is the posterior mean's prediction.
    encode = model._encode
    model._encode = lambda *a: (encode(*a)[0], 0.0 * encode(*a)[1])
    torch.testing.assert_close(
        model.sample_predict(t, values, mask, 3),
        model.predict(t, values, mask).expand(3, -1, -1, -1),
    )


def test_the_encoder_evaluates_its_dynamics_once_per_gap():
    model = _model()
    calls = []
    encoder = model.encoder.dynamics
    encoder.register_forward_hook(lambda *_: calls.append(1))
    t = torch.linspace(0.0, 0.99, 100, dtype=F64)  # span / 50 = 0.0198 > each 0.01 gap
    values = torch.randn(3, 100, 2, dtype=F64)
    mask = torch.ones_like(values)
    model.predict(t, values, mask)
    assert len(calls) == 99  # the reference's count (the solver loop took 198)
    # Every other point observed: gaps of 0.02 > 0.0198 take two Euler steps each.
    calls.clear()
    mask[:, 1::2] = 0.0
    model.predict(t, values, mask)
    assert len(calls) == 2 * 49  # from t = 0.98 back to 0, observed every 0.02


def test_the_encoders_euler_steps_are_the_solvers():
    # Where each gap is one step, the encoder's Euler steps are physode's euler exactly.
    func = torch.nn.Linear(3, 3).double()
    y0 = torch.randn(2, 3, dtype=F64)
    t = [0.0, 0.1, 0.2, 0.3]

    def field(tt, y):
        return torch.tanh(func(y))

    from physode.models.latent import _euler

    ours = _euler(field, y0, t, 0.1)
    theirs = physode.odeint(field, y0, t, method="euler", step_size=0.1)
    torch.testing.assert_close(ours, theirs, rtol=1e-14, atol=1e-14)


def test_the_reference_gru_cell_carries_a_std_that_the_ode_leaves_alone():
    model = _model(encoder_cell="reference")
    core = model.encoder
    assert core.state_dim == 2 * 5 and model.to_z0.net[0].in_features == 10
    h = torch.randn(3, 10, dtype=F64)
    moved = core.evolve(h, [0.0, 0.05], 0.5)[-1]
    torch.testing.assert_close(moved[:, 5:], h[:, 5:], rtol=0, atol=0)  # the std: unchanged
    assert (moved[:, :5] - h[:, :5]).abs().max() > 1e-6  # the mean moves
    x = torch.randn(3, 4, dtype=F64)
    new = core.cell(x, h.abs())
    assert new.shape == (3, 10) and (new[:, 5:] >= 0).all()
    # Its weights start from N(0, 0.1), zero biases (the reference's initialisation).
    first = core.cell.update_gate[0]
    assert abs(first.weight.std().item() - 0.1) < 0.02 and first.bias.abs().max() == 0
    # It trains: a finite loss with gradients in every parameter of the cell.
    t = torch.linspace(0.0, 0.99, 100, dtype=F64)
    values = torch.randn(2, 100, 2, dtype=F64)
    loss, _ = model.loss(t, values, torch.ones_like(values), n_samples=2)
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in core.cell.parameters())


def test_encoder_cell_is_a_latent_ode_key(folder):
    path = _config(folder, "")
    config = load_config(path, overrides=["model.latent.encoder_cell=reference"])
    assert config.model.latent.encoder_cell == "reference"
    with pytest.raises(Exception, match="encoder_cell"):
        load_config(
            path,
            overrides=["model.latent={kind: gru, hidden_dim: 8, encoder_cell: reference}"],
        )
    with pytest.raises(Exception, match="encoder_cell"):
        load_config(path, overrides=["model.latent.encoder_cell=lstm"])


def test_the_reference_initialisation_draws_every_linear_layer():
    # N(0, 0.1) weights and zero biases in every linear layer (the ODEs, the map to q(z0),
    # the decoder); torch's defaults otherwise (their biases are not zero).
    torch.manual_seed(0)
    model = LatentODE(3, 4, 6, dynamics_hidden=(300, 300), decoder_hidden=(200,), init="reference")
    layers = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert len(layers) >= 8
    for layer in layers:
        assert layer.bias.abs().max() == 0
        if layer.weight.numel() >= 600:
            assert abs(layer.weight.std().item() - 0.1) < 0.01
    default = LatentODE(3, 4, 6, dynamics_hidden=(300, 300))
    assert all(m.bias.abs().max() > 0 for m in default.modules() if isinstance(m, torch.nn.Linear))
    assert model.encoder.cell.bias_ih.abs().max() > 0  # the GRU cell keeps its own
    with pytest.raises(ValueError, match="init"):
        LatentODE(3, 4, 6, init="xavier")


def test_init_is_a_latent_ode_key(folder):
    path = _config(folder, "")
    config = load_config(path, overrides=["model.latent.init=reference"])
    assert config.model.latent.init == "reference"
    assert load_config(path).model.latent.init == "torch"
    with pytest.raises(Exception, match="init"):
        load_config(path, overrides=["model.latent={kind: gru, hidden_dim: 8, init: reference}"])
