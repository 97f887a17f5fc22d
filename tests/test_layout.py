"""The layout holds: each function's package keeps to its side, no import cycles, the run path
never imports test or sandbox code, and pure modules import no I/O."""

from __future__ import annotations

import ast
from collections.abc import Iterator
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


def _load_time_statements(body: list[ast.stmt]) -> Iterator[ast.stmt]:
    for node in body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        yield node
        if isinstance(node, (ast.If, ast.With)):
            yield from _load_time_statements(node.body + getattr(node, "orelse", []))
        elif isinstance(node, ast.Try):
            yield from _load_time_statements(node.body + node.orelse + node.finalbody
                                             + [stmt for handler in node.handlers for stmt in handler.body])


def load_time_imports(module: str, file: Path, modules: set[str]) -> set[str]:
    """The run-path modules `module` imports while it loads: statements at module level (inside `if`
    and `try` too), not those inside functions, which run later, nor those under `if TYPE_CHECKING:`.
    Each name resolves to the longest run-path module it names (`from a.b import c` is `a.b.c` if
    that is a module, else `a.b`)."""
    package = module if file.name == "__init__.py" else module.rpartition(".")[0]

    names: set[str] = set()
    for node in _load_time_statements(ast.parse(file.read_text()).body):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            names.update(f"{base}.{alias.name}" for alias in node.names)
    found = set()
    for name in names:
        parts = name.split(".")
        target = next((".".join(parts[:i]) for i in range(len(parts), 0, -1) if ".".join(parts[:i]) in modules), None)
        if target is not None and target != module:
            found.add(target)
    return found


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of more than one module (Tarjan), each sorted: a cycle."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                cycles.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


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


def test_no_import_cycles_among_the_run_path_modules():
    files = module_files()
    graph = {module: load_time_imports(module, file, set(files)) for module, file in files.items()}
    assert sum(len(targets) for targets in graph.values()) > 50  # the graph is really read
    assert import_cycles(graph) == []


def test_the_cycle_check_finds_a_cycle():
    assert import_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert import_cycles({"a": {"b"}, "b": set()}) == []
