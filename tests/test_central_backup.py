"""`kiosk central backup`, `restore` and `mark-restored` through the real command: after a restore the
store's generation is one higher (so stations resend what it lost) and no official code is issued twice,
not even one issued after the backup was taken; SQLite, and PostgreSQL by the documented procedure."""
import json
import shutil
import subprocess
import tarfile
import uuid

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from kiosk.core import tracking_code
from sync.central import open_central
from sync.central_backup import pg_command
from sync.central_cli import central as central_group
from sync.central_store import CODE_BLOCK
from sync.keys import public_b64

from .test_central import empty_postgres  # noqa: F401  (the fixture)

_numbers = iter(range(1, 10_000))


def receive(central, n):
    """n new submissions from station K01; their official codes."""
    return [central.store.receive("K01", str(uuid.uuid4()), "ab" * 32, "{}",
                                  tracking_code.make("K01", "261128", next(_numbers)), "1.004884").central_code
            for _ in range(n)]


def started(data, database=None):
    central = open_central(data, database)
    central.store.enrol("K01", public_b64(Ed25519PrivateKey.generate()))
    return central


def cli(*args, ok=True):
    result = CliRunner().invoke(central_group, list(map(str, args)))
    assert (result.exit_code == 0) == ok, result.output
    return result.output


@pytest.mark.parametrize("after_backup", [3, 3 * CODE_BLOCK], ids=["few", "enough-for-the-store-to-notice"])
def test_sqlite_restore_raises_the_generation_once_and_never_reissues_a_code(tmp_path, after_backup):
    data = tmp_path / "central"
    central = started(data)
    issued = receive(central, 3)
    generation = central.store.identity()["generation"]
    out = cli("backup", "--data", data, tmp_path)
    assert "Backed up the central" in out and "3 submissions" in out and "rsync" in out
    (archive,) = tmp_path.glob("central-*.tar.gz")
    assert archive.stat().st_mode & 0o777 == 0o600
    with tarfile.open(archive) as tar:
        assert sorted(tar.getnames()) == ["central-catalog.ed25519", "central-documents.key", "central.ed25519",
                                          "central.sqlite3", "central.x25519", "manifest.json"]
    issued += receive(central, after_backup)  # lost by the restore, but given out
    central.store.close()
    reserved = json.loads((data / "code-watermark.json").read_text())["reserved"]

    out = cli("restore", "--data", data, archive)
    assert f"new generation {generation + 1}" in out and "kept" in out
    assert list(data.glob("central.sqlite3.before-restore-*"))
    reopened = open_central(data)
    assert reopened.store.identity()["generation"] == generation + 1  # raised once, found out at start or not
    assert reopened.store.count() == 3
    (new_code,) = receive(reopened, 1)
    assert new_code not in issued
    after = json.loads((data / "code-watermark.json").read_text())["reserved"]
    assert all(after[day] >= last for day, last in reserved.items())  # the watermark was not put back
    reopened.store.close()


def test_restore_refuses_a_damaged_backup_or_a_running_central(tmp_path):
    data = tmp_path / "central"
    central = started(data)
    receive(central, 2)
    cli("backup", "--data", data, tmp_path / "c.tar.gz")
    damaged = bytearray((tmp_path / "c.tar.gz").read_bytes())
    damaged[len(damaged) // 2] ^= 0xFF
    (tmp_path / "d.tar.gz").write_bytes(bytes(damaged))
    central.store.close()
    before = (data / "central.sqlite3").read_bytes()
    assert "damaged" in cli("restore", "--data", data, tmp_path / "d.tar.gz", ok=False)
    running = subprocess.Popen(["python3", "-c", "import sqlite3, sys, time; c = sqlite3.connect(sys.argv[1]); "
                                "c.execute('SELECT 1 FROM submissions'); print(1, flush=True); time.sleep(60)",
                                str(data / "central.sqlite3")], stdout=subprocess.PIPE, text=True)
    try:
        running.stdout.readline()
        assert "stop it first" in cli("restore", "--data", data, tmp_path / "c.tar.gz", ok=False)
    finally:
        running.kill()
        running.wait()
    assert (data / "central.sqlite3").read_bytes() == before
    assert "pg_restore" in cli("restore", "--data", data, "--db", "postgresql://x@127.0.0.1/x",
                               tmp_path / "c.tar.gz", ok=False)


def test_mark_restored_after_a_database_put_back_by_hand(tmp_path):
    data = tmp_path / "central"
    central = started(data)
    issued = receive(central, 2)
    central.store.close()
    shutil.copy(data / "central.sqlite3", tmp_path / "copy.sqlite3")  # the operator's own copy, central stopped
    central = open_central(data)
    generation = central.store.identity()["generation"]
    issued += receive(central, 2)
    central.store.close()
    shutil.copy(tmp_path / "copy.sqlite3", data / "central.sqlite3")
    assert f"new generation {generation + 1}" in cli("mark-restored", "--data", data)
    reopened = open_central(data)
    assert reopened.store.identity()["generation"] == generation + 1
    assert receive(reopened, 1)[0] not in issued
    reopened.store.close()


def test_postgresql_backup_then_pg_restore_and_mark_restored(tmp_path, empty_postgres):  # noqa: F811
    if shutil.which("pg_dump") is None or shutil.which("pg_restore") is None:
        pytest.skip("pg_dump/pg_restore not installed (Debian's postgresql-client)")
    url, data = empty_postgres, tmp_path / "central"
    central = started(data, url)
    issued = receive(central, 3)
    generation = central.store.identity()["generation"]
    out = cli("backup", "--data", data, "--db", url, tmp_path / "pg.tar.gz")
    assert "pg_dump --format=custom was run" in out
    issued += receive(central, 2)
    central.store.close()

    # The documented procedure (docs/deploy.md): take the dump out, pg_restore it, mark the store restored.
    with tarfile.open(tmp_path / "pg.tar.gz") as tar:
        tar.extract("central.pgdump", tmp_path, filter="data")
    command, env = pg_command("pg_restore", url, "--clean", "--if-exists", "--single-transaction", "--no-owner",
                              str(tmp_path / "central.pgdump"))
    subprocess.run(command, env=env, check=True, capture_output=True)
    assert f"new generation {generation + 1}" in cli("mark-restored", "--data", data, "--db", url)
    reopened = open_central(data, url)
    assert reopened.store.identity()["generation"] == generation + 1
    assert reopened.store.count() == 3
    assert receive(reopened, 1)[0] not in issued
    reopened.store.close()
