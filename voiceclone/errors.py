"""Every failure a webhook caller can see: one exception type per error code.

Each type carries its `error_code` (docs/api.md) and HTTP status, so the HTTP layer maps
exceptions to responses without a lookup table that could drift from the types.
"""

from __future__ import annotations


class ServiceError(Exception):
    """Base of the errors that become a JSON error response."""

    code = "INTERNAL_ERROR"
    http_status = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidSignature(ServiceError):
    code, http_status = "INVALID_SIGNATURE", 401


class SignatureExpired(ServiceError):
    code, http_status = "SIGNATURE_EXPIRED", 401


class InvalidPayload(ServiceError):
    code, http_status = "INVALID_PAYLOAD", 400


class MissingVoiceSample(ServiceError):
    code, http_status = "MISSING_VOICE_SAMPLE", 400


class InvalidAudio(ServiceError):
    code, http_status = "INVALID_AUDIO", 400


class SampleTooShort(ServiceError):
    code, http_status = "SAMPLE_TOO_SHORT", 400


class SampleTooLarge(ServiceError):
    code, http_status = "SAMPLE_TOO_LARGE", 413


class UnsupportedAudioFormat(ServiceError):
    code, http_status = "UNSUPPORTED_AUDIO_FORMAT", 415


class VoiceCloningFailed(ServiceError):
    code, http_status = "VOICE_CLONING_FAILED", 422


class SampleQualityTooLow(ServiceError):
    """The sample cannot make a good clone (docs/quality-gate.md): every failed check is named in
    `reasons`, and `quality` holds the measures (numbers only), so a caller can say what to fix."""

    code, http_status = "SAMPLE_QUALITY_TOO_LOW", 422

    def __init__(self, message: str, reasons: tuple[str, ...], quality: dict[str, object]) -> None:
        super().__init__(message)
        self.reasons = reasons
        self.quality = quality


class UpstreamTimeout(ServiceError):
    code, http_status = "UPSTREAM_TIMEOUT", 504


class InternalError(ServiceError):
    code, http_status = "INTERNAL_ERROR", 500


class RequestTimeout(ServiceError):
    """The client stalled while sending its request (docs/design.md); it is cut off."""

    code, http_status = "REQUEST_TIMEOUT", 408


class RouteNotFound(ServiceError):
    code, http_status = "NOT_FOUND", 404


class MethodNotAllowed(ServiceError):
    code, http_status = "METHOD_NOT_ALLOWED", 405
