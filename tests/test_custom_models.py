"""Fitting the user's own system, from Python (``physode.fit``) and from a config that names
the user's file (``custom_systems.py:SIR``): parameters, resume, evaluate, plot, hybrids,
variable names, partial observation and the errors on the way."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr
from click.testing import CliRunner
from custom_systems import BETA, GAMMA, SIR, Correction, simulate

import physode
from physode.cli.main import main
from physode.datasets import Trajectories, write_trajectories
from physode.models import Hybrid, NBodyGravity
from physode.training import ConfigError, load_config
from physode.training.problem import FitSetupError

HERE = Path(__file__).resolve().parent
PNG = b"\x89PNG\r\n\x1a\n"
SOLVER = {"method": "dopri5", "grad": "aca", "rtol": 1e-8, "atol": 1e-10}
LBFGS = {"epochs": 4, "optimizer": "lbfgs", "lr": 1.0, "stop": {"rtol": 1e-9, "patience": 1}}

CONFIG = """\
data:
  path: sir.h5
  simulate: custom_systems.py:simulate
model:
  physics: {name: custom_systems.py:SIR, beta: 0.3, gamma: 0.2}
solver: {method: dopri5, grad: aca, rtol: 1.0e-8, atol: 1.0e-10}
train: {epochs: 4, optimizer: lbfgs, lr: 1.0, stop: {rtol: 1.0e-9, patience: 1}}
"""


def run_cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def user_folder(tmp_path: Path, config: str = CONFIG) -> Path:
    """A user's folder: their model file beside their config."""
    shutil.copy(HERE / "custom_systems.py", tmp_path / "custom_systems.py")
    (tmp_path / "fit.yaml").write_text(config)
    return tmp_path / "fit.yaml"


def sir_file(path: Path, **options) -> Path:
    write_trajectories(path, simulate(**options))
    return path


def relative_errors(parameters: dict) -> list[float]:
    return [abs(parameters["beta"] / BETA - 1), abs(parameters["gamma"] / GAMMA - 1)]


# ---------------------------------------------------------------------------- Python


def test_physode_fit_recovers_a_custom_physics_and_writes_the_run_directory(tmp_path):
    data = sir_file(tmp_path / "sir.h5")
    model = SIR(beta=0.3, gamma=0.2)
    result = physode.fit(
        model, data, solver=SOLVER, train=LBFGS, run_dir=tmp_path / "run", quiet=True
    )
    assert max(relative_errors(result.parameters)) < 1e-4
    assert all(isinstance(v, float) for v in result.parameters.values())
    assert model.beta.item() == pytest.approx(result.parameters["beta"], rel=1e-15)  # in place
    run = result.run_dir
    assert json.loads((run / "metrics.json").read_text()) == result.metrics
    assert json.loads((run / "params.json").read_text()) == result.parameters
    for name in ("config.yaml", "metrics.csv", "predictions.nc", "checkpoints/last.pt"):
        assert (run / name).is_file(), name
    for name in ("extrapolation.png", "error.png"):
        assert (run / "plots" / name).read_bytes()[:8] == PNG
    assert not (run / "plots" / "orbits.png").exists()  # a first-order model has no positions
    config = load_config(run / "config.yaml")
    assert config.model.python == "custom_systems:SIR"
    assert config.data.fit_window == (0.0, 20.0)  # the file's, recorded
    # Epochs stopped by train.stop: the metrics say so.
    assert result.metrics["stopped_early"]["epoch"] == result.epochs < 4


