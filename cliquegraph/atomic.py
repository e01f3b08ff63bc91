"""Files written whole or not at all: a temp file beside the target, then a rename.

Readers (and a run killed mid-write) see the old file or the new one, never half of one. The
new file keeps the mode of the one it replaces; a new file gets the umask's (not mkstemp's
0600). Torch-free: the CLI's `fmt --write` uses it too.

A failed write raises OSError whatever the writer raised: torch's zip writer reports a full
disk as a RuntimeError ("[enforce fail at inline_container.cc] unexpected pos ..."), which is
turned into ENOSPC naming the file system when that file system is (nearly) full.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile

TEMP_PREFIX = ".tmp-"
# A write that failed with less than this free was a full disk, whatever the writer said.
_NEARLY_FULL = 16 << 20


def write_atomic(path, write) -> None:
    """Create `path` by calling `write(tmp_path)`, then renaming tmp_path over it."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix="-" + os.path.basename(path),
                               dir=folder)
    os.close(fd)
    try:
        try:
            write(tmp)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise _no_space(path) from None
            raise
        except RuntimeError as exc:
            raise _write_failed(path, exc) from None
        if os.path.exists(path):
            shutil.copymode(path, tmp)
        else:
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_text_atomic(path, text: str) -> None:
    def write(tmp):
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
    write_atomic(path, write)


def stale_temps(folder, names) -> list:
    """Temp files that write_atomic left in `folder` for one of `names` (a writer killed with
    SIGKILL cannot remove its own)."""
    try:
        entries = os.listdir(folder)
    except OSError:
        return []
    suffixes = tuple("-" + n for n in names)
    return sorted(os.path.join(folder, e) for e in entries
                  if e.startswith(TEMP_PREFIX) and e.endswith(suffixes))


def _mount_point(path: str) -> str:
    path = os.path.dirname(os.path.abspath(path))
    while not os.path.ismount(path):
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    return path


def _no_space(path: str) -> OSError:
    return OSError(errno.ENOSPC, f"No space left on device (the file system at "
                                 f"{_mount_point(path)} is full) writing {path}")


def _write_failed(path: str, exc: Exception) -> OSError:
    try:
        free = shutil.disk_usage(os.path.dirname(os.path.abspath(path))).free
    except OSError:
        free = None
    if free is not None and free < _NEARLY_FULL:
        return _no_space(path)
    first = (str(exc).splitlines() or [type(exc).__name__])[0]
    return OSError(errno.EIO, f"writing {path} failed ({first})")
