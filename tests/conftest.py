"""Shared fixtures. Real media is read from ../shared/media and tests skip cleanly without it."""

from __future__ import annotations

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