def test_physode_fit_resumes_bit_identically(tmp_path):
    data = sir_file(tmp_path / "sir.h5")
    adam = {"epochs": 6, "optimizer": "adam", "lr": 0.01}
    whole = physode.fit(SIR(), data, solver=SOLVER, train=adam, run_dir=tmp_path / "a", quiet=True)
    short = {**adam, "epochs": 3}
    physode.fit(SIR(), data, solver=SOLVER, train=short, run_dir=tmp_path / "b", quiet=True)
    again = physode.fit(
        SIR(), data, solver=SOLVER, train=adam, run_dir=tmp_path / "b", resume=True, quiet=True
    )
    assert again.parameters == whole.parameters
    a = torch.load(tmp_path / "a" / "checkpoints" / "last.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "b" / "checkpoints" / "last.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_physode_fit_checks_its_arguments_like_the_config(tmp_path):
    data = sir_file(tmp_path / "sir.h5")
    with pytest.raises(
        ConfigError, match=r"unknown key 'train.epoch' \(did you mean 'train.epochs'\?\)"
    ):
        physode.fit(SIR(), data, train={"epoch": 3}, run_dir=tmp_path / "r")
    with pytest.raises(ConfigError, match=r"solver.rtol: must be > 0"):
        physode.fit(SIR(), data, solver={"rtol": -1.0}, run_dir=tmp_path / "r")
    with pytest.raises(ConfigError, match=r"data.fit_window: must be \[start, end\]"):
        physode.fit(SIR(), data, data={"fit_window": [5, 1]}, run_dir=tmp_path / "r")
    with pytest.raises(ValueError, match=r"model: expected an nn\.Module"):
        physode.fit(lambda t, y: -y, data)
    with pytest.raises(ValueError, match="give the file once"):
        physode.fit(SIR(), data, data={"path": str(data)})
    with pytest.raises(ConfigError, match=r"data\.path: missing required key"):
        physode.fit(SIR())


# ---------------------------------------------------------------------------- the config


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("user")
    config = user_folder(folder)
    result = run_cli("fit", config, "-o", folder / "run", "-q")
    assert result.exit_code == 0, result.output
    return folder, result


def test_a_config_naming_the_users_file_fits_it(cli_run):
    folder, result = cli_run
    run = folder / "run"
    assert (folder / "sir.h5").is_file()  # simulated by the user's own simulator
    params = json.loads((run / "params.json").read_text())
    assert max(relative_errors(params)) < 1e-4
    assert "learned beta: 0.4999999" in result.output
    # The run's config records the reference with an absolute path: it works from anywhere.
    config = load_config(run / "config.yaml")
    assert config.model.physics.name == f"{folder / 'custom_systems.py'}:SIR"
    assert config.model.physics.arguments == {"beta": 0.3, "gamma": 0.2}
    assert config.data.simulate == f"{folder / 'custom_systems.py'}:simulate"


def test_evaluate_and_plot_a_run_of_the_users_model(cli_run):
    folder, _ = cli_run
    run = folder / "run"
    result = run_cli("evaluate", run, "--method", "tsit5", "--rtol", "1e-10", "--atol", "1e-12")
    assert result.exit_code == 0, result.output
    (path,) = (run / "evaluations").glob("tsit5-*.json")
    assert json.loads(path.read_text())["fit_mse"] < 1e-12
    (run / "plots" / "extrapolation.png").unlink()
    result = run_cli("plot", run)
    assert result.exit_code == 0, result.output
    assert (run / "plots" / "extrapolation.png").read_bytes()[:8] == PNG


def test_plot_needs_only_predictions_nc(cli_run, tmp_path):
    folder, _ = cli_run
    alone = tmp_path / "copy"
    alone.mkdir()
    shutil.copy(folder / "run" / "predictions.nc", alone / "predictions.nc")
    result = run_cli("plot", alone)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (alone / "plots").iterdir()) == ["error.png", "extrapolation.png"]


