"""The central's documents (issue 15): the PDFs stations upload as blobs are sealed at rest, shown and
downloaded on the staff page only by a logged-in account and only when the submission names them, and
dropped with the documents by the retention. The real central app, its signed station API and a real PDF
(a typeset A4 page cleaned and put in a PDF as the station does)."""
import hashlib
import logging
import re
import sqlite3
from contextlib import closing
from datetime import datetime, timedelta, timezone

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from kiosk.core.pages import clean_page, pages_to_pdf
from sync.central import create_central_app
from sync.central_cli import central as central_group
from sync.central_store import BLOB_BLOCK, BLOB_SEALED_MAGIC, BlobDamaged, BlobStore
from sync.keys import public_b64

from .support.paper import page_png, text_page
from .test_central import central, central_app, document, logged_in, put, signed, station_key  # noqa: F401  (fixtures)
from .test_central_security import place  # noqa: F401  (the fixture: SQLite, and PostgreSQL)

CHUNK = 64 * 1024


@pytest.fixture(scope="module")
def pdf() -> bytes:
    """One page of a real document, as the station sends it: cleaned (grey, 300 dpi) and put in a PDF."""
    return pages_to_pdf([clean_page(page_png(text_page()))])


@pytest.fixture
def app(central_app):  # tests/test_central.py's central, one station K01 enrolled (``key``)
    return central_app


@pytest.fixture
def key(station_key):
    return station_key


def upload(client, key, data: bytes, station_id="K01") -> str:
    """Upload a blob through the signed station API, in chunks as the station's client does; its sha256."""
    sha = hashlib.sha256(data).hexdigest()
    for start in range(0, len(data), CHUNK):
        chunk = data[start:start + CHUNK]
        resp = signed(client, key, "PUT", f"/api/v1/blobs/{sha}", chunk, station_id=station_id,
                      headers={"Content-Range": f"bytes {start}-{start + len(chunk) - 1}/{len(data)}"})
        assert resp.status_code in (201, 202), resp.data
    return sha


def attachment(data: bytes, document_id="giay-khai-sinh", name="Giấy khai sinh", pages=1) -> dict:
    """What the station's document says of one paper (kiosk.core.documents.Assembled.attachment)."""
    return {"document": document_id, "name": name, "sha256": hashlib.sha256(data).hexdigest(),
            "bytes": len(data), "pages": pages, "media_type": "application/pdf"}


def blob_file(central, sha: str):
    return central.data_dir / "blob-store" / "blobs" / sha[:2] / sha


def _ago(days: float) -> str:
    return (datetime.now(timezone.utc) - timedelta(days=days)).isoformat(timespec="milliseconds")


def handed_over_long_ago(central, submission_id: str, where=None) -> None:
    """Handed over 31 days ago, received 40 days ago (``where``: a test_central_security.Place, else SQLite)."""
    central.store.set_status(submission_id, "processing", "lan")
    sql = "UPDATE submissions SET received_at = ?, handed_over_at = ? WHERE submission_id = ?"
    if where is not None:
        where.run(sql, (_ago(40), _ago(31), submission_id))
        return
    with closing(sqlite3.connect(central.data_dir / "central.sqlite3")) as conn, conn:
        conn.execute(sql, (_ago(40), _ago(31), submission_id))


