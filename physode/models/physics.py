"""Known-physics right-hand sides with named, constrained, optionally learnable parameters."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from .._checks import positive_int

CONSTRAINTS = ("positive", "real", "bounded", "fixed")


@dataclass(frozen=True)
class ParameterSpec:
    """How one physical parameter is stored and constrained.

    Attributes:
        name: the parameter's name, as given to :meth:`Physics.declare`.
        constraint: ``"positive"``, ``"real"``, ``"bounded"`` or ``"fixed"``.
        learn: whether the optimiser sees it (always ``False`` for ``"fixed"``).
        units: free-text units, e.g. ``"m"`` or ``"length^3/(mass*time^2)"``.
        bounds: ``(lo, hi)`` for ``"bounded"``, else ``None``.
        shape: the value's shape, ``()`` for a scalar.

    Reads both as ``spec.units`` and ``spec["units"]``; :meth:`as_dict` gives
    a JSON-friendly dict.
    """

    name: str
    constraint: str
    learn: bool
    units: str
    bounds: tuple[float, float] | None
    shape: tuple[int, ...]

    def __getitem__(self, key: str) -> Any:
        return getattr(self, key)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["bounds"] = list(self.bounds) if self.bounds is not None else None
        d["shape"] = list(self.shape)
        return d


def _as_values(name: str, value, what: str = "init") -> torch.Tensor:
    """``value`` as a float64 CPU tensor, refusing anything that is not finite real numbers."""
    if isinstance(value, torch.Tensor):
        t = value.detach().to(device="cpu", dtype=torch.float64)
    else:
        try:
            t = torch.as_tensor(value, dtype=torch.float64)
        except (TypeError, ValueError, RuntimeError):
            raise ValueError(
                f"parameter {name!r}: {what} must be a number or a sequence of numbers, "
                f"got {value!r}"
            ) from None
    if t.numel() == 0:
        raise ValueError(f"parameter {name!r}: {what} is empty")
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"parameter {name!r}: {what} must be finite, got {value!r}")
    return t


def _format(value: float | list, units: str) -> str:
    def fmt(v):
        return f"[{', '.join(fmt(x) for x in v)}]" if isinstance(v, list) else f"{v:.6g}"

    return fmt(value) + (f" {units}" if units else "")


class Physics(nn.Module):
    """Base class of known-physics right-hand sides ``forward(t, y) -> dy/dt``.

    A subclass declares its physical parameters in ``__init__`` with
    :meth:`declare` and reads them in ``forward`` with :meth:`value` (or as
    attributes: ``self.L`` is ``self.value("L")``). Each parameter is stored
    as an unconstrained raw tensor (``raw_<name>`` in the state dict) and
    mapped to its value on every read, so the optimiser works on an
    unconstrained space while the model only ever sees valid values.

    First-order systems override ``forward(t, y)``: ``y`` has shape ``(..., D)``
    (any leading batch dimensions) and the result has the same shape.

    Second-order systems set ``second_order = True`` and implement
    ``acceleration(t, q, v) -> (..., n)`` instead. Their state's last
    dimension is ``[positions (n), velocities (n)]``, ``D = 2n``, and the
    base ``forward`` returns ``[v, acceleration(t, q, v)]``: the position
    half of dy/dt is the velocity half of the state, copied exactly.

    The module's device and dtype are those of its parameters (``.to()``,
    ``.double()``); subclasses should cast values to the state's dtype where
    a mismatch would otherwise change the result's precision.

    Attributes:
        second_order: ``True`` for ``[q, v]`` states (see above).
        state_size: ``D``, the state's last dimension, or ``None`` if the
            subclass accepts any size.
    """

    second_order: bool = False
    state_size: int | None = None

    def __init__(self, state_size: int | None = None) -> None:
        super().__init__()
        self._physical_specs: dict[str, ParameterSpec] = {}
        if state_size is not None:
            positive_int("state_size", state_size)
            if self.second_order and state_size % 2:
                raise ValueError(
                    f"state_size: a second-order system needs an even size "
                    f"(positions then velocities), got {state_size}"
                )
            self.state_size = state_size

    # -- declaring and reading parameters ------------------------------------------------------

    def declare(
        self,
        name: str,
        init: float | Sequence[float] | torch.Tensor,
        *,
        constraint: str = "positive",
        learn: bool = True,
        units: str = "",
        bounds: tuple[float, float] | None = None,
    ) -> None:
        """Declare the physical parameter ``name`` with initial value ``init``.

        Args:
            name: a Python identifier, unique within the module.
            init: a float (scalar parameter) or a sequence / tensor (a
                parameter of that shape).
            constraint:
                - ``"positive"``: value = exp(raw), raw = log(init); needs
                  ``init > 0``. Log rather than softplus because it is
                  scale-free: a gradient step changes the value by the same
                  *relative* amount whatever its size, so masses spanning
                  orders of magnitude are learned at one learning rate (softplus
                  is additive above ~1, so large values barely move and small
                  ones overshoot).
                - ``"real"``: value = raw, no transform.
                - ``"bounded"``: value = lo + (hi - lo) * sigmoid(raw); needs
                  ``bounds=(lo, hi)`` with ``lo < init < hi``.
                - ``"fixed"``: a buffer holding the value; never learned.
            learn: ``False`` stores the raw value as a buffer (it moves with
                the module and is saved, but gets no gradient).
            units: free text shown by ``repr`` and :meth:`parameter_units`.
            bounds: ``(lo, hi)``, only with ``constraint="bounded"``.

        Raises:
            ValueError: naming the parameter and the rule it breaks (unknown
                constraint, duplicate or invalid name, ``init <= 0`` for
                positive, ``init`` outside the bounds, ...).
        """
        specs = self.__dict__.get("_physical_specs")
        if specs is None:
            raise RuntimeError(f"{type(self).__name__}: call super().__init__() before declare()")
        if not isinstance(name, str) or not name.isidentifier():
            raise ValueError(f"parameter {name!r}: the name must be a Python identifier")
        if name in specs:
            raise ValueError(f"parameter {name!r}: already declared")
        if hasattr(self, name) or hasattr(self, f"raw_{name}"):
            raise ValueError(
                f"parameter {name!r}: the name clashes with an existing attribute of "
                f"{type(self).__name__}"
            )
        if constraint not in CONSTRAINTS:
            raise ValueError(
                f"parameter {name!r}: unknown constraint {constraint!r}; "
                f"choose one of {', '.join(CONSTRAINTS)}"
            )
        if bounds is not None and constraint != "bounded":
            raise ValueError(
                f"parameter {name!r}: bounds are only used with constraint='bounded', "
                f"got constraint={constraint!r}"
            )
        if constraint == "bounded":
            bounds = self._check_bounds(name, bounds)
        values = _as_values(name, init)
        learn = bool(learn) and constraint != "fixed"
        spec = ParameterSpec(name, constraint, learn, str(units), bounds, tuple(values.shape))
        raw = self._to_raw(spec, values).to(dtype=torch.get_default_dtype(), device=self._device())
        if learn:
            self.register_parameter(f"raw_{name}", nn.Parameter(raw))
        else:
            self.register_buffer(f"raw_{name}", raw)
        specs[name] = spec
        self._remember_exact(name, self._to_raw(spec, values))

    @staticmethod
    def _check_bounds(name: str, bounds) -> tuple[float, float]:
        if bounds is None:
            raise ValueError(f"parameter {name!r}: constraint='bounded' needs bounds=(lo, hi)")
        try:
            lo, hi = (float(b) for b in bounds)
        except (TypeError, ValueError):
            raise ValueError(
                f"parameter {name!r}: bounds must be a pair of numbers (lo, hi), got {bounds!r}"
            ) from None
        if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
            raise ValueError(
                f"parameter {name!r}: bounds must be finite with lo < hi, got {bounds!r}"
            )
        return lo, hi

    @staticmethod
    def _to_raw(spec: ParameterSpec, values: torch.Tensor) -> torch.Tensor:
        """The raw (unconstrained) float64 tensor for ``values``, after checking the constraint."""
        if spec.constraint == "positive":
            if not bool((values > 0).all()):
                raise ValueError(
                    f"parameter {spec.name!r}: constraint 'positive' needs values > 0, "
                    f"got {values.tolist()}"
                )
            return values.log()
        if spec.constraint == "bounded":
            lo, hi = spec.bounds
            if not bool(((values > lo) & (values < hi)).all()):
                raise ValueError(
                    f"parameter {spec.name!r}: constraint 'bounded' needs {lo} < value < {hi}, "
                    f"got {values.tolist()}"
                )
            return torch.logit((values - lo) / (hi - lo))
        return values.clone()

    def _device(self) -> torch.device:
        for tensor in (*self.parameters(), *self.buffers()):
            return tensor.device
        return torch.device("cpu")

    def _spec(self, name: str) -> ParameterSpec:
        try:
            return self._physical_specs[name]
        except KeyError:
            known = ", ".join(self._physical_specs) or "none"
            raise ValueError(
                f"parameter {name!r}: not declared in {type(self).__name__} (declared: {known})"
            ) from None

    def value(self, name: str) -> torch.Tensor:
        """The constrained value of ``name``, differentiable with respect to its raw tensor.

        Shape: the declared shape; dtype and device: the module's.
        """
        spec = self._spec(name)
        # Straight to the registries: this runs at every right-hand-side evaluation.
        raw = self._parameters.get(f"raw_{name}")
        if raw is None:
            raw = self._buffers[f"raw_{name}"]
        if spec.constraint == "positive":
            return raw.exp()
        if spec.constraint == "bounded":
            lo, hi = spec.bounds
            return lo + (hi - lo) * torch.sigmoid(raw)
        return raw

    def set_value(self, name: str, value: float | Sequence[float] | torch.Tensor) -> None:
        """Overwrite the value of ``name`` in place (the ``nn.Parameter`` object is kept, so an
        optimiser holding it keeps working). ``value`` must satisfy the constraint and
        broadcast to the declared shape."""
        spec = self._spec(name)
        values = _as_values(name, value, what="value")
        try:
            values = values.expand(spec.shape) if values.shape != spec.shape else values
        except RuntimeError:
            raise ValueError(
                f"parameter {name!r}: value of shape {tuple(values.shape)} does not match "
                f"the declared shape {spec.shape}"
            ) from None
        raw = getattr(self, f"raw_{name}")
        exact = self._to_raw(spec, values)
        with torch.no_grad():
            raw.copy_(exact)
        self._remember_exact(name, exact)

    def _remember_exact(self, name: str, exact: torch.Tensor) -> None:
        """Keep the float64 raw value of a declared or set value, with the raw tensor's version
        counter, so that a later ``.double()`` can restore the digits a float32 copy lost."""
        raw = self._parameters.get(f"raw_{name}")
        if raw is None:
            raw = self._buffers[f"raw_{name}"]
        self.__dict__.setdefault("_exact_raw", {})[name] = (exact, raw._version)

    def _apply(self, fn, recurse: bool = True):
        # Without this, Physics(...).double() would hold float32-rounded values: a fixed
        # G = 1.45136 would become 1.4513599872589111 in a float64 simulation. Values changed
        # in place since they were declared or set (an optimiser step, load_state_dict) bump
        # the version counter and are left as converted.
        exact = self.__dict__.get("_exact_raw", {})
        unchanged = {
            name: x
            for name, (x, version) in exact.items()
            if getattr(self, f"raw_{name}")._version == version
        }
        super()._apply(fn, recurse)
        for name, x in unchanged.items():
            raw = getattr(self, f"raw_{name}")
            if raw.is_floating_point():
                with torch.no_grad():
                    raw.copy_(x.to(device=raw.device, dtype=raw.dtype))
                self._remember_exact(name, x)
        return self

    def __getattr__(self, name: str) -> Any:
        specs = self.__dict__.get("_physical_specs")
        if specs is not None and name in specs:
            return self.value(name)
        return super().__getattr__(name)

    def __setattr__(self, name: str, value: Any) -> None:
        specs = self.__dict__.get("_physical_specs")
        if specs is not None and name in specs:
            self.set_value(name, value)
        else:
            super().__setattr__(name, value)

    # -- describing parameters -----------------------------------------------------------------

    def physical_parameters(self) -> dict[str, float | list]:
        """Current values as plain Python numbers: floats for scalars, nested lists otherwise."""
        out: dict[str, float | list] = {}
        for name in self._physical_specs:
            v = self.value(name).detach().to(device="cpu", dtype=torch.float64)
            out[name] = v.item() if v.ndim == 0 else v.tolist()
        return out

    def parameter_units(self) -> dict[str, str]:
        """Units of each physical parameter (free text, ``""`` if none were given)."""
        return {name: spec.units for name, spec in self._physical_specs.items()}

    def parameter_specs(self) -> dict[str, ParameterSpec]:
        """How each parameter is stored: constraint, learn, units, bounds, shape."""
        return dict(self._physical_specs)

    def extra_repr(self) -> str:
        units = self.parameter_units()
        return ", ".join(
            f"{name}={_format(v, units[name])}" for name, v in self.physical_parameters().items()
        )

    # -- the right-hand side -------------------------------------------------------------------

    def variable_names(self) -> list[str]:
        """Names of the state's components, in order; ``y0``, ``y1``, ... unless overridden."""
        if self.state_size is None:
            raise ValueError(
                f"{type(self).__name__}: state_size is not set, so the variables cannot be named"
            )
        return [f"y{i}" for i in range(self.state_size)]

    def acceleration(self, t: torch.Tensor, q: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Second-order systems: d²q/dt² from positions ``q`` and velocities ``v``, both
        ``(..., n)``; returns ``(..., n)``."""
        raise NotImplementedError(
            f"{type(self).__name__}: a second-order system implements acceleration(t, q, v)"
        )

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """dy/dt for states ``y`` of shape ``(..., D)``; returns ``(..., D)``."""
        if not self.second_order:
            raise NotImplementedError(
                f"{type(self).__name__}: implement forward(t, y), or set second_order = True "
                "and implement acceleration(t, q, v)"
            )
        size = y.shape[-1]
        if (self.state_size is not None and size != self.state_size) or size % 2:
            expected = self.state_size if self.state_size is not None else "an even size"
            raise ValueError(
                f"y: {type(self).__name__} expects a last dimension of {expected}, got {size}"
            )
        n = size // 2
        q, v = y[..., :n], y[..., n:]
        return torch.cat([v, self.acceleration(t, q, v)], dim=-1)
