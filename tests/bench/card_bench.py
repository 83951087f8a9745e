"""Benchmark of a chip read through the real PC/SC path: pcscd + vpcd + the card simulator."""
import statistics
import tempfile
import time
from datetime import date
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from devices.card_profile import build_profile, make_test_pki
from devices.card_reader import CardKey, read_cccd
from devices.card_simulator import CardSimulator
from devices.vpcd import PcscdProcess, vpcd_reader_listed


def bench_card_read(n: int = 10, access: str = "bac", latency_ms: int = 0) -> dict:
    """Read DG1 + DG13 + EF.SOD (with EF.COM, BAC or PACE, and Passive Authentication) n times from a
    simulated card; starts pcscd for the run when none is up. Returns timings in milliseconds.

    access "auto" is the station's first try: the number alone (PACE with its last 6 digits).
    latency_ms makes the simulated chip take that long for every APDU, as a contactless reader does
    (0: as fast as the PC/SC path goes)."""
    pcscd = None if vpcd_reader_listed() else PcscdProcess().start()
    try:
        pki = make_test_pki("Bench CSCA")
        profile = build_profile(pki=pki, with_photo=False)
        profile["latency_ms"] = latency_ms
        k = profile["key"]
        if access == "auto":
            key = CardKey(k["number"])
        else:
            key = CardKey(k["number"], date.fromisoformat(k["birth_date"]), date.fromisoformat(k["expiry_date"]))
        with tempfile.TemporaryDirectory() as csca_dir:
            (Path(csca_dir) / "csca.pem").write_bytes(pki.csca_cert.public_bytes(serialization.Encoding.PEM))
            sim = CardSimulator(profile).connect()
            try:
                read_cccd(key, csca_dir=csca_dir, timeout_s=10, access=access)  # warm-up: the reader notices the card
                times, apdus = [], 0
                for _ in range(n):
                    start = time.perf_counter()
                    result = read_cccd(key, csca_dir=csca_dir, timeout_s=10, access=access)
                    times.append((time.perf_counter() - start) * 1000)
                    apdus = result.apdu_count
                    assert result.verified
                    assert result.access_protocol == ("BAC" if access == "bac" else "PACE")
            finally:
                sim.pull_out()
    finally:
        if pcscd is not None:
            pcscd.stop()
    times.sort()
    p95_index = min(len(times) - 1, max(0, round(0.95 * len(times) + 0.5) - 1))
    name = f"card_read_{access}_dg1_dg13_sod" + (f"_{latency_ms}ms_per_apdu" if latency_ms else "")
    return {"name": name, "p50_ms": round(statistics.median(times), 2), "p95_ms": round(times[p95_index], 2),
            "apdus": apdus, "n": n, "latency_ms": latency_ms}


if __name__ == "__main__":
    print(bench_card_read())
