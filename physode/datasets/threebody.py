"""The three-body data set of the ACA paper, simulated in physode's Newtonian form.

The ACA paper (Zhuang et al., ICML 2020, section on the three-body problem) writes
the dynamics in an Alpha-Centauri scaling,

    dr_i/dt = K2 v'_i,    dv'_i/dt = K1 Σ_j m_j (r_j − r_i) / |r_j − r_i|³,

with ``K1``, ``K2``, the masses and the initial state in :data:`ACA_THREEBODY`.
Substituting ``v = K2 v'`` gives the plain Newtonian system that
:class:`~physode.models.NBodyGravity` integrates,

    dr_i/dt = v_i,    dv_i/dt = G Σ_j m_j (r_j − r_i) / |r_j − r_i|³,    G = K1 K2,

so the positions are the paper's and the velocities are ``K2`` times its ``v'``.
"""

from __future__ import annotations

import math
from types import MappingProxyType

import numpy as np
import torch
from scipy.integrate import solve_ivp

from ..models import NBodyGravity
from .trajectories import Trajectories

# Constants of the ACA paper's three-body script (Zhuang et al., "Adaptive Checkpoint
# Adjoint Method for Gradient Estimation in Neural ODE", ICML 2020): the
# Alpha-Centauri scaling factors and the default initial condition, in the paper's
# variables (r, v').
ACA_THREEBODY = MappingProxyType(
    {
        "K1": 0.200484,
        "K2": 7.239324,
        "masses": (1.1, 1.1, 0.9),
        "positions": ((0.0, 0.2, 0.0), (0.5, 0.0, 0.5), (0.0, 0.0, 0.5)),
        "velocities": ((0.0, 0.1, 0.0), (0.0, 0.0, 0.1), (0.1, 0.0, 0.0)),
    }
)

#: The Newtonian constant of the scaled system, G = K1·K2 ≈ 1.45136.
G_THREEBODY: float = ACA_THREEBODY["K1"] * ACA_THREEBODY["K2"]

#: Standard deviation of the random initial conditions: positions get additive
#: N(0, 0.05²) noise, velocities a multiplicative factor 1 + N(0, 0.05²).
PERTURBATION_STD = 0.05

#: The fit window by convention: fit on [0, 1], extrapolate beyond.
FIT_WINDOW = (0.0, 1.0)

# Units of the Alpha-Centauri scaling (the description attribute says so); short,
# because they label plot axes.
TIME_UNITS = "scaled time"
LENGTH_UNITS = "scaled length"
VELOCITY_UNITS = "scaled length/time"
MASS_UNITS = "mass"
G_UNITS = "length^3 / (mass time^2)"


def default_initial_state() -> np.ndarray:
    """The paper's initial state in physode's layout, ``(18,)`` float64.

    Positions ``x1, y1, z1, x2, ...`` then velocities ``vx1, ...`` (K2 times the paper's).
    """
    positions = np.asarray(ACA_THREEBODY["positions"], dtype=np.float64).ravel()
    velocities = ACA_THREEBODY["K2"] * np.asarray(ACA_THREEBODY["velocities"], dtype=np.float64)
    return np.concatenate([positions, velocities.ravel()])


def _initial_states(n: int, random_initial: bool | None, rng: np.random.Generator) -> np.ndarray:
    base = default_initial_state()
    # Every trajectory consumes the same 18 draws whether or not it is perturbed, so
    # trajectory k's initial state depends only on (seed, k): growing N or switching
    # random_initial between None and True leaves the shared trajectories unchanged.
    z = rng.normal(0.0, PERTURBATION_STD, size=(n, base.size))
    half = base.size // 2
    perturbed = np.tile(base, (n, 1))
    perturbed[:, :half] += z[:, :half]
    perturbed[:, half:] *= 1.0 + z[:, half:]
    if random_initial is None:
        perturbed[0] = base
    elif not random_initial:
        perturbed[:] = base
    return perturbed


def _positive_int(name: str, value: int, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name}: must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _nonnegative(name: str, value: float, allow_zero: bool = True) -> float:
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: expected a number, got {value!r}") from None
    if not math.isfinite(x) or x < 0 or (x == 0 and not allow_zero):
        raise ValueError(
            f"{name}: must be a finite number {'>=' if allow_zero else '>'} 0, got {value!r}"
        )
    return x


