"""Secret files (the payload key, the session key, the station's and the central's private keys): made on
first use, readable by their owner only, and never seen half-written.

The bytes are written to a temporary file and fsynced, then linked into place with ``os.link``, which
fails when the file already exists: two processes starting at once both end up using the first one's key,
and a crash mid-write leaves no key file at all rather than a short one.
"""
import os
from pathlib import Path
from typing import Callable


def load_or_create(path: Path, make: Callable[[], bytes]) -> bytes:
    """The file's bytes; when it does not exist yet, ``make()``'s bytes written as described above."""
    path = Path(path)
    try:
        return path.read_bytes()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.part")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(make())
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass  # another process made it first: use theirs
    finally:
        tmp.unlink(missing_ok=True)
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)
    return path.read_bytes()
