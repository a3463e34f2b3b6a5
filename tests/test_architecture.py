"""The package's shape: the three stages never import each other, nothing imports a layer above its own, and no
two modules import each other, even through a chain, even inside functions (``if TYPE_CHECKING:`` imports are exempt:
they never run)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "textless"

# lowest first; a module may import modules of its own layer or below. The stages share a layer but never import
# each other (STAGES).
LAYERS = [
    {"", "errors"},  # "": textless/__init__.py (the version only)
    {"utils", "config", "schema"},
    {"audio"},
    {"data", "streaming"},
    {"training"},
    {"tokenizers", "lm", "vocoders"},
    {"eval"},
    {"preference", "dialogue"},
    {"pipeline"},
    {"jobs"},
    {"cli", "__main__"},
]
STAGES = {"tokenizers", "lm", "vocoders"}


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def _runtime_imports(tree: ast.AST) -> list[ast.stmt]:
    """Import statements outside ``if TYPE_CHECKING:`` blocks, at any depth (functions included)."""
    found: list[ast.stmt] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def import_graph() -> dict[str, set[str]]:
    """module -> the textless modules it imports (``from pkg import name`` counts as ``pkg.name`` when that is a
    module)."""
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets: set[str] = set()
        is_package = path.name == "__init__.py"
        for node in _runtime_imports(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                bases = [alias.name for alias in node.names]
                names: list[str] = []
            else:
                if node.level:
                    parent = name.split(".") if is_package else name.split(".")[:-1]
                    parent = parent[: len(parent) - node.level + 1]
                    base = ".".join(parent + ([node.module] if node.module else []))
                else:
                    base = node.module or ""
                bases, names = [base], [alias.name for alias in node.names]
            for base in bases:
                if not base.startswith("textless"):
                    continue
                subs = [f"{base}.{n}" for n in names if f"{base}.{n}" in modules]
                targets.update(subs or [base])
                if names and len(subs) < len(names) and base in modules:
                    targets.add(base)
        graph[name] = {t for t in targets if t in modules and t != name}
    return graph


def _area(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _layer(module: str) -> int:
    area = _area(module)
    for i, names in enumerate(LAYERS):
        if area in names:
            return i
    raise AssertionError(f"{module}: area '{area}' has no layer in tests/test_architecture.py::LAYERS")


def test_every_area_has_a_layer():
    for module in import_graph():
        _layer(module)


def test_stages_never_import_each_other_and_nothing_imports_upwards():
    problems = []
    for source, targets in import_graph().items():
        for target in targets:
            a, b = _area(source), _area(target)
            if a in STAGES and b in STAGES and a != b:
                problems.append(f"{source} -> {target} (stages are siblings)")
            elif _layer(target) > _layer(source):
                problems.append(f"{source} -> {target} (layer {_layer(source)} imports layer {_layer(target)})")
    assert not problems, "\n".join(sorted(problems))


def test_no_import_cycles():
    graph = import_graph()
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_the_walker_sees_imports_inside_functions_and_skips_type_checking(tmp_path):
    tree = ast.parse("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import textless.a\n"
                     "def f():\n    from textless import b\n")
    names = [ast.unparse(n) for n in _runtime_imports(tree)]
    assert names == ["from typing import TYPE_CHECKING", "from textless import b"]
