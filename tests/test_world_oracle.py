"""The embedded world's oracle: right on clean renders, abstains on ambiguous ones, measures free attributes,
background continuation, seams and removal."""
import numpy as np

from romlib.world.data import object_hole, perturb
from romlib.world.oracle import judge
from romlib.world.render import render_all, render_float
from romlib.world.scene import COLOURS, SHAPES, make_scene


def _case(seed):
    rng = np.random.default_rng(seed)
    scene = make_scene(rng)
    i = int(rng.integers(len(scene.objects)))
    img, vis, _ = render_all(scene)
    return rng, scene, i, img, object_hole(rng, scene, i, vis)


def _full(o):
    return f"a {o.size_word} {o.material} {o.colour} {o.shape}"


def test_clean_renders_are_read_right():
    wrong, abstained = 0, 0
    for seed in range(14):
        _, scene, i, img, hole = _case(seed)
        rec = judge(img, scene, i, hole, _full(scene.objects[i]))
        hits = [rec[f"hit_{k}"] for k in ("shape", "colour", "material", "size")]
        wrong += hits.count(False)
        abstained += hits.count(None)
        if rec["angle_err"] is not None:
            assert rec["angle_err"] < 6, rec
        assert abs(rec["size_ratio"] - 1) < 0.12 and rec["shift"] < 2.0, rec
    assert wrong == 0 and abstained <= 1


def test_perturbed_renders_are_never_called_wrong_often():
    wrong = 0
    for seed in range(100, 110):
        rng, scene, i, img, hole = _case(seed)
        img = np.where(hole[..., None], perturb(rng, img), img)
        rec = judge(img, scene, i, hole, _full(scene.objects[i]))
        wrong += sum(rec[f"hit_{k}"] is False for k in ("shape", "colour", "material", "size"))
    assert wrong <= 1


def test_an_edit_is_judged_against_its_target_and_keeps_pose():
    for seed in range(200, 204):
        rng, scene, i, _, hole = _case(seed)
        o = scene.objects[i]
        colour = next(c for c in COLOURS if c != o.colour)
        edited = render_float(scene.replace_object(i, colour=colour))
        assert judge(edited, scene, i, hole, f"a {colour} one")["success"] is True
        assert judge(edited, scene, i, hole, f"a {o.colour} one")["success"] is False
        shape = next(s for s in SHAPES if s != o.shape)
        rec = judge(render_float(scene.replace_object(i, shape=shape)), scene, i, hole, f"a {shape}")
        assert rec["hit_shape"] in (True, None) and rec["shift"] < 3.0


def test_ambiguous_colour_abstains():
    _, scene, i, _, hole = _case(1)
    o = scene.objects[i]
    a = render_float(scene.replace_object(i, colour="red"))
    b = render_float(scene.replace_object(i, colour="yellow"))
    half = np.arange(64)[None, :, None] < o.x
    rec = judge(np.where(half, a, b), scene, i, hole, "a red one")
    assert rec["hit_colour"] is None and rec["n_abstain"] == 1 and rec["success"] is None


def test_removal_background_and_seam():
    _, scene, i, img, hole = _case(7)
    truth = render_float(scene.without(i))
    gone = np.where(hole[..., None], truth, img)
    rec = judge(gone, scene, i, hole, "")
    assert rec["removed"] and rec["success"] and rec["seam"] < 1.0 and rec["psnr_bg"] == float("inf")
    kept = judge(img, scene, i, hole, "")
    assert not kept["removed"] and kept["area"] > 50
    # a stain: the hole filled with the mean colour of the old object's pixels, faded into the floor
    stain = np.where(hole[..., None], 0.6 * truth + 0.4 * img[hole].mean(0), img)
    assert judge(stain, scene, i, hole, "")["removed"] is False
    flat = np.where(hole[..., None], np.float32(128), img)
    assert judge(flat, scene, i, hole, "")["seam"] > 5 * max(rec["seam"], 1.0)


def test_free_attributes_are_continuous_errors():
    from romlib.world.scene import Background, Obj, Scene

    bg = Background(18.0, (160, 160, 160), (150, 150, 150), (110, 110, 110), (95, 95, 95), "checker")
    o = Obj("cylinder", "blue", "striped", 32, 40, 26, 10.0)
    scene = Scene(bg, (o,))
    hole = np.zeros((64, 64), bool)
    hole[18:62, 12:52] = True
    same = judge(render_float(scene), scene, 0, hole, "a red cylinder")
    assert same["angle_err"] < 3 and abs(same["size_ratio"] - 1) < 0.05 and same["pattern_corr"] > 0.9
    turned = judge(render_float(scene.replace_object(0, angle=30.0)), scene, 0, hole, "a cylinder")
    assert 15 < turned["angle_err"] < 25
    moved = judge(render_float(scene.replace_object(0, x=38.0)), scene, 0, hole, "a cylinder")
    assert 4.5 < moved["shift"] < 7.5
    smaller = judge(render_float(scene.replace_object(0, size=20.0, y=43.0)), scene, 0, hole, "a cylinder")
    assert 0.7 < smaller["size_ratio"] < 0.85
    plain = judge(render_float(scene.replace_object(0, material="matte")), scene, 0, hole, "a cylinder")
    assert plain["pattern_corr"] is None or plain["pattern_corr"] < 0.5
