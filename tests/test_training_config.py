"""The ``physode fit`` config: defaults, parsing, error messages, overrides, paths, round trip."""

from __future__ import annotations

import textwrap
from datetime import datetime
from pathlib import Path

import pytest
import torch
import yaml

from physode.training.config import (
    Config,
    ConfigError,
    config_from_dict,
    config_to_dict,
    config_to_yaml,
    load_config,
    parse_yaml,
    resolve_device,
    resolve_dtype,
    resolve_run_dir,
)

EXAMPLE = """\
data:
  path: threebody.h5          # trajectory file
  simulate: threebody         # create the file with this simulator if it is missing
  simulate_options: {}        # kwargs for the simulator
  fit_window: [0.0, 1.0]      # fit on these times; later times are extrapolation
  trajectories: null          # trajectory indices to use (null = all)
  observed: null              # variable names the loss sees (null = all)
model:
  physics:                    # null for neural-only
    name: nbody
    n_bodies: 3
    dim: 3
    G: 1.45136
    softening: 0.0
    masses: [1.0, 1.0, 1.0]
    learn_masses: true
  neural: null                # or {hidden: [64, 64], activation: tanh, penalty: 0.0}
solver: {method: dopri5, grad: aca, rtol: 1.0e-7, atol: 1.0e-8, step_size: null, max_steps: null}
train: {epochs: 100, lr: 0.05, seed: 0, dtype: float64, device: auto, optimizer: adam,
        schedule: null, batch_size: null, loss: mse, log_every: 1, checkpoint_every: 1,
        learn_initial_state: false}
output: {dir: null}           # null = runs/<config stem>-<timestamp> next to the config
"""

MINIMAL = """\
data:
  path: data.h5
  fit_window: [0, 1]
model:
  physics: {name: nbody, n_bodies: 3}
"""


def write(folder: Path, text: str, name: str = "threebody.yaml") -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def error_of(path: Path, overrides: tuple[str, ...] = ()) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(path, overrides)
    return str(info.value)


def test_example_parses(tmp_path):
    path = write(tmp_path, EXAMPLE)
    config = load_config(path)
    assert isinstance(config, Config)
    assert config.source == path
    assert config.data.path == tmp_path / "threebody.h5"
    assert config.data.simulate == "threebody"
    assert config.data.fit_window == (0.0, 1.0)
    physics = config.model.physics
    assert physics.name == "nbody"
    assert physics.arguments == {
        "n_bodies": 3,
        "dim": 3,
        "G": 1.45136,
        "softening": 0.0,
        "masses": [1.0, 1.0, 1.0],
        "learn_masses": True,
    }
    assert config.model.neural is None
    assert (config.solver.method, config.solver.grad) == ("dopri5", "aca")
    assert config.solver.rtol == 1e-7
    assert isinstance(config.solver.rtol, float)
    assert config.train.epochs == 100
    assert config.output.dir is None


def test_defaults(tmp_path):
    config = load_config(write(tmp_path, MINIMAL))
    assert config.data.simulate is None
    assert config.data.simulate_options == {}
    assert config.data.trajectories is None and config.data.observed is None
    # The constructor's defaults are the model's business: filled in when it is built.
    assert config.model.physics.arguments == {"n_bodies": 3}
    s = config.solver
    assert (s.method, s.grad, s.rtol, s.atol, s.step_size, s.max_steps) == (
        "dopri5",
        "aca",
        1e-7,
        1e-8,
        None,
        None,
    )
    t = config.train
    assert (t.epochs, t.lr, t.seed, t.dtype, t.device, t.optimizer) == (
        100,
        0.05,
        0,
        "float64",
        "auto",
        "adam",
    )
    assert (t.schedule, t.batch_size, t.loss, t.log_every, t.checkpoint_every) == (
        None,
        None,
        "mse",
        1,
        1,
    )
    assert t.learn_initial_state is False
    assert config.output.dir is None


def test_mali_picks_the_leapfrog_by_default(tmp_path):
    config = load_config(write(tmp_path, MINIMAL), ["solver.grad=mali"])
    assert config.solver.method == "alf"


