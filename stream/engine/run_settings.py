"""The settings an output was made with, so a resume never mixes two kinds of output.

``_curastream/run.json`` records the run's output-shaping settings (everything in the flat
config except what only changes how fast, how loud or from where). A resume compares its own
settings with that record (or, for outputs of earlier versions, with the ``config`` of their
``index.json``) and refuses, naming each difference: shards cut at another size, clips of
another length or a filter with another threshold beside the earlier ones would be a dataset no
single run could have written. Inputs may differ: new inputs are processed, done ones skipped
by their full source identity (each medium checks that).
"""

from __future__ import annotations

import json
from typing import Any

from curastream.engine.lock import MARK_DIR, OutputError
from curastream.engine.run_index import INDEX_NAME
from curastream.engine.storage import Storage

SETTINGS_REL = f"{MARK_DIR}/run.json"
SETTINGS_FORMAT = "curastream-run/1"

# Settings that leave the output's content alone: where inputs come from, where and how output
# goes, how many workers, what is printed. Any other setting (a new one included) shapes the
# output, so a forgotten entry here errs on the side of refusing.
NOT_SHAPING = frozenset({
    "sources", "files_from", "input_path", "output", "on_existing", "storage_options", "stats", "emit_ipc",
    "emit_ipc_bytes", "progress", "verbose", "workers", "max_workers", "batch_size", "device", "decoder",
    "runner", "ray_address", "gpus_per_task", "ray_video_chunk_s",  # where the work runs, not what it writes: a resume may switch
})


class OutputSettingsError(OutputError):
    pass


def shaping_settings(flat: dict[str, Any]) -> dict[str, Any]:
    # through JSON so that a tuple and the list read back from the record compare equal
    return json.loads(json.dumps({k: v for k, v in flat.items() if k not in NOT_SHAPING}, default=str))


def recorded_settings(storage: Storage) -> tuple[str | None, dict[str, Any]] | None:
    """(kind, settings) the output was made with, or None when it holds no record of them."""
    for rel in (SETTINGS_REL, INDEX_NAME):
        try:
            doc = json.loads(storage.read_bytes(rel))
        except (OSError, ValueError):
            continue
        if not isinstance(doc, dict):
            continue
        if rel == SETTINGS_REL and doc.get("format") == SETTINGS_FORMAT:
            return doc.get("kind"), doc.get("settings") or {}
        if rel == INDEX_NAME and isinstance(doc.get("config"), dict):
            return doc.get("kind"), shaping_settings(doc["config"])
    return None


def check_resume_settings(storage: Storage, kind: str, flat: dict[str, Any]) -> None:
    """Refuse a resume whose settings differ from the record's, naming each difference."""
    found = recorded_settings(storage)
    if found is None:
        return
    old_kind, old = found
    if old_kind and old_kind != kind:
        raise OutputSettingsError(
            f"output {storage.url()} holds a {old_kind} run; it cannot be resumed as {kind}")
    new = shaping_settings(flat)
    diffs = [f"{k} {_show(old.get(k))} -> {_show(new.get(k))}" for k in sorted(old)
             if k in old and k in new and old[k] != new[k]]  # a renamed or new setting: not comparable
    if diffs:
        raise OutputSettingsError(
            f"resume refused: settings differ from the run output {storage.url()} holds ({'; '.join(diffs)}); "
            "resume with the same settings, or write elsewhere (--on-existing overwrite replaces that run)")


def write_settings(storage: Storage, kind: str, flat: dict[str, Any]) -> None:
    doc = {"format": SETTINGS_FORMAT, "kind": kind, "settings": shaping_settings(flat)}
    storage.write_atomic(SETTINGS_REL, (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode())


def _show(v: Any) -> str:
    return json.dumps(v)
