"""Settings from environment variables (docs/configuration.md), validated once at start-up.

`load_settings` raises `ConfigError` naming the first bad variable; `main.py` turns that into
one line on stderr and a non-zero exit, so a misconfigured instance never serves traffic.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from .naming import ID_PATTERN
from .secret_manager import SecretReferenceError, SecretResolver

DEFAULT_BASE_URL = "https://api.elevenlabs.io"
DEFAULT_FIRST_MESSAGE_TEMPLATE = "Hallo {name}, fijn dat je belt!"
DEFAULT_FIRST_MESSAGE = "Hallo, fijn dat je belt!"
AGENT_UPDATE_MODES = ("patch", "override", "both")
SAMPLE_QUALITY_GATES = ("enforce", "report", "off")
MAX_MIN_SPEECH_SECONDS = 20.0  # precall.quality.MAX_ANALYSED_SECONDS: what the gate measures
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
# Every environment variable the service reads (PUBSUB_EMULATOR_HOST through google-cloud-pubsub).
ENVIRONMENT_VARIABLES = (
    "ELEVENLABS_API_KEY", "ELEVENLABS_WEBHOOK_SECRET", "ELEVENLABS_BASE_URL", "ELEVENLABS_AGENT_ID",
    "FIRST_MESSAGE_TEMPLATE", "FIRST_MESSAGE_DEFAULT", "AGENT_UPDATE_MODE", "WEBHOOK_TOLERANCE_SECONDS",
    "MAX_SAMPLE_BYTES", "MIN_SAMPLE_SECONDS", "CLONE_SAMPLE_MAX_SECONDS", "REMOVE_BACKGROUND_NOISE",
    "REQUEST_DEADLINE_SECONDS", "VOICE_EVENTS_TOPIC", "VOICE_CLONE_AUTO_DELETE", "VOICE_CLONE_TTL_SECONDS",
    "DEBUG_SAMPLE_DIR", "LOG_LEVEL", "PUBSUB_EMULATOR_HOST", "GOOGLE_CLOUD_PROJECT",
    "INIT_WEBHOOK_SECRET", "INIT_WEBHOOK_HEADER", "INIT_DYNAMIC_VARIABLES", "PREPARED_CLONE_MAX_AGE_SECONDS",
    "LOCAL_QUEUE_PATH",
    "PUBLIC_BASE_URL", "TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN", "TWILIO_API_BASE_URL", "TWILIO_CONSENT",
    "TWILIO_LANGUAGE", "TWILIO_PROMPT_CONSENT", "TWILIO_PROMPT_RECORD", "TWILIO_PROMPT_RETRY", "TWILIO_PROMPT_HOLD",
    "TWILIO_RECORD_SECONDS", "TWILIO_HOLD_SECONDS", "TWILIO_HOLD_AUDIO_URL",
    "SAMPLE_QUALITY_GATE", "MIN_SPEECH_SECONDS",
)
DEFAULT_INIT_WEBHOOK_HEADER = "X-Precall-Secret"
# Relative to the working directory; `:memory:` keeps the queue in the process (lost on restart).
DEFAULT_LOCAL_QUEUE_PATH = ".precall/voice-events.sqlite3"
DEFAULT_TWILIO_API_BASE_URL = "https://api.twilio.com"
TWILIO_CONSENT_MODES = ("required", "off")
# What a caller hears on the Twilio number (docs/telephony.md), in the greeting's style and language.
DEFAULT_PROMPT_CONSENT = ("Hallo, fijn dat je belt! Je spreekt zo met een digitale assistent. Zodat die je in je eigen "
                          "stem kan begroeten, nemen we een paar seconden van je stem op; de opname en de stem worden "
                          "na het gesprek gewist. Druk op 1 als je dat goed vindt. Druk op een andere toets om "
                          "zonder je eigen stem verder te gaan.")
DEFAULT_PROMPT_RECORD = "Vertel na de piep in een paar zinnen hoe je dag was. Stop gewoon met praten als je klaar bent."
DEFAULT_PROMPT_RETRY = "Dat was helaas niet goed te horen. Probeer het nog één keer na de piep, op een rustige plek."
DEFAULT_PROMPT_HOLD = "Dank je wel! Een ogenblik, je wordt zo doorverbonden."
_ACCOUNT_SID = re.compile(r"AC[0-9a-fA-F]{32}")


class ConfigError(ValueError):
    """A missing or invalid setting; the message starts with the variable's name."""

    def __init__(self, variable: str, problem: str) -> None:
        super().__init__(f"{variable}: {problem}")
        self.variable = variable