def test_exponent_numbers_are_floats(tmp_path):
    # PyYAML alone (YAML 1.1) reads these as strings
    assert yaml.safe_load("x: 1e-3")["x"] == "1e-3"
    assert parse_yaml("x: 1e-3")["x"] == 0.001
    assert parse_yaml("[1E5, 1.0e3, -2e+2, .5e-1, 7, 1.5, 0x10, abc]") == [
        1e5,
        1000.0,
        -200.0,
        0.05,
        7,
        1.5,
        16,
        "abc",
    ]
    path = write(
        tmp_path,
        MINIMAL + "solver: {rtol: 1e-9, atol: 1E-12}\ntrain: {lr: 1e-3, epochs: 1e3}\n",
    )
    config = load_config(path)
    assert config.solver.rtol == 1e-9 and config.solver.atol == 1e-12
    assert config.train.lr == 0.001 and isinstance(config.train.lr, float)
    assert config.train.epochs == 1000 and isinstance(config.train.epochs, int)


def test_unknown_key_names_path_and_suggestion(tmp_path):
    path = write(tmp_path, EXAMPLE.replace("rtol: 1.0e-7", "rtoll: 1.0e-7"))
    assert error_of(path) == (
        f"{path}: unknown key 'solver.rtoll' (did you mean 'solver.rtol'?) (line 18)"
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (MINIMAL + "trian: {}\n", "unknown key 'trian' (did you mean 'train'?)"),
        (
            MINIMAL.replace("n_bodies: 3}", "n_bodies: 3, mases: [1, 1, 1]}"),
            "model.physics.mases: unknown argument of NBodyGravity (did you mean 'masses'?); "
            "its arguments: n_bodies, dim, G, masses, learn_masses, softening (line 5)",
        ),
        (
            MINIMAL + "train: {rtol: 1.0e-6}\n",
            "unknown key 'train.rtol' (did you mean 'solver.rtol'?)",
        ),
        (
            MINIMAL + "train: {schedule: {name: step, step_size: 3, gama: 0.5}}\n",
            "train.schedule.gama",
        ),
    ],
)
def test_unknown_keys(tmp_path, text, expected):
    assert expected in error_of(write(tmp_path, text))


def test_the_file_name_prefixes_the_message(tmp_path, monkeypatch):
    write(tmp_path, MINIMAL.replace("fit_window", "fit_windw"))
    monkeypatch.chdir(tmp_path)
    assert error_of(Path("threebody.yaml")) == (
        "threebody.yaml: unknown key 'data.fit_windw' (did you mean 'data.fit_window'?) (line 3)"
    )


def test_several_errors_one_per_line(tmp_path):
    text = MINIMAL + "solver: {rtol: -1, method: dopri55}\ntrain: {epochs: many, devise: cpu}\n"
    lines = error_of(write(tmp_path, text)).splitlines()
    assert len(lines) == 4
    assert all(line.startswith(str(tmp_path / "threebody.yaml") + ": ") for line in lines)
    joined = "\n".join(lines)
    assert "solver.rtol: must be > 0" in joined
    assert "solver.method: unknown value 'dopri55' (did you mean 'dopri5'?)" in joined
    assert "train.epochs: expected an integer, got 'many'" in joined
    assert "unknown key 'train.devise' (did you mean 'train.device'?)" in joined


@pytest.mark.parametrize(
    ("section", "expected"),
    [
        ("train: {epochs: many}", "train.epochs: expected an integer, got 'many' (str)"),
        ("train: {epochs: 2.5}", "train.epochs: expected an integer, got 2.5"),
        ("train: {lr: '0.05'}", "train.lr: expected a number, got '0.05' (str)"),
        ("train: {learn_initial_state: 1}", "train.learn_initial_state: expected true or false"),
        ("train: {dtype: float16}", "train.dtype: unknown value 'float16'"),
        ("train: {device: gpu}", "train.device: expected auto, cpu, cuda or cuda:N, got 'gpu'"),
        ("train: {optimizer: adm}", "train.optimizer: unknown value 'adm' (did you mean 'adam'?)"),
        ("train: {schedule: {name: cosin}}", "train.schedule.name: unknown name 'cosin'"),
        ("train: {schedule: {name: step}}", "train.schedule.step_size: missing required key"),
        ("solver: {grad: acca}", "solver.grad: unknown value 'acca' (did you mean 'aca'?)"),
        ("solver: {atol: 0}", "solver.atol: must be > 0"),
        ("solver: {method: rk4}", "solver.step_size: method 'rk4' is a fixed-step method"),
        (
            "solver: {method: dopri5, grad: mali}",
            "solver.method: grad='mali' needs the asynchronous leapfrog (method='alf')",
        ),
        ("output: {dir: 3}", "output.dir: "),
    ],
)
def test_wrong_values_name_the_path(tmp_path, section, expected):
    message = error_of(write(tmp_path, MINIMAL + section + "\n"))
    assert expected in message


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ("fit_window: [1.0, 0.5]", "data.fit_window: must be [start, end] with start < end"),
        ("fit_window: [0.0]", "data.fit_window: expected [start, end], two numbers, got [0.0]"),
        ("fit_window: 1.0", "data.fit_window: expected a list"),
        ("trajectories: [0, 0]", "data.trajectories: lists 0 more than once"),
        ("trajectories: [0, -1]", "data.trajectories[1]: must be >= 0"),
        ("observed: []", "data.observed: must list at least one entry"),
    ],
)
def test_data_section_checks(tmp_path, data, expected):
    window = "" if data.startswith("fit_window") else "  fit_window: [0, 1]\n"
    text = f"data:\n  path: d.h5\n{window}  {data}\nmodel: {{neural: {{}}}}\n"
    assert expected in error_of(write(tmp_path, text))


