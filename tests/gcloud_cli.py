"""This machine's gcloud as the judge of what the deploy scripts (and the docs) run, without
credentials or network: its command tree (the one shell completion uses: every command and flag of
this installation), the deploy scripts run against `tests/fake_gcloud.sh`, which records every call,
and the `gcloud` commands of README.md and docs/*.md read out of their shell blocks."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


@cache
def sdk_root() -> Path:
    out = subprocess.run(["gcloud", "info", "--format=value(installation.sdk_root)"], capture_output=True, text=True,
                         timeout=120, check=True).stdout.strip()
    return Path(out)


@cache
def command_tree() -> dict[str, Any]:
    """gcloud's static CLI tree: {"commands": {name: subtree}, "flags": {"--flag": kind}}."""
    source = (sdk_root() / "data" / "cli" / "gcloud_completions.py").read_text()
    namespace: dict[str, Any] = {}
    exec(compile(source, "gcloud_completions.py", "exec"), namespace)
    return namespace["STATIC_COMPLETION_CLI_TREE"]


def problems_with(argv: list[str]) -> list[str]:
    """What this gcloud would refuse in `gcloud ARGV`: an unknown command, an unknown flag, a flag
    without its value, or a command group where a command is needed. Empty when all is well."""
    tree = command_tree()
    node, path, problems, positional = tree, [], [], False
    index = 0
    while index < len(argv):
        arg = argv[index]
        index += 1
        if arg.startswith("--"):
            name, has_value = arg.split("=", 1)[0], "=" in arg
            kind = node["flags"].get(name, tree["flags"].get(name))
            if kind is None and name.startswith("--no-"):
                kind = "negated" if node["flags"].get("--" + name[5:]) == "bool" else None
            if kind is None:
                problems.append(f"gcloud {' '.join(path)}: no flag {name}")
            elif kind not in ("bool", "negated") and not has_value:
                index += 1  # `--flag value`
            continue
        if not positional and arg in node["commands"]:
            node = node["commands"][arg]
            path.append(arg)
        else:
            positional = True
    if node["commands"]:
        problems.append(f"gcloud {' '.join(path)}: a command group, not a command")
    return problems


def run_with_fake_gcloud(command: list[str], tmp_path: Path, state: str, env: dict[str, str] | None = None,
                         stdin: str | None = None) -> tuple[subprocess.CompletedProcess[str], list[list[str]]]:
    """Run a deploy script with `gcloud` answered by the recording fake; returns the result and the calls."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    fake = bin_dir / "gcloud"
    if not fake.exists():
        shutil.copy(ROOT / "tests" / "fake_gcloud.sh", fake)
        fake.chmod(0o755)
    record = tmp_path / f"gcloud-calls-{state}.jsonl"
    record.unlink(missing_ok=True)
    full_env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "HOME": str(tmp_path), "GCLOUD_RECORD": str(record),
                "GCLOUD_STATE": state, **(env or {})}
    result = subprocess.run(command, cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=120, input=stdin)
    text = record.read_text() if record.exists() else ""
    calls = [call.split("\x1f")[:-1] for call in text.split("\x1e")[:-1]]
    return result, calls


def without_globals(call: list[str]) -> list[str]:
    """A recorded call without `--project P` / `--project=P` / `--quiet`, for matching by command."""
    out, skip = [], False
    for arg in call:
        if skip:
            skip = False
        elif arg == "--project":
            skip = True
        elif not arg.startswith(("--project=", "--quiet")):
            out.append(arg)
    return out


def calls_of(calls: list[list[str]], *words: str) -> list[list[str]]:
    """The recorded calls of one command, e.g. calls_of(calls, "run", "deploy")."""
    return [c for c in map(without_globals, calls) if c[:len(words)] == list(words)]


def flag(call: list[str], name: str) -> str | None:
    """The value of `--name=value` in a call (None when absent)."""
    return next((a.split("=", 1)[1] for a in call if a.startswith(name + "=")), None)


def shell_blocks(markdown: str) -> list[str]:
    """The text of every ```sh and ```bash block (indented ones too)."""
    blocks, current, language = [], None, None
    for line in markdown.splitlines():
        fence = re.match(r"\s*```(\w*)", line)
        if fence and current is None:
            current, language = [], fence.group(1)
        elif fence:
            if language in ("sh", "bash"):
                blocks.append("\n".join(current))
            current = None
        elif current is not None:
            current.append(line)
    return blocks


def documented_gcloud_commands() -> list[list[str]]:
    """Every `gcloud ...` command of the shell blocks of README.md and docs/*.md (continuations joined), as argv."""
    commands = []
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    for block in (b for page in pages for b in shell_blocks(page.read_text())):
        for line in block.replace("\\\n", " ").splitlines():
            lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
            lexer.whitespace_split, lexer.commenters = True, "#"
            words: list[str] = []
            for token in [*lexer, ";"]:
                if token in (";", "|", "&&", "||"):
                    while words and ("=" in words[0] and not words[0].startswith("-") or words[0] in ("do", "then")):
                        words = words[1:]  # VAR=value gcloud ..., for ...; do gcloud ...
                    if words[:1] == ["gcloud"]:
                        commands.append(words[1:])
                    words = []
                else:
                    words.append(token)
    return commands
