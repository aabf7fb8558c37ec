"""Trajectory files (schema, round trip, partial reads, validation) and the three-body simulator."""

from __future__ import annotations

import os
import re
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

import physode
from physode.datasets import (
    SIMULATORS,
    Trajectories,
    TrajectoryFile,
    TrajectoryFormatError,
    describe,
    read_trajectories,
    simulate,
    simulate_threebody,
    write_trajectories,
)
from physode.datasets import trajectories as traj_module
from physode.models import NBodyGravity

# ----------------------------------------------------------------------------- helpers


def make_data(
    dtype=np.float64, with_mask: bool = False, n: int = 5, t: int = 7, d: int = 3, seed: int = 0
) -> Trajectories:
    rng = np.random.default_rng(seed)
    state = rng.normal(size=(n, t, d)).astype(dtype)
    mask = None
    if with_mask:
        mask = rng.random((n, t, d)) < 0.75
        # Unobserved values may be NaN: the schema ignores them.
        state[~mask] = np.nan
    return Trajectories(
        time=np.linspace(0.0, 1.5, t),
        state=state,
        variables=[f"q{i}" for i in range(d)],
        mask=mask,
        time_units="s",
        state_units=[f"m{i}" for i in range(d)],
        system="toy",
        description="random numbers\nsecond line",
        parameters={"masses": np.array([1.0, 2.0, 3.5]), "G": 1.25, "count": 3},
        parameter_units={"masses": "kg", "G": "m^3 / (kg s^2)"},
        attributes={"fit_window": [0.0, 1.0], "note": "hello", "tags": ["a", "b"]},
    )


def assert_same(a: Trajectories, b: Trajectories) -> None:
    np.testing.assert_array_equal(a.time, b.time)
    assert b.time.dtype == np.float64
    assert a.state.dtype == b.state.dtype
    np.testing.assert_array_equal(a.state, b.state)  # NaN == NaN for this helper
    if a.mask is None:
        assert b.mask is None
    else:
        assert b.mask.dtype == np.bool_
        np.testing.assert_array_equal(a.mask, b.mask)
    assert a.variables == b.variables
    assert a.time_units == b.time_units
    assert a.state_units == b.state_units
    assert a.system == b.system
    assert a.description == b.description
    assert list(a.parameters) == list(b.parameters)
    for k, v in a.parameters.items():
        np.testing.assert_array_equal(np.asarray(v), np.asarray(b.parameters[k]))
        assert np.ndim(v) == np.ndim(b.parameters[k])
    assert {k: a.parameter_units.get(k, "") for k in a.parameters} == b.parameter_units
    assert list(a.attributes) == list(b.attributes)
    for k, v in a.attributes.items():
        if isinstance(v, str) or (isinstance(v, list) and isinstance(v[0], str)):
            assert b.attributes[k] == v
        else:
            np.testing.assert_array_equal(np.asarray(v), np.asarray(b.attributes[k]))


def write_raw(path: Path, *, n: int = 3, t: int = 5, d: int = 2, **edits) -> Path:
    """A valid file built with h5py directly; ``edits`` break it in one way.

    Keys: ``time``, ``state``, ``mask`` (arrays, or None to leave the dataset out),
    ``root`` (attrs to set; value None deletes), ``variables``, ``time_units``
    (None deletes), ``parameters`` (name -> (value, units or None)).
    """
    time = edits.get("time", np.linspace(0.0, 1.0, t))
    state = edits.get("state", np.arange(n * t * d, dtype=np.float64).reshape(n, t, d))
    root = {"format": "physode.trajectories", "version": 1, "system": "raw", "description": ""}
    root.update(edits.get("root", {}))
    with h5py.File(path, "w") as f:
        for k, v in root.items():
            if v is not None:
                f.attrs[k] = v
        if time is not None:
            ds = f.create_dataset("time", data=time)
            units = edits.get("time_units", "s")
            if units is not None:
                ds.attrs["units"] = units
        if state is not None:
            ds = f.create_dataset("state", data=state)
            variables = edits.get("variables", [f"v{i}" for i in range(d)])
            if variables is not None:
                ds.attrs["variables"] = variables
            if "state_units" in edits:
                ds.attrs["units"] = edits["state_units"]
        if edits.get("mask") is not None:
            f.create_dataset("mask", data=edits["mask"])
        if "parameters" in edits:
            group = f.create_group("parameters")
            for name, (value, units) in edits["parameters"].items():
                pds = group.create_dataset(name, data=value)
                if units is not None:
                    pds.attrs["units"] = units
    return path