def test_simulator_and_activation_checks(tmp_path):
    path = write(tmp_path, EXAMPLE)
    config = load_config(path, ["data.simulate_options={n_trajectories: 2, seed: 1}"])
    assert config.data.simulate_options == {"n_trajectories": 2, "seed": 1}
    message = error_of(path, ("data.simulate_options={n_trajectory: 2}",))
    assert (
        "data.simulate_options.n_trajectory: unknown argument of simulator 'threebody' "
        "(did you mean 'n_trajectories'?)" in message
    )
    message = error_of(path, ("data.simulate_options={noise: high}",))
    assert "data.simulate_options.noise: expected a number, got 'high' (str)" in message
    message = error_of(path, ("data.simulate=threebdy",))
    assert "data.simulate: unknown simulator 'threebdy' (did you mean 'threebody'?)" in message
    message = error_of(path, ("model.neural={activation: tahn}",))
    assert "model.neural.activation: unknown value 'tahn' (did you mean 'tanh'?)" in message


def test_missing_sections(tmp_path):
    message = error_of(write(tmp_path, "solver: {grad: aca}\n"))
    assert "data: missing required key" in message
    assert "model: missing required key" in message
    no_physics = MINIMAL.replace("physics: {name: nbody, n_bodies: 3}", "physics: null")
    message = error_of(write(tmp_path, no_physics))
    assert "model: needs model.physics, model.neural or both" in message
    message = error_of(write(tmp_path, MINIMAL.replace("name: nbody, ", "")))
    assert "model.physics.name: missing required key" in message
    message = error_of(write(tmp_path, MINIMAL.replace(", n_bodies: 3", "")))
    assert "model.physics.n_bodies: missing required argument of NBodyGravity (line 5)" in message


def test_a_model_that_its_constructor_refuses_names_the_section(tmp_path):
    # Values the signature accepts but the class refuses are reported when it is built,
    # before any data is read, with the section and the class.
    from physode.training.problem import FitSetupError, build_model

    variables = [f"v{i}" for i in range(18)]
    text = EXAMPLE.replace("masses: [1.0, 1.0, 1.0]", "masses: [1.0, 1.0]")
    config = load_config(write(tmp_path, text))
    with pytest.raises(FitSetupError) as info:
        build_model(config.model, variables, torch.float64, torch.device("cpu"))
    assert str(info.value) == (
        "model.physics (NBodyGravity): masses: expected 3 numbers (one per body), got [1.0, 1.0]"
    )
    text = EXAMPLE.replace("masses: [1.0, 1.0, 1.0]", "masses: [1.0, -1.0, 1.0]")
    config = load_config(write(tmp_path, text))
    with pytest.raises(FitSetupError, match=r"model.physics \(NBodyGravity\): parameter 'masses'"):
        build_model(config.model, variables, torch.float64, torch.device("cpu"))


def test_overrides(tmp_path):
    path = write(tmp_path, EXAMPLE)
    config = load_config(
        path,
        [
            "train.epochs=5",
            "solver.grad=mali",
            "solver.method=alf",
            "data.fit_window=[0,0.5]",
            "model.neural.hidden=[8, 8]",
            "train.schedule={name: step, step_size: 2}",
            "data.simulate_options.seed=3",
        ],
    )
    assert config.train.epochs == 5 and isinstance(config.train.epochs, int)
    assert config.solver.grad == "mali" and config.solver.method == "alf"
    assert config.data.fit_window == (0.0, 0.5)
    assert config.model.neural.name == "mlp"
    assert config.model.neural.arguments == {"hidden": [8, 8]}
    assert config.train.schedule.step_size == 2 and config.train.schedule.gamma == 0.1
    assert config.data.simulate_options == {"seed": 3}
    assert load_config(path, ["data.simulate="]).data.simulate is None


