"""What to do with an output location that already has files: error, resume or overwrite."""

from __future__ import annotations

import logging

from curastream.engine.run_index import INDEX_NAME
from curastream.engine.storage import Storage

log = logging.getLogger(__name__)

ON_EXISTING = ("error", "resume", "overwrite")


class OutputExistsError(RuntimeError):
    pass


def prepare_output(storage: Storage, on_existing: str) -> bool:
    """Make ``storage`` ready for a run. Returns True when earlier output is being resumed."""
    if on_existing not in ON_EXISTING:
        raise ValueError(f"on_existing must be one of {ON_EXISTING}, not {on_existing!r}")
    if storage.is_empty():
        return False
    if on_existing == "error":
        raise OutputExistsError(
            f"output {storage.url()} is not empty; pass --on-existing resume to continue it "
            "or --on-existing overwrite to replace it"
        )
    if on_existing == "overwrite":
        log.info("removing existing output in %s", storage.url())
        storage.clear()
        return False
    removed = storage.remove_temps()
    if removed:
        log.info("resume: removed %d temporary file(s) left by an interrupted run", len(removed))
    # The index is the commit point of a *finished* run; a resumed run rewrites it at its end.
    if storage.exists(INDEX_NAME):
        storage.delete(INDEX_NAME)
    return True
