"""An unnamed file holding given bytes, for a pipeline's here-document stdin."""

from __future__ import annotations

import os
import sys
import tempfile

__all__ = ["memory_file"]


def _new_unnamed() -> int:
    if sys.platform == "linux":
        return os.memfd_create("anyio_proc-stdin", os.MFD_CLOEXEC)
    fd, path = tempfile.mkstemp(prefix="anyio_proc-stdin-")
    os.unlink(path)  # unnamed from here on, as a memfd is
    return fd


def memory_file(data: bytes) -> int:
    """An fd of an unnamed file holding ``data``, positioned at its start."""
    fd = _new_unnamed()
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.lseek(fd, 0, os.SEEK_SET)
    except BaseException:
        os.close(fd)
        raise
    return fd
