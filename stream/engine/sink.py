"""The sink contract every writer follows.

A sink is a context manager: ``write(item)`` any number of times, then ``commit()`` on clean
exit or ``abort()`` when an exception passes through ``__exit__`` (never finalise output
while an error is in flight). Sinks open their first file lazily, on the first write, so
constructing one has no side effects.
"""

from __future__ import annotations

from typing import Any


class Sink:
    name = "sink"

    def write(self, item: Any) -> None:
        raise NotImplementedError

    def commit(self) -> None:
        """Finish: close open files and make them final."""

    def abort(self) -> None:
        """Drop what is not final yet (temporaries); keep what was committed."""

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()
