"""An honest resume: the run's config and the new one are compared, and only keys
declared safe may differ; those are applied from the resumed epoch on and recorded."""

from __future__ import annotations

from typing import Any

from .config import Config, config_to_dict

#: Keys a resume may change (more epochs, logging and checkpoint frequency).
SAFE_ON_RESUME = ("train.epochs", "train.log_every", "train.checkpoint_every")
#: Keys that describe where a run is, not what it fits.
_WHERE = ("output.dir",)


def _flat(data: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(data, dict):
        return {prefix: data}
    out: dict[str, Any] = {}
    for key, value in data.items():
        out.update(_flat(value, f"{prefix}.{key}" if prefix else str(key)))
    if not data and prefix:
        out[prefix] = {}
    return out


def config_changes(old: Config, new: Config) -> dict[str, tuple[Any, Any]]:
    """``key -> (old, new)`` for every dotted key whose value differs."""
    a, b = _flat(config_to_dict(old)), _flat(config_to_dict(new))
    keys = [k for k in dict.fromkeys([*a, *b]) if not k.startswith(_WHERE)]
    return {k: (a.get(k), b.get(k)) for k in keys if a.get(k) != b.get(k)}


def check_resume(old: Config, new: Config, done: int) -> tuple[dict, str | None]:
    """The safe changes of a resume after epoch ``done``, and why it is refused (or ``None``)."""
    changes = config_changes(old, new)
    refused = {k: v for k, v in changes.items() if k not in SAFE_ON_RESUME}
    notes = []
    if "train.epochs" in changes:
        epochs = changes["train.epochs"][1]
        if epochs < done:
            refused["train.epochs"] = changes["train.epochs"]
            notes.append(f"the run has done {done} epochs already")
        elif new.train.schedule is not None and new.train.schedule.name == "cosine":
            refused["train.epochs"] = changes["train.epochs"]
            notes.append("the cosine schedule's length is train.epochs")
    if not refused:
        return changes, None
    listing = "; ".join(f"{k}: {_show(a)} -> {_show(b)}" for k, (a, b) in refused.items())
    why = f" ({'; '.join(notes)})" if notes else ""
    return changes, (
        f"--resume: the config differs from the run's: {listing}{why}. A resume may change "
        f"only {', '.join(SAFE_ON_RESUME)}; fit other settings in a new run directory (-o)"
    )


def _show(value: Any) -> str:
    return "null" if value is None else repr(value)
