"""``physode fit`` with a sequence model (``model.latent``): the latent ODE and its
baselines on irregularly sampled windows, end to end through the real CLI."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr
from click.testing import CliRunner

from physode.cli.main import main
from physode.datasets import Trajectories, write_trajectories
from physode.training import load_config
from physode.training.evaluate import restore_run
from physode.training.sequence import score

# Sinusoids with random phases and frequencies, on the hopper's time grid: a
# stand-in for the hopper data that needs no MuJoCo.
N_TRAJ, N_TIMES, DIM = 20, 60, 3

CONFIG = """
data:
  path: sines.h5
model:
  latent:
    kind: latent_ode
    latent_dim: 4
    hidden_dim: 8
    dynamics_hidden: [16]
    z0_hidden: [16]
solver: {method: dopri5, grad: aca}
train: {epochs: 6, lr: 0.02, batch_size: 8, seed: 0, dtype: float32, device: cpu}
task: {window: 30, observed_fraction: 0.5, kl_warmup: 2, n_predictions: 3}
"""


def _sines(path: Path) -> None:
    rng = np.random.default_rng(0)
    t = np.arange(N_TIMES) * 0.005
    freq = rng.uniform(10.0, 20.0, size=(N_TRAJ, 1, DIM))
    phase = rng.uniform(0.0, 2 * np.pi, size=(N_TRAJ, 1, DIM))
    state = np.sin(freq * t[None, :, None] + phase) + 2.0
    data = Trajectories(
        time=t,
        state=state.astype(np.float32),
        variables=[f"x{i}" for i in range(DIM)],
        time_units="s",
        system="sines",
    )
    write_trajectories(path, data)


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("sequence")
    _sines(folder / "sines.h5")
    (folder / "fit.yaml").write_text(CONFIG)
    return folder


def run_cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def _rows(run: Path) -> list[dict]:
    with open(run / "metrics.csv", newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def fitted(folder):
    run = folder / "run"
    result = run_cli("fit", folder / "fit.yaml", "-o", run, "--quiet")
    assert result.exit_code == 0, result.output
    return run, result


def test_fit_writes_the_run_directory_and_lowers_the_loss(fitted):
    run, result = fitted
    assert f"run directory: {run}" in result.output
    for name in ("config.yaml", "metrics.csv", "metrics.json", "normalization.json"):
        assert (run / name).is_file(), name
    rows = _rows(run)
    assert [int(r["epoch"]) for r in rows] == list(range(1, 7))
    for key in ("loss", "train_mse", "kl_weight", "seconds", "n_f_evals", "n_f_evals_backward"):
        assert key in rows[0]
    loss = [float(r["loss"]) for r in rows]
    mse = [float(r["train_mse"]) for r in rows]
    assert loss[-1] < loss[0] and mse[-1] < mse[0]
    # KL annealing: 0 for kl_warmup epochs, then 1 - 0.99^(epoch - warmup).
    weights = [float(r["kl_weight"]) for r in rows]
    assert weights[:3] == [0.0, 0.0, 0.0] and weights[3] == pytest.approx(0.01)
    assert int(rows[0]["n_f_evals"]) > 0 and int(rows[0]["n_f_evals_backward"]) > 0  # aca replays
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["model"] == "latent_ode" and metrics["task"] == "interpolation"
    assert 0.0 < metrics["test_mse"] < 1.0
    assert "extrapolation_mse" not in metrics
    assert metrics["n_train"] == 16 and metrics["n_test"] == 4 and metrics["epochs"] == 6
    assert load_config(run / "config.yaml").model.latent.latent_dim == 4


def test_checkpoints_load_with_weights_only_and_restore(fitted):
    run, _ = fitted
    for name in ("last.pt", "best.pt"):
        ckpt = torch.load(run / "checkpoints" / name, weights_only=True)
        assert {"epoch", "model", "optimizer", "normalization", "best"} <= set(ckpt)
    assert torch.load(run / "checkpoints" / "last.pt", weights_only=True)["epoch"] == 6
    task, model = restore_run(run)
    data = task.data
    # The test score of metrics.json is reproducible from the checkpoint.
    again = score(model, data.datasets(load_config(run / "config.yaml"))["test"])
    assert again == pytest.approx(json.loads((run / "metrics.json").read_text())["test_mse"])
    norm = json.loads((run / "normalization.json").read_text())
    np.testing.assert_allclose(norm["minimum"], data.stats.minimum)


def test_predictions_nc(fitted):
    run, _ = fitted
    with xr.open_dataset(run / "predictions.nc", engine="h5netcdf") as ds:
        assert ds["predicted"].shape == (3, 30, DIM)
        assert list(ds["trajectory"].values) == [16, 17, 18]  # the first test trajectories
        assert ds["time"].attrs["units"] == "s"
        # In the data's units (the normalisation undone): the sines lie in [1, 3].
        assert float(ds["true"].min()) >= 1.0 - 1e-5 and float(ds["true"].max()) <= 3.0 + 1e-5
        assert ds["mask"].values.any() and not ds["mask"].values.all()


def test_resume_equals_an_uninterrupted_run(folder, fitted):
    whole, _ = fitted
    run = folder / "resumed"
    first = run_cli("fit", folder / "fit.yaml", "-o", run, "-q", "--set", "train.epochs=3")
    assert first.exit_code == 0, first.output
    again = run_cli("fit", folder / "fit.yaml", "-o", run, "-q")
    assert again.exit_code != 0 and "--resume" in again.output
    resumed = run_cli("fit", folder / "fit.yaml", "-o", run, "-q", "--resume")
    assert resumed.exit_code == 0, resumed.output
    a = torch.load(whole / "checkpoints" / "last.pt", weights_only=True)
    b = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert a["model"].keys() == b["model"].keys()
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    drop = ("seconds", "test_mse")
    strip = [{k: v for k, v in r.items() if k not in drop} for r in _rows(whole)]
    assert [{k: v for k, v in r.items() if k not in drop} for r in _rows(run)] == strip
    ma = json.loads((whole / "metrics.json").read_text())
    mb = json.loads((run / "metrics.json").read_text())
    assert ma["test_mse"] == mb["test_mse"]


@pytest.mark.parametrize(
    "overrides, key",
    [
        (["model.latent={kind: ode_rnn, hidden_dim: 8, dynamics_hidden: [16]}"], "test_mse"),
        (["model.latent={kind: gru, hidden_dim: 8}"], "test_mse"),
        (["task.name=extrapolation", "solver.grad=mali", "solver.method=alf"], "extrapolation_mse"),
    ],
)
def test_baselines_and_extrapolation(folder, overrides, key):
    run = folder / f"run-{abs(hash(tuple(overrides)))}"
    sets = [a for o in overrides for a in ("--set", o)]
    result = run_cli(
        "fit", folder / "fit.yaml", "-o", run, "-q", "--set", "train.epochs=2",
        "--set", "task.eval_every=1", *sets,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    metrics = json.loads((run / "metrics.json").read_text())
    assert np.isfinite(metrics[key]) and np.isfinite(metrics["test_mse"])
    rows = _rows(run)
    assert all(r["test_mse"] for r in rows)  # scored every epoch
    if key == "extrapolation_mse":
        assert f"extrapolation_mse: {metrics[key]:.4g}" in result.output
        assert all(r["test_extrapolation_mse"] for r in rows)


@pytest.mark.parametrize(
    "override, message",
    [
        ("model.latent.latnt_dim=3", "unknown key 'model.latent.latnt_dim' (did you mean"),
        ("model.latent.kind=lstm", "model.latent.kind: unknown value 'lstm'"),
        (
            "model.physics={name: nbody, n_bodies: 3}",
            "model.latent: a sequence model is fitted on its own",
        ),
        ("task.observed_fraction=1.5", "task.observed_fraction: must be <= 1"),
        ("task.name=forecast", "task.name: unknown value 'forecast'"),
        ("train.loss=mae", "train.loss: a sequence model is trained on its likelihood"),
        ("task.window=500", "task.window: 500 points, but"),
        ("data.observed=[x0, y]", "data.observed: ['y'] are not variables"),
    ],
)
def test_bad_configs_fail_with_a_clear_message(folder, tmp_path, override, message):
    result = run_cli("fit", folder / "fit.yaml", "-o", tmp_path / "run", "-q", "--set", override)
    assert result.exit_code != 0
    assert message in result.output


def test_a_key_the_kind_does_not_read_is_refused(folder, tmp_path):
    result = run_cli(
        "fit", folder / "fit.yaml", "-o", tmp_path / "run", "--set", "model.latent.kind=gru"
    )
    assert result.exit_code != 0
    assert "model.latent.latent_dim: is read by kind 'latent_ode' only, not by 'gru'" in (
        result.output
    )


def test_the_hopper_file_is_simulated_when_missing(tmp_path):
    pytest.importorskip("mujoco")
    pytest.importorskip("dm_control")
    config = CONFIG.replace("path: sines.h5", "path: hopper.h5\n  simulate: hopper\n"
                            "  simulate_options: {n_trajectories: 10, n_steps: 40}")  # fmt: skip
    (tmp_path / "fit.yaml").write_text(config)
    result = run_cli(
        "fit", tmp_path / "fit.yaml", "-o", tmp_path / "run", "-q", "--set", "train.epochs=1",
        "--set", "task.window=20",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert (tmp_path / "hopper.h5").is_file()
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["n_train"] == 8 and np.isfinite(metrics["test_mse"])
    with xr.open_dataset(tmp_path / "run" / "predictions.nc", engine="h5netcdf") as ds:
        assert list(ds["variable"].values)[:2] == ["rootx", "rootz"]


@pytest.mark.parametrize("name", ["mujoco.yaml", "mujoco_small.yaml"])
def test_the_hopper_examples_parse(name):
    config = load_config(Path(__file__).resolve().parents[1] / "examples" / name)
    assert config.model.latent.kind == "latent_ode"
    assert config.data.simulate == "hopper"
    assert (config.task.name, config.task.window, config.task.train_fraction) == (
        "interpolation",
        100,
        0.8,
    )
    assert (config.solver.rtol, config.solver.atol) == (1e-3, 1e-4)


def test_several_processes_are_refused(folder, tmp_path, monkeypatch):
    from physode.training.runner import FitError, fit

    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(FitError, match="a sequence model trains in one process"):
        fit(load_config(folder / "fit.yaml"), tmp_path / "run", stream=None)


def test_evaluate_rescores_a_sequence_run_with_another_solver(fitted):
    run, _ = fitted
    trained = json.loads((run / "metrics.json").read_text())["test_mse"]
    same = run_cli("evaluate", run)
    assert same.exit_code == 0, same.output
    (path,) = (run / "evaluations").glob("*.json")
    assert json.loads(path.read_text())["test_mse"] == pytest.approx(trained, rel=1e-12)
    other = run_cli("evaluate", run, "--method", "tsit5", "--rtol", "1e-7", "--atol", "1e-8")
    assert other.exit_code == 0, other.output
    assert "test_mse" in other.output
    (path,) = (run / "evaluations").glob("tsit5-*.json")
    # A finer solve of the same learned dynamics scores close to the trained solver.
    assert json.loads(path.read_text())["test_mse"] == pytest.approx(trained, rel=0.2)
