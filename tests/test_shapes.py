"""ShapesWorld: generator, oracle, tokenizer, segmenter, ranker, shipped weights, training and a short benchmark."""
import numpy as np
import pytest
import torch

from romlib.contracts import NoObjectFound, Ranker, Segmentation, Segmenter
from romlib.shapes import scenes as S
from romlib.shapes.oracle import colour_labels, describe_region, judge, object_region
from romlib.shapes.segmenter import ShapesSegmenter


def _scene(specs, seed=0):
    """A scene with objects placed by hand: specs = [(colour, shape, (x0, y0, side)), ...]."""
    rng = np.random.default_rng(seed)
    bg = S.render_background(rng)
    objs = [S.Obj(c, s, (x, y, x + d, y + d), S.render_shape(s, (x, y, x + d, y + d)), S.COLOURS[c]) for c, s, (x, y, d) in specs]
    img = bg.copy()
    for o in objs:
        img[o.mask] = o.rgb
    return S.Scene(img, bg, objs)


# ----------------------------------------------------------------------------- generator
def test_scene_is_deterministic_and_seeds_differ():
    a, b, c = S.make_scene(7), S.make_scene(7), S.make_scene(8)
    assert np.array_equal(a.image, b.image) and [(o.colour, o.shape, o.box) for o in a.objects] == \
        [(o.colour, o.shape, o.box) for o in b.objects]
    assert not np.array_equal(a.image, c.image)
    assert a.image.shape == (S.SIZE, S.SIZE, 3) and a.image.dtype == np.uint8


@pytest.mark.parametrize("seed", range(40))
def test_masks_are_exact(seed):
    sc = S.make_scene(seed)
    union = np.zeros(sc.image.shape[:2], bool)
    for o in sc.objects:
        assert o.mask.any() and (sc.image[o.mask] == o.rgb).all()  # every mask pixel is the object's colour
        assert not (union & o.mask).any()
        union |= o.mask
        ys, xs = np.nonzero(o.mask)
        assert o.box[0] <= xs.min() and xs.max() < o.box[2] and o.box[1] <= ys.min() and ys.max() < o.box[3]
    assert (sc.image[~union] == sc.background[~union]).all()  # everything else is background
    assert (colour_labels(sc.background) < 0).all()  # backgrounds never look like a shape
    for i, o in enumerate(sc.objects):  # objects are at least GAP px apart
        for p in sc.objects[:i]:
            assert not (S.dilate_np(o.mask, S.GAP - 1) & p.mask).any()


def test_scene_options_and_errors():
    sc = S.make_scene(3, n_objects=2, colours=["red", "blue"], shapes=["circle", "square"])
    assert [(o.colour, o.shape) for o in sc.objects] == [("red", "circle"), ("blue", "square")]
    assert sc.caption == "a red circle and a blue square"
    with pytest.raises(ValueError, match="n_objects"):
        S.make_scene(0, n_objects=4)
    with pytest.raises(ValueError, match="unknown shape"):
        S.render_shape("star", (0, 0, 8, 8))


# ----------------------------------------------------------------------------- oracle
@pytest.mark.parametrize("colour", list(S.COLOURS))
@pytest.mark.parametrize("shape", S.SHAPES)
def test_oracle_names_every_colour_and_shape(colour, shape):
    rng = np.random.default_rng(hash((colour, shape)) % 2**32)
    for side in range(S.MIN_SIDE, S.MAX_SIDE + 1):
        for _ in range(3):
            x, y = (int(v) for v in rng.integers(1, S.SIZE - side, size=2))
            sc = _scene([(colour, shape, (x, y, side))], seed=int(rng.integers(1000)))
            for jitter in (-S.COLOUR_JITTER, 0, S.COLOUR_JITTER):
                img = sc.image.copy()
                img[sc.objects[0].mask] = np.clip(np.array(S.COLOURS[colour]) + jitter, 0, 255)
                r = describe_region(img, S.dilate_np(sc.objects[0].mask, 2))
                assert (r.colour, r.shape) == (colour, shape), (side, x, y, jitter, r.ious)


