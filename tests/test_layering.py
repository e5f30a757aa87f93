"""The package's dependency rule: subpackages import only the layers below them, so there is no cycle.

errors <- native <- convert <- output <- models <- optvis <- recipes <- cli (each may import any
layer to its left, never one to its right). Function-local imports count as much as module-level
ones: hiding an upward import inside a function still ties the layers together.
"""

import ast
from pathlib import Path

import jaxvis

LAYERS = ("errors", "native", "convert", "output", "models", "optvis", "recipes", "cli")
PACKAGE = Path(jaxvis.__file__).parent


def _layer(module: str) -> str | None:
    """`jaxvis.models.spec` -> 'models'; the compiled `jaxvis._core` and `jaxvis._onednn` belong to `native`."""
    parts = module.split(".")
    if parts[0] != "jaxvis" or len(parts) < 2:
        return None
    return "native" if parts[1] in ("_core", "_onednn") else parts[1]


def _imports(path: Path) -> set[str]:
    """Every jaxvis module `path` imports, module-level or not."""
    relative = path.relative_to(PACKAGE.parent).with_suffix("")
    package = list(relative.parts[:-1]) if relative.name != "__init__" else list(relative.parts[:-1])
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names if module == "jaxvis")
    return {name for name in found if name.startswith("jaxvis.")}


def _edges() -> dict[tuple[str, str], list[str]]:
    edges: dict[tuple[str, str], list[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.parent == PACKAGE and path.name == "__init__.py":
            continue  # the top-level lazy re-exports name every layer on purpose
        source = _layer("jaxvis." + ".".join(path.relative_to(PACKAGE).with_suffix("").parts))
        for module in _imports(path):
            target = _layer(module)
            if target and target != source:
                edges.setdefault((source, target), []).append(f"{path.relative_to(PACKAGE.parent)} -> {module}")
    return edges


def test_every_subpackage_is_a_known_layer():
    found = {_layer("jaxvis." + ".".join(p.relative_to(PACKAGE).with_suffix("").parts))
             for p in PACKAGE.rglob("*.py") if p.relative_to(PACKAGE).parts[0] != "__init__.py"}
    assert found <= set(LAYERS), f"place these in the layer order: {sorted(found - set(LAYERS))}"


def test_imports_only_go_down_the_layers():
    upward = [f"{source} imports {target}: {', '.join(sites)}" for (source, target), sites in _edges().items()
              if LAYERS.index(target) > LAYERS.index(source)]
    assert not upward, "\n".join(upward)


def test_no_cycle_between_subpackages():
    graph: dict[str, set[str]] = {}
    for source, target in _edges():
        graph.setdefault(source, set()).add(target)

    def reaches(start, goal, seen=()):
        return any(
            nxt == goal or (nxt not in seen and reaches(nxt, goal, (*seen, nxt))) for nxt in graph.get(start, ())
        )

    cycles = [layer for layer in graph if reaches(layer, layer)]
    assert not cycles, f"subpackages on a cycle: {cycles}"


def test_the_rule_catches_an_upward_import(tmp_path, monkeypatch):
    """The walker sees function-local imports (what would hide a cycle)."""
    module = tmp_path / "jaxvis" / "convert" / "x.py"
    module.parent.mkdir(parents=True)
    module.write_text("def f():\n    from jaxvis.models import load_model\n")
    monkeypatch.setattr(__import__(__name__), "PACKAGE", tmp_path / "jaxvis")
    assert ("convert", "models") in _edges()
