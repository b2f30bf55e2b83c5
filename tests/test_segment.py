"""romlib.segment / romlib.models.mdetr: checkpoint layout, numerical equivalence with the reference MDETR
(tests/fixtures/mdetr, see its README), loading, and `segment` on a tiny random model with bad inputs."""
import argparse
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from romlib.contracts import NoObjectFound, Segmentation
from romlib.models.mdetr import LEGACY_KEYS, MDETRConfig, official_config
from romlib.segment import MIN_SIDE, MDETRSegmenter, build_from_state_dict, create_model, load_segmenter
from romlib.backends import tiny_segmenter
from romlib.models.tiny import tiny_mdetr_config, tiny_roberta_tokenizer

FIXTURE = Path(__file__).parent / "fixtures" / "mdetr" / "mdetr_tiny_golden.pt"
LEGACY = LEGACY_KEYS[0]


@pytest.fixture(scope="module")
def seg():
    """The tiny model at a 256-px model input (fast); test_segment_end_to_end uses the authors' 800."""
    return tiny_segmenter(seed=0, size=256)


@pytest.fixture(scope="module")
def golden():
    return torch.load(FIXTURE, weights_only=True)


@pytest.fixture()
def image():
    g = np.random.default_rng(0)
    return Image.fromarray((g.random((48, 64, 3)) * 255).astype(np.uint8))


# ----------------------------------------------------------------------------- checkpoint layout
def test_full_size_matches_the_official_manifest(ref):
    model = create_model("phrasecut-eb3", device="meta")
    ours = {k: list(v.shape) for k, v in model.state_dict().items()}
    manifest = json.loads((ref / "mdetr_efficientnetB3_phrasecut_state_dict_shapes.json").read_text())
    assert len(ours) == 917
    assert ours == manifest
    assert sum(p.numel() for p in model.parameters()) == 153_731_269


def test_full_size_loads_strictly_with_the_legacy_entry(ref):
    manifest = json.loads((ref / "mdetr_efficientnetB3_phrasecut_state_dict_shapes.json").read_text())
    state = {k: torch.empty(s, device="meta") for k, s in manifest.items()}
    model = build_from_state_dict(official_config("phrasecut-eb3"), {**state, LEGACY: torch.arange(514)[None]},
                                  device="meta")
    assert LEGACY not in model.state_dict()
    del state["detr.query_embed.weight"]
    with pytest.raises(RuntimeError, match="query_embed"):
        build_from_state_dict(official_config("phrasecut-eb3"), state, device="meta")


def test_r101_variant_has_torchvision_resnet101_names():
    torchvision = pytest.importorskip("torchvision")
    with torch.device("meta"):
        tv = torchvision.models.resnet101()
    expected = {f"detr.backbone.0.body.{k}": list(v.shape) for k, v in tv.state_dict().items()
                if not k.startswith("fc.") and not k.endswith("num_batches_tracked")}
    ours = {k: list(v.shape) for k, v in create_model("phrasecut-r101", device="meta").state_dict().items()}
    assert {k: v for k, v in ours.items() if k.startswith("detr.backbone.")} == expected
    assert ours["detr.input_proj.weight"] == [256, 2048, 1, 1]
    assert [ours[f"mask_head.adapter{i}.weight"][1] for i in (1, 2, 3)] == [1024, 512, 256]


def test_frozen_batchnorm_keeps_the_activation():
    from romlib.models.mdetr import FrozenBatchNormAct2d, MDETRSegmentation

    with torch.device("meta"):
        model = MDETRSegmentation(official_config("phrasecut-eb3"))
    bns = [m for m in model.modules() if isinstance(m, FrozenBatchNormAct2d)]
    assert len(bns) == 77 and not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    assert sum(isinstance(m.act, torch.nn.SiLU) for m in bns) == 51  # stem + depthwise/expansion norms
    x = torch.randn(1, 4, 2, 2)
    bn = FrozenBatchNormAct2d(4, act=torch.nn.SiLU())
    assert torch.allclose(bn(x), torch.nn.functional.silu(x / math.sqrt(1 + 1e-5)), atol=1e-6)


