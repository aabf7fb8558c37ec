"""Models of irregularly sampled time series: the Latent ODE of Rubanova et al.
(2019, "Latent ODEs for Irregularly-Sampled Time Series") and its two baselines.

All three take a batch on a shared time grid with per-sample masks:

- ``times`` ``(T,)``, strictly increasing, in the data's time units;
- ``values`` ``(B, T, D)``; only entries where the mask is set are ever read;
- ``mask`` ``(B, T, D)``, bool or 0/1 float.

and share one interface, so that an experiment can loop over them:

- ``loss(times, values, mask, *, kl_weight=1.0, n_samples=3, obs_times_mask=None)``
  returns ``(loss, info)``; the likelihood and the MSE are taken where ``mask``
  is set, the model reads the values where ``obs_times_mask`` is set (default:
  ``mask`` itself);
- ``predict(times, values, mask, times_pred=None)`` returns ``(B, T_pred, D)``
  predictions from the values where ``mask`` is set.

The models:

- :class:`LatentODE`: an ODE-RNN encoder runs backwards in time over the
  observations and gives ``q(z0 | x) = N(mean, std²)``; the latent ODE carries
  a sample of ``z0`` to the requested times; a decoder maps latents to values.
  Trained as a VAE (importance weighted over ``n_samples`` samples of ``z0``).
- :class:`ODERNN`: the encoder run forwards as a model of its own: its hidden
  state, carried by an ODE to each grid time, is decoded into a prediction of
  the value there before that value is read.
- :class:`GRUBaseline`: a GRU updated at the observations, with the time since
  the previous observation as an extra input; no ODE.

Every ODE is solved with :func:`physode.odeint`, so any solver and gradient
method (``direct``, ``adjoint``, ``aca``, ``mali``) can be used.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..gradients import make_gradient
from ..odeint import odeint
from ..solvers import FIXED_STEP_METHODS, make_solver
from .neural import MLP

#: The reference's hopper settings: 4 hidden layers of 300 units (``--units 300``
#: with 3 "layers" of its ``create_net``) for both ODE right-hand sides.
REFERENCE_DYNAMICS_HIDDEN = (300, 300, 300, 300)

# A lower bound on the posterior std keeps log(std) in the KL finite.
_MIN_STD = 1e-6
# The reference's encoder takes Euler steps of at most 1/50 of the time span.
_ENCODER_STEPS_PER_SPAN = 50


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}: must be a positive integer, got {value!r}")
    return value


def _positive_float(name: str, value: Any) -> float:
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: expected a number, got {value!r}") from None
    if not math.isfinite(x) or x <= 0:
        raise ValueError(f"{name}: must be a finite number > 0, got {value!r}")
    return x


class _Solve:
    """One set of :func:`physode.odeint` settings, checked on construction."""

    def __init__(
        self,
        method: str,
        grad: str,
        rtol: float,
        atol: float,
        step_size: float | None,
        options: Mapping[str, Any] | None,
        steps_per_span: int | None = None,
    ) -> None:
        rtol = _positive_float("rtol", rtol)
        atol = _positive_float("atol", atol)
        if step_size is not None:
            step_size = _positive_float("step_size", step_size)
        if options is not None and not isinstance(options, Mapping):
            raise ValueError(
                f"solver_options: must be a mapping of odeint keywords, got {options!r}"
            )
        self.method = method
        self.grad = grad
        self.rtol = rtol
        self.atol = atol
        self.step_size = step_size
        self.options = dict(options or {})
        # Only a fixed-step method without a step size gets a default one.
        self.steps_per_span = steps_per_span if method in FIXED_STEP_METHODS else None

    def __call__(
        self, func: nn.Module, y0: torch.Tensor, t: Sequence[float], span: float
    ) -> torch.Tensor:
        step = self.step_size
        if step is None and self.steps_per_span is not None:
            step = span / self.steps_per_span if span > 0 else abs(t[-1] - t[0])
        # Euler's steps by hand: one evaluation a step. Their backprop gradient is ACA's
        # (the gradient of the same steps); the continuous adjoint goes through odeint.
        if self.method == "euler" and self.grad in ("direct", "aca") and not self.options:
            return _euler(func, y0, t, step)
        return odeint(
            func,
            y0,
            list(t),
            method=self.method,
            grad=self.grad,
            rtol=self.rtol,
            atol=self.atol,
            step_size=step,
            **self.options,
        )

    def describe(self) -> str:
        step = "" if self.step_size is None else f", step_size={self.step_size:g}"
        return f"method={self.method!r}, grad={self.grad!r}{step}"


def _euler(func: nn.Module, y0: torch.Tensor, t: Sequence[float], step: float) -> torch.Tensor:
    """Explicit Euler through the times ``t``: each gap in ``ceil(gap / step)`` equal
    steps, one evaluation of ``func`` a step (the solver loop would also evaluate the
    slope at the end of the last step, for a dense output nobody reads here: the
    encoder solves one short gap at a time). States at ``t``: ``(len(t), *y0.shape)``."""
    ys, y = [y0], y0
    for a, b in itertools.pairwise(t):
        n = max(1, math.ceil(abs(b - a) / step - 1e-9))
        dt = (b - a) / n
        for i in range(n):
            y = y + dt * func(torch.tensor(a + i * dt, dtype=y.dtype, device=y.device), y)
        ys.append(y)
    return torch.stack(ys)


# --------------------------------------------------------------------------- inputs


def _check_batch(
    times: torch.Tensor, values: torch.Tensor, mask: torch.Tensor
) -> tuple[list[float], torch.Tensor]:
    """The times as Python floats (one device sync) and the mask in values' dtype."""
    if not isinstance(values, torch.Tensor) or values.ndim != 3:
        shape = tuple(values.shape) if isinstance(values, torch.Tensor) else type(values).__name__
        raise ValueError(f"values: must be a (B, T, D) tensor, got {shape}")
    if not values.is_floating_point():
        raise ValueError(f"values: must be floating point, got {values.dtype}")
    mask = torch.as_tensor(mask, device=values.device)
    if mask.shape != values.shape:
        raise ValueError(
            f"mask: must have values' shape {tuple(values.shape)}, got {tuple(mask.shape)}"
        )
    t = _check_times("times", times, values.shape[1])
    return t, mask.to(values.dtype)


