"""Newtonian gravity between N point masses, with learnable masses."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .._checks import finite_float, positive_int
from .physics import Physics


class NBodyGravity(Physics):
    """N bodies attracting each other by Newtonian gravity (optionally softened).

    The state has shape ``(..., 2 * n_bodies * dim)``: all positions first,
    body by body (``x1, y1, z1, x2, ...``), then all velocities in the same
    order (``vx1, vy1, vz1, vx2, ...``); :meth:`variable_names` gives exactly
    these names (without ``z`` for ``dim=2``). :meth:`split` and :meth:`join`
    convert to and from ``(..., n_bodies, dim)`` positions and velocities.

    The acceleration of body i is

        a_i = G Σ_{j≠i} m_j (r_j − r_i) / (|r_j − r_i|² + ε²)^{3/2},

    ε being the softening length; with ε > 0 the matching potential energy is
    −G Σ_{i<j} m_i m_j / (|r_j − r_i|² + ε²)^{1/2}, so energy is conserved
    either way.

    Units are whatever the data use, consistently: positions in length,
    velocities in length/time, masses in mass, G in length³/(mass·time²).

    Physical parameters: ``masses`` (positive, shape ``(n_bodies,)``, learned
    through log-masses unless ``learn_masses=False``) and ``G`` (fixed).

    Args:
        n_bodies: number of bodies (>= 1).
        dim: spatial dimension (>= 1; usually 2 or 3).
        G: the gravitational constant (>= 0), in length³/(mass·time²).
        masses: initial masses, ``n_bodies`` positive numbers; ``None`` means all ones.
        learn_masses: ``False`` keeps the masses as a buffer (no gradient).
        softening: ε >= 0, in length units; removes the singularity of close encounters.
    """

    second_order = True

    def __init__(
        self,
        n_bodies: int,
        dim: int = 3,
        G: float = 1.0,
        masses: Sequence[float] | torch.Tensor | None = None,
        learn_masses: bool = True,
        softening: float = 0.0,
    ) -> None:
        positive_int("n_bodies", n_bodies)
        positive_int("dim", dim)
        super().__init__(state_size=2 * n_bodies * dim)
        self.n_bodies = n_bodies
        self.dim = dim
        self.softening = finite_float("softening", softening)
        G = finite_float("G", G)
        if masses is None:
            masses = [1.0] * n_bodies
        try:
            shape = tuple(torch.as_tensor(masses).shape)
        except (TypeError, ValueError, RuntimeError):
            shape = None
        if shape != (n_bodies,):
            raise ValueError(f"masses: expected {n_bodies} numbers (one per body), got {masses!r}")
        self.declare("masses", masses, constraint="positive", learn=learn_masses, units="mass")
        self.declare("G", G, constraint="fixed", units="length^3/(mass*time^2)")

    def extra_repr(self) -> str:
        return (
            f"n_bodies={self.n_bodies}, dim={self.dim}, softening={self.softening:g}, "
            + super().extra_repr()
        )

    def variable_names(self) -> list[str]:
        axes = "xyz"[: self.dim] if self.dim <= 3 else [f"x{k}_" for k in range(self.dim)]
        positions = [f"{a}{i}" for i in range(1, self.n_bodies + 1) for a in axes]
        return positions + [f"v{name}" for name in positions]

    # -- state layout --------------------------------------------------------------------------

    def split(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(..., 2 n dim)`` state -> positions and velocities, each ``(..., n, dim)``."""
        if y.shape[-1] != self.state_size:
            raise ValueError(
                f"y: expected a last dimension of {self.state_size} "
                f"(2 * {self.n_bodies} bodies * {self.dim} dims), got {y.shape[-1]}"
            )
        half = self.n_bodies * self.dim
        shape = (self.n_bodies, self.dim)
        return y[..., :half].unflatten(-1, shape), y[..., half:].unflatten(-1, shape)

    def join(self, positions: torch.Tensor, velocities: torch.Tensor) -> torch.Tensor:
        """Positions and velocities ``(..., n, dim)`` -> the ``(..., 2 n dim)`` state."""
        return torch.cat([positions.flatten(-2), velocities.flatten(-2)], dim=-1)

    # -- dynamics ------------------------------------------------------------------------------

    def _masses(self, like: torch.Tensor, masses: torch.Tensor | None = None) -> torch.Tensor:
        m = self.value("masses") if masses is None else masses
        return m.to(dtype=like.dtype, device=like.device)

    def _pairs(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``r_j - r_i`` as ``(..., n, n, dim)`` and the softened squared distances ``(..., n, n)``
        with 1 added on the diagonal."""
        diff = positions.unsqueeze(-3) - positions.unsqueeze(-2)
        # The diagonal distance is 0: its power (or square root) has an infinite derivative
        # there, and 0 * inf = NaN poisons the gradient even where the term is masked out.
        # Adding 1 on the diagonal keeps every power finite; the diagonal's contribution
        # is still exactly zero because diff[..., i, i, :] == 0 (and masked for the energy).
        eye = torch.eye(self.n_bodies, dtype=positions.dtype, device=positions.device)
        dist2 = diff.square().sum(-1) + self.softening**2 + eye
        return diff, dist2

    def accelerations(
        self, positions: torch.Tensor, masses: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Gravitational accelerations of every body, all pairs at once.

        Args:
            positions: ``(..., n_bodies, dim)`` in length units.
            masses: optional masses ``(n_bodies,)`` or ``(..., n_bodies)`` to use
                instead of the module's own.

        Returns:
            ``(..., n_bodies, dim)`` in length/time².
        """
        if positions.shape[-2:] != (self.n_bodies, self.dim):
            raise ValueError(
                f"positions: expected shape (..., {self.n_bodies}, {self.dim}), "
                f"got {tuple(positions.shape)}"
            )
        m = self._masses(positions, masses)
        G = self.value("G").to(dtype=positions.dtype, device=positions.device)
        diff, dist2 = self._pairs(positions)
        weights = G * m.unsqueeze(-2) * dist2.pow(-1.5)
        return (weights.unsqueeze(-1) * diff).sum(-2)

    def acceleration(self, t: torch.Tensor, q: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Flattened accelerations ``(..., n dim)`` from flattened positions ``q``."""
        return self.accelerations(q.unflatten(-1, (self.n_bodies, self.dim))).flatten(-2)

    # -- invariants ----------------------------------------------------------------------------

    def kinetic_energy(self, y: torch.Tensor) -> torch.Tensor:
        """Σ m_i |v_i|² / 2 for states ``(..., D)``; returns ``(...)`` in mass·length²/time²."""
        _, vel = self.split(y)
        return 0.5 * (self._masses(y) * vel.square().sum(-1)).sum(-1)

    def potential_energy(self, y: torch.Tensor) -> torch.Tensor:
        """−G Σ_{i<j} m_i m_j / (|r_ij|² + ε²)^{1/2} for states ``(..., D)``; returns ``(...)``."""
        pos, _ = self.split(y)
        m = self._masses(y)
        G = self.value("G").to(dtype=y.dtype, device=y.device)
        _, dist2 = self._pairs(pos)
        upper = torch.ones(self.n_bodies, self.n_bodies, dtype=torch.bool, device=y.device).triu(1)
        pair = (m.unsqueeze(-1) * m.unsqueeze(-2)) * dist2.rsqrt()
        return -G * torch.where(upper, pair, torch.zeros_like(pair)).sum((-2, -1))

    def total_energy(self, y: torch.Tensor) -> torch.Tensor:
        """Kinetic plus potential energy, ``(...)``."""
        return self.kinetic_energy(y) + self.potential_energy(y)

    def momentum(self, y: torch.Tensor) -> torch.Tensor:
        """Total linear momentum Σ m_i v_i, ``(..., dim)`` in mass·length/time."""
        _, vel = self.split(y)
        return (self._masses(y).unsqueeze(-1) * vel).sum(-2)

    def center_of_mass(self, y: torch.Tensor) -> torch.Tensor:
        """Σ m_i r_i / Σ m_i, ``(..., dim)`` in length units."""
        pos, _ = self.split(y)
        m = self._masses(y).unsqueeze(-1)
        return (m * pos).sum(-2) / m.sum(-2)
