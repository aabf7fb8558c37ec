"""The ``physode fit`` configuration: a YAML file, validated section by section.

A config has five sections, and a sixth for sequence models::

    data:    the trajectory file, the fit window, which trajectories and variables
    model:   physics (a discriminated union on ``name``), an optional neural term;
             or ``latent``: a sequence model (latent ODE, ODE-RNN, GRU)
    solver:  method, gradient method, tolerances
    train:   epochs, optimizer, learning rate, seed, dtype, device, ...
    output:  the run directory
    task:    (``model.latent`` only) interpolation or extrapolation on random
             windows, the observed fraction, samples of z0, KL annealing

:func:`load_config` reads a file (with ``--set key.path=value`` overrides) and
returns a :class:`Config`; every problem it finds is reported at once in one
:class:`ConfigError`, each line naming the file, the dotted key path and what
is wrong (with the closest valid key for a misspelt one).
"""

from __future__ import annotations

import difflib
import os
import re
import types
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Union, get_args, get_origin

import torch
import yaml
from pydantic import ValidationError

from .config_errors import describe
from .config_schema import (
    _DEVICE_RE,
    ACTIVATIONS,
    Config,
    CosineSchedule,
    DataConfig,
    ExponentialSchedule,
    LatentConfig,
    ModelConfig,
    NeuralConfig,
    OutputConfig,
    PhysicsConfig,
    SolverConfig,
    StepSchedule,
    StopConfig,
    TaskConfig,
    TrainConfig,
    _Section,
    _Tagged,
)

__all__ = [
    "ACTIVATIONS",
    "Config",
    "ConfigError",
    "ConfigLoader",
    "CosineSchedule",
    "DataConfig",
    "ExponentialSchedule",
    "LatentConfig",
    "ModelConfig",
    "NeuralConfig",
    "OutputConfig",
    "PhysicsConfig",
    "SolverConfig",
    "StepSchedule",
    "StopConfig",
    "TaskConfig",
    "TrainConfig",
    "config_from_dict",
    "config_to_dict",
    "config_to_yaml",
    "load_config",
    "parse_yaml",
    "resolve_device",
    "resolve_dtype",
    "resolve_run_dir",
]


_SECTIONS = ("data", "model", "solver", "train", "output", "task")


# --------------------------------------------------------------------------- errors


class ConfigError(ValueError):
    """A config that cannot be used. One problem per line, each prefixed by the file.

    Attributes:
        problems: the individual problems (without the file prefix).
        source: the config file as the user named it (``None`` for a config
            built from a mapping).
    """

    def __init__(
        self, problems: str | Sequence[str], source: str | os.PathLike[str] | None = None
    ) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        self.source = None if source is None else os.fspath(source)
        prefix = f"{self.source}: " if self.source is not None else ""
        super().__init__("\n".join(prefix + p for p in self.problems))

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.problems, self.source))


# --------------------------------------------------------------------------- YAML

# PyYAML follows YAML 1.1, where a float needs a dot and a signed exponent:
# `1e-3` and `1.0e3` would come back as strings and only be turned into numbers
# (or not) by whatever reads them next. This resolver accepts the YAML 1.2
# forms too, so every number in a config is a number from the start.
_FLOAT_RE = re.compile(
    r"""^(?:
        [-+]?[0-9][0-9_]*\.[0-9_]*(?:[eE][-+]?[0-9]+)?
      | [-+]?[0-9][0-9_]*[eE][-+]?[0-9]+
      | [-+]?\.[0-9][0-9_]*(?:[eE][-+]?[0-9]+)?
      | [-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\.[0-9_]*
      | [-+]?\.(?:inf|Inf|INF)
      | \.(?:nan|NaN|NAN)
    )$""",
    re.VERBOSE,
)
_FLOAT_TAG = "tag:yaml.org,2002:float"


class ConfigLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that also reads ``1e-3``, ``1E5`` and ``1.0e3`` as floats."""


ConfigLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != _FLOAT_TAG]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
ConfigLoader.add_implicit_resolver(_FLOAT_TAG, _FLOAT_RE, list("-+0123456789."))


def parse_yaml(text: str) -> Any:
    """Parse YAML text with :class:`ConfigLoader` (a SafeLoader: plain data only)."""
    return yaml.load(text, Loader=ConfigLoader)


# --------------------------------------------------------------------------- error paths


def _sections_in(annotation: Any) -> list[type[_Section]]:
    """Section classes a field can hold (unwrapping Optional, Annotated and unions)."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return _sections_in(get_args(annotation)[0])
    if origin is Union or origin is types.UnionType:
        return [s for arg in get_args(annotation) for s in _sections_in(arg)]
    if isinstance(annotation, type) and issubclass(annotation, _Section):
        return [annotation]
    return []