# ----------------------------------------------------------------------------- reference numerics
def test_reference_outputs(golden):
    cfg = MDETRConfig(**golden["config"])
    model = build_from_state_dict(cfg, golden["state_dict"])
    with torch.no_grad():
        out = model(**golden["inputs"], queries="all")
    for k, ref in golden["outputs"].items():
        assert out[k].shape == ref.shape, k
        assert (out[k] - ref).abs().max() <= 1e-4 * ref.abs().max(), k
    # what each query adds to its mask (its attention map), apart from what all queries share
    ref = golden["outputs"]["pred_masks"]
    ref_c, ours_c = ref - ref.mean(1, keepdim=True), out["pred_masks"] - out["pred_masks"].mean(1, keepdim=True)
    assert ref_c.std() > 0.01 * ref.std()
    assert (ours_c - ref_c).abs().max() <= 1e-4 * ref_c.abs().max()


def test_preprocessing_tokens_and_postprocessing_match_the_reference(golden):
    cfg = MDETRConfig(**golden["config"])
    assert cfg.to_dict() == tiny_mdetr_config().to_dict()
    seg = MDETRSegmenter(build_from_state_dict(cfg, golden["state_dict"]), tiny_roberta_tokenizer(), size=golden["size"])
    image = Image.fromarray(golden["image"].numpy())
    x = seg.preprocess(image)
    assert (x - golden["inputs"]["images"]).abs().max() < 1e-6  # T.Resize(size), ToTensor, Normalize
    ids, mask = seg.tokenize(golden["phrase"])
    assert torch.equal(ids, golden["inputs"]["input_ids"]) and torch.equal(mask, golden["inputs"]["attention_mask"])

    s = seg.segment(image, golden["phrase"], best_anyway=True)
    logits = golden["outputs"]["pred_logits"][0]
    best = int((1 - logits.softmax(-1)[:, -1]).argmax())
    assert s.index == best
    ref_mask = golden["postprocessed_masks"][best]  # MDETR's PostProcessSegm(threshold=0.5)
    assert 0 < ref_mask.float().mean() < 1
    assert all((m != ref_mask).sum() > 10 for i, m in enumerate(golden["postprocessed_masks"]) if i != best)
    assert (s.mask == ref_mask).float().mean() > 0.999
    W, H = image.size
    cx, cy, w, h = golden["outputs"]["pred_boxes"][0, best].tolist()
    assert s.box == pytest.approx(((cx - w / 2) * W, (cy - h / 2) * H, (cx + w / 2) * W, (cy + h / 2) * H), abs=1e-3)


# ----------------------------------------------------------------------------- loading
def test_load_segmenter_reads_an_official_style_file(tmp_path, monkeypatch):
    source = tiny_segmenter(seed=3).model
    state = {k: v.clone() for k, v in source.state_dict().items()}
    path = tmp_path / "phrasecut_EB3_checkpoint.pth"
    torch.save({"model": {**state, LEGACY: torch.arange(32)[None]}, "model_ema": None, "epoch": 9,
                "optimizer": {"state": {}, "param_groups": [{"lr": 1e-5, "params": [0, 1]}]},
                "args": argparse.Namespace(backbone="timm_tf_efficientnet_b3_ns", masks=True, lr=1e-5)}, path)
    monkeypatch.setattr("romlib.segment.official_config", lambda name: tiny_mdetr_config())
    from romlib.hub import manifests  # the download checks the file against the official manifest: the tiny model's here

    monkeypatch.setitem(manifests._all(), "mdetr_efficientnetB3_phrasecut", {k: list(v.shape) for k, v in state.items()})
    monkeypatch.setenv("ROMLIB_MIRROR", str(tmp_path))  # a local mirror folder holding the official file name
    monkeypatch.setenv("ROMLIB_CACHE", str(tmp_path / "cache"))
    seg = load_segmenter("phrasecut-eb3", tokenizer=tiny_roberta_tokenizer(), progress=False)
    loaded = seg.model.state_dict()
    assert loaded.keys() == state.keys()
    assert all(torch.equal(loaded[k], state[k]) for k in state)
    assert not any(b.device.type == "meta" for b in seg.model.buffers())
    assert isinstance(seg.segment(np.zeros((40, 40, 3), np.uint8), "the red car", best_anyway=True), Segmentation)


def test_load_segmenter_rejects_unknown_names():
    with pytest.raises(ValueError, match="phrasecut-eb3"):
        load_segmenter("phrasecut-b5")