def test_override_errors(tmp_path):
    path = write(tmp_path, EXAMPLE)
    message = error_of(path, ("solver.rtoll=1e-6",))
    assert "unknown key 'solver.rtoll' (did you mean 'solver.rtol'?)" in message
    assert "(from --set solver.rtoll=1e-6)" in message
    assert "train.epochs: expected an integer" in error_of(path, ("train.epochs=five",))
    assert "expected key.path=value" in error_of(path, ("train.epochs",))
    assert "'solver.method' is a value, not a section" in error_of(path, ("solver.method.x=1",))
    assert "cannot parse the value" in error_of(path, ("data.fit_window=[0,",))


def test_relative_paths_follow_the_config_file(tmp_path, monkeypatch):
    text = MINIMAL.replace("data.h5", "sub/data.h5") + "output: {dir: ../runs/a}\n"
    write(tmp_path / "configs", text, "c.yaml")
    monkeypatch.chdir(tmp_path)
    config = load_config("configs/c.yaml")
    assert config.source == tmp_path / "configs" / "c.yaml"
    assert config.data.path == tmp_path / "configs" / "sub" / "data.h5"
    assert config.output.dir == tmp_path / "runs" / "a"
    absolute = tmp_path / "elsewhere" / "x.h5"
    config = load_config("configs/c.yaml", [f"data.path={absolute}"])
    assert config.data.path == absolute


def test_run_dir(tmp_path):
    config = load_config(write(tmp_path, MINIMAL))
    when = datetime(2024, 5, 6, 7, 8, 9)
    assert resolve_run_dir(config, now=when) == tmp_path / "runs" / "threebody-20240506-070809"
    config = load_config(write(tmp_path, MINIMAL + "output: {dir: out}\n"))
    assert resolve_run_dir(config) == tmp_path / "out"


def test_file_level_errors(tmp_path):
    missing = tmp_path / "nope.yaml"
    assert error_of(missing) == f"{missing}: config file not found"
    message = error_of(write(tmp_path, "data:\n  path: x\n  fit_window: [0, 1\nmodel: {}\n"))
    assert "YAML syntax error at line " in message
    message = error_of(write(tmp_path, "data:\n  path: x\n    bad: indent\n"))
    assert "YAML syntax error at line 3" in message
    message = error_of(write(tmp_path, "- data\n- model\n"))
    assert "the top level must be a mapping" in message and "got a list" in message
    assert "got an empty file" in error_of(write(tmp_path, "# nothing\n"))
    message = error_of(write(tmp_path, MINIMAL + "solver: {}\nsolver: {}\n"))
    assert "duplicate key 'solver' (lines 6 and 7)" in message
    assert issubclass(ConfigError, ValueError)


def test_round_trip(tmp_path):
    path = write(tmp_path, EXAMPLE)
    config = load_config(
        path, ["model.neural={hidden: [16], activation: softplus}", "train.schedule={name: cosine}"]
    )
    text = config_to_yaml(config)
    assert yaml.safe_load(text) == config_to_dict(config)  # plain YAML 1.1 reads it too
    copy = write(tmp_path / "other", text, "resolved.yaml")
    again = load_config(copy)
    assert config_to_dict(again) == config_to_dict(config)
    assert config_to_yaml(again) == text


def test_config_from_dict(tmp_path):
    data = parse_yaml(MINIMAL)
    config = config_from_dict(data, base_dir=tmp_path)
    assert config.data.path == tmp_path / "data.h5"
    assert config.source is None
    with pytest.raises(ConfigError, match=r"train\.lr: must be > 0"):
        config_from_dict({**data, "train": {"lr": 0.0}})


