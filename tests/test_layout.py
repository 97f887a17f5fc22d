"""The layout holds: each function's package keeps to its side, no import cycles, the run path
never imports test or sandbox code, and pure modules import no I/O."""

from __future__ import annotations

import ast
from pathlib import Path

from sandbox.processes import ROOT

RUN_PATH = ("main.py", "wiring.py", "serving", "precall", "cleanup", "voiceclone", "telephony", "doctor")
# Pure logic: bytes/objects in, objects out. No network, Pub/Sub, Secret Manager or HTTP client.
PURE_MODULES = {
    "precall.signature", "precall.payload", "precall.audio", "precall.greeting", "precall.outcome",
    "precall.responses", "precall.postcall", "precall.single_flight", "voiceclone.naming", "voiceclone.events",
    "voiceclone.errors", "voiceclone.deadline", "voiceclone.documents", "voiceclone.readiness", "doctor.checks",
    "doctor.twilio_checks",
    "telephony.signature", "telephony.forms", "telephony.twiml", "telephony.timing",
}
IO_MODULES = ("requests", "google", "flask", "functions_framework", "voiceclone.elevenlabs_client",
              "voiceclone.sinks", "voiceclone.secret_manager", "voiceclone.clones", "precall.service",
              "precall.http_app", "wiring", "telephony.twilio_client")


def module_files() -> dict[str, Path]:
    files: dict[str, Path] = {}
    for entry in RUN_PATH:
        path = ROOT / entry
        for file in ([path] if path.is_file() else sorted(path.glob("*.py"))):
            name = file.relative_to(ROOT).with_suffix("").as_posix().replace("/", ".")
            files[name.removesuffix(".__init__")] = file
    return files


def imports_of(module: str, file: Path) -> set[str]:
    package = module if file.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(file.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def top(name: str) -> str:
    return name.split(".")[0]


def test_run_path_never_imports_tests_or_the_sandbox():
    for module, file in module_files().items():
        bad = {name for name in imports_of(module, file) if top(name) in ("tests", "sandbox")}
        assert not bad, f"{module} imports {bad}"


def test_shared_package_imports_neither_function_nor_the_wiring():
    for module, file in module_files().items():
        if top(module) == "voiceclone":
            bad = {n for n in imports_of(module, file) if top(n) in ("precall", "cleanup", "wiring", "main")}
            assert not bad, f"{module} imports {bad}"


def test_the_two_functions_do_not_import_each_other_or_the_wiring():
    for module, file in module_files().items():
        side = top(module)
        if side in ("precall", "cleanup"):
            other = "cleanup" if side == "precall" else "precall"
            bad = {n for n in imports_of(module, file) if top(n) in (other, "wiring", "main")}
            assert not bad, f"{module} imports {bad}"


def test_pure_modules_import_no_io_modules():
    files = module_files()
    for module in PURE_MODULES:
        names = imports_of(module, files[module])
        bad = {n for n in names if any(n == io or n.startswith(io + ".") for io in IO_MODULES)}
        assert not bad, f"pure module {module} imports {bad}"


def test_every_module_says_what_it_is_for_in_its_first_line():
    for module, file in module_files().items():
        docstring = ast.get_docstring(ast.parse(file.read_text()))
        assert docstring and docstring.splitlines()[0].strip(), f"{module} has no docstring"


def test_the_service_never_imports_the_operator_tool_doctor():
    """doctor is not in the image (Dockerfile); only the operator CLI (`python -m precall doctor`) reaches it."""
    for module, file in module_files().items():
        if top(module) != "doctor" and module != "precall.__main__":
            bad = {n for n in imports_of(module, file) if top(n) == "doctor"}
            assert not bad, f"{module} imports {bad}"