# ----------------------------------------------------------------------------- round trip


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("with_mask", [False, True])
@pytest.mark.parametrize("compression", ["gzip", None])
def test_round_trip(tmp_path, dtype, with_mask, compression):
    data = make_data(dtype, with_mask)
    path = write_trajectories(tmp_path / "d.h5", data, compression=compression)
    assert path == tmp_path / "d.h5"
    back = read_trajectories(path)
    assert_same(data, back)
    assert back.fit_window == (0.0, 1.0)
    assert (back.n_trajectories, back.n_times, back.n_variables) == (5, 7, 3)
    assert isinstance(back.parameters["G"], float)
    assert isinstance(back.parameters["masses"], np.ndarray)
    with h5py.File(path, "r") as f:
        assert f.attrs["format"] == "physode.trajectories"
        assert int(f.attrs["version"]) == 1
        assert f["time"].dtype == np.float64
        # One chunk per trajectory: a partial read touches only its rows.
        assert f["state"].chunks == (1, 7, 3)
        assert f["state"].compression == compression
        assert ("mask" in f) == with_mask


def test_round_trip_without_optional_parts(tmp_path):
    data = Trajectories(
        time=np.array([0.0, 0.5, 2.0], dtype=np.float32),
        state=np.zeros((1, 3, 2)),
        variables=["a", "b"],
        time_units="days",
    )
    back = read_trajectories(write_trajectories(tmp_path / "d.h5", data))
    np.testing.assert_array_equal(back.time, [0.0, 0.5, 2.0])
    assert back.time.dtype == np.float64
    assert back.state_units is None and back.mask is None
    assert back.parameters == {} and back.parameter_units == {} and back.attributes == {}
    assert back.fit_window is None


def test_single_state_unit_string_applies_to_every_variable(tmp_path):
    path = write_raw(tmp_path / "d.h5", d=3, state_units="m")
    assert read_trajectories(path).state_units == ["m", "m", "m"]


def test_write_refuses_to_overwrite_when_asked(tmp_path):
    path = write_trajectories(tmp_path / "d.h5", make_data())
    with pytest.raises(FileExistsError, match=r"d\.h5"):
        write_trajectories(path, make_data(seed=1), overwrite=False)
    np.testing.assert_array_equal(read_trajectories(path).state, make_data().state)
    write_trajectories(path, make_data(seed=1))
    np.testing.assert_array_equal(read_trajectories(path).state, make_data(seed=1).state)


def test_write_is_atomic(tmp_path, monkeypatch):
    path = write_trajectories(tmp_path / "d.h5", make_data())
    before = path.read_bytes()

    def crash(src, dst):
        raise OSError("simulated crash before the rename")

    monkeypatch.setattr(traj_module.os, "replace", crash)
    with pytest.raises(OSError, match="simulated crash"):
        write_trajectories(path, make_data(seed=1))
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["d.h5"]  # the temporary file is gone


# ----------------------------------------------------------------------------- partial reads


@pytest.mark.parametrize(
    "indices",
    [[3, 1], slice(1, 4), slice(None, None, 2), slice(None, None, -1), [0, 0, 4], -1, 2, [-2], []],
)
def test_partial_read_matches_select(tmp_path, indices):
    data = make_data(with_mask=True)
    path = write_trajectories(tmp_path / "d.h5", data)
    part = read_trajectories(path, indices)
    expected = data.select(indices)
    np.testing.assert_array_equal(part.state, expected.state)
    np.testing.assert_array_equal(part.mask, expected.mask)
    assert part.variables == data.variables


def test_partial_read_does_not_check_rows_it_does_not_read(tmp_path):
    state = np.ones((4, 5, 2))
    state[0, 2, 1] = np.nan  # observed (no mask): row 0 breaks the schema
    path = write_raw(tmp_path / "d.h5", n=4, state=state)
    np.testing.assert_array_equal(read_trajectories(path, [1, 3]).state, np.ones((2, 5, 2)))
    with pytest.raises(TrajectoryFormatError, match=r"/state: .*state\[0, 2, 1\]"):
        read_trajectories(path)