def test_a_resumed_cli_fit_of_the_users_model_is_bit_identical(tmp_path):
    config = user_folder(
        tmp_path, CONFIG.replace("optimizer: lbfgs, lr: 1.0", "optimizer: adam, lr: 0.01")
    )
    whole = run_cli("fit", config, "-o", tmp_path / "whole", "-q")
    assert whole.exit_code == 0, whole.output
    first = run_cli("fit", config, "-o", tmp_path / "part", "-q", "--set", "train.epochs=2")
    assert first.exit_code == 0, first.output
    resumed = run_cli("fit", config, "-o", tmp_path / "part", "-q", "--resume")
    assert resumed.exit_code == 0, resumed.output
    a = torch.load(tmp_path / "whole" / "checkpoints" / "last.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "part" / "checkpoints" / "last.pt", weights_only=True)["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_python_run_is_plotted_but_not_rebuilt_from_its_config(tmp_path):
    data = sir_file(tmp_path / "sir.h5")
    run = tmp_path / "run"
    physode.fit(SIR(), data, solver=SOLVER, train={"epochs": 1}, run_dir=run, quiet=True)
    result = run_cli("evaluate", run)
    assert result.exit_code != 0
    assert "model.python: the model of this run (custom_systems:SIR) was given to physode.fit" in (
        result.output
    )
    assert "Traceback" not in result.output
    scores = physode.evaluate(run, model=SIR(), method="tsit5")
    assert scores["solver"]["method"] == "tsit5" and scores["fit_mse"] >= 0
    assert run_cli("plot", run).exit_code == 0


# ---------------------------------------------------------------------------- hybrids


def test_a_hybrid_with_the_users_neural_term_learns_what_the_physics_lacks(tmp_path):
    # The data has waning immunity (R back to S at w = 0.05), which SIR cannot express;
    # the hybrid's network takes it up and fits the data far better than SIR alone.
    text = CONFIG.replace("custom_systems.py:simulate", "custom_systems.py:simulate\n"
                          "  simulate_options: {waning: 0.05}")  # fmt: skip
    text = text.replace(
        "gamma: 0.2}", "gamma: 0.2}\n  neural: {name: custom_systems.py:Correction, width: 8}"
    )
    text = text.replace("epochs: 4", "epochs: 6")
    config = user_folder(tmp_path, text)
    hybrid = run_cli("fit", config, "-o", tmp_path / "hybrid", "-q")
    assert hybrid.exit_code == 0, hybrid.output
    physics = run_cli("fit", config, "-o", tmp_path / "physics", "-q", "--set", "model.neural=null")
    assert physics.exit_code == 0, physics.output
    loss = {
        r: json.loads((tmp_path / r / "metrics.json").read_text())["fit_mse"]
        for r in ("hybrid", "physics")
    }
    assert loss["hybrid"] < 0.1 * loss["physics"]
    recorded = load_config(tmp_path / "hybrid" / "config.yaml").model.neural
    # The sizes came from the data (3 variables; a first-order physics): recorded as built.
    assert recorded.arguments == {"in_features": 3, "out_features": 3, "width": 8}
    ckpt = torch.load(tmp_path / "hybrid" / "checkpoints" / "last.pt", weights_only=True)
    assert any(k.startswith("model.neural.net.") for k in ckpt["model"])


def test_physode_fit_takes_a_hybrid_object(tmp_path):
    data = sir_file(tmp_path / "sir.h5", waning=0.05)
    model = Hybrid(SIR(), Correction(3, 3))
    result = physode.fit(
        model, data, solver=SOLVER, train={**LBFGS, "epochs": 2}, run_dir=tmp_path / "r", quiet=True
    )
    assert set(result.parameters) == {"beta", "gamma"}
    assert result.metrics["fit_mse"] < 1e-3
    assert any(n.startswith("neural.") and p.abs().sum() > 0 for n, p in model.named_parameters())


# ---------------------------------------------------------------------------- variables by name


def test_variables_in_another_order_are_reordered(tmp_path):
    data = sir_file(tmp_path / "rsi.h5", order=("R", "S", "I"))
    result = physode.fit(
        SIR(beta=0.3, gamma=0.2), data, solver=SOLVER, train=LBFGS, run_dir=tmp_path / "r"
    )
    assert max(relative_errors(result.parameters)) < 1e-4
    with xr.open_dataset(result.run_dir / "predictions.nc", engine="h5netcdf") as ds:
        assert list(ds["variable"].values) == ["S", "I", "R"]  # the model's order


def test_the_reordering_is_said(tmp_path, capsys):
    data = sir_file(tmp_path / "rsi.h5", order=("R", "S", "I"))
    physode.fit(SIR(), data, train={"epochs": 1}, run_dir=tmp_path / "r")
    assert (
        "the variables are in another order than the model's; reordered to the model's: S, I, R"
        in (capsys.readouterr().err)
    )


def test_variables_with_other_names_are_refused_listing_both(tmp_path):
    data = simulate()
    data.variables = ["S", "I", "D"]
    write_trajectories(tmp_path / "sid.h5", data)
    with pytest.raises(FitSetupError) as info:
        physode.fit(SIR(), tmp_path / "sid.h5", run_dir=tmp_path / "r")
    message = str(info.value)
    assert "/state variables (S, I, D) do not match the model's (S, I, R)" in message
    assert "the file lacks R; the model lacks D" in message
    assert not (tmp_path / "r" / "checkpoints" / "last.pt").exists()


class Unnamed(torch.nn.Module):
    """A plain network right-hand side: default names, matched by position."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(size, size)
        self.state_size = size

    def variable_names(self) -> list[str]:
        return [f"y{i}" for i in range(self.state_size)]

    def forward(self, t, y):
        return self.linear(y)


def test_a_model_with_default_names_is_matched_by_position_and_count(tmp_path):
    data = sir_file(tmp_path / "sir.h5")
    result = physode.fit(Unnamed(3), data, train={"epochs": 1}, run_dir=tmp_path / "ok", quiet=True)
    assert result.parameters == {}
    with pytest.raises(
        FitSetupError, match=r"/state has 3 variables \(S, I, R\) but the model has 4"
    ):
        physode.fit(Unnamed(4), data, run_dir=tmp_path / "bad")


def test_a_model_that_returns_the_wrong_shape_is_refused_before_the_fit(tmp_path):
    data = sir_file(tmp_path / "sir.h5")
    wrong = BrokenCall(torch.nn.Linear(3, 2))
    with pytest.raises(
        FitSetupError,
        match=r"model: returned dy/dt of shape \(1, 2\) for a state of shape \(1, 3\)",
    ):
        physode.fit(wrong, data, run_dir=tmp_path / "r")
    broken = torch.nn.Sequential(torch.nn.Linear(5, 3))
    with pytest.raises(FitSetupError, match=r"model: evaluating it on a state of shape \(1, 3\)"):
        physode.fit(BrokenCall(broken), data, run_dir=tmp_path / "r2")


class BrokenCall(torch.nn.Module):
    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, t, y):
        return self.net(y)


# ---------------------------------------------------------------------------- partial observation


def _orbits(path: Path) -> Path:
    """Three softened bodies in a plane over 3 time units, positions only (the file's /mask)."""
    from scipy.integrate import solve_ivp

    true = NBodyGravity(3, dim=2, masses=[1.0, 0.6, 0.4], softening=0.1).double()
    q0 = np.array([[0.0, 0.0], [1.0, 0.0], [-0.6, 0.8]])
    v0 = np.array([[0.0, -0.2], [0.0, 0.9], [-0.7, -0.3]])
    y0 = np.concatenate([q0.ravel(), v0.ravel()])

    def rhs(t, y):
        with torch.no_grad():
            return true(torch.tensor(t), torch.tensor(y)).numpy()

    time = np.linspace(0.0, 3.0, 61)
    state = solve_ivp(rhs, (0, 3), y0, t_eval=time, method="DOP853", rtol=1e-12, atol=1e-12).y.T
    mask = np.zeros((1, *state.shape), dtype=bool)
    mask[..., :6] = True
    write_trajectories(
        path,
        Trajectories(
            time=time,
            state=np.where(mask, state[None], np.nan),
            variables=true.variable_names(),
            mask=mask,
            parameters={"masses": [1.0, 0.6, 0.4]},
            attributes={"fit_window": [0.0, 2.0]},
        ),
    )
    return path


def test_a_positions_only_nbody_fit_learns_the_velocities_and_recovers_the_masses(tmp_path):
    data = _orbits(tmp_path / "orbits.h5")
    model = NBodyGravity(3, dim=2, masses=[0.8, 0.8, 0.8], softening=0.1)
    train = {**LBFGS, "epochs": 8, "learn_initial_state": True}
    result = physode.fit(
        model,
        data,
        solver={"rtol": 1e-9, "atol": 1e-10},
        train=train,
        run_dir=tmp_path / "r",
        quiet=True,
    )
    errors = result.metrics["true_parameters"]["masses"]["relative_error"]
    assert max(errors) < 1e-5
    initial = torch.load(tmp_path / "r" / "checkpoints" / "last.pt", weights_only=True)["model"][
        "initial"
    ]
    torch.testing.assert_close(
        initial[0, 6:],
        torch.tensor([0.0, -0.2, 0.0, 0.9, -0.7, -0.3], dtype=torch.float64),
        atol=1e-5,
        rtol=0,
    )
    with xr.open_dataset(result.run_dir / "predictions.nc", engine="h5netcdf") as ds:
        assert not ds["mask"].values[..., 6:].any()  # the velocities were never seen
        assert list(ds["role"].values) == ["position"] * 6 + ["velocity"] * 6
    assert (result.run_dir / "plots" / "orbits.png").exists()


def test_data_observed_fits_a_subset_and_needs_the_initial_state_learned(tmp_path):
    data = sir_file(tmp_path / "sir.h5")
    observed = {"observed": ["S", "I"]}
    with pytest.raises(FitSetupError) as info:
        physode.fit(SIR(), data, data=observed, run_dir=tmp_path / "r")
    assert "is not fully observed (R unobserved, through /mask or data.observed)" in str(info.value)
    assert "set train.learn_initial_state: true" in str(info.value)
    # (L-BFGS's line search at lr 1 tries initial states whose solve fails.)
    train = {**LBFGS, "lr": 0.5, "learn_initial_state": True}
    result = physode.fit(
        SIR(0.3, 0.2),
        data,
        data=observed,
        solver=SOLVER,
        train=train,
        run_dir=tmp_path / "r2",
        quiet=True,
    )
    # R enters neither S nor I: its unobserved start does not matter to the fit.
    assert max(relative_errors(result.parameters)) < 1e-4


# ---------------------------------------------------------------------------- outputs


def test_metrics_csv_keeps_every_digit_of_vector_parameters(tmp_path):
    data = _orbits(tmp_path / "orbits.h5")
    model = NBodyGravity(3, dim=2, masses=[0.8, 0.9, 1.1], softening=0.1)
    result = physode.fit(
        model,
        data,
        train={"epochs": 1, "learn_initial_state": True},
        run_dir=tmp_path / "r",
        quiet=True,
    )
    with open(result.run_dir / "metrics.csv", newline="") as fh:
        (row,) = csv.DictReader(fh)
    assert [float(row[f"masses_{i}"]) for i in range(3)] == result.parameters["masses"]


# ---------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            ("custom_systems.py:SIR", "nothere.py:SIR"),
            "model.physics.name: cannot load 'nothere.py:SIR': {folder}/nothere.py does not exist",
        ),
        (
            ("custom_systems.py:SIR", "custom_systems.py:SRI"),
            "custom_systems.py has no 'SRI' (did you mean 'SIR'?); "
            "it defines Correction, FragileSIR, NotAModule, SIR, simulate",
        ),
        (
            ("custom_systems.py:SIR", "custom_systems.py:NotAModule"),
            "model.physics.name: custom_systems.py:NotAModule: "
            "NotAModule is not an nn.Module subclass",
        ),
        (
            ("custom_systems.py:SIR", "no_such_package.models:SIR"),
            "cannot load 'no_such_package.models:SIR': "
            "cannot import module 'no_such_package.models'",
        ),
        (
            ("beta: 0.3", "betta: 0.3"),
            "model.physics.betta: unknown argument of SIR (did you mean 'beta'?); "
            "its arguments: beta, gamma (line 5)",
        ),
        (
            ("beta: 0.3", "beta: fast"),
            "model.physics.beta: expected a number, got 'fast' (str) (line 5)",
        ),
        (
            ("beta: 0.3", "beta: -0.3"),
            "model.physics (SIR): parameter 'beta': constraint 'positive' needs values > 0",
        ),
        (("custom_systems.py:simulate", "custom_systems.py:simulat"), "data.simulate: cannot load"),
        (("name: custom_systems.py:SIR, ", ""), "model.physics.name: missing required key"),
    ],
    ids=[
        "missing-file",
        "missing-class",
        "not-a-module",
        "missing-module",
        "unknown-argument",
        "wrong-type",
        "refused-value",
        "missing-simulator",
        "no-name",
    ],
)
def test_bad_references_and_arguments_are_one_line_errors(tmp_path, edit, message):
    config = user_folder(tmp_path, CONFIG.replace(*edit))
    result = run_cli("fit", config, "-o", tmp_path / "run")
    assert result.exit_code != 0
    assert message.format(folder=tmp_path) in result.output
    assert "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_an_importable_module_is_named_as_package_module(tmp_path):
    # The tests' folder is on sys.path: custom_systems imports as a module.
    text = CONFIG.replace("custom_systems.py:SIR", "custom_systems:SIR")
    config = user_folder(tmp_path, text)
    result = run_cli("fit", config, "-o", tmp_path / "run", "-q")
    assert result.exit_code == 0, result.output
    assert load_config(tmp_path / "run" / "config.yaml").model.physics.name == "custom_systems:SIR"
    assert max(relative_errors(json.loads((tmp_path / "run" / "params.json").read_text()))) < 1e-4


