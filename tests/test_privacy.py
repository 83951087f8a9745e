"""Personal data is a trust: nothing a citizen typed reaches the logs, and the database holds it only
sealed (the purge after the central's acknowledgement is tested with the sync worker)."""
import logging
import sqlite3

from tests.support.fake_printer import FakeNetworkPrinter
from kiosk.app import create_app

from .wizard import answer_all, submit

NAME = "Nguyễn Văn An"      # the samples' applicant name
ID_NUMBER = "001099012345"  # and ID number


def test_no_answer_reaches_the_logs_or_the_database_in_clear(tmp_path, catalog, caplog):
    caplog.set_level(logging.DEBUG)
    with FakeNetworkPrinter("paper_out") as printer:
        app = create_app({"paths": {"data": str(tmp_path / "var")}, **printer.config()})
        client = app.test_client()
        for slug in ("cap-phieu-ly-lich-tu-phap", "dang-ky-khai-sinh"):
            answer_all(client, catalog[slug])
            submit(client, catalog[slug])
            client.get("/done")
        app.extensions["receipts"].wait()
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert logged  # the printer trouble was logged...
    for secret in (NAME, "Nguyễn", ID_NUMBER, "0912345678", "1990-03-15"):
        assert secret not in logged  # ...without any personal data
    raw = b"".join(p.read_bytes() for p in (tmp_path / "var").glob("station.db*"))
    for secret in (NAME, ID_NUMBER, "0912345678"):
        assert secret.encode() not in raw
    with sqlite3.connect(app.config["DATABASE"]) as conn:
        masked = {row[0] for row in conn.execute("SELECT applicant_masked FROM dossiers")}
    assert masked == {"Nguyễn V** A*"}