def test_bad_indices(tmp_path):
    path = write_trajectories(tmp_path / "d.h5", make_data())
    with pytest.raises(IndexError, match="out of range"):
        read_trajectories(path, [5])
    with pytest.raises(ValueError, match="indices"):
        read_trajectories(path, [0.5])


def test_iter_batches_covers_every_row_once(tmp_path):
    data = make_data(np.float32, with_mask=True, n=7)
    path = write_trajectories(tmp_path / "d.h5", data)
    with TrajectoryFile(path) as f:
        assert (f.n_trajectories, f.n_times, f.n_variables) == (7, 7, 3)
        assert f.dtype == np.float32 and f.has_mask
        assert f.variables == data.variables and f.parameters["G"] == 1.25
        batches = list(f.iter_batches(3))
        with pytest.raises(ValueError, match="batch_size"):
            next(f.iter_batches(0))
    assert [b.n_trajectories for b in batches] == [3, 3, 1]
    np.testing.assert_array_equal(np.concatenate([b.state for b in batches]), data.state)
    np.testing.assert_array_equal(np.concatenate([b.mask for b in batches]), data.mask)
    # Metadata stay readable after close; data do not.
    assert f.n_trajectories == 7 and f.has_mask
    with pytest.raises(ValueError, match="closed"):
        f.read()


def test_file_opens_without_reading_state(tmp_path, monkeypatch):
    path = write_trajectories(tmp_path / "d.h5", make_data())
    reads = []
    original = h5py.Dataset.__getitem__

    def spy(self, key):
        reads.append(self.name)
        return original(self, key)

    monkeypatch.setattr(h5py.Dataset, "__getitem__", spy)
    with TrajectoryFile(path) as f:
        assert "/state" not in reads
        f.read([1])
    assert "/state" in reads


# ----------------------------------------------------------------------------- validation


def _nan_state(n=3, t=5, d=2):
    state = np.ones((n, t, d))
    state[2, 4, 1] = np.inf
    return state


