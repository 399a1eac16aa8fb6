"""The package's layout holds: small modules, imports that point one way down the pipeline, and
a command-line layer that nothing imports."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "retinanet"
MAX_LINES = 600

# The pipeline, lowest layer first: a module may import its own layer and the layers before it.
# retinanet/__init__.py (the public API) and retinanet/__main__.py stand above all of them.
LAYERS = [
    {"utils"},
    {"model"},
    {"config"},
    {"data"},
    {"weights"},
    {"engine"},
    {"deploy", "inference", "diagnostics"},
    {"tools"},
    {"cli"},
]
RANK = {part: rank for rank, parts in enumerate(LAYERS) for part in parts}


def modules() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def imported(name: str, path: Path) -> set[str]:
    """The retinanet modules that `name` imports (relative imports resolved), anywhere in it:
    top level, in functions, under TYPE_CHECKING."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] == "retinanet":
                found.add(target)
                found.update(f"{target}.{a.name}" for a in node.names)  # `from . import losses`
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "retinanet")
    known = modules()
    return {t for t in found if t in known}


def layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def test_no_module_is_over_600_lines():
    long = {name: n for name, path in modules().items() if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines: {long}"


def test_every_module_belongs_to_a_layer():
    unknown = {name for name in modules() if layer(name) is not None and layer(name) not in RANK | {"__main__": 0}}
    assert not unknown, f"modules outside the layers {LAYERS}: {sorted(unknown)}"


def test_imports_point_down_the_pipeline():
    upward = []
    for name, path in modules().items():
        here = layer(name)
        if here in (None, "__main__"):
            continue
        for target in imported(name, path):
            there = layer(target)
            if there is not None and RANK[there] > RANK[here]:
                upward.append(f"{name} -> {target}")
    assert not upward, "imports from a lower layer into a higher one:\n" + "\n".join(sorted(upward))


def test_the_command_line_is_imported_by_main_only():
    importers = {
        name
        for name, path in modules().items()
        if layer(name) != "cli" and any(layer(t) == "cli" for t in imported(name, path))
    }
    assert importers == {"retinanet.__main__"}


def test_the_model_imports_only_utils_and_itself():
    outside = {
        f"{name} -> {t}"
        for name, path in modules().items()
        if layer(name) == "model"
        for t in imported(name, path)
        if layer(t) not in ("model", "utils")
    }
    assert not outside, sorted(outside)


def test_the_checker_sees_imports():
    # The checks above pass on a wrong layout only if `imported` misses imports: it must see the
    # relative, the submodule and the function-level ones.
    found = imported("retinanet.cli.train", PACKAGE / "cli" / "train.py")
    assert {"retinanet.cli.common", "retinanet.engine", "retinanet.config"} <= found
    assert "retinanet.model.losses" in imported("retinanet", PACKAGE / "__init__.py")
