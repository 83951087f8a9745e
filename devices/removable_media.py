"""USB sticks and memory cards the system has mounted: where a mobile team may copy its bundle of dossiers.

Read from the kernel's table of mounts (``/proc/self/mounts``): a file system of the kinds a stick carries
(FAT, exFAT, NTFS, ext*), mounted under the folders where desktop and udisks mounts put removable media
(``/media/...``, ``/run/media/<user>/...``). Nothing here takes a path from a person: the staff page offers
these folders (and the station file's own export folder) to choose from.
"""
from pathlib import Path

MOUNTS = Path("/proc/self/mounts")
MEDIA_ROOTS = ("/media/", "/run/media/")
STICK_FILE_SYSTEMS = {"vfat", "exfat", "ntfs", "ntfs3", "fuseblk", "ext2", "ext3", "ext4"}


def _unescape(field: str) -> str:
    # The mounts table writes a space as \040, a tab as \011, a newline as \012 and "\" as \134.
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        field = field.replace(code, char)
    return field


def mounted_removable(mounts: Path = MOUNTS) -> list[Path]:
    """The mount points of removable media, in the order they were mounted; [] when none or unreadable."""
    try:
        lines = Path(mounts).read_text("utf-8", errors="replace").splitlines()
    except OSError:
        return []
    found = []
    for line in lines:
        fields = line.split()
        if len(fields) < 4:
            continue
        point, kind, options = _unescape(fields[1]), fields[2], fields[3].split(",")
        if kind in STICK_FILE_SYSTEMS and point.startswith(MEDIA_ROOTS) and "rw" in options:
            found.append(Path(point))
    return found
