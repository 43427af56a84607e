"""The package's layers import downwards only, without cycles or a sibling's internals.

A line goes files -> tail -> transform -> batch -> spool -> deliver; housekeeping,
operations and the lifecycle sit above the stages they look after. ARCHITECTURE.md
draws the same table.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "shipper"

#: Each top-level module or folder of ``shipper`` and its layer: a module may import
#: from its own layer's folder or from any lower layer, never from a higher one.
LAYERS: Mapping[str, int] = {
    "__init__": 0,
    "errors": 0,
    "exit_codes": 0,
    "units": 0,
    "redact_output": 0,
    "logs": 1,
    "files": 2,
    "transform": 3,
    "batch": 4,
    # Above the stages whose rules it compiles (redaction, sampling, object keys),
    # below the stages that run with the settings.
    "config": 5,
    "tail": 6,
    "spool": 7,
    "state": 8,
    "deliver": 9,
    "housekeeping": 10,
    "ops": 11,
    "app": 12,
    "cli": 13,
    "__main__": 14,
}


def module_name(path: Path, package: Path) -> str:
    parts = path.relative_to(package.parent).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imports_of(path: Path, package_dir: Path) -> list[tuple[str, tuple[str, ...]]]:
    """(module, imported names) for every import of ``shipper`` in the file, wherever it sits."""
    name = module_name(path, package_dir)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: list[tuple[str, tuple[str, ...]]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.extend((alias.name, ()) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            found.append((target, tuple(alias.name for alias in node.names)))
    return [(target, names) for target, names in found if target.split(".")[0] == "shipper"]


def import_graph(package: Path) -> dict[str, set[str]]:
    """Module -> the ``shipper`` modules it imports (``from pkg import module`` counts too)."""
    paths = {module_name(p, package): p for p in package.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in paths.items():
        edges: set[str] = set()
        for target, names in imports_of(path, package):
            submodules = {f"{target}.{n}" for n in names} & paths.keys()
            edges |= submodules or {target}
        edges.discard(name)
        graph[name] = edges
    return graph


def area(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def upward_imports(graph: Mapping[str, Iterable[str]]) -> list[str]:
    wrong = []
    for module, targets in graph.items():
        for target in targets:
            if LAYERS[area(target)] > LAYERS[area(module)]:
                wrong.append(f"{module} imports {target}, a higher layer")
    return sorted(wrong)


def cycles(graph: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """Every strongly connected group of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return groups


def private_imports(package: Path) -> list[str]:
    """Underscored names taken from another folder: a sibling stage's internals."""
    wrong = []
    for path in package.rglob("*.py"):
        module = module_name(path, package)
        for target, names in imports_of(path, package):
            if area(target) == area(module):
                continue
            wrong.extend(
                f"{module} takes {target}.{name}"
                for name in names
                if name.startswith("_") and not name.startswith("__")
            )
    return sorted(wrong)


def test_every_folder_has_a_layer() -> None:
    assert {area(m) for m in import_graph(PACKAGE)} <= LAYERS.keys()


def test_layers_import_downwards_only() -> None:
    assert upward_imports(import_graph(PACKAGE)) == []


def test_no_import_cycles() -> None:
    assert cycles(import_graph(PACKAGE)) == []


def test_no_stage_takes_another_stages_internals() -> None:
    assert private_imports(PACKAGE) == []


def test_the_checks_catch_what_they_are_for() -> None:
    graph = {
        "shipper.tail.tailer": {"shipper.deliver.uploader"},
        "shipper.deliver.uploader": {"shipper.spool.spool"},
        "shipper.spool.spool": {"shipper.spool.refill"},
        "shipper.spool.refill": {"shipper.spool.spool"},
    }
    assert upward_imports(graph) == [
        "shipper.tail.tailer imports shipper.deliver.uploader, a higher layer"
    ]
    assert cycles(graph) == [["shipper.spool.refill", "shipper.spool.spool"]]


def test_a_private_name_from_another_folder_is_caught(tmp_path: Path) -> None:
    package = tmp_path / "shipper"
    (package / "tail").mkdir(parents=True)
    (package / "tail" / "tailer.py").write_text("from shipper.spool.spool import _marker\n")
    assert private_imports(package) == ["shipper.tail.tailer takes shipper.spool.spool._marker"]


#: Past these, a module or class does more than one job: split it by responsibility.
MAX_MODULE_LINES = 500
MAX_CLASS_LINES = 400


def oversized(package: Path) -> list[str]:
    found = []
    for path in sorted(package.rglob("*.py")):
        text = path.read_text()
        if len(text.splitlines()) > MAX_MODULE_LINES:
            found.append(f"{path.relative_to(package.parent)}: {len(text.splitlines())} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.ClassDef):
                size = (node.end_lineno or node.lineno) - node.lineno + 1
                if size > MAX_CLASS_LINES:
                    found.append(f"{path.relative_to(package.parent)}:{node.name}: {size} lines")
    return found


def test_no_module_or_class_grows_past_its_limit() -> None:
    assert oversized(PACKAGE) == []


def test_the_size_check_catches_a_long_class(tmp_path: Path) -> None:
    package = tmp_path / "shipper"
    package.mkdir()
    body = "".join(f"    def m{i}(self) -> None:\n        pass\n\n" for i in range(200))
    (package / "big.py").write_text("class Big:\n" + body)
    assert oversized(package) == [
        "shipper/big.py: 601 lines",
        "shipper/big.py:Big: 600 lines",
    ]
