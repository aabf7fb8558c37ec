"""Gradient benchmark: accuracy, memory and time of physode's gradient methods.

physode's gradient methods (``direct``, ``adjoint``, ``aca``, ``mali``) side by side
with torchdiffeq (``odeint``: backprop through the solver; ``odeint_adjoint``), torchode
(``AutoDiffAdjoint``: backprop; ``BacksolveAdjoint``: the continuous adjoint; adaptive
dopri5 only, a step size per batch member) and, where it installs and runs,
TorchDiffEqPack (``odesolve``: direct; ``odesolve_adjoint``:
ACA; ``odesolve_adjoint_sym12`` with sym12async: MALI; it keeps time in float32 and
its memory-efficient modes return only the end state).

Run from the repository root::

    pip install --no-deps torchdiffeq==0.2.5 torchdiffeqpack==1.0.1   # optional rows
    pip install --no-deps torchode==1.0.1 torchtyping "typeguard<3"   # optional rows
    python benchmarks/gradients.py                # tables a, b, c: ~12 minutes on 2 cores
    python benchmarks/gradients.py --quick        # fewer tolerances, step counts: ~2 minutes
    python benchmarks/gradients.py --tables a,c
    python benchmarks/gradients.py --tables c --b256   # adds three-body batch 256: ~7 more
    python benchmarks/gradients.py --tables c --threads 1 --compete 1   # see conditions.py

a. Accuracy: ||g - g_ref|| / ||g_ref|| of the gradient (w.r.t. y0 and the parameters,
   one flat vector) against rtol = atol, and the function evaluations forward+backward
   (physode: ``stats.n_f_evals`` + ``stats.n_f_evals_backward``; the other libraries:
   a counting wrapper around ``func``). Problems: dz/dt = k z (analytic gradient); a
   damped linear system y' = A y (reference through ``torch.linalg.matrix_exp``); van
   der Pol (reference: physode ``aca``, dopri5, rtol = atol = 1e-12).
b. Memory: peak RSS growth of one forward+backward against the number of fixed steps
   on an MLP ODE, each configuration in a fresh subprocess (torch's CPU tensors are
   invisible to tracemalloc): the peak RSS (VmHWM) of the solve minus the RSS before
   it, after building the problem and a 2-step warm-up solve of the same method; the
   peak mark is reset through /proc/self/clear_refs (ru_maxrss would carry the parent's
   peak over into the child across exec). The workers run with glibc's
   MALLOC_MMAP_THRESHOLD_=65536, so RSS counts live tensors, not heap fragmentation.
c. Time: median wall time of forward+backward on an MLP ODE and on the three-body
   problem (gradient w.r.t. the masses: in the anchors' configuration, on the fitting
   window [0, 1], and on [0, 2] at tighter tolerances), with evals and the overhead
   time / (evals x time of one f plus its VJP), that unit being timed in every
   interleaved round beside the methods. Batch 256 of the three-body problem (a close
   encounter in one member: ~46 000 evaluations) only with ``--b256``.

The memory table uses float32 by default (``--memory-dtype float64`` for double; the
float64 matmuls of this MLP are several times slower on CPU). Step caps bound the run
time: a method that needs more steps is reported as ``fail (max_steps)`` (physode),
``fail (AssertionError: max_num_steps ...)`` (torchdiffeq) or ``fail (neval_max=...)``
(TorchDiffEqPack, which would otherwise stop silently at its cap and return the state
reached by one final jump).
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

import physode
from physode.solvers import AsyncLeapfrog

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conditions import add_arguments, applied  # the sibling modules, found through the line above
from engine import (
    MLPField,
    build_mlp,
    choose_repeats,
    markdown_table,
    three_body_initial,
    time_interleaved,
)
from peers import torchode, torchode_solve

try:
    import torchdiffeq
except ImportError:  # optional comparison
    torchdiffeq = None

try:
    import TorchDiffEqPack as tdp

    TDP_PROBLEM = None
except Exception as exc:  # optional comparison; any failure to import skips its rows
    tdp = None
    TDP_PROBLEM = f"import failed: {type(exc).__name__}: {exc}"

F64 = torch.float64
ACCURACY_STEP_CAP = 10_000  # physode max_steps, torchdiffeq max_num_steps, TDP neval_max
TIME_STEP_CAP = (
    200_000  # ALF (MALI), second order, one evaluation a step: 145 000 steps on 3body-b1-long
)


# ----------------------------------------------------------------------------- methods


class NotApplicable(Exception):
    """The method cannot do this problem (e.g. TorchDiffEqPack's end-state-only modes)."""


class StepCapReached(Exception):
    """TorchDiffEqPack stops silently at neval_max; we report it as a failure."""


@dataclass
class Setting:
    """Tolerances of an adaptive solve, or the step of a fixed-step one."""

    rtol: float | None = None
    atol: float | None = None
    step_size: float | None = None
    max_steps: int = ACCURACY_STEP_CAP


@dataclass
class Run:
    """One forward solve: the end state, the trajectory when the method returns one,
    and a callable giving (forward evals, backward evals, MALI drift) once backward ran."""

    end: torch.Tensor
    trajectory: torch.Tensor | None
    counts: Callable[[], tuple[int, int, float | None]]


Solve = Callable[[nn.Module, torch.Tensor, torch.Tensor, Setting, bool], Run]


@dataclass
class Method:
    label: str
    lib: str  # physode | torchdiffeq | TDP
    kind: str  # direct | adjoint | aca | mali (for the ratios)
    solve: Solve


class CountingModule(nn.Module):
    """Counts the evaluations of ``func``; an ``nn.Module`` so that its parameters are found."""

    def __init__(self, func: nn.Module):
        super().__init__()
        self.func = func
        self.n = 0

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self.n += 1
        return self.func(t, y)


def physode_method(label: str, grad, method=None, **kwargs) -> Method:
    def solve(func, y0, t, s: Setting, count: bool = True) -> Run:
        if s.step_size is not None:
            opts = {"step_size": s.step_size}
        else:
            opts = {"rtol": s.rtol, "atol": s.atol, "max_steps": s.max_steps}
        sol = physode.solve(func, y0, t, method=method, grad=grad, **opts, **kwargs)
        st = sol.stats
        return Run(
            sol.ys[-1],
            sol.ys,
            lambda: (st.n_f_evals, st.n_f_evals_backward, st.extra.get("mali_drift")),
        )

    return Method(label, "physode", grad if isinstance(grad, str) else grad.name, solve)


def torchdiffeq_method(label: str, adjoint: bool, method: str) -> Method:
    def solve(func, y0, t, s: Setting, count: bool = True) -> Run:
        f = CountingModule(func) if count else func
        if s.step_size is not None:
            kw = {"options": {"step_size": s.step_size}}
        else:
            kw = {"rtol": s.rtol, "atol": s.atol, "options": {"max_num_steps": s.max_steps}}
        odeint = torchdiffeq.odeint_adjoint if adjoint else torchdiffeq.odeint
        ys = odeint(f, y0, t, method=method, **kw)
        fwd = f.n if count else 0
        return Run(ys[-1], ys, lambda: (fwd, (f.n - fwd) if count else 0, None))

    return Method(label, "torchdiffeq", "adjoint" if adjoint else "direct", solve)


def torchode_method(label: str, adjoint: bool) -> Method:
    def solve(func, y0, t, s: Setting, count: bool = True) -> Run:
        if s.step_size is not None:
            raise NotApplicable("no rk4 in torchode")
        f = CountingModule(func) if count else func
        r = torchode_solve(
            f, y0, t, rtol=s.rtol, atol=s.atol, adjoint=adjoint, max_steps=s.max_steps
        )
        fwd = f.n if count else 0
        return Run(r.ys[-1], r.ys, lambda: (fwd, (f.n - fwd) if count else 0, None))

    return Method(label, "torchode", "adjoint" if adjoint else "direct", solve)


# TorchDiffEqPack's neval counts accepted steps; each costs at least this many evaluations.
TDP_EVALS_PER_STEP = {"dopri5": 12, "sym12async": 2}
TDP_FIXED = {"dopri5": "rk4", "sym12async": "fixedstep_sym12async"}


def tdp_method(label: str, kind: str) -> Method:
    adaptive = "sym12async" if kind == "mali" else "dopri5"
    entry = {"direct": "odesolve", "aca": "odesolve_adjoint", "mali": "odesolve_adjoint_sym12"}

    def solve(func, y0, t, s: Setting, count: bool = True) -> Run:
        if kind != "direct" and len(t) > 2:
            raise NotApplicable("end state only")
        f = CountingModule(func) if count else func
        options = {"t0": float(t[0]), "t1": float(t[-1]), "print_neval": False}
        if s.step_size is not None:
            options.update(method=TDP_FIXED[adaptive], h=s.step_size)
        else:
            options.update(method=adaptive, h=None, rtol=s.rtol, atol=s.atol)
            options["neval_max"] = s.max_steps
        if kind == "direct" and len(t) > 2:
            options["t_eval"] = t.tolist()
        out = getattr(tdp, entry[kind])(f, y0, options=options)
        fwd = f.n if count else 0
        if count and s.step_size is None and fwd >= TDP_EVALS_PER_STEP[adaptive] * s.max_steps:
            raise StepCapReached(f"neval_max={s.max_steps}")
        trajectory = out if len(t) > 2 else None
        end = out[-1] if len(t) > 2 else out
        return Run(end, trajectory, lambda: (fwd, (f.n - fwd) if count else 0, None))

    return Method(label, "TDP", kind, solve)


def tdp_check() -> str | None:
    """None when TorchDiffEqPack imports and differentiates a tiny problem, else why not."""
    if tdp is None:
        return TDP_PROBLEM
    try:
        func, y0 = build_exponential()
        s = Setting(rtol=1e-6, atol=1e-6)
        for kind in ("direct", "aca", "mali"):
            run = tdp_method(kind, kind).solve(func, y0, torch.tensor([0.0, 1.0], dtype=F64), s)
            flat_grad(run.end.square().sum(), y0, func)
    except Exception as exc:
        return f"smoke test failed: {type(exc).__name__}: {exc}"
    return None


def comparison_methods(fixed: bool) -> list[Method]:
    """torchdiffeq, torchode and TorchDiffEqPack rows; rk4 for fixed steps, dopri5
    otherwise (torchode has no rk4: no fixed-step rows)."""
    scheme = "rk4" if fixed else "dopri5"
    methods = []
    if torchdiffeq is not None:
        methods += [
            torchdiffeq_method(f"tdq odeint ({scheme})", False, scheme),
            torchdiffeq_method(f"tdq odeint_adjoint ({scheme})", True, scheme),
        ]
    if torchode is not None and not fixed:
        methods += [
            torchode_method("tode AutoDiffAdjoint (dopri5)", False),
            torchode_method("tode BacksolveAdjoint (dopri5)", True),
        ]
    if tdp is not None:
        sym = "fixedstep_sym12async" if fixed else "sym12async"
        methods += [
            tdp_method(f"TDP odesolve ({scheme})", "direct"),
            tdp_method(f"TDP odesolve_adjoint ({scheme})", "aca"),
            tdp_method(f"TDP odesolve_adjoint_sym12 ({sym})", "mali"),
        ]
    return methods


def physode_methods() -> list[Method]:
    return [
        physode_method("physode direct (dopri5)", "direct"),
        physode_method("physode adjoint (dopri5)", "adjoint"),
        physode_method("physode aca (dopri5)", "aca"),
        physode_method("physode mali (alf)", "mali"),
    ]


#: ALF as in the MALI paper: no velocity restarts, no gradient restarts.
PLAIN_ALF = AsyncLeapfrog(auto_restart=False, gradient_restart_every=None)


def mali_variants() -> list[Method]:
    return [
        physode_method("physode mali (plain alf)", "mali", method=PLAIN_ALF),
        physode_method(
            "physode mali (alf, restart 100)", "mali", method=AsyncLeapfrog(restart_every=100)
        ),
        physode_method("physode mali (alf), checkpoint 200", physode.MALI(checkpoint_every=200)),
        physode_method("physode mali (alf eta=0.9)", "mali", method=AsyncLeapfrog(eta=0.9)),
        physode_method("physode direct (alf) [the same steps]", "direct", method="alf"),
    ]


# ----------------------------------------------------------------------------- helpers


def flat_grad(loss: torch.Tensor, y0: torch.Tensor, func: nn.Module) -> torch.Tensor:
    """dL/d(y0, parameters of func) as one flat vector (zeros for unused inputs)."""
    inputs = [x for x in (y0, *func.parameters()) if x.requires_grad]
    grads = torch.autograd.grad(loss, inputs, allow_unused=True)
    return torch.cat(
        [
            (torch.zeros_like(x) if g is None else g).reshape(-1)
            for g, x in zip(grads, inputs, strict=True)
        ]
    )


def failure(exc: Exception) -> str:
    if isinstance(exc, NotApplicable):
        return f"n/a ({exc})"
    if isinstance(exc, physode.SolverError):
        return f"fail ({exc.reason})"
    if isinstance(exc, StepCapReached):
        return f"fail ({exc})"
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"fail ({type(exc).__name__}: {text[:40]})"


def fmt(x: float | None, spec: str) -> str:
    if x is None:
        return ""
    if math.isnan(x):
        return "nan"
    return format(x, spec)


def section(title: str) -> None:
    print()
    print(title)
    print("=" * len(title))
    print(flush=True)


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- a. accuracy


class Exponential(nn.Module):
    """dz/dt = k z."""

    def __init__(self, k: float = 0.3):
        super().__init__()
        self.k = nn.Parameter(torch.tensor(k, dtype=F64))

    def forward(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.k * z


class LinearSystem(nn.Module):
    """dy/dt = A y, A a parameter."""

    def __init__(self, a: torch.Tensor):
        super().__init__()
        self.a = nn.Parameter(a.clone())

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return y @ self.a.T


class VanDerPol(nn.Module):
    """z'' = mu (1 - z^2) z' - z as a first-order system on (z, z')."""

    def __init__(self, mu: float = 1.0):
        super().__init__()
        self.mu = nn.Parameter(torch.tensor(mu, dtype=F64))

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        z, v = y[..., 0], y[..., 1]
        return torch.stack([v, self.mu * (1.0 - z * z) * v - z], dim=-1)


def build_exponential() -> tuple[nn.Module, torch.Tensor]:
    return Exponential(0.3), torch.tensor([1.5], dtype=F64, requires_grad=True)


def damped_matrix(n: int = 20) -> torch.Tensor:
    """Symmetric, eigenvalues -1, -2, ..., -n, random orthogonal eigenvectors (seed 0)."""
    gen = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=gen, dtype=F64))
    return q @ torch.diag(-torch.arange(1, n + 1, dtype=F64)) @ q.T


