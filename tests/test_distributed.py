"""Training across processes: two gloo processes on the CPU, rendezvous through a file.

DistributedDataParallel must average the gradients of every gradient method
(they hand parameter gradients back through autograd, never through ``p.grad``),
and a two-process ``fit`` must end where a single process on the same global
batch ends.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from physode.models import MLP, Hybrid, NBodyGravity
from physode.training.distributed import Distributed, wrap
from physode.training.problem import TrainedSystem

F64 = torch.float64
WORLD = 2
# Fixed steps: adaptive step sizes would depend on which trajectories share a solve.
METHODS = {
    "direct": {"method": "rk4", "step_size": 0.01},
    "adjoint": {"method": "rk4", "step_size": 0.01},
    "aca": {"method": "rk4", "step_size": 0.01},
    "mali": {"method": "alf", "step_size": 0.01},
}


def _system() -> TrainedSystem:
    torch.manual_seed(0)
    physics = NBodyGravity(3, dim=2, G=1.0, masses=[1.1, 0.9, 1.0], softening=0.1)
    neural = MLP(12, 6, hidden=(8,))  # not zero-initialised, so its gradients are real
    return TrainedSystem(Hybrid(physics, neural), None).to(F64)


def _data(n: int = 5) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    state = torch.randn(n, 1, 12, generator=gen, dtype=F64)
    times = torch.linspace(0.0, 0.3, 4, dtype=F64)
    target = torch.randn(n, 4, 12, generator=gen, dtype=F64)
    return state, times, target


def _gradients(module, ctx: Distributed, options: dict) -> dict[str, torch.Tensor]:
    state, times, target = _data()
    rows = torch.arange(state.shape[0])
    mine = ctx.shard(rows)
    pred = module(state, mine, times, {"grad": options["grad"], **METHODS[options["grad"]]})
    loss = (pred - target[mine]).square().mean()
    # The fit's weighting: DDP's average of the ranks' gradients is the global batch's.
    (loss * len(mine) * ctx.world / len(rows)).backward()
    inner = module.module if hasattr(module, "module") else module
    return {name: p.grad.clone() for name, p in inner.named_parameters()}


def _worker(rank: int, init: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=WORLD)
    try:
        ctx = Distributed(torch.device("cpu"), rank, WORLD)
        for grad in METHODS:  # one DDP model per method, as a fit would have
            grads = _gradients(wrap(_system(), ctx), ctx, {"grad": grad})
            torch.save(grads, f"{out}/{grad}-rank{rank}.pt")
        dist.barrier()  # neither rank tears the group down while the other still uses it
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def ddp_gradients(tmp_path_factory) -> Path:
    """Both ranks' gradients for every method (one pair of processes for all)."""
    out = tmp_path_factory.mktemp("ddp")
    mp.spawn(_worker, args=(f"file://{out / 'rendezvous'}", str(out)), nprocs=WORLD, join=True)
    return out


@pytest.mark.parametrize("grad", list(METHODS))
def test_ddp_gradients_equal_the_single_process_gradients(ddp_gradients, grad):
    reference = _gradients(_system(), Distributed(torch.device("cpu")), {"grad": grad})
    for rank in range(WORLD):
        got = torch.load(ddp_gradients / f"{grad}-rank{rank}.pt", weights_only=True)
        assert got.keys() == reference.keys()
        for name, g in reference.items():
            # 5 trajectories: the ranks hold 3 and 2, so the weighting matters.
            assert torch.linalg.norm(g) > 0, name
            torch.testing.assert_close(got[name], g, rtol=1e-12, atol=1e-14, msg=name)


# ---------------------------------------------------------------------------- physode fit

CONFIG = """
data:
  path: {data}
  simulate: threebody
  simulate_options: {{n_times: 61, n_trajectories: 5, seed: 3}}
  fit_window: [0.0, 0.3]
model:
  physics: {{name: nbody, n_bodies: 3, dim: 3, G: 1.451368633, masses: [1.0, 1.0, 1.0]}}
  neural: {{hidden: [8], activation: tanh}}
solver: {{method: rk4, grad: {grad}, step_size: 0.005}}
train: {{epochs: 3, optimizer: adam, lr: 0.02, seed: 0, batch_size: 4}}
"""


def _write_config(folder: Path, grad: str = "aca") -> Path:
    path = folder / "fit.yaml"
    path.write_text(CONFIG.format(data=folder / "data.h5", grad=grad))
    return path


