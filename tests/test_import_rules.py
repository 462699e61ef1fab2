"""The layering of the package, held by reading every module's imports (lazy ones included).

engine: knows nothing of media, writers or the faces. kernels: only kernels. writers: only
engine contracts and other writers. models: engine (and kernels). images and videos: engine,
kernels, writers, config, models and their own slice, never each other. The faces (cli, api, config, demo, samples, compose, curator) sit on top.
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
    # distributed: only the hand-off of --runner ray, each medium to its own runner (held below)
    "images": {"engine", "kernels", "writers", "config", "models", "distributed"},
    "videos": {"engine", "kernels", "writers", "config", "models", "distributed"},
    # the Ray runner: partitions of a media run as tasks running that medium's own stages
    "distributed": {"engine", "kernels", "writers", "images", "videos", "config", "models"},
    # the model contract, registry and built-ins: engine contracts only, never the media slices
    "models": {"engine", "kernels"},
    "config": {"engine", "kernels"},  # kernels: the thresholds they define (motion filter)
    # curastream export reads finished outputs through the engine's storage and writes with it:
    # never the media pipelines, so an export needs neither decoders nor models
    "export": {"engine", "writers"},
    "faces": {"engine", "kernels", "writers", "images", "videos", "config", "models", "distributed", "export",
              "faces", "root"},
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
    if head in ("engine", "kernels", "writers", "images", "videos", "config", "models", "distributed", "export"):
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


@pytest.mark.parametrize("face", ["curastream.compose", "curastream.curator"])
def test_compose_and_curator_are_faces_that_no_layer_below_imports(face):
    """curastream.compose builds on engine, images, videos, writers and models (like api.py), and
    curastream.curator (the NeMo Curator adapters) on engine and writers; the layers under them
    never import them, so the pipelines stay usable without the composed form or Curator."""
    below = {"engine", "kernels", "writers", "images", "videos", "config", "models"}
    found = []
    for module, path in _modules().items():
        if layer_of(module) in below:
            found += [f"{module}: {t}" for _, t in imports_of(module, path) if t.startswith(face)]
    assert found == []
    assert any(m.startswith(face) for m in _modules())


@pytest.mark.parametrize("module,layer", [("curastream.engine.batch", "engine"), ("curastream.cli", "faces"),
                                          ("curastream.compose.pipeline", "faces"),
                                          ("curastream.curator.images", "faces"),
                                          ("curastream.images.stages", "images"), ("curastream", "root"),
                                          ("curastream.models.registry", "models"),
                                          ("curastream.distributed.images", "distributed"),
                                          ("curastream.export.run", "export")])
def test_layer_names(module, layer):
    assert layer_of(module) == layer


def test_each_medium_hands_off_only_to_its_own_ray_runner():
    """images and videos may import curastream.distributed for --runner ray, but only their own
    runner: through the other's, images would reach videos (and back)."""
    found = []
    for module, path in _modules().items():
        layer = layer_of(module)
        if layer in ("images", "videos"):
            found += [f"{module}: {t}" for _, t in imports_of(module, path)
                      if layer_of(t) == "distributed" and t != f"curastream.distributed.{layer}"]
        if module.startswith("curastream.distributed.images"):
            found += [f"{module}: {t}" for _, t in imports_of(module, path) if layer_of(t) == "videos"]
        if module.startswith("curastream.distributed.videos"):
            found += [f"{module}: {t}" for _, t in imports_of(module, path) if layer_of(t) == "images"]
    assert found == []


def test_export_reads_outputs_without_the_media_pipelines():
    """The export layer exists and stays off images/videos (and models, kernels, config)."""
    mods = {m: p for m, p in _modules().items() if layer_of(m) == "export"}
    assert "curastream.export.run" in mods
    found = [f"{m}: {t}" for m, p in mods.items() for _, t in imports_of(m, p)
             if layer_of(t) not in ("export", "engine", "writers")]
    assert found == []