def test_an_uploaded_pdf_is_sealed_on_disk_and_staff_download_it_byte_for_byte(app, central, key, pdf, caplog):
    client = app.test_client()
    sha = upload(client, key, pdf)
    doc = document(attachments=[attachment(pdf)])
    assert put(client, key, doc).status_code == 201
    on_disk = blob_file(central, sha).read_bytes()
    assert on_disk.startswith(BLOB_SEALED_MAGIC)
    assert b"%PDF" not in on_disk and pdf[len(pdf) // 2:len(pdf) // 2 + 64] not in on_disk
    assert signed(client, key, "HEAD", f"/api/v1/blobs/{sha}").status_code == 200
    # Quotas and ownership count the blob's own size, not the seal's.
    assert central.blobs.usage("K01") == max(len(pdf), BLOB_BLOCK)
    assert [p.name for p in (central.data_dir / "blob-store" / "owners" / "K01").iterdir()] == [f"{sha}.{len(pdf)}"]
    assert not list((central.data_dir / "blob-store" / "partial").rglob("*.*"))  # the plain upload is gone

    staff = logged_in(app)
    listing = staff.get("/staff/").get_data(as_text=True)
    assert f'/staff/{doc["submission_id"]}"' in listing
    page = staff.get(f"/staff/{doc['submission_id']}").get_data(as_text=True)
    assert "Giấy khai sinh" in page and "Giấy tờ" in page and "Documents" in page
    assert f"{-(-len(pdf) // 1024)} KB" in page and "<td>1</td>" in page and "Có" in page
    link = f"/staff/{doc['submission_id']}/documents/{sha}.pdf"
    assert link in page
    assert "Nguyễn Văn A" not in page  # the papers' list, not the citizen's answers

    caplog.set_level(logging.INFO, logger="sync.central")
    resp = staff.get(link)
    assert resp.status_code == 200 and resp.data == pdf
    assert resp.headers["Content-Type"] == "application/pdf"
    name = f"{doc['tracking_code']}-giay-khai-sinh.pdf"
    assert re.fullmatch(r"[A-Za-z0-9_-]+\.pdf", name)
    assert resp.headers["Content-Disposition"] == f'attachment; filename="{name}"'
    assert resp.headers["Cache-Control"] == "no-store"
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    lines = [r.getMessage() for r in caplog.records if "downloaded" in r.getMessage()]
    assert lines == [f"staff lan downloaded document giay-khai-sinh (sha256 {sha}) of submission "
                     f"{doc['submission_id']}"]


def test_only_a_logged_in_account_and_only_a_blob_the_submission_names(app, central, key, pdf):
    client = app.test_client()
    sha = upload(client, key, pdf)
    other = upload(client, key, pdf + b"\n% another scan")  # held by the central, named by no submission here
    doc = document(attachments=[attachment(pdf)])
    assert put(client, key, doc).status_code == 201
    link = f"/staff/{doc['submission_id']}/documents/{sha}.pdf"
    # Logged out: to the login form, never the bytes.
    for path in (link, f"/staff/{doc['submission_id']}"):
        resp = app.test_client().get(path)
        assert resp.status_code == 303 and resp.headers["Location"].endswith("/staff/login")
    staff = logged_in(app)
    assert staff.get(f"/staff/{doc['submission_id']}/documents/{other}.pdf").status_code == 404
    assert staff.get(f"/staff/{doc['submission_id']}/documents/{sha.upper()}.pdf").status_code == 404
    assert staff.get(f"/staff/{doc['submission_id']}/documents/../{sha}.pdf").status_code == 404
    assert staff.get(f"/staff/00000000-0000-4000-8000-000000000000/documents/{sha}.pdf").status_code == 404
    assert staff.get(f"/staff/not-a-submission/documents/{sha}.pdf").status_code == 404
    assert staff.get("/staff/00000000-0000-4000-8000-000000000000").status_code == 404
    # Logged out again: the session ends, so does the access.
    staff.post("/staff/logout", data={"csrf_token": re.search(
        r'name="csrf_token" value="([^"]+)"', staff.get("/staff/").get_data(as_text=True)).group(1)})
    assert staff.get(link).status_code == 303


def test_a_paper_the_central_does_not_hold_is_listed_without_a_link(app, central, key, pdf):
    client = app.test_client()
    sha = upload(client, key, pdf)
    doc = document(attachments=[attachment(pdf, pages=3)])
    assert put(client, key, doc).status_code == 201
    central.blobs.delete(sha)  # lost on the central's side (a blob-store put back from an older copy)
    page = logged_in(app).get(f"/staff/{doc['submission_id']}").get_data(as_text=True)
    assert "Giấy khai sinh" in page and "<td>3</td>" in page and "Không" in page
    assert f"{sha}.pdf" not in page
    assert logged_in(app).get(f"/staff/{doc['submission_id']}/documents/{sha}.pdf").status_code == 404


def test_retention_drops_the_blobs_only_that_submission_names(place, pdf):  # noqa: F811
    app = create_central_app(place.config())
    central = app.extensions["dvc_central"]
    key = Ed25519PrivateKey.generate()
    central.store.enrol("K01", public_b64(key))
    client = app.test_client()
    shared, own = pdf, pdf + b"\n% the second paper"
    sha_shared, sha_own = upload(client, key, shared), upload(client, key, own)
    first = document(attachments=[attachment(shared), attachment(own, "to-khai", "Tờ khai")])
    second = document(attachments=[attachment(shared)])  # a correction keeps the paper it did not capture again
    assert put(client, key, first).status_code == 201 and put(client, key, second).status_code == 201
    handed_over_long_ago(central, first["submission_id"], place)
    assert central.purge() == 1
    assert central.last_purge == {"documents": 1, "blobs": 1}
    assert not blob_file(central, sha_own).exists() and central.blobs.owners(sha_own) == []
    assert signed(client, key, "HEAD", f"/api/v1/blobs/{sha_own}").status_code == 404
    assert central.blobs.read(sha_shared) == shared  # the second submission, still held, names it
    assert central.blobs.usage("K01") == max(len(shared), BLOB_BLOCK)  # the dropped blob no longer counts
    staff = logged_in(app)
    page = staff.get(f"/staff/{first['submission_id']}").get_data(as_text=True)
    assert "đã xóa theo thời hạn lưu" in page and ".pdf" not in page
    assert staff.get(f"/staff/{first['submission_id']}/documents/{sha_shared}.pdf").status_code == 404
    assert staff.get(f"/staff/{second['submission_id']}/documents/{sha_shared}.pdf").data == shared
    # The second goes too: now nothing names the shared blob.
    handed_over_long_ago(central, second["submission_id"], place)
    assert central.purge() == 1 and central.last_purge["blobs"] == 1
    assert not central.blobs.exists(sha_shared)
    assert central.purge() == 0 and central.last_purge == {"documents": 0, "blobs": 0}


def test_the_purge_command_drops_the_blobs_too(tmp_path, pdf):
    data = tmp_path / "central"
    app = create_central_app({"DATA_DIR": str(data)})
    central = app.extensions["dvc_central"]
    station_key = Ed25519PrivateKey.generate()
    central.store.enrol("K01", public_b64(station_key))
    sha = upload(app.test_client(), station_key, pdf)
    doc = document(attachments=[attachment(pdf)])
    assert put(app.test_client(), station_key, doc).status_code == 201
    handed_over_long_ago(central, doc["submission_id"])
    central.store.close()
    result = CliRunner().invoke(central_group, ["purge", "--data", str(data)])
    assert result.exit_code == 0 and "Dropped the documents of 1 handed-over dossiers and 1 blobs" in result.output
    assert not blob_file(central, sha).exists()


def test_a_plain_blob_from_before_sealing_is_read_and_sealed_at_start(tmp_path, pdf):
    data = tmp_path / "central"
    create_central_app({"DATA_DIR": str(data)}).extensions["dvc_central"].store.close()
    # A central upgraded in place: its blob folder as the release before wrote it, plain, with its owner.
    sha = hashlib.sha256(pdf).hexdigest()
    plain = data / "blob-store" / "blobs" / sha[:2] / sha
    plain.parent.mkdir(parents=True)
    plain.write_bytes(pdf)
    (data / "blob-store" / "owners" / "K01").mkdir(parents=True)
    (data / "blob-store" / "owners" / "K01" / f"{sha}.{len(pdf)}").touch()
    broken = "0" * 64  # a damaged file is left as it is, and reads as damaged
    (data / "blob-store" / "blobs" / "00").mkdir(exist_ok=True)  # the PDF's own folder 1 time in 256
    (data / "blob-store" / "blobs" / "00" / broken).write_bytes(b"not what the name says")
    # Read as it is, before anything sealed it (a tool opening the folder).
    documents_key = (data / "central-documents.key").read_bytes()
    assert BlobStore(data / "blob-store", documents_key=documents_key).read(sha) == pdf
    # At start it is sealed in place, under the same name; it reads the same, and counts the same.
    app = create_central_app({"DATA_DIR": str(data)})
    central = app.extensions["dvc_central"]
    assert central.blobs_sealed_at_start == 1
    on_disk = plain.read_bytes()
    assert on_disk.startswith(BLOB_SEALED_MAGIC) and b"%PDF" not in on_disk
    assert central.blobs.read(sha) == pdf and central.blobs.usage("K01") == max(len(pdf), BLOB_BLOCK)
    with pytest.raises(BlobDamaged):
        central.blobs.read(broken)
    assert central.blobs.seal_plain() == 0  # once
    central.store.close()
    assert create_central_app({"DATA_DIR": str(data)}).extensions["dvc_central"].blobs_sealed_at_start == 0


def test_a_sealed_blob_opens_only_under_its_own_name_and_key(tmp_path, central, key, pdf, app):
    sha = upload(app.test_client(), key, pdf)
    other = hashlib.sha256(b"another document").hexdigest()
    moved = blob_file(central, other)
    moved.parent.mkdir(parents=True, exist_ok=True)
    moved.write_bytes(blob_file(central, sha).read_bytes())
    with pytest.raises(BlobDamaged):
        central.blobs.read(other)
    with pytest.raises(BlobDamaged):
        BlobStore(central.blobs.root, documents_key=bytes(32)).read(sha)
    # Served to staff as a server fault, never as a PDF.
    doc = document(attachments=[{**attachment(pdf), "sha256": other}])
    assert put(app.test_client(), key, doc).status_code == 201
    assert logged_in(app).get(f"/staff/{doc['submission_id']}/documents/{other}.pdf").status_code == 500


def test_store_keeps_a_whole_blob_for_a_station_in_one_call(tmp_path, central, pdf):
    blobs = central.blobs
    sha = hashlib.sha256(pdf).hexdigest()
    assert not blobs.store("K02", sha, pdf + b"x")  # the bytes must hash to the name
    assert blobs.store_state("K02", sha, pdf + b"x") == "hash_mismatch" and not blobs.exists(sha)
    assert blobs.store("K02", sha, pdf)
    assert blob_file(central, sha).read_bytes().startswith(BLOB_SEALED_MAGIC)
    assert blobs.read(sha) == pdf and blobs.owners(sha) == ["K02"]
    assert blobs.store("K03", sha, pdf) and blobs.owners(sha) == ["K02", "K03"]  # already there: owned too
    blobs.configure(quota_bytes=len(pdf) + BLOB_BLOCK)
    big = pdf * 2
    assert blobs.store_state("K02", hashlib.sha256(big).hexdigest(), big) == "over_quota"
    blobs.configure(max_bytes=len(pdf) - 1, quota_bytes=10 << 20)
    assert blobs.store_state("K04", hashlib.sha256(big).hexdigest(), big) == "too_large"


def test_the_backup_command_says_how_to_copy_the_sealed_blobs(tmp_path):
    data = tmp_path / "central"
    create_central_app({"DATA_DIR": str(data)}).extensions["dvc_central"].store.close()
    result = CliRunner().invoke(central_group, ["backup", "--data", str(data), str(tmp_path / "backups")])
    assert result.exit_code == 0, result.output
    assert "rsync -a --delete --exclude /partial/" in result.output
