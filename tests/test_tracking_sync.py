"""The citizen's tracking page follows the dossier through the real central: queued at the station,
received (with the official code) once the sync worker has sent it, then each state staff set there."""
import re

from kiosk.app import create_app
from tests.support.harness import CentralThread, enrol, make_station
from sync.worker import worker_from_config

from .wizard import answer_all, submit


def test_tracking_page_shows_what_the_central_says(tmp_path, catalog):
    with CentralThread(tmp_path / "central") as central:
        config = make_station(tmp_path / "station", central.url, station_id="K07")
        enrol(central.central, config)
        app = create_app(station_file=config["source"])
        client = app.test_client()
        proc = catalog["dang-ky-thuong-tru"]
        answer_all(client, proc)
        submit(client, proc)
        code = re.search(r"data-tracking-code>([^<]+)<", client.get("/done").text).group(1)
        assert "Đã nhận hồ sơ, đang chờ gửi đến cơ quan giải quyết" in client.get(f"/track/{code}").text

        worker = worker_from_config(config)
        worker.run(until_empty=True, max_seconds=30)
        page = client.get(f"/track/{code}").text
        assert "Cơ quan đã nhận hồ sơ" in page
        official = central.central.store.submissions()[0]
        assert official["tracking_code"] == code and official["central_code"] in page

        for status, words in (("processing", "Đang giải quyết"), ("needs_documents", "Cần bổ sung giấy tờ"),
                              ("done", "Đã có kết quả")):
            assert central.central.store.set_status(official["submission_id"], status, "cán bộ")
            worker.pull()
            assert words in client.get(f"/track/{code}").text
