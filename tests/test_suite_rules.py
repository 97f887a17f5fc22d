"""The suite's own rules hold: under REQUIRE_NO_SKIPS=1 (what .ci/run sets) a skip not on the
allow-list fails, each allow-list entry gives its reason, a hang is cut off by the timeout, and a
test that needs the emulator cannot leave out its mark."""

from __future__ import annotations

import configparser
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ALLOWED_SKIPS, ROOT, allowed_skips, refused_skip

SHELLCHECK_TEST = "tests/test_deploy.py::test_shell_scripts_parse_and_pass_shellcheck"


def run_pytest(args: list[str], bin_dir: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """pytest in a child, with a PATH of only `bin_dir` (so tools the suite needs can be missing)."""
    full_env = {k: v for k, v in os.environ.items() if k not in ("REQUIRE_NO_SKIPS", "PATH")}
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args], cwd=ROOT,
                          env={**full_env, "PATH": str(bin_dir), **env}, capture_output=True, text=True, timeout=120)


@pytest.fixture
def no_shellcheck(tmp_path: Path) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "bash").symlink_to("/bin/bash")
    return bin_dir


def test_a_skip_passes_locally_but_fails_when_ci_forbids_unlisted_skips(no_shellcheck):
    local = run_pytest([f"{SHELLCHECK_TEST}[scripts/bootstrap.sh]"], no_shellcheck)
    assert local.returncode == 0 and "1 skipped" in local.stdout, local.stdout[-2000:]
    ci = run_pytest([f"{SHELLCHECK_TEST}[scripts/bootstrap.sh]"], no_shellcheck, REQUIRE_NO_SKIPS="1")
    assert ci.returncode == 1, ci.stdout[-2000:]
    assert "1 failed" in ci.stdout and "REQUIRE_NO_SKIPS=1 fails every skip not listed" in ci.stdout


def test_a_listed_skip_is_accepted_and_every_entry_must_give_its_reason(tmp_path, monkeypatch):
    monkeypatch.setenv("REQUIRE_NO_SKIPS", "1")
    skipped = pytest.TestReport(f"{SHELLCHECK_TEST}[x.sh]", ("t.py", 1, "t"), {}, "skipped", ("t.py", 1, "Skipped: no"), "call")
    listed = tmp_path / "allowed.txt"
    listed.write_text(f"{SHELLCHECK_TEST}[[]*]  # shellcheck is optional on this machine\n")
    assert allowed_skips(listed) == {f"{SHELLCHECK_TEST}[[]*]": "shellcheck is optional on this machine"}
    assert refused_skip(skipped, listed) is None
    listed.write_text("tests/test_deploy.py::other  # another test\n")
    assert refused_skip(skipped, listed).startswith("skipped (Skipped: no), and REQUIRE_NO_SKIPS=1 fails")
    listed.write_text(f"{SHELLCHECK_TEST}*\n")
    with pytest.raises(pytest.UsageError, match="each entry is"):
        allowed_skips(listed)
    assert all(allowed_skips(ALLOWED_SKIPS).values())  # the real list parses (it is empty: nothing may skip in CI)


def test_a_hanging_test_fails_with_the_timeout_instead_of_stalling_the_run(tmp_path):
    ini = configparser.ConfigParser()
    ini.read(ROOT / "pytest.ini")
    assert 0 < int(ini["pytest"]["timeout"]) <= 120  # every test has one
    hanging = tmp_path / "test_hang.py"
    hanging.write_text("import time\n\ndef test_hangs():\n    time.sleep(600)\n")
    result = run_pytest([str(hanging), "--timeout=2", "--rootdir", str(tmp_path), "-c", str(ROOT / "pytest.ini")],
                        Path("/usr/bin"))
    assert result.returncode == 1 and "Timeout" in result.stdout, result.stdout[-2000:]


def test_a_test_using_the_emulator_without_its_mark_stops_collection(tmp_path):
    unmarked = tmp_path / "test_unmarked.py"
    unmarked.write_text("def test_publishes(pubsub_emulator):\n    pass\n")
    result = run_pytest(["-p", "tests.conftest", "--collect-only", str(unmarked), "--rootdir", str(tmp_path)], Path("/usr/bin"))
    assert result.returncode == 4, result.stdout[-2000:] + result.stderr[-2000:]
    assert "tests using pubsub_emulator without @pytest.mark.emulator: " in result.stderr + result.stdout
