"""Run directories that nothing corrupts: one writer (two real processes), honest resume,
nothing overwritten that the fit did not make, OS failures as one line, checkpoints with
a fallback, signals, and no leftovers."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

import physode
from physode.cli.main import main
from physode.training.checkpoints import CheckpointError, UntrustedCheckpoint, load_checkpoint

HERE = Path(__file__).resolve().parent

CONFIG = """\
data:
  path: sir.h5
  simulate: custom_systems.py:simulate
model:
  physics: {name: custom_systems.py:SIR, beta: 0.3, gamma: 0.2}
solver: {method: rk4, grad: direct, step_size: 0.5}
train: {epochs: EPOCHS, optimizer: adam, lr: 0.01}
"""


def folder_with(tmp_path: Path, epochs: int = 3, model: str = "SIR") -> Path:
    shutil.copy(HERE / "custom_systems.py", tmp_path / "custom_systems.py")
    text = CONFIG.replace("EPOCHS", str(epochs)).replace(":SIR,", f":{model},")
    (tmp_path / "fit.yaml").write_text(text)
    return tmp_path / "fit.yaml"


def run_cli(*args, env=None):
    return CliRunner(env=env).invoke(main, [str(a) for a in args])


def physode_process(*args) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "physode", *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(HERE)},
    )


def wait_for_rows(run: Path, proc: subprocess.Popen, rows: int) -> None:
    deadline = time.time() + 120
    csv = run / "metrics.csv"
    while time.time() < deadline:
        if csv.exists() and len(csv.read_text().splitlines()) > rows:
            return
        if proc.poll() is not None:
            pytest.fail(f"the fit ended early: {proc.stderr.read()}")
        time.sleep(0.05)
    pytest.fail("the fit wrote no rows in time")


def leftovers(folder: Path) -> list[Path]:
    return [p for p in folder.rglob(".*.tmp")]


# ---------------------------------------------------------------------------- one writer


def test_a_second_fit_of_a_run_directory_in_use_fails_at_once_naming_the_holder(tmp_path):
    config = folder_with(tmp_path, epochs=100_000)
    run = tmp_path / "run"
    first = physode_process("fit", config, "-o", run, "-q")
    try:
        wait_for_rows(run, first, 2)
        for extra in ([], ["--resume"]):
            tic = time.perf_counter()
            result = run_cli("fit", config, "-o", run, "-q", *extra)
            assert time.perf_counter() - tic < 30
            assert result.exit_code != 0
            assert f"in use by another fit (PID {first.pid})" in result.output
        rows = len((run / "metrics.csv").read_text().splitlines())
    finally:
        first.kill()
        first.wait()
    assert rows >= 3  # the first fit went on writing alone
    # The kernel released the dead holder's lock: the run resumes.
    result = run_cli("fit", config, "-o", run, "-q", "--resume", "--set", "train.epochs=1")
    assert "in use" not in result.output
    assert "train.epochs" in result.output  # refused as fewer epochs than done, not locked


# ---------------------------------------------------------------------------- what is not ours


def test_a_folder_of_other_files_is_not_overwritten(tmp_path):
    config = folder_with(tmp_path)
    before = config.read_text()
    result = run_cli("fit", config, "-o", tmp_path, "-q")
    assert result.exit_code != 0
    assert "holds files that are not a physode run (custom_systems.py, fit.yaml" in result.output
    assert config.read_text() == before
    assert not (tmp_path / "config.yaml").exists() and not (tmp_path / "checkpoints").exists()


def test_the_data_file_or_a_path_through_a_file_is_refused(tmp_path):
    config = folder_with(tmp_path)
    assert run_cli("fit", config, "-o", tmp_path / "a", "-q").exit_code == 0
    data = tmp_path / "sir.h5"
    before = data.read_bytes()
    result = run_cli("fit", config, "-o", data, "-q")
    assert result.exit_code != 0 and "sir.h5: is a file, not a folder" in result.output
    assert data.read_bytes() == before
    result = run_cli("fit", config, "-o", data / "run", "-q")
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert "a part of the path is a file, not a folder" in result.output


def test_a_failed_set_up_leaves_no_folder(tmp_path):
    config = folder_with(tmp_path)
    result = run_cli("fit", config, "-o", tmp_path / "new", "--set", "data.trajectories=[7]")
    assert result.exit_code != 0 and "data.trajectories: [7] out of range" in result.output
    assert not (tmp_path / "new").exists()


def _read_only_folder(path: Path):
    """``path`` made read-only for this process: a read-only bind mount where the machine
    allows (root ignores permission bits), else permission bits."""
    path.mkdir()
    if os.geteuid() != 0:
        path.chmod(0o555)
        return lambda: path.chmod(0o755)
    done = subprocess.run(
        ["mount", "--bind", "-o", "ro", str(path), str(path)], capture_output=True
    )
    if done.returncode != 0:
        return None
    return lambda: subprocess.run(["umount", str(path)], check=False)


def test_a_read_only_output_folder_is_one_line(tmp_path, monkeypatch):
    config = folder_with(tmp_path)
    target = tmp_path / "ro"
    undo = _read_only_folder(target)
    if undo is None:  # no mount here: the OS's refusal, simulated at the first write
        target.mkdir(exist_ok=True)
        real = os.open

        def refuse(path, flags, *args):
            if str(path).startswith(str(target)) and flags & os.O_CREAT:
                raise OSError(errno.EROFS, "Read-only file system", str(path))
            return real(path, flags, *args)

        monkeypatch.setattr(os, "open", refuse)
    try:
        result = run_cli("fit", config, "-o", target / "run", "-q")
    finally:
        if undo is not None:
            undo()
    assert result.exit_code != 0
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1
    assert "read-only file system" in result.output or "permission denied" in result.output
    assert str(target / "run") in result.output


@contextmanager
def small_filesystem(path: Path, size: str):
    """A tmpfs of ``size`` mounted at ``path``, or None where the machine does not allow it."""
    path.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True
    )
    try:
        yield path if done.returncode == 0 else None
    finally:
        if done.returncode == 0:
            subprocess.run(["umount", str(path)], check=False)


def test_a_full_disk_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    config = folder_with(tmp_path, epochs=40)
    # Plenty of room for the first epochs' checkpoints, then none: filled by the test.
    with small_filesystem(tmp_path / "disk", "2m") as disk:
        run = (disk or tmp_path) / "run"
        first = run_cli("fit", config, "-o", run, "-q", "--set", "train.epochs=2")
        assert first.exit_code == 0, first.output
        if disk is not None:
            ballast = disk / "ballast"
            free = shutil.disk_usage(disk).free
            ballast.write_bytes(b"\0" * (free - 4096))
        else:  # no mount here: the disk fills at the next checkpoint
            import physode._atomic as atomic

            real = atomic.os.replace

            def full(src, dst):
                if str(dst).endswith("last.pt"):
                    raise OSError(errno.ENOSPC, "No space left on device", str(src))
                return real(src, dst)

            monkeypatch.setattr(atomic.os, "replace", full)
        result = run_cli("fit", config, "-o", run, "-q", "--resume")
        assert result.exit_code != 0
        assert "no space left on device" in result.output
        assert "The last good checkpoint (epoch 2) is kept" in result.output
        assert "Traceback" not in result.output
        assert load_checkpoint(run / "checkpoints" / "last.pt")["epoch"] == 2
        assert leftovers(run) == []


# ---------------------------------------------------------------------------- checkpoints


@pytest.fixture
def three_epochs(tmp_path) -> tuple[Path, Path]:
    config = folder_with(tmp_path)
    run = tmp_path / "run"
    result = run_cli("fit", config, "-o", run, "-q")
    assert result.exit_code == 0, result.output
    return config, run


def test_the_previous_checkpoint_is_kept_and_used_when_the_last_is_truncated(three_epochs):
    config, run = three_epochs
    folder = run / "checkpoints"
    assert load_checkpoint(folder / "previous.pt")["epoch"] == 2
    data = (folder / "last.pt").read_bytes()
    (folder / "last.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"last\.pt: unreadable, truncated or corrupt"):
        load_checkpoint(folder / "last.pt")
    result = run_cli("evaluate", run)
    assert result.exit_code == 0, result.output
    assert "last.pt: unreadable, truncated or corrupt" in result.output
    assert "previous.pt (epoch 2) instead" in result.output
    result = run_cli("fit", config, "-o", run, "-q", "--resume")
    assert result.exit_code == 0, result.output
    assert load_checkpoint(folder / "last.pt")["epoch"] == 3
    (record,) = json.loads((run / "resumes.json").read_text())
    assert record == {**record, "after_epoch": 2, "from": "previous.pt"}


def test_a_tampered_checkpoint_is_untrusted_and_never_loaded(three_epochs, tmp_path):
    config, run = three_epochs
    folder = run / "checkpoints"
    torch.save(
        {"epoch": 3, "model": {}, "payload": tmp_path}, folder / "last.pt"
    )  # a Path: pickled code
    with pytest.raises(UntrustedCheckpoint):
        load_checkpoint(folder / "last.pt")
    for args in (["evaluate", run], ["fit", config, "-o", run, "-q", "--resume"]):
        result = run_cli(*args)
        assert result.exit_code != 0
        assert "untrusted: it holds objects other than tensors and plain data" in result.output
        assert "weights_only=False" not in result.output and "Traceback" not in result.output


def test_stale_temporary_files_are_removed(three_epochs):
    config, run = three_epochs
    stale = [run / "checkpoints" / ".last.pt.deadbeef.tmp", run / ".metrics.json.1234.tmp"]
    for p in stale:
        p.write_bytes(b"half a write")
    result = run_cli("fit", config, "-o", run, "-q", "--resume", "--set", "train.epochs=4")
    assert result.exit_code == 0, result.output
    assert leftovers(run) == []


def test_evaluate_names_its_result_after_the_checkpoint(three_epochs):
    _, run = three_epochs
    for which in ("best.pt", "last.pt"):
        assert run_cli("evaluate", run, "--checkpoint", which).exit_code == 0
    names = sorted(p.name for p in (run / "evaluations").iterdir())
    assert len(names) == 2 and names[0].endswith("-best.json") and names[1].endswith("-last.json")


def test_plot_of_a_corrupt_predictions_file_is_one_line(three_epochs):
    _, run = three_epochs
    (run / "predictions.nc").write_bytes(b"not netcdf at all")
    result = run_cli("plot", run)
    assert result.exit_code != 0
    assert "predictions.nc: cannot be read as a predictions dataset" in result.output
    assert "Traceback" not in result.output


def test_a_solver_failure_keeps_the_last_good_checkpoint(tmp_path):
    config = folder_with(tmp_path, epochs=3, model="FragileSIR")
    run = tmp_path / "run"
    first = run_cli("fit", config, "-o", run, "-q", "--set", "train.epochs=2")
    assert first.exit_code == 0, first.output
    result = run_cli("fit", config, "-o", run, "-q", "--resume", env={"SIR_BREAK": "1"})
    assert result.exit_code != 0
    assert "epoch 3: the solver failed" in result.output and "non-finite" in result.output
    assert "The last good checkpoint (epoch 2) is kept" in result.output
    assert "Traceback" not in result.output
    assert load_checkpoint(run / "checkpoints" / "last.pt")["epoch"] == 2


# ---------------------------------------------------------------------------- signals


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_stops_at_a_consistent_point_and_says_how_to_resume(tmp_path, sig, code):
    config = folder_with(tmp_path, epochs=100_000)
    run = tmp_path / "run"
    proc = physode_process("fit", config, "-o", run, "-q")
    wait_for_rows(run, proc, 3)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    name = signal.Signals(sig).name
    assert f"interrupted by {name} during epoch" in err
    assert f"Continue with: physode fit {config} -o {run} --resume" in err
    assert "Traceback" not in err and "Aborted" not in err
    saved = load_checkpoint(run / "checkpoints" / "last.pt")["epoch"]
    assert f"checkpoints/last.pt holds epoch {saved}" in err
    assert leftovers(run) == []
    rows = (run / "metrics.csv").read_text().strip().splitlines()
    assert int(rows[-1].split(",")[0]) >= saved


def test_physode_fit_raises_fit_interrupted_with_where_it_stood(tmp_path):
    from custom_systems import SIR, simulate

    from physode.datasets import write_trajectories
    from physode.training.interrupts import FitInterrupted
    from physode.training.runner import _Runner

    write_trajectories(tmp_path / "sir.h5", simulate())
    original = _Runner._checkpoint

    def checkpoint_then_signal(self, *args):
        original(self, *args)
        if self.state["epoch"] == 2:
            os.kill(os.getpid(), signal.SIGINT)

    _Runner._checkpoint = checkpoint_then_signal
    try:
        with pytest.raises(FitInterrupted) as info:
            physode.fit(
                SIR(), tmp_path / "sir.h5", train={"epochs": 5}, run_dir=tmp_path / "r", quiet=True
            )
    finally:
        _Runner._checkpoint = original
    # The signal came inside the checkpoint's critical section: it took effect after it.
    assert info.value.exit_code == 130 and info.value.saved_epoch == 2
    assert load_checkpoint(tmp_path / "r" / "checkpoints" / "last.pt")["epoch"] == 2
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # put back


def test_a_resume_on_a_changed_data_file_is_refused(three_epochs):
    config, run = three_epochs
    from custom_systems import simulate

    from physode.datasets import write_trajectories

    write_trajectories(config.parent / "sir.h5", simulate(seed=5))
    result = run_cli("fit", config, "-o", run, "-q", "--resume", "--set", "train.epochs=4")
    assert result.exit_code != 0
    assert "sir.h5 is not the file the run was fitted to (its content changed since)" in (
        result.output
    )
