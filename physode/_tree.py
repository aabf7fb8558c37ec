"""States made of several tensors: tuples, lists, dicts (and named tuples) of tensors,
nested. The engine integrates one tensor; the front door flattens a structured state
into one vector and gives every result back in the state's structure.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["StateStructure"]


def _leaves(tree: Any, path: str, out: list[tuple[str, torch.Tensor]]) -> Any:
    """The tree's skeleton (leaves replaced by their index), filling ``out`` with
    ``(path, tensor)`` for every leaf."""
    if isinstance(tree, torch.Tensor):
        out.append((path or "y0", tree))
        return len(out) - 1
    if isinstance(tree, Mapping):
        return {k: _leaves(v, f"{path}[{k!r}]", out) for k, v in tree.items()}
    if isinstance(tree, tuple) and hasattr(tree, "_fields"):  # a named tuple
        return type(tree)(
            *(_leaves(v, f"{path}.{f}", out) for f, v in zip(tree._fields, tree, strict=True))
        )
    if isinstance(tree, (tuple, list)):
        return type(tree)(_leaves(v, f"{path}[{i}]", out) for i, v in enumerate(tree))
    raise ValueError(
        f"{path or 'y0'}: expected a tensor, or a tuple, list or dict of tensors, got "
        f"{type(tree).__name__}"
    )


def _build(skeleton: Any, parts: list) -> Any:
    if isinstance(skeleton, int):
        return parts[skeleton]
    if isinstance(skeleton, dict):
        return {k: _build(v, parts) for k, v in skeleton.items()}
    if isinstance(skeleton, tuple) and hasattr(skeleton, "_fields"):
        return type(skeleton)(*(_build(v, parts) for v in skeleton))
    return type(skeleton)(_build(v, parts) for v in skeleton)


@dataclass(frozen=True)
class StateStructure:
    """How a structured state maps onto one flat vector.

    Attributes:
        skeleton: the structure with leaf indices in place of the tensors.
        paths: each leaf's name in messages (``y0[0]``, ``y0['logp']``).
        shapes: each leaf's shape.
    """

    skeleton: Any
    paths: tuple[str, ...]
    shapes: tuple[torch.Size, ...]

    @property
    def sizes(self) -> list[int]:
        return [s.numel() for s in self.shapes]

    @classmethod
    def of(cls, y0: Any) -> tuple[StateStructure | None, torch.Tensor]:
        """``(None, y0)`` for a plain tensor; else the structure and the flat vector.

        Raises:
            ValueError: a leaf that is not a tensor, no leaf at all, or leaves of
                different dtypes or devices (naming the leaves).
        """
        if isinstance(y0, torch.Tensor):
            return None, y0
        found: list[tuple[str, torch.Tensor]] = []
        skeleton = _leaves(y0, "y0", found)
        if not found:
            raise ValueError("y0: holds no tensor")
        first_path, first = found[0]
        for path, leaf in found[1:]:
            if leaf.dtype != first.dtype or leaf.device != first.device:
                raise ValueError(
                    f"y0: every tensor of a structured state needs one dtype and device; "
                    f"{first_path} is {first.dtype} on {first.device}, {path} is "
                    f"{leaf.dtype} on {leaf.device}"
                )
        structure = cls(
            skeleton, tuple(p for p, _ in found), tuple(leaf.shape for _, leaf in found)
        )
        return structure, torch.cat([leaf.reshape(-1) for _, leaf in found])

    def unflatten(self, flat: torch.Tensor) -> Any:
        """The structured state of a flat vector ``(N,)``."""
        parts = [p.view(s) for p, s in zip(flat.split(self.sizes), self.shapes, strict=True)]
        return _build(self.skeleton, parts)

    def unflatten_series(self, flat: torch.Tensor) -> Any:
        """The structure of a series ``(T, N)``: each leaf ``(T, *shape)``."""
        parts = [
            p.reshape(flat.shape[0], *s)
            for p, s in zip(flat.split(self.sizes, dim=1), self.shapes, strict=True)
        ]
        return _build(self.skeleton, parts)

    def flatten(self, tree: Any, what: str = "func") -> torch.Tensor:
        """A structured value (``func``'s output) as one flat vector, checked against
        the state's structure (a message naming ``what`` and the leaf at fault)."""
        found: list[tuple[str, torch.Tensor]] = []
        skeleton = _leaves(tree, "y0", found)
        if skeleton != self.skeleton:
            raise ValueError(
                f"{what}: returned a {type(tree).__name__} whose structure differs from y0's; "
                "dy/dt must have y's structure"
            )
        for (path, leaf), shape in zip(found, self.shapes, strict=True):
            if leaf.shape != shape:
                raise ValueError(
                    f"{what}: returned shape {tuple(leaf.shape)} for {path}, whose shape is "
                    f"{tuple(shape)}; dy/dt must have y's shape"
                )
        return torch.cat([leaf.reshape(-1) for _, leaf in found])