@dataclass(frozen=True)
class Settings:
    elevenlabs_api_key: str
    webhook_secrets: tuple[str, ...]
    elevenlabs_base_url: str = DEFAULT_BASE_URL
    default_agent_id: str | None = None
    first_message_template: str = DEFAULT_FIRST_MESSAGE_TEMPLATE
    first_message_default: str = DEFAULT_FIRST_MESSAGE
    agent_update_mode: str = "patch"
    webhook_tolerance_seconds: int = 1800
    max_sample_bytes: int = 10 * 1024 * 1024
    min_sample_seconds: float = 3.0
    clone_sample_max_seconds: float = 0.0
    remove_background_noise: bool = False
    request_deadline_seconds: float = 60.0
    voice_events_topic: str | None = None
    voice_clone_auto_delete: bool = True
    voice_clone_ttl_seconds: int = 7200
    debug_sample_dir: str | None = None
    log_level: str = "INFO"
    google_cloud_project: str | None = None
    init_webhook_secrets: tuple[str, ...] = ()
    init_webhook_header: str = DEFAULT_INIT_WEBHOOK_HEADER
    init_dynamic_variables: tuple[tuple[str, str], ...] = ()
    prepared_clone_max_age_seconds: int = 900
    local_queue_path: str = DEFAULT_LOCAL_QUEUE_PATH
    public_base_url: str | None = None
    twilio_account_sid: str | None = None
    twilio_auth_tokens: tuple[str, ...] = ()
    twilio_api_base_url: str = DEFAULT_TWILIO_API_BASE_URL
    twilio_consent: str = "required"
    twilio_language: str = "nl-NL"
    twilio_prompt_consent: str = DEFAULT_PROMPT_CONSENT
    twilio_prompt_record: str = DEFAULT_PROMPT_RECORD
    twilio_prompt_retry: str = DEFAULT_PROMPT_RETRY
    twilio_prompt_hold: str = DEFAULT_PROMPT_HOLD
    twilio_record_seconds: int = 12
    twilio_hold_seconds: int = 25
    twilio_hold_audio_url: str | None = None

    @property
    def telephony_enabled(self) -> bool:
        """The Twilio front (docs/telephony.md) is on exactly when an account is configured."""
        return self.twilio_account_sid is not None

    sample_quality_gate: str = "enforce"  # enforce: refuse a bad sample; report: measure and log only; off
    min_speech_seconds: float = 2.0

    @property
    def measures_quality(self) -> bool:
        return self.sample_quality_gate != "off"

    @property
    def enforces_quality(self) -> bool:
        return self.sample_quality_gate == "enforce"

    @property
    def max_body_bytes(self) -> int:
        """Largest accepted pre-call body: base64 of the largest sample plus 64 KiB of JSON."""
        return self.max_sample_bytes * 4 // 3 + 64 * 1024

    @property
    def patches_agent(self) -> bool:
        return self.agent_update_mode in ("patch", "both")

    @property
    def returns_overrides(self) -> bool:
        return self.agent_update_mode in ("override", "both")