def _fit_worker(rank: int, init: str, config: str, run: str, out: str, resume: bool) -> None:
    from physode.training import load_config
    from physode.training.runner import FitError, fit

    os.environ.update(RANK=str(rank), WORLD_SIZE=str(WORLD), LOCAL_RANK=str(rank))
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=WORLD)
    try:
        fit(load_config(config), Path(run), resume=resume, stream=None)
        message = "ok"
    except FitError as exc:
        message = str(exc)
    Path(out, f"rank{rank}.txt").write_text(message)
    # Skip the interpreter's teardown: in about 1 of 50 loaded runs, gloo's C++ side aborts
    # there ("terminate called without an active exception", no Python frame left) after
    # both ranks have returned from the fit and written their messages.
    os._exit(0)


def _spawn_fit(tmp_path: Path, config: Path, run: Path, resume: bool = False) -> list[str]:
    init = f"file://{tmp_path / ('rendezvous-resume' if resume else 'rendezvous-fit')}"
    args = (init, str(config), str(run), str(tmp_path), resume)
    mp.spawn(_fit_worker, args=args, nprocs=WORLD)
    return [(tmp_path / f"rank{r}.txt").read_text() for r in range(WORLD)]


def test_two_process_fit_ends_where_one_process_ends(tmp_path):
    from physode.training import load_config
    from physode.training.runner import fit

    config = _write_config(tmp_path)
    single = fit(load_config(config), tmp_path / "one", stream=None)
    assert _spawn_fit(tmp_path, config, tmp_path / "two") == ["ok", "ok"]
    params = json.loads((tmp_path / "two" / "params.json").read_text())
    torch.testing.assert_close(
        torch.tensor(params["masses"]),
        torch.tensor(single.parameters["masses"]),
        rtol=1e-12,
        atol=0,
    )
    assert params["masses"] != [1.0, 1.0, 1.0]  # it did train
    one = torch.load(tmp_path / "one" / "checkpoints" / "last.pt", weights_only=True)
    two = torch.load(tmp_path / "two" / "checkpoints" / "last.pt", weights_only=True)
    for name, value in one["model"].items():
        torch.testing.assert_close(two["model"][name], value, rtol=1e-10, atol=1e-13)
    # Rank 0 alone wrote the run directory, and the epochs' rows are the global ones.
    rows = (tmp_path / "two" / "metrics.csv").read_text().strip().splitlines()
    assert len(rows) == 1 + 3
    assert not list(tmp_path.glob("runs"))


def test_two_process_resume_ends_where_one_uninterrupted_process_ends(tmp_path):
    from physode.training import load_config
    from physode.training.runner import fit

    config = _write_config(tmp_path)
    single = fit(load_config(config), tmp_path / "one", stream=None)
    short = tmp_path / "short.yaml"
    short.write_text(config.read_text().replace("epochs: 3", "epochs: 2"))
    assert _spawn_fit(tmp_path, short, tmp_path / "two") == ["ok", "ok"]
    assert _spawn_fit(tmp_path, config, tmp_path / "two", resume=True) == ["ok", "ok"]
    params = json.loads((tmp_path / "two" / "params.json").read_text())
    expected = torch.tensor(single.parameters["masses"])
    torch.testing.assert_close(torch.tensor(params["masses"]), expected, rtol=1e-12, atol=0)
    rows = (tmp_path / "two" / "metrics.csv").read_text().strip().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["1", "2", "3"]


def test_a_failing_rank_stops_every_rank_with_its_error(tmp_path):
    # Trajectory 1 (rank 1's share of the first batch) starts with two bodies at the
    # same place: its accelerations are not finite and its solve fails.
    import h5py

    config = _write_config(tmp_path)
    from physode.training import load_config
    from physode.training.problem import load_problem

    load_problem(load_config(config), F64, torch.device("cpu"))  # simulate the file
    with h5py.File(tmp_path / "data.h5", "r+") as f:
        state = f["state"][...]
        state[:, 0, 3:6] = state[:, 0, 0:3]
        f["state"][...] = state
    config.write_text(config.read_text().replace("batch_size: 4", "batch_size: 5"))
    messages = _spawn_fit(tmp_path, config, tmp_path / "run")
    for message in messages:
        assert "epoch 1" in message and "rank" in message, message
        assert "not finite" in message or "non-finite" in message, message
