"""Config keys that are the keyword arguments of code: a model's constructor, a simulator.

:func:`check_arguments` validates a mapping against a callable's signature with the
same rules and words as the config's own sections: an unknown key is named with
the closest parameter, a missing required one is named, and values are checked
against the parameters' type hints (strictly: a quoted number is not a number).
A parameter without a hint, or with one pydantic cannot check, takes any value.
"""

from __future__ import annotations

import difflib
import functools
import inspect
import typing
from collections.abc import Callable, Mapping, Sequence
from pathlib import PurePath
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, create_model

from .config_errors import config_error, describe, show

__all__ = ["check_arguments", "parameters_of", "plain_defaults"]


def parameters_of(target: Callable[..., Any]) -> dict[str, inspect.Parameter]:
    """The parameters a config can set: keyword-capable ones (``*args`` left out)."""
    try:
        signature = inspect.signature(target)
    except (TypeError, ValueError):
        return {}
    return {
        name: p
        for name, p in signature.parameters.items()
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY, p.VAR_KEYWORD)
    }


def _takes_any_keyword(target: Callable[..., Any]) -> bool:
    return any(p.kind is p.VAR_KEYWORD for p in parameters_of(target).values())


def _hints(target: Callable[..., Any]) -> dict[str, Any]:
    function = target.__init__ if inspect.isclass(target) else target
    try:
        return typing.get_type_hints(function, include_extras=True)
    except Exception:  # hints that name what the module cannot resolve: take any value
        return {}


def _to_tuple(value: Any) -> Any:
    # YAML has no tuples; a list is what a tuple-typed argument is given.
    return tuple(value) if isinstance(value, list) else value


def _mentions(annotation: Any, kinds: tuple[type, ...]) -> bool:
    if annotation in kinds or typing.get_origin(annotation) in kinds:
        return True
    if isinstance(annotation, type) and issubclass(annotation, kinds):
        return True
    return any(_mentions(a, kinds) for a in typing.get_args(annotation))


def _field_type(annotation: Any) -> Any:
    if _mentions(annotation, (tuple,)):
        annotation = Annotated[annotation, BeforeValidator(_to_tuple)]
    if _mentions(annotation, (PurePath,)):
        annotation = Annotated[annotation, Field(strict=False)]  # paths are strings in YAML
    return annotation


@functools.lru_cache(maxsize=256)
def _schema(target: Callable[..., Any]) -> type[BaseModel]:
    hints = _hints(target)
    fields: dict[str, Any] = {}
    for name, p in parameters_of(target).items():
        if p.kind is not p.VAR_KEYWORD:
            # Every field may be left out: which are required is checked apart, and
            # only the values given are validated (defaults are the target's business).
            fields[name] = (_field_type(hints.get(name, Any)), None)
    config = ConfigDict(strict=True, arbitrary_types_allowed=True, extra="ignore")
    try:
        return create_model("Arguments", __config__=config, **fields)
    except Exception:  # a hint pydantic cannot turn into a check: the values go unchecked
        return create_model("Arguments", __config__=config, **{k: (Any, None) for k in fields})


def _type_text(annotation: Any) -> str:
    text = inspect.formatannotation(annotation)
    return text.replace("typing.", "").replace("collections.abc.", "")


def check_arguments(
    target: Callable[..., Any],
    given: Mapping[str, Any],
    *,
    label: str,
    supplied: Sequence[str] = (),
    at: str = "",
) -> dict[str, Any]:
    """Validate ``given`` as keyword arguments of ``target``.

    Args:
        target: a class (its constructor is read) or a function.
        given: the config's keys for it.
        label: how messages name ``target``, e.g. ``"LotkaVolterra"``.
        supplied: parameters the caller fills in itself when the config leaves
            them out (a state size taken from the data): not required here.
        at: the key path of ``given`` below the validated section, for messages.

    Returns:
        ``given`` with each value as validated (a list for a tuple parameter becomes a tuple).

    Raises:
        PydanticCustomError: a config error whose ``at`` is the key at fault.
    """
    where = f"{at}." if at else ""
    params = parameters_of(target)
    open_ended = _takes_any_keyword(target)
    for key in given:
        if key not in params and not open_ended:
            names = [n for n, p in params.items() if p.kind is not p.VAR_KEYWORD]
            close = difflib.get_close_matches(str(key), names, n=1, cutoff=0.6)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            listing = f"; its arguments: {', '.join(names)}" if names else "; it takes none"
            raise config_error(f"unknown argument of {label}{hint}{listing}", at=f"{where}{key}")
    for name, p in params.items():
        required = p.default is p.empty and p.kind is not p.VAR_KEYWORD
        if required and name not in given and name not in supplied:
            raise config_error(f"missing required argument of {label}", at=f"{where}{name}")
    schema = _schema(target)
    checked = {k: v for k, v in given.items() if k in schema.model_fields}
    try:
        values = schema.model_validate(checked)
    except ValidationError as exc:
        raise _first_problem(exc, schema, checked, where) from None
    out = dict(given)
    out.update({k: getattr(values, k) for k in checked})
    return out


def _first_problem(
    exc: ValidationError, schema: type[BaseModel], given: Mapping[str, Any], where: str
) -> Exception:
    errors = exc.errors()
    key = str(errors[0]["loc"][0])
    same = [e for e in errors if e["loc"] and str(e["loc"][0]) == key]
    if len(same) > 1:  # a union: each branch failed; name the whole type
        field = schema.model_fields[key]
        message = f"expected {_type_text(field.annotation)}, got {show(given[key])}"
        return config_error(message, at=f"{where}{key}")
    return config_error(describe(errors[0]), at=where + ".".join(str(p) for p in errors[0]["loc"]))


def plain_defaults(target: Callable[..., Any]) -> dict[str, Any]:
    """The defaults of ``target``'s parameters that YAML can hold (numbers, strings,
    booleans, ``None`` and lists of them), tuples written as lists."""

    def plain(value: Any) -> bool:
        if value is None or isinstance(value, (bool, int, float, str)):
            return True
        return isinstance(value, (list, tuple)) and all(plain(v) for v in value)

    out = {}
    for name, p in parameters_of(target).items():
        if p.kind is not p.VAR_KEYWORD and p.default is not p.empty and plain(p.default):
            out[name] = list(p.default) if isinstance(p.default, tuple) else p.default
    return out
