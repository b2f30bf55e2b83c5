"""What an edit keeps (romlib.shapes.oracle.keeps / removed, romlib.shapes.keeps): the oracle's size and
position readings on constructed scenes, the target groups, and the report's bookkeeping on samples whose
answer is known (the ideal edit, the unedited image, an emptied hole, a moved object)."""
import numpy as np
import pytest
import torch

from romlib.shapes.oracle import POS_TOL, SIZE_TOL, describe_region, keeps, removed
from romlib.shapes.scenes import Obj, Scene, _compose, make_scene, render_shape


def _moved(scene: Scene, i: int, dx: int = 0, dy: int = 0, grow: int = 0) -> Scene:
    o = scene.objects[i]
    x0, y0, x1, y1 = o.box
    box = (x0 + dx, y0 + dy, x1 + dx + grow, y1 + dy + grow)
    objs = list(scene.objects)
    objs[i] = Obj(o.colour, o.shape, box, render_shape(o.shape, box, *scene.image.shape[:2]), o.rgb)
    return Scene(_compose(scene.background, objs), scene.background, objs, scene.seed)


@pytest.mark.parametrize("seed", range(6))
def test_keeps_reads_zero_on_the_clean_scene_and_sees_moves_and_growth(seed):
    scene = make_scene(seed, n_objects=1)
    o = scene.objects[0]
    before = describe_region(scene.image)
    same = keeps(describe_region(scene.image), before)
    assert same == {"size_change": 0.0, "shift": 0.0, "size_kept": True, "position_kept": True}
    x0, y0, x1, y1 = o.box
    dx = 3 if x1 + 3 <= 32 else -3
    moved = keeps(describe_region(_moved(scene, 0, dx=dx).image), before)
    assert moved["shift"] == pytest.approx(3.0, abs=0.5) and moved["shift"] > POS_TOL and not moved["position_kept"]
    assert moved["size_kept"]
    g = 3 if max(x1, y1) + 3 <= 32 else -3
    grown = keeps(describe_region(_moved(scene, 0, grow=g).image), before)
    assert grown["size_change"] == pytest.approx(3.0, abs=1.0) and grown["size_change"] > SIZE_TOL and not grown["size_kept"]


def test_removed_means_no_object_and_nothing_seen_keeps_nothing():
    scene = make_scene(2, n_objects=1)
    empty = scene.without_object(0)
    assert removed(describe_region(empty.image)) and not removed(describe_region(scene.image))
    k = keeps(describe_region(empty.image), describe_region(scene.image))
    assert not k["size_kept"] and not k["position_kept"] and np.isnan(k["shift"])


