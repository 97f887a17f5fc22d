"""The Twilio REST calls of the telephony front, over one pooled `requests.Session`.

Plain `requests` rather than the `twilio` package's REST client: each call here must end by a
`Deadline` (the caller is on hold), a new recording's `404` must be retried for a few seconds, and
tests point it at the local Twilio with one base URL (`TWILIO_API_BASE_URL`); the twilio client has
per-request timeouts only and a host per product. Retries follow the ElevenLabs client's policy
(voiceclone/elevenlabs_client.py): backoff with full jitter within the deadline, `Retry-After`
honoured, 429/5xx/connection errors only. A call update is retried only when Twilio cannot have
applied it (429, or no connection made): applying it twice would run its TwiML twice.
Authentication: HTTP Basic with the account SID and the first `TWILIO_AUTH_TOKEN`, for the API
and for recording media (https://www.twilio.com/docs/voice/api/recording, "HTTP Basic Authentication").
"""

from __future__ import annotations

import logging
import random
import re
import time
from dataclasses import dataclass
from typing import Any

import requests
from requests.adapters import HTTPAdapter

from voiceclone.deadline import Deadline, DeadlineExceeded
from voiceclone.elevenlabs_client import parse_retry_after
from voiceclone.logs import get_logger, log_event

MEDIA_NOT_FOUND_SECONDS = 5.0  # how long a new recording's 404 is waited out
MEDIA_POLL_SECONDS = 0.2
_log = get_logger("twilio")
_IDS = re.compile(r"/(AC|CA|RE|PN)[0-9a-fA-F]{32}")


@dataclass(frozen=True)
class CallDetails:
    from_number: str
    to_number: str
    caller_name: str | None


