"""The guidance registry is the one place a method is named; EditConfig the one place a knob is."""
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from romlib import masks as M
from romlib.config import EditConfig
from romlib.guidance.methods import METHODS, available, get, names

ROOT = Path(__file__).resolve().parents[1]


def test_cli_choices_are_the_registry():
    from romlib.cli import build_parser

    edit = build_parser()._subparsers._group_actions[0].choices["edit"]
    action = next(a for a in edit._actions if a.dest == "guidance")
    assert tuple(action.choices) == names() == tuple(METHODS)
    # every EditConfig knob that belongs on the command line has a flag, with its default
    for knob in EditConfig.knobs():
        if knob in ("mask", "progress"):
            continue
        a = next(a for a in edit._actions if a.dest == knob)
        assert a.default == getattr(EditConfig(), knob), knob


def test_method_names_are_written_once_in_the_package():
    """No module but romlib.specs (plain data, read by the torch-free CLI) spells out the list of methods (the
    registry, the CLI, widgets, pipeline read it)."""
    pattern = re.compile(r"[\"'](cf-original|ccf-direction)[\"']\s*,\s*[\"']clip[\"']\s*,\s*[\"']blended[\"']")
    home = {"specs.py"}
    spelled = [str(p.relative_to(ROOT)) for p in (ROOT / "romlib").rglob("*.py")
               if pattern.search(p.read_text(encoding="utf-8")) and p.name not in home]
    assert spelled == [], f"the list of methods is written again in {spelled}"
    text = (ROOT / "romlib" / "pipeline.py").read_text(encoding="utf-8")
    code = "\n".join(line for line in text.splitlines() if not line.strip().startswith((">>>", "(", "``", "#")))
    assert not re.search(r"==\s*[\"'](clip|blended|ccf|cf)[\"']|in \([\"'](clip|blended)", code), \
        "pipeline.py decides on a method name"


def test_docs_list_every_method():
    docs = (ROOT / "docs" / "modules.md").read_text(encoding="utf-8") + (ROOT / "README.md").read_text(encoding="utf-8")
    for name in METHODS:
        assert f"`{name}`" in docs, name


def test_widget_offers_what_the_backend_can_run():
    class B:
        extras = {"clip": object()}
    assert available(B()) == ("ccf", "cf", "ccf-direction", "cf-original", "clip")


@pytest.mark.parametrize("knobs,fragment", [
    (dict(scale=float("inf")), "scale=inf"), (dict(scale=1e308), "scale=1e+308"), (dict(scale=-1), "scale=-1"),
    (dict(samples=0), "samples=0"), (dict(samples=300), "samples=300"), (dict(batch_size=0), "batch_size=0"),
    (dict(threshold=float("nan")), "threshold=nan"), (dict(threshold=1.0), "threshold=1.0"),
    (dict(dilation=4), "dilation=4"), (dict(seed=-1), "seed=-1"), (dict(steps="abc"), "steps='abc'"),
    (dict(upsample_steps="0"), "upsample_steps='0'"),
    (dict(rank="best"), "rank='best'"), (dict(min_score=2), "min_score=2"),
    (dict(guidance=3), "guidance=3"),
])
def test_every_knob_is_validated_with_its_value_and_range(knobs, fragment):
    with pytest.raises(ValueError, match="accepted") as e:
        EditConfig.from_kwargs(**knobs).validate()
    assert fragment in str(e.value) and len(str(e.value)) < 300


def test_unknown_method_is_refused_with_the_registry_names():
    with pytest.raises(ValueError, match="guidance='cfg' is not a method; accepted: ccf, cf, ccf-direction"):
        get("cfg")


def test_unknown_knob_is_refused():
    with pytest.raises(TypeError, match="unknown edit setting.*scal"):
        EditConfig.from_kwargs(scal=3)