def build_linear() -> tuple[nn.Module, torch.Tensor]:
    return LinearSystem(damped_matrix()), torch.ones(20, dtype=F64, requires_grad=True)


def build_vdp() -> tuple[nn.Module, torch.Tensor]:
    return VanDerPol(1.0), torch.tensor([2.0, 0.0], dtype=F64, requires_grad=True)


def exponential_reference() -> torch.Tensor:
    z0, k, t_end = 1.5, 0.3, 2.0
    e = math.exp(2 * k * t_end)
    return torch.tensor([2 * z0 * e, 2 * z0 * z0 * t_end * e], dtype=F64)


def linear_reference() -> torch.Tensor:
    func, y0 = build_linear()
    y_end = torch.linalg.matrix_exp(func.a * 10.0) @ y0
    return flat_grad(y_end.sum(), y0, func)


def vdp_reference() -> torch.Tensor:
    func, y0 = build_vdp()
    t = torch.tensor([0.0, 20.0], dtype=F64)
    s = Setting(rtol=1e-12, atol=1e-12, max_steps=1_000_000)
    run = physode_method("ref", "aca").solve(func, y0, t, s)
    return flat_grad(run.end.square().sum(), y0, func)


def linear_note() -> str:
    func, y0 = build_linear()
    value = (torch.linalg.matrix_exp(func.a.detach() * 10.0) @ y0.detach()).sum().item()
    return (
        f"sum y(T) = {value:.2e} (the slowest mode decays as e^-10): the absolute tolerance, "
        "not rtol, sets the accuracy of every method here"
    )