def test_oracle_sees_nothing_and_rejects_non_shapes():
    sc = _scene([("red", "circle", (4, 4, 10))])
    assert describe_region(sc.background).colour is None  # background only
    img = sc.background.copy()
    img[10:14, 5:25] = S.COLOURS["green"]  # a 4×20 bar: green, but no ShapesWorld shape
    r = describe_region(img)
    assert r.colour == "green" and r.shape is None
    img = sc.background.copy()
    img[10:12, 10:12] = S.COLOURS["blue"]  # 4 pixels: too small to be an object
    assert describe_region(img).colour is None


def test_judge_success_and_preservation():
    sc = _scene([("red", "circle", (4, 4, 10)), ("blue", "square", (20, 18, 9))])
    red_circle = sc.objects[0]
    edited = sc.with_object(0, "green", "square")
    region = object_region(red_circle.mask, red_circle.mask, [sc.objects[1].mask])
    r = describe_region(edited.image, region)
    assert (r.colour, r.shape) == ("green", "square")
    assert judge(r, "a green square", red_circle) == {"success": True, "preserved": None, "colour": "green", "shape": "square"}
    assert judge(r, "a square", red_circle)["preserved"] is False  # the colour changed although not asked
    assert judge(r, "a blue square", red_circle)["success"] is False
    assert judge(describe_region(sc.with_object(0, shape="square").image, region), "a square", red_circle)["preserved"] is True


# ----------------------------------------------------------------------------- language
def test_tokenizer_round_trip_and_errors():
    tok = S.WordTokenizer()
    text = "the red circle on the left"
    ids = tok.encode(text)
    assert len(ids) == 6 and tok.decode(ids) == text and tok.end_token == 0 and tok.n_vocab == len(S.VOCAB)
    tokens, mask = tok.batch(["a blue square", ""], 8)
    assert tokens.shape == (2, 8) and mask.sum(1).tolist() == [3, 0] and (tokens[1] == 0).all()
    assert tok.encode("A Red, CIRCLE.") == tok.encode("a red circle")
    with pytest.raises(ValueError, match="unknown word"):
        tok.encode("a red car")


def test_parse_and_referring_expressions_resolve_back():
    assert S.parse_text("a blue shape").named == {"colour": "blue"}
    assert S.parse_text("the square at the bottom") == S.Parsed(None, "square", "bottom", definite=True)
    assert S.parse_text("").empty
    with pytest.raises(ValueError, match="more than one"):
        S.parse_text("a red circle and a blue square")
    for seed in range(30):
        sc = S.make_scene(seed)
        for i in range(len(sc.objects)):
            for ref in S.referring_expressions(sc, i):
                assert S.resolve(sc.objects, S.parse_text(ref))[0] == i, (seed, ref)


# ----------------------------------------------------------------------------- segmenter
def test_segmenter_finds_the_referred_shape():
    sc = _scene([("red", "circle", (2, 3, 10)), ("red", "circle", (19, 5, 9)), ("blue", "triangle", (8, 18, 11))])
    seg = ShapesSegmenter()
    assert isinstance(seg, Segmenter)
    for text, k in (("the blue triangle", 2), ("the triangle", 2), ("the red circle on the left", 0),
                    ("the circle on the right", 1), ("the shape at the bottom", 2), ("the blue shape", 2)):
        s = seg.segment(sc.image, text)
        assert isinstance(s, Segmentation) and torch.equal(s.mask, torch.from_numpy(sc.objects[k].mask)), text
        ys, xs = np.nonzero(sc.objects[k].mask)
        assert s.box == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) and s.score == 1.0
        assert s.scores.shape == (3,) and s.boxes.shape == (3, 4)
    with pytest.raises(NoObjectFound):
        seg.segment(sc.image, "the green square")
    weak = seg.segment(sc.image, "the green square", best_anyway=True)
    assert weak.score < 0.5
    # works on an upscaled image too
    from PIL import Image

    big = np.asarray(Image.fromarray(sc.image).resize((128, 128), Image.NEAREST))
    s = seg.segment(big, "the blue triangle")
    assert s.mask.shape == (128, 128) and s.mask[::4, ::4].numpy().sum() == sc.objects[2].mask.sum()


# ----------------------------------------------------------------------------- ranker, weights, pipeline
def test_ranker_api():
    from romlib.shapes.ranker import ShapesRanker

    r = ShapesRanker()
    assert isinstance(r, Ranker)
    assert r.encode_image(torch.rand(3, 3, 32, 32)).shape == (3, 64)
    assert r.encode_image(torch.rand(2, 3, 48, 48)).shape == (2, 64)  # resized to its input size
    assert r.encode_text(["a red circle", ""]).shape == (2, 64)


