"""``kiosk sync ...``: the station's sync worker and its USB fallback.

The group is named ``sync``; the main ``kiosk`` command adds it with ``main.add_command(sync)``. The station
config comes from ``ctx.obj["config"]`` when the main command has loaded it, else from ``--station`` /
``$KIOSK_STATION`` / ./station.toml via kiosk.core.config.load_station.
"""
import json
import logging
import signal
import threading
from pathlib import Path

import click

from kiosk.health import GuardedGroup


def _config() -> dict:
    ctx = click.get_current_context()
    obj = ctx.find_root().obj
    if isinstance(obj, dict) and isinstance(obj.get("config"), dict):
        return obj["config"]
    from kiosk.core.config import ConfigError, load_station

    try:
        return load_station(ctx.meta.get("dvc.station_file"))
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


def _open_db(config):
    from kiosk.core.db import connect, migrate

    from .worker import station_paths

    path = station_paths(config)["database"]
    migrate(path)
    return connect(path)


def _refuse_if_unhealthy(config):
    """The station's self-check (kiosk/health.py) before the worker starts: a read-only folder, a damaged
    database, unreadable keys or a wrong clock stop it with the reason. Low disk space alone does not: the
    worker writes little, and sending dossiers off the station is what a nearly full station needs."""
    from kiosk import health

    from .worker import station_paths

    result = health.check(config, station_paths(config)["database"])
    blocking = result.blocking(ignore=("disk_low",))
    if blocking:
        raise click.ClickException("Không chạy đồng bộ: trạm có lỗi / not syncing, the station is unhealthy: "
                                   + "; ".join(reason.detail for reason in blocking) + " (docs/operations.md)")
    for reason in result.reasons:
        logging.getLogger("sync").warning("%s", reason.detail)


def _central_keys(config):
    from .keys import load_central_keys
    from .worker import station_paths

    path = station_paths(config)["central_keys"]
    try:
        return load_central_keys(path)
    except FileNotFoundError:
        raise click.ClickException(f"{path}: no central keys yet; enrol the station (`kiosk sync key`, then "
                                   "`kiosk central enrol` at the central) and `kiosk sync trust FILE`") from None


@click.group("sync", cls=GuardedGroup)
@click.option("--station", "station_file", type=click.Path(dir_okay=False), default=None,
              help="The station file (default: $KIOSK_STATION or ./station.toml).")
@click.pass_context
def sync(ctx, station_file):
    """Send queued dossiers to the central and bring their status back."""
    if station_file:
        ctx.meta["dvc.station_file"] = station_file


@sync.command("run")
@click.option("--once", is_flag=True, help="One cycle, then exit.")
@click.option("--until-empty", is_flag=True, help="Exit when no dossier is waiting.")
@click.option("--max-seconds", type=float, default=None, help="Exit after this long.")
@click.option("-v", "--verbose", is_flag=True)
def run_command(once, until_empty, max_seconds, verbose):
    """Run the sync worker (its own process; the web app never waits on the network)."""
    from kiosk.core.config import data_dir

    from .worker import WorkerRunning, hold_worker_lock, worker_from_config

    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(message)s")
    config = _config()
    _refuse_if_unhealthy(config)
    _central_keys(config)
    try:
        lock = hold_worker_lock(data_dir(config))
    except WorkerRunning as exc:
        raise click.ClickException(
            f"Một tiến trình đồng bộ khác đang chạy cho trạm này (pid {exc}); không chạy thêm. / "
            f"Another sync worker already runs for this station (pid {exc}); not starting a second.") from None
    worker = worker_from_config(config)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        # Within one exchange: the one under way is cut, its dossiers stay pending (idempotent resend).
        signal.signal(sig, lambda *_: worker.stop_now(stop))
    try:
        totals = worker.cycle() if once else worker.run(stop, until_empty=until_empty, max_seconds=max_seconds)
        click.echo(json.dumps({**totals, "pending": worker.pending()}))
    finally:
        worker.close()
        lock.close()


