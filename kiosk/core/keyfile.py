"""Files that must survive a power cut whole: secret files (the payload key, the session key, the station's
and the central's private keys), made on first use and readable by their owner only, and small state files
replaced in one step (the incarnation marker, the central's code watermark).

The bytes always go to a temporary file that is fsynced first. A secret file is then linked into place
with ``os.link``, which fails when the file already exists: two processes starting at once both end up
using the first one's key, and a crash mid-write leaves no key file at all rather than a short one. A
state file is renamed over the old one (``write_durably``).
"""
import os
from pathlib import Path
from typing import Callable


def fsync_folder(folder: Path) -> None:
    """Make a rename or a link in ``folder`` survive a power cut."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def owned_like_folder(path: Path) -> None:
    """Run as root, give a new file the owner of its folder, so the station's own user can open it."""
    if os.geteuid() == 0:
        folder = path.parent.stat()
        os.chown(path, folder.st_uid, folder.st_gid)


def _write_synced(tmp: Path, data: bytes, mode: int) -> None:
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    owned_like_folder(tmp)


def write_durably(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Temporary file, fsync, rename, fsync of the folder: the file is either the old one or the new one."""
    path = Path(path)
    tmp = path.with_name(path.name + ".part")
    _write_synced(tmp, data, mode)
    os.replace(tmp, path)
    fsync_folder(path.parent)


def load_or_create(path: Path, make: Callable[[], bytes]) -> bytes:
    """The file's bytes; when it does not exist yet, ``make()``'s bytes written as described above."""
    path = Path(path)
    try:
        return path.read_bytes()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.part")
    try:
        _write_synced(tmp, make(), 0o600)
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass  # another process made it first: use theirs
    finally:
        tmp.unlink(missing_ok=True)
    fsync_folder(path.parent)
    return path.read_bytes()