@dataclass
class AccuracyProblem:
    name: str
    description: str
    build: Callable[[], tuple[nn.Module, torch.Tensor]]  # fresh func and leaf y0
    t_end: float
    loss: Callable[[torch.Tensor], torch.Tensor]  # of the end state
    reference: Callable[[], torch.Tensor]
    reference_note: str
    variants: bool  # add the MALI variant rows
    note: Callable[[], str] | None = None


ACCURACY_PROBLEMS = [
    AccuracyProblem(
        "exp",
        "dz/dt = k z, z0 = 1.5, k = 0.3, T = 2, L = z(T)^2; gradient w.r.t. (z0, k)",
        build_exponential,
        2.0,
        lambda y: y.square().sum(),
        exponential_reference,
        "analytic: dL/dz0 = 2 z0 e^{2kT}, dL/dk = 2 z0^2 T e^{2kT}",
        False,
    ),
    AccuracyProblem(
        "linear",
        "y' = A y, A = Q diag(-1..-20) Q^T (20x20, random orthogonal Q, seed 0), y0 = 1, "
        "T = 10, L = sum y(T); gradient w.r.t. (y0, A)",
        build_linear,
        10.0,
        lambda y: y.sum(),
        linear_reference,
        "autograd through torch.linalg.matrix_exp(A T) @ y0",
        True,
        linear_note,
    ),
    AccuracyProblem(
        "vdp",
        "van der Pol mu = 1, z0 = (2, 0), T = 20, L = sum z(T)^2; gradient w.r.t. (z0, mu)",
        build_vdp,
        20.0,
        lambda y: y.square().sum(),
        vdp_reference,
        "physode aca, dopri5, rtol = atol = 1e-12",
        True,
    ),
]


