"""Files that must survive a power cut whole: secret files (the payload key, the session key, the station's
and the central's private keys), made on first use and readable by their owner only, and small state files
replaced in one step (the incarnation marker, the central's code watermark).

The bytes always go to a temporary file that is fsynced first. A secret file is then linked into place
with ``os.link``, which fails when the file already exists: two processes starting at once both end up
using the first one's key, and a crash mid-write leaves no key file at all rather than a short one. A
state file is renamed over the old one (``write_durably``).

Everything the station keeps is its owner's only: files 0600 and folders 0700 whatever the umask (made so
with ``os.open``/``mkdir`` modes, SQLite's files by ``kiosk.core.db.connect``), and what an older release
or another tool left wider is narrowed when the station starts (``keep_private``).
"""
import os
import stat
from pathlib import Path
from typing import Callable

FILE_MODE = 0o600    # the station's files: read and written by its own user only
FOLDER_MODE = 0o700  # its folders: entered by its own user only


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
    private_folder(path.parent)
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


def private_folder(path: Path) -> Path:
    """``path`` as a folder only its owner may enter: made 0700 (its missing parents with the usual mode:
    they are not the station's), or narrowed to it when it is there already with more."""
    path = Path(path)
    path.mkdir(mode=FOLDER_MODE, parents=True, exist_ok=True)
    _narrow(path, path.stat(follow_symlinks=False))
    return path


def _narrow(path: Path, info: os.stat_result) -> bool:
    """Take group's and others' rights away from one file or folder of ours; True when it had any."""
    if not info.st_mode & 0o077 or info.st_uid != os.geteuid() or stat.S_ISLNK(info.st_mode):
        return False
    try:
        os.chmod(path, stat.S_IMODE(info.st_mode) & 0o700)
    except OSError:  # a read-only folder: the health check says so
        return False
    return True


def keep_private(folder: Path) -> int:
    """Narrow the data folder, its subfolders and every file in them to their owner (what an older release,
    a copy or a restore left 0644 or 0755), at start; symbolic links are not followed. Returns how many
    were narrowed."""
    folder = Path(folder)
    paths = [folder]
    for root, folders, files in os.walk(folder):
        paths += [Path(root, name) for name in folders + files]
    narrowed = 0
    for path in paths:
        try:
            narrowed += _narrow(path, path.stat(follow_symlinks=False))
        except FileNotFoundError:  # gone meanwhile (a probe, a temporary file)
            continue
    return narrowed
