"""The station's own hardening (SECURITY.md): where ``next=`` may send a browser, how fast tracking codes may
be tried, which stations serve the staff pages, cookies behind TLS, and the key files' permissions."""
import os
import re
import stat

import pytest

from kiosk.app import create_app

from .conftest import csrf_token

CODE = "K01-261201-0001-X"


def _app(tmp_path, **sections):
    return create_app({"paths": {"data": str(tmp_path / "var")}, **sections})


# --- next= goes only to a path of this station ------------------------------------------------------------

# What a browser makes of a Location header: tabs and line breaks dropped, "\" read as "/", so each of
# these would leave the station (or, with a line break, used to answer 500).
LEAVING = ["/%09/evil.example", "/%0A/evil.example", "/%0D/x", "/\\evil.example", "\\/evil.example", "//evil.example",
           "https://evil.example/", "%09//evil.example", "/%00/x", "javascript:alert(1)", "/%1B/x"]


@pytest.mark.parametrize("target", LEAVING)
def test_next_never_leaves_the_station_and_never_fails(tmp_path, target):
    client = _app(tmp_path).test_client()
    for path in ("/lang/en", "/text-size/large"):
        response = client.get(f"{path}?next={target}")
        assert response.status_code == 303, (path, target)
        assert response.headers["Location"] == "/", (path, target)


@pytest.mark.parametrize("target, location", [("/p/dang-ky-khai-sinh", "/p/dang-ky-khai-sinh"),
                                              ("/track?code=K01", "/track?code=K01"),
                                              ("/%252F/x", "/%2F/x")])  # an encoded slash stays a path here
def test_next_keeps_a_path_of_the_station(tmp_path, target, location):
    response = _app(tmp_path).test_client().get(f"/lang/en?next={target}")
    assert response.status_code == 303 and response.headers["Location"] == location


# --- tracking codes cannot be tried by the thousand --------------------------------------------------------

def test_tracking_lookups_are_limited_per_client(tmp_path):
    app = _app(tmp_path, server={"track_limit": "5/minute"})
    client = app.test_client()
    assert client.get("/track").status_code == 200  # the empty form is not a lookup
    answers = [client.get("/track", query_string={"code": CODE}).status_code for _ in range(3)]
    answers += [client.get(f"/track/{CODE}").status_code for _ in range(2)]
    assert answers == [422, 422, 422, 404, 404]  # not found, but answered
    refused = client.get(f"/track/{CODE}")
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) > 0
    assert "Vui lòng chờ một phút rồi thử lại" in refused.text and "Traceback" not in refused.text
    assert client.get("/track", query_string={"code": CODE}).status_code == 429  # one budget for both forms
    # Another client is not held back by the first one's lookups.
    assert client.get(f"/track/{CODE}", environ_base={"REMOTE_ADDR": "192.0.2.7"}).status_code == 404


def test_the_default_limit_lets_a_person_look_up_and_stops_a_script(tmp_path):
    client = _app(tmp_path).test_client()
    answers = [client.get(f"/track/{CODE}").status_code for _ in range(25)]
    assert answers[:20] == [404] * 20 and set(answers[20:]) == {429}


# --- the staff pages are not on a citizen kiosk -------------------------------------------------------------

@pytest.mark.parametrize("kind, setting, served", [
    ("kiosk", "auto", False), ("counter", "auto", True), ("mobile", "auto", True),
    ("kiosk", "on", True), ("counter", "off", False),
])
def test_staff_pages_are_served_where_staff_work(tmp_path, kind, setting, served):
    client = _app(tmp_path, station={"kind": kind, "staff_pages": setting}).test_client()
    assert client.get("/agent/login").status_code == (200 if served else 404)
    assert client.get("/").status_code == 200  # the citizen's pages are there either way


# --- cookies behind TLS -------------------------------------------------------------------------------------

def _session_cookie(response) -> str:
    return next(h for h in response.headers.getlist("Set-Cookie") if h.startswith("session="))


def test_cookies_are_secure_when_the_station_is_behind_tls(tmp_path):
    plain = _app(tmp_path / "plain").test_client().get("/lang/en")
    assert "Secure" not in _session_cookie(plain)
    tls = _app(tmp_path / "tls", server={"secure_cookies": True}).test_client().get("/lang/en")
    cookie = _session_cookie(tls)
    assert re.search(r"; Secure", cookie) and "HttpOnly" in cookie and "SameSite=Strict" in cookie


# --- key files ------------------------------------------------------------------------------------------------

def test_every_key_the_station_makes_is_owner_only_from_the_start(tmp_path):
    old = os.umask(0o022)  # a usual umask: files would be 0644 unless made otherwise
    try:
        _app(tmp_path)
    finally:
        os.umask(old)
    keys = sorted((tmp_path / "var").glob("*.key"))
    assert [k.name for k in keys] == ["payload.key", "session.key"]
    for key in keys:
        assert stat.S_IMODE(key.stat().st_mode) == 0o600, key.name


def test_login_next_stays_under_agent(tmp_path):
    from agent import staff
    from kiosk.core.db import connect

    app = _app(tmp_path, station={"kind": "counter"})
    conn = connect(app.config["DATABASE"])
    staff.add(conn, "minh", "Minh", "agent", "135790")
    conn.close()
    client = app.test_client()
    page = client.get("/agent/login?next=/%09/evil.example")
    response = client.post("/agent/login?next=/%09/evil.example",
                           data={"csrf_token": csrf_token(page.text), "username": "minh", "secret": "135790"})
    assert response.status_code == 303 and response.headers["Location"].endswith("/agent/")