@dataclass
class Cell:
    error: float | None = None
    evals: tuple[int, int] | None = None
    drift: float | None = None
    failure: str | None = None

    def text(self) -> tuple[str, str]:
        if self.failure is not None:
            return self.failure, ""
        fwd, bwd = self.evals
        return fmt(self.error, ".1e"), f"{fwd}+{bwd}"


def accuracy_cell(method: Method, p: AccuracyProblem, tol: float, ref: torch.Tensor) -> Cell:
    func, y0 = p.build()
    t = torch.tensor([0.0, p.t_end], dtype=F64)
    setting = Setting(rtol=tol, atol=tol)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # MALI's drift warning: the drift has its column
            run = method.solve(func, y0, t, setting, True)
            grad = flat_grad(p.loss(run.end), y0, func)
    except Exception as exc:
        return Cell(failure=failure(exc))
    fwd, bwd, drift = run.counts()
    error = (torch.linalg.vector_norm(grad - ref) / torch.linalg.vector_norm(ref)).item()
    return Cell(error, (fwd, bwd), drift)


def accuracy_table(p: AccuracyProblem, methods: list[Method], tols: list[float]) -> str:
    ref = p.reference()
    header = ["method"]
    for tol in tols:
        header += [f"err @{tol:.0e}", f"evals @{tol:.0e}"]
    header.append("mali drift (per tol)")
    body = []
    for m in methods:
        progress(f"  a/{p.name}: {m.label}")
        cells = [accuracy_cell(m, p, tol, ref) for tol in tols]
        row = [m.label]
        for c in cells:
            row += list(c.text())
        drifts = [c.drift for c in cells]
        row.append("/".join(fmt(d, ".2g") or "-" for d in drifts) if any(drifts) else "")
        body.append(row)
    return markdown_table(header, body)


def vdp_reference_check() -> str:
    """An independent check of the van der Pol reference: torchdiffeq odeint at 1e-12."""
    if torchdiffeq is None:
        return "reference check skipped (torchdiffeq not installed)"
    func, y0 = build_vdp()
    t = torch.tensor([0.0, 20.0], dtype=F64)
    ys = torchdiffeq.odeint(func, y0, t, rtol=1e-12, atol=1e-12, method="dopri5")
    g = flat_grad(ys[-1].square().sum(), y0, func)
    ref = vdp_reference()
    diff = (torch.linalg.vector_norm(g - ref) / torch.linalg.vector_norm(ref)).item()
    return f"reference check: torchdiffeq odeint (dopri5, 1e-12) differs from it by {diff:.1e}"


def run_accuracy(tols: list[float], check_reference: bool) -> None:
    section("a. Accuracy: relative gradient error ||g - g_ref|| / ||g_ref|| vs rtol = atol")
    print(
        "Cells: error, and function evaluations forward+backward. Step cap "
        f"{ACCURACY_STEP_CAP} (physode max_steps, torchdiffeq max_num_steps, TDP neval_max)."
    )
    print(
        "mali drift = stats.extra['mali_drift'] (rebuilt vs true states, in tolerance "
        "units; > 1 warns). 'direct (alf)' is autograd through the same ALF steps (default "
        "settings), which MALI reproduces when the inverse steps are exact: it separates"
    )
    print(
        "the integrator's error from MALI's reconstruction error. 'alf' = the default "
        "AsyncLeapfrog (gradient restarts every 100 steps, velocity restarts when the "
        "parasitic mode dominates the error estimate); 'plain alf' = neither; "
        "'restart 100' = velocity restarts every 100 steps besides."
    )
    for p in ACCURACY_PROBLEMS:
        methods = physode_methods() + (mali_variants() if p.variants else [])
        methods += comparison_methods(fixed=False)
        print()
        print(f"({p.name}) {p.description}")
        print(f"reference: {p.reference_note}")
        if p.note is not None:
            print(p.note())
        if p.name == "vdp" and check_reference:
            print(vdp_reference_check())
        print()
        print(accuracy_table(p, methods, tols), flush=True)


# ----------------------------------------------------------------------------- b. memory


MEMORY_BATCH, MEMORY_DIM, MEMORY_WIDTH = 512, 128, 256
#: glibc's mmap threshold in the memory workers (bytes), unless the environment sets one.
MMAP_THRESHOLD = 65536


def memory_methods() -> dict[str, Method]:
    methods = [
        physode_method("physode direct (rk4)", "direct", method="rk4"),
        physode_method("physode adjoint (rk4)", "adjoint", method="rk4"),
        physode_method("physode aca (rk4)", "aca", method="rk4"),
        physode_method("physode mali (alf)", "mali"),
        physode_method(
            "physode mali (alf, restart 100)", "mali", method=AsyncLeapfrog(restart_every=100)
        ),
        physode_method("physode mali (plain alf)", "mali", method=PLAIN_ALF),
        *comparison_methods(fixed=True),
    ]
    return {m.label: m for m in methods}


