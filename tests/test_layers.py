"""The package's layering, read from its imports (ast): `core` imports nothing else of the package;
`data`, `metrics`, `report` and `nets` import only `core` and each other; `pipeline` (the shared
verbs) none of the methods; a method never another method; nobody but `__main__` imports `cli`
(`__main__` also imports `core`: the fork server's client runs before the CLI loads); and no module is
part of an import circle."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "aiqn"

# layer -> the layers it may import (besides itself)
ALLOWED = {
    "core": set(),
    "data": {"core"},
    "nets": {"core"},
    "metrics": {"core", "data", "nets"},
    "report": {"core"},
    "pipeline": {"core", "data", "metrics", "report", "nets"},
    "methods": {"core", "data", "metrics", "report", "nets", "pipeline"},
    "cli": {"pipeline", "methods", "core", "data", "metrics", "report"},
    "__main__": {"cli", "core"},  # core: the fork server's client, which must start before the CLI loads
    "__init__": set(),
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Every aiqn module `path` imports, at top level or inside functions (relative imports resolved)."""
    found = set()
    package = module_name(path).split(".") if path.name == "__init__.py" else module_name(path).split(".")[:-1]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:  # from .x import y: relative to this package
            base = package[: len(package) - node.level + 1]
            module = ".".join(base + ([node.module] if node.module else []))
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("aiqn"):
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)  # `from aiqn.x import y` (module y)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("aiqn"))
    return found


def graph() -> dict[str, set[str]]:
    modules = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    return {name: {target for target in imports_of(path) if target in modules and target != name}
            for name, path in modules.items()}


def layer(module: str) -> str:
    return module.split(".")[1] if "." in module else "__init__"


def test_layers_import_only_what_they_may():
    wrong = []
    for module, targets in graph().items():
        for target in targets:
            if layer(target) != layer(module) and layer(target) not in ALLOWED[layer(module)]:
                wrong.append(f"{module} imports {target}")
    assert not wrong, "\n".join(sorted(wrong))


def test_a_method_imports_no_other_method():
    wrong = [f"{module} imports {target}" for module, targets in graph().items() if layer(module) == "methods"
             for target in targets if layer(target) == "methods" and target.split(".")[2] != module.split(".")[2]
             and target != "aiqn.methods"]
    assert not wrong, "\n".join(sorted(wrong))


def test_nobody_imports_the_cli():
    assert [m for m, targets in graph().items() if "aiqn.cli" in targets and m != "aiqn.__main__"] == []


def test_no_import_circles():
    edges = graph()
    state: dict[str, int] = {}
    circles = []

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for target in sorted(edges[node]):
            if state.get(target) == 1:
                circles.append(" -> ".join(trail[trail.index(target):] + [target]))
            elif target not in state:
                visit(target, trail + [target])
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])
    assert not circles, "\n".join(circles)


def test_the_cli_is_a_thin_entry_point():
    assert len((PACKAGE / "cli.py").read_text().splitlines()) < 150


@pytest.mark.parametrize("check, target, bad, message", [
    (test_a_method_imports_no_other_method, "methods/cqf/verbs.py", "from aiqn.methods.agave.train import train_agave\n",
     "aiqn.methods.cqf.verbs imports aiqn.methods.agave.train"),
    (test_a_method_imports_no_other_method, "methods/cqf/verbs.py", "from ..agave import train\n",
     "aiqn.methods.cqf.verbs imports aiqn.methods.agave.train"),
    (test_no_import_circles, "methods/cqf/model.py", "from .verbs import VARIANTS\n", "aiqn.methods.cqf.verbs"),
    (test_layers_import_only_what_they_may, "nets/vae.py", "from aiqn.methods.cqf import model\n",
     "aiqn.nets.vae imports aiqn.methods.cqf"),
    (test_layers_import_only_what_they_may, "core/io.py", "from aiqn.data import load_split\n",
     "aiqn.core.io imports aiqn.data"),
])
def test_the_rule_is_seen(monkeypatch, check, target, bad, message):
    """The checks themselves: a forbidden import added to a module (absolute or relative) is reported."""
    target = PACKAGE / target
    read = Path.read_text
    monkeypatch.setattr(Path, "read_text", lambda self, *a, **k: (bad + read(self, *a, **k)) if self == target
                        else read(self, *a, **k))
    with pytest.raises(AssertionError, match=message):
        check()


def test_every_module_imports():
    """Every module of the package imports (a moved module's stale import fails here, not in a rule)."""
    import importlib

    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name != "__main__.py":
            importlib.import_module(module_name(path))