def simulate_threebody(
    n_trajectories: int = 1,
    n_times: int = 2000,
    t_end: float = 2.0,
    noise: float = 0.0,
    seed: int = 0,
    random_initial: bool | None = None,
    rtol: float = 1e-12,
    atol: float = 1e-12,
) -> Trajectories:
    """Simulate the ACA paper's three-body system (defaults: the paper's experiment).

    Trajectory 0 starts from the paper's initial condition (:func:`default_initial_state`)
    unless ``random_initial`` is True; with ``n_trajectories > 1`` the others start
    from random perturbations of it: positions + N(0, 0.05²), velocities multiplied by
    1 + N(0, 0.05²), each component independently, drawn from
    ``np.random.default_rng(seed)`` (18 draws per trajectory, trajectory by
    trajectory, then the observation noise).

    Each trajectory is integrated on its own (so its accuracy does not depend on the
    others) with scipy's DOP853 at ``rtol``/``atol`` on the right-hand side of
    :class:`~physode.models.NBodyGravity` in float64, which puts the error at
    a few 1e-9 in the velocities (|v| up to about 5) and about 2e-10 in
    the positions at the defaults.

    Args:
        n_trajectories: N >= 1.
        n_times: T >= 2 sample times, ``np.linspace(0, t_end, n_times)``.
        t_end: the last time (> 0), in the scaled time units.
        noise: standard deviation of Gaussian noise added to every stored value
            (positions and velocities); the noise-free state is not stored.
        seed: seeds ``np.random.default_rng`` for initial conditions and noise.
        random_initial: None: trajectory 0 is the paper's, the others random;
            True: all random; False: all the paper's (copies differ only by noise).
        rtol, atol: tolerances of the reference solve.

    Returns:
        :class:`Trajectories` with ``state`` float64 ``(N, T, 18)``, variables
        ``x1, y1, z1, ..., vz3``, parameters ``masses`` (3,) and ``G``, and root
        attributes ``fit_window = [0, min(1, t_end)]`` and the simulation settings.
    """
    n = _positive_int("n_trajectories", n_trajectories, 1)
    n_t = _positive_int("n_times", n_times, 2)
    t_end = _nonnegative("t_end", t_end, allow_zero=False)
    noise = _nonnegative("noise", noise)
    rtol = _nonnegative("rtol", rtol, allow_zero=False)
    atol = _nonnegative("atol", atol, allow_zero=False)
    if random_initial is not None and not isinstance(random_initial, (bool, np.bool_)):
        raise ValueError(f"random_initial: expected None, True or False, got {random_initial!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ValueError(f"seed: expected an integer, got {seed!r}")

    masses = np.asarray(ACA_THREEBODY["masses"], dtype=np.float64)
    model = NBodyGravity(3, dim=3, G=G_THREEBODY, masses=masses.tolist(), learn_masses=False)
    # The module stores its parameters in the default dtype (float32); casting and then
    # setting the values again puts them in float64 at full precision.
    model = model.double()
    model.set_value("masses", masses)
    model.set_value("G", G_THREEBODY)

    def rhs(t: float, y: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            dy = model(torch.tensor(t, dtype=torch.float64), torch.from_numpy(y))
        return dy.numpy()

    rng = np.random.default_rng(seed)
    y0 = _initial_states(n, random_initial, rng)
    time = np.linspace(0.0, t_end, n_t)
    state = np.empty((n, n_t, y0.shape[1]), dtype=np.float64)
    for k in range(n):
        sol = solve_ivp(
            rhs, (0.0, t_end), y0[k], method="DOP853", t_eval=time, rtol=rtol, atol=atol
        )
        if not sol.success:
            raise RuntimeError(
                f"three-body trajectory {k}: the reference solve failed: {sol.message}"
            )
        state[k] = sol.y.T
    if noise > 0:
        state += rng.normal(0.0, noise, size=state.shape)

    if random_initial is None:
        initial = "trajectory 0 from the ACA paper, the others perturbed" if n > 1 else "ACA paper"
    elif random_initial:
        initial = "all perturbed"
    else:
        initial = "all from the ACA paper"
    lines = [
        "Three bodies under Newtonian gravity: the ACA paper's three-body experiment "
        "(Zhuang et al., ICML 2020) in physode's form, dr/dt = v, "
        f"dv/dt = G sum_j m_j (r_j - r_i)/|r_j - r_i|^3 with G = K1*K2 = {G_THREEBODY:.10g} "
        f"(K1 = {ACA_THREEBODY['K1']}, K2 = {ACA_THREEBODY['K2']}); velocities are K2 times "
        "the paper's.",
        f"Initial conditions: {initial}."
        if "perturbed" not in initial
        else f"Initial conditions: {initial} (positions + N(0, {PERTURBATION_STD}^2), "
        f"velocities x (1 + N(0, {PERTURBATION_STD}^2)), seed {int(seed)}).",
        f"Reference solution: scipy DOP853, rtol = {rtol:g}, atol = {atol:g}, float64.",
        f"Observation noise: Gaussian, std {noise:g}, added to every stored value; "
        "the noise-free state is not stored."
        if noise > 0
        else "No observation noise: the stored state is the reference solution.",
    ]
    description = "\n".join(lines)
    names = model.variable_names()
    half = len(names) // 2
    return Trajectories(
        time=time,
        state=state,
        variables=names,
        time_units=TIME_UNITS,
        state_units=[LENGTH_UNITS] * half + [VELOCITY_UNITS] * half,
        system="threebody",
        description=description,
        parameters={"masses": masses, "G": G_THREEBODY},
        parameter_units={"masses": MASS_UNITS, "G": G_UNITS},
        attributes={
            "fit_window": np.array([FIT_WINDOW[0], min(FIT_WINDOW[1], t_end)]),
            "noise_std": noise,
            "seed": int(seed),
            "initial_conditions": initial,
            "solver": "scipy.integrate.solve_ivp DOP853",
            "rtol": rtol,
            "atol": atol,
        },
    )