@pytest.fixture(scope="module")
def backend():
    from romlib.shapes import load_backend

    return load_backend("cpu")


def test_shipped_weights_load_and_ranker_learned(backend):
    from pathlib import Path

    from romlib.shapes.train import WEIGHTS_DIR, evaluate_ranker, inpaint_config

    assert backend.name == "shapes" and backend.upsampler is None
    assert backend.base_model.cfg.to_dict() == inpaint_config().to_dict()
    assert not backend.base_model.cfg.mask_inpaint_input  # CCF's original image reaches the model
    total = sum(p.stat().st_size for p in Path(WEIGHTS_DIR).iterdir())
    assert total <= 10 * 2**20
    assert evaluate_ranker(backend.ranker, n=96) > 0.8  # names colour + shape of unseen crops (chance 1/15)


def test_pipeline_edit_on_shapes(backend):
    from romlib.io import to_uint8 as rl_uint8
    from romlib.pipeline import ROMPipeline

    pipe = ROMPipeline(backend, device="cpu")
    sc = _scene([("red", "circle", (4, 4, 11)), ("green", "square", (19, 18, 10))])
    r = pipe.edit(sc.pil(), "the red circle", "a blue square", samples=2, steps=5, progress=False)
    assert r.images.shape == (2, 3, 32, 32) and r.scores == sorted(r.scores)
    out = np.asarray(r.full_res[0])
    keep = r.keep_mask_base.numpy() > 0.5
    assert (out[keep] == sc.image[keep]).all()  # only the dilated mask changes
    # the frame is at the input's resolution: pasted exactly, no feather blending the old object's rim back
    frame = rl_uint8(r.images[0])
    assert (out[~keep] == frame[~keep]).all()


# ----------------------------------------------------------------------------- training and benchmark
def test_training_batch_and_loss():
    from romlib.sampling.diffusion import GaussianDiffusion, get_named_beta_schedule
    from romlib.models.glide import GlideUNet
    from romlib.shapes.train import inpaint_config, make_batch
    from romlib.training import DiffusionArrays, hybrid_loss

    rng = np.random.default_rng(0)
    b = make_batch(rng, 6, inpaint_input="masked")
    assert b["x0"].shape == (6, 3, 32, 32) and b["keep"].shape == (6, 1, 32, 32) and len(b["texts"]) == 6
    hole = b["keep"] == 0
    assert hole.any() and (b["inpaint_image"].masked_select(hole.expand(-1, 3, -1, -1)) == 0).all()  # GLIDE: blanked hole
    p = make_batch(np.random.default_rng(0), 16, inpaint_input="pairs")
    assert (p["inpaint_image"] * (1 - p["keep"])).abs().sum() > 0  # some counterfactual sources are shown
    torch.manual_seed(0)
    model = GlideUNet(inpaint_config())
    tokens, mask = S.WordTokenizer().batch(b["texts"], 8)
    arrays = DiffusionArrays(GaussianDiffusion(betas=get_named_beta_schedule("squaredcos_cap_v2", 1000)), "cpu")
    t = torch.tensor([0, 1, 10, 100, 500, 999])
    mse, vb = hybrid_loss(model, arrays, b["x0"], t, torch.randn_like(b["x0"]), (1 - b["keep"]) + 0.1 * b["keep"],
                          tokens=tokens, mask=mask, inpaint_image=b["inpaint_image"], inpaint_mask=b["keep"])
    assert torch.isfinite(mse) and torch.isfinite(vb) and mse > 0 and vb > 0
    (mse + vb).backward()
    assert model.out[2].weight.grad[3:].abs().sum() > 0  # the variance channels learn


def test_train_commands_write_loadable_weights(tmp_path):
    from romlib.shapes import load_inpaint_model, load_ranker
    from romlib.shapes.train import train_inpaint, train_ranker

    train_inpaint(tmp_path, steps=2, batch_size=4, progress=False)
    train_ranker(tmp_path, steps=2, batch_size=8, progress=False)
    for name in ("inpaint.pt", "ranker.pt", "inpaint_loss.csv", "inpaint_loss.png", "ranker_loss.png", "inpaint_checkpoint.pt"):
        assert (tmp_path / name).is_file(), name
    assert load_inpaint_model(tmp_path).meta["steps"] == 2
    train_inpaint(tmp_path, steps=3, batch_size=4, progress=False, resume=True)  # resumes at step 2
    assert load_inpaint_model(tmp_path).meta["steps"] == 3
    assert load_ranker(tmp_path).meta["steps"] == 2


