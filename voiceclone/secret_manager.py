"""Resolve `sm://` Secret Manager references in settings (the only Secret Manager I/O).

A value is either the secret itself (e.g. injected by Cloud Run `--set-secrets`) or a reference:
`sm://projects/P/secrets/S/versions/V`, or `sm://S` meaning the `latest` version of S in
`GOOGLE_CLOUD_PROJECT`. References are resolved once per instance and cached.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

SM_PREFIX = "sm://"


class SecretReferenceError(ValueError):
    """A reference that cannot be turned into a secret version name."""


def is_reference(value: str) -> bool:
    return value.startswith(SM_PREFIX)


def version_name(reference: str, project: str | None) -> str:
    """Full Secret Manager version name for a `sm://` reference."""
    path = reference[len(SM_PREFIX):].strip("/")
    parts = path.split("/")
    if len(parts) == 1 and parts[0]:
        if not project:
            raise SecretReferenceError("short sm:// reference needs GOOGLE_CLOUD_PROJECT")
        return f"projects/{project}/secrets/{parts[0]}/versions/latest"
    if len(parts) == 4 and parts[0] == "projects" and parts[2] == "secrets" and all(parts):
        return f"{path}/versions/latest"
    if len(parts) == 6 and parts[0] == "projects" and parts[2] == "secrets" and parts[4] == "versions" and all(parts):
        return path
    raise SecretReferenceError("expected sm://projects/P/secrets/NAME/versions/VERSION or sm://NAME")


class SecretResolver:
    """Turns settings values into secrets, calling Secret Manager once per reference."""

    def __init__(self, project: str | None, client_factory: Callable[[], Any] | None = None) -> None:
        self._project = project
        self._client_factory = client_factory or _default_client
        self._client: Any = None
        self._cache: dict[str, str] = {}
        self._lock = threading.Lock()

    def resolve(self, value: str) -> str:
        if not is_reference(value):
            return value
        name = version_name(value, self._project)
        with self._lock:
            if name not in self._cache:
                if self._client is None:
                    self._client = self._client_factory()
                response = self._client.access_secret_version(request={"name": name})
                self._cache[name] = response.payload.data.decode("utf-8").strip()
            return self._cache[name]

    def close(self) -> None:
        """Drop the client once start-up resolved everything: no gRPC channel survives a fork."""
        with self._lock:
            if self._client is not None:
                transport = getattr(self._client, "transport", None)
                if transport is not None:
                    transport.close()
                self._client = None


def _default_client() -> Any:
    from google.cloud import secretmanager

    return secretmanager.SecretManagerServiceClient()