def status_report(conn) -> dict:
    """What `sync status` shows: counts by state, the oldest waiting, quarantined reasons, bundles."""
    from kiosk.core import documents, dossiers, outbox

    from .bundle import bundled_pending
    from .notices import notices
    from .worker import sync_state

    states = outbox.counts(conn)
    oldest = outbox.oldest_pending(conn)
    last_error = outbox.latest_error(conn)
    rejected = outbox.rejected_reasons(conn, 50)
    bundled = bundled_pending(conn)
    state = sync_state(conn)
    return {"pending": states.get("pending", 0), "sent": states.get("sent", 0),
            "rejected": states.get("rejected", 0), "oldest_pending": oldest,
            "last_error": last_error, "bundled_pending": bundled,
            "purged": dossiers.purged_count(conn), "documents_pending_bytes": documents.pending_bytes(conn),
            "changes_cursor": int(state.get("changes_cursor", 0)),
            "last_cycle": json.loads(state["last_cycle"]) if "last_cycle" in state else None,
            "quarantined": rejected, **notices(conn)}


@sync.command("status")
@click.option("--json", "as_json", is_flag=True)
def status_command(as_json):
    """How many dossiers wait, were sent, were refused (with the reason), and the last cycle."""
    conn = _open_db(_config())
    try:
        report = status_report(conn)
    finally:
        conn.close()
    if as_json:
        click.echo(json.dumps(report, ensure_ascii=False, indent=1))
        return
    click.echo(f"Đang chờ gửi / waiting: {report['pending']} (oldest {report['oldest_pending'] or '-'}; "
               f"{report['bundled_pending']} also in a USB bundle)")
    click.echo(f"Đã gửi / sent: {report['sent']}   Bị từ chối / refused: {report['rejected']}   "
               f"purged: {report['purged']}")
    if report["documents_pending_bytes"]:
        click.echo(f"Giấy tờ chờ gửi / documents to send: {report['documents_pending_bytes'] / 1024:,.0f} KB")
    if report["last_error"]:
        click.echo(f"Last error: {report['last_error']}")
    if report["clock_warning"]:
        from kiosk.i18n import say

        key, minutes = report["clock_warning"] + "_banner", report["clock_minutes"]
        click.echo(f"{say(key, 'vi', minutes=minutes)} / {say(key, 'en', minutes=minutes)}")
    if report["rewound"]:
        event = report["rewound"]
        click.echo(f"Trung tâm đã quay lại một bản sao lưu ({event['reason']}, {event['at']}): gửi lại "
                   f"{event['resent']} hồ sơ, còn {report['resending']} đang gửi. / The central went back to a "
                   f"backup: {event['resent']} dossiers sent again, {report['resending']} still to send.")
    for item in report["lost"]:
        click.echo(f"  MẤT Ở TRUNG TÂM / LOST AT THE CENTRAL: {item['tracking_code']} ({item['central_code']})")
    for item in report["code_changed"]:
        click.echo(f"  Mã hồ sơ mới / new dossier code: {item['tracking_code']}: {item['before']} -> {item['after']}")
    for item in report["reissued"]:
        click.echo(f"  Mã tra cứu mới / new tracking code: {item['before']} -> {item['after']}")
    for item in report["quarantined"]:
        click.echo(f"  {item['tracking_code']}: {item['reason']}")


@sync.command("export")
@click.argument("folder", type=click.Path(file_okay=False))
def export_command(folder):
    """Write every waiting dossier to a signed, encrypted bundle in FOLDER (a USB stick)."""
    from .bundle import export_station_bundle

    config = _config()
    _central_keys(config)  # a clear message when the station is not enrolled yet
    conn = _open_db(config)
    try:
        result = export_station_bundle(config, conn, Path(folder))
    finally:
        conn.close()
    if result["path"] is None and not result.get("left"):
        click.echo("Không có hồ sơ đang chờ / nothing is waiting")
    elif result["path"] is not None:
        click.echo(f"{result['dossiers']} dossiers, {result.get('documents', 0)} documents -> {result['path']} "
                   "(they stay waiting until acknowledged)")
    if result.get("left"):
        click.echo(f"Còn {result['left']} hồ sơ chưa vừa gói này: xuất thêm lần nữa / {result['left']} more "
                   "dossiers did not fit in this bundle: export again")


