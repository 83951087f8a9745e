"""A real small filesystem for the station-health tests: a tmpfs of a few hundred KiB that the test mounts
and unmounts itself (root only; skipped with the reason elsewhere), filled to a chosen free space by a
ballast file, and remounted read-only on demand. Not a mock: SQLite, the WAL and the log meet the kernel's
own ENOSPC and EROFS."""
import contextlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest

MOUNT = shutil.which("mount")


def can_mount() -> bool:
    return os.geteuid() == 0 and MOUNT is not None


needs_mount = pytest.mark.skipif(not can_mount(), reason="mounting a tmpfs needs root (the CI machine is root)")


class SmallDisk:
    """A mounted tmpfs at ``path`` of ``size_kib``; ``fill_to(free_kib)`` leaves that much free, ``free()``
    gives it back, ``read_only()`` / ``writable()`` remount it."""

    def __init__(self, path: Path, size_kib: int):
        self.path, self.size_kib = Path(path), size_kib
        self.ballast = self.path / ".ballast"

    def mount(self) -> "SmallDisk":
        self.path.mkdir(parents=True, exist_ok=True)
        subprocess.run([MOUNT, "-t", "tmpfs", "-o", f"size={self.size_kib}k,mode=0755", "tmpfs", str(self.path)],
                       check=True, capture_output=True)
        return self

    def unmount(self) -> None:
        subprocess.run(["umount", "-l", str(self.path)], capture_output=True)

    def free_kib(self) -> int:
        stat = os.statvfs(self.path)
        return stat.f_bavail * stat.f_frsize // 1024

    def fill_to(self, free_kib: int) -> None:
        """Grow (or shrink) the ballast so that about ``free_kib`` KiB stay free."""
        current = self.ballast.stat().st_size if self.ballast.exists() else 0
        target = max(0, current + (self.free_kib() - free_kib) * 1024)
        with open(self.ballast, "wb", buffering=0) as f:  # unbuffered: a full disk stops a write, not the close
            written = 0
            chunk = b"\0" * 4096
            try:
                while written < target:
                    written += f.write(chunk[: min(4096, target - written)])
            except OSError:  # the disk is full: as full as it gets
                pass

    def free(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.ballast.unlink()

    def read_only(self) -> None:
        subprocess.run([MOUNT, "-o", "remount,ro", str(self.path)], check=True, capture_output=True)

    def writable(self) -> None:
        subprocess.run([MOUNT, "-o", "remount,rw", str(self.path)], check=True, capture_output=True)


@pytest.fixture
def small_disk(tmp_path):
    """``small_disk(size_kib)`` mounts a tmpfs of that size under the test's folder; unmounted after."""
    disks = []

    def make(size_kib: int = 2048) -> SmallDisk:
        if not can_mount():
            pytest.skip("mounting a tmpfs needs root")
        disk = SmallDisk(tmp_path / f"disk{len(disks)}", size_kib).mount()
        disks.append(disk)
        return disk
    yield make
    for disk in disks:
        with contextlib.suppress(Exception):
            disk.writable()
        disk.unmount()
