"""USB bundles: signed by the station, readable only by the central, idempotent to import, and a lost
stick loses nothing. Driven through the click groups the kiosk command adds."""
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from kiosk.core.db import connect
from sync.bundle import BundleError, apply_ack_file, export_bundle, import_bundle
from sync.central import open_central
from sync.central_cli import central as central_group
from tests.support.harness import CentralThread, make_station, submit_many
from sync.keys import load_central_keys, load_or_create_signing_key
from sync.sync_cli import sync as sync_group
from sync.worker import station_paths, worker_from_config


@pytest.fixture
def setup(tmp_path):
    central_dir = tmp_path / "central"
    central = open_central(central_dir)
    config = make_station(tmp_path / "station", "http://127.0.0.1:9", sync={"timeout": 1})
    runner = CliRunner()
    key_line = runner.invoke(sync_group, ["--station", config["source"], "key"])
    assert key_line.exit_code == 0, key_line.output
    station_id, public_key = key_line.output.split()
    keys_file = tmp_path / "central-keys.json"
    enrolled = runner.invoke(central_group, ["enrol", "--data", str(central_dir), station_id, public_key,
                                             "--name", "Điểm bưu điện xã", "--keys-out", str(keys_file)])
    assert enrolled.exit_code == 0, enrolled.output
    trusted = runner.invoke(sync_group, ["--station", config["source"], "trust", str(keys_file)])
    assert trusted.exit_code == 0, trusted.output
    return central, central_dir, config, runner


def outbox_states(config):
    conn = connect(station_paths(config)["database"])
    try:
        return dict(conn.execute("SELECT state, COUNT(*) FROM outbox GROUP BY state").fetchall())
    finally:
        conn.close()


def test_export_import_twice_and_apply_acks_twice(tmp_path, setup):
    central, central_dir, config, runner = setup
    ids = submit_many(config, 12)
    stick = tmp_path / "usb"
    out = runner.invoke(sync_group, ["--station", config["source"], "export", str(stick)])
    assert out.exit_code == 0, out.output
    (bundle,) = stick.glob("*.dvcbundle")
    assert "Nguy" not in bundle.read_text() and "id_number" not in bundle.read_text()  # encrypted
    assert outbox_states(config) == {"pending": 12}  # bundled, still waiting for an acknowledgement
    first = runner.invoke(central_group, ["import", "--data", str(central_dir), str(bundle)])
    assert first.exit_code == 0 and "12 new" in first.output, first.output
    ack_path = bundle.with_name(bundle.name + ".acks.json")  # M01-...-1a2b3c4d.dvcbundle.acks.json, beside it
    first_acks = ack_path.read_bytes()
    second = runner.invoke(central_group, ["import", "--data", str(central_dir), str(bundle)])
    assert "0 new, 12 already received" in second.output
    assert ack_path.read_bytes() == first_acks  # the same acknowledgements
    assert central.store.count() == 12
    applied = runner.invoke(sync_group, ["--station", config["source"], "import-acks", str(ack_path)])
    assert json.loads(applied.output)["acknowledged"] == 12
    again = runner.invoke(sync_group, ["--station", config["source"], "import-acks", str(ack_path)])
    assert json.loads(again.output) == {"acknowledged": 0, "rejected": 0, "already": 12, "ignored": 0}
    assert outbox_states(config) == {"sent": 12}
    conn = connect(station_paths(config)["database"])
    codes = dict(conn.execute("SELECT submission_id, central_code FROM dossiers").fetchall())
    conn.close()
    assert all(codes[sid] == central.store.submission(sid)["central_code"] for sid in ids)


def test_a_lost_stick_loses_nothing_the_dossiers_go_online_later(tmp_path, setup):
    central, central_dir, config, runner = setup
    submit_many(config, 4)
    runner.invoke(sync_group, ["--station", config["source"], "export", str(tmp_path / "lost-stick")])
    status = json.loads(runner.invoke(sync_group, ["--station", config["source"], "status", "--json"]).output)
    assert (status["pending"], status["bundled_pending"]) == (4, 4)
    with CentralThread(central_dir) as server:
        config["central"]["url"] = server.url
        worker = worker_from_config(config)
        assert worker.run(until_empty=True, max_seconds=20)["acked"] == 4
        worker.close()
    assert outbox_states(config) == {"sent": 4}


def test_online_and_bundle_paths_agree_on_one_receipt(tmp_path, setup):
    central, central_dir, config, runner = setup
    submit_many(config, 3)
    runner.invoke(sync_group, ["--station", config["source"], "export", str(tmp_path / "usb")])
    with CentralThread(central_dir) as server:
        config["central"]["url"] = server.url
        worker = worker_from_config(config)
        worker.run(until_empty=True, max_seconds=20)
        worker.close()
        ack_file, counts = import_bundle(server.central, next((tmp_path / "usb").glob("*.dvcbundle")).read_bytes())
    assert counts == {"created": 0, "duplicate": 3, "rejected": 0, "deferred": 0}
    conn = connect(station_paths(config)["database"])
    signing, _ = load_central_keys(station_paths(config)["central_keys"])
    result = apply_ack_file(conn, json.dumps(ack_file).encode(), station_id="K01", central_signing_key=signing)
    conn.close()
    assert result["already"] == 3 and central.store.count() == 3