# ----------------------------------------------------------------------------- segment
def test_segment_end_to_end(image):
    seg = tiny_segmenter(seed=0)
    s = seg.segment(image, "the red car", best_anyway=True)
    W, H = image.size
    Q = seg.model.cfg.num_queries
    assert s.mask.dtype == torch.bool and s.mask.shape == (H, W) and s.image_size == (W, H)
    assert s.scores.shape == (Q,) and s.boxes.shape == (Q, 4)
    assert s.index == int(s.scores.argmax()) and s.score == pytest.approx(float(s.scores[s.index]))
    assert s.box == pytest.approx(tuple(s.boxes[s.index].tolist()))
    assert s.extra["model_input_size"] == (800, 1066)
    assert s.mask_logits.shape == (200, 267)  # stride 4 of the 800x1066 model input
    # the mask is the chosen query's logits at the input size, sigmoid > threshold
    up = torch.nn.functional.interpolate(s.mask_logits[None, None], size=(800, 1066), mode="bilinear")
    up = torch.nn.functional.interpolate(up, size=(H, W), mode="bilinear")[0, 0]
    assert torch.equal(s.mask, up.sigmoid() > 0.5)
    assert torch.equal(seg.segment(image, "the red car", threshold=0.9, best_anyway=True).mask, up.sigmoid() > 0.9)


def test_segment_accepts_paths_and_arrays(seg, image, tmp_path):
    a = seg.segment(image, "the red car", best_anyway=True)
    image.save(tmp_path / "x.png")
    b = seg.segment(tmp_path / "x.png", "the red car", best_anyway=True)
    c = seg.segment(np.asarray(image), "the red car", best_anyway=True)
    assert torch.equal(a.mask, b.mask) and torch.equal(a.mask, c.mask)


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "I;16", "1"])
def test_segment_converts_image_modes(seg, image, mode):
    img = image.convert("I").point(lambda v: v * 256).convert("I;16") if mode == "I;16" else image.convert(mode)
    s = seg.segment(img, "the red car", best_anyway=True)
    assert s.mask.shape == (image.size[1], image.size[0])


@pytest.mark.parametrize("text", ["", "   ", "\n\t"])
def test_empty_text_is_refused(seg, image, text):
    with pytest.raises(ValueError, match="text is empty"):
        seg.segment(image, text)


def test_non_string_text_is_refused(seg, image):
    with pytest.raises(TypeError, match="string"):
        seg.segment(image, ["the red car"])


def test_long_text_is_truncated_with_a_warning(seg, image):
    long = "the red car next to the blue house " * 10
    with pytest.warns(UserWarning, match="truncated to 30"):
        ids, _ = seg.tokenize(long)
    assert ids.shape[1] == seg.max_tokens == 30 and int(ids[0, -1]) == 2  # ends with </s>
    with pytest.warns(UserWarning, match="truncated"):
        s = seg.segment(image, long, best_anyway=True)
    assert s.extra["tokens"] == 30


@pytest.mark.parametrize("size", [(31, 100), (100, 31), (8, 8)])
def test_small_images_are_refused(seg, size):
    with pytest.raises(ValueError, match=f"at least {MIN_SIDE} px"):
        seg.segment(Image.new("RGB", size), "the red car")


def test_no_object_found_names_the_best_query(seg, image):
    best = seg.segment(image, "the red car", best_anyway=True)
    with pytest.raises(NoObjectFound) as info:
        seg.segment(image, "the red car", min_score=1.0)
    err = info.value
    assert err.best_score == pytest.approx(best.score) and err.best_box == pytest.approx(best.box)
    assert f"{best.score:.3f}" in str(err) and "best_anyway" in str(err)
    again = seg.segment(image, "the red car", min_score=1.0, best_anyway=True)
    assert torch.equal(again.mask, best.mask)


@pytest.mark.parametrize("kw", [dict(threshold=0.0), dict(threshold=1.5), dict(threshold="high"),
                                dict(min_score=-0.1), dict(min_score=2)])
def test_bad_knobs_are_refused(seg, image, kw):
    with pytest.raises(ValueError, match=next(iter(kw))):
        seg.segment(image, "the red car", **kw)


def test_tiny_segmenter_leaves_the_global_random_state_alone():
    torch.manual_seed(5)
    a = torch.rand(3)
    torch.manual_seed(5)
    tiny_segmenter(seed=1)
    assert torch.equal(torch.rand(3), a)
