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

from .storage import Storage

INDEX_NAME = "index.json"


def library_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for mod in ("curastream", "pyarrow", "numpy", "av", "simplejpeg", "PIL", "nvidia.dali", "fsspec"):
        try:
            m = __import__(mod, fromlist=["__version__"])
            out[mod] = str(getattr(m, "__version__", "?"))
        except Exception:  # noqa: BLE001 - an optional library missing is not an error here
            continue
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
