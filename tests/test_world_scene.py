"""The embedded world's scenes and renderer: determinism, masks, occlusion, shadows, backgrounds, 32 px."""
import numpy as np
import pytest

from romlib.world.render import (downsample, render, render_all, render_background, render_float, render_masks,
                                 shadow_masks)
from romlib.world.scene import (COLOURS, LARGE_RANGE, SHAPES, SIZE, SMALL_RANGE, Obj, make_scene)


def test_scene_is_a_pure_function_of_its_seed():
    a, b, c = make_scene(7), make_scene(7), make_scene(8)
    assert a == b and np.array_equal(render(a), render(b))
    assert a != c and not np.array_equal(render(a), render(c))
    img = render(a)
    assert img.shape == (SIZE, SIZE, 3) and img.dtype == np.uint8


@pytest.mark.parametrize("seed", range(25))
def test_objects_are_in_frame_sized_and_mostly_visible(seed):
    scene = make_scene(seed)
    vis, amodal = render_masks(scene)
    assert 1 <= len(scene.objects) <= 3
    for j, o in enumerate(scene.objects):
        assert SMALL_RANGE[0] <= o.size <= SMALL_RANGE[1] or LARGE_RANGE[0] <= o.size <= LARGE_RANGE[1]
        assert o.base > scene.background.horizon  # stands on the floor
        full, shown = (amodal[j] > 0.5).sum(), (vis[j] > 0.5).sum()
        assert full > 0.5 * o.size ** 2 * 0.4 and shown >= 0.6 * full, (full, shown)
    assert (vis.sum(0) <= 1 + 1e-5).all()  # visible coverages partition at most one pixel


def test_nearer_object_occludes_and_masks_match_pixels():
    from romlib.world.scene import Background, Scene

    bg = Background(20.0, (150, 150, 150), (140, 140, 140), (110, 110, 110), (90, 90, 90), "plain")
    far = Obj("cube", "red", "matte", 28, 36, 24, 0)
    near = Obj("sphere", "blue", "matte", 38, 42, 24)
    scene = Scene(bg, (near, far))  # listing order does not matter: depth does
    assert scene.depth_order() == [1, 0]
    img = render(scene)
    vis, amodal = render_masks(scene)
    both = (amodal[0] > 0.99) & (amodal[1] > 0.99)
    assert both.sum() > 20 and (vis[0][both] > 0.99).all() and (vis[1][both] < 0.01).all()
    blue = img[vis[0] > 0.99].astype(int)
    assert (blue[:, 2] > blue[:, 0]).mean() > 0.95  # the sphere's pixels are blue


def test_background_removal_and_shadows():
    scene = make_scene(3, 2)
    clean = render_background(scene).astype(float)
    with_shadows = render_background(scene, shadows=True).astype(float)
    sh = shadow_masks(scene)
    assert (sh > 0.3).any()
    dark = sh.max(0) > 0.5
    assert (with_shadows[dark].sum(-1) < clean[dark].sum(-1)).all()  # shadows darken the floor
    gone = render(scene.without(0)).astype(float)
    vis, amodal = render_masks(scene)
    under = (vis[0] > 0.99) & (amodal[1] < 0.01) & (sh[1] < 0.01)  # (a hidden object shows once 0 is gone)
    assert under.sum() > 30
    assert np.abs(gone[under] - clean[under]).max() <= 1  # the removal shows the clean room there


def test_backgrounds_have_structure_to_continue():
    stds = [render_background(make_scene(s))[40:].astype(float).std(axis=(0, 1)).mean() for s in range(30)]
    assert np.median(stds) > 6  # floors are patterned, not flat


def test_size_32_is_the_same_scene_box_downsampled():
    scene = make_scene(11)
    big, small = render_float(scene), render_float(scene, 32)
    assert small.shape == (32, 32, 3)
    assert np.allclose(small, big.reshape(32, 2, 32, 2, 3).mean((1, 3)))
    assert np.allclose(downsample(render_masks(scene)[0], 32), render_masks(scene, 32)[0])
    img, vis, amodal = render_all(scene, 32)
    assert vis.shape == (len(scene.objects), 32, 32)


def test_attributes_change_the_pixels_they_should():
    scene = make_scene(5, 1)
    o = scene.objects[0]
    vis = render_masks(scene)[0][0] > 0.5
    untouched = render_masks(scene)[1][0] == 0  # not even the anti-aliased rim
    base = render(scene).astype(float)
    other_colour = next(c for c in COLOURS if c != o.colour)
    recoloured = render(scene.replace_object(0, colour=other_colour)).astype(float)
    assert np.abs(recoloured - base)[vis].mean() > 20 and np.abs(recoloured - base)[untouched].max() <= 1
    other_shape = next(s for s in SHAPES if s != o.shape)
    v2 = render_masks(scene.replace_object(0, shape=other_shape))[0][0] > 0.5
    assert (v2 ^ vis).sum() > 10


def test_bad_attribute_is_named():
    with pytest.raises(ValueError, match="unknown shape 'pyramid'"):
        Obj("pyramid", "red", "matte", 10, 10, 20)


def test_rl_world_reaches_its_submodules_without_an_import():
    """Notebooks write rl.world.cases / rl.world.oracle: a fresh interpreter must reach them from `import romlib`."""
    import subprocess
    import sys

    code = ("import romlib as rl; import sys; assert 'romlib.world.oracle' not in sys.modules; "
            "print(rl.world.cases.select_case('both').index, callable(rl.world.oracle.judge)); "
            "exec('try:\\n rl.world.nothing\\nexcept AttributeError as e:\\n print(e)')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["0 True", "module 'romlib.world' has no attribute 'nothing'"]
