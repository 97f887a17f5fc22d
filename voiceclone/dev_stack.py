"""The state file of a running `make run` (`.dev/stack.json`), so the operator commands next to it
(`python -m cleanup status`, `python -m precall send|init|post-call|doctor`) need no exports.

`scripts/dev.py` writes it when it starts and removes it when it stops: the services' URLs and the
settings an operator command needs to talk to them. Secrets are written only when they are the
local stack's own (the sandbox key, the local webhook secrets), never a key the user exported. A
file whose process is gone (a stack killed with SIGKILL) is ignored. Variables set in the shell win,
group by group, so a key is never paired with another account's URL (see `GROUPS`).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping, MutableMapping
from pathlib import Path
from typing import Any

STATE_FILE = Path(".dev") / "stack.json"  # relative to the checkout, where `make run` runs
STATE_FILE_VARIABLE = "PRECALL_STACK_FILE"  # another place, for a stack started with --state-file
# Settings that only make sense together: taken from the stack all at once, and only when the shell sets
# none of them. Every other setting in the file is taken on its own when the shell does not set it.
GROUPS = (
    ("ELEVENLABS_API_KEY", "ELEVENLABS_BASE_URL", "ELEVENLABS_AGENT_ID"),
    ("INIT_WEBHOOK_SECRET", "INIT_WEBHOOK_HEADER"),
    ("VOICE_EVENTS_TOPIC", "PUBSUB_EMULATOR_HOST", "GOOGLE_CLOUD_PROJECT"),
)


def state_path(env: Mapping[str, str]) -> Path:
    return Path(env.get(STATE_FILE_VARIABLE) or STATE_FILE)


def write(path: Path, state: Mapping[str, Any], create: bool) -> bool:
    """Write the state (mode 0600: it holds the sandbox's secrets). `create=False` only rewrites a file
    that still exists, and says False when it is gone: `make` deletes it when it is interrupted."""
    flags = os.O_WRONLY | (os.O_CREAT | os.O_TRUNC if create else 0)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(path, flags, 0o600)
    except FileNotFoundError:
        return False
    with os.fdopen(descriptor, "w", encoding="utf-8") as file:
        file.truncate()
        json.dump({**state, "pid": os.getpid()}, file, indent=2)
    return True


def remove(path: Path) -> None:
    """Remove the file if this process wrote it (another stack may have taken the name since)."""
    if (read(path) or {}).get("pid") == os.getpid():
        path.unlink(missing_ok=True)


def read(path: Path) -> dict[str, Any] | None:
    """The state of a stack whose process is alive, else None."""
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
        os.kill(int(state["pid"]), 0)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return state if isinstance(state, dict) else None


def adopt(env: MutableMapping[str, str]) -> dict[str, Any] | None:
    """Fill `env` (normally `os.environ`) from a running stack where the shell leaves settings unset.
    Returns the stack's state when anything was taken, for the one line that says so."""
    path = state_path(env)
    state = read(path)
    settings = state.get("settings") if state else None
    if not isinstance(settings, dict):
        return None
    taken = False
    grouped = {name for group in GROUPS for name in group}
    singles = [(name,) for name in settings if name not in grouped]
    for group in (*GROUPS, *singles):
        if any(name in env for name in group):
            continue
        for name in group:
            if isinstance(settings.get(name), str):
                env[name] = settings[name]
                taken = True
    return {**state, "path": str(path)} if taken else None


def adopt_for_command() -> None:
    """`adopt` for an operator command's own environment, and one line on stderr saying so."""
    state = adopt(os.environ)
    if state is not None:
        print(f"using make run's stack ({state['path']}): precall_webhook {state.get('precall_url')}; "
              "variables exported in this shell take precedence", file=sys.stderr)
