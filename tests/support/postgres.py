"""A throwaway PostgreSQL server for the central's tests and benchmarks."""
import os
import shutil
import subprocess
import tempfile
from contextlib import contextmanager
from pathlib import Path

from tests.support.fake_printer import unused_port


@contextmanager
def throwaway_postgres(fsync: bool = True, max_connections: int = 200):
    """A PostgreSQL URL: $DVC_TEST_POSTGRES_URL when set, else a server started from Debian's postgresql
    package (installed by `make test`) for the duration, else None. Tests turn ``fsync`` off for speed; the
    benchmarks keep it on, to measure what a province's server does for a dossier."""
    url = os.environ.get("DVC_TEST_POSTGRES_URL")
    if url:
        yield url
        return
    binaries = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if not binaries:
        yield None
        return
    bin_dir = binaries[-1].parent
    # Outside pytest's own temporary folder, which only root may enter.
    folder = Path(tempfile.mkdtemp(prefix="dvc-postgres-"))
    # PostgreSQL refuses to run as root: as root, run it as the package's "postgres" user.
    as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if as_user:
        shutil.chown(folder, "postgres", "postgres")
    port = unused_port()
    data = folder / "data"
    subprocess.run(as_user + [str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
                              "--no-sync"], check=True, capture_output=True)
    options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c max_connections={max_connections}"
    subprocess.run(as_user + [str(bin_dir / "pg_ctl"), "-D", str(data), "-w", "-l", str(folder / "log"),
                              "-o", options + ("" if fsync else " -c fsync=off"), "start"],
                   check=True, capture_output=True)
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(as_user + [str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                       capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)