def test_resolve_dtype_and_device():
    assert resolve_dtype("float32") is torch.float32
    assert resolve_dtype("float64") is torch.float64
    with pytest.raises(ValueError, match="dtype"):
        resolve_dtype("float16")
    assert resolve_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    with pytest.raises(ValueError, match="device"):
        resolve_device("gpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="'cuda:1' was asked for"):
            resolve_device("cuda:1")
    else:
        with pytest.raises(ValueError, match="does not exist"):
            resolve_device(f"cuda:{torch.cuda.device_count()}")


# ---------------------------------------------------------------------------- sequence models

LATENT = """\
data:
  path: hopper.h5
  simulate: hopper
model:
  latent: {kind: latent_ode}
"""


def test_latent_defaults_and_task(tmp_path):
    config = load_config(write(tmp_path, LATENT))
    spec = config.model.latent
    assert (spec.kind, spec.latent_dim, spec.hidden_dim, spec.z0_hidden) == (
        "latent_ode",
        15,
        30,
        [100],
    )
    assert spec.dynamics_hidden is None and spec.encoder_method == "euler"
    assert config.model.physics is None and config.model.neural is None
    # The fit window is optional for a sequence model, and the task is filled in.
    assert config.data.fit_window is None
    task = config.task
    assert (task.name, task.window, task.observed_fraction, task.train_fraction) == (
        "interpolation",
        100,
        0.5,
        0.8,
    )
    assert (task.n_samples, task.kl_warmup, task.kl_rate) == (3, 10, 0.99)
    # The reference's tolerances, unless the config sets its own.
    assert (config.solver.rtol, config.solver.atol) == (1e-3, 1e-4)
    config = load_config(write(tmp_path, LATENT), ["solver.rtol=1e-5"])
    assert (config.solver.rtol, config.solver.atol) == (1e-5, 1e-4)
    # The three-body config is untouched by all this.
    plain = load_config(write(tmp_path, MINIMAL))
    assert plain.task is None and plain.model.latent is None and plain.solver.rtol == 1e-7


@pytest.mark.parametrize("kind", ["latent_ode", "ode_rnn", "gru"])
def test_latent_round_trip(tmp_path, kind):
    path = write(tmp_path, LATENT.replace("latent_ode", kind))
    config = load_config(path, ["task.name=extrapolation", "task.window=60"])
    text = config_to_yaml(config)
    again = load_config(write(tmp_path / "other", text, "resolved.yaml"))
    assert config_to_dict(again) == config_to_dict(config)
    assert config_to_yaml(again) == text
    # Keys a kind does not read stay null.
    assert (config.model.latent.latent_dim is None) == (kind != "latent_ode")
    assert (config.model.latent.encoder_method is None) == (kind == "gru")


@pytest.mark.parametrize(
    "edit, message",
    [
        ("latent: {kind: gru, latent_dim: 4}", "model.latent.latent_dim: is read by kind"),
        ("latent: {kind: ode_rnn, z0_hidden: [8]}", "model.latent.z0_hidden: is read by kind"),
        ("latent: {kind: rnn}", "model.latent.kind: unknown value 'rnn'"),
        ("latent: {kind: latent_ode, hiden_dim: 4}", "(did you mean 'model.latent.hidden_dim'?)"),
        ("latent: {obs_std: 0}", "model.latent.obs_std: must be > 0"),
        ("latent: {encoder_method: eulr}", "model.latent.encoder_method: unknown value 'eulr'"),
    ],
)
def test_latent_model_errors(tmp_path, edit, message):
    assert message in error_of(write(tmp_path, LATENT.replace("latent: {kind: latent_ode}", edit)))


@pytest.mark.parametrize(
    "extra, message",
    [
        ("task: {observed_fraction: 0}", "task.observed_fraction: must be > 0"),
        ("task: {observed_fraction: 1.5}", "task.observed_fraction: must be <= 1"),
        ("task: {train_fraction: 1}", "task.train_fraction: must be < 1"),
        ("task: {name: forecast}", "task.name: unknown value 'forecast'"),
        ("task: {name: extrapolation, window: 2}", "task.window: extrapolation observes"),
        ("task: {windw: 50}", "unknown key 'task.windw' (did you mean 'task.window'?)"),
        ("train: {loss: mae}", "train.loss: a sequence model is trained on its likelihood"),
        ("train: {learn_initial_state: true}", "train.learn_initial_state: not available"),
    ],
)
def test_task_and_train_errors(tmp_path, extra, message):
    assert message in error_of(write(tmp_path, LATENT + extra + "\n"))


def test_latent_does_not_mix_with_physics_and_task_needs_latent(tmp_path):
    text = LATENT.replace("  latent:", "  physics: {name: nbody, n_bodies: 3}\n  latent:")
    message = error_of(write(tmp_path, text))
    assert "model.latent: a sequence model is fitted on its own: set model.physics to null" in (
        message
    )
    # A physics model may leave its fit window to the data file (checked when the
    # file is read), and takes no task section.
    config = load_config(write(tmp_path, MINIMAL.replace("  fit_window: [0, 1]\n", "")))
    assert config.data.fit_window is None
    assert load_config(write(tmp_path, MINIMAL.replace("[0, 1]", "null"))).data.fit_window is None
    message = error_of(write(tmp_path, MINIMAL + "task: {window: 50}\n"))
    assert "task: is used only with model.latent" in message
    no_physics = MINIMAL.replace("physics: {name: nbody, n_bodies: 3}", "physics: null")
    message = error_of(write(tmp_path, no_physics))
    assert "model: needs model.physics, model.neural or both (or model.latent" in message