def _check_times(name: str, times: Any, n: int | None = None) -> list[float]:
    t = torch.as_tensor(times).detach()
    if t.ndim != 1 or len(t) == 0:
        raise ValueError(f"{name}: must be a non-empty 1-D tensor, got shape {tuple(t.shape)}")
    if n is not None and len(t) != n:
        raise ValueError(f"{name}: has {len(t)} times but values have {n} along axis 1")
    out = t.to(device="cpu", dtype=torch.float64).tolist()
    if not all(math.isfinite(x) for x in out):
        raise ValueError(f"{name}: contains NaN or inf")
    if any(b <= a for a, b in itertools.pairwise(out)):
        raise ValueError(f"{name}: must be strictly increasing")
    return out


def _encoder_mask(mask: torch.Tensor, obs_times_mask: Any | None) -> torch.Tensor:
    """What the model reads: ``mask`` itself, or ``obs_times_mask`` broadcast to (B, T, D)."""
    if obs_times_mask is None:
        return mask
    b, n, d = mask.shape
    m = torch.as_tensor(obs_times_mask, device=mask.device).to(mask.dtype)
    if m.shape == (n,):
        return m[None, :, None].expand(b, n, d)
    if m.shape == (b, n):
        return m[:, :, None].expand(b, n, d)
    if m.shape == (b, n, d):
        return m
    raise ValueError(
        f"obs_times_mask: must have shape ({n},), ({b}, {n}) or ({b}, {n}, {d}), "
        f"got {tuple(m.shape)}"
    )


