"""The MuJoCo hopper data set of Rubanova et al. (2019), "Latent ODEs for
Irregularly-Sampled Time Series", generated with the DeepMind Control Suite.

The generator reproduces the reference's: the ``hopper`` domain's ``stand`` task,
one shared ``RandomState(seed)`` drawing, per trajectory and in this order,
``qpos[:2] ~ U(0, 0.5)``, ``qpos[2:] ~ U(-2, 2)`` and ``qvel ~ U(-5, 5)``; then
``n_steps`` records of ``[qpos, qvel]`` with no control, each followed by one
physics step of 0.005 s. Record ``k`` is therefore the state at ``t = 0.005 k`` s,
record 0 being the random initial state.

MuJoCo and dm_control are an optional extra: ``pip install 'physode[mujoco]'``.
"""

from __future__ import annotations

import importlib.metadata
import warnings

import numpy as np

from .trajectories import Trajectories

#: The versions the data set is generated with; mujoco 4 breaks dm-control 1.0.x.
MUJOCO_VERSION = "3.17.0"
DM_CONTROL_VERSION = "1.0.50"
INSTALL_HINT = (
    "pip install 'physode[mujoco]' "
    f"(mujoco=={MUJOCO_VERSION} and dm-control=={DM_CONTROL_VERSION}; mujoco 4 breaks dm-control)"
)

#: The reference's data set: 10 000 trajectories of 200 records, seed 123.
HOPPER_DEFAULTS = {"n_trajectories": 10_000, "n_steps": 200, "seed": 123}

# MuJoCo joint types (mjtJoint) of one degree of freedom and the units of their
# position and velocity coordinates.
_SLIDE, _HINGE = 2, 3
_UNITS = {_SLIDE: ("m", "m/s"), _HINGE: ("rad", "rad/s")}


class MissingExtraError(ImportError):
    """An optional dependency of physode is not installed; the message says how to install it."""


def _load_suite():
    try:
        with warnings.catch_warnings():
            # dm_control probes for an OpenGL backend on import; on a headless
            # machine GLFW warns about the missing display. Nothing is rendered here.
            warnings.filterwarnings("ignore", message=r".*DISPLAY environment variable")
            from dm_control import suite
    except ImportError as exc:
        raise MissingExtraError(
            f"the hopper simulator needs MuJoCo and dm_control, which are not installed "
            f"({exc}); install them with {INSTALL_HINT}"
        ) from exc
    return suite


def _distribution_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name}: must be a positive integer, got {value!r}")
    return int(value)


def simulate_hopper(
    n_trajectories: int = 10_000,
    n_steps: int = 200,
    seed: int = 123,
    dtype: str = "float32",
) -> Trajectories:
    """Random unactuated hopper trajectories, as in the reference's data set.

    Args:
        n_trajectories: number of trajectories N.
        n_steps: records per trajectory T; record ``k`` is the state at time
            ``0.005 k`` s (one MuJoCo step of the hopper model is 0.005 s).
        seed: seed of the ``numpy.random.RandomState`` that draws the initial
            states. The draws of trajectory ``i`` come after those of
            trajectories ``0..i-1``, so a smaller N gives a prefix of a larger one.
        dtype: ``"float32"`` (what the reference trains on) or ``"float64"``.

    Returns:
        :class:`Trajectories` with ``state`` of shape ``(N, T, 14)``: the 7
        generalised positions (``rootx``, ``rootz`` in m; ``rooty`` and the
        joint angles in rad) then their 7 velocities (``v_`` + name), time in s,
        system ``"hopper"``.

    Raises:
        MissingExtraError: (an ``ImportError``) when MuJoCo or dm_control is missing.
        ValueError: for a non-positive ``n_trajectories`` or ``n_steps``.
    """
    n_trajectories = _positive_int("n_trajectories", n_trajectories)
    n_steps = _positive_int("n_steps", n_steps)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ValueError(f"seed: must be an integer, got {seed!r}")
    if dtype not in ("float32", "float64"):
        raise ValueError(f"dtype: must be 'float32' or 'float64', got {dtype!r}")
    suite = _load_suite()
    import mujoco

    physics = suite.load("hopper", "stand").physics
    model = physics.model
    nq, nv = int(model.nq), int(model.nv)
    joint_types = [int(model.jnt_type[j]) for j in range(int(model.njnt))]
    if nq != nv or len(joint_types) != nq or any(k not in _UNITS for k in joint_types):
        raise RuntimeError(
            f"hopper model: expected one-degree-of-freedom joints only, got nq={nq}, nv={nv}, "
            f"joint types {joint_types}"
        )
    names = [model.id2name(j, "joint") for j in range(nq)]
    timestep = float(model.opt.timestep)

    # The reference seeds numpy's global generator with np.random.seed(seed);
    # RandomState(seed) yields the same stream without touching global state.
    rng = np.random.RandomState(seed)
    state = np.empty((n_trajectories, n_steps, nq + nv), dtype=np.float64)
    qpos, qvel = physics.data.qpos, physics.data.qvel
    for i in range(n_trajectories):
        with physics.reset_context():
            qpos[:2] = rng.uniform(0, 0.5, size=2)
            qpos[2:] = rng.uniform(-2, 2, size=nq - 2)
            qvel[:] = rng.uniform(-5, 5, size=nv)
            physics.data.ctrl[:] = 0.0
        for k in range(n_steps):
            state[i, k, :nq] = qpos
            state[i, k, nq:] = qvel
            physics.step()

    return Trajectories(
        time=np.arange(n_steps, dtype=np.float64) * timestep,
        state=state.astype(dtype, copy=False),
        variables=[*names, *(f"v_{n}" for n in names)],
        time_units="s",
        state_units=[_UNITS[k][0] for k in joint_types] + [_UNITS[k][1] for k in joint_types],
        system="hopper",
        description=(
            "dm_control suite hopper 'stand' task, no control; random initial states "
            "qpos[:2] ~ U(0, 0.5), qpos[2:] ~ U(-2, 2), qvel ~ U(-5, 5) "
            "(Rubanova et al. 2019). State = qpos (7) then qvel (7)."
        ),
        attributes={
            "seed": int(seed),
            "timestep": timestep,
            "task": "hopper/stand",
            "mujoco_version": str(mujoco.__version__),
            "dm_control_version": _distribution_version("dm-control"),
        },
    )
