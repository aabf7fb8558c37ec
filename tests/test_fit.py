"""``physode fit``, ``evaluate`` and ``plot`` end to end through the real CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import xarray as xr
from click.testing import CliRunner

from physode.cli.main import main
from physode.training import load_config

PNG = b"\x89PNG\r\n\x1a\n"

CONFIG = """
data:
  path: data.h5
  simulate: threebody
  simulate_options: {{n_times: {n_times}}}
  fit_window: [0.0, {fit_end}]
model:
  physics:
    name: nbody
    n_bodies: 3
    dim: 3
    G: 1.451368633
    masses: [1.0, 1.0, 1.0]
solver: {{method: dopri5, grad: aca, rtol: {rtol}, atol: {atol}}}
train: {{epochs: {epochs}, optimizer: {optimizer}, lr: {lr}, seed: 0}}
"""


def write_config(
    folder: Path, *, n_times=201, fit_end=0.5, epochs=2, optimizer="lbfgs", lr=1.0, rtol=1e-6
):
    path = folder / "fit.yaml"
    text = CONFIG.format(
        n_times=n_times,
        fit_end=fit_end,
        epochs=epochs,
        optimizer=optimizer,
        lr=lr,
        rtol=rtol,
        atol=rtol / 10,
    )
    path.write_text(text)
    return path


def run_cli(*args: str):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fit")
    config = write_config(folder)
    result = run_cli("fit", config, "-o", folder / "run", "--quiet")
    assert result.exit_code == 0, result.output
    return folder / "run", result


def test_fit_recovers_the_masses_and_writes_the_run_directory(fitted):
    run, result = fitted
    assert "learned masses" in result.output
    masses = json.loads((run / "params.json").read_text())["masses"]
    np.testing.assert_allclose(masses, [1.1, 1.1, 0.9], rtol=1e-3)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["epochs"] == 2
    assert metrics["fit_mse"] < 1e-7
    assert metrics["extrapolation_mse"] < 1e-4
    errors = metrics["true_parameters"]["masses"]["relative_error"]
    assert max(errors) < 1e-3
    rows = (run / "metrics.csv").read_text().strip().splitlines()
    header = "epoch,loss,fit_mse,masses_0,masses_1,masses_2,G,n_f_evals,n_f_evals_backward"
    assert rows[0] == header + ",seconds,lr"
    assert len(rows) == 1 + 2
    assert (run / "config.yaml").exists()


def test_fit_window_left_out_comes_from_the_data_file(tmp_path):
    config = write_config(tmp_path, n_times=101, epochs=1)
    config.write_text(config.read_text().replace("  fit_window: [0.0, 0.5]\n", ""))
    result = run_cli("fit", config, "-o", tmp_path / "run", "--quiet")
    assert result.exit_code == 0, result.output
    # The simulated file says [0, 1]; the run's config records the window it used.
    assert load_config(tmp_path / "run" / "config.yaml").data.fit_window == (0.0, 1.0)
    with xr.open_dataset(tmp_path / "run" / "predictions.nc", engine="h5netcdf") as ds:
        assert ds.attrs["fit_window_end"] == 1.0
        assert int((ds["time"] <= 1.0).sum()) == 51
    with h5py.File(tmp_path / "data.h5", "a") as f:
        del f.attrs["fit_window"]
    result = CliRunner().invoke(main, ["fit", str(config), "-o", str(tmp_path / "run2")])
    assert result.exit_code != 0
    assert "data.fit_window: not set in the config, and" in result.output
    assert "data.h5 has no fit_window attribute" in result.output


def test_checkpoints_load_with_weights_only(fitted):
    run, _ = fitted
    for name in ("last.pt", "best.pt"):
        ckpt = torch.load(run / "checkpoints" / name, weights_only=True)
        assert ckpt["epoch"] >= 1
        assert "model.physics.raw_masses" in ckpt["model"]
    last = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert last["epoch"] == 2
    masses = last["model"]["model.physics.raw_masses"].exp()
    params = json.loads((run / "params.json").read_text())["masses"]
    np.testing.assert_allclose(masses.numpy(), params, rtol=1e-15)


def test_predictions_nc_and_plots(fitted):
    run, _ = fitted
    with xr.open_dataset(run / "predictions.nc", engine="h5netcdf") as ds:
        assert dict(ds.sizes) == {"trajectory": 1, "time": 201, "variable": 18}
        assert ds.attrs["fit_window_end"] == 0.5
        assert "nbody" in ds.attrs["config"]
        for name in ("true", "predicted", "time"):
            assert ds[name].attrs["long_name"]
            # The simulator's "scaled length" is no UDUNITS string: no CF units claimed.
            assert "units" not in ds[name].attrs
        assert ds.attrs["time_units"] == "scaled time"
        assert list(ds["variable_units"].values[:1]) == ["scaled length"]
        assert list(ds["role"].values) == ["position"] * 9 + ["velocity"] * 9
        err = float(np.abs(ds["predicted"] - ds["true"]).max())
        assert err < 1e-2
        assert list(ds["variable"].values[:3]) == ["x1", "y1", "z1"]
    for name in ("extrapolation.png", "orbits.png", "error.png"):
        data = (run / "plots" / name).read_bytes()
        assert data[:8] == PNG and len(data) > 10_000


def test_plot_command_redraws(fitted):
    run, _ = fitted
    (run / "plots" / "error.png").unlink()
    result = run_cli("plot", run)
    assert result.exit_code == 0, result.output
    assert (run / "plots" / "error.png").read_bytes()[:8] == PNG


def test_evaluate_with_another_solver_gives_a_close_score(fitted):
    run, _ = fitted
    result = run_cli("evaluate", run, "--method", "tsit5", "--rtol", "1e-9", "--atol", "1e-10")
    assert result.exit_code == 0, result.output
    assert "tsit5" in result.output
    (path,) = (run / "evaluations").glob("tsit5-*.json")
    scores = json.loads(path.read_text())
    trained = json.loads((run / "metrics.json").read_text())
    assert scores["solver"]["method"] == "tsit5"
    # The model, not the solver, is scored: a tighter solve changes the score little.
    assert scores["fit_mse"] < 1e-7
    assert abs(scores["extrapolation_mse"] - trained["extrapolation_mse"]) < 1e-4


def test_a_mali_run_is_rescored_with_another_solver(tmp_path):
    # One Adam step (an L-BFGS epoch of ALF solves takes minutes): the masses stay near
    # (1, 1, 1), whose score is 0.86, and ALF at rtol 1e-4 is far more accurate than that.
    config = write_config(tmp_path, n_times=101, epochs=1, optimizer="adam", lr=1e-3, rtol=1e-4)
    args = ["--set", "solver.method=alf", "--set", "solver.grad=mali", "--quiet"]
    result = run_cli("fit", config, "-o", tmp_path / "run", *args)
    assert result.exit_code == 0, result.output
    trained = json.loads((tmp_path / "run" / "metrics.json").read_text())
    result = run_cli("evaluate", tmp_path / "run", "--method", "dopri5", "--rtol", "1e-9")
    assert result.exit_code == 0, result.output
    (path,) = (tmp_path / "run" / "evaluations").glob("dopri5-*.json")
    scores = json.loads(path.read_text())
    assert scores["solver"]["grad"] == "direct" and scores["trained_with"]["grad"] == "mali"
    assert scores["solver"]["method"] == "dopri5" and scores["trained_with"]["method"] == "alf"
    # The model, not the solver, is scored: the tight dopri5 solve agrees with ALF's.
    assert 0.5 < scores["fit_mse"] < 1.5
    assert abs(scores["fit_mse"] / trained["fit_mse"] - 1) < 1e-2  # measured 2.6e-3


def test_an_existing_run_is_not_overwritten(fitted, tmp_path):
    run, _ = fitted
    config = write_config(tmp_path)
    result = CliRunner().invoke(main, ["fit", str(config), "-o", str(run), "--quiet"])
    assert result.exit_code != 0
    assert "--resume" in result.output


# ---------------------------------------------------------------------------- bad input


def test_a_trajectory_index_past_the_file_names_the_key(tmp_path):
    config = write_config(tmp_path, n_times=101)
    args = ["fit", str(config), "-o", str(tmp_path / "run"), "--set", "data.trajectories=[0,3]"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code != 0
    assert "data.trajectories: [3] out of range:" in result.output
    assert "holds 1 trajectory (indices 0 to 0)" in result.output


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_asking_for_cuda_without_it_is_a_one_line_error(tmp_path):
    config = write_config(tmp_path)
    args = ["fit", str(config), "-o", str(tmp_path / "run"), "--set", "train.device=cuda"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code != 0
    assert "device: 'cuda' was asked for but" in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda s: s.replace("rtol:", "rtoll:"), "did you mean 'solver.rtol'"),
        (lambda s: s.replace("epochs: 2", "epochs: many"), "train.epochs"),
        (
            lambda s: s.split("  simulate:")[0] + "  fit_window" + s.split("  fit_window")[1],
            "data.path",
        ),
        (lambda s: s.replace("n_bodies: 3", "n_bodies: 2"), "model.physics"),
    ],
    ids=["unknown-key", "wrong-type", "missing-file", "wrong-size"],
)
def test_bad_configs_fail_with_a_clear_message(tmp_path, edit, message):
    config = write_config(tmp_path, epochs=2)
    config.write_text(edit(config.read_text()))
    result = CliRunner().invoke(main, ["fit", str(config), "-o", str(tmp_path / "run")])
    assert result.exit_code != 0
    assert message in result.output
    assert "Traceback" not in result.output


def test_a_file_breaking_the_schema_is_refused(tmp_path):
    import h5py

    with h5py.File(tmp_path / "data.h5", "w") as f:
        f.attrs["format"] = "physode.trajectories"
        f.attrs["version"] = 1
        f.create_dataset("time", data=np.linspace(0, 2, 11)).attrs["units"] = "s"
    config = write_config(tmp_path)
    result = CliRunner().invoke(main, ["fit", str(config), "-o", str(tmp_path / "run")])
    assert result.exit_code != 0
    assert "/state" in result.output


def test_print_config_and_overrides(tmp_path):
    config = write_config(tmp_path)
    result = run_cli("fit", config, "--print-config", "--set", "solver.grad=direct")
    assert result.exit_code == 0
    assert "grad: direct" in result.output
    assert not (tmp_path / "data.h5").exists()  # printing runs nothing
    # MALI needs ALF: asking for it over dopri5 names the conflict.
    result = CliRunner().invoke(main, ["fit", str(config), "--set", "solver.grad=mali"])
    assert result.exit_code != 0
    assert "solver" in result.output and "alf" in result.output


def test_help_of_every_command():
    for command in ("fit", "evaluate", "plot", "simulate", "info"):
        result = run_cli(command, "--help")
        assert result.exit_code == 0
        assert "Usage" in result.output


# ---------------------------------------------------------------------------- resume


def _physode(*args, **kwargs):
    return subprocess.Popen(
        [sys.executable, "-m", "physode", *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        **kwargs,
    )


def _final_state(run: Path) -> dict:
    return torch.load(run / "checkpoints" / "last.pt", weights_only=True)["model"]


def test_resume_after_sigkill_equals_an_uninterrupted_run(tmp_path):
    # Adam with a fixed seed; the batches depend only on (seed, epoch).
    config = write_config(tmp_path, n_times=101, epochs=12, optimizer="adam", lr=0.02, rtol=1e-5)
    whole = _physode("fit", config, "-o", tmp_path / "whole", "--quiet")
    assert whole.wait(timeout=300) == 0, whole.stderr.read().decode()
    # Kill a second run once a few epochs are written, then resume it.
    run = tmp_path / "killed"
    proc = _physode("fit", config, "-o", run, "--quiet")
    csv = run / "metrics.csv"
    deadline = time.time() + 300
    while time.time() < deadline:
        if csv.exists() and len(csv.read_text().splitlines()) >= 4:
            break
        if proc.poll() is not None:
            pytest.fail("the fit ended before it could be killed")
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = torch.load(run / "checkpoints" / "last.pt", weights_only=True)["epoch"]
    assert killed_at < 12
    resumed = _physode("fit", config, "-o", run, "--resume", "--quiet")
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read().decode()
    a, b = _final_state(tmp_path / "whole"), _final_state(run)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    rows = (run / "metrics.csv").read_text().strip().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == [str(e) for e in range(1, 13)]
    assert json.loads((run / "params.json").read_text()) == json.loads(
        (tmp_path / "whole" / "params.json").read_text()
    )


def test_a_resume_that_changes_the_fit_is_refused_and_changes_nothing(tmp_path):
    config = write_config(tmp_path, epochs=3, optimizer="adam", lr=0.01, n_times=41)
    run = tmp_path / "run"
    first = CliRunner().invoke(
        main, ["fit", str(config), "-o", str(run), "-q", "--set", "train.epochs=2"]
    )
    assert first.exit_code == 0, first.output
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    args = ["--set", "solver.max_steps=3", "--set", "train.lr=0.5"]
    result = CliRunner().invoke(main, ["fit", str(config), "-o", str(run), "-q", "--resume", *args])
    assert result.exit_code != 0
    assert (
        "--resume: the config differs from the run's: solver.max_steps: null -> 3; "
        "train.lr: 0.01 -> 0.5. A resume may change only train.epochs, train.log_every, "
        "train.checkpoint_every" in result.output
    )
    assert "Traceback" not in result.output
    after = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    assert after == before
    # More epochs is a change a resume may make: applied, and recorded with its epoch.
    more = CliRunner().invoke(main, ["fit", str(config), "-o", str(run), "-q", "--resume"])
    assert more.exit_code == 0, more.output
    assert torch.load(run / "checkpoints" / "last.pt", weights_only=True)["epoch"] == 3
    (record,) = json.loads((run / "resumes.json").read_text())
    assert record["after_epoch"] == 2 and record["from"] == "last.pt"
    assert record["changes"] == {"train.epochs": [2, 3]}
    assert load_config(run / "config.yaml").train.epochs == 3


def test_float32_fit_recovers_the_masses(tmp_path):
    config = write_config(tmp_path, rtol=1e-5)
    result = run_cli("fit", config, "-o", tmp_path / "run", "-q", "--set", "train.dtype=float32")
    assert result.exit_code == 0, result.output
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)
    assert ckpt["model"]["model.physics.raw_masses"].dtype == torch.float32
    masses = json.loads((tmp_path / "run" / "params.json").read_text())["masses"]
    np.testing.assert_allclose(masses, [1.1, 1.1, 0.9], rtol=1e-3)
