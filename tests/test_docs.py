"""The repository carries its own contract: every route, setting, error code (with its HTTP status) and
event name the code has is written in docs/*.md, found in the code itself so that what is added later
is caught too; and nothing in the repository cites a document a user does not have."""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

from sandbox.processes import ROOT
from voiceclone.config import ENVIRONMENT_VARIABLES
from voiceclone.events import EVENT_TYPES

# Code a user or operator meets: the service, its CLIs and the local stack (not tests, sandbox, bench).
NOT_SHIPPED = ("tests", "sandbox", "bench", "docs", ".venv", ".git", ".dev")
# Read from the environment but not settings of this service: set by Python, the OS or the Google SDK.
NOT_SETTINGS = {"PATH", "HOME", "PYTHONUNBUFFERED", "CLOUDSDK_CORE_DISABLE_PROMPTS"}
# Citations of documents outside the repository (written so that this file does not match itself).
CITATIONS = [re.compile(p) for p in (
    r"\bS[P]EC\b", r"(?i)\bthe s[p]ec\b", r"(?i)\bs[p]ec \d", r"(?i)\bsect[i]on \d", r"(?i)\biss[u]es? #?\d",
    r"(?i)\bthe se[e]d\b", r"(?i)\bse[e]d's\b", r"(?i)\bse[e]ds/", r"(?i)\bdesign docu[m]ent\b",
)]


def docs_text() -> str:
    return "\n".join(page.read_text() for page in sorted((ROOT / "docs").glob("*.md")))


def shipped_sources() -> Iterator[tuple[Path, ast.Module]]:
    for path in sorted(ROOT.rglob("*.py")):
        if not set(path.relative_to(ROOT).parts) & set(NOT_SHIPPED):
            yield path, ast.parse(path.read_text())


def _name(node: ast.AST) -> str:
    return node.id if isinstance(node, ast.Name) else node.attr if isinstance(node, ast.Attribute) else ""


def _constants(tree: ast.Module) -> dict[str, str]:
    """Module-level `NAME = "text"`, so a value passed by name is still found."""
    return {target.id: node.value.value for node in tree.body if isinstance(node, ast.Assign)
            and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)
            for target in node.targets if isinstance(target, ast.Name)}


