"""Known physics plus a learned correction: ``dy/dt = physics(t, y) + neural(y)``."""

from __future__ import annotations

import torch
from torch import nn

from .._checks import finite_float, positive_int


class Hybrid(nn.Module):
    """An ODE right-hand side made of a physics part, a neural part, or both.

    - First-order physics (or none): ``dy/dt = physics(t, y) + neural(y)``,
      the network mapping ``(..., D)`` to ``(..., D)``.
    - Second-order physics (``physics.second_order``, state ``[q, v]`` with
      ``D = 2n``): the network maps the full state ``(..., D)`` to
      accelerations ``(..., n)`` that are added to the acceleration half only,
      so ``dq/dt = v`` stays exact.
    - Neural only: ``dy/dt = neural(y)``; the state size comes from
      ``state_size`` or from the network's ``in_features``.

    The network is called as ``neural(y)``, without the time: the learned term
    is autonomous.

    Args:
        physics: the known part, usually a :class:`~physode.models.Physics`,
            called as ``physics(t, y)``.
        neural: the learned part, an ``nn.Module`` called as ``neural(y)``
            (e.g. :class:`~physode.models.MLP`, ideally with ``final_zero=True``
            so that training starts from the pure physics).
        penalty: weight λ >= 0 of :meth:`regularization`.
        state_size: ``D``; only needed for a neural-only model whose network
            does not say its input size.

    Raises:
        ValueError: when neither part is given, a part is not an ``nn.Module``
            (its parameters would not be found), or the sizes disagree.
    """

    def __init__(
        self,
        physics: nn.Module | None = None,
        neural: nn.Module | None = None,
        penalty: float = 0.0,
        *,
        state_size: int | None = None,
    ) -> None:
        super().__init__()
        if physics is None and neural is None:
            raise ValueError("physics, neural: give at least one of the two")
        for name, part in (("physics", physics), ("neural", neural)):
            if part is not None and not isinstance(part, nn.Module):
                raise ValueError(
                    f"{name}: must be an nn.Module (so that its parameters are trained), "
                    f"got {type(part).__name__}"
                )
        penalty = finite_float("penalty", penalty)
        if state_size is not None:
            positive_int("state_size", state_size)
        self.physics = physics
        self.neural = neural
        self.penalty = penalty
        self.second_order = bool(getattr(physics, "second_order", False))
        self.state_size = self._resolve_size(state_size)

    def _resolve_size(self, state_size: int | None) -> int | None:
        known = getattr(self.physics, "state_size", None) if self.physics is not None else None
        if known is not None and state_size is not None and known != state_size:
            raise ValueError(
                f"state_size: {state_size} disagrees with the physics' state size {known}"
            )
        size = known if known is not None else state_size
        if self.neural is None:
            return size
        n_in = getattr(self.neural, "in_features", None)
        n_out = getattr(self.neural, "out_features", None)
        if size is None:
            size = n_in
        if size is not None and self.second_order and size % 2:
            raise ValueError(f"state_size: a second-order state needs an even size, got {size}")
        expected_out = None if size is None else (size // 2 if self.second_order else size)
        if n_in is not None and size is not None and n_in != size:
            raise ValueError(f"neural: takes {n_in} inputs but the state has {size} components")
        if n_out is not None and expected_out is not None and n_out != expected_out:
            what = "accelerations (half the state)" if self.second_order else "state components"
            raise ValueError(
                f"neural: returns {n_out} outputs but must return {expected_out} {what}"
            )
        return size

    def extra_repr(self) -> str:
        return f"penalty={self.penalty:g}, second_order={self.second_order}"

    def neural_term(self, t: torch.Tensor | None, y: torch.Tensor) -> torch.Tensor | None:
        """The network's contribution for states ``y`` of shape ``(..., D)``: ``(..., D)`` for a
        first-order model, accelerations ``(..., D/2)`` for a second-order one; ``None``
        without a network. ``t`` is unused (the term is autonomous) and may be ``None``."""
        return None if self.neural is None else self.neural(y)

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """dy/dt for states ``(..., D)``; returns ``(..., D)``."""
        if self.physics is None:
            return self.neural(y)
        f = self.physics(t, y)
        if self.neural is None:
            return f
        if not self.second_order:
            return f + self.neural(y)
        n = y.shape[-1] // 2
        return torch.cat([f[..., :n], f[..., n:] + self.neural(y)], dim=-1)

    def regularization(self, t: torch.Tensor | None, ys: torch.Tensor) -> torch.Tensor:
        """``penalty * mean(neural_term(ys) ** 2)``, to add to the loss.

        Following APHYNITY (Yin et al., "Augmenting Physical Models with Deep
        Networks for Complex Dynamics Forecasting", ICLR 2021), penalising the
        size of the neural term makes the physics explain all it can and leaves
        the network only what the physics cannot express; it also makes the
        split between the two parts unique.

        Args:
            t: unused (the neural term is autonomous); may be ``None``.
            ys: states of any shape ``(..., D)``, e.g. a predicted trajectory
                ``(len(t), batch, D)``.

        Returns:
            A 0-dim tensor in ``ys``'s dtype; exactly zero when ``penalty`` is 0
            or there is no network.
        """
        if self.neural is None or self.penalty == 0:
            return ys.new_zeros(())
        return self.penalty * self.neural_term(t, ys).square().mean()

    def physical_parameters(self) -> dict[str, float | list]:
        """The physics' parameters as plain numbers (empty without physics)."""
        get = getattr(self.physics, "physical_parameters", None)
        return get() if get is not None else {}

    def parameter_units(self) -> dict[str, str]:
        """The physics' parameter units (empty without physics)."""
        get = getattr(self.physics, "parameter_units", None)
        return get() if get is not None else {}

    def parameter_specs(self) -> dict:
        """The physics' parameter specs (empty without physics)."""
        get = getattr(self.physics, "parameter_specs", None)
        return get() if get is not None else {}

    def variable_names(self) -> list[str]:
        """The physics' variable names, or ``y0``, ``y1``, ... for a neural-only model."""
        get = getattr(self.physics, "variable_names", None)
        if get is not None:
            return get()
        if self.state_size is None:
            raise ValueError("Hybrid: state_size is unknown, so the variables cannot be named")
        return [f"y{i}" for i in range(self.state_size)]