def load_settings(
    env: Mapping[str, str],
    resolver: SecretResolver | None = None,
    require_webhook_secret: bool = True,
) -> Settings:
    """Build validated settings; secret values may be `sm://` references."""
    project = _optional(env, "GOOGLE_CLOUD_PROJECT")
    resolver = resolver or SecretResolver(project)
    api_key = _secret(env, "ELEVENLABS_API_KEY", resolver, required=True)
    secret_text = _secret(env, "ELEVENLABS_WEBHOOK_SECRET", resolver, required=require_webhook_secret)
    secrets = _split(secret_text)
    if require_webhook_secret and not secrets:
        raise ConfigError("ELEVENLABS_WEBHOOK_SECRET", "is required")
    init_secrets = _split(_secret(env, "INIT_WEBHOOK_SECRET", resolver, required=False)) if require_webhook_secret else ()

    template = env.get("FIRST_MESSAGE_TEMPLATE", DEFAULT_FIRST_MESSAGE_TEMPLATE)
    try:
        template.format(name="x")
    except (KeyError, IndexError, ValueError) as exc:
        raise ConfigError("FIRST_MESSAGE_TEMPLATE", f"only {{name}} may be used ({exc})") from None

    mode = env.get("AGENT_UPDATE_MODE", "patch").strip().lower()
    if mode not in AGENT_UPDATE_MODES:
        raise ConfigError("AGENT_UPDATE_MODE", f"must be one of {', '.join(AGENT_UPDATE_MODES)}")
    gate = env.get("SAMPLE_QUALITY_GATE", "enforce").strip().lower() or "enforce"
    if gate not in SAMPLE_QUALITY_GATES:
        raise ConfigError("SAMPLE_QUALITY_GATE", f"must be one of {', '.join(SAMPLE_QUALITY_GATES)}")
    log_level = env.get("LOG_LEVEL", "INFO").strip().upper()
    if log_level not in LOG_LEVELS:
        raise ConfigError("LOG_LEVEL", f"must be one of {', '.join(LOG_LEVELS)}")
    base_url = _url(env, "ELEVENLABS_BASE_URL", DEFAULT_BASE_URL)
    agent_id = _optional(env, "ELEVENLABS_AGENT_ID")
    if agent_id is not None and not ID_PATTERN.fullmatch(agent_id):
        raise ConfigError("ELEVENLABS_AGENT_ID", "must be letters, digits, '-' or '_'")
    twilio = _twilio(env, resolver, agent_id)
    resolver.close()

    return Settings(
        elevenlabs_api_key=api_key,
        webhook_secrets=secrets,
        elevenlabs_base_url=base_url,
        default_agent_id=agent_id,
        first_message_template=template,
        first_message_default=env.get("FIRST_MESSAGE_DEFAULT", DEFAULT_FIRST_MESSAGE),
        agent_update_mode=mode,
        webhook_tolerance_seconds=_int(env, "WEBHOOK_TOLERANCE_SECONDS", 1800, minimum=1),
        max_sample_bytes=_int(env, "MAX_SAMPLE_BYTES", 10 * 1024 * 1024, minimum=1),
        min_sample_seconds=_float(env, "MIN_SAMPLE_SECONDS", 3.0, minimum=0.0),
        clone_sample_max_seconds=_float(env, "CLONE_SAMPLE_MAX_SECONDS", 0.0, minimum=0.0),
        remove_background_noise=_bool(env, "REMOVE_BACKGROUND_NOISE", False),
        request_deadline_seconds=_float(env, "REQUEST_DEADLINE_SECONDS", 60.0, minimum=1.0),
        voice_events_topic=_topic(env, project),
        voice_clone_auto_delete=_bool(env, "VOICE_CLONE_AUTO_DELETE", True),
        voice_clone_ttl_seconds=_int(env, "VOICE_CLONE_TTL_SECONDS", 7200, minimum=60),
        debug_sample_dir=_optional(env, "DEBUG_SAMPLE_DIR"),
        log_level=log_level,
        google_cloud_project=project,
        init_webhook_secrets=init_secrets,
        init_webhook_header=_header_name(env),
        init_dynamic_variables=_dynamic_variables(env),
        prepared_clone_max_age_seconds=_int(env, "PREPARED_CLONE_MAX_AGE_SECONDS", 900, minimum=1),
        local_queue_path=_optional(env, "LOCAL_QUEUE_PATH") or DEFAULT_LOCAL_QUEUE_PATH,
        sample_quality_gate=gate,
        min_speech_seconds=_min_speech_seconds(env),
        **twilio,
    )


