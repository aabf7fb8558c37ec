"""Named choices (model types, simulators, tasks) and references to the user's own code.

A :class:`Registry` maps built-in names to objects, usually classes or
functions. Wherever a config names one, it may instead give a *reference* to
code of the user's:

- ``path/to/file.py:Name``: the object ``Name`` defined in that Python file;
  a relative path is taken from ``base_dir`` (the config file's folder);
- ``package.module:Name``: ``Name`` in an importable module.

A file is imported once per process, under a module name made from its
absolute path, so the classes a config names are the same objects wherever
they are looked up again (the checkpoint of a run, ``isinstance`` checks).
"""

from __future__ import annotations

import difflib
import hashlib
import importlib
import importlib.util
import inspect
import os
import sys
import traceback
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, Generic, TypeVar

T = TypeVar("T")

__all__ = [
    "CodeReferenceError",
    "Registry",
    "canonical_reference",
    "is_reference",
    "load_reference",
]


class CodeReferenceError(ValueError):
    """A reference to user code that cannot be loaded; the message names the file (or
    module), the object and why."""


def is_reference(name: str) -> bool:
    """Whether ``name`` is a reference (``file.py:Name``, ``module:Name``), not a built-in."""
    return ":" in name


def _split(reference: str) -> tuple[str, str]:
    where, sep, attr = reference.rpartition(":")
    if not sep or not where or not attr:
        raise CodeReferenceError("expected path/to/file.py:Name or package.module:Name")
    if not attr.isidentifier():
        raise CodeReferenceError(f"{attr!r} is not a Python name")
    return where, attr


def _module_name(path: Path) -> str:
    digest = hashlib.sha1(str(path).encode()).hexdigest()[:10]
    stem = "".join(c if c.isalnum() else "_" for c in path.stem)
    return f"physode_user_{stem}_{digest}"


def _user_frame(exc: BaseException, path: Path) -> str:
    """``" (line N)"`` of the deepest frame of ``exc`` inside ``path``, or ``""``."""
    line = None
    for frame in traceback.extract_tb(exc.__traceback__):
        if Path(frame.filename) == path:
            line = frame.lineno
    return f" (line {line})" if line is not None else ""


