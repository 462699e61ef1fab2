"""Running a media run on Ray (``--runner ray``): the same stages, partitions of the input as tasks.

The driver (the process the user started) owns the output exactly as a local run does: the
lock, the settings record, resume, the rejects, the summary and ``index.json``. Ray is the
engine: a deterministic partition plan becomes Ray tasks, each running the local streaming
stages over its partition and committing through :class:`~curastream.engine.storage.Storage`;
Ray schedules, places by declared resources (CPUs, a GPU when the device is one) and retries
a task whose worker died. See :mod:`.cluster` for how workers' commits become the run's own.
"""