def _twilio(env: Mapping[str, str], resolver: SecretResolver, agent_id: str | None) -> dict[str, object]:
    """The telephony front's settings. Off (no account SID) they are still read, so a typo in one
    is reported before the front is switched on."""
    sid = _optional(env, "TWILIO_ACCOUNT_SID")
    if sid is not None and not _ACCOUNT_SID.fullmatch(sid):
        raise ConfigError("TWILIO_ACCOUNT_SID", "must be AC followed by 32 hex digits (Twilio Console, Account Info)")
    tokens = _split(_secret(env, "TWILIO_AUTH_TOKEN", resolver, required=sid is not None)) if sid else ()
    if sid is not None and not tokens:
        raise ConfigError("TWILIO_AUTH_TOKEN", "is required with TWILIO_ACCOUNT_SID")
    if sid is not None and agent_id is None:
        raise ConfigError("ELEVENLABS_AGENT_ID", "is required with TWILIO_ACCOUNT_SID (the agent Twilio calls reach)")
    consent = env.get("TWILIO_CONSENT", "required").strip().lower() or "required"
    if consent not in TWILIO_CONSENT_MODES:
        raise ConfigError("TWILIO_CONSENT", f"must be one of {', '.join(TWILIO_CONSENT_MODES)}")
    public = _optional(env, "PUBLIC_BASE_URL")
    hold_audio = _optional(env, "TWILIO_HOLD_AUDIO_URL")
    return {
        "public_base_url": _url(env, "PUBLIC_BASE_URL", "") if public else None,
        "twilio_account_sid": sid,
        "twilio_auth_tokens": tokens,
        "twilio_api_base_url": _url(env, "TWILIO_API_BASE_URL", DEFAULT_TWILIO_API_BASE_URL),
        "twilio_consent": consent,
        "twilio_language": _optional(env, "TWILIO_LANGUAGE") or "nl-NL",
        "twilio_prompt_consent": _optional(env, "TWILIO_PROMPT_CONSENT") or DEFAULT_PROMPT_CONSENT,
        "twilio_prompt_record": _optional(env, "TWILIO_PROMPT_RECORD") or DEFAULT_PROMPT_RECORD,
        "twilio_prompt_retry": _optional(env, "TWILIO_PROMPT_RETRY") or DEFAULT_PROMPT_RETRY,
        "twilio_prompt_hold": _optional(env, "TWILIO_PROMPT_HOLD") or DEFAULT_PROMPT_HOLD,
        "twilio_record_seconds": _int(env, "TWILIO_RECORD_SECONDS", 12, minimum=1),
        "twilio_hold_seconds": _int(env, "TWILIO_HOLD_SECONDS", 25, minimum=1),
        "twilio_hold_audio_url": _url(env, "TWILIO_HOLD_AUDIO_URL", "") if hold_audio else None,
    }


def _url(env: Mapping[str, str], name: str, default: str) -> str:
    value = (env.get(name, "").strip() or default).rstrip("/")
    if not re.match(r"^https?://[^/\s]+\S*$", value):
        raise ConfigError(name, "must be an http(s) URL")
    return value


def _min_speech_seconds(env: Mapping[str, str]) -> float:
    """The gate measures the first 20 s of a sample: asking for more speech would refuse every one."""
    seconds = _float(env, "MIN_SPEECH_SECONDS", 2.0, minimum=0.0)
    if seconds > MAX_MIN_SPEECH_SECONDS:
        raise ConfigError("MIN_SPEECH_SECONDS", f"must be at most {MAX_MIN_SPEECH_SECONDS:g} (the quality gate measures "
                          f"the first {MAX_MIN_SPEECH_SECONDS:g} s of a sample)")
    return seconds


