"""Only Twilio, signing the URL it called, reaches the telephony routes; no form makes them fail with a 500."""

from __future__ import annotations

from urllib.parse import urlencode

import pytest
import requests
from twilio.request_validator import RequestValidator

from sandbox.processes import FunctionServer
from sandbox.twilio_server import FakeTwilio
from tests.conftest import wait_until
from tests.telephony_stack import (  # noqa: F401 - fixtures
    PUBLIC_BASE_URL,
    log_lines,
    shared_service,
    start_service,
    telephony_agent,
    twilio,
    twilio_server,
)

CALL = {"AccountSid": "", "CallSid": "CA" + "ab" * 16, "From": "+31612345678", "To": "+31201234567",
        "CallStatus": "ringing", "Direction": "inbound"}


def form(twilio: FakeTwilio, **changes: str) -> dict[str, str]:
    return {**CALL, "AccountSid": twilio.account_sid, **changes}


def post(service: FunctionServer, path: str, params: dict[str, str] | bytes, signature: str | None,
         **headers: str) -> requests.Response:
    sent = dict(headers, **({"X-Twilio-Signature": signature} if signature is not None else {}))
    sent.setdefault("Content-Type", "application/x-www-form-urlencoded")
    body = params if isinstance(params, bytes) else urlencode(params)
    return requests.post(service.url + path, data=body, headers=sent, timeout=10)


def signed(token: str, url: str, params: dict[str, str]) -> str:
    return RequestValidator(token).compute_signature(url, params)


def test_a_correctly_signed_call_is_answered_with_the_consent_question(fake, twilio, shared_service):
    params = form(twilio)
    answer = post(shared_service, "/twilio/voice", params, signed(twilio.auth_token, PUBLIC_BASE_URL + "/twilio/voice", params))
    assert answer.status_code == 200 and answer.headers["Content-Type"].startswith("text/xml")
    assert "<Gather" in answer.text and f"{PUBLIC_BASE_URL}/twilio/consent" in answer.text


@pytest.mark.parametrize("case", ["missing", "wrong_token", "http_url_behind_the_proxy", "loopback_url", "one_value_changed",
                                  "other_path"])
def test_a_missing_or_wrong_signature_is_403_without_twiml(fake, twilio, shared_service, case):
    params = form(twilio)
    url = PUBLIC_BASE_URL + "/twilio/voice"
    signature = {
        "missing": None,
        "wrong_token": signed("not-the-token", url, params),
        "http_url_behind_the_proxy": signed(twilio.auth_token, url.replace("https://", "http://"), params),
        "loopback_url": signed(twilio.auth_token, shared_service.url + "/twilio/voice", params),
        "one_value_changed": signed(twilio.auth_token, url, params),
        "other_path": signed(twilio.auth_token, PUBLIC_BASE_URL + "/twilio/consent", params),
    }[case]
    if case == "one_value_changed":
        params = {**params, "From": "+31600000000"}  # a replayed form with one field altered
    answer = post(shared_service, "/twilio/voice", params, signature)
    assert answer.status_code == 403 and "<Response" not in answer.text
    assert wait_until(lambda: any(line.get("reason") == "INVALID_TWILIO_SIGNATURE"
                                  for line in log_lines(shared_service, "signature_rejected")))


def test_without_public_base_url_the_forwarded_scheme_and_host_are_signed_and_every_token_is_accepted(fake, twilio,
                                                                                                      start_service):
    telephony_agent(fake)
    service = start_service(PUBLIC_BASE_URL="", TWILIO_AUTH_TOKEN=f"rotated-new-token,{twilio.auth_token}")
    params = form(twilio)
    url = "https://voice.example.org/twilio/voice"
    for token in ("rotated-new-token", twilio.auth_token):
        answer = post(service, "/twilio/voice", params, signed(token, url, params), Host="voice.example.org",
                      **{"X-Forwarded-Proto": "https"})
        assert answer.status_code == 200, answer.text
    plain = post(service, "/twilio/voice", params, signed(twilio.auth_token, url, params), Host="voice.example.org")
    assert plain.status_code == 403  # without X-Forwarded-Proto the URL is http://, which Twilio did not sign


@pytest.mark.parametrize("body,status", [
    (b"", 400),  # no CallSid
    (b"CallSid=CA123", 400),
    (b"CallSid=" + b"\xff" * 34, 400),
    (b"&".join(b"f%d=1" % i for i in range(300)), 400),
    (b"CallSid=CA" + b"ab" * 16 + b"&RecordingSid=not-a-sid", 400),
    (b"%%%&&&===", 400),
    (b"x=" + b"a" * (70 * 1024), 413),
])
def test_malformed_forms_are_a_4xx_never_a_500(fake, twilio, shared_service, body, status):
    text = body.decode("latin-1")
    params = {k: v for k, _, v in (p.partition("=") for p in text.split("&") if p)} if status == 400 else {}
    signature = RequestValidator(twilio.auth_token).compute_signature(PUBLIC_BASE_URL + "/twilio/recording", params)
    answer = post(shared_service, "/twilio/recording", body, signature)
    assert answer.status_code == status, answer.text


def test_other_methods_are_405(fake, twilio, shared_service):
    assert requests.get(shared_service.url + "/twilio/voice", timeout=5).status_code == 405


def test_a_recording_url_outside_this_twilio_account_is_never_fetched(fake, twilio, shared_service):
    params = form(twilio, RecordingStatus="completed", RecordingSid="RE" + "cd" * 16,
                  RecordingUrl="https://attacker.example/2010-04-01/Accounts/x/Recordings/RE" + "cd" * 16)
    answer = post(shared_service, "/twilio/recording?attempt=1", params,
                  signed(twilio.auth_token, PUBLIC_BASE_URL + "/twilio/recording?attempt=1", params))
    assert answer.status_code == 204
    assert not twilio.requests_to("GET", r".*\.wav")
    assert wait_until(lambda: any(line["reason"] == "untrusted_recording_url"
                                  for line in log_lines(shared_service, "twilio_fallback")))


def test_twilio_routes_are_404_when_the_front_is_off(make_client, monkeypatch):
    monkeypatch.delenv("TWILIO_ACCOUNT_SID", raising=False)
    answer = make_client().post("/twilio/voice", data=b"CallSid=x")
    assert answer.status_code == 404 and answer.json["error_code"] == "NOT_FOUND"


def test_status_ended_publishes_call_ended_and_others_are_acknowledged(fake, twilio, shared_service):
    for status in ("ringing", "in-progress", "completed", "busy", "failed", "no-answer", "canceled"):
        params = form(twilio, CallStatus=status, CallSid="CA" + status.encode().hex().ljust(32, "0")[:32])
        answer = post(shared_service, "/twilio/status", params,
                      signed(twilio.auth_token, PUBLIC_BASE_URL + "/twilio/status", params))
        assert answer.status_code == 204
    ended = wait_until(lambda: len(log_lines(shared_service, "twilio_call_ended")) == 5 and
                       log_lines(shared_service, "twilio_call_ended"))
    assert sorted(line["call_status"] for line in ended) == ["busy", "canceled", "completed", "failed", "no-answer"]