def test_a_simulator_must_return_trajectories(tmp_path):
    config = user_folder(tmp_path, CONFIG.replace("custom_systems.py:simulate", "numpy:zeros"))
    config.write_text(
        config.read_text().replace("data:\n", "data:\n  simulate_options: {shape: 3}\n")
    )
    result = run_cli("fit", config, "-o", tmp_path / "run")
    assert result.exit_code != 0
    assert "returned a ndarray, not physode.datasets.Trajectories" in result.output


def test_a_python_record_excludes_a_described_model(tmp_path):
    text = CONFIG.replace("model:\n", "model:\n  python: mine:Model\n")
    result = run_cli("fit", user_folder(tmp_path, text), "-o", tmp_path / "run")
    assert result.exit_code != 0
    assert "model.python: records a model from Python: set model.physics to null" in result.output


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("class SIR(\n", "custom_systems.py, line 1: syntax error"),
        (
            "import torch\nraise RuntimeError('no GPU here')\n",
            "importing it raised RuntimeError: no GPU here (line 2)",
        ),
    ],
    ids=["syntax-error", "raises-on-import"],
)
def test_a_user_file_that_fails_to_import_says_why_and_where(tmp_path, source, message):
    config = user_folder(tmp_path)
    (tmp_path / "custom_systems.py").write_text(source)
    result = run_cli("fit", config, "-o", tmp_path / "run")
    assert result.exit_code != 0
    assert "model.physics.name: cannot load 'custom_systems.py:SIR'" in result.output
    assert message in result.output and "Traceback" not in result.output
