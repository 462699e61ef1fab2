"""The model contract and its stage: batching, the column, per-item failure, plug-ins by
``pkg.module:factory`` from a module outside the package, read back with pyarrow.

The model here is a small torch module built in the test with fixed weights (a LAION-style
linear head over per-channel means), so every expected score is computed independently from
the photo's own pixels (PIL) with NumPy.
"""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from conftest import media_path
from curastream.engine.device import Device
from curastream.models.contract import ModelError, ModelInput, clip_scores, prepare, run_batched
from curastream.models.registry import make_model, make_models

torch = pytest.importorskip("torch")

# score = sigmoid(W . mean_rgb / 255 + B)
W = (2.0, -1.0, 0.5)
B = -0.25

PLUGIN = textwrap.dedent(f'''
    import numpy as np
    import torch

    from curastream.models.contract import ModelInput

    CALLS = []


    class Head(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(3, 1)
            with torch.no_grad():
                self.fc.weight.copy_(torch.tensor([{list(W)}]))
                self.fc.bias.fill_({B})

        def forward(self, x):  # uint8 [N, H, W, 3]
            return torch.sigmoid(self.fc(x.float().mean(dim=(1, 2)) / 255.0)).squeeze(1)


    class Aesthetic:
        name = "toy_aesthetic"
        input = ModelInput(size=(64, 64), batch_size=3)
        outputs = ("aesthetic_score",)
        devices = ("cpu", "gpu")
        clip_reduce = "mean"

        def load(self, device):
            self.device = "cuda" if device.is_gpu else "cpu"
            self.net = Head().to(self.device).eval()

        def predict(self, pixels):
            CALLS.append(pixels.shape)
            # a stand-in for a model that cannot take one input: its own words must reach the reject
            if (pixels.reshape(len(pixels), -1).mean(axis=1) > 200).any():
                raise ValueError("toy head refuses bright images")
            with torch.no_grad():
                return {{"aesthetic_score": self.net(torch.from_numpy(pixels).to(self.device)).cpu().numpy()}}


    def factory():
        return Aesthetic()
''')


def expected(rgb: np.ndarray) -> float:
    m = rgb.reshape(-1, 3).astype(np.float64).mean(axis=0) / 255.0
    return float(1.0 / (1.0 + np.exp(-(np.dot(W, m) + B))))


@pytest.fixture
def plugin(tmp_path, monkeypatch):
    (tmp_path / "toy_models.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("toy_models", None)
    yield "toy_models:factory"
    sys.modules.pop("toy_models", None)


def _pil_rgb(path: Path) -> np.ndarray:
    from PIL import Image, ImageOps

    with Image.open(path) as im:
        return np.asarray(ImageOps.exif_transpose(im).convert("RGB"))


def test_batches_of_the_declared_size_and_one_bad_item_costs_only_itself(plugin):
    model = make_model(plugin)
    model.load(Device("cpu", None))
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 150, (40 + k, 50, 3), dtype=np.uint8) for k in range(7)]
    images[4] = np.full((30, 30, 3), 250, np.uint8)  # the one the head refuses
    images[5] = None  # a row with nothing to score
    cols, errors = run_batched(model, images)
    import toy_models

    # batches of 3 over the six images present: 3, then a failing 3 retried one by one
    assert [s[0] for s in toy_models.CALLS] == [3, 3, 1, 1, 1]
    assert all(s[1:] == (64, 64, 3) for s in toy_models.CALLS)
    assert list(errors) == [4]
    assert errors[4] == "toy_aesthetic: ValueError: toy head refuses bright images"
    assert cols["aesthetic_score"][4] is None and cols["aesthetic_score"][5] is None
    for i in (0, 1, 2, 3, 6):
        # area resize keeps the mean, so the score is the full image's
        assert cols["aesthetic_score"][i] == pytest.approx(expected(images[i]), abs=2e-3)


