"""``physode simulate`` and ``physode info`` through click's test runner."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from physode.cli.main import main
from physode.datasets import read_trajectories


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def simulate_args(path, *extra: str) -> list[str]:
    return ["simulate", "threebody", "-o", str(path), "--n-times", "11", "--t-end", "0.2", *extra]


def test_simulate_then_info(runner, tmp_path):
    path = tmp_path / "tb.h5"
    args = simulate_args(path, "--n-trajectories", "2", "--noise", "0.01", "--seed", "7")
    result = runner.invoke(main, args)
    assert result.exit_code == 0, result.output
    assert f"wrote {path.resolve()}" in result.output
    assert "threebody: 2 trajectories x 11 times x 18 variables, time 0 to 0.2" in result.output

    data = read_trajectories(path)
    assert data.state.shape == (2, 11, 18)
    assert data.attributes["seed"] == 7 and data.attributes["noise_std"] == 0.01
    np.testing.assert_allclose(data.time, np.linspace(0.0, 0.2, 11))

    result = runner.invoke(main, ["info", str(path)])
    assert result.exit_code == 0, result.output
    for expected in (
        "system:        threebody",
        "N = 2 trajectories, T = 11 times, D = 18 variables",
        "x1, y1, z1",
        "masses = [1.1, 1.1, 0.9]  [mass]",
        "noise_std = 0.01",
        "observed:      100% (no /mask)",
    ):
        assert expected in result.output, (expected, result.output)


def test_simulate_random_initial_and_compression(runner, tmp_path):
    path = tmp_path / "tb.h5"
    args = simulate_args(path, "--random-initial", "--compression", "none")
    result = runner.invoke(main, args)
    assert result.exit_code == 0, result.output
    with h5py.File(path, "r") as f:
        assert f["state"].compression is None
    default = tmp_path / "default.h5"
    assert runner.invoke(main, simulate_args(default)).exit_code == 0
    assert not np.allclose(read_trajectories(path).state, read_trajectories(default).state)


def test_simulate_does_not_overwrite_unless_asked(runner, tmp_path):
    path = tmp_path / "tb.h5"
    assert runner.invoke(main, simulate_args(path)).exit_code == 0
    before = path.read_bytes()
    result = runner.invoke(main, simulate_args(path, "--seed", "1"))
    assert result.exit_code != 0
    assert "exists" in result.output and "--overwrite" in result.output
    assert "Traceback" not in result.output
    assert path.read_bytes() == before
    result = runner.invoke(main, simulate_args(path, "--noise", "0.1", "--overwrite"))
    assert result.exit_code == 0, result.output
    assert read_trajectories(path).attributes["noise_std"] == 0.1


@pytest.mark.parametrize(
    "args, message",
    [
        (["simulate", "threebody", "--n-times", "3"], "Missing option '-o'"),
        (["simulate", "threebody", "-o", "x.h5", "--n-times", "1"], "--n-times"),
        (["simulate", "threebody", "-o", "x.h5", "--noise", "-1"], "--noise"),
        (["simulate", "threebody", "-o", "x.h5", "--t-end", "0"], "--t-end"),
        (["simulate", "nosuchsystem", "-o", "x.h5"], "No such command 'nosuchsystem'"),
    ],
)
def test_simulate_usage_errors(runner, tmp_path, args, message):
    # Output inside tmp_path: a bad argument that were accepted writes nowhere else.
    args = [str(tmp_path / a) if a == "x.h5" else a for a in args]
    result = runner.invoke(main, args)
    assert result.exit_code != 0
    assert message in result.output


def test_simulate_into_missing_folder(runner, tmp_path):
    result = runner.invoke(main, simulate_args(tmp_path / "no" / "such" / "tb.h5"))
    assert result.exit_code == 1
    assert "folder does not exist" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_info_missing_file(runner, tmp_path):
    result = runner.invoke(main, ["info", str(tmp_path / "nope.h5")])
    assert result.exit_code == 1
    assert "nope.h5: no such file" in result.output
    assert isinstance(result.exception, SystemExit)  # a clean exit, no traceback


def test_info_not_hdf5(runner, tmp_path):
    path = tmp_path / "notes.h5"
    path.write_text("just text")
    result = runner.invoke(main, ["info", str(path)])
    assert result.exit_code == 1
    assert "notes.h5: file: is not an HDF5 file" in result.output


def test_info_schema_violation_names_the_dataset(runner, tmp_path):
    path = tmp_path / "bad.h5"
    with h5py.File(path, "w") as f:
        f.attrs["format"] = "physode.trajectories"
        f.attrs["version"] = 1
        f.create_dataset("time", data=[0.0, 2.0, 1.0]).attrs["units"] = "s"
        f.create_dataset("state", data=np.zeros((1, 3, 1))).attrs["variables"] = ["x"]
    result = runner.invoke(main, ["info", str(path)])
    assert result.exit_code == 1
    assert "not a valid trajectory file" in result.output
    assert "/time: must be strictly increasing" in result.output
    assert "Traceback" not in result.output


def test_help_is_complete(runner):
    top = runner.invoke(main, ["--help"])
    assert top.exit_code == 0 and "simulate" in top.output and "info" in top.output
    group = runner.invoke(main, ["simulate", "--help"])
    assert group.exit_code == 0 and "threebody" in group.output
    sub = runner.invoke(main, ["simulate", "threebody", "-h"])
    assert sub.exit_code == 0
    for option in (
        "--output",
        "--n-trajectories",
        "--n-times",
        "--t-end",
        "--noise",
        "--seed",
        "--random-initial",
        "--overwrite / --no-overwrite",
        "--compression",
    ):
        assert option in sub.output, option
    info = runner.invoke(main, ["info", "--help"])
    assert info.exit_code == 0 and "FILE" in info.output