BAD_FILES = {
    # name: (edits for write_raw, dataset/attribute named, rule)
    "format missing": ({"root": {"format": None}}, "'format'", "missing"),
    "format wrong": ({"root": {"format": "something.else"}}, "'format'", "must be"),
    "version missing": ({"root": {"version": None}}, "'version'", "missing"),
    "version unsupported": ({"root": {"version": 2}}, "'version'", "unsupported version 2"),
    "time missing": ({"time": None}, "/time", "missing"),
    "state missing": ({"state": None}, "/state", "missing"),
    "time 2-D": ({"time": np.zeros((5, 1))}, "/time", "1-D"),
    "state 2-D": ({"state": np.zeros((3, 5))}, "/state", "3-D"),
    "mask 2-D": ({"mask": np.ones((3, 5), dtype=bool)}, "/mask", "3-D"),
    "state T mismatch": ({"state": np.zeros((3, 4, 2))}, "/state", "/time has 5"),
    "mask shape mismatch": ({"mask": np.ones((3, 5, 3), dtype=bool)}, "/mask", "differs"),
    "time not float": ({"time": np.arange(5)}, "/time", "float"),
    "state int": ({"state": np.zeros((3, 5, 2), dtype=np.int32)}, "/state", "float32 or float64"),
    "state float16": (
        {"state": np.zeros((3, 5, 2), dtype=np.float16)},
        "/state",
        "float32 or float64",
    ),
    "mask not bool": ({"mask": np.ones((3, 5, 2), dtype=np.uint8)}, "/mask", "bool"),
    "time repeats": ({"time": np.array([0.0, 1.0, 1.0, 2.0, 3.0])}, "/time", "strictly increasing"),
    "time decreasing": ({"time": np.linspace(1.0, 0.0, 5)}, "/time", "strictly increasing"),
    "time NaN": ({"time": np.array([0.0, 1.0, np.nan, 2.0, 3.0])}, "/time", "finite"),
    "time units missing": ({"time_units": None}, "/time attribute 'units'", "missing"),
    "variables missing": ({"variables": None}, "'variables'", "missing"),
    "variables wrong length": ({"variables": ["a", "b", "c"]}, "'variables'", "2 expected"),
    "variables repeat": ({"variables": ["a", "a"]}, "'variables'", "unique"),
    "state units wrong length": ({"state_units": ["m", "m", "s"]}, "/state attribute 'units'", ""),
    "inf observed (no mask)": ({"state": _nan_state()}, "/state", r"finite.*state\[2, 4, 1\]"),
    "NaN observed (mask)": (
        {"state": _nan_state(), "mask": np.ones((3, 5, 2), dtype=bool)},
        "/state",
        "where /mask is True",
    ),
    "parameter units missing": ({"parameters": {"G": (1.0, None)}}, "/parameters/G", "units"),
    "parameter not numeric": ({"parameters": {"G": ("big", "1")}}, "/parameters/G", "numeric"),
    "fit window reversed": ({"root": {"fit_window": [1.0, 0.0]}}, "'fit_window'", "t_start <"),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_bad_file_is_refused_naming_dataset_and_rule(tmp_path, case):
    edits, location, rule = BAD_FILES[case]
    path = write_raw(tmp_path / "bad.h5", **edits)
    with pytest.raises(TrajectoryFormatError) as info:
        read_trajectories(path)
    message = str(info.value)
    assert str(path) in message
    assert location in message
    assert info.value.location in message
    assert re.search(rule, message), message
    # describe() refuses the same file the same way.
    with pytest.raises(TrajectoryFormatError, match=re.escape(location)):
        describe(path)


def test_nan_where_unobserved_is_fine(tmp_path):
    mask = np.ones((3, 5, 2), dtype=bool)
    mask[2, 4, 1] = False
    path = write_raw(tmp_path / "ok.h5", state=_nan_state(), mask=mask)
    back = read_trajectories(path)
    assert np.isinf(back.state[2, 4, 1]) and not back.mask[2, 4, 1]


def test_values_are_checked_chunk_by_chunk(tmp_path, monkeypatch):
    state = np.ones((6, 5, 2))
    state[5, 0, 0] = np.nan
    path = write_raw(tmp_path / "d.h5", n=6, state=state)
    # One row per scan: the NaN is found in the last block, and named by its file row.
    monkeypatch.setattr(traj_module, "_SCAN_BYTES", 1)
    blocks = []
    original = h5py.Dataset.__getitem__

    def spy(self, key):
        out = original(self, key)
        if self.name == "/state":
            blocks.append(out.shape[0])
        return out

    monkeypatch.setattr(h5py.Dataset, "__getitem__", spy)
    with TrajectoryFile(path) as f, pytest.raises(TrajectoryFormatError, match=r"state\[5, 0, 0\]"):
        f.validate()
    assert blocks == [1] * 6


def test_missing_and_non_hdf5_files(tmp_path):
    missing = tmp_path / "nope.h5"
    with pytest.raises(FileNotFoundError, match=r"nope\.h5"):
        read_trajectories(missing)
    with pytest.raises(FileNotFoundError, match=r"nope\.h5"):
        describe(missing)
    text = tmp_path / "text.h5"
    text.write_text("not hdf5")
    with pytest.raises(TrajectoryFormatError, match=r"text\.h5: file: is not an HDF5 file"):
        read_trajectories(text)
    with pytest.raises(TrajectoryFormatError, match="not a regular file"):
        read_trajectories(tmp_path)


def _bad_in_memory():
    def edit(**changes):
        data = make_data(with_mask=True)
        for k, v in changes.items():
            setattr(data, k, v)
        return data

    nan_observed = make_data()
    nan_observed.state[4, 6, 2] = np.nan
    return {
        "time decreasing": (edit(time=np.linspace(1.0, 0.0, 7)), "/time"),
        "time int": (edit(time=np.arange(7)), "/time"),
        "state T mismatch": (edit(time=np.linspace(0.0, 1.0, 6)), "/state"),
        "state int": (edit(state=np.zeros((5, 7, 3), dtype=int), mask=None), "/state"),
        "mask dtype": (edit(mask=np.ones((5, 7, 3), dtype=np.uint8)), "/mask"),
        "mask shape": (edit(mask=np.ones((5, 7, 2), dtype=bool)), "/mask"),
        "variables length": (edit(variables=["a", "b"]), "'variables'"),
        "state units length": (edit(state_units=["m"] * 2), "/state attribute 'units'"),
        "NaN observed": (nan_observed, "/state"),
        "units of unknown parameter": (edit(parameter_units={"mass": "kg"}), "/parameters"),
        "reserved attribute": (edit(attributes={"format": "x"}), "'format'"),
        "unstorable attribute": (edit(attributes={"x": {"a": 1}}), "'x'"),
    }


@pytest.mark.parametrize("case", list(_bad_in_memory()))
def test_write_validates_before_writing(tmp_path, case):
    data, location = _bad_in_memory()[case]
    path = tmp_path / "out.h5"
    with pytest.raises(TrajectoryFormatError) as info:
        write_trajectories(path, data)
    assert location in str(info.value) and "out.h5" in str(info.value)
    assert os.listdir(tmp_path) == []


# ----------------------------------------------------------------------------- describe


def test_describe(tmp_path):
    data = make_data(np.float32, with_mask=True)
    path = write_trajectories(tmp_path / "d.h5", data)
    text = describe(path)
    observed = 100.0 * data.mask.mean()
    for expected in (
        "system:        toy",
        "random numbers",
        "second line",
        "N = 5 trajectories, T = 7 times, D = 3 variables",
        "0 to 1.5 s",
        "fit window:    0 to 1 s",
        "q0  [m0]",
        "float32",
        f"{observed:.4g}% (from /mask)",
        "masses = [1. , 2. , 3.5]  [kg]",
        "G      = 1.25  [m^3 / (kg s^2)]",
        "note = hello",
        "KiB",
    ):
        assert expected in text, (expected, text)


# ----------------------------------------------------------------------------- three-body

K1, K2 = 0.200484, 7.239324  # the ACA paper's Alpha-Centauri scaling, written out again here
MASSES = [1.1, 1.1, 0.9]
R0 = [[0.0, 0.2, 0.0], [0.5, 0.0, 0.5], [0.0, 0.0, 0.5]]
V0 = [[0.0, 0.1, 0.0], [0.0, 0.0, 0.1], [0.1, 0.0, 0.0]]


@pytest.fixture(scope="module")
def default_threebody() -> Trajectories:
    # The paper's run (t_end = 2) with fewer output times: same solve, fewer samples.
    return simulate_threebody(n_times=21)


def test_threebody_default_layout(default_threebody):
    data = default_threebody
    assert data.state.shape == (1, 21, 18) and data.state.dtype == np.float64
    np.testing.assert_array_equal(data.time, np.linspace(0.0, 2.0, 21))
    assert data.variables[:4] == ["x1", "y1", "z1", "x2"]
    assert data.variables[9:12] == ["vx1", "vy1", "vz1"]
    assert data.system == "threebody" and data.mask is None
    assert data.parameters["G"] == pytest.approx(1.45136, abs=1e-5)
    assert data.parameters["G"] == K1 * K2
    np.testing.assert_array_equal(data.parameters["masses"], MASSES)
    assert data.parameter_units == {"masses": "mass", "G": "length^3 / (mass time^2)"}
    assert data.fit_window == (0.0, 1.0)
    y0 = np.concatenate([np.ravel(R0), K2 * np.ravel(V0)])
    np.testing.assert_array_equal(data.state[0, 0], y0)
    assert "not stored" not in data.description  # no noise: the stored state is the clean one


def test_threebody_matches_physode_dopri5(default_threebody):
    model = NBodyGravity(3, dim=3, G=K1 * K2, masses=MASSES, learn_masses=False).double()
    model.set_value("masses", MASSES)
    model.set_value("G", K1 * K2)
    y0 = torch.tensor(np.concatenate([np.ravel(R0), K2 * np.ravel(V0)]))
    t = torch.from_numpy(default_threebody.time)
    with torch.no_grad():
        ys = physode.odeint(model, y0, t, method="dopri5", rtol=1e-12, atol=1e-12)
    err = np.abs(ys.numpy() - default_threebody.state[0]).max()
    assert err < 1e-8, err
    # Energy is conserved along the reference solution.
    with torch.no_grad():
        energy = model.total_energy(torch.from_numpy(default_threebody.state[0])).numpy()
    assert np.abs(energy - energy[0]).max() < 1e-9 * abs(energy[0])


def test_threebody_matches_the_papers_scaled_equations(default_threebody):
    """Integrate the paper's form (dr/dt = K2 v', dv'/dt = K1 ...) without physode."""
    from scipy.integrate import solve_ivp

    m = np.array(MASSES)

    def paper_rhs(t, y):
        r, w = y[:9].reshape(3, 3), y[9:].reshape(3, 3)
        diff = r[None, :, :] - r[:, None, :]  # r_j - r_i at [i, j]
        dist3 = (np.square(diff).sum(-1) + np.eye(3)) ** 1.5
        acc = K1 * (m[None, :, None] * diff / dist3[..., None]).sum(1)
        return np.concatenate([K2 * w.ravel(), acc.ravel()])

    y0 = np.concatenate([np.ravel(R0), np.ravel(V0)])
    t = default_threebody.time
    sol = solve_ivp(paper_rhs, (0.0, 2.0), y0, "DOP853", t_eval=t, rtol=1e-13, atol=1e-13)
    positions, velocities = sol.y.T[:, :9], K2 * sol.y.T[:, 9:]
    np.testing.assert_allclose(default_threebody.state[0, :, :9], positions, rtol=0, atol=1e-8)
    np.testing.assert_allclose(default_threebody.state[0, :, 9:], velocities, rtol=0, atol=1e-8)


def short(**options) -> Trajectories:
    options = {"n_times": 6, "t_end": 0.05, **options}
    return simulate_threebody(**options)


def test_threebody_is_deterministic_for_a_seed():
    a = short(n_trajectories=3, noise=0.01, seed=3)
    b = short(n_trajectories=3, noise=0.01, seed=3)
    np.testing.assert_array_equal(a.state, b.state)
    c = short(n_trajectories=3, noise=0.01, seed=4)
    assert not np.array_equal(a.state, c.state)


def test_threebody_initial_conditions():
    default = short()
    mixed = short(n_trajectories=3, seed=1)
    np.testing.assert_array_equal(mixed.state[0], default.state[0])
    assert not np.allclose(mixed.state[1, 0], default.state[0, 0])
    assert not np.allclose(mixed.state[1, 0], mixed.state[2, 0])
    # Trajectory k depends only on (seed, k).
    np.testing.assert_array_equal(short(n_trajectories=2, seed=1).state, mixed.state[:2])
    all_random = short(n_trajectories=3, seed=1, random_initial=True)
    assert not np.allclose(all_random.state[0, 0], default.state[0, 0])
    np.testing.assert_array_equal(all_random.state[1:], mixed.state[1:])
    copies = short(n_trajectories=2, random_initial=False)
    np.testing.assert_array_equal(copies.state[1], default.state[0])
    # The perturbations have the documented size.
    y0 = short(n_trajectories=100, n_times=2, t_end=1e-3, seed=2, random_initial=True).state[:, 0]
    base = default.state[0, 0]
    assert np.std(y0[:, :9] - base[:9]) == pytest.approx(0.05, rel=0.1)
    ratio = y0[:, 9:][:, base[9:] != 0] / base[9:][base[9:] != 0]
    assert np.std(ratio) == pytest.approx(0.05, rel=0.1)
    assert np.mean(ratio) == pytest.approx(1.0, abs=0.01)


def test_threebody_noise_has_the_requested_std():
    clean = short(n_trajectories=2, n_times=100, seed=5)
    noisy = short(n_trajectories=2, n_times=100, seed=5, noise=0.1)
    residual = noisy.state - clean.state
    assert residual.std() == pytest.approx(0.1, rel=0.05)
    assert abs(residual.mean()) < 0.01
    assert "std 0.1" in noisy.description and "not stored" in noisy.description
    assert noisy.attributes["noise_std"] == 0.1


@pytest.mark.parametrize(
    "options, name",
    [
        ({"n_times": 1}, "n_times"),
        ({"n_trajectories": 0}, "n_trajectories"),
        ({"t_end": 0.0}, "t_end"),
        ({"noise": -1.0}, "noise"),
        ({"random_initial": "yes"}, "random_initial"),
    ],
)
def test_threebody_bad_options(options, name):
    with pytest.raises(ValueError, match=name):
        simulate_threebody(**options)


def test_simulate_registry(tmp_path):
    assert SIMULATORS["threebody"] is simulate_threebody
    with pytest.raises(ValueError, match="threebody"):
        simulate("hopper-that-does-not-exist", tmp_path / "x.h5")
    path = tmp_path / "tb.h5"
    data = simulate("threebody", path, n_times=4, t_end=0.01, noise=0.001)
    assert_same(data, read_trajectories(path))
    with pytest.raises(FileExistsError):
        simulate("threebody", path, overwrite=False, n_times=4, t_end=0.01)