def _observed_steps(mask: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
    """Per-sample "any feature observed" ``(B, T)`` and the grid indices where any
    sample is observed (one device sync)."""
    any_obs = mask.sum(-1) > 0
    return any_obs, torch.nonzero(any_obs.any(0)).flatten().cpu().tolist()


def gaussian_log_likelihood(
    pred: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, obs_std: float
) -> torch.Tensor:
    """Mean Gaussian log density per trajectory over the entries where ``mask`` is set.

    Args:
        pred: ``(S, B, T, D)`` predicted means.
        values: ``(B, T, D)`` targets.
        mask: ``(B, T, D)`` float 0/1.
        obs_std: the fixed observation noise std, in the values' units.

    Returns:
        ``(S, B)``; 0 for a trajectory without any scored entry.
    """
    var = obs_std**2
    logp = -0.5 * (math.log(2 * math.pi * var) + (pred - values) ** 2 / var)
    count = mask.sum((-2, -1)).clamp_min(1.0)
    return (logp * mask).sum((-2, -1)) / count


def masked_mse(pred: torch.Tensor, values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the entries where ``mask`` is set.

    ``pred`` is ``(..., B, T, D)``; leading sample dimensions are averaged over.
    """
    sq = (pred - values) ** 2 * mask
    n_samples = sq.numel() // max(1, mask.numel())
    return sq.sum() / (mask.sum().clamp_min(1.0) * n_samples)


def _gru_input(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    # Zeroing unread values keeps anything hidden behind the mask out of the model.
    return torch.cat([values * mask, mask], dim=-1)


def _masked_update(
    cell: nn.GRUCell, h: torch.Tensor, x: torch.Tensor, observed: torch.Tensor
) -> torch.Tensor:
    """GRU update for the samples observed at this time; the others keep ``h``."""
    return torch.where(observed[:, None], cell(x, h), h)


def kl_annealing(epoch: int, *, warmup: int = 10, rate: float = 0.99) -> float:
    """The reference's KL weight at ``epoch`` (counted from 0).

    0 for the first ``warmup`` epochs, then ``1 - rate ** (epoch - warmup)``:
    the model first learns to reconstruct, and the prior is phased in slowly.
    """
    if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
        raise ValueError(f"epoch: must be an integer >= 0, got {epoch!r}")
    if not 0.0 <= float(rate) < 1.0:
        raise ValueError(f"rate: must lie in [0, 1), got {rate!r}")
    return 0.0 if epoch < warmup else 1.0 - float(rate) ** (epoch - warmup)


# --------------------------------------------------------------------------- shared interface


def _prediction_times(t: list[float], times_pred: Any | None) -> list[float]:
    """The checked ``times_pred``, or the observation grid ``t`` when it is None."""
    return t if times_pred is None else _check_times("times_pred", times_pred)


class _SequenceModel(nn.Module):
    """The interface the three models share (see the module docstring).

    The public :meth:`predict` and :meth:`loss` check the batch once, and
    :meth:`loss` computes the one objective all three are trained on; a model
    implements :meth:`_predict_checked` and :meth:`_sample_predictions` on the
    checked inputs (times as Python floats, masks in the values' dtype).
    """

    obs_std: float

    def predict(
        self,
        times: torch.Tensor,
        values: torch.Tensor,
        mask: torch.Tensor,
        times_pred: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Deterministic predictions ``(B, T_pred, D)`` from the values where ``mask`` is set.

        ``times_pred`` defaults to ``times``. :class:`LatentODE` decodes the
        posterior mean of ``z0`` at any ``times_pred`` (see
        :meth:`LatentODE.forward`); the baselines predict at every grid time,
        so for them ``times_pred`` must be None (or equal ``times``).
        """
        t, m = _check_batch(times, values, mask)
        return self._predict_checked(t, values, m, times_pred)

    def sample_predict(
        self, times: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, n_samples: int
    ) -> torch.Tensor:
        """Predictions on the grid ``times`` from ``n_samples`` draws of ``z0 ~ q(z0 | x)``:
        ``(S, B, T, D)`` (the reference's scoring averages the MSE over them). The
        baselines are deterministic: ``S = 1``."""
        t, m = _check_batch(times, values, mask)
        return self._sample_predictions(t, values, m, _positive_int("n_samples", n_samples))[0]

    def loss(
        self,
        times: torch.Tensor,
        values: torch.Tensor,
        mask: torch.Tensor,
        *,
        kl_weight: float = 1.0,
        n_samples: int = 3,
        obs_times_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The training loss, averaged over the batch.

        :class:`LatentODE`: minus the IWAE bound (see its class docstring). The
        baselines: minus the mean Gaussian log density over the entries where
        ``mask`` is set; they accept ``kl_weight`` and ``n_samples`` and ignore
        them.

        Args:
            times: ``(T,)`` strictly increasing.
            values: ``(B, T, D)``.
            mask: ``(B, T, D)``: the entries scored by the likelihood and the MSE.
            kl_weight: weight of the KL term (KL annealing), >= 0.
            n_samples: samples of ``z0`` per trajectory.
            obs_times_mask: what the encoder reads: ``(T,)`` (every feature at
                the chosen times, e.g. the first third for extrapolation),
                ``(B, T)`` or ``(B, T, D)``; default ``mask``.

        Returns:
            ``(loss, info)``: ``loss`` a 0-dim tensor with a graph; ``info``
            0-dim detached tensors: ``mse`` (over the scored entries, averaged
            over the samples), ``likelihood`` (mean log density per scored
            entry), ``kl`` (per latent dimension; 0 for the baselines) and
            ``iwae``.
        """
        kl_weight = self._checked_kl_weight(kl_weight)
        t, target = _check_batch(times, values, mask)
        seen = _encoder_mask(target, obs_times_mask)
        pred, kl = self._sample_predictions(t, values, seen, n_samples)
        loglik = gaussian_log_likelihood(pred, values, target, self.obs_std)
        log_w = loglik - kl_weight * kl
        # S samples of the prediction (a single one for the baselines, whose bound
        # is then the likelihood itself).
        iwae = torch.logsumexp(log_w, dim=0) - math.log(pred.shape[0])
        loss = -iwae.mean()
        info = {
            "mse": masked_mse(pred, values, target).detach(),
            "likelihood": loglik.mean().detach(),
            "kl": kl.mean().detach(),
            "iwae": iwae.mean().detach(),
        }
        return loss, info

    def _checked_kl_weight(self, kl_weight: float) -> float:
        kl_weight = float(kl_weight)
        if not math.isfinite(kl_weight) or kl_weight < 0:
            raise ValueError(f"kl_weight: must be a finite number >= 0, got {kl_weight!r}")
        return kl_weight

    def _predict_checked(
        self, t: list[float], values: torch.Tensor, mask: torch.Tensor, times_pred: Any | None
    ) -> torch.Tensor:
        """What :meth:`predict` returns, from checked inputs."""
        raise NotImplementedError

    def _sample_predictions(
        self, t: list[float], values: torch.Tensor, seen: torch.Tensor, n_samples: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``S`` sampled predictions ``(S, B, T, D)`` on the grid ``t`` from the values
        where ``seen`` is set, and the KL term per trajectory ``(B,)``."""
        raise NotImplementedError


# --------------------------------------------------------------------------- ODE-RNN


#: How the linear layers start: torch's defaults, or the reference's N(0, 0.1) weights and
#: zero biases.
WEIGHT_INITS = ("torch", "reference")


def reference_init(module: nn.Module, std: float = 0.1) -> nn.Module:
    """Every ``nn.Linear`` in ``module`` drawn as the reference draws its networks
    (Rubanova et al. 2019, ``init_network_weights``): weights N(0, ``std``), biases 0.
    Returns ``module``."""
    for layer in module.modules():
        if isinstance(layer, nn.Linear):
            nn.init.normal_(layer.weight, mean=0.0, std=std)
            nn.init.zeros_(layer.bias)
    return module


class ReferenceGRUCell(nn.Module):
    """The reference's GRU unit (Rubanova et al. 2019): the state carries a std beside
    its mean, ``h = [mean, std]`` (``2 H``); the update and reset gates and the new state
    are one-hidden-layer tanh MLPs of ``[mean, std, input]``; weights drawn from
    N(0, 0.1), zero biases. Called as ``torch.nn.GRUCell``: ``cell(input, h)``.

    Args:
        input_size: the input's width (``2 D``: values and mask).
        hidden_size: ``H``, the width of the mean (and of the std).
        units: the gates' hidden width (the reference's 100).
    """

    def __init__(self, input_size: int, hidden_size: int, units: int = 100) -> None:
        super().__init__()
        width = 2 * hidden_size + input_size

        def net(out: int) -> nn.Sequential:
            return reference_init(
                nn.Sequential(nn.Linear(width, units), nn.Tanh(), nn.Linear(units, out))
            )

        self.update_gate, self.reset_gate = net(hidden_size), net(hidden_size)
        self.new_state = net(2 * hidden_size)

    def forward(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        mean, std = h.chunk(2, dim=-1)
        both = torch.cat([mean, std, x], -1)
        update = torch.sigmoid(self.update_gate(both))
        reset = torch.sigmoid(self.reset_gate(both))
        new_mean, new_std = self.new_state(torch.cat([mean * reset, std * reset, x], -1)).chunk(
            2, dim=-1
        )
        mean = (1 - update) * new_mean + update * mean
        std = (1 - update) * new_std.abs() + update * std
        return torch.cat([mean, std], -1)


class _MeanOnly(nn.Module):
    """``d[mean, std]/dt = [f(mean), 0]``: the reference's encoder ODE moves the mean only."""

    def __init__(self, field: nn.Module) -> None:
        super().__init__()
        self.field = field

    def forward(self, t: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        mean, std = h.chunk(2, dim=-1)
        return torch.cat([self.field(t, mean), torch.zeros_like(std)], -1)


#: the encoder's update at an observation: ``torch.nn.GRUCell`` or the reference's unit.
ENCODER_CELLS = ("gru", "reference")


class _ODERNNCore(nn.Module):
    """Hidden state carried by ``dh/dt = f(h)`` between observations, updated by a
    GRU cell at each observation from ``[values * mask, mask]``. With
    ``cell="reference"`` the state is ``[mean, std]`` (``2 H``, see
    :class:`ReferenceGRUCell`) and the ODE moves the mean only."""

    def __init__(
        self,
        data_dim: int,
        hidden_dim: int,
        dynamics_hidden: Sequence[int],
        activation: str,
        solve: _Solve,
        cell: str = "gru",
    ) -> None:
        super().__init__()
        self.data_dim = _positive_int("data_dim", data_dim)
        self.hidden_dim = _positive_int("hidden_dim", hidden_dim)
        if cell not in ENCODER_CELLS:
            raise ValueError(f"encoder_cell: expected one of {ENCODER_CELLS}, got {cell!r}")
        self.dynamics = MLP(hidden_dim, hidden_dim, dynamics_hidden, activation).as_ode()
        self.mean_only = cell == "reference"
        if self.mean_only:
            self.cell, self.state_dim = ReferenceGRUCell(2 * data_dim, hidden_dim), 2 * hidden_dim
        else:
            self.cell, self.state_dim = nn.GRUCell(2 * data_dim, hidden_dim), hidden_dim
        self.solve = solve

    def evolve(self, h: torch.Tensor, t: Sequence[float], span: float) -> torch.Tensor:
        """States at the times ``t`` (``t[0]`` the start): ``(len(t), B, state_dim)``."""
        # The wrapper is made here, not kept: kept, it would put the dynamics' weights
        # in the state dict twice.
        field = _MeanOnly(self.dynamics) if self.mean_only else self.dynamics
        return self.solve(field, h, t, span)

    def backward_pass(
        self, t: list[float], values: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        """Run from the last observation back to ``t[0]``: the hidden state there, ``(B, H)``."""
        b = values.shape[0]
        h = values.new_zeros(b, self.state_dim)
        any_obs, steps = _observed_steps(mask)
        x = _gru_input(values, mask)
        span = t[-1] - t[0]
        prev = None
        for k in reversed(steps):
            if prev is not None:
                h = self.evolve(h, [t[prev], t[k]], span)[-1]
            h = _masked_update(self.cell, h, x[:, k], any_obs[:, k])
            prev = k
        if prev is not None and prev != 0:
            # z0 belongs to t[0] even when nothing is observed there.
            h = self.evolve(h, [t[prev], t[0]], span)[-1]
        return h

    def forward_pass(
        self, t: list[float], values: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        """Hidden states just before each grid time's observation is read: ``(B, T, H)``.

        Grid times without any observation in the batch are reached by the same
        solve as the next observation, so one solve covers each gap however many
        grid points it spans.
        """
        b, n, _ = values.shape
        h = values.new_zeros(b, self.hidden_dim)
        any_obs, steps = _observed_steps(mask)
        observed = set(steps)
        x = _gru_input(values, mask)
        span = t[-1] - t[0]
        before = [h]
        if 0 in observed:
            h = _masked_update(self.cell, h, x[:, 0], any_obs[:, 0])
        stops = [k for k in steps if k > 0]
        if not stops or stops[-1] != n - 1:
            stops.append(n - 1)
        current = 0
        for k in stops:
            if k == current:
                continue
            hs = self.evolve(h, t[current : k + 1], span)
            before.extend(hs[1:].unbind(0))
            h = hs[-1]
            if k in observed:
                h = _masked_update(self.cell, h, x[:, k], any_obs[:, k])
            current = k
        return torch.stack(before, dim=1)


def encoder_gradient(method: str, grad: str) -> str:
    """The gradient method of an encoder's (or ODE-RNN's) solves with ``method``, given
    the model's ``grad``.

    Fixed steps between nearby observations: every gradient method gives the
    gradient of the same discrete steps, and direct backprop keeps no more than
    ACA would (one short solve per gap) at a fraction of the cost. A method the
    gradient method does not accept (MALI needs ALF) falls back to ACA.
    """
    if method in FIXED_STEP_METHODS:
        return "direct"
    if not make_gradient(grad).accepts(make_solver(method)):
        return "aca"
    return grad


def _dynamics_default(dynamics_hidden: Sequence[int] | None) -> tuple[int, ...]:
    return REFERENCE_DYNAMICS_HIDDEN if dynamics_hidden is None else tuple(dynamics_hidden)


class LatentODE(_SequenceModel):
    """Latent ODE with an ODE-RNN encoder (Rubanova et al. 2019).

    - Encoder: an ODE-RNN run backwards in time. Its hidden state ``h`` (size
      ``hidden_dim``) starts at zero at the last observed grid time; at each
      observed time a GRU cell reads ``[values * mask, mask]`` (samples with no
      feature observed there keep their state); between observation times
      ``dh/dt = f_enc(h)`` (an MLP) carries it, solved with the encoder's
      solver settings. At ``times[0]`` an MLP maps ``h`` to the mean and the
      standard deviation (softplus) of ``q(z0 | x)``, diagonal Gaussian in
      ``latent_dim`` dimensions.
    - Latent ODE: ``dz/dt = f(z)`` (an MLP) from ``z0`` at ``times[0]``, solved
      with ``method``/``grad``/``rtol``/``atol``/``step_size``.
    - Decoder: an MLP from ``z(t)`` to the ``D`` values (linear by default).

    Loss (:meth:`loss`): for ``S`` samples ``z0_s ~ q`` and each trajectory,
    ``log w_s = loglik_s - kl_weight * KL(q || N(0, I))``, where ``loglik_s``
    is the Gaussian log density of the scored values under the decoded
    trajectory with a fixed noise std ``obs_std``, averaged over the scored
    entries, and KL is the closed form averaged over the latent dimensions
    (both averages as in the reference code, so the two terms keep their
    balance whatever T, D and the latent size). The samples are combined as
    the importance weighted bound ``logsumexp_s(log w_s) - log S`` (IWAE), and
    the loss is minus its mean over the batch. ``kl_weight`` < 1 anneals the
    KL term; :func:`kl_annealing` gives the reference's schedule.

    Args:
        data_dim: ``D``, the number of observed variables.
        latent_dim: size of ``z`` (reference hopper: 15).
        hidden_dim: size of the encoder's hidden state (reference: 30).
        dynamics_hidden: hidden widths of the latent ODE's MLP (default
            :data:`REFERENCE_DYNAMICS_HIDDEN`, 4 x 300).
        encoder_dynamics_hidden: hidden widths of the encoder ODE's MLP
            (default: the same).
        decoder_hidden: hidden widths of the decoder (default ``()``: linear,
            as in the reference).
        z0_hidden: hidden widths of the map from ``h`` to ``(mean, std)``.
        activation: activation of every MLP (``tanh`` as in the reference).
        obs_std: fixed observation noise std of the likelihood (0.01).
        method, grad, rtol, atol, step_size: :func:`physode.odeint` settings of
            the latent ODE (reference: dopri5, rtol 1e-3, atol 1e-4).
        encoder_method: solver of the encoder ODE (default ``"euler"``, the
            reference's: Euler steps of at most ``(times[-1] - times[0]) / 50``,
            so one step per gap on the hopper's grid). ``None`` uses ``method``.
        encoder_grad: gradient method of the encoder ODE. ``None``:
            ``direct`` for a fixed-step encoder solver (the same gradient as
            ``aca`` for fixed steps, computed faster: each solve is one short
            gap), otherwise ``grad`` (``mali``, which needs the ALF solver,
            becomes ``aca`` for another encoder solver).
        encoder_step_size: fixed step of the encoder ODE; ``None`` means the
            reference's span / 50 for a fixed-step method, adaptive otherwise.
        solver_options: further :func:`physode.odeint` keywords for both ODEs
            (e.g. ``max_steps``).
        encoder_cell: ``gru`` (``torch.nn.GRUCell``) or ``reference`` (the
            reference's unit, :class:`ReferenceGRUCell`, with a std channel).
        init: ``torch`` (torch's default initialisation) or ``reference`` (every linear
            layer drawn as the reference does: :func:`reference_init`; a
            ``torch.nn.GRUCell`` keeps its own).
    """

    def __init__(
        self,
        data_dim: int,
        latent_dim: int = 15,
        hidden_dim: int = 30,
        *,
        dynamics_hidden: Sequence[int] | None = None,
        encoder_dynamics_hidden: Sequence[int] | None = None,
        decoder_hidden: Sequence[int] = (),
        z0_hidden: Sequence[int] = (100,),
        activation: str = "tanh",
        obs_std: float = 0.01,
        method: str = "dopri5",
        grad: str = "aca",
        rtol: float = 1e-3,
        atol: float = 1e-4,
        step_size: float | None = None,
        encoder_method: str | None = "euler",
        encoder_grad: str | None = None,
        encoder_step_size: float | None = None,
        solver_options: Mapping[str, Any] | None = None,
        encoder_cell: str = "gru",
        init: str = "torch",
    ) -> None:
        super().__init__()
        if init not in WEIGHT_INITS:
            raise ValueError(f"init: expected one of {WEIGHT_INITS}, got {init!r}")
        self.data_dim = _positive_int("data_dim", data_dim)
        self.latent_dim = _positive_int("latent_dim", latent_dim)
        self.hidden_dim = _positive_int("hidden_dim", hidden_dim)
        self.obs_std = _positive_float("obs_std", obs_std)
        dynamics_hidden = _dynamics_default(dynamics_hidden)
        encoder_dynamics_hidden = (
            dynamics_hidden if encoder_dynamics_hidden is None else tuple(encoder_dynamics_hidden)
        )
        enc_method = method if encoder_method is None else encoder_method
        if encoder_grad is None:
            encoder_grad = encoder_gradient(enc_method, grad)
        self.solve = _Solve(method, grad, rtol, atol, step_size, solver_options)
        enc_solve = _Solve(
            enc_method,
            encoder_grad,
            rtol,
            atol,
            encoder_step_size,
            solver_options,
            _ENCODER_STEPS_PER_SPAN,
        )
        self.encoder = _ODERNNCore(
            data_dim, hidden_dim, encoder_dynamics_hidden, activation, enc_solve, encoder_cell
        )
        self.to_z0 = MLP(self.encoder.state_dim, 2 * latent_dim, z0_hidden, activation)
        self.dynamics = MLP(latent_dim, latent_dim, dynamics_hidden, activation).as_ode()
        self.decoder = MLP(latent_dim, data_dim, decoder_hidden, activation)
        if init == "reference":
            reference_init(self)

    def extra_repr(self) -> str:
        return (
            f"obs_std={self.obs_std:g}, latent: {self.solve.describe()}, "
            f"encoder: {self.encoder.solve.describe()}"
        )

    def encode(
        self, times: torch.Tensor, values: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The posterior ``q(z0 | x)`` at ``times[0]``.

        Args:
            times: ``(T,)`` strictly increasing.
            values: ``(B, T, D)``.
            mask: ``(B, T, D)``; the encoder reads the values where it is set.

        Returns:
            ``(mean, std)``, each ``(B, latent_dim)``, ``std > 0``.
        """
        t, m = _check_batch(times, values, mask)
        return self._encode(t, values, m)

    def _encode(
        self, t: list[float], values: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.encoder.backward_pass(t, values, mask)
        mean, raw = self.to_z0(h).chunk(2, dim=-1)
        return mean, F.softplus(raw) + _MIN_STD

    def decode(self, z0: torch.Tensor, t0: float, times_pred: Sequence[float]) -> torch.Tensor:
        """Decoded trajectories from latent initial states ``z0`` ``(..., B, L)`` at ``t0``.

        ``times_pred`` (increasing, ``>= t0``) gives ``(..., B, T_pred, D)``.
        """
        t = list(times_pred)
        if t[0] < t0:
            raise ValueError(
                f"times_pred: starts at {t[0]:g}, before the first observation time {t0:g} "
                "where z0 lives"
            )
        prepend = t[0] > t0
        grid = [t0, *t] if prepend else t
        zs = self.solve(self.dynamics, z0, grid, grid[-1] - grid[0])
        if prepend:
            zs = zs[1:]
        return self.decoder(zs.movedim(0, -2))

    def forward(
        self,
        times_obs: torch.Tensor,
        values: torch.Tensor,
        mask: torch.Tensor,
        times_pred: torch.Tensor | None = None,
        n_samples: int = 1,
    ) -> torch.Tensor:
        """Sampled predictions: ``(n_samples, B, T_pred, D)``.

        Args:
            times_obs: ``(T,)`` times of ``values``.
            values, mask: ``(B, T, D)``; the encoder reads where ``mask`` is set.
            times_pred: ``(T_pred,)`` increasing, not before ``times_obs[0]``;
                default ``times_obs``.
            n_samples: samples of ``z0`` drawn from ``q(z0 | x)``.
        """
        t, m = _check_batch(times_obs, values, mask)
        mean, std = self._encode(t, values, m)
        z0 = self._sample(mean, std, n_samples)
        return self.decode(z0, t[0], _prediction_times(t, times_pred))

    @staticmethod
    def _sample(mean: torch.Tensor, std: torch.Tensor, n_samples: int) -> torch.Tensor:
        n_samples = _positive_int("n_samples", n_samples)
        eps = torch.randn((n_samples, *mean.shape), dtype=mean.dtype, device=mean.device)
        return mean + std * eps

    def _predict_checked(
        self, t: list[float], values: torch.Tensor, mask: torch.Tensor, times_pred: Any | None
    ) -> torch.Tensor:
        # Deterministic: decoded from the posterior mean of z0.
        mean, _ = self._encode(t, values, mask)
        return self.decode(mean, t[0], _prediction_times(t, times_pred))

    def _sample_predictions(
        self, t: list[float], values: torch.Tensor, seen: torch.Tensor, n_samples: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        mean, std = self._encode(t, values, seen)
        z0 = self._sample(mean, std, n_samples)
        # Closed-form KL(q || N(0, I)), averaged over the latent dimensions.
        kl = (0.5 * (mean**2 + std**2 - 1.0) - torch.log(std)).mean(-1)
        return self.decode(z0, t[0], t), kl


class _GridBaseline(_SequenceModel):
    """What the two baselines share: predictions at every grid time from one
    pass over the batch (:meth:`_predict`), each made before the value it
    predicts is read, trained on the Gaussian likelihood alone."""

    # A baseline's forward pass is its prediction on the grid (same signature).
    forward = _SequenceModel.predict

    def _predict(self, t: list[float], values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Predictions at every grid time, ``(B, T, D)``, from the values where ``mask`` is set."""
        raise NotImplementedError

    def _predict_checked(
        self, t: list[float], values: torch.Tensor, mask: torch.Tensor, times_pred: Any | None
    ) -> torch.Tensor:
        if times_pred is not None and _check_times("times_pred", times_pred) != t:
            raise ValueError("times_pred: this model predicts on the grid `times` only; pass None")
        return self._predict(t, values, mask)

    def _checked_kl_weight(self, kl_weight: float) -> float:
        # No KL term: the weight is accepted for the shared interface and ignored.
        return 0.0

    def _sample_predictions(
        self, t: list[float], values: torch.Tensor, seen: torch.Tensor, n_samples: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        # One deterministic prediction and no KL term, whatever n_samples.
        return self._predict(t, values, seen)[None], values.new_zeros(values.shape[0])


class ODERNN(_GridBaseline):
    """The ODE-RNN of Rubanova et al. 2019 as a model of its own, run forwards.

    The hidden state starts at zero at ``times[0]``; ``dh/dt = f(h)`` carries
    it from grid time to grid time, and a GRU cell reads ``[values * mask,
    mask]`` wherever a sample has an observation. The prediction at each grid
    time is the decoded state just before that time's observation is read, so
    every prediction is made without the value it predicts (a one-step-ahead
    forecast over observed points, an interpolation or extrapolation over the
    others).

    Trained by the same Gaussian likelihood (fixed ``obs_std``) as
    :class:`LatentODE`; ``kl_weight`` and ``n_samples`` of :meth:`loss` are
    accepted and ignored.

    Args:
        data_dim: ``D``.
        hidden_dim: size of the hidden state.
        dynamics_hidden: hidden widths of the ODE's MLP (default 4 x 300).
        decoder_hidden: hidden widths of the decoder (default linear).
        activation: activation of the MLPs.
        obs_std: observation noise std of the likelihood.
        method, grad, rtol, atol, step_size: :func:`physode.odeint` settings
            (default: the reference encoder's Euler steps of at most span / 50,
            direct backprop).
        solver_options: further :func:`physode.odeint` keywords.
    """

    def __init__(
        self,
        data_dim: int,
        hidden_dim: int = 30,
        *,
        dynamics_hidden: Sequence[int] | None = None,
        decoder_hidden: Sequence[int] = (),
        activation: str = "tanh",
        obs_std: float = 0.01,
        method: str = "euler",
        grad: str = "direct",
        rtol: float = 1e-3,
        atol: float = 1e-4,
        step_size: float | None = None,
        solver_options: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.data_dim = _positive_int("data_dim", data_dim)
        self.obs_std = _positive_float("obs_std", obs_std)
        solve = _Solve(method, grad, rtol, atol, step_size, solver_options, _ENCODER_STEPS_PER_SPAN)
        self.core = _ODERNNCore(
            data_dim, hidden_dim, _dynamics_default(dynamics_hidden), activation, solve
        )
        self.decoder = MLP(hidden_dim, data_dim, decoder_hidden, activation)

    def _predict(self, t: list[float], values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.core.forward_pass(t, values, mask))


class GRUBaseline(_GridBaseline):
    """A GRU over the observations with the elapsed time as an extra input.

    At each grid time ``t_k`` the prediction is ``decoder([h, Δt_k])``, where
    ``h`` is the state after the sample's previous observation and ``Δt_k`` the
    time since it (since ``times[0]`` before the first one); then, where the
    sample is observed, ``h = GRU([values * mask, mask, Δt_k], h)``. As with
    :class:`ODERNN`, no prediction sees the value it predicts.

    Args:
        data_dim: ``D``.
        hidden_dim: size of the GRU state.
        decoder_hidden: hidden widths of the decoder MLP.
        activation: activation of the decoder.
        obs_std: observation noise std of the likelihood.
    """

    def __init__(
        self,
        data_dim: int,
        hidden_dim: int = 30,
        *,
        decoder_hidden: Sequence[int] = (),
        activation: str = "tanh",
        obs_std: float = 0.01,
    ) -> None:
        super().__init__()
        self.data_dim = _positive_int("data_dim", data_dim)
        self.hidden_dim = _positive_int("hidden_dim", hidden_dim)
        self.obs_std = _positive_float("obs_std", obs_std)
        self.cell = nn.GRUCell(2 * data_dim + 1, hidden_dim)
        self.decoder = MLP(hidden_dim + 1, data_dim, decoder_hidden, activation)

    def _predict(self, t: list[float], values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, n, _ = values.shape
        times = torch.tensor(t, dtype=values.dtype, device=values.device)
        any_obs, _ = _observed_steps(mask)
        x = _gru_input(values, mask)
        h = values.new_zeros(b, self.hidden_dim)
        last = times[:1].expand(b)
        preds = []
        for k in range(n):
            dt = (times[k] - last)[:, None]
            preds.append(self.decoder(torch.cat([h, dt], dim=-1)))
            obs = any_obs[:, k]
            h = _masked_update(self.cell, h, torch.cat([x[:, k], dt], dim=-1), obs)
            last = torch.where(obs, times[k], last)
        return torch.stack(preds, dim=1)


#: The three models by name, for experiments that loop over them.
SEQUENCE_MODELS: dict[str, type[nn.Module]] = {
    "latent_ode": LatentODE,
    "ode_rnn": ODERNN,
    "gru": GRUBaseline,
}
