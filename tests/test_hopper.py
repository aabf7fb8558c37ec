"""The MuJoCo hopper generator (optional extra ``physode[mujoco]``)."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from click.testing import CliRunner

from physode.datasets import SIMULATORS, read_trajectories
from physode.datasets.hopper import MissingExtraError, simulate_hopper


def test_registered():
    assert SIMULATORS["hopper"] is simulate_hopper


def test_missing_extra_message(monkeypatch):
    # A None entry in sys.modules makes `import dm_control` raise ImportError.
    monkeypatch.setitem(sys.modules, "dm_control", None)
    with pytest.raises(ImportError, match=r"pip install 'physode\[mujoco\]'") as info:
        simulate_hopper(1, 2)
    assert isinstance(info.value, MissingExtraError)
    assert "mujoco==3.17.0" in str(info.value)


def test_missing_extra_cli(monkeypatch, tmp_path):
    from physode.cli.simulate import simulate

    monkeypatch.setitem(sys.modules, "dm_control", None)
    result = CliRunner().invoke(simulate, ["hopper", "-o", str(tmp_path / "h.h5"), "--n", "1"])
    assert result.exit_code != 0
    assert "pip install 'physode[mujoco]'" in result.output


def test_missing_extra_fit_is_a_one_line_error(monkeypatch, tmp_path):
    # A fit whose config simulates the hopper data names the missing extra.
    from physode.cli.main import main

    monkeypatch.setitem(sys.modules, "dm_control", None)
    config = tmp_path / "hopper.yaml"
    config.write_text(
        "data: {path: h.h5, simulate: hopper, simulate_options: {n_trajectories: 2}}\n"
        "model: {latent: {kind: latent_ode}}\n"
    )
    result = CliRunner().invoke(main, ["fit", str(config), "-o", str(tmp_path / "run")])
    assert result.exit_code != 0
    assert "pip install 'physode[mujoco]'" in result.output
    assert "Traceback" not in result.output


def test_bad_arguments():
    with pytest.raises(ValueError, match="n_trajectories"):
        simulate_hopper(0)
    with pytest.raises(ValueError, match="n_steps"):
        simulate_hopper(1, -3)


def test_deterministic_for_a_seed():
    pytest.importorskip("dm_control")
    a = simulate_hopper(3, 6, seed=123)
    b = simulate_hopper(3, 6, seed=123)
    c = simulate_hopper(2, 6, seed=124)
    assert a.state.shape == (3, 6, 14) and a.state.dtype == np.float32
    np.testing.assert_array_equal(a.state, b.state)
    assert not np.array_equal(a.state[:2], c.state)
    # Fewer trajectories give a prefix of the larger set.
    np.testing.assert_array_equal(simulate_hopper(2, 6, seed=123).state, a.state[:2])
    np.testing.assert_allclose(a.time, np.arange(6) * 0.005)
    assert a.system == "hopper" and a.time_units == "s"
    assert a.variables[:3] == ["rootx", "rootz", "rooty"]
    assert a.variables[7:10] == ["v_rootx", "v_rootz", "v_rooty"]
    assert len(set(a.variables)) == 14
    # Record 0 is the random initial state, drawn as the reference draws it.
    rng = np.random.RandomState(123)
    qpos01 = rng.uniform(0, 0.5, size=2)
    qpos = rng.uniform(-2, 2, size=5)
    qvel = rng.uniform(-5, 5, size=7)
    np.testing.assert_allclose(a.state[0, 0], np.concatenate([qpos01, qpos, qvel]), rtol=1e-6)
    assert not np.array_equal(a.state[0, 1], a.state[0, 0])


def test_cli_writes_trajectory_file(tmp_path):
    pytest.importorskip("dm_control")
    from physode.cli.simulate import simulate

    out = tmp_path / "hopper.h5"
    args = ["hopper", "-o", str(out), "--n", "2", "--n-steps", "4", "--seed", "5"]
    result = CliRunner().invoke(simulate, args)
    assert result.exit_code == 0, result.output
    data = read_trajectories(out)
    assert data.state.shape == (2, 4, 14)
    np.testing.assert_array_equal(data.state, simulate_hopper(2, 4, seed=5).state)
