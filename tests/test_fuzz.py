"""Fuzzing what a user hands ``physode fit``: mutated configs, mutated trajectory files and
mutated checkpoints. Each outcome must be a success or a one-line error: no traceback,
no exception escaping the command, no temporary file left behind.

The number of cases each test tried is printed (``pytest -s tests/test_fuzz.py``).
"""

from __future__ import annotations

import itertools
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import yaml
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from physode.cli.main import main
from physode.datasets import write_trajectories

HERE = Path(__file__).resolve().parent
FUZZ = settings(
    deadline=None,
    derandomize=True,  # the same cases every run: CI failures reproduce
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

BASE = {
    "data": {"path": "sir.h5", "fit_window": [0.0, 10.0]},
    "model": {"physics": {"name": "custom_systems.py:SIR", "beta": 0.3, "gamma": 0.2}},
    "solver": {"method": "rk4", "grad": "direct", "step_size": 1.0},
    "train": {"epochs": 1, "optimizer": "adam", "lr": 0.01, "dtype": "float64"},
}


@pytest.fixture(scope="module")
def user(tmp_path_factory) -> Path:
    """A folder with the user's model file and a small SIR data file."""
    from custom_systems import simulate

    folder = tmp_path_factory.mktemp("fuzz")
    shutil.copy(HERE / "custom_systems.py", folder / "custom_systems.py")
    write_trajectories(folder / "sir.h5", simulate(n_trajectories=2, n_times=21))
    return folder


def run_cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def check_outcome(result, where: Path, config: Path | None = None) -> str:
    """A success, or a one-line error with no traceback; no temporary file anywhere.

    A config's problems are listed all at once, one line each, each naming the file.
    """
    assert not any(where.rglob(".*.tmp")), list(where.rglob(".*.tmp"))
    if result.exit_code == 0:
        return "ok"
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    text = result.output.strip()
    assert "Traceback" not in text, text
    lines = text.splitlines()
    assert lines[0].startswith("Error: "), text
    if len(lines) > 1:
        assert config is not None and all(line.startswith(str(config)) for line in lines[1:]), text
    return "error"


_CASE = itertools.count()


class Tally:
    def __init__(self, name: str) -> None:
        self.name, self.counts = name, {"ok": 0, "error": 0}

    def add(self, outcome: str) -> None:
        self.counts[outcome] += 1

    def report(self) -> None:
        ok, errors = self.counts["ok"], self.counts["error"]
        print(f"\n{self.name}: {ok + errors} cases ({ok} succeeded, {errors} one-line errors)")


# ---------------------------------------------------------------------------- configs

_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 10**6),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz_:./0123456789", max_size=12),
    st.lists(st.floats(-5, 5), max_size=4),
    st.dictionaries(st.sampled_from(["name", "rtol", "x"]), st.integers(0, 3), max_size=2),
)


def _paths(data, prefix=()):
    for key, value in data.items():
        yield (*prefix, key)
        if isinstance(value, dict):
            yield from _paths(value, (*prefix, key))


_PATHS = list(_paths(BASE))
_mutation = st.tuples(st.sampled_from(_PATHS), st.sampled_from(["set", "delete", "add"]), _values)


def _mutate(config: dict, mutations) -> dict:
    import copy

    out = copy.deepcopy(config)
    for path, op, value in mutations:
        node = out
        for key in path[:-1]:
            node = node.get(key) if isinstance(node, dict) else None
            if not isinstance(node, dict):
                break
        else:
            if op == "delete":
                node.pop(path[-1], None)
            elif op == "add":
                node[f"{path[-1]}_extra"] = value
            else:
                node[path[-1]] = value
    return out


CONFIG_TALLY = Tally("mutated configs")


@settings(FUZZ, max_examples=120)
@given(mutations=st.lists(_mutation, min_size=1, max_size=3))
def test_mutated_configs(user, mutations):
    config = user / "fit.yaml"
    config.write_text(yaml.safe_dump(_mutate(BASE, mutations), allow_unicode=True))
    run = user / "runs" / f"c{next(_CASE)}"
    CONFIG_TALLY.add(check_outcome(run_cli("fit", config, "-o", run, "-q"), user, config))


def test_mutated_configs_report():
    CONFIG_TALLY.report()


# ---------------------------------------------------------------------------- trajectory files


