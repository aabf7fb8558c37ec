"""Checkpoints: written atomically, read back with ``torch.load(weights_only=True)``.

``last.pt`` is the latest epoch saved; the one it replaced is kept as
``previous.pt``, so a ``last.pt`` that is unreadable (truncated by a full disk,
corrupted) still leaves a good checkpoint to resume or evaluate from.
"""

from __future__ import annotations

import io
import os
import pickle
import shutil
import zipfile
from pathlib import Path
from typing import Any

import torch

from .._atomic import atomic_path

LAST = "last.pt"
BEST = "best.pt"
PREVIOUS = "previous.pt"

__all__ = [
    "BEST",
    "LAST",
    "PREVIOUS",
    "CheckpointError",
    "UntrustedCheckpoint",
    "load_checkpoint",
    "load_with_fallback",
    "save_checkpoint",
]


class CheckpointError(ValueError):
    """A checkpoint that cannot be read (missing, truncated, corrupt, or not physode's)."""


class UntrustedCheckpoint(CheckpointError):
    """A checkpoint holding objects other than tensors and plain data, which
    ``torch.load(weights_only=True)`` refuses: not written by physode, and not loaded."""


def save_checkpoint(state: dict[str, Any], path: Path, *, keep_previous: bool = False) -> None:
    """Write ``state`` (tensors, numbers, strings, lists and dicts of them) to ``path``.

    Written atomically (:func:`physode._atomic.atomic_path`): a crash at any moment
    leaves either the old or the new file. With ``keep_previous`` the file being
    replaced is kept as ``previous.pt`` beside it (a hard link, or a copy where the
    file system has none).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    if keep_previous and path.exists():
        with atomic_path(path.with_name(PREVIOUS)) as tmp:
            try:
                os.link(path, tmp)
            except OSError:
                shutil.copy2(path, tmp)
    # Serialised in memory first: torch.save on a full disk raises a RuntimeError with
    # no errno, a plain write an OSError that says why.
    buffer = io.BytesIO()
    torch.save(state, buffer)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buffer.getbuffer())


def load_checkpoint(path: Path, device: torch.device | str = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (no pickled code is run).

    Raises:
        CheckpointError: missing, truncated or corrupt (the path and what is wrong).
        UntrustedCheckpoint: it holds objects ``weights_only`` refuses.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no checkpoint here")
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError as exc:
        if "weights only" in str(exc).lower():
            raise UntrustedCheckpoint(
                f"{path}: untrusted: it holds objects other than tensors and plain data, "
                "so it was not written by physode, and it is not loaded"
            ) from None
        raise CheckpointError(f"{path}: corrupt ({_first_line(exc)})") from None
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError, KeyError) as exc:
        raise CheckpointError(
            f"{path}: unreadable, truncated or corrupt ({_first_line(exc)})"
        ) from None
    if not isinstance(state, dict) or "model" not in state or "epoch" not in state:
        raise CheckpointError(f"{path}: not a physode checkpoint (no model state and epoch)")
    return state


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def load_with_fallback(
    folder: Path, which: str = LAST, device: torch.device | str = "cpu"
) -> tuple[dict[str, Any], str | None]:
    """The checkpoint ``which`` in ``folder``, or ``previous.pt`` when ``which`` is
    ``last.pt`` and unreadable: ``(state, note)``, the note saying what was used instead.

    Raises:
        UntrustedCheckpoint: never fallen back from.
        CheckpointError: neither could be read (both reasons given).
    """
    try:
        return load_checkpoint(folder / which, device), None
    except UntrustedCheckpoint:
        raise
    except CheckpointError as exc:
        if which != LAST or not (folder / PREVIOUS).exists():
            raise
        try:
            state = load_checkpoint(folder / PREVIOUS, device)
        except CheckpointError as again:
            raise CheckpointError(f"{exc}; and {again}") from None
        note = f"{exc}; using {folder / PREVIOUS} (epoch {state['epoch']}) instead"
        return state, note
