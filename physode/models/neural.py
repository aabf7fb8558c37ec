"""Neural terms: a plain multilayer perceptron over the last dimension."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise
from typing import Literal, get_args

import torch
from torch import nn

from .._checks import positive_int
from .hybrid import Hybrid

#: The activation names :class:`MLP` takes.
Activation = Literal["tanh", "relu", "softplus", "silu", "swish", "elu", "gelu"]

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
    "softplus": nn.Softplus,
    "silu": nn.SiLU,
    "swish": nn.SiLU,
    "elu": nn.ELU,
    "gelu": nn.GELU,
}
assert tuple(ACTIVATIONS) == get_args(Activation)


class MLP(nn.Module):
    """``Linear -> activation -> ... -> Linear`` applied over the last dimension.

    ``forward(x)`` maps ``(..., in_features)`` to ``(..., out_features)`` for
    any leading batch dimensions. It has no time argument: :class:`Hybrid`
    calls ``neural(y)``, so the learned term is autonomous. To use an MLP
    alone as an ODE right-hand side ``f(t, y)``, use :meth:`as_ode` (or
    ``Hybrid(neural=mlp)``, which is the same).

    Args:
        in_features: size of the input's last dimension.
        out_features: size of the output's last dimension.
        hidden: widths of the hidden layers; ``()`` gives a single linear map.
        activation: one of ``tanh``, ``relu``, ``softplus``, ``silu`` (alias
            ``swish``), ``elu``, ``gelu``.
        final_zero: initialise the last layer's weight and bias to zero, so
            the network outputs exactly zero at first: a hybrid model then
            starts as its pure physics, and the network only grows to explain
            what the physics cannot.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        hidden: Sequence[int] = (64, 64),
        activation: Activation = "tanh",
        final_zero: bool = False,
    ) -> None:
        super().__init__()
        self.in_features = positive_int("in_features", in_features)
        self.out_features = positive_int("out_features", out_features)
        if isinstance(hidden, int):
            hidden = (hidden,)
        self.hidden = tuple(positive_int("hidden", h) for h in hidden)
        key = activation.lower() if isinstance(activation, str) else activation
        if key not in ACTIVATIONS:
            raise ValueError(
                f"activation: unknown activation {activation!r}; "
                f"choose one of {', '.join(ACTIVATIONS)}"
            )
        self.activation = key
        layers: list[nn.Module] = []
        sizes = (self.in_features, *self.hidden)
        for a, b in pairwise(sizes):
            layers += [nn.Linear(a, b), ACTIVATIONS[key]()]
        layers.append(nn.Linear(sizes[-1], self.out_features))
        self.net = nn.Sequential(*layers)
        if final_zero:
            last = self.net[-1]
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(..., in_features)`` -> ``(..., out_features)``."""
        if x.shape[-1] != self.in_features:
            raise ValueError(
                f"x: MLP expects a last dimension of {self.in_features}, got {tuple(x.shape)}"
            )
        return self.net(x)

    def as_ode(self) -> Hybrid:
        """This network as an ODE right-hand side ``f(t, y) = self(y)`` (needs
        ``in_features == out_features``)."""
        return Hybrid(neural=self)
