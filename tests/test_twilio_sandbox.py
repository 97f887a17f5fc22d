"""The local Twilio answers like Twilio's REST API: paths, Basic auth, status codes and error bodies."""

from __future__ import annotations

import requests

from sandbox.twilio_server import FakeTwilio
from tests.conftest import wait_until
from tests.telephony_stack import SAMPLE, twilio, twilio_server  # noqa: F401 - fixtures


def api(twilio: FakeTwilio, path: str) -> str:
    return f"{twilio.url}/2010-04-01/Accounts/{twilio.account_sid}{path}"


def test_wrong_credentials_get_twilios_401_body(twilio):
    answer = requests.get(api(twilio, ".json"), auth=(twilio.account_sid, "wrong"), timeout=5)
    assert answer.status_code == 401
    assert answer.json() == {"code": 20003, "message": "Authenticate", "more_info": "https://www.twilio.com/docs/errors/20003",
                             "status": 401}


def test_account_and_incoming_numbers_can_be_read_and_pointed_at_the_service(twilio):
    auth = (twilio.account_sid, twilio.auth_token)
    assert requests.get(api(twilio, ".json"), auth=auth, timeout=5).json()["status"] == "active"
    sid = twilio.add_number("+31201234567")
    listed = requests.get(api(twilio, "/IncomingPhoneNumbers.json"), params={"PhoneNumber": "+31201234567"},
                          auth=auth, timeout=5).json()["incoming_phone_numbers"]
    assert [n["sid"] for n in listed] == [sid]
    updated = requests.post(api(twilio, f"/IncomingPhoneNumbers/{sid}.json"), auth=auth, timeout=5,
                            data={"VoiceUrl": "https://x.run.app/twilio/voice", "StatusCallback": "https://x.run.app/twilio/status"})
    assert updated.json()["voice_url"] == "https://x.run.app/twilio/voice"
    assert twilio.numbers[sid]["status_callback"] == "https://x.run.app/twilio/status"


def test_a_new_recording_is_404_for_a_moment_then_served_behind_basic_auth_and_deletable(twilio):
    auth = (twilio.account_sid, twilio.auth_token)
    twilio.media_delay = 0.5
    recording = twilio.add_recording("CA" + "0" * 32, SAMPLE)
    url = api(twilio, f"/Recordings/{recording.sid}.wav")
    assert requests.get(url, auth=auth, timeout=5).json()["code"] == 20404
    assert requests.get(url, timeout=5).status_code == 401
    served = wait_until(lambda: (r := requests.get(url, auth=auth, timeout=5)).status_code == 200 and r, timeout=5)
    assert served.content == SAMPLE and served.headers["Content-Type"] == "audio/x-wav"
    assert requests.delete(api(twilio, f"/Recordings/{recording.sid}.json"), auth=auth, timeout=5).status_code == 204
    assert requests.delete(api(twilio, f"/Recordings/{recording.sid}.json"), auth=auth, timeout=5).status_code == 404


def test_updating_a_call_that_does_not_exist_is_404(twilio):
    answer = requests.post(api(twilio, f"/Calls/CA{'1' * 32}.json"), auth=(twilio.account_sid, twilio.auth_token),
                           data={"Twiml": "<Response/>"}, timeout=5)
    assert answer.status_code == 404 and answer.json()["code"] == 20404


def test_chaos_fails_the_recording_steps_requests_with_twilios_5xx_and_leaves_the_rest_alone(twilio):
    auth = (twilio.account_sid, twilio.auth_token)
    recording = twilio.add_recording("CA" + "0" * 32, SAMPLE)
    twilio.chaos(1.0, seed=3)
    media = requests.get(api(twilio, f"/Recordings/{recording.sid}.wav"), auth=auth, timeout=5)
    call = requests.get(api(twilio, f"/Calls/CA{'1' * 32}.json"), auth=auth, timeout=5)
    assert media.status_code in (500, 503) and media.json()["status"] == media.status_code
    assert call.status_code in (500, 503)
    assert requests.get(api(twilio, ".json"), auth=auth, timeout=5).status_code == 200  # not a recording step's request
    assert sum(twilio.fault_counts.values()) == 2 and any(k.endswith("media fetch") for k in twilio.fault_counts)
    twilio.chaos(0.0, seed=3)
    assert requests.get(api(twilio, f"/Recordings/{recording.sid}.wav"), auth=auth, timeout=5).status_code == 200
