"""Checkpoints: written atomically, read back with ``torch.load(weights_only=True)``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

LAST = "last.pt"
BEST = "best.pt"


def save_checkpoint(state: dict[str, Any], path: Path) -> None:
    """Write ``state`` (tensors, numbers, strings, lists and dicts of them) to ``path``.

    Written to a temporary file in the same folder, flushed to disk, then renamed
    over ``path``: a crash at any moment leaves either the old or the new file.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as fh:
            torch.save(state, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def load_checkpoint(path: Path, device: torch.device | str = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (no pickled code is run)."""
    if not path.exists():
        raise FileNotFoundError(f"{path}: no checkpoint here")
    return torch.load(path, map_location=device, weights_only=True)


def restore_training(ckpt: dict[str, Any], key: str, module, optimizer, schedule) -> None:
    """Put a checkpoint's module (under ``key``), optimiser and schedule states back."""
    module.load_state_dict(ckpt[key])
    optimizer.load_state_dict(ckpt["optimizer"])
    if schedule is not None:
        schedule.load_state_dict(ckpt["schedule"])
