"""Fitting: the config file, predictions as xarray datasets, scores and plots."""

from __future__ import annotations

from .config import (
    Config,
    ConfigError,
    config_from_dict,
    config_to_dict,
    config_to_yaml,
    load_config,
    resolve_device,
    resolve_dtype,
    resolve_run_dir,
)
from .outputs import add_region, extrapolation_scores, predictions_dataset, write_predictions
from .plots import plot_error, plot_extrapolation, plot_orbits, plot_predictions

__all__ = [
    "Config",
    "ConfigError",
    "add_region",
    "config_from_dict",
    "config_to_dict",
    "config_to_yaml",
    "extrapolation_scores",
    "load_config",
    "plot_error",
    "plot_extrapolation",
    "plot_orbits",
    "plot_predictions",
    "predictions_dataset",
    "resolve_device",
    "resolve_dtype",
    "resolve_run_dir",
    "write_predictions",
]
