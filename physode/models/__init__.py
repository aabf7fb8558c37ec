"""Right-hand sides to build models from: known physics, neural terms and hybrids of both.

- :class:`Physics`: base of known-physics right-hand sides with named,
  constrained (positive, bounded, real, fixed) physical parameters;
- :class:`NBodyGravity`: Newtonian gravity with learnable masses;
- :class:`MLP`: a multilayer perceptron over the last dimension;
- :class:`Hybrid`: ``physics(t, y) + neural(y)``, with the APHYNITY penalty.
"""

from __future__ import annotations

from .hybrid import Hybrid
from .latent import ODERNN, GRUBaseline, LatentODE
from .nbody import NBodyGravity
from .neural import MLP
from .physics import Physics

__all__ = ["MLP", "ODERNN", "GRUBaseline", "Hybrid", "LatentODE", "NBodyGravity", "Physics"]
