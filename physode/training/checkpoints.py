"""Checkpoints: written atomically, read back with ``torch.load(weights_only=True)``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from .._atomic import atomic_path

LAST = "last.pt"
BEST = "best.pt"


def save_checkpoint(state: dict[str, Any], path: Path) -> None:
    """Write ``state`` (tensors, numbers, strings, lists and dicts of them) to ``path``.

    Written atomically (:func:`physode._atomic.atomic_path`): a crash at any moment
    leaves either the old or the new file.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


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