class TwilioError(Exception):
    """Twilio answered with an error (`{"code", "message", "status"}`) or could not be reached."""

    def __init__(self, status: int | None, code: int | None, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


class TwilioClient:
    def __init__(self, base_url: str, account_sid: str, auth_token: str, *, connect_timeout: float = 3.0,
                 read_timeout: float = 10.0, pool_size: int = 256, max_attempts: int = 4) -> None:
        self.base_url = base_url.rstrip("/")
        self.account_sid = account_sid
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._max_attempts = max_attempts
        self._session = requests.Session()
        adapter = HTTPAdapter(pool_connections=2, pool_maxsize=pool_size, max_retries=0)
        self._session.mount("http://", adapter)
        self._session.mount("https://", adapter)
        self._session.auth = (account_sid, auth_token)
        self._session.headers.update({"User-Agent": "precall-voice-clone/1.0", "Accept": "application/json"})

    @property
    def _account(self) -> str:
        return f"{self.base_url}/2010-04-01/Accounts/{self.account_sid}"

    def update_call(self, call_sid: str, twiml: str, deadline: Deadline) -> None:
        """`POST .../Calls/{CallSid}.json` with `Twiml`: what the live call runs now (whatever it ran is
        cut off). `Twiml` and `Url` are mutually exclusive, so only `Twiml` is sent
        (https://www.twilio.com/docs/voice/api/call-resource#update-a-call-resource)."""
        self._request("POST", f"{self._account}/Calls/{call_sid}.json", deadline, data={"Twiml": twiml},
                      retry_sent=False)

    def get_call(self, call_sid: str, deadline: Deadline) -> CallDetails:
        """`GET .../Calls/{CallSid}.json`: who calls whom. A recording status callback carries neither
        number nor `CallerName`, and register-call needs both numbers
        (https://www.twilio.com/docs/voice/api/call-resource#fetch-a-call-resource)."""
        try:
            body = self._request("GET", f"{self._account}/Calls/{call_sid}.json", deadline).json()
        except ValueError:
            raise TwilioError(200, None, "Twilio answered the call fetch with no JSON") from None
        body = body if isinstance(body, dict) else {}
        return CallDetails(*(str(body.get(k) or "") for k in ("from", "to")), body.get("caller_name") or None)

    def fetch_recording(self, media_url: str, deadline: Deadline) -> tuple[bytes, int]:
        """The recording's WAV and how many `404`s were waited out first: Twilio may announce a file
        before it serves it, so a 404 is retried for `MEDIA_NOT_FOUND_SECONDS` within the deadline."""
        waited_for = Deadline(min(MEDIA_NOT_FOUND_SECONDS, deadline.remaining()))
        not_found = 0
        while True:
            try:
                return self._request("GET", media_url, deadline, headers={"Accept": "audio/x-wav"}).content, not_found
            except TwilioError as error:
                if error.status != 404 or waited_for.remaining() <= MEDIA_POLL_SECONDS:
                    raise
            not_found += 1
            time.sleep(MEDIA_POLL_SECONDS)

    def delete_recording(self, recording_sid: str, deadline: Deadline) -> bool:
        """`DELETE .../Recordings/{RecordingSid}.json`; False when it was already gone."""
        try:
            self._request("DELETE", f"{self._account}/Recordings/{recording_sid}.json", deadline)
        except TwilioError as error:
            if error.status == 404:
                return False
            raise
        return True

    # -- what `doctor` reads (no side effects) -------------------------------------------------

    def get_account(self, deadline: Deadline) -> dict[str, Any]:
        """`GET /2010-04-01/Accounts/{sid}.json`: answers only to valid credentials
        (https://www.twilio.com/docs/iam/api/account#fetch-an-account-resource)."""
        return _json(self._request("GET", f"{self._account}.json", deadline))

    def incoming_numbers(self, phone_number: str | None, deadline: Deadline) -> list[dict[str, Any]]:
        """`GET .../IncomingPhoneNumbers.json` (filtered by `PhoneNumber` when given; one page of up to 1000,
        https://www.twilio.com/docs/phone-numbers/api/incomingphonenumber-resource#read-multiple-incomingphonenumber-resources).
        The number travels as a query parameter, so it never reaches the `twilio_request` log line."""
        params = {"PageSize": "1000", **({"PhoneNumber": phone_number} if phone_number else {})}
        numbers = _json(self._request("GET", f"{self._account}/IncomingPhoneNumbers.json", deadline,
                                      params=params)).get("incoming_phone_numbers")
        return [n for n in numbers if isinstance(n, dict)] if isinstance(numbers, list) else []

    def _request(self, method: str, url: str, deadline: Deadline, retry_sent: bool = True, **kwargs: Any) -> requests.Response:
        attempt = 0
        while True:
            attempt += 1
            remaining = deadline.check()
            started = time.monotonic()
            retry_after: float | None = None
            try:
                response = self._session.request(method, url, timeout=(min(self._connect_timeout, remaining),
                                                                       min(self._read_timeout, remaining)), **kwargs)
            except (requests.ConnectTimeout, requests.exceptions.SSLError) as error:
                _log_call(method, url, None, started, attempt)
                failure = TwilioError(None, None, f"could not connect to Twilio ({type(error).__name__})")
            except requests.RequestException as error:
                _log_call(method, url, None, started, attempt)
                if deadline.remaining() <= 0:
                    raise DeadlineExceeded(f"{method} Twilio timed out at the deadline") from None
                failure = TwilioError(None, None, f"Twilio request failed ({type(error).__name__})")
                if not retry_sent:
                    raise failure from None
            else:
                _log_call(method, url, response.status_code, started, attempt)
                if response.status_code < 400:
                    return response
                failure = _error(response)
                if response.status_code != 429 and (response.status_code < 500 or not retry_sent):
                    raise failure
                retry_after = parse_retry_after(response.headers.get("Retry-After"))
            if attempt >= self._max_attempts:
                raise failure
            delay = min(2.0, 0.2 * 2 ** (attempt - 1)) * random.random()
            delay = max(delay, retry_after or 0.0)
            if delay >= deadline.remaining():
                raise DeadlineExceeded(f"{method} Twilio: no time left to retry after {failure.message}")
            time.sleep(delay)


def _error(response: requests.Response) -> TwilioError:
    """Twilio's error body: `{"code": 20404, "message": "...", "more_info": "...", "status": 404}`."""
    try:
        body = response.json()
    except ValueError:
        body = {}
    body = body if isinstance(body, dict) else {}
    code = body.get("code") if isinstance(body.get("code"), int) else None
    return TwilioError(response.status_code, code, str(body.get("message") or f"HTTP {response.status_code}")[:200])


def _json(response: requests.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        raise TwilioError(response.status_code, None, "Twilio answered with no JSON") from None
    return body if isinstance(body, dict) else {}


def _log_call(method: str, url: str, status: int | None, started: float, attempt: int) -> None:
    """One `twilio_request` line per attempt: Twilio's response times and statuses by endpoint, ids left out."""
    endpoint = _IDS.sub(lambda m: "/{" + m.group(1) + "}", url.split("/2010-04-01", 1)[-1])
    log_event(_log, logging.INFO, "Twilio request", "twilio_request", method=method, endpoint=endpoint, status=status,
              duration_ms=round((time.monotonic() - started) * 1000, 1), attempt=attempt)
