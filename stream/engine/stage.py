"""The stage contract and the item measures the engine counts: what a stage needs, without the Pipeline."""

from __future__ import annotations

from typing import Any, Callable, Iterable, Iterator


def item_nbytes(item: Any) -> int:
    n = getattr(item, "nbytes", None)
    if isinstance(n, int):
        return n
    return 0


def item_rows(item: Any) -> int:
    n = getattr(item, "num_rows", None)
    return n if isinstance(n, int) else 1


class Stage:
    """One step of a pipeline. Subclasses override :meth:`process` (and maybe :meth:`flush`).

    ``requires``/``provides`` name the record columns the stage reads/adds; the pipeline checks
    them against the declared schema when it is built.
    """

    name: str = "stage"
    requires: tuple[str, ...] = ()
    provides: tuple[str, ...] = ()
    workers: int = 1

    def open(self) -> None:
        """Called once in the stage's thread before the first item."""

    def process(self, item: Any) -> Iterable[Any] | Any | None:
        raise NotImplementedError

    def flush(self) -> Iterable[Any]:
        """Called after the last item: emit whatever the stage still holds."""
        return ()

    def close(self) -> None:
        """Called once when the stage's thread ends, on success and on failure."""


class FunctionStage(Stage):
    def __init__(self, fn: Callable[[Any], Any], name: str | None = None, workers: int = 1,
                 requires: tuple[str, ...] = (), provides: tuple[str, ...] = ()):
        self.fn = fn
        self.name = name or getattr(fn, "__name__", "fn")
        self.workers = workers
        self.requires = requires
        self.provides = provides

    def process(self, item):
        return self.fn(item)


def _as_outputs(result: Any) -> Iterable[Any]:
    if result is None:
        return ()
    if isinstance(result, (list, tuple)) or isinstance(result, Iterator):
        return result
    return (result,)