def test_tampered_foreign_and_unreadable_bundles_are_refused(tmp_path, setup):
    central, central_dir, config, runner = setup
    submit_many(config, 2)
    runner.invoke(sync_group, ["--station", config["source"], "export", str(tmp_path / "usb")])
    bundle = next((tmp_path / "usb").glob("*.dvcbundle"))
    data = json.loads(bundle.read_bytes())
    tampered = dict(data, header={**data["header"], "dossiers": 99})
    with pytest.raises(BundleError, match="not signed"):
        import_bundle(central, json.dumps(tampered).encode())
    other_central = open_central(tmp_path / "other-central")
    other_central.store.enrol("K01", central.store.station("K01").public_key)
    with pytest.raises(BundleError, match="does not open"):
        import_bundle(other_central, bundle.read_bytes())
    central.store.revoke("K01")
    refused = runner.invoke(central_group, ["import", "--data", str(central_dir), str(bundle)])
    assert refused.exit_code != 0 and "revoked" in refused.output
    assert central.store.count() == 0


def test_ack_files_are_checked_like_online_answers(tmp_path, setup):
    central, central_dir, config, runner = setup
    submit_many(config, 2)
    result = export_bundle(connect(station_paths(config)["database"]), tmp_path / "usb", station_id="K01",
                           station_key=load_or_create_signing_key(station_paths(config)["station_key"]),
                           payload_key=Path(station_paths(config)["payload_key"]).read_bytes(),
                           central_bundle_key=load_central_keys(station_paths(config)["central_keys"])[1])
    ack_file, _ = import_bundle(central, result["path"].read_bytes())
    forged = dict(ack_file, acks=[{**a, "document": {**a["document"], "central_code": "FAKE"}}
                                  for a in ack_file["acks"]])
    conn = connect(station_paths(config)["database"])
    signing, _ = load_central_keys(station_paths(config)["central_keys"])
    assert apply_ack_file(conn, json.dumps(forged).encode(), station_id="K01",
                          central_signing_key=signing)["ignored"] == 2
    with pytest.raises(BundleError):
        apply_ack_file(conn, b"<html>portal</html>", station_id="K01", central_signing_key=signing)
    conn.close()
    assert outbox_states(config) == {"pending": 2}


def test_sync_status_shows_quarantined_reasons_without_personal_data(tmp_path, setup):
    central, central_dir, config, runner = setup
    from kiosk.core.catalog import Procedure
    from tests.support.harness import PROCEDURE

    submit_many(config, 1, procedure=Procedure(**{**PROCEDURE.__dict__, "code": "9"}))
    with CentralThread(central_dir) as server:
        config["central"]["url"] = server.url
        worker = worker_from_config(config)
        worker.run(until_empty=True, max_seconds=20)
        worker.close()
    out = runner.invoke(sync_group, ["--station", config["source"], "status"]).output
    assert "Bị từ chối / refused: 1" in out and "bad_procedure_code" in out
    assert "Nguy" not in out


def test_sync_run_once_from_the_command_line(tmp_path, setup):
    central, central_dir, config, runner = setup
    submit_many(config, 2)
    with CentralThread(central_dir) as server:
        toml = Path(config["source"])
        toml.write_text(toml.read_text().replace("http://127.0.0.1:9", server.url))
        out = runner.invoke(sync_group, ["--station", str(toml), "run", "--once"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.output.strip().splitlines()[-1])["acked"] == 2


def test_commands_fail_clearly_before_enrolment(tmp_path):
    config = make_station(tmp_path / "fresh", "http://127.0.0.1:9")
    out = CliRunner().invoke(sync_group, ["--station", config["source"], "run", "--once"])
    assert out.exit_code != 0 and "no central keys yet" in out.output


def test_the_groups_take_the_config_the_main_command_loaded(tmp_path, setup):
    """As the kiosk command will add them: main.add_command(sync); the station config in ctx.obj."""
    import click

    central, central_dir, config, runner = setup

    @click.group()
    @click.pass_context
    def main(ctx):
        ctx.obj = {"config": config}

    main.add_command(sync_group)
    main.add_command(central_group)
    submit_many(config, 2)
    out = runner.invoke(main, ["sync", "status", "--json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.output)["pending"] == 2
    keys = runner.invoke(main, ["central", "keys", "--data", str(central_dir)])
    assert json.loads(keys.output) == central.public_keys()
