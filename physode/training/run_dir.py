"""The run directory of one fit: one writer at a time, nothing overwritten that the fit
did not create, nothing left behind by a set-up that failed.

- An OS lock (``fcntl.flock`` on ``.lock``; the kernel releases it when the
  process dies, however it dies) is taken before anything is written; a second
  fit or resume of the same directory fails at once, naming the holder's PID.
- A folder is a run directory when it holds the marker ``.physode-run``
  (written when a fit starts) or a ``checkpoints/last.pt``. A folder that holds
  other files and is not one is refused: ``-o .`` beside the user's config does
  not overwrite it.
- Temporary files of writes that a kill interrupted (``.<name>.<id>.tmp``) are
  removed when the lock is taken (no other writer can be alive then).
- A fit whose set-up fails before its first write leaves no folder it created.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

from .._atomic import write_text
from .checkpoints import LAST

try:  # POSIX; elsewhere a run directory is not locked
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

__all__ = ["MARKER", "RunDirectory", "RunDirectoryError", "os_reason"]

MARKER = ".physode-run"
LOCK = ".lock"


class RunDirectoryError(RuntimeError):
    """The run directory cannot be used (in use, not a folder, not a run directory, ...)."""


def os_reason(exc: OSError) -> str:
    """``"<path>: <reason>"`` for an OS error, in words a user acts on."""
    words = {
        errno.EROFS: "read-only file system",
        errno.EACCES: "permission denied",
        errno.EPERM: "operation not permitted",
        errno.ENOSPC: "no space left on device",
        errno.EDQUOT: "disk quota exceeded",
        errno.ENOTDIR: "a part of the path is a file, not a folder",
        errno.EISDIR: "is a folder, not a file",
        errno.ENOENT: "no such file or folder",
        errno.EEXIST: "already exists",
    }
    reason = words.get(exc.errno, (exc.strerror or str(exc)).lower())
    where = exc.filename if exc.filename is not None else "?"
    return f"{where}: {reason}"


def _stale_temporaries(folder: Path) -> list[Path]:
    return [p for p in folder.rglob(".*.tmp") if p.is_file()]


class RunDirectory:
    """A locked run directory; use :meth:`open`, then :meth:`start` once the fit is known
    to start, and :meth:`release` at the end, however the fit ends."""

    def __init__(self, path: Path, created: bool, lock_fd: int | None) -> None:
        self.path, self.created, self._fd = path, created, lock_fd
        self.started = False

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @classmethod
    def open(cls, path: Path, *, resume: bool) -> RunDirectory:
        """Lock ``path`` (creating it if missing) and check that it suits a new fit or a resume.

        Raises:
            RunDirectoryError: in use by another process, not a folder, holds files
                of something else, holds a fit (without ``resume``) or none (with it),
                or cannot be created or locked (the path and the OS's reason).
        """
        path = Path(path)
        if path.exists() and not path.is_dir():
            raise RunDirectoryError(f"{path}: is a file, not a folder; choose another -o")
        created = not path.exists()
        try:
            path.mkdir(parents=True, exist_ok=True)
            fd = os.open(path / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise RunDirectoryError(f"cannot create the run directory: {os_reason(exc)}") from None
        run = cls(path, created, fd)
        try:
            run._lock()
            run._check(resume)
        except BaseException:
            run.release()
            raise
        for tmp in _stale_temporaries(path):
            tmp.unlink(missing_ok=True)
        return run

    def _lock(self) -> None:
        if fcntl is None:  # pragma: no cover
            return
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(self._fd, 64, 0).decode(errors="replace").strip() or "unknown"
            raise RunDirectoryError(
                f"{self.path}: in use by another fit (PID {holder}); wait for it to end, or "
                "choose another run directory with -o"
            ) from None
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, f"{os.getpid()}\n".encode(), 0)

    def is_run(self) -> bool:
        return (self.path / MARKER).exists() or (self.checkpoints / LAST).exists()

    def _check(self, resume: bool) -> None:
        has_fit = any((self.checkpoints / name).exists() for name in (LAST, "previous.pt"))
        if resume:
            if not has_fit:
                raise RunDirectoryError(
                    f"--resume: {self.path} holds no checkpoint ({self.checkpoints / LAST} "
                    "is missing)"
                )
            return
        if has_fit:
            raise RunDirectoryError(
                f"{self.path} already holds a fit (checkpoints/{LAST}); pass --resume to "
                "continue it, or choose another run directory with -o"
            )
        others = sorted(p.name for p in self.path.iterdir() if p.name not in (LOCK, MARKER))
        if others and not self.is_run():
            shown = ", ".join(others[:5]) + (", ..." if len(others) > 5 else "")
            raise RunDirectoryError(
                f"{self.path}: holds files that are not a physode run ({shown}); a fit "
                "writes only into a new or empty folder or its own run directory: choose "
                "another -o"
            )

    def start(self) -> None:
        """Mark the folder as a run directory: the fit is known to start."""
        if not (self.path / MARKER).exists():
            write_text(self.path / MARKER, "a physode run directory\n")
        self.checkpoints.mkdir(exist_ok=True)
        self.started = True

    def release(self) -> None:
        """Release the lock; and when the fit never started (its set-up failed), remove
        the folder if this fit created it."""
        self.close()
        if self.created and not self.started:
            shutil.rmtree(self.path, ignore_errors=True)

    def close(self) -> None:
        """Release the lock (the ``.lock`` file stays: removing it would race a waiter)."""
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None
