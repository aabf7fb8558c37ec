"""Registries and references to user code (``file.py:Name``, ``module:Name``), and the
check of a config's keys against a constructor's signature."""

from __future__ import annotations

from typing import Literal

import pytest
from pydantic_core import PydanticCustomError

from physode.datasets import SIMULATORS, simulate_threebody
from physode.models.registry import NEURAL, PHYSICS
from physode.registry import CodeReferenceError, Registry, canonical_reference, load_reference
from physode.training.config_arguments import check_arguments, plain_defaults


def test_built_in_names_and_suggestions():
    assert SIMULATORS.resolve("threebody") is simulate_threebody
    assert list(PHYSICS) == ["nbody"] and list(NEURAL) == ["mlp"]
    with pytest.raises(
        ValueError, match=r"unknown physics model 'nbod' \(did you mean 'nbody'\?\)"
    ):
        PHYSICS.resolve("nbod")


def test_register_refuses_references_and_clashes():
    reg = Registry("thing", {"a": int})
    reg.register("b", float)
    assert reg.resolve("b") is float and len(reg) == 2
    with pytest.raises(ValueError, match="registered already"):
        reg.register("a", str)
    with pytest.raises(ValueError, match="no ':' allowed"):
        reg.register("x.py:y", str)


def test_a_file_reference_is_imported_once_relative_to_its_base(tmp_path):
    (tmp_path / "helper.py").write_text("SCALE = 3\n")
    (tmp_path / "mine.py").write_text(
        "from helper import SCALE\n\ndef triple(x):\n    return SCALE * x\n"
    )
    first = load_reference("mine.py:triple", tmp_path)
    assert first(2) == 6  # a module beside the file is importable from it
    assert load_reference(f"{tmp_path}/mine.py:triple") is first
    assert canonical_reference("mine.py:triple", tmp_path) == f"{tmp_path}/mine.py:triple"
    assert canonical_reference("json:dumps", tmp_path) == "json:dumps"
    import json

    assert load_reference("json:dumps") is json.dumps


@pytest.mark.parametrize(
    ("reference", "message"),
    [
        ("mine.py", "expected path/to/file.py:Name or package.module:Name"),
        ("mine.py:2x", "'2x' is not a Python name"),
        ("mine.py:tripel", "has no 'tripel' (did you mean 'triple'?); it defines triple"),
        ("folder.py:x", "is a folder, not a Python file"),
        ("json:nothing", "module 'json' has no 'nothing'"),
    ],
)
def test_reference_errors(tmp_path, reference, message):
    (tmp_path / "mine.py").write_text("def triple(x):\n    return 3 * x\n")
    (tmp_path / "folder.py").mkdir()
    with pytest.raises(CodeReferenceError) as info:
        load_reference(reference, tmp_path)
    assert str(info.value).startswith(f"cannot load {reference!r}: ")
    assert message in str(info.value)


def test_the_model_registries_refuse_what_is_not_a_module(tmp_path):
    (tmp_path / "m.py").write_text("class Plain:\n    pass\n\nVALUE = 3\n")
    with pytest.raises(ValueError, match=r"Plain is not an nn\.Module subclass"):
        PHYSICS.resolve("m.py:Plain", tmp_path)
    with pytest.raises(ValueError, match="names a int, not a class or a function"):
        NEURAL.resolve("m.py:VALUE", tmp_path)


def model(n: int, rate: float = 1.0, mode: Literal["a", "b"] = "a", pair: tuple[int, int] = (1, 2)):
    """A stand-in constructor."""


def _error(given, **kwargs) -> tuple[str, str]:
    with pytest.raises(PydanticCustomError) as info:
        check_arguments(model, given, label="model", **kwargs)
    return info.value.context["at"], info.value.context["message"]


def test_check_arguments_validates_against_the_hints():
    assert check_arguments(model, {"n": 2, "rate": 3}, label="model") == {"n": 2, "rate": 3.0}
    assert check_arguments(model, {"n": 1, "pair": [3, 4]}, label="model")["pair"] == (3, 4)
    assert check_arguments(model, {}, label="model", supplied=("n",)) == {}
    assert _error({"n": 1, "rat": 2.0}) == (
        "rat",
        "unknown argument of model (did you mean 'rate'?); its arguments: n, rate, mode, pair",
    )
    assert _error({"rate": 2.0}) == ("n", "missing required argument of model")
    assert _error({"n": "2"}) == ("n", "expected an integer, got '2' (str)")
    assert _error({"n": 1, "mode": "c"})[1].startswith("unknown value 'c'; choose one of: a, b")
    at, _ = _error({"n": 1, "rate": "x"}, at="simulate_options")
    assert at == "simulate_options.rate"


SENTINEL = object()


def test_plain_defaults_are_what_yaml_can_hold():
    def f(a, b=1.5, c=(1, 2), d=None, e=SENTINEL):
        """."""

    assert plain_defaults(f) == {"b": 1.5, "c": [1, 2], "d": None}
