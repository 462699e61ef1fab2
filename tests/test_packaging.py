"""Packaging: a regular (non-editable) install holds one top-level package with kernels/writers
inside it, and pyproject.toml's dependency lists match what the code imports."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_wheel_holds_one_package_and_imports_outside_the_tree(tmp_path):
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", str(ROOT), "-w", str(tmp_path)],
                       capture_output=True, text=True, timeout=280)
    if r.returncode != 0 and "network" in (r.stderr + r.stdout).lower():
        pytest.skip("no package index to fetch the build backend")
    assert r.returncode == 0, r.stderr
    wheel = next(tmp_path.glob("curastream-*.whl"))
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        z.extractall(tmp_path / "site")
    name, version = wheel.name.split("-")[:2]
    assert {n.split("/")[0] for n in names} == {"curastream", f"{name}-{version}.dist-info"}
    assert "curastream/kernels/cuda/laplacian_stats.cu" in names
    # every subpackage of stream/ ships (pyproject lists them one by one)
    for init in sorted((ROOT / "stream").glob("*/__init__.py")):
        assert f"curastream/{init.parent.name}/__init__.py" in names, init.parent.name
    for ext in ("curastream/kernels/_area_resize.", "curastream/images/_jpeg_markers."):
        assert any(n.startswith(ext) and n.endswith(".so") for n in names), (ext, names)
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import curastream, curastream.kernels.image_scores as k, "
            "curastream.kernels.area_resize as ar, curastream.writers.clip_writer, curastream.cli, curastream.api, "
            "curastream.images.pipeline, curastream.videos.pipeline, curastream.engine.pipeline; "
            "assert curastream.__file__.startswith(sys.argv[1]), curastream.__file__; "
            "assert ar._area_resize.__file__.startswith(sys.argv[1]), ar._area_resize; "
            "assert k.laplacian_source_path().exists(); print(curastream.__version__)")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "site")], capture_output=True, text=True,
                         cwd=tmp_path, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "0.1.0"


# -- declared dependencies vs the imports in the code ------------------------------------------------
PACKAGE_DIRS = ("stream", "kernels", "writers")
# Faces onto another framework: their package __init__ imports the modules that need it only on
# first use, behind a one-line error (tests/test_curator_adapters.py holds that).
LAZY_FACES = {"stream/curator/": "nemo_curator"}
# Distribution name -> the module it installs, where the two differ beyond "-" vs "_".
IMPORT_NAMES = {
    "opencv-python-headless": "cv2",
    "opencv-python": "cv2",
    "pillow": "PIL",
    "pyyaml": "yaml",
    "scikit-image": "skimage",
    "nvidia-dali-cuda120": "nvidia.dali",
    "cupy-cuda12x": "cupy",
    "pynvvideocodec": "PyNvVideoCodec",
}


def _requirements(specs: list[str]) -> list[tuple[str, str]]:
    """(canonical distribution name, import name) for each requirement string."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    out = []
    for spec in specs:
        name = canonicalize_name(Requirement(spec).name)
        out.append((name, IMPORT_NAMES.get(name, name.replace("-", "_"))))
    return out


def _project(pyproject: Path) -> dict:
    import tomllib

    return tomllib.loads(pyproject.read_text())["project"]


