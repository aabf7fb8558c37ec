"""The words of config errors: how a value is shown and what each kind of pydantic error
says, shared by the config sections and by the arguments of the code a config names."""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from typing import Any

from pydantic_core import PydanticCustomError


def show(value: Any) -> str:
    """``repr(value)``, cut to 60 characters."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def config_error(message: str, at: str | None = None) -> PydanticCustomError:
    """An error raised inside a validator; ``at`` is a key path below the validated section."""
    ctx: dict[str, Any] = {"message": message}
    if at:
        ctx["at"] = at
    return PydanticCustomError("config", "{message}", ctx)


_EXPECTED = {
    "int_type": "expected an integer",
    "int_parsing": "expected an integer",
    "int_from_float": "expected an integer",
    "float_type": "expected a number",
    "float_parsing": "expected a number",
    "finite_number": "expected a finite number",
    "bool_type": "expected true or false",
    "bool_parsing": "expected true or false",
    "string_type": "expected a string",
    "list_type": "expected a list",
    "tuple_type": "expected a list",
    "dict_type": "expected a mapping",
    "model_type": "expected a mapping",
    "model_attributes_type": "expected a mapping",
    "path_type": "expected a path (a string)",
}


def describe(error: Mapping[str, Any]) -> str:
    """What one pydantic error says about its value (without the key path)."""
    kind = error["type"]
    ctx = error.get("ctx") or {}
    value = error.get("input")
    if kind == "config":
        return ctx["message"]
    if kind == "missing":
        return "missing required key"
    if kind == "literal_error":
        options = re.findall(r"'((?:[^'\\]|\\.)*)'", str(ctx.get("expected", "")))
        close = difflib.get_close_matches(str(value), options, n=1, cutoff=0.5)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        return f"unknown value {show(value)}{hint}; choose one of: {', '.join(options)}"
    bounds = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<"}
    bounds["less_than_equal"] = "<="
    if kind in bounds:
        key = {">": "gt", ">=": "ge", "<": "lt", "<=": "le"}[bounds[kind]]
        return f"must be {bounds[kind]} {ctx[key]}, got {show(value)}"
    if kind in _EXPECTED:
        return f"{_EXPECTED[kind]}, got {show(value)} ({type(value).__name__})"
    message = str(error.get("msg", kind)).removeprefix("Value error, ")
    return f"{message[:1].lower() + message[1:]}, got {show(value)}"
