"""Properties of the wire protocol: what is signed cannot be changed unnoticed."""
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from sync import protocol

KEY = Ed25519PrivateKey.generate()
OTHER = Ed25519PrivateKey.generate()
text = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=40)
documents = st.fixed_dictionaries({"type": st.just(protocol.ACK), "submission_id": text,
                                   "payload_sha256": text, "central_code": text, "n": st.integers()})


@settings(max_examples=60, deadline=None)
@given(documents, st.sampled_from(["submission_id", "payload_sha256", "central_code", "n"]))
def test_a_signed_document_opens_only_unchanged_and_only_with_the_centrals_key(doc, field):
    envelope = protocol.sign_document(KEY, doc)
    assert protocol.open_document(KEY.public_key(), envelope, protocol.ACK) == doc
    with pytest.raises(protocol.NotGenuine):
        protocol.open_document(OTHER.public_key(), envelope, protocol.ACK)
    changed = {**doc, field: (doc[field] + 1) if isinstance(doc[field], int) else doc[field] + "x"}
    with pytest.raises(protocol.NotGenuine):
        protocol.open_document(KEY.public_key(), {**envelope, "document": changed}, protocol.ACK)
    with pytest.raises(protocol.NotGenuine):
        protocol.open_document(KEY.public_key(), envelope, protocol.REJECT)


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=200), st.sampled_from(["method", "path", "body", "station"]))
def test_a_signed_request_verifies_only_as_sent(body, part):
    headers = protocol.sign_request(KEY, "K01", "PUT", "/api/v1/submissions/x", body)
    protocol.verify_request(KEY.public_key(), headers, "PUT", "/api/v1/submissions/x", body)
    method, path, sent = "PUT", "/api/v1/submissions/x", body
    if part == "method":
        method = "POST"
    elif part == "path":
        path += "y"
    elif part == "body":
        sent = body + b"!"
    else:
        headers = {**headers, protocol.H_STATION: "K02"}
    with pytest.raises(protocol.AuthError):
        protocol.verify_request(KEY.public_key(), headers, method, path, sent)


@pytest.mark.parametrize("value", ["", "not json", "[]", '{"document": 1}', '{"document": {}, "signature": "!!"}'])
def test_anything_that_is_not_an_envelope_is_not_genuine(value):
    with pytest.raises(protocol.NotGenuine):
        protocol.open_document(KEY.public_key(), value, protocol.ACK)


def test_retry_after_takes_seconds_or_a_date_and_is_capped():
    from sync.client import parse_retry_after

    assert parse_retry_after("7") == 7
    assert parse_retry_after("99999") == 3600
    assert parse_retry_after("Thu, 01 Jan 1970 00:00:10 GMT", now=0) == 10
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None