def _imports(root: Path, dirs=PACKAGE_DIRS) -> list[tuple[str, str, bool]]:
    """(dotted module, file, at module top level) for every absolute import in the package.

    Top level means run by importing the file: module body, including try/if blocks and class
    bodies, but not function bodies and not ``if TYPE_CHECKING:`` blocks."""
    import ast

    found = []

    def visit(node, top: bool, path: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                visit(child, False, path)
            elif isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                for stmt in child.orelse:
                    visit(ast.Module(body=[stmt], type_ignores=[]), top, path)
            elif isinstance(child, ast.Import):
                found.extend((a.name, path, top) for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                if child.level == 0 and child.module:
                    found.append((child.module, path, top))
            else:
                visit(child, top, path)

    for d in dirs:
        for f in sorted((root / d).rglob("*.py")):
            rel = f.relative_to(root).as_posix()
            visit(ast.parse(f.read_text(), rel), True, rel)
    return found


def _third_party(imports: list[tuple[str, str, bool]]) -> list[tuple[str, str, bool]]:
    return [(m, f, top) for m, f, top in imports
            if m.split(".")[0] not in sys.stdlib_module_names and m.split(".")[0] != "curastream"]


def _provided_by(module: str, import_names: set[str]) -> bool:
    """``module`` comes from a distribution installing one of ``import_names``."""
    return any(module == n or module.startswith(n + ".") for n in import_names)


def check_dependencies(root: Path) -> list[str]:
    """Every way pyproject.toml's dependency lists disagree with the code under ``root``."""
    project = _project(root / "pyproject.toml")
    base = _requirements(project["dependencies"])
    extras = {k: _requirements(v) for k, v in project.get("optional-dependencies", {}).items()}
    base_names = {n for n, _ in base}
    base_imports = {i for _, i in base}
    all_imports = base_imports | {i for reqs in extras.values() for _, i in reqs}
    used = _third_party(_imports(root))
    problems = []
    # A plain install must not pull in the multi-GB GPU stack, and must get the fast scorer.
    problems += [f"{n} is a base dependency; it belongs in an extra" for n in sorted(base_names)
                 if n.startswith(("nvidia-", "cupy")) or n in ("torch", "pynvvideocodec")]
    if "opencv-python-headless" not in base_names:
        problems.append("opencv-python-headless is not a base dependency (the fused scorer needs cv2)")
    problems += [f"base dependency {n} ({i}) is imported nowhere in {'/, '.join(PACKAGE_DIRS)}/"
                 for n, i in base if not any(_provided_by(m, {i}) for m, _, _ in used)]
    problems += [f"{f} imports {m} at module level, and no base dependency provides it"
                 for m, f, top in used if top and not _provided_by(m, base_imports)
                 and not any(f.startswith(d) and _provided_by(m, {i}) for d, i in LAZY_FACES.items())]
    problems += [f"{f} imports {m}, and neither the base dependencies nor an extra provide it"
                 for m, f, top in used if not _provided_by(m, all_imports)]
    return sorted(set(problems))


def test_dependencies_match_the_imports():
    assert check_dependencies(ROOT) == []


def test_extras_hold_the_gpu_stack_and_the_tests_keep_dali():
    project = _project(ROOT / "pyproject.toml")
    extras = {k: {n for n, _ in _requirements(v)} for k, v in project["optional-dependencies"].items()}
    assert {"nvidia-dali-cuda120", "cupy-cuda12x", "pynvvideocodec"} <= extras["gpu"]
    assert "torch" in extras["models"] and not any("torch" in v for k, v in extras.items() if k != "models")
    # DALI's CPU mode runs without a GPU: the test install keeps it so the DALI decoder stays tested.
    assert "nvidia-dali-cuda120" in extras["test"]


@pytest.mark.parametrize("mutation, complaint", [
    (lambda t: t.replace('"opencv-python-headless>=4.8",', ""), "opencv-python-headless is not a base"),
    (lambda t: t.replace('"pyarrow>=15",', '"pyarrow>=15", "nvidia-dali-cuda120>=2.0",'), "belongs in an extra"),
    (lambda t: t.replace('"pyarrow>=15",', '"pyarrow>=15", "zstandard>=0.22",'), "zstandard (zstandard) is imported"),
    (lambda t: t.replace('"pyarrow>=15",', ""), "imports pyarrow at module level"),
])
def test_the_dependency_check_catches(tmp_path, mutation, complaint):
    """The check above on a copy of the project with one thing broken."""
    for d in PACKAGE_DIRS:
        (tmp_path / d).symlink_to(ROOT / d)
    text = (ROOT / "pyproject.toml").read_text()
    broken = mutation(text)
    assert broken != text, "the mutation no longer applies to pyproject.toml"
    (tmp_path / "pyproject.toml").write_text(broken)
    assert any(complaint in p for p in check_dependencies(tmp_path)), check_dependencies(tmp_path)


def test_the_import_scan_tells_module_level_from_lazy(tmp_path):
    pkg = tmp_path / "stream"
    pkg.mkdir()
    (pkg / "m.py").write_text(
        "import os\nimport numpy as np\ntry:\n    import cv2\nexcept ImportError:\n    cv2 = None\n"
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import torch\n"
        "from . import sibling\nfrom curastream.x import y\n"
        "class C:\n    import pyarrow.parquet as pq\n"
        "def f():\n    import cupy\n    from nvidia.dali import fn\n")
    got = {(m, top) for m, _, top in _third_party(_imports(tmp_path, dirs=("stream",)))}
    assert got == {("numpy", True), ("cv2", True), ("pyarrow.parquet", True), ("cupy", False),
                   ("nvidia.dali", False)}