def test_short_benchmark_end_to_end(backend, tmp_path):
    from romlib.shapes.bench import format_table, make_cases, plot_benchmark, run_benchmark

    cases = make_cases(20, seed=0)
    assert [c.target for c in cases] == [c.target for c in make_cases(20, seed=0)]
    for c in cases:  # every target changes something, every reference picks the object
        named = S.parse_text(c.target).named
        assert named and any(getattr(c.original, k) != v for k, v in named.items())
        assert S.resolve(c.scene.objects, S.parse_text(c.ref))[0] == c.obj
    res = run_benchmark(20, methods=("inpaint", "cf", "ccf"), scales=(1.0, 5.0), samples=2, steps="4", dilations=(1, 3),
                        backend=backend, progress=False)
    rows = res["rows"]
    assert [(r["method"], r["scale"]) for r in rows] == [("inpaint", 1.0), ("cf", 1.0), ("cf", 5.0), ("ccf", 1.0),
                                                        ("ccf", 5.0), ("ccf", rows[-1]["scale"]), ("ccf", rows[-1]["scale"])]
    for r in rows:
        assert r["n_samples"] == 40 and 0 <= r["success"] <= 1 and 0 <= r["top1_local"] <= 1
        assert r["psnr_out"] == float("inf")  # outside the mask nothing changes
    assert res["segmenter"]["exact"] == 1.0
    table = format_table(res)
    assert "| ccf | 5 |" in table and "eroded 1 px" in table
    plot_benchmark(res, tmp_path / "b.png")
    assert (tmp_path / "b.png").is_file()


def test_removal_examples_teach_the_clean_background():
    """shapes-train --p-remove: an empty caption over an object hole answers with the clean background;
    p_remove=0 leaves the shipped recipe's random stream unchanged."""
    import numpy as np

    from romlib.shapes.oracle import colour_labels
    from romlib.shapes.train import make_example

    a, b = make_example(np.random.default_rng(3)), make_example(np.random.default_rng(3), p_remove=0.0)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[2], b[2]) and a[3] == b[3]
    x0, source, hole, caption = make_example(np.random.default_rng(1), p_remove=0.999)
    assert caption == "" and source is None and hole.any()
    assert not (colour_labels(x0)[hole] >= 0).any(), "a removal example's hole shows no shape"


def test_removal_recipe_gives_the_empty_caption_one_meaning_and_partial_captions_their_share():
    """With p_remove > 0 an empty caption over a blanked object hole is always a removal example (the other
    empty-captioned holes show their source), and p_partial sets the share of one-attribute captions."""
    import numpy as np

    from romlib.shapes.oracle import colour_labels
    from romlib.shapes.scenes import parse_text
    from romlib.shapes.train import make_example

    rng = np.random.default_rng(5)
    blanked_empty = shown_empty = partial = non_empty = 0
    for _ in range(600):
        x0, source, hole, caption = make_example(rng, p_remove=0.1, p_partial=0.4, p_empty=0.0)
        if not caption:
            if source is None:
                blanked_empty += 1
                assert not (colour_labels(x0)[hole] >= 0).any(), "empty caption + blanked hole must show background"
            else:
                shown_empty += 1
        else:
            non_empty += 1
            partial += len(parse_text(caption).named) == 1 and caption.startswith("a ")
    assert blanked_empty > 30 and shown_empty > 30
    assert 0.32 < partial / non_empty < 0.48, partial / non_empty  # 0.4 of the non-removal captions
    with pytest.raises(ValueError, match="p_partial"):
        from romlib.shapes.train import train_inpaint

        train_inpaint("unused", p_partial=0.9)


def test_p_source_sets_the_share_of_examples_showing_a_source():
    import numpy as np

    from romlib.shapes.train import make_example

    for p, lo, hi in ((0.0, 0.0, 0.0), (0.9, 0.8, 0.97), (1.0, 1.0, 1.0)):
        rng = np.random.default_rng(7)
        shown = [make_example(rng, p_empty=0.0, p_source=p)[1] is not None for _ in range(200)]
        assert lo <= np.mean(shown) <= hi, (p, np.mean(shown))