def test_methods_refuse_knobs_they_do_not_read():
    class B:
        name, extras, default_scales = "t", {"blended": object()}, {}
    for knob, value in (("scale", 3.0), ("steps", "50"), ("upsample_steps", "10"), ("upsample_temperature", 1.0)):
        with pytest.raises(ValueError, match=f"does not use {knob}"):
            METHODS["blended"].check(EditConfig.from_kwargs(guidance="blended", **{knob: value}), B())
    METHODS["blended"].check(EditConfig(guidance="blended", upsample=False), B())  # trivially true
    with pytest.raises(ValueError, match="baseline models"):
        METHODS["clip"].check(EditConfig(guidance="clip"), B())
    assert get("ccf").scale(B()) == 15.0 and get("cf").scale(B()) == 5.0 and get("clip").scale(B()) == 2.0
    assert get("blended").scale(B(), None) is None and get("blended").default_rank == "masked"


# ---------------------------------------------------------------------------- the three Blended fixes
def _blended_pipe():
    from romlib.backends import tiny_backend
    from romlib.pipeline import ROMPipeline

    return ROMPipeline(tiny_backend(baselines=True), device="cpu")


class _Spy:
    """Stands in for the Blended model plug-in: records what the pipeline gives it."""

    def __init__(self, image_size):
        self.calls, self.image_size = [], image_size

    def sample(self, **kw):
        self.calls.append(kw)
        return kw["image"].expand(kw["samples"], -1, -1, -1).clone()


def test_blended_gets_the_authors_mask_and_lanczos_input():
    """The authors give Blended Diffusion the mask at its own size (256 there), dilated 3×3 there,
    and resize with LANCZOS; GLIDE's mask is dilated at 64 and upsampled (4× coarser)."""
    pipe = _blended_pipe()
    spy = _Spy(128)  # the ADM's frame (256 for the real one); 2x the GLIDE base
    pipe.backend.extras["blended"] = spy
    rng = np.random.RandomState(0)
    img = Image.fromarray((rng.rand(90, 120, 3) * 255).astype("uint8"))
    mask = np.zeros((90, 120), dtype=np.uint8)
    mask[30:60, 40:80] = 255
    r = pipe.edit(img, "x", "a cat", guidance="blended", samples=1, dilation=3, progress=False, mask=mask)
    kw = spy.calls[0]
    S = spy.image_size
    expected_edit = M.dilate(M.resize_edit_mask(torch.from_numpy(mask > 0), S)[None, None], 3)
    assert torch.equal(kw["keep_mask"], M.to_keep_mask(expected_edit))
    glide_way = M.prepare_masks(M.resize_edit_mask(torch.from_numpy(mask > 0), 64), 3, S)[1]
    assert not torch.equal(kw["keep_mask"], glide_way)  # the fix changes something
    lanczos = torch.from_numpy(np.asarray(img.resize((S, S), Image.LANCZOS), dtype=np.float32)).permute(2, 0, 1) / 127.5 - 1
    assert torch.allclose(kw["image"][0], lanczos, atol=1e-6)
    assert r.settings["guidance"] == "blended" and "scale" not in r.settings and "steps" not in r.settings


def test_blended_with_an_empty_target_has_no_clip_guidance():
    from romlib.guidance.blended import blended_sample
    from romlib.guidance.baselines import adm_diffusion as create_diffusion
    from romlib.backends import tiny_clip_ranker
    from romlib.models.tiny import tiny_adm

    class NoClip:
        image_size = 32

        def encode_image(self, x):
            raise AssertionError("CLIP must not be used for an empty target")

        encode_text = encode_image

    model, d = tiny_adm(32), create_diffusion("4")
    image = torch.rand(1, 3, 32, 32) * 2 - 1
    keep = torch.ones(1, 1, 32, 32)
    keep[..., 8:24, 8:24] = 0
    a = blended_sample(model, d, NoClip(), image=image, keep_mask=keep, target="", samples=1, skip_timesteps=1, aug_num=2)
    b = blended_sample(model, d, tiny_clip_ranker(image_size=32), image=image, keep_mask=keep, target="a cat",
                       samples=1, skip_timesteps=1, aug_num=2, clip_lambda=0.0)
    c = blended_sample(model, d, tiny_clip_ranker(image_size=32), image=image, keep_mask=keep, target="a cat",
                       samples=1, skip_timesteps=1, aug_num=2)
    assert torch.allclose(a, b, atol=1e-6) and not torch.allclose(a, c, atol=1e-4)