def _strings(node: ast.AST | None, constants: dict[str, str]) -> list[str] | None:
    """The text(s) an expression can be, or None when it is not written out in the code."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, ast.Name) and node.id in constants:
        return [constants[node.id]]
    if isinstance(node, ast.IfExp):
        body, orelse = _strings(node.body, constants), _strings(node.orelse, constants)
        return None if body is None or orelse is None else body + orelse
    return None


def routes_in_code() -> set[str]:
    """Paths in route tables (`*ROUTES*` mappings), `@app.route(...)`/`add_url_rule(...)`, and `path == "/..."`."""
    found: set[str] = set()
    for _, tree in shipped_sources():
        for node in ast.walk(tree):
            if isinstance(node, ast.Assign) and any("ROUTE" in _name(t).upper() for t in node.targets) \
                    and isinstance(node.value, ast.Dict):
                found |= {k.value for k in node.value.keys if isinstance(k, ast.Constant) and isinstance(k.value, str)}
            elif isinstance(node, ast.Call) and _name(node.func) in ("route", "add_url_rule") and node.args:
                found |= set(_strings(node.args[0], {}) or [])
            elif isinstance(node, ast.Compare) and _name(node.left) == "path":
                found |= {c.value for c in node.comparators if isinstance(c, ast.Constant) and isinstance(c.value, str)}
    return {route for route in found if route.startswith("/") and route != "/"}


def settings_in_code() -> set[str]:
    """`ENVIRONMENT_VARIABLES`, and every name read with `os.environ[...]`, `os.environ.get/setdefault(...)`,
    `os.getenv(...)`, `env.get(...)`, `env[...]` or a helper called as `_x(env, "NAME", ...)`."""
    found = set(ENVIRONMENT_VARIABLES)
    environments = ("environ", "env", "shell")
    for _, tree in shipped_sources():
        constants = _constants(tree)
        for node in ast.walk(tree):
            names: list[str] | None = None
            if isinstance(node, ast.Subscript) and _name(node.value) in environments:
                names = _strings(node.slice, constants)
            elif isinstance(node, ast.Call) and node.args:
                func = node.func
                if _name(func) == "getenv" or (isinstance(func, ast.Attribute) and func.attr in ("get", "setdefault", "pop")
                                               and _name(func.value) in environments):
                    names = _strings(node.args[0], constants)
                elif len(node.args) > 1 and _name(node.args[0]) in environments:
                    names = _strings(node.args[1], constants)
            found |= {n for n in names or [] if re.fullmatch(r"[A-Z][A-Z0-9_]{2,}", n)}
    return found - NOT_SETTINGS


def error_codes_in_code() -> dict[str, int]:
    """Every class that declares `code, http_status = "CODE", STATUS` (or the two apart)."""
    found: dict[str, int] = {}
    for _, tree in shipped_sources():
        for cls in (n for n in ast.walk(tree) if isinstance(n, ast.ClassDef)):
            values: dict[str, object] = {}
            for statement in cls.body:
                if isinstance(statement, ast.Assign) and len(statement.targets) == 1:
                    target, value = statement.targets[0], statement.value
                    if isinstance(target, ast.Tuple) and isinstance(value, ast.Tuple):
                        pairs = zip(target.elts, value.elts)
                    else:
                        pairs = [(target, value)]
                    values.update({_name(t): v.value for t, v in pairs if isinstance(v, ast.Constant)})
            code, status = values.get("code"), values.get("http_status")
            if isinstance(code, str) and isinstance(status, int):
                found[code] = status
    return found


def log_events_in_code() -> tuple[set[str], list[str]]:
    """The `event_type` of every `log_event(...)` call, and the calls whose `event_type` is not written out."""
    found: set[str] = set()
    unreadable: list[str] = []
    for path, tree in shipped_sources():
        constants = _constants(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and _name(node.func) == "log_event" and not isinstance(node.func, ast.Lambda):
                argument = node.args[3] if len(node.args) > 3 else next(
                    (k.value for k in node.keywords if k.arg == "event_type"), None)
                names = _strings(argument, constants)
                if names is None:
                    unreadable.append(f"{path.relative_to(ROOT)}:{node.lineno}")
                found |= set(names or [])
    return found, unreadable


def test_discovery_finds_what_the_code_has_today():
    """The finders themselves: a finder that found nothing would make every other test here pass."""
    assert {"/webhook", "/conversation-init", "/post-call", "/healthz"} <= routes_in_code()
    assert {"ELEVENLABS_API_KEY", "PRECALL_URL", "THREADS"} <= settings_in_code()
    assert error_codes_in_code()["SAMPLE_TOO_LARGE"] == 413 and error_codes_in_code()["NOT_FOUND"] == 404
    assert {"voice_clone_success", "voice_deleted", "elevenlabs_call"} <= log_events_in_code()[0]


def test_every_route_is_documented():
    docs = docs_text()
    assert [r for r in sorted(routes_in_code()) if not re.search(rf"(?<![\w/-]){re.escape(r)}(?![\w-])", docs)] == []


def test_every_setting_is_documented():
    docs = docs_text()
    assert [name for name in sorted(settings_in_code()) if f"`{name}`" not in docs] == []


def test_every_error_code_is_documented_with_its_http_status():
    lines = docs_text().splitlines()
    undocumented = [f"{code} {status}" for code, status in sorted(error_codes_in_code().items())
                    if not any(f"`{code}`" in line and re.search(rf"\b{status}\b", line) for line in lines)]
    assert undocumented == []


def test_every_event_name_is_documented():
    docs = docs_text()
    log_events, unreadable = log_events_in_code()
    assert unreadable == [], "pass log_event's event_type as a string literal or a module constant"
    assert [name for name in sorted(log_events | set(EVENT_TYPES)) if f"`{name}`" not in docs] == []


def repository_files() -> list[Path]:
    """Every file of the checkout but .git and .venv (tracked or not, ignored ones left out), else all on disk."""
    if shutil.which("git") and (ROOT / ".git").exists():
        listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=ROOT,
                                capture_output=True, check=True).stdout.decode().split("\0")
        return [ROOT / name for name in listed if name and (ROOT / name).is_file()]
    return [p for p in ROOT.rglob("*") if p.is_file() and not {".git", ".venv"} & set(p.relative_to(ROOT).parts)]


def test_nothing_cites_a_document_outside_the_repository():
    citations = []
    for path in repository_files():
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue  # audio and other binary files
        for number, line in enumerate(text.splitlines(), 1):
            citations += [f"{path.relative_to(ROOT)}:{number}: {line.strip()}" for p in CITATIONS if p.search(line)][:1]
    assert citations == []


def test_the_readme_starts_with_the_two_commands():
    """A new user's first screen: the two commands, before anything else."""
    lines = [line for line in (ROOT / "README.md").read_text().splitlines() if line.strip()]
    assert lines[1:5] == ["```sh", lines[2], lines[3], "```"]
    assert lines[2].startswith("make run ") and lines[3].startswith("make test ")
