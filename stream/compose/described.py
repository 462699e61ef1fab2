"""Built-in stages print as the call that makes them, so ``Pipeline.describe()`` (and
``curastream images --print-pipeline``) reads as Python a user can paste.

Only the arguments that differ from the constructor's defaults are shown: the CLI's
composition passes every setting, and a line of defaults would hide the ones that matter.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any

__all__ = ["Described"]


def _differs(value: Any, default: Any) -> bool:
    if default is inspect.Parameter.empty:
        return True
    try:
        return bool(value != default) or type(value) is not type(default)
    except Exception:  # noqa: BLE001 - an array or odd object: show it rather than guess
        return True


class Described:
    """Records the arguments of the most derived constructor; ``repr`` is that call."""

    _call: dict[str, Any]

    def __init_subclass__(cls, **kwargs: Any):
        super().__init_subclass__(**kwargs)
        init = cls.__dict__.get("__init__")
        if init is None:
            return
        sig = inspect.signature(init)

        @functools.wraps(init)
        def recording(self, *args: Any, **kw: Any) -> None:
            if "_call" not in self.__dict__:  # a subclass's super().__init__ must not overwrite it
                bound = sig.bind(self, *args, **kw)
                call: dict[str, Any] = {}
                for name, value in list(bound.arguments.items())[1:]:
                    p = sig.parameters[name]
                    if p.kind is p.VAR_KEYWORD:
                        call.update(value)
                    elif _differs(value, p.default):
                        call[name] = value
                self._call = call
            init(self, *args, **kw)

        cls.__init__ = recording  # type: ignore[method-assign]

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in getattr(self, "_call", {}).items())
        return f"{type(self).__name__}({args})"