def _proc_status_kib(name: str) -> int | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(name + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def reset_peak_rss() -> int:
    """Reset the peak-RSS mark to the current RSS (Linux: /proc/self/clear_refs); KiB now.

    ru_maxrss is no use here: Linux carries the parent's peak over into a child across
    exec (a subprocess of a big parent starts with the parent's peak). Without /proc the
    fallback is ru_maxrss all the same.
    """
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return _proc_status_kib("VmHWM") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def peak_rss() -> int:
    """Peak RSS (KiB) since the last reset_peak_rss()."""
    return _proc_status_kib("VmHWM") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def memory_worker(spec: dict) -> dict:
    """Runs in a fresh process: peak RSS growth of one forward+backward."""
    dtype = getattr(torch, spec["dtype"])
    torch.manual_seed(0)
    func = MLPField(MEMORY_DIM, MEMORY_WIDTH).to(dtype)
    y0 = torch.randn(MEMORY_BATCH, MEMORY_DIM, dtype=dtype).requires_grad_()
    t = torch.tensor([0.0, 1.0], dtype=F64)
    method = memory_methods()[spec["method"]]

    def forward_backward(n: int) -> Run:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # MALI's drift warning: reported in its column
            run = method.solve(func, y0, t, Setting(step_size=1.0 / n), True)
            flat_grad(run.end.square().mean(), y0, func)
        return run

    forward_backward(2)  # warm-up: one-off costs (thread pools, lazy initialisation)
    gc.collect()
    base = reset_peak_rss()
    start = time.perf_counter()
    run = forward_backward(spec["n"])
    seconds = time.perf_counter() - start
    peak = peak_rss()
    fwd, bwd, drift = run.counts()
    mib = (peak - base) / 1024.0
    return {"mib": mib, "seconds": seconds, "evals": [fwd, bwd], "drift": drift}


def measure_memory(label: str, n: int, dtype: str) -> dict:
    spec = json.dumps({"method": label, "n": n, "dtype": dtype})
    cmd = [sys.executable, str(Path(__file__).resolve()), "--memory-worker", spec]
    # Every allocation of 64 KiB or more gets its own mapping, returned when freed, so
    # RSS counts the live tensors exactly instead of glibc's heap fragmentation.
    env = {**os.environ}
    env.setdefault("MALLOC_MMAP_THRESHOLD_", str(MMAP_THRESHOLD))
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=600, check=False, env=env
        )
    except subprocess.TimeoutExpired:
        return {"failure": "fail (timeout 600 s)"}
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["?"])[-1]
        return {"failure": f"fail ({last[:60]})"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


#: Growths under this many MiB are measured in three fresh processes (the median is
#: kept): RSS moves by a few tenths of a MiB from run to run (small allocations, which
#: stay on glibc's heap), which matters only where the growth itself is that small.
SMALL_GROWTH_MIB = 64.0


def measure_memory_median(label: str, n: int, dtype: str) -> dict:
    first = measure_memory(label, n, dtype)
    if "mib" not in first or first["mib"] >= SMALL_GROWTH_MIB:
        return first
    runs = [first] + [measure_memory(label, n, dtype) for _ in range(2)]
    runs = [r for r in runs if "mib" in r]
    runs.sort(key=lambda r: r["mib"])
    return runs[len(runs) // 2]


def available_mib() -> float:
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return 8192.0


def run_memory(steps: list[int], dtype: str) -> None:
    section("b. Memory: peak RSS growth (MiB) of one forward+backward vs fixed steps")
    itemsize = torch.empty(0, dtype=getattr(torch, dtype)).element_size()
    state_mib = MEMORY_BATCH * MEMORY_DIM * itemsize / 2**20
    cap_mib = 0.5 * available_mib()
    print(
        f"MLP ODE f = Linear({MEMORY_DIM}, {MEMORY_WIDTH}) -> tanh -> Linear({MEMORY_WIDTH}, "
        f"{MEMORY_DIM}), batch {MEMORY_BATCH}, {dtype}, T = 1, step_size = T / n, "
        "L = mean y(T)^2,"
    )
    print(
        "gradient w.r.t. y0 and the weights. Each cell: a fresh process; peak RSS (VmHWM) of "
        "forward+backward minus RSS before it, after building the problem and one warm-up"
    )
    print(
        "forward+backward of the same method with 2 steps (so one-off costs are left out). "
        "Δ % is relative to the growth at the fewest steps."
    )
    print(
        f"One state = {MEMORY_BATCH}x{MEMORY_DIM}x{itemsize} B = {state_mib:.2f} MiB; ACA is "
        f"expected to grow by ~2 states per step ({2 * state_mib:.2f} MiB/step), MALI by "
        "nothing (target: < 10 % from the fewest to the most steps), direct by whole graphs."
    )
    threshold = os.environ.get("MALLOC_MMAP_THRESHOLD_", str(MMAP_THRESHOLD))
    print(
        f"A run is skipped when the growth extrapolated from the previous step count "
        f"exceeds {cap_mib / 1024:.1f} GiB (half of MemAvailable). The workers run with "
        f"MALLOC_MMAP_THRESHOLD_={threshold}: every allocation of that size or more (all"
    )
    print(
        "tensors of a state's size) is mapped on its own and returned when freed, so RSS "
        "counts live tensors rather than heap fragmentation (times are 2-3x slower)."
    )
    print(
        f"Growths under {SMALL_GROWTH_MIB:.0f} MiB: the median of three fresh processes (RSS "
        "still moves by a few tenths of a MiB: small allocations stay on the heap). "
        "mali drift: in units of the default rtol/atol (1e-6/1e-8)."
    )
    print(flush=True)
    header = ["method", *(f"n={n}" for n in steps)]
    header += [f"Δ {steps[0]}→{steps[-1]} MiB", "Δ %", "MiB/step", "states/step"]
    header += [f"s @n={steps[-1]}"]
    header += [f"evals @n={steps[-1]}", f"mali drift @n={steps[-1]}"]
    body = []
    for label in memory_methods():
        results: dict[int, dict] = {}
        for n in steps:
            prev = [m for m in steps if m < n and "mib" in results.get(m, {})]
            if prev and results[prev[-1]]["mib"] * n / prev[-1] > cap_mib:
                projected = results[prev[-1]]["mib"] * n / prev[-1] / 1024
                results[n] = {"failure": f"skipped (~{projected:.0f} GiB)"}
                continue
            progress(f"  b: {label}, n={n}")
            results[n] = measure_memory_median(label, n, dtype)
        body.append(memory_row(label, steps, results, state_mib))
    print(markdown_table(header, body), flush=True)


def memory_row(
    label: str, steps: list[int], results: dict[int, dict], state_mib: float
) -> list[str]:
    row = [label]
    for n in steps:
        r = results[n]
        row.append(r.get("failure") or f"{r['mib']:.1f}")
    first, last = results[steps[0]], results[steps[-1]]
    if "mib" in first and "mib" in last:
        delta = last["mib"] - first["mib"]
        pct = 100.0 * delta / first["mib"] if first["mib"] > 0 else float("nan")
        per_step = delta / (steps[-1] - steps[0])
        row += [f"{delta:+.1f}", f"{pct:+.0f}", f"{per_step:.3f}", f"{per_step / state_mib:.2f}"]
        row += [f"{last['seconds']:.1f}", "+".join(map(str, last["evals"]))]
        row.append(fmt(last.get("drift"), ".2g"))
    else:
        row += ["", "", "", "", "", "", ""]
    return row


# ----------------------------------------------------------------------------- c. time


class ThreeBodyMasses(nn.Module):
    """Newtonian gravity for 3 bodies in 3-D with the masses a learnable parameter.

    y = (positions, velocities), shape (..., 18); as ``engine.ThreeBody`` but with
    G m_j built from the parameter at each call.
    """

    def __init__(self, masses: tuple[float, ...] = (1.1, 1.1, 0.9), g: float = 1.45136):
        super().__init__()
        self.n = len(masses)
        self.g = g
        self.masses = nn.Parameter(torch.tensor(masses, dtype=F64))
        eye = torch.eye(self.n, dtype=F64)
        self.register_buffer("eye", eye)
        self.register_buffer("off", 1.0 - eye)
        self.register_buffer("ones3", torch.ones(3, dtype=F64))

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        n = self.n
        pos = y[..., : 3 * n].unflatten(-1, (n, 3))
        diff = pos.unsqueeze(-3) - pos.unsqueeze(-2)  # r_j - r_i
        dist2 = (diff * diff) @ self.ones3 + self.eye
        weight = (self.g * self.masses * self.off) * dist2.pow(-1.5)
        acc = (weight.unsqueeze(-2) @ diff).squeeze(-2)
        return torch.cat([y[..., 3 * n :], acc.flatten(-2)], dim=-1)


@dataclass
class TimeProblem:
    name: str
    description: str
    func: nn.Module
    y0: torch.Tensor
    t: torch.Tensor
    setting: Setting
    loss: Callable[[Run], torch.Tensor]
    inputs: list[torch.Tensor] = field(default_factory=list)  # what the gradient is taken of


def mlp_time_problem() -> TimeProblem:
    p = build_mlp(F64)
    return TimeProblem(
        "mlp",
        "MLP 64-256-64 tanh, batch 256, f64, rtol = atol = 1e-5, T = 1, L = mean y(T)^2, "
        "gradient w.r.t. the weights",
        p.func,
        p.y0,
        p.t,
        Setting(rtol=1e-5, atol=1e-5, max_steps=TIME_STEP_CAP),
        lambda run: run.end.square().mean(),
        list(p.func.parameters()),
    )


@dataclass(frozen=True)
class ThreeBodyTiming:
    """One three-body timing configuration: 100 output times on ``[0, t_end]``."""

    suffix: str
    t_end: float
    rtol: float
    atol: float
    why: str


#: The anchors' configuration: rtol = atol = 1e-6, 100 outputs on [0, 0.15], where
#: torchdiffeq takes exactly the anchors' 62 forward and 792 adjoint evaluations; the same
#: tolerances on the fitting window [0, 1] of the three-body task; and a harder one:
#: twice that span, tighter tolerances.
THREE_BODY_TIMINGS = (
    ThreeBodyTiming(
        "-anchors",
        0.15,
        1e-6,
        1e-6,
        "the anchors' configuration: torchdiffeq takes their 62 forward + 792 adjoint evals",
    ),
    ThreeBodyTiming("", 1.0, 1e-6, 1e-6, "the anchors' tolerances, the fitting window [0, 1]"),
    ThreeBodyTiming("-long", 2.0, 1e-7, 1e-8, "twice the span, tighter tolerances"),
)


def three_body_time_problem(batch: int, timing: ThreeBodyTiming) -> TimeProblem:
    base = three_body_initial()
    if batch == 1:
        y0 = base.unsqueeze(0)
    else:
        gen = torch.Generator().manual_seed(0)
        y0 = base + 1e-2 * torch.randn(batch, 18, generator=gen, dtype=F64)
    t = torch.linspace(0.0, timing.t_end, 100, dtype=F64)
    setting = Setting(rtol=timing.rtol, atol=timing.atol, max_steps=TIME_STEP_CAP)
    with torch.no_grad():  # the target: the trajectory with unit masses
        target = physode.odeint(ThreeBodyMasses((1.0, 1.0, 1.0)), y0, t, rtol=1e-7, atol=1e-8)
    func = ThreeBodyMasses()

    def loss(run: Run) -> torch.Tensor:
        if run.trajectory is None:
            raise NotApplicable("end state only")
        return (run.trajectory - target).square().mean()

    return TimeProblem(
        f"3body-b{batch}{timing.suffix}",
        f"three-body, batch {batch}, f64, dopri5 rtol = {timing.rtol:g} atol = {timing.atol:g}, "
        f"100 outputs on [0, {timing.t_end:g}] ({timing.why}), L = MSE(trajectory, trajectory "
        "with masses (1, 1, 1)), gradient w.r.t. masses",
        func,
        y0,
        t,
        setting,
        loss,
        [func.masses],
    )


def forward_backward(m: Method, p: TimeProblem, count: bool) -> Run:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run = m.solve(p.func, p.y0, p.t, p.setting, count)
        torch.autograd.grad(p.loss(run), p.inputs)
    return run


def f_vjp_time(p: TimeProblem, min_total_s: float = 0.5) -> float:
    """Median time (s) of one f evaluation plus its VJP w.r.t. the state and the inputs."""
    y = p.y0.detach().clone().requires_grad_()
    t0 = p.t[0].to(p.y0.dtype)
    v = torch.randn_like(p.y0)

    def once() -> float:
        start = time.perf_counter()
        out = p.func(t0, y)
        torch.autograd.grad(out, (y, *p.inputs), v)
        return time.perf_counter() - start

    for _ in range(3):
        once()
    n = max(20, min(2000, int(min_total_s / max(once(), 1e-7))))
    return statistics.median(once() for _ in range(n))


@dataclass
class TimeRow:
    problem: str
    method: Method
    seconds: float | None = None
    repeats: str = ""
    evals: tuple[int, int] | None = None
    drift: float | None = None
    error: float | None = None  # max |y(T) - reference y(T)|
    failure: str | None = None
    samples: list[float] = field(default_factory=list)  # one time per interleaved round
    units: list[float] = field(default_factory=list)  # the f+VJP unit in each round


#: The f+VJP unit's turn in each interleaved round (not a method).
UNIT_LABEL = "f+VJP unit"


def time_problem(
    p: TimeProblem, methods: list[Method], budget_s: float, lo: int, hi: int
) -> list[TimeRow]:
    """Time each method on ``p``: a counted run, then ``lo``..``hi`` interleaved repeats
    (as many as fit ``budget_s``; ``lo`` applies only to rounds under a minute)."""
    rows: dict[str, TimeRow] = {}
    warm: dict[str, float] = {}
    with torch.no_grad():  # what each row's end state is measured against
        reference = physode.odeint(p.func, p.y0, p.t, rtol=1e-12, atol=1e-12, max_steps=10**6)
    for m in methods:  # counted run, doubles as the warm-up
        progress(f"  c/{p.name}: {m.label}")
        row = TimeRow(p.name, m)
        rows[m.label] = row
        start = time.perf_counter()
        try:
            run = forward_backward(m, p, count=True)
        except Exception as exc:
            row.failure = failure(exc)
            continue
        warm[m.label] = time.perf_counter() - start
        fwd, bwd, row.drift = run.counts()
        row.evals = (fwd, bwd)
        row.error = (run.end.detach() - reference[-1]).abs().max().item()
    round_s = sum(warm.values())
    repeats = choose_repeats(round_s, budget_s, lo if round_s < 60.0 else 0, hi)
    if repeats == 0:  # too slow to repeat: the counted run is the only sample
        for label, seconds in warm.items():
            rows[label].seconds, rows[label].repeats = seconds, "1*"
        return list(rows.values())
    calls = {
        label: (lambda m=rows[label].method: forward_backward(m, p, count=False)) for label in warm
    }
    # The f+VJP unit takes its turn in every round too, so that each round's times are
    # set against a unit measured under the same conditions (the machine's speed drifts).
    units: list[float] = []
    calls[UNIT_LABEL] = lambda: units.append(f_vjp_time(p, min_total_s=0.05))
    times = time_interleaved(calls, repeats)
    del times[UNIT_LABEL]
    for label, samples in times.items():
        rows[label].seconds, rows[label].repeats = statistics.median(samples), str(repeats)
        rows[label].samples = samples
        rows[label].units = units
    return list(rows.values())


def time_table(rows: list[TimeRow], fvjp: dict[str, float]) -> str:
    header = ["problem", "method", "ms", "runs", "evals fwd+bwd", "err y(T)", "f+VJP µs"]
    header += ["overhead"]
    header += ["quiet f+VJP µs", "overhead vs quiet", "note"]
    body = []
    for r in rows:
        if r.failure is not None:
            body.append([r.problem, r.method.label, *[""] * 8, r.failure])
            continue
        fwd, bwd = r.evals
        evals = fwd + bwd
        quiet = fvjp[r.problem]
        in_rounds = rounds = ""
        if r.units and evals:
            in_rounds = f"{statistics.median(r.units) * 1e6:.1f}"
            per_round = [x / (evals * u) for x, u in zip(r.samples, r.units, strict=True)]
            rounds = f"{statistics.median(per_round):.2f}"
        vs_quiet = f"{r.seconds / (evals * quiet):.2f}" if evals else ""
        note = f"mali drift {r.drift:.2g}" if r.drift is not None else ""
        body.append(
            [
                r.problem,
                r.method.label,
                f"{r.seconds * 1e3:.1f}",
                r.repeats,
                f"{fwd}+{bwd}",
                f"{r.error:.1e}",
                in_rounds,
                rounds,
                f"{quiet * 1e6:.1f}",
                vs_quiet,
                note,
            ]
        )
    return markdown_table(header, body, n_text=2)


def ratio_table(rows: list[TimeRow], outputs: dict[str, int]) -> str:
    """ACA and MALI time against the anchors, per problem.

    ``outputs``: the number of output times of each problem. The last column,
    ACA's forward evaluations per output interval, sets how much torchdiffeq's
    adjoint loses by restarting a solve on every interval (the fewer steps per
    interval, the more its restarts cost).
    """

    def row(problem: str, lib: str, kind: str) -> TimeRow | None:
        for r in rows:
            if r.problem == problem and r.method.lib == lib and r.method.kind == kind:
                return r
        return None

    def ratio(a: TimeRow | None, b: TimeRow | None) -> str:
        """The median of the per-round ratios (both methods timed in the same round, so
        the machine's drifts in speed cancel) and their range; else the medians' ratio."""
        if a is None or b is None or a.seconds is None or b.seconds is None:
            return "n/a"
        if len(a.samples) >= 3 and len(a.samples) == len(b.samples):
            per_round = [x / y for x, y in zip(a.samples, b.samples, strict=True)]
            return f"{statistics.median(per_round):.2f} ({min(per_round):.2f}-{max(per_round):.2f})"
        return f"{a.seconds / b.seconds:.2f}"

    def per_evaluation(a: TimeRow | None, b: TimeRow | None) -> str:
        """Time per forward+backward evaluation of ``a`` over that of ``b`` (medians)."""
        if a is None or b is None or a.seconds is None or b.seconds is None:
            return "n/a"
        return f"{(a.seconds / sum(a.evals)) / (b.seconds / sum(b.evals)):.2f}"

    header = ["problem", "ACA / tdq odeint_adjoint", "ACA / tdq odeint"]
    header += ["ACA / tode Backsolve", "ACA / tode AutoDiff", "MALI / ACA"]
    header += ["MALI / ACA per evaluation", "ACA fwd evals per output interval"]
    body = []
    for problem in dict.fromkeys(r.problem for r in rows):
        aca_row = row(problem, "physode", "aca")
        per_interval = (
            f"{aca_row.evals[0] / (outputs[problem] - 1):.1f}"
            if aca_row is not None and aca_row.evals is not None and outputs[problem] > 1
            else "n/a"
        )
        body.append(
            [
                problem,
                ratio(aca_row, row(problem, "torchdiffeq", "adjoint")),
                ratio(aca_row, row(problem, "torchdiffeq", "direct")),
                ratio(aca_row, row(problem, "torchode", "adjoint")),
                ratio(aca_row, row(problem, "torchode", "direct")),
                ratio(row(problem, "physode", "mali"), aca_row),
                per_evaluation(row(problem, "physode", "mali"), aca_row),
                per_interval,
            ]
        )
    return markdown_table(header, body)


def run_time(quick: bool, b256: bool) -> None:
    section("c. Time: forward+backward wall time")
    problems = [mlp_time_problem()]
    problems += [three_body_time_problem(1, timing) for timing in THREE_BODY_TIMINGS]
    if b256:
        problems.append(three_body_time_problem(256, THREE_BODY_TIMINGS[-1]))
    for p in problems:
        print(f"- {p.name}: {p.description}")
    print(
        "Methods: dopri5 (alf for physode mali, sym12async for TDP's MALI); step cap "
        f"{TIME_STEP_CAP}. ms = median over 'runs' interleaved repeats; 1* = one counted "
        "run only (too slow to repeat within the budget). err y(T) = max |y(T) - y_ref(T)|, "
        "y_ref from dopri5 at rtol = atol = 1e-12: at one tolerance, methods of different "
        "order reach different accuracies (ALF, second order, takes more steps than dopri5 "
        "at a tolerance it meets, and ends closer to the reference)."
    )
    print(
        "overhead = the median over rounds of time / ((fwd + bwd evals) x f+VJP), f+VJP = "
        "median time of one f plus its VJP w.r.t. state and parameters, measured in each "
        "interleaved round in turn with the methods (the f+VJP column: its median). "
        "'overhead vs quiet' sets the median time against a quiet f+VJP instead: the smaller "
        "of two medians taken in a tight loop before and after the problem's runs (a best "
        "case the methods' runs do not see). A forward eval without VJP costs less, so 1 is "
        "not a floor for methods that evaluate f without a graph."
    )
    if not b256:
        print(
            "3body-b256-long skipped: ~46 000 evaluations per solve, minutes per method on 2 "
            "cores; pass --b256 to include it."
        )
    print(flush=True)
    methods = physode_methods() + comparison_methods(fixed=False)
    rows: list[TimeRow] = []
    fvjp: dict[str, float] = {}
    # Three interleaved repeats at least (unless a round takes over a minute): one
    # run per cell is at the mercy of whatever else the machine is doing.
    budget, lo, hi = (3.0, 0, 3) if quick else (40.0, 3, 7)
    for p in problems:
        before = f_vjp_time(p)
        rows += time_problem(p, methods, budget, lo, hi)
        fvjp[p.name] = min(before, f_vjp_time(p))  # two medians; the min is the least disturbed
    print(time_table(rows, fvjp))
    print()
    print(
        "Time ratios (physode aca, physode mali vs the named method): the median of the "
        "ratios within each interleaved round, and their range over the rounds."
    )
    print()
    print(ratio_table(rows, {p.name: len(p.t) for p in problems}), flush=True)


# ----------------------------------------------------------------------------- main


def print_header(tdp_note: str | None, conditions: str) -> None:
    tdq = torchdiffeq.__version__ if torchdiffeq is not None else "not installed"
    tode = torchode.__version__ if torchode is not None else "not installed"
    pack = "not available" if tdp_note else "1.0.1 (TorchDiffEqPack)"
    print(
        f"physode {physode.__version__}, torchdiffeq {tdq}, torchode {tode}, "
        f"TorchDiffEqPack {pack}, torch {torch.__version__}, "
        f"Python {platform.python_version()}, {platform.machine()}"
    )
    print(conditions)
    if torchdiffeq is None:
        print("NOTE: torchdiffeq could not be imported; its rows are skipped.")
    if torchode is None:
        print("NOTE: torchode could not be imported; its rows are skipped.")
    if tdp_note:
        print(f"NOTE: TorchDiffEqPack rows skipped ({tdp_note}).")
    else:
        print(
            "TDP = TorchDiffEqPack: time held in float32; odesolve returns t1 through its "
            "dense (cubic Hermite) output; odesolve_adjoint(_sym12) return the end state only."
        )
    print(flush=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer tolerances/steps/repeats")
    parser.add_argument("--tables", default="a,b,c", help="comma-separated subset of a,b,c")
    parser.add_argument(
        "--memory-dtype",
        choices=["float32", "float64"],
        default="float32",
        help="dtype of the memory table's MLP (float64 is ~5x slower here)",
    )
    parser.add_argument(
        "--b256", action="store_true", help="add the three-body batch-256 problem to table c"
    )
    parser.add_argument("--memory-worker", help=argparse.SUPPRESS)
    add_arguments(parser)
    args = parser.parse_args(argv)
    args.tables = {x.strip() for x in args.tables.split(",") if x.strip()}
    if not args.tables <= {"a", "b", "c"}:
        parser.error(f"--tables: expected letters among a,b,c, got {sorted(args.tables)}")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.memory_worker:
        print(json.dumps(memory_worker(json.loads(args.memory_worker))))
        return
    with applied(args) as conditions:
        run(args, conditions)


def run(args: argparse.Namespace, conditions: str) -> None:
    global tdp
    tdp_note = tdp_check()
    if tdp_note:
        tdp = None
    print_header(tdp_note, conditions)
    start = time.perf_counter()
    if "a" in args.tables:
        tols = [1e-3, 1e-7] if args.quick else [1e-3, 1e-5, 1e-7, 1e-9]
        run_accuracy(tols, check_reference=not args.quick)
    if "b" in args.tables:
        run_memory([10, 100] if args.quick else [10, 100, 1000], args.memory_dtype)
    if "c" in args.tables:
        run_time(args.quick, args.b256)
    print()
    print(f"total {time.perf_counter() - start:.0f} s; {conditions}")


if __name__ == "__main__":
    main()
