"""Shared fixtures. Real media is read from ../shared/media and tests skip cleanly without it."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MEDIA = ROOT.parent / "shared" / "media"


def media_path(*parts: str) -> Path:
    """Path of a file under shared/media, skipping the calling test when it is absent."""
    p = MEDIA.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"shared media not present: {p}")
    return p


@pytest.fixture
def media_dir() -> Path:
    if not MEDIA.is_dir():
        pytest.skip("shared media folder absent")
    return MEDIA


def report(config, *lines: str) -> None:
    """Write past pytest's output capture, so a suite's summary figures show in every run's log."""
    tr = config.pluginmanager.getplugin("terminalreporter")
    cap = config.pluginmanager.getplugin("capturemanager")
    with cap.global_and_fixture_disabled() if cap is not None else contextlib.nullcontext():
        for line in lines:
            if tr is not None:
                tr.write_line(line)
            else:  # pragma: no cover
                print(line)


def pytest_collection_modifyitems(config, items):
    """Tests marked ``gpu`` skip on machines without a usable CUDA device (most of them: CI too)."""
    gpu = [item for item in items if item.get_closest_marker("gpu")]
    if not gpu:
        return  # no CuPy import (and no CUDA start-up) for runs without GPU tests
    from curastream.engine.device import DeviceError, resolve_device

    try:
        resolve_device("gpu")
        return
    except DeviceError as e:
        skip = pytest.mark.skip(reason=f"needs a CUDA device: {e}")
    for item in gpu:
        item.add_marker(skip)
