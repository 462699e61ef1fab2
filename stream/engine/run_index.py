"""``index.json``: written last in every run's output, the run's commit point.

It lists the configuration, library versions, every committed file (rows, bytes, sha256),
totals and timings. Its presence means the run finished; resume deletes it first and a
finished resume writes it again.
"""

from __future__ import annotations

import json
import platform
import time
from typing import Any

from curastream.engine.storage import Storage

INDEX_NAME = "index.json"


# module name -> distribution name, read from package metadata when the module is not loaded:
# importing DALI only to print its version cost 0.4-0.6 s at the end of every run.
_DISTRIBUTIONS = {"curastream": "curastream", "pyarrow": "pyarrow", "numpy": "numpy", "av": "av",
                  "simplejpeg": "simplejpeg", "PIL": "pillow", "nvidia.dali": "nvidia-dali-cuda120",
                  "fsspec": "fsspec"}


def library_versions() -> dict[str, str]:
    import sys
    from importlib import metadata

    out = {"python": platform.python_version()}
    for mod, dist in _DISTRIBUTIONS.items():
        m = sys.modules.get(mod)
        v = getattr(m, "__version__", None) if m is not None else None
        if v is None:
            try:
                v = metadata.version(dist)
            except Exception:  # noqa: BLE001 - an optional library missing is not an error here
                continue
        out[mod] = str(v)
    return out


def write_run_index(storage: Storage, kind: str, config: dict[str, Any], stats: dict[str, Any],
                    extra: dict[str, Any] | None = None) -> dict[str, Any]:
    files = [c.to_dict() for c in storage.committed() if c.path != INDEX_NAME]
    doc = {
        "format": "curastream-index/1",
        "kind": kind,
        "created_unix": round(time.time(), 3),
        "config": config,
        "versions": library_versions(),
        "files": files,
        "totals": {
            "files": len(files),
            "bytes": sum(f["bytes"] for f in files),
            "rows": sum(f["rows"] or 0 for f in files),
        },
        "stats": stats,
        **(extra or {}),
    }
    storage.write_atomic(INDEX_NAME, (json.dumps(doc, indent=2, sort_keys=False) + "\n").encode())
    return doc
