"""The package's folders are its layers: each imports only the layers below
it, and no module imports itself back through others (a cycle), whether at
the top of a module or inside a function."""
from __future__ import annotations

import ast
import pathlib

SRC = pathlib.Path(__file__).resolve().parents[1] / "src"

# What each folder of prack may import (besides itself).
ALLOWED = {
    "protocol": {"_native", "errors"},
    "ipc": {"_native", "errors", "protocol"},
    "child": {"_native", "errors", "protocol", "ipc"},
    "acceptor": {"_native", "errors", "config", "protocol", "ipc", "child"},
    "api": {"_native", "errors", "config", "protocol", "ipc", "child", "__init__"},
    "master": {"_native", "errors", "config", "protocol", "ipc", "child", "acceptor", "api",
               "__init__"},
    "worker": {"protocol", "__init__"},
}


def _modules() -> dict[str, pathlib.Path]:
    out = {}
    for path in (SRC / "prack").rglob("*.py"):
        if "__pycache__" in path.parts:
            continue
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _imports(path: pathlib.Path, modules: dict) -> set[str]:
    """The prack modules a file imports, anywhere in it."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] + ["%s.%s" % (node.module, a.name) for a in node.names]
        else:
            continue
        for name in names:
            if name.startswith("prack") and name in modules:
                found.add(name)
    return found


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_each_layer_imports_only_the_layers_below_it():
    modules = _modules()
    wrong = []
    for name, path in sorted(modules.items()):
        layer = _layer(name)
        if layer not in ALLOWED:
            continue
        for target in sorted(_imports(path, modules)):
            other = _layer(target)
            if other != layer and other not in ALLOWED[layer]:
                wrong.append("%s imports %s" % (name, target))
    assert wrong == []


def test_no_module_imports_itself_back():
    modules = _modules()
    graph = {name: {t for t in _imports(path, modules) if t != name and not
                    (modules[t].name == "__init__.py" and name.startswith(t + "."))}
             for name, path in modules.items()}
    cycles = []
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join(stack[stack.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt, stack)
        stack.pop()
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [])
    assert cycles == []