def _mutate_file(path: Path, kind: str, draw: st.DataObject) -> None:
    if kind == "truncate":
        data = path.read_bytes()
        path.write_bytes(data[: draw.draw(st.integers(0, len(data) - 1))])
        return
    if kind == "flip":
        data = bytearray(path.read_bytes())
        for i in draw.draw(st.lists(st.integers(0, len(data) - 1), min_size=1, max_size=20)):
            data[i] ^= 0xFF
        path.write_bytes(bytes(data))
        return
    with h5py.File(path, "a") as f:
        if kind == "drop":
            del f[draw.draw(st.sampled_from(["time", "state"]))]
        elif kind == "attr":
            target = draw.draw(st.sampled_from(["/", "/time", "/state"]))
            name = draw.draw(
                st.sampled_from(["format", "version", "units", "variables", "fit_window"])
            )
            value = draw.draw(
                st.one_of(st.integers(-2, 3), st.text(max_size=5), st.just([1.0, 2.0, 3.0]))
            )
            f[target].attrs[name] = value
        elif kind == "reshape":
            name = draw.draw(st.sampled_from(["time", "state"]))
            old = f[name][...]
            del f[name]
            shape = tuple(draw.draw(st.lists(st.integers(0, 4), min_size=1, max_size=3)))
            dtype = draw.draw(st.sampled_from(["f8", "f4", "i4", "S3"]))
            f.create_dataset(name, data=np.zeros(shape, dtype=dtype))
            del old
        elif kind == "values":
            name = draw.draw(st.sampled_from(["time", "state"]))
            data = f[name][...]
            flat = data.reshape(-1)
            k = draw.draw(st.integers(0, flat.size - 1))
            flat[k] = draw.draw(st.sampled_from([np.nan, np.inf, -1e300, 0.0]))
            f[name][...] = flat.reshape(data.shape)


FILE_TALLY = Tally("mutated trajectory files")


@settings(FUZZ, max_examples=80)
@given(
    kind=st.sampled_from(["truncate", "flip", "drop", "attr", "reshape", "values"]),
    draw=st.data(),
)
def test_mutated_trajectory_files(user, kind, draw):
    n = next(_CASE)
    data = user / "files" / f"f{n}.h5"
    data.parent.mkdir(exist_ok=True)
    shutil.copy(user / "sir.h5", data)
    _mutate_file(data, kind, draw)
    config = user / "files" / f"f{n}.yaml"
    config.write_text(
        yaml.safe_dump({**BASE, "data": {**BASE["data"], "path": str(data)}}).replace(
            "custom_systems.py:SIR", f"{user / 'custom_systems.py'}:SIR"
        )
    )
    result = run_cli("fit", config, "-o", user / "files" / f"run{n}", "-q")
    FILE_TALLY.add(check_outcome(result, user, config))


def test_mutated_trajectory_files_report():
    FILE_TALLY.report()


# ---------------------------------------------------------------------------- checkpoints


@pytest.fixture(scope="module")
def fitted(user) -> Path:
    config = user / "base.yaml"
    config.write_text(yaml.safe_dump({**BASE, "train": {**BASE["train"], "epochs": 2}}))
    result = run_cli("fit", config, "-o", user / "fitted", "-q")
    assert result.exit_code == 0, result.output
    return user / "fitted"


_plain = st.recursive(
    st.one_of(st.none(), st.integers(-5, 5), st.floats(allow_nan=False), st.text(max_size=4)),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=6,
)

CHECKPOINT_TALLY = Tally("mutated checkpoints")


@settings(FUZZ, max_examples=60)
@given(
    kind=st.sampled_from(["truncate", "flip", "replace", "drop_key", "wrong_tensor", "untrusted"]),
    which=st.sampled_from(["last.pt", "previous.pt", "best.pt"]),
    draw=st.data(),
)
def test_mutated_checkpoints(user, fitted, kind, which, draw):
    n = next(_CASE)
    run = user / "ckpts" / f"run{n}"
    shutil.copytree(fitted, run)
    path = run / "checkpoints" / which
    if kind in ("truncate", "flip"):
        _mutate_file(path, kind, draw)
    else:
        state = torch.load(path, weights_only=True)
        if kind == "replace":
            state = draw.draw(_plain)
        elif kind == "drop_key":
            state.pop(draw.draw(st.sampled_from(sorted(state))))
        elif kind == "wrong_tensor":
            key = draw.draw(st.sampled_from(sorted(state["model"])))
            state["model"][key] = torch.zeros(draw.draw(st.integers(0, 3)), 7)
        else:
            state["payload"] = Path("/")  # a pickled object weights_only refuses
        torch.save(state, path)
    command = draw.draw(st.sampled_from(["evaluate", "resume"]))
    if command == "evaluate":
        args = ["evaluate", run, "--checkpoint", "best.pt" if which == "best.pt" else "last.pt"]
    else:
        args = ["fit", user / "base.yaml", "-o", run, "-q", "--resume", "--set", "train.epochs=3"]
    CHECKPOINT_TALLY.add(check_outcome(run_cli(*args), user))


def test_mutated_checkpoints_report():
    CHECKPOINT_TALLY.report()