def _import_file(path: Path) -> Any:
    name = _module_name(path)
    if name in sys.modules:
        return sys.modules[name]
    if not path.is_file():
        why = "is a folder, not a Python file" if path.is_dir() else "does not exist"
        raise CodeReferenceError(f"{path} {why}")
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise CodeReferenceError(f"{path}: cannot be imported as a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    # As when the file is run as a script: modules beside it can be imported from it.
    folder = str(path.parent)
    sys.path.insert(0, folder)
    try:
        spec.loader.exec_module(module)
    except SyntaxError as exc:
        del sys.modules[name]
        raise CodeReferenceError(f"{path}, line {exc.lineno}: syntax error: {exc.msg}") from None
    except Exception as exc:
        del sys.modules[name]
        raise CodeReferenceError(
            f"{path}: importing it raised {type(exc).__name__}: {exc}{_user_frame(exc, path)}"
        ) from None
    finally:
        try:
            sys.path.remove(folder)
        except ValueError:
            pass
    return module


def _import_module(dotted: str) -> Any:
    try:
        return importlib.import_module(dotted)
    except ModuleNotFoundError as exc:
        raise CodeReferenceError(f"cannot import module {dotted!r}: {exc}") from None
    except Exception as exc:
        raise CodeReferenceError(
            f"module {dotted!r}: importing it raised {type(exc).__name__}: {exc}"
        ) from None


def _defined_in(module: Any) -> list[str]:
    """Public classes and functions defined in ``module`` itself (not imported into it)."""
    return sorted(
        n
        for n, v in vars(module).items()
        if not n.startswith("_")
        and (inspect.isclass(v) or inspect.isfunction(v))
        and getattr(v, "__module__", None) == module.__name__
    )


def canonical_reference(reference: str, base_dir: str | os.PathLike[str] | None = None) -> str:
    """``reference`` with a file path made absolute (a module reference is returned as is)."""
    where, attr = _split(reference)
    if not where.endswith(".py"):
        return reference
    path = Path(where).expanduser()
    if not path.is_absolute():
        path = Path(base_dir or Path.cwd()) / path
    return f"{os.path.normpath(path)}:{attr}"


def load_reference(reference: str, base_dir: str | os.PathLike[str] | None = None) -> Any:
    """The object a reference names.

    Args:
        reference: ``path/to/file.py:Name`` or ``package.module:Name``.
        base_dir: the folder a relative file path is taken from (default: the
            working directory).

    Raises:
        CodeReferenceError: the file or module is missing or fails to import (the
            message gives the exception and the line), or it has no ``Name`` (the
            message lists what it defines and suggests the closest name).
    """
    try:
        where, attr = _split(canonical_reference(reference, base_dir))
        if where.endswith(".py"):
            module, label = _import_file(Path(where)), where
        else:
            module, label = _import_module(where), f"module {where!r}"
        if not hasattr(module, attr):
            defined = _defined_in(module)
            close = difflib.get_close_matches(attr, defined, n=1, cutoff=0.6)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            listing = f"; it defines {', '.join(defined)}" if defined else ""
            raise CodeReferenceError(f"{label} has no {attr!r}{hint}{listing}")
    except CodeReferenceError as exc:
        raise CodeReferenceError(f"cannot load {reference!r}: {exc}") from None
    return getattr(module, attr)


class Registry(Mapping[str, T], Generic[T]):
    """Built-in choices by name; :meth:`resolve` also takes references to user code.

    Args:
        kind: what the entries are, for messages (``"physics model"``, ``"simulator"``).
        entries: the initial ``name -> object`` entries.
        check: called on every object :meth:`resolve` returns (built-in or
            referenced); raises ``ValueError`` when the object does not suit.
    """

    def __init__(
        self,
        kind: str,
        entries: Mapping[str, T] | None = None,
        *,
        check: Callable[[Any, str], None] | None = None,
    ) -> None:
        self.kind = kind
        self._entries: dict[str, T] = dict(entries or {})
        self._check = check

    def register(self, name: str, obj: T | None = None) -> Any:
        """Add ``obj`` as ``name`` (or, without ``obj``, decorate the object to add)."""
        if obj is None:
            return lambda o: self.register(name, o)
        if not name or is_reference(name):
            raise ValueError(f"name: {name!r} cannot be registered (no ':' allowed)")
        if name in self._entries and self._entries[name] is not obj:
            raise ValueError(f"name: {self.kind} {name!r} is registered already")
        self._entries[name] = obj
        return obj

    def __getitem__(self, name: str) -> T:
        return self._entries[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def resolve(self, name: str, base_dir: str | os.PathLike[str] | None = None) -> T:
        """The built-in ``name``, or the object a reference names.

        Raises:
            ValueError: an unknown built-in name (the message lists the known ones
                and suggests the closest), or an object that does not suit.
            CodeReferenceError: a reference that cannot be loaded.
        """
        if is_reference(name):
            obj = load_reference(name, base_dir)
        elif name in self._entries:
            obj = self._entries[name]
        else:
            close = difflib.get_close_matches(name, list(self._entries), n=1, cutoff=0.5)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(
                f"unknown {self.kind} {name!r}{hint}; choose one of: "
                f"{', '.join(self._entries)}, or name your own as path/to/file.py:Name "
                "or package.module:Name"
            )
        if self._check is not None:
            self._check(obj, name)
        return obj

    def canonical(self, name: str, base_dir: str | os.PathLike[str] | None = None) -> str:
        """``name`` as a config should record it: built-in names as they are, file
        references with an absolute path."""
        return canonical_reference(name, base_dir) if is_reference(name) else name
