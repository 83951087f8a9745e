"""Fixtures for the card tests: a pcscd we start (and stop), a test PKI, synthetic profiles and a
simulated card on the vpcd virtual reader. Imported by tests/test_card_*.py."""
import time
from datetime import date
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from devices.card_profile import build_profile, make_test_pki
from devices.card_reader import CardKey, _release
from devices.card_simulator import CardSimulator
from devices.vpcd import VPCD_READER_PREFIX, PcscdProcess, vpcd_reader_listed

CARDS_DIR = Path(__file__).parent / "cards"


@pytest.fixture(scope="session")
def pcscd():
    """pcscd in the foreground for the whole session; a clear failure (never a skip) when it cannot run."""
    if vpcd_reader_listed():
        # Someone else's pcscd with the vpcd driver is already up: use it rather than fight over the port.
        yield None
        return
    process = PcscdProcess()
    try:
        process.start()
    except RuntimeError as exc:
        pytest.fail(f"pcscd could not be started for the card tests: {exc}", pytrace=False)
    yield process
    process.stop()


@pytest.fixture(scope="session")
def test_pki():
    return make_test_pki()


@pytest.fixture(scope="session")
def profile(test_pki):
    return build_profile(pki=test_pki)


@pytest.fixture(scope="session")
def csca_dir(tmp_path_factory, test_pki):
    folder = tmp_path_factory.mktemp("csca")
    (folder / "csca.pem").write_bytes(test_pki.csca_cert.public_bytes(serialization.Encoding.PEM))
    return folder


@pytest.fixture(scope="session")
def key(profile):
    k = profile["key"]
    return CardKey(k["number"], date.fromisoformat(k["birth_date"]), date.fromisoformat(k["expiry_date"]))


def card_state(present: bool, timeout_s: float = 5.0) -> None:
    """Wait until pcscd sees the card on the virtual reader (present) or sees it gone."""
    from smartcard.Exceptions import CardConnectionException, NoCardException
    from smartcard.System import readers
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        reader = next(r for r in readers() if str(r).startswith(VPCD_READER_PREFIX))
        connection = reader.createConnection()
        try:
            connection.connect()
            seen = True
        except (NoCardException, CardConnectionException):
            seen = False
        finally:
            _release(connection)
        if seen == present:
            return
        time.sleep(0.05)
    raise AssertionError(f"card still {'absent' if present else 'present'} after {timeout_s} s")


@pytest.fixture
def insert_card(pcscd):
    """insert_card(profile) puts a simulated card on the reader; every card is taken out after the test."""
    cards = []

    def insert(card_profile) -> CardSimulator:
        sim = CardSimulator(card_profile).connect()
        cards.append(sim)
        card_state(True)
        return sim

    yield insert
    for sim in cards:
        sim.pull_out()
    if cards:
        card_state(False)


@pytest.fixture
def card(insert_card, profile):
    return insert_card(profile)
