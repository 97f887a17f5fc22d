"""`X-Twilio-Signature` checked as Twilio computes it, with the `twilio` package's `RequestValidator`.

Twilio signs the URL it called (https://www.twilio.com/docs/usage/webhooks/webhooks-security):
HMAC-SHA1 over the full URL, query included, followed by the POST parameters sorted by name. Behind
Cloud Run the request's own URL says `http://` (TLS ends at Google's front end), so the URL is rebuilt
from `PUBLIC_BASE_URL`, or else from `X-Forwarded-Proto` and `Host`.
"""

from __future__ import annotations

from collections.abc import Mapping

from twilio.request_validator import RequestValidator
from werkzeug.datastructures import MultiDict

SIGNATURE_HEADER = "X-Twilio-Signature"


def public_url(public_base_url: str | None, headers: Mapping[str, str], scheme: str, path: str, query: str) -> str:
    """The URL Twilio called: `PUBLIC_BASE_URL` + path + query; unset, the forwarded scheme and the Host."""
    if public_base_url:
        base = public_base_url.rstrip("/")
    else:
        forwarded = (headers.get("X-Forwarded-Proto") or scheme).split(",")[0].strip() or scheme
        base = f"{forwarded}://{headers.get('Host', '')}"
    return f"{base}{path}" + (f"?{query}" if query else "")


def is_valid(url: str, params: MultiDict[str, str], signature: str | None, tokens: tuple[str, ...]) -> bool:
    """True when any of `tokens` (rotation) signed this URL and form. Every token is tried, so the
    time taken does not tell which one matched; each comparison is constant-time (the validator's)."""
    if not signature or not tokens:
        return False
    matched = False
    for token in tokens:
        matched |= RequestValidator(token).validate(url, params, signature)
    return matched
