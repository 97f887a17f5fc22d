"""Functions-framework entry points (docs/api.md): `precall_webhook` (HTTP), `cleanup_voices` (CloudEvent).

Configuration is validated at import when the serving target is known (FUNCTION_TARGET or
`--target`), so a bad setting stops start-up with one line naming the variable instead of
failing the first call. Imported elsewhere (tests, tools), it is built on first use.
"""

from __future__ import annotations

import os
import sys
import threading
from typing import Any

import flask
import functions_framework
from werkzeug.exceptions import ServiceUnavailable

import serving
from cleanup.handler import RetryLater
from voiceclone.config import ConfigError
from wiring import Runtime, runtime_from_env

_runtime: Runtime | None = None
_lock = threading.Lock()


def _serving_target() -> str | None:
    if os.environ.get("FUNCTION_TARGET"):
        return os.environ["FUNCTION_TARGET"]
    argv = sys.argv
    for index, arg in enumerate(argv):
        if arg == "--target" and index + 1 < len(argv):
            return argv[index + 1]
        if arg.startswith("--target="):
            return arg.split("=", 1)[1]
    return None


def runtime() -> Runtime:
    global _runtime
    with _lock:
        if _runtime is None:
            _runtime = runtime_from_env(os.environ, _serving_target())
        return _runtime


@functions_framework.http
def precall_webhook(request: flask.Request) -> flask.Response:
    return runtime().webhook(request)


@functions_framework.cloud_event
def cleanup_voices(cloud_event: Any) -> None:
    """A clone whose call is still live is the normal case: answered 503 so Pub/Sub redelivers,
    with the handler's one INFO line and no traceback (a raised error would flood Error Reporting)."""
    try:
        runtime().cleanup.handle_cloud_event(cloud_event)
    except RetryLater as later:
        raise ServiceUnavailable(str(later)) from None


if _serving_target() in ("precall_webhook", "cleanup_voices"):
    serving.install()  # before functions-framework builds its gunicorn server
    try:
        runtime()
    except ConfigError as error:
        print(f"configuration error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    # gunicorn builds the app, then forks its worker: warm up in the process that serves.
    os.register_at_fork(after_in_child=runtime().webhook.prepare_worker)
