"""Predictions datasets (NetCDF via h5netcdf), their scores, and the PNG plots."""

from __future__ import annotations

import struct

import matplotlib.image
import numpy as np
import pytest
import xarray as xr

import physode
from physode.training import (
    add_region,
    extrapolation_scores,
    plot_predictions,
    predictions_dataset,
    write_predictions,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
NAMES = ["x1", "y1", "x2", "y2", "vx1", "vy1", "vx2", "vy2"]


def make_dataset(mask: bool = False, names: list[str] = NAMES) -> xr.Dataset:
    """Two trajectories of circular orbits, 41 times in [0, 2], fit window [0, 1]."""
    time = np.linspace(0.0, 2.0, 41)
    n = len(names)
    phase = np.arange(n)[None, None, :] + np.array([0.0, 0.3])[:, None, None]
    true = np.cos(2.0 * time[None, :, None] + phase)
    predicted = true + 1e-3 * np.exp(time)[None, :, None]
    observed = None
    if mask:
        observed = np.random.default_rng(0).random(true.shape) > 0.25
        true = np.where(observed, true, np.nan)
    units = {v: ("au/yr" if v.startswith("v") else "au") for v in names}
    roles = ["velocity" if v.startswith("v") else "position" for v in names]
    return predictions_dataset(
        time,
        true,
        predicted,
        names,
        fit_end=1.0,
        time_units="yr",
        state_units=units,
        config_yaml="solver:\n  grad: aca\n",
        mask=observed,
        attrs={"grad": "aca", "epochs": 3, "learned": True},
        trajectory_ids=[4, 7],
        roles=roles if len(names) % 2 == 0 and "x1" in names else None,
    )


def test_dataset_layout():
    ds = make_dataset()
    assert dict(ds.sizes) == {"trajectory": 2, "time": 41, "variable": 8}
    for name in ("true", "predicted", "error"):
        assert ds[name].dims == ("trajectory", "time", "variable")
        assert ds[name].dtype == np.float64
    assert "mask" not in ds
    np.testing.assert_array_equal(ds["error"], ds["predicted"] - ds["true"])
    assert ds["trajectory"].values.tolist() == [4, 7]
    assert ds["time"].dtype == np.float64
    assert ds["variable"].values.tolist() == NAMES
    assert ds["variable_units"].values.tolist() == ["au"] * 4 + ["au/yr"] * 4
    assert ds["role"].values.tolist() == ["position"] * 4 + ["velocity"] * 4
    for name in [*ds.data_vars, *ds.coords]:
        assert ds[name].attrs.get("long_name"), name
    # CF units only where they are UDUNITS: the variables' differ, so none on the data.
    assert ds["time"].attrs["units"] == "yr" and ds.attrs["time_units"] == "yr"
    assert "units" not in ds["true"].attrs
    assert "units" not in ds["variable"].attrs and "units" not in ds["region"].attrs
    regions = ds["region"].values
    assert ds["region"].dims == ("time",)
    assert set(regions[:21]) == {"fit"} and set(regions[21:]) == {"extrapolation"}
    attrs = ds.attrs
    assert attrs["fit_window_end"] == 1.0
    np.testing.assert_array_equal(attrs["fit_window"], [0.0, 1.0])
    assert attrs["config"] == "solver:\n  grad: aca\n"
    assert attrs["Conventions"] == "CF-1.10"
    assert attrs["source"] == f"physode {physode.__version__}"
    assert attrs["title"]
    assert (attrs["grad"], attrs["epochs"], attrs["learned"]) == ("aca", 3, 1)


def test_dataset_input_checks():
    time = np.linspace(0, 1, 5)
    y = np.zeros((1, 5, 2))
    with pytest.raises(ValueError, match="predicted"):
        predictions_dataset(time, y, y[:, :4], ["a", "b"], fit_end=0.5)
    with pytest.raises(ValueError, match="variables"):
        predictions_dataset(time, y, y, ["a"], fit_end=0.5)
    with pytest.raises(ValueError, match="time"):
        predictions_dataset(time[::-1], y, y, ["a", "b"], fit_end=0.5)
    with pytest.raises(ValueError, match="fit_end"):
        predictions_dataset(time, y, y, ["a", "b"], fit_end=-1.0)
    with pytest.raises(ValueError, match="mask"):
        predictions_dataset(time, y, y, ["a", "b"], fit_end=0.5, mask=np.ones((1, 4, 2), bool))
    # one trajectory given as (time, variable)
    ds = predictions_dataset(time, y[0], y[0], ["a", "b"], fit_end=0.5)
    assert dict(ds.sizes) == {"trajectory": 1, "time": 5, "variable": 2}
    # No units given: none claimed (not "1", which would say dimensionless).
    assert "units" not in ds["true"].attrs and "units" not in ds["time"].attrs
    assert ds["role"].values.tolist() == ["state", "state"]
    with pytest.raises(ValueError, match="roles"):
        predictions_dataset(time, y, y, ["a", "b"], fit_end=0.5, roles=["position", "speed"])


@pytest.mark.parametrize(
    ("units", "time_units", "cf", "cf_time"),
    [
        ("m", "s", "m", "s"),
        ("m s-2", "days", "m s-2", "days"),
        ("scaled length", "scaled time", None, None),
        ("mass", "", None, None),
    ],
)
def test_units_are_cf_only_when_udunits_reads_them(units, time_units, cf, cf_time):
    time = np.linspace(0, 1, 5)
    y = np.zeros((1, 5, 2))
    ds = predictions_dataset(
        time, y, y, ["a", "b"], fit_end=0.5, state_units=units, time_units=time_units
    )
    assert ds["true"].attrs.get("units") == cf and ds["error"].attrs.get("units") == cf
    assert ds["time"].attrs.get("units") == cf_time
    assert ds["variable_units"].values.tolist() == [units, units]  # the data's text, kept


def test_region_follows_the_window():
    ds = add_region(make_dataset(), fit_window=(0.5, 1.5))
    time, regions = ds["time"].values, ds["region"].values
    assert set(regions[time < 0.5]) == {"before fit"}
    assert set(regions[(time >= 0.5) & (time <= 1.5)]) == {"fit"}
    assert set(regions[time > 1.5]) == {"extrapolation"}
    assert ds.attrs["fit_window_end"] == 1.5


@pytest.mark.parametrize("mask", [False, True])
def test_write_and_read_back(tmp_path, mask):
    ds = make_dataset(mask=mask)
    path = write_predictions(ds, tmp_path / "run" / "predictions.nc")
    assert path == tmp_path / "run" / "predictions.nc"
    assert sorted(p.name for p in path.parent.iterdir()) == ["predictions.nc"]
    reference = tmp_path / "reference"
    reference.touch()
    assert path.stat().st_mode == reference.stat().st_mode  # usual permissions, not 0600
    with xr.open_dataset(path, engine="h5netcdf") as back:
        back = back.load()
    xr.testing.assert_identical(back, ds)
    for name in [*ds.data_vars, *ds.coords]:
        assert back[name].attrs == ds[name].attrs
    assert back.attrs["config"] == ds.attrs["config"]
    assert float(back.attrs["fit_window_end"]) == 1.0
    if mask:
        assert back["mask"].dtype == bool


def test_failed_write_keeps_the_old_file(tmp_path, monkeypatch):
    path = write_predictions(make_dataset(), tmp_path / "predictions.nc")
    before = path.read_bytes()

    def broken(self, target, **kwargs):
        with open(target, "wb") as f:
            f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(xr.Dataset, "to_netcdf", broken)
    with pytest.raises(OSError, match="disk full"):
        write_predictions(make_dataset(), path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["predictions.nc"]


def scored(mask=None, fit_end=1.0):
    # errors c_t * w_v with c = 1 inside the fit window, 2 after; w = 1, 2, 3
    time = np.array([0.0, 0.5, 1.0, 1.5, 2.0])
    c = np.array([1.0, 1.0, 1.0, 2.0, 2.0])
    w = np.array([1.0, 2.0, 3.0])
    true = np.zeros((1, 5, 3))
    predicted = (c[:, None] * w[None, :])[None]
    if mask is not None:
        true = np.where(mask, true, np.nan)
    roles = ["position", "position", "velocity"]
    return predictions_dataset(
        time, true, predicted, ["x1", "y1", "vx1"], fit_end=fit_end, mask=mask, roles=roles
    )


def test_scores_known_values():
    scores = extrapolation_scores(scored())
    # squared errors per time: c^2 * (1, 4, 9)
    assert scores["fit_mse"] == pytest.approx(14 / 3)
    assert scores["extrapolation_mse"] == pytest.approx(4 * 14 / 3)
    assert scores["mse"] == pytest.approx((3 * 14 / 3 + 2 * 56 / 3) / 5)
    # positions x1, y1: 5 c^2 per time, averaged over the 5 times
    assert scores["position_score"] == pytest.approx((3 * 5 + 2 * 20) / 5)
    assert (scores["n_fit_times"], scores["n_extrapolation_times"]) == (3, 2)
    only_vx = extrapolation_scores(scored(), position_variables=["vx1"])
    assert only_vx["position_score"] == pytest.approx((3 * 9 + 2 * 36) / 5)
    with pytest.raises(ValueError, match="position_variables"):
        extrapolation_scores(scored(), position_variables=["z1"])
    # Without positions (a first-order model) there is no position score.
    plain = scored().drop_vars("role")
    assert extrapolation_scores(plain)["position_score"] is None


def test_scores_with_mask():
    mask = np.ones((1, 5, 3), dtype=bool)
    mask[0, 3, 0] = False  # x1 unobserved at t = 1.5 (its true value is NaN)
    scores = extrapolation_scores(scored(mask))
    assert scores["fit_mse"] == pytest.approx(14 / 3)
    assert scores["extrapolation_mse"] == pytest.approx((4 * (4 + 9) + 4 * 14) / 5)
    # t = 1.5 drops out: not every position is observed there
    assert scores["position_score"] == pytest.approx((3 * 5 + 20) / 4)


def test_scores_without_extrapolation():
    scores = extrapolation_scores(scored(fit_end=2.0))
    assert scores["extrapolation_mse"] is None
    assert scores["n_extrapolation_times"] == 0
    assert scores["fit_mse"] == pytest.approx(scores["mse"])


def png_size(path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_plots_are_valid_pngs(tmp_path):
    ds = make_dataset(mask=True)
    paths = plot_predictions(ds, tmp_path / "plots", trajectory=1)
    assert [p.name for p in paths] == ["extrapolation.png", "orbits.png", "error.png"]
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == sorted(p.name for p in paths)
    reference = tmp_path / "reference"
    reference.touch()
    for path in paths:
        assert path.stat().st_mode == reference.stat().st_mode
        width, height = png_size(path)
        image = matplotlib.image.imread(path)
        assert image.shape[:2] == (height, width)
        assert width >= 400 and height >= 300
        assert image.std() > 0  # something was drawn


def test_plots_from_a_file_and_without_orbits(tmp_path):
    ds = make_dataset(names=["q", "p"])
    path = write_predictions(ds, tmp_path / "predictions.nc")
    with xr.open_dataset(path, engine="h5netcdf") as back:
        paths = plot_predictions(back, tmp_path)
    assert [p.name for p in paths] == ["extrapolation.png", "error.png"]
    assert not (tmp_path / "orbits.png").exists()
    for p in paths:
        png_size(p)
    with pytest.raises(ValueError, match="trajectory"):
        plot_predictions(ds, tmp_path, trajectory=5)
