"""Files written whole or not at all: a temp file beside the target, then a rename.

Readers (and a run killed mid-write) see the old file or the new one, never half of one. The
new file keeps the mode of the one it replaces; a new file gets the umask's (not mkstemp's
0600). Torch-free: the CLI's `fmt --write` uses it too.
"""

from __future__ import annotations

import os
import shutil
import tempfile


def write_atomic(path, write) -> None:
    """Create `path` by calling `write(tmp_path)`, then renaming tmp_path over it."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix="-" + os.path.basename(path), dir=folder)
    os.close(fd)
    try:
        write(tmp)
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