def _tag(section: type[_Section]) -> str:
    return get_args(section.model_fields["name"].annotation)[0]


def _walk(loc: Sequence[str | int]) -> tuple[list[str | int], list[type[_Section] | None]]:
    """A pydantic error location as the user's key path, with the section owning each key.

    Discriminated unions put the tag into the location (``model.physics.nbody.G``);
    it is dropped here, since the user never wrote it.
    """
    shown: list[str | int] = []
    owners: list[type[_Section] | None] = []
    section: type[_Section] | None = Config
    i = 0
    while i < len(loc):
        key = loc[i]
        i += 1
        shown.append(key)
        owners.append(section)
        found = section is not None and isinstance(key, str) and key in section.model_fields
        inner = _sections_in(section.model_fields[key].annotation) if found else []
        section = None
        if inner and issubclass(inner[0], _Tagged):
            by_tag = {_tag(s): s for s in inner}
            if i < len(loc) and loc[i] in by_tag:
                section = by_tag[loc[i]]
                i += 1
        elif inner:
            section = inner[0]
    return shown, owners


def _dotted(parts: Sequence[str | int]) -> str:
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


def _all_paths(section: type[_Section], prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    for name, field in section.model_fields.items():
        path = (*prefix, name)
        yield path
        for inner in _sections_in(field.annotation):
            yield from _all_paths(inner, path)


def _suggest(key: str, owner: type[_Section] | None, parent: Sequence[str | int]) -> str | None:
    """The closest valid key path: a sibling first, else the same name in another section."""
    if owner is not None:
        close = difflib.get_close_matches(key, list(owner.model_fields), n=1, cutoff=0.6)
        if close:
            return _dotted([*parent, close[0]])
    everywhere = {p[-1]: p for p in sorted(set(_all_paths(Config)), key=len, reverse=True)}
    close = difflib.get_close_matches(key, list(everywhere), n=1, cutoff=0.8)
    return ".".join(everywhere[close[0]]) if close else None


def _problem(error: Mapping[str, Any]) -> tuple[list[str | int], str]:
    """One pydantic error as ``(key path, message)``."""
    kind = error["type"]
    ctx = error.get("ctx") or {}
    shown, owners = _walk(error["loc"])
    if kind == "extra_forbidden":
        key = str(shown[-1])
        hint = _suggest(key, owners[-1] if owners else None, shown[:-1])
        return shown, f"unknown key '{_dotted(shown)}'" + (
            f" (did you mean '{hint}'?)" if hint else ""
        )
    if kind == "config" and ctx.get("at"):
        shown = [*shown, *(int(p) if p.isdigit() else p for p in ctx["at"].split("."))]
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        section = owners[-1] if owners else None
        field = section.model_fields.get(str(shown[-1])) if section is not None else None
        tags = [_tag(s) for s in _sections_in(field.annotation)] if field is not None else []
        choices = ", ".join(tags)
        if kind == "union_tag_not_found":
            return [*shown, "name"], f"missing required key (choose one of: {choices})"
        tag = str(ctx.get("tag"))
        close = difflib.get_close_matches(tag, tags, n=1, cutoff=0.5)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        return [*shown, "name"], f"unknown name {tag!r}{hint}; choose one of: {choices}"
    return shown, describe(error)


# --------------------------------------------------------------------------- line numbers


def _key_lines(
    node: yaml.Node | None, prefix: tuple[str | int, ...] = ()
) -> tuple[dict[tuple[str | int, ...], int], list[str]]:
    """Line (1-based) of every key in a composed YAML tree, and the keys written twice."""
    lines: dict[tuple[str | int, ...], int] = {}
    duplicates: list[str] = []
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                continue
            path = (*prefix, key_node.value)
            line = key_node.start_mark.line + 1
            if path in lines:
                duplicates.append(
                    f"duplicate key '{_dotted(path)}' (lines {lines[path]} and {line}); "
                    "write it once"
                )
            lines[path] = line
            sub, dup = _key_lines(value_node, path)
            lines.update(sub)
            duplicates += dup
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            lines[(*prefix, i)] = item.start_mark.line + 1
            sub, dup = _key_lines(item, (*prefix, i))
            lines.update(sub)
            duplicates += dup
    return lines, duplicates


# --------------------------------------------------------------------------- overrides


def _parse_override(text: str) -> tuple[tuple[str, ...], Any]:
    key, sep, raw = text.partition("=")
    path = tuple(key.strip().split("."))
    if not sep or not all(path):
        raise ConfigError(f"--set {text!r}: expected key.path=value, e.g. train.epochs=5")
    try:
        value = parse_yaml(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {text!r}: cannot parse the value: {exc}") from None
    return path, value


def _apply_override(data: dict[str, Any], path: tuple[str, ...], value: Any, text: str) -> None:
    node = data
    for i, key in enumerate(path[:-1]):
        child = node.get(key)
        if child is None:
            # Setting a key inside a null section (model.neural.hidden with
            # `neural: null`) switches that section on with its defaults.
            child = node[key] = {}
        elif not isinstance(child, dict):
            raise ConfigError(
                f"--set {text}: '{'.'.join(path[: i + 1])}' is a value, not a section"
            )
        node = child
    node[path[-1]] = value


# --------------------------------------------------------------------------- loading


def _not_a_mapping(data: Any) -> str:
    kind = "an empty file" if data is None else f"a {type(data).__name__}"
    return f"the top level must be a mapping with the sections {', '.join(_SECTIONS)}; got {kind}"


def config_from_dict(
    data: Mapping[str, Any],
    *,
    source: str | os.PathLike[str] | None = None,
    base_dir: str | os.PathLike[str] | None = None,
) -> Config:
    """Validate a config mapping (as read from YAML) into a :class:`Config`.

    Args:
        data: the parsed config.
        source: the file it came from, used in error messages and kept as
            ``config.source``.
        base_dir: folder that relative paths are resolved against (default:
            ``source``'s folder, else the working directory).

    Raises:
        ConfigError: listing every problem, one per line.
    """
    return _validate(data, source, base_dir, {}, {})


def _validate(
    data: Any,
    source: str | os.PathLike[str] | None,
    base_dir: str | os.PathLike[str] | None,
    lines: Mapping[tuple[str | int, ...], int],
    overrides: Mapping[tuple[str, ...], str],
) -> Config:
    """:func:`config_from_dict`, with each problem located by its line in the
    file or by the ``--set`` override that caused it."""
    if not isinstance(data, Mapping):
        raise ConfigError(_not_a_mapping(data), source)
    source_path = Path(os.path.abspath(source)) if source is not None else None
    if base_dir is None:
        base_dir = source_path.parent if source_path is not None else Path.cwd()
    try:
        config = Config.model_validate(
            dict(data), context={"base_dir": Path(os.path.abspath(base_dir))}
        )
    except ValidationError as exc:
        raise ConfigError(_problems(exc, lines, overrides), source) from None
    config._source = source_path
    return config


def _problems(
    exc: ValidationError,
    lines: Mapping[tuple[str | int, ...], int],
    overrides: Mapping[tuple[str, ...], str],
) -> list[str]:
    found = [(error, *_problem(error)) for error in exc.errors()]
    # A misspelt required key shows up twice, as unknown and as missing;
    # the unknown key with its suggestion says it all.
    suggested = [m for _, _, m in found if m.startswith("unknown key")]
    problems = []
    for error, shown, message in found:
        path = _dotted(shown)
        if error["type"] == "missing" and any(f"(did you mean '{path}'?)" in m for m in suggested):
            continue
        keys = tuple(shown)
        origin = next((o for p, o in overrides.items() if keys[: len(p)] == p), None)
        where = ""
        if origin is not None:
            where = f" (from --set {origin})"
        else:
            line = next(
                (lines[keys[:n]] for n in range(len(keys), 0, -1) if keys[:n] in lines), None
            )
            if line is not None:
                where = f" (line {line})"
        if message.startswith("unknown key") or not path:
            problems.append(message + where)
        else:
            problems.append(f"{path}: {message}{where}")
    return problems


def load_config(path: str | os.PathLike[str], overrides: Sequence[str] = ()) -> Config:
    """Read, override and validate a config file.

    Args:
        path: the YAML file. Relative ``data.path`` and ``output.dir`` are
            taken from its folder.
        overrides: ``key.path=value`` strings (``--set``); each value is parsed
            as YAML, so ``train.epochs=5`` is an int, ``solver.grad=mali`` a
            string and ``data.fit_window=[0,0.5]`` a list.

    Returns:
        The validated :class:`Config`, with ``config.source`` the file's absolute path.

    Raises:
        ConfigError: for a missing or unreadable file, a YAML syntax error
            (with its line), a top level that is not a mapping, a bad
            override, or any invalid or unknown key (all listed at once).
    """
    name = os.fspath(path)
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError("config file not found", name) from None
    except IsADirectoryError:
        raise ConfigError("is a directory, not a config file", name) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the config file: {exc}", name) from None
    try:
        data = parse_yaml(text)
        lines, duplicates = _key_lines(yaml.compose(text, Loader=ConfigLoader))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        what = " ".join(s for s in (exc.context, exc.problem) if s)
        raise ConfigError(f"YAML syntax error{where}: {what}", name) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"YAML error: {exc}", name) from None
    if duplicates:
        raise ConfigError(duplicates, name)
    if not isinstance(data, dict):
        raise ConfigError(_not_a_mapping(data), name)
    origins: dict[tuple[str, ...], str] = {}
    for text_override in overrides:
        try:
            key_path, value = _parse_override(text_override)
            _apply_override(data, key_path, value, text_override)
        except ConfigError as exc:
            raise ConfigError(exc.problems, name) from None
        origins[key_path] = text_override
    return _validate(data, name, None, lines, origins)


class _ConfigDumper(yaml.SafeDumper):
    """Sections as block mappings, short lists of numbers or names on one line."""


def _represent_list(dumper: yaml.SafeDumper, value: list) -> yaml.Node:
    flat = all(isinstance(v, (int, float, str, bool)) or v is None for v in value)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", value, flow_style=flat)


_ConfigDumper.add_representer(list, _represent_list)


def config_to_dict(config: Config) -> dict[str, Any]:
    """The config as plain data (paths as strings, tuples as lists): what YAML can hold."""
    return config.model_dump(mode="json")


def config_to_yaml(config: Config) -> str:
    """The resolved config as YAML; :func:`load_config` on it gives the same config back.

    Every default is written out and paths are absolute, so the text stands on
    its own wherever it is saved.
    """
    return yaml.dump(
        config_to_dict(config),
        Dumper=_ConfigDumper,
        sort_keys=False,
        default_flow_style=False,
        allow_unicode=True,
    )


def resolve_run_dir(config: Config, now: datetime | None = None) -> Path:
    """The run directory: ``output.dir``, else ``runs/<config stem>-<YYYYmmdd-HHMMSS>``
    next to the config file (or in the working directory for a config without a file)."""
    if config.output.dir is not None:
        return config.output.dir
    now = now or datetime.now()
    base = config.source.parent if config.source is not None else Path.cwd()
    stem = config.source.stem if config.source is not None else "run"
    return base / "runs" / f"{stem}-{now:%Y%m%d-%H%M%S}"


# --------------------------------------------------------------------------- torch settings


def resolve_dtype(name: str) -> torch.dtype:
    """``"float32"`` or ``"float64"`` as a ``torch.dtype``."""
    dtypes = {"float32": torch.float32, "float64": torch.float64}
    if name not in dtypes:
        raise ValueError(f"dtype: expected float32 or float64, got {name!r}")
    return dtypes[name]


def resolve_device(name: str) -> torch.device:
    """The ``torch.device`` for ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.

    ``auto`` is the current CUDA device when one is available, else the CPU.
    Asking for CUDA where there is none is an error rather than a silent CPU run.
    """
    if not isinstance(name, str) or not _DEVICE_RE.match(name):
        raise ValueError(f"device: expected auto, cpu, cuda or cuda:N, got {name!r}")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        build = torch.version.cuda
        why = "no CUDA device was found" if build else "this torch build has no CUDA support"
        raise ValueError(
            f"device: {name!r} was asked for but {why} (torch {torch.__version__}); "
            "use device: cpu or device: auto"
        )
    device = torch.device(name)
    count = torch.cuda.device_count()
    if device.index is not None and device.index >= count:
        raise ValueError(
            f"device: {name!r} does not exist; this machine has {count} CUDA device(s) "
            f"(cuda:0 to cuda:{count - 1})"
        )
    return device
