"""Writing run files: one atomic writer that cleans up after itself and says what went wrong.

Every file a run must not leave half-written (checkpoints, ``config.yaml``, ``run.json``,
``metrics.json``, tables, cached mean images, pack manifests) goes through
:func:`write_atomic`: the bytes go to ``.<name>.tmp-<pid>`` beside the target, which is renamed
over it only when complete, so a reader (or a resumed run) sees the old file or the new one,
never a mix. When the write fails, the temporary file is removed at once (a full disk is not
kept full by our own leftovers) and the error becomes one :class:`WriteError` line: "disk full",
"read-only file system", "permission denied". A writer killed mid-write (``kill -9``) cannot
clean up; its ``.tmp-<pid>`` file is removed by the next write into that folder, and by
``zfnet train resume=`` in the folder it resumes from (:func:`remove_stale_temporaries`), once
no process of that id is alive.
"""
from __future__ import annotations

import errno
import io
import os
import re
import shutil
from pathlib import Path
from typing import BinaryIO, Callable, Union

Content = Union[bytes, str, Callable[[BinaryIO], None]]
_TMP = re.compile(r"^\..+\.tmp-(\d+)$")


class WriteError(OSError):
    """A run file could not be written (disk full, read-only, no permission); one line."""


def describe(err: OSError, path: Union[str, Path]) -> str:
    """One line for an ``OSError`` met while writing ``path``: what happened and what to do."""
    path = Path(path)
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        free = ""
        try:
            folder = next(p for p in [path, *path.parents] if p.exists())
            free = f", {shutil.disk_usage(folder).free / 2**20:.0f} MiB free there"
        except (OSError, StopIteration):
            pass
        return (f"cannot write {path}: disk full{free}; free some space or choose another "
                "output_root=")
    if err.errno == errno.EROFS:
        return f"cannot write {path}: read-only file system; choose a writable output_root="
    if err.errno in (errno.EACCES, errno.EPERM):
        return f"cannot write {path}: permission denied; choose a writable output_root="
    return f"cannot write {path}: {err.strerror or err}"


def _write(fd: int, data: bytes) -> int:
    """One ``os.write`` (the only place bytes leave; tests make it fail like a full disk)."""
    return os.write(fd, data)


class _Sink(io.RawIOBase):
    """A write-only file over a descriptor that remembers the first ``OSError``: ``torch.save``
    turns its writer's errors into a ``RuntimeError`` and the errno would be lost."""

    def __init__(self, fd: int) -> None:
        super().__init__()
        self.fd, self.error = fd, None

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        view = memoryview(data).cast("B")
        done = 0
        try:
            while done < len(view):  # os.write may write less than asked
                done += _write(self.fd, view[done:])
        except OSError as err:
            self.error = self.error or err
            raise
        return done


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def remove_stale_temporaries(folder: Union[str, Path]) -> list[Path]:
    """Remove the ``.<name>.tmp-<pid>`` files that :func:`write_atomic` writers left in
    ``folder`` when they were killed (no process ``pid`` alive). Returns what was removed."""
    removed = []
    try:
        entries = list(Path(folder).iterdir())
    except OSError:
        return removed
    for p in entries:
        m = _TMP.match(p.name)
        if m and int(m.group(1)) != os.getpid() and not _pid_alive(int(m.group(1))):
            try:
                p.unlink()
                removed.append(p)
            except OSError:
                pass
    return removed


def write_atomic(path: Union[str, Path], content: Content) -> Path:
    """Write ``content`` to ``path`` atomically.

    Args:
        path: the file; its folder is created if missing.
        content: bytes, text (UTF-8), or a function that writes into the binary file it is
            given (``lambda f: torch.save(state, f)``).

    Returns:
        ``path``.

    Raises:
        WriteError: the write failed (disk full, read-only file system, no permission, ...):
            one line; the temporary file is gone and an earlier ``path`` is untouched.

    Example:
        >>> import tempfile
        >>> p = write_atomic(Path(tempfile.mkdtemp()) / "run.json", '{"seed": 0}\\n')
        >>> p.read_text()
        '{"seed": 0}\\n'
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise WriteError(describe(err, path.parent)) from None
    remove_stale_temporaries(path.parent)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    sink = None
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        with _Sink(fd) as sink:
            try:
                if callable(content):
                    content(sink)
                else:
                    sink.write(content.encode() if isinstance(content, str) else content)
            finally:
                os.close(fd)
        os.replace(tmp, path)
    except BaseException as err:
        try:
            tmp.unlink()
        except OSError:
            pass
        cause = sink.error if sink is not None and sink.error is not None else err
        if isinstance(cause, OSError) and not isinstance(cause, WriteError):
            raise WriteError(describe(cause, path)) from None
        raise
    return path


def append_text(path: Union[str, Path], text: str) -> None:
    """Append ``text`` to ``path`` (a log such as ``metrics.jsonl`` or ``command.txt``); when
    the write fails the file is cut back to its old length, so no half line stays behind.

    Raises:
        WriteError: as :func:`write_atomic`.
    """
    path = Path(path)
    size = path.stat().st_size if path.exists() else 0
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    except OSError as err:
        raise WriteError(describe(err, path)) from None
    try:
        with _Sink(fd) as sink:
            sink.write(text.encode())
    except OSError as err:
        try:
            os.truncate(path, size)
        except OSError:
            pass
        raise WriteError(describe(err, path)) from None
    finally:
        os.close(fd)
