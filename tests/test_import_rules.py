"""The layering of the package, held by reading every module's imports (lazy ones included).

engine: knows nothing of media, writers or the faces. kernels: only kernels. writers: only
engine contracts and other writers. images and videos: engine, kernels, writers, config and
their own slice, never each other. The faces (cli, api, config, demo, samples) sit on top.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE_DIRS = {"curastream": ROOT / "stream", "curastream.kernels": ROOT / "kernels",
                "curastream.writers": ROOT / "writers"}

# layer -> the layers it may import (its own layer is always allowed)
ALLOWED = {
    "engine": set(),
    "kernels": set(),
    "writers": {"engine"},
    "images": {"engine", "kernels", "writers", "config"},
    "videos": {"engine", "kernels", "writers", "config"},
    "config": {"engine", "kernels"},  # kernels: the thresholds they define (motion filter)
    "faces": {"engine", "kernels", "writers", "images", "videos", "config", "faces", "root"},
    "root": set(),
}


def _modules() -> dict[str, Path]:
    mods = {}
    for pkg, top in PACKAGE_DIRS.items():
        for path in top.rglob("*.py"):
            rel = path.relative_to(top).with_suffix("")
            parts = list(rel.parts)
            if pkg == "curastream" and parts[0] in ("kernels", "writers"):
                continue
            if parts[-1] == "__init__":
                parts = parts[:-1]
            mods[".".join([pkg, *parts])] = path
    return mods


def layer_of(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1:
        return "root"
    head = parts[1]
    if head in ("engine", "kernels", "writers", "images", "videos", "config"):
        return head
    if head.startswith("config_"):  # the config's own helpers (schema, file formats)
        return "config"
    return "faces"


def imports_of(module: str, path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    is_pkg = path.name == "__init__.py"
    base = module.split(".") if is_pkg else module.split(".")[:-1]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "curastream"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = base[: len(base) - (node.level - 1)]
                target = ".".join([*anchor, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            if target.split(".")[0] != "curastream":
                continue
            if target == "curastream":  # `from curastream import x`: x may be a subpackage
                found += [(node.lineno, f"curastream.{a.name}") for a in node.names]
            else:
                found.append((node.lineno, target))
    return found


def violations() -> list[str]:
    out = []
    for module, path in sorted(_modules().items()):
        mine = layer_of(module)
        for line, target in sorted(imports_of(module, path)):
            theirs = layer_of(target)
            if target in ("curastream", "curastream.__version__"):
                theirs = "root"
            if theirs == mine or theirs in ALLOWED[mine]:
                continue
            out.append(f"{path.name}:{line}: {mine} imports {target} ({theirs})")
    return out


def test_the_layers_import_only_downwards():
    assert violations() == []


def test_the_checker_sees_a_violation(tmp_path, monkeypatch):
    """The rule can fail: an engine module importing a writer is caught, lazy imports included."""
    engine = tmp_path / "stream" / "engine"
    engine.mkdir(parents=True)
    (engine / "__init__.py").write_text("")
    (engine / "bad.py").write_text("def f():\n    from curastream.writers.rejects import write_rejects\n"
                                   "from ..images import stages\n")
    monkeypatch.setitem(PACKAGE_DIRS, "curastream", tmp_path / "stream")
    monkeypatch.setitem(PACKAGE_DIRS, "curastream.kernels", tmp_path / "none")
    monkeypatch.setitem(PACKAGE_DIRS, "curastream.writers", tmp_path / "none")
    found = violations()
    assert len(found) == 2, found
    assert "engine imports curastream.writers.rejects (writers)" in found[0]
    assert "engine imports curastream.images (images)" in found[1]


@pytest.mark.parametrize("module,layer", [("curastream.engine.batch", "engine"), ("curastream.cli", "faces"),
                                          ("curastream.images.stages", "images"), ("curastream", "root")])
def test_layer_names(module, layer):
    assert layer_of(module) == layer