def _split(secret_text: str) -> tuple[str, ...]:
    """Comma-separated secrets (rotation: old and new both accepted while ElevenLabs switches)."""
    return tuple(part.strip() for part in secret_text.split(",") if part.strip())


def _header_name(env: Mapping[str, str]) -> str:
    name = env.get("INIT_WEBHOOK_HEADER", "").strip() or DEFAULT_INIT_WEBHOOK_HEADER
    if not re.fullmatch(r"[A-Za-z0-9-]{1,64}", name):
        raise ConfigError("INIT_WEBHOOK_HEADER", "must be an HTTP header name (letters, digits, '-')")
    return name


def _dynamic_variables(env: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    """INIT_DYNAMIC_VARIABLES: a JSON object of defaults; values become strings (ElevenLabs wants them)."""
    raw = env.get("INIT_DYNAMIC_VARIABLES", "").strip()
    if not raw:
        return ()
    try:
        document = json.loads(raw)
    except ValueError:
        raise ConfigError("INIT_DYNAMIC_VARIABLES", "must be a JSON object") from None
    if not isinstance(document, dict):
        raise ConfigError("INIT_DYNAMIC_VARIABLES", "must be a JSON object")
    variables = []
    for key, value in document.items():
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,63}", key) or key.startswith("system__"):
            raise ConfigError("INIT_DYNAMIC_VARIABLES", f"{key!r} is not a dynamic variable name you may set")
        if isinstance(value, (dict, list)) or value is None:
            raise ConfigError("INIT_DYNAMIC_VARIABLES", f"{key!r} must be a string, number or boolean")
        variables.append((key, value if isinstance(value, str) else json.dumps(value)))
    return tuple(variables)


def _optional(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(name, "").strip()
    return value or None


def _secret(env: Mapping[str, str], name: str, resolver: SecretResolver, required: bool) -> str:
    raw = env.get(name, "").strip()
    if not raw:
        if required:
            raise ConfigError(name, "is required")
        return ""
    try:
        value = resolver.resolve(raw)
    except SecretReferenceError as exc:
        raise ConfigError(name, str(exc)) from None
    except Exception as exc:  # Secret Manager unreachable, denied, missing version...
        raise ConfigError(name, f"could not read the secret from Secret Manager ({type(exc).__name__})") from None
    if not value:
        raise ConfigError(name, "resolved to an empty value")
    return value


def _int(env: Mapping[str, str], name: str, default: int, minimum: int) -> int:
    return int(_number(env, name, default, minimum, int, "a whole number"))


def _float(env: Mapping[str, str], name: str, default: float, minimum: float) -> float:
    return _number(env, name, default, minimum, float, "a number")


def _number(env: Mapping[str, str], name: str, default: float, minimum: float,
            parse: Callable[[str], float], kind: str) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = parse(raw)
    except ValueError:
        raise ConfigError(name, f"must be {kind}, got {raw!r}") from None
    if not value >= minimum:
        raise ConfigError(name, f"must be at least {minimum:g}")
    return value


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ConfigError(name, f"must be true or false, got {raw!r}")


def _topic(env: Mapping[str, str], project: str | None) -> str | None:
    raw = _optional(env, "VOICE_EVENTS_TOPIC")
    if raw is None:
        return None
    if re.fullmatch(r"projects/[^/]+/topics/[^/]+", raw):
        return raw
    if "/" in raw:
        raise ConfigError("VOICE_EVENTS_TOPIC", "must be projects/P/topics/T or a bare topic name")
    if not project:
        raise ConfigError("VOICE_EVENTS_TOPIC", "a bare topic name needs GOOGLE_CLOUD_PROJECT")
    return f"projects/{project}/topics/{raw}"
