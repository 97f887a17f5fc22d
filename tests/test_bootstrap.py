"""`scripts/bootstrap.sh` on machines it must not trip over: a Python too old, a virtualenv made by
another (or a broken) Python, a Python that cannot make virtualenvs, test tools it cannot install. Pythons are stand-ins and PATH
holds only the tools the script uses, so nothing is installed and the real .venv is never touched."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from sandbox.processes import ROOT

TOOLS = ["bash", "cat", "cut", "dirname", "head", "id", "rm", "sed", "sha256sum", "sort", "mkdir", "chmod"]  # last two: the stand-ins
# A stand-in interpreter: answers the version, `import pip` (unless NO_PIP), `-m venv DIR` (a copy of
# itself; fails like Debian's python3 without python3-venv when NO_ENSUREPIP), `-m pip install`.
FAKE_PYTHON = """#!/bin/bash
VERSION={version}; NO_PIP={no_pip}; NO_ENSUREPIP={no_ensurepip}
case "$1 $2" in
  "-m venv") [ "$NO_ENSUREPIP" = 1 ] && {{ echo "Error: ensurepip is not available." >&2; exit 1; }}
             mkdir -p "$3/bin"; sed 's/^VERSION=.*; NO_PIP=1/VERSION='$VERSION'; NO_PIP=0/' "$0" > "$3/bin/python"
             chmod +x "$3/bin/python" ;;
  "-m pip") echo "pip $*" >> "$(dirname "$0")/../pip-calls"; echo "Collecting numpy==2.4.6 (from -r x)"
            echo "Successfully installed numpy-2.4.6" ;;
  -c*) case "$2" in *"import pip"*) [ "$NO_PIP" = 1 ] && exit 1 ;; esac; echo "$VERSION" ;;
esac
"""


@pytest.fixture
def machine(tmp_path):
    """A PATH with only what bootstrap needs (no apt-get) and a place for pythons."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in TOOLS:
        (bin_dir / tool).symlink_to(shutil.which(tool))
    return tmp_path


def python(machine: Path, name: str, version: str, no_pip: bool = False, no_ensurepip: bool = False) -> Path:
    path = machine / "bin" / name
    path.write_text(FAKE_PYTHON.format(version=version, no_pip=int(no_pip), no_ensurepip=int(no_ensurepip)))
    path.chmod(0o755)
    return path


def bootstrap(machine: Path, mode: str = "run", **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(ROOT / "scripts" / "bootstrap.sh"), mode], capture_output=True, text=True,
                          timeout=60, env={"PATH": str(machine / "bin"), "VENV": str(machine / "venv"), **env})


def test_a_python_older_than_3_11_is_refused_with_one_line_before_anything_is_installed(machine):
    python(machine, "python3", "3.10")
    result = bootstrap(machine)
    assert result.returncode == 2
    [line] = result.stderr.splitlines()
    assert line.startswith("bootstrap: needs Python 3.11 or newer; found python3 3.10. Install one")
    assert not (machine / "venv").exists()


def test_the_newest_python_found_is_used_when_python3_is_too_old(machine):
    python(machine, "python3", "3.10")
    python(machine, "python3.12", "3.12")
    result = bootstrap(machine)
    assert result.returncode == 0, result.stderr
    assert "creating" in result.stderr and "python3.12 3.12" in result.stderr
    assert (machine / "venv" / ".installed-run").exists()


def test_a_venv_made_by_another_python_is_rebuilt_and_a_working_one_kept(machine):
    python(machine, "python3", "3.12")
    (machine / "venv" / "bin").mkdir(parents=True)
    python(machine, "old", "3.10").rename(machine / "venv" / "bin" / "python")  # made by 3.10 once
    first = bootstrap(machine)
    assert first.returncode == 0, first.stderr
    assert "venv does not work with python3 (3.12): rebuilding it" in first.stderr
    assert "Collecting numpy" in first.stderr + first.stdout  # progress of the long install
    second = bootstrap(machine)
    assert second.returncode == 0 and second.stderr == ""  # nothing to do, nothing said
    assert len((machine / "venv" / "pip-calls").read_text().splitlines()) == 1  # installed once


def test_a_venv_without_pip_is_rebuilt(machine):
    python(machine, "python3", "3.11")
    (machine / "venv" / "bin").mkdir(parents=True)
    python(machine, "half-made", "3.11", no_pip=True).rename(machine / "venv" / "bin" / "python")
    result = bootstrap(machine)
    assert result.returncode == 0, result.stderr
    assert "rebuilding it" in result.stderr and (machine / "venv" / ".installed-run").exists()


def test_a_python_without_venv_support_names_the_debian_package(machine):
    python(machine, "python3", "3.11", no_ensurepip=True)
    result = bootstrap(machine)
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1] == ("bootstrap: install the Debian package python3.11-venv "
                                              "(apt-get install python3.11-venv), then rerun")
    assert not (machine / "venv").exists()  # no half-made virtualenv left to trip over next time


def test_test_tools_it_cannot_install_stop_it_with_the_apt_get_command_to_run(machine):
    python(machine, "python3", "3.12")
    result = bootstrap(machine, "test")  # no apt-get on this PATH, and none of the tools
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1] == ("bootstrap: install them (as root, or with sudo), then rerun: apt-get install "
                                              "-y --no-install-recommends ffmpeg espeak-ng shellcheck default-jre-headless")
    assert not (machine / "venv").exists()  # stopped before anything was installed
