"""Every field type, fuzzed through the real routes: never a 500, always a clear Vietnamese message,
and nothing half-written (a refused answer leaves the stored draft as it was)."""
import re
import unicodedata
from urllib.parse import quote_from_bytes

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kiosk.core import answers, drafts
from kiosk.app import create_app
from kiosk.core.catalog import FIELD_TYPES
from kiosk.core.db import connect

from .conftest import csrf_token
from .wizard import start

SETTINGS = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
ANY_TEXT = st.one_of(
    st.text(max_size=300),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=40),
    st.sampled_from(["", " ", "\x00", "\u202e", "0", "-1", "1e9", "31", "２０２０", "٣", "🙂", "a" * 5000,
                     "Nguyễn Văn An", "Nguye\u0302\u0303n", "<script>alert(1)</script>", "' OR 1=1 --"]),
)


def _page_with(catalog, kind):
    for proc in catalog.values():
        for page in proc.pages:
            if "when" not in page and len(page["fields"]) == 1 and page["fields"][0]["type"] == kind:
                return proc, page
    for proc in catalog.values():
        for page in proc.pages:
            if "when" not in page and any(f["type"] == kind for f in page["fields"]):
                return proc, page
    pytest.skip(f"no procedure has a {kind} field")


def _stored(app, draft_id):
    conn = connect(app.config["DATABASE"])
    try:
        return drafts.load(conn, app.config["PAYLOAD_KEY"], draft_id, 60)[1]
    finally:
        conn.close()


@pytest.mark.parametrize("kind", FIELD_TYPES)
def test_fuzzed_field_never_breaks_and_never_half_writes(tmp_path, catalog, kind):
    app = create_app({"paths": {"data": str(tmp_path / "var")}})
    client = app.test_client()
    proc, page = _page_with(catalog, kind)
    start(client, proc.slug)
    with client.session_transaction() as session:
        draft_id = session["draft"]["id"]
    path = f"/p/{proc.slug}/q/{page['id']}"
    token = csrf_token(client.get(path).text)
    field = next(f for f in page["fields"] if f["type"] == kind)
    strategy = (st.fixed_dictionaries({p: ANY_TEXT for p in ("day", "month", "year")}) if kind == "date"
                else ANY_TEXT)

    @SETTINGS
    @given(value=strategy)
    def check(value):
        before = _stored(app, draft_id)
        form = {"csrf_token": token}
        for other in page["fields"]:
            if other is not field:
                from tests.support.samples import form_for_field
                form.update(form_for_field(other))
        if kind == "date":
            form.update({f"{field['name']}__{part}": text for part, text in value.items()})
        else:
            form[field["name"]] = value
        response = client.post(path, data=form)
        assert response.status_code in (303, 422), response.status_code
        after = _stored(app, draft_id)
        if response.status_code == 422:
            assert "<title>Lỗi:" in response.text and 'class="error-message"' in response.text
            assert "Traceback" not in response.text
            # The messages, not the citizen's own text shown back in the field, must have no placeholder left.
            messages = " ".join(re.findall(r'class="error-message"[^>]*>(.*?)</p>', response.text, re.S))
            assert messages and not re.search(r"\{[a-z_]+\}", messages), "a message placeholder was left unfilled"
            assert after == before
        else:
            stored = after[field["name"]]
            if isinstance(stored, str):
                assert unicodedata.normalize("NFC", stored) == stored
                assert not any(unicodedata.category(c) == "Cc" and c not in "\n\t" for c in stored)
            # What was stored reads back as the same answer.
            again = answers.read_field(field, _as_form(field, stored))
            assert again.error is None and again.value == stored

    check()


def _as_form(field, value):
    shown = answers.shown_from_value(field, value)
    if field["type"] == "date":
        return {f"{field['name']}__{k}": v for k, v in shown.items()}
    return {field["name"]: shown}


@SETTINGS
@given(raw=st.binary(max_size=200))
def test_undecodable_bytes_in_a_form_are_refused_cleanly(raw, tmp_path_factory):
    # Raw bytes that are not UTF-8 become U+FFFD when decoded; they must still give a page, not a 500.
    app = _shared_app(tmp_path_factory)
    client = app.test_client()
    proc = next(iter(app.config["CATALOG"].values()))
    start(client, proc.slug)
    path = f"/p/{proc.slug}/q/{proc.pages[0]['id']}"
    token = csrf_token(client.get(path).text)
    body = f"csrf_token={token}&".encode() + "&".join(
        f"{f['name']}={quote_from_bytes(raw)}" for f in proc.pages[0]["fields"]).encode()
    response = client.post(path, data=body, content_type="application/x-www-form-urlencoded")
    assert response.status_code in (303, 422)


_APPS = {}


def _shared_app(factory):
    if "app" not in _APPS:
        _APPS["app"] = create_app({"paths": {"data": str(factory.mktemp("fuzz") / "var")}})
    return _APPS["app"]