def test_clip_scores_reduce_over_spread_frames(plugin):
    model = make_model(plugin)
    model.load(Device("cpu", None))
    frames = [np.full((20, 20, 3), 10 * k, np.uint8) for k in range(12)]
    got = clip_scores(model, frames)
    # frames_per_clip 8 of 12, spread evenly: indices round(linspace(0, 11, 8))
    picks = np.linspace(0, 11, 8).round().astype(int)
    assert got["aesthetic_score"] == pytest.approx(np.mean([expected(frames[k]) for k in picks]), abs=1e-5)


def test_prepare_resizes_and_orders_colours():
    rgb = np.zeros((10, 20, 3), np.uint8)
    rgb[..., 0] = 200
    out = prepare(rgb, ModelInput(size=(5, 4), colour="bgr"))
    assert out.shape == (5, 4, 3) and out[0, 0, 2] == 200 and out[0, 0, 0] == 0
    with pytest.raises(ModelError, match="uint8"):
        prepare(rgb.astype(np.float32), ModelInput())


def test_names_that_are_not_models_fail_in_one_line(plugin):
    with pytest.raises(ModelError, match="unknown model 'nope'"):
        make_model("nope")
    with pytest.raises(ModelError, match="has no missing"):
        make_model("toy_models:missing")
    with pytest.raises(ModelError, match="both make the column 'aesthetic_score'"):
        make_models([plugin, plugin])


def test_a_model_asked_for_without_the_extra_names_it(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "onnxruntime" else real(n, *a))
    with pytest.raises(ModelError, match=r"pip install 'curastream\[models\]'"):
        make_model("nsfw")


def test_plugin_column_lands_in_the_shard_parquet_and_its_failure_is_a_reject(plugin, tmp_path):
    from curastream.config import ImageFilters, ImageRunConfig
    from curastream.images.pipeline import run_images

    names = ["skimage_rocket.jpg", "opencv_fruits.jpg", "mate_Dune.jpg", "skimage_hubble_deep_field.jpg"]
    paths = [media_path("images", n) for n in names]
    # a white image the toy head refuses, made here (not media)
    from PIL import Image

    white = tmp_path / "white.png"
    Image.fromarray(np.full((300, 300, 3), 255, np.uint8)).save(white)
    out = tmp_path / "out"
    cfg = ImageRunConfig(sources=[str(p) for p in paths] + [str(white)], output=str(out), models=[plugin],
                         progress=False, batch_size=2, filters=ImageFilters(min_resolution=None))
    run_images(cfg)
    t = pq.read_table(next(out.glob("*.parquet")))
    assert str(t.schema.field("aesthetic_score").type) == "float"
    assert t.column("nsfw_score").null_count == t.num_rows  # declared, not computed
    got = dict(zip(t.column("original_path").to_pylist(), t.column("aesthetic_score").to_pylist()))
    assert sorted(got) == sorted(str(p) for p in paths)
    for p in paths:
        assert got[str(p)] == pytest.approx(expected(_pil_rgb(p)), abs=0.01), p.name
    rej = pq.read_table(out / "_curastream" / "rejects.parquet").to_pylist()
    assert [(r["source"], r["stage"], r["reason"]) for r in rej] == [
        (str(white), "model", "toy_aesthetic: ValueError: toy head refuses bright images")]


def test_model_flag_on_the_command_line(plugin, tmp_path):
    from click.testing import CliRunner

    from curastream.cli import main

    out = tmp_path / "out"
    photo = media_path("images", "skimage_rocket.jpg")
    r = CliRunner().invoke(main, ["images", str(photo), "-o", str(out), "--model", plugin, "--no-progress"])
    assert r.exit_code == 0, r.output
    t = pq.read_table(next(out.glob("*.parquet")))
    assert t.column("aesthetic_score").to_pylist()[0] == pytest.approx(expected(_pil_rgb(photo)), abs=0.01)
    r = CliRunner().invoke(main, ["images", str(photo), "-o", str(tmp_path / "o2"), "--model", "no_such_model"])
    assert r.exit_code != 0 and "unknown model 'no_such_model'" in r.output
    r = CliRunner().invoke(main, ["images", str(photo), "-o", str(tmp_path / "o3"), "--max-nsfw", "0.5"])
    assert r.exit_code != 0 and "needs --model nsfw" in r.output
