"""A re-encoded clip's bytes follow its input only, not what the process did before.

libx264's AVX-512 code read memory nothing had written (videos/x264.py): the raw .h264's clip
came out in 2-5 versions over 24 cuts in one process, and a Ray worker's clip differed from the
driver's. The heap is stirred between cuts with blocks of decoder-buffer size and random
content, which is what another video's work does to it.
"""

from __future__ import annotations

import hashlib
import random

import pytest

from conftest import MEDIA
from curastream.videos.smart_cut import cut_exact

RAW = MEDIA / "videos" / "libvpl_cars_320x240.h264"


def _stir_heap(rng: random.Random) -> None:
    blocks = [bytes([rng.randrange(256)]) * rng.choice([40_000, 80_000, 120_000]) for _ in range(100)]
    del blocks


@pytest.mark.slow
def test_reencoded_clip_is_the_same_whatever_the_heap_held():
    if not RAW.exists():
        pytest.skip(f"shared media not present: {RAW}")
    rng = random.Random(7)
    digests = set()
    for _ in range(24):
        _stir_heap(rng)
        clip = cut_exact(RAW, [(0.5 / 25, 30.5 / 25)])[0]
        assert not isinstance(clip, Exception), clip
        assert clip.method == "reencode" and clip.num_frames == 30
        digests.add(hashlib.sha256(clip.data).hexdigest())
    assert len(digests) == 1, f"{len(digests)} different encodes of the same frames"