def _outline(scene: Scene, alpha: float) -> np.ndarray:
    """The clean background with the object's 1-px outline blended in at ``alpha`` (1 = its own colour)."""
    from romlib.shapes.scenes import erode_np

    o = scene.objects[0]
    rim = o.mask & ~erode_np(o.mask, 1)
    a = scene.background.astype(float)
    a[rim] = alpha * np.asarray(o.rgb, float) + (1 - alpha) * a[rim]
    return np.clip(a + 0.5, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("seed", range(8))
def test_an_outline_of_the_old_object_is_not_removed_and_a_clean_fill_is(seed):
    """Fig. 8 as the eye sees it: the old object's outline left in place counts as NOT removed, in full colour
    and blended at 55–80 % (which the shape-pixel rule alone can miss: a blended rim is no shape pixel); the
    clean background (a perfect fill) counts as removed; the unedited scene keeps its whole outline."""
    from romlib.shapes.oracle import MIN_AREA, RIM_MAX, rim_left

    scene = make_scene(seed, n_objects=1)
    o, bg = scene.objects[0], scene.background
    assert rim_left(scene.image, o, bg) == 1.0 and rim_left(bg, o, bg) == 0.0
    assert removed(describe_region(bg), rim_left(bg, o, bg))
    for alpha in (1.0, 0.8, 0.6, 0.55):
        img = _outline(scene, alpha)
        assert rim_left(img, o, bg) > 0.9 and not removed(describe_region(img), rim_left(img, o, bg)), alpha
    if seed == 7:  # a green outline at 60 %: no shape pixel, so the area rule alone called it removed
        faint = _outline(scene, 0.6)
        assert describe_region(faint).area < MIN_AREA and removed(describe_region(faint))
        assert not removed(describe_region(faint), rim_left(faint, o, bg))
    with pytest.raises(ValueError, match="rim=1.5"):
        removed(describe_region(bg), 1.5)
    assert 0 < RIM_MAX < 1


def test_target_groups():
    from romlib.shapes.cases import Case
    from romlib.shapes.keeps import target_group

    scene = make_scene(0, n_objects=1, colours=["red"], shapes=["circle"])
    group = lambda t: target_group(Case(0, scene, 0, "the red circle", t))  # noqa: E731
    assert group("a red square") == "restates" and group("a blue circle") == "restates"
    assert group("a square") == "leaves free" and group("a blue shape") == "leaves free"
    assert group("a blue square") == "changes both"


@pytest.mark.parametrize("answer", ["ideal", "unedited", "emptied", "moved"])
def test_keeps_report_on_known_answers(monkeypatch, answer):
    """measure_keeps with a sampler that returns a known image: the ideal edit scores 100 % everywhere,
    the unedited image 0 % success, an emptied hole keeps nothing, a moved ideal edit loses the position."""
    import romlib.shapes.measure as measure
    from romlib.shapes.keeps import GROUPS, measure_keeps, target_group
    from romlib.shapes.tables import table_cases

    cases = table_cases(("first", 30))

    def image(c):
        if answer == "unedited":
            return c.scene.image
        if answer == "emptied":
            return c.scene.without_object(c.obj).image
        ideal = c.scene.with_object(c.obj, *[_ideal_attr(c, k) for k in ("colour", "shape")])
        if answer == "moved":
            x0, y0, x1, y1 = ideal.objects[c.obj].box
            return _moved(ideal, c.obj, dx=-4 if x0 >= 4 else 4).image
        return ideal.image

    def fake(model, tok, diffusion, cs, masks, *, samples, **kw):
        return torch.stack([torch.from_numpy(image(c)).permute(2, 0, 1).float()[None] / 127.5 - 1 for c in cs])

    monkeypatch.setattr(measure, "sample_cases", fake)
    from types import SimpleNamespace

    backend = SimpleNamespace(base_model=None, tokenizer=None)
    rows = measure_keeps(backend, None, {"cases": ("first", 30), "methods": ("cf",), "scale": 3.0, "samples": 1, "dilation": 3})
    assert [r["targets"] for r in rows] == list(GROUPS)
    assert sum(r["n"] for r in rows) == 30 == sum(target_group(c) in GROUPS for c in cases)
    for r in rows:
        if r["n"] == 0:
            continue
        pct = {k: (v["pct"] if isinstance(v, dict) else None) for k, v in r.items() if k not in ("rule", "targets", "n")}
        if answer == "ideal":
            assert all(v == 100.0 for v in pct.values() if v is not None), r
        elif answer == "unedited":
            assert pct["success"] == 0.0 and pct["edited, all kept"] == 0.0 and pct["size kept"] == 100.0
        elif answer == "emptied":
            assert pct["success"] == pct["size kept"] == pct["position kept"] == 0.0
        else:
            assert pct["success"] == 100.0 and pct["position kept"] == 0.0 and pct["edited, all kept"] == 0.0
        if r["targets"] == "changes both":
            assert r["attribute kept"] == "–"


def _ideal_attr(case, key):
    from romlib.shapes.scenes import parse_text

    return parse_text(case.target).named.get(key)


def test_shipped_tables_match_their_definitions():
    """Every notebook table is shipped, measured with the settings its definition states (a changed
    definition without `python -m romlib.shapes.bench NAME` fails here), and formats with its intervals."""
    import json

    from romlib.shapes.tables import NOTEBOOK_TABLES, TABLES_FILE, format_notebook_table

    shipped = json.loads(TABLES_FILE.read_text())
    assert set(shipped) == set(NOTEBOOK_TABLES)
    for name, cfg in NOTEBOOK_TABLES.items():
        s = shipped[name]["settings"]
        for k, v in cfg.items():
            assert json.loads(json.dumps(s[k], default=list)) == json.loads(json.dumps(v, default=list)), (name, k)
        text = format_notebook_table(shipped[name])
        assert "Wilson 95 %" in text and cfg["doc"] in text


def test_dilation_table_measures_removal_and_target_live(monkeypatch):
    """The dilation table on 2 cases, measured live with the shipped model: every column present, rates over
    2 samples per k, leftover shrinking and over-coverage growing with k."""
    from romlib.shapes import tables

    cfg = dict(tables.NOTEBOOK_TABLES["dilation"], cases=("first", 2), samples=1, dilations=(1, 5))
    monkeypatch.setitem(tables.NOTEBOOK_TABLES, "dilation", cfg)
    t = tables.measure_table("dilation")
    rows = t["rows"]
    assert [r["k"] for r in rows] == [1, 5]
    assert rows[0]["leftover px"] > rows[1]["leftover px"] and rows[0]["over px"] < rows[1]["over px"]
    for r in rows:
        for col in ("removed ('')", "old back ('')", "target reached", "old back (target)"):
            assert r[col]["n"] == 2 and 0 <= r[col]["pct"] <= 100
    assert "n = 2 samples per rate" in tables.format_notebook_table(t)


def test_removal_variant_removes_under_an_empty_target():
    """The shipped 'removal' model (run D) fills the hole with background under an empty target (199/200 on the
    benchmark; here 8 cases, k = 3 on the true mask); its meta records the recipe; unknown variants are named."""
    from romlib.sampling.diffusion import create_diffusion
    from romlib.shapes import VARIANTS, load_backend
    from romlib.shapes.measure import _edit_mask, _uint8, sample_cases
    from romlib.shapes.oracle import object_region
    from romlib.shapes.tables import table_cases

    b = load_backend("cpu", variant="removal")
    assert b.base_model.meta["p_remove"] == 0.1 and b.default_scales == VARIANTS["removal"][1]
    schedule, n = b.base_schedule
    cases = table_cases(("first", 8))
    masks = [_edit_mask(c, 0, 3) for c in cases]
    xs = sample_cases(b.base_model, b.tokenizer, create_diffusion(n, schedule, b.base_steps), cases, masks, rule="ccf",
                      scale=3.0, samples=1, plain=True)
    from romlib.shapes.oracle import rim_left

    gone = [removed(describe_region(_uint8(x[0]), object_region(m, c.original.mask, c.others)),
                    rim_left(_uint8(x[0]), c.original, c.scene.background)) for c, m, x in zip(cases, masks, xs)]
    assert sum(gone) >= 7, gone
    with pytest.raises(ValueError, match="unknown ShapesWorld variant 'nope'"):
        load_backend("cpu", variant="nope")


def test_removal_variant_comes_from_the_one_pipeline_cache():
    """rl.nb.removal_pipeline is get_pipeline('shapes', variant='removal'): loaded once, the removal model;
    a variant on another backend is refused by name."""
    import romlib as rl
    from romlib import backends

    pipe = rl.nb.pipeline("shapes")
    rem = rl.nb.removal_pipeline(pipe)
    assert rem is rl.nb.removal_pipeline(pipe) and rem is not pipe
    assert rem.backend.base_model.meta["p_remove"] == 0.1 and pipe.backend.base_model.meta.get("p_remove", 0) == 0
    with pytest.raises(ValueError, match="variant='removal' applies to the 'shapes' backend only"):
        backends.load("tiny", variant="removal")