@sync.command("import-acks")
@click.argument("ack_file", type=click.Path(exists=True, dir_okay=False))
def import_acks_command(ack_file):
    """Apply the central's ack file brought back from a bundle import (BUNDLE_FILE.acks.json, as `kiosk
    central import` and the central's staff page name it); applying it again changes nothing."""
    from . import protocol
    from .bundle import BundleError, apply_ack_file, read_bounded

    config = _config()
    signing, _bundle = _central_keys(config)
    conn = _open_db(config)
    try:
        counts = apply_ack_file(conn, read_bounded(ack_file, protocol.MAX_BUNDLE_BYTES), station_id=config["station"]["id"],
                                central_signing_key=signing)
    except BundleError as exc:
        raise click.ClickException(f"{ack_file}: {exc}") from None
    finally:
        conn.close()
    click.echo(json.dumps(counts))


@sync.command("import-catalog")
@click.argument("release_file", type=click.Path(exists=True, dir_okay=False))
def import_catalog_command(release_file):
    """Install a catalog release file brought on a USB stick (catalog-N.dvccatalog, from the central's
    catalog-releases folder): checked as one fetched online is (the central's catalog signature, a number
    above the live one, the checks of `kiosk check`); the web app switches to it within seconds, drafts in
    progress finish on their own release. A bad one is refused with the reason; the live one stays."""
    from kiosk.core.config import data_dir

    from .bundle import BundleError, read_bounded
    from .catalog_release import MAX_RELEASE_BYTES, ReleaseRefused, StationCatalog
    from .keys import load_catalog_key
    from .worker import station_paths

    config = _config()
    _central_keys(config)  # a clear message when the station is not enrolled yet
    try:
        data = read_bounded(release_file, MAX_RELEASE_BYTES)
    except BundleError as exc:
        raise click.ClickException(f"{release_file}: {exc}") from None
    conn = _open_db(config)
    try:
        installed = StationCatalog(data_dir(config)).install(
            data, load_catalog_key(station_paths(config)["central_keys"]), "usb", conn, "cli")
    except ReleaseRefused as exc:
        raise click.ClickException(f"{release_file}: từ chối / refused: {exc.code}: {exc.reason}") from None
    finally:
        conn.close()
    if installed is None:
        click.echo("Danh mục này đang dùng rồi / this release is live already")
    else:
        click.echo(f"Danh mục số {installed.release} ({installed.created_at}, {len(installed.catalog)} thủ tục) "
                   f"đã cài / catalog release {installed.release} installed ({len(installed.catalog)} procedures)")


@sync.command("key")
def key_command():
    """Print this station's id and public key, for `kiosk central enrol`."""
    from .keys import load_or_create_signing_key, public_b64
    from .worker import station_paths

    config = _config()
    key = load_or_create_signing_key(station_paths(config)["station_key"])
    click.echo(f"{config['station']['id']} {public_b64(key)}")


@sync.command("trust")
@click.argument("keys_file", type=click.Path(exists=True, dir_okay=False))
def trust_command(keys_file):
    """Install the central's public keys file given at enrolment."""
    from kiosk.core.keyfile import write_durably

    from .keys import load_central_keys
    from .worker import station_paths

    try:
        load_central_keys(keys_file)
    except (ValueError, KeyError) as exc:
        raise click.ClickException(f"{keys_file}: {exc}") from None
    target = station_paths(_config())["central_keys"]
    target.parent.mkdir(parents=True, exist_ok=True)
    write_durably(target, Path(keys_file).read_bytes(), 0o600)  # in the data folder: its owner's only
    click.echo(f"trusting the central's keys in {target}")


def main():  # ``python -m sync.sync_cli``: the worker runs without the lead's kiosk command (tests use it)
    sync(prog_name="kiosk sync")


if __name__ == "__main__":
    main()
