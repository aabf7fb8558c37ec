"""The one fit loop: stopping on convergence, resuming a stopped fit, and the evaluation
counts it reports."""

from __future__ import annotations

import csv
import json

import pytest
import torch
from custom_systems import SIR, simulate

import physode
from physode.datasets import write_trajectories
from physode.training.config import StopConfig
from physode.training.stopping import StopOnPlateau

SOLVER = {"method": "dopri5", "grad": "aca", "rtol": 1e-8, "atol": 1e-10}


@pytest.fixture
def data(tmp_path):
    path = tmp_path / "sir.h5"
    write_trajectories(path, simulate())
    return path


def _rows(run) -> list[dict]:
    with open(run / "metrics.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def test_the_rule_counts_calm_epochs_in_a_row():
    rule = StopOnPlateau(StopConfig(rtol=0.01, patience=2))
    losses = [1.0, 0.5, 0.499, 0.3, 0.2999, 0.29985]
    stops = [rule.update(k + 1, v) for k, v in enumerate(losses)]
    assert stops == [False, False, False, False, False, True] and rule.stopped_at == 6
    again = StopOnPlateau(StopConfig(rtol=0.01, patience=2))
    again.load_state_dict({"previous": 0.2999, "calm": 1, "stopped_at": None})
    assert again.update(6, 0.29985)  # resumed mid-way, it stops where the whole run does
    assert not StopOnPlateau(None).update(1, 1.0)


def test_a_converged_fit_stops_and_a_resume_of_it_trains_no_more(data, tmp_path):
    train = {"epochs": 10, "optimizer": "lbfgs", "lr": 1.0, "stop": {"rtol": 1e-9, "patience": 1}}
    run = tmp_path / "run"
    first = physode.fit(SIR(), data, solver=SOLVER, train=train, run_dir=run, quiet=True)
    assert first.epochs < 10
    assert first.metrics["stopped_early"] == {
        "epoch": first.epochs,
        "reason": "converged: the loss changed by at most rtol=1e-09 (relative) for 1 epoch "
        "in a row",
    }
    assert len(_rows(run)) == first.epochs
    ckpt = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert ckpt["epoch"] == first.epochs and ckpt["stop"]["stopped_at"] == first.epochs
    again = physode.fit(
        SIR(), data, solver=SOLVER, train=train, run_dir=run, resume=True, quiet=True
    )
    assert again.epochs == first.epochs and again.parameters == first.parameters
    assert len(_rows(run)) == first.epochs


def test_a_fit_resumed_before_its_stop_stops_where_the_whole_fit_does(data, tmp_path):
    train = {"epochs": 40, "optimizer": "adam", "lr": 0.02, "stop": {"rtol": 0.04, "patience": 2}}
    whole = physode.fit(SIR(), data, solver=SOLVER, train=train, run_dir=tmp_path / "a", quiet=True)
    assert 4 < whole.epochs < 40
    part = {**train, "epochs": whole.epochs - 1}
    physode.fit(SIR(), data, solver=SOLVER, train=part, run_dir=tmp_path / "b", quiet=True)
    resumed = physode.fit(
        SIR(), data, solver=SOLVER, train=train, run_dir=tmp_path / "b", resume=True, quiet=True
    )
    assert resumed.epochs == whole.epochs and resumed.parameters == whole.parameters


@pytest.mark.parametrize("grad", ["direct", "adjoint", "aca"])
def test_the_counted_evaluations_are_the_solvers(data, tmp_path, grad):
    # One Adam step on the whole batch: one solve and one backward pass, whose counts the
    # solver reports itself.
    model = SIR()
    solver = {**SOLVER, "grad": grad}
    run = tmp_path / grad
    physode.fit(
        model, data, solver=solver, train={"epochs": 1, "lr": 1e-3}, run_dir=run, quiet=True
    )
    (row,) = _rows(run)
    fresh = SIR().double()
    fit_end = 20.0
    from physode.datasets import read_trajectories

    d = read_trajectories(data)
    t = torch.as_tensor(d.time[d.time <= fit_end])
    y0 = torch.as_tensor(d.state[:, 0])
    sol = physode.solve(fresh, y0, t, **solver)
    target = torch.as_tensor(d.state[:, : len(t)]).transpose(0, 1)
    (sol.ys - target).square().mean().backward()  # the fit's loss: the adjoint's steps follow it
    assert int(row["n_f_evals"]) == sol.stats.n_f_evals
    assert int(row["n_f_evals_backward"]) == sol.stats.n_f_evals_backward
    assert (int(row["n_f_evals_backward"]) == 0) == (grad == "direct")
    assert json.loads((run / "metrics.json").read_text())["epochs"] == 1
