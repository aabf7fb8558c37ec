"""Linear algebra for the solver's own small products, kept off threaded BLAS.

A dense-output combination ``y0 + w @ v`` or a dot product over a state of a
few dozen numbers takes microseconds. Handed to the BLAS library at torch's
default thread count, it may instead wait milliseconds for a worker thread
whose core another process holds: on a shared machine this once made a
three-body solve ten times slower. Below :data:`SMALL_STATE` elements on the CPU
these products are elementwise torch operations, which torch runs on the
calling thread at such sizes; larger states, and every GPU, keep the fused BLAS
call, which is faster there.
"""

from __future__ import annotations

import torch

#: Largest state (number of elements) whose products stay elementwise on the CPU.
SMALL_STATE = 1024


def is_small(x: torch.Tensor) -> bool:
    return x.device.type == "cpu" and x.numel() <= SMALL_STATE


def combine(y0: torch.Tensor, weights: torch.Tensor, vectors: torch.Tensor) -> torch.Tensor:
    """``y0 + weights @ vectors``: shapes ``(1, N)``, ``(T, M)``, ``(M, N)`` -> ``(T, N)``."""
    if is_small(y0):
        return y0 + (weights.unsqueeze(-1) * vectors).sum(dim=1)
    return torch.addmm(y0, weights, vectors)


def dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The dot product of two flat tensors of equal length (0-dim tensor)."""
    if is_small(a):
        return (a * b).sum()
    return torch.dot(a, b)
