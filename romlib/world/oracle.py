"""The oracle: what the eye sees in an edited 64×64 image, measured against the renderer's own scene.

It reads the edited region of an image given the scene it came from, the edited object ``i`` and the
hole (True = edited). No learning; every call names its margin, and a call whose margin is below the
stated threshold **abstains** (``None``, counted by the bench, never a coin flip).

1. **object pixels** (``fg``): inside the hole, pixels that differ from the clean reference — the scene
   without object ``i`` and its shadow (:func:`romlib.world.render.render_float`) — by more than
   :data:`FG_DIST` (RGB distance; and by half that after a 3×3 box blur, against noise; after removing the image's mean colour
   offset measured on a ring just outside the hole), except *shadow-like* pixels (a darker copy of the
   reference: ``img ≈ α·ref`` with α in [0.3, 0.97], within 18 levels, or 10 after the blur); then
   opened by 1 px. Fewer than :data:`MIN_AREA`
   pixels: nothing is there.
2. **colour**: each saturated object pixel (HSV saturation ≥ 0.35, value ≥ 0.16) votes for the palette
   hue nearest its hue; ``colour_margin`` = top share − second share; abstain below :data:`COLOUR_MARGIN`.
3. **shape and pose**: each shape's silhouette is fitted (angle over its symmetry period, size from the
   area, centre from the centroid, then refined) to the object pixels, by IoU over the pixels that are
   not hidden by a nearer object; ``shape_margin`` = best IoU − the next shape's; abstain below
   :data:`SHAPE_MARGIN` or when the best IoU < :data:`MIN_IOU`. The fit gives the free attributes.
4. **material**: ``stripe`` = the std of the luminance's high-pass (luminance minus its 5×5 masked box
   mean) over the object's interior, relative to its mean; ``spec`` = the share of interior pixels that
   are whitish highlights (saturation < 0.4, value > 0.7). Shiny if spec ≥ :data:`SPEC_T` (only the
   shiny material has a highlight), else striped if stripe ≥ :data:`STRIPE_T`, else matte; abstain when a
   deciding score is within :data:`MATERIAL_BAND` (relative) of its threshold. **size** (when a target names it): the fitted size's
   class ("small" below 20 px), abstaining within :data:`SIZE_BAND` px of 20.
5. **free attributes** (continuous errors against the original object): ``angle_err`` (degrees, modulo
   the fitted shape's symmetry; None for a sphere), ``size_ratio`` (fitted / original size), ``shift``
   (px between the feet), ``pattern_corr`` (correlation of the high-pass luminance with the original
   object's, on their common pixels; only for a striped original).
6. **background**: ``psnr_bg`` (dB) of the hole minus the object (dilated 2 px) and its shadow against the
   clean reference, and ``bg_bad_px``, how many of those pixels differ from it by more than :data:`FG_DIST` (the
   background visibly repainted wrong: what a larger hole costs); ``seam`` = mean |Δ_edit − Δ_ideal| (8-bit, per channel) across the hole's border, Δ the
   step from a pixel just inside to its neighbour just outside and the ideal the clean room inside (since
   the outside is kept, this is the error on the hole's inner 1-px border, off the object and its shadow); ``removed`` = no object pixels
   and psnr_bg ≥ :data:`REMOVED_PSNR`.

The thresholds were calibrated with :func:`calibrate` on rendered scenes (see docs/world.md).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import lru_cache

import numpy as np

from .language import parse_text
from .render import SIZE, _layer, render_all, render_float, silhouette
from .scene import COLOURS, SHAPES, SIZE_SPLIT, SYMMETRY, Obj, Scene, size_word

__all__ = ["FG_DIST", "MIN_AREA", "COLOUR_MARGIN", "SHAPE_MARGIN", "MIN_IOU", "STRIPE_T", "SPEC_T", "MATERIAL_BAND",
           "REMOVED_PSNR", "SIZE_BAND", "Reading", "read", "judge", "calibrate", "hue"]

FG_DIST = 28.0
MIN_AREA = 20
COLOUR_MARGIN = 0.3
SHAPE_MARGIN = 0.04
MIN_IOU = 0.6
STRIPE_T = 0.10
SPEC_T = 0.01
MATERIAL_BAND = 0.2
REMOVED_PSNR = 24.0
SIZE_BAND = 1.5


def hue(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(hue in degrees, saturation, value in [0, 1]) of ``rgb`` [..., 3] in 0–255."""
    rgb = np.asarray(rgb, np.float32) / 255
    mx, mn = rgb.max(-1), rgb.min(-1)
    c = mx - mn
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    safe = np.where(c > 1e-6, c, 1)
    h = np.where(mx == r, ((g - b) / safe) % 6, np.where(mx == g, (b - r) / safe + 2, (r - g) / safe + 4)) * 60
    return h, np.where(mx > 1e-6, c / np.maximum(mx, 1e-6), 0), mx


_PALETTE_HUE = {name: float(hue(np.array(v))[0]) for name, v in COLOURS.items()}


def _box(a: np.ndarray, k: int = 1) -> np.ndarray:
    """Mean over a (2k+1)² window (edges replicated); a: [H, W] or [H, W, C]."""
    p = np.pad(a, ((k, k), (k, k)) + ((0, 0),) * (a.ndim - 2), mode="edge")
    c = np.cumsum(np.cumsum(p, 0), 1)
    c = np.pad(c, ((1, 0), (1, 0)) + ((0, 0),) * (a.ndim - 2))
    n = 2 * k + 1
    H, W = a.shape[:2]
    return (c[n:n + H, n:n + W] - c[:H, n:n + W] - c[n:n + H, :W] + c[:H, :W]) / n ** 2


def _dilate(m: np.ndarray, k: int = 1) -> np.ndarray:
    return _box(m.astype(np.float32), k) > 1e-6


def _erode(m: np.ndarray, k: int = 1) -> np.ndarray:
    return _box(m.astype(np.float32), k) > 1 - 1e-6


@lru_cache(maxsize=None)
def _shape_stats(shape: str) -> tuple[float, float]:
    """(area / size², centroid's offset below the centre / size) of a shape at angle 0."""
    s = 40.0
    m = silhouette(Obj(shape, "red", "matte", SIZE / 2, SIZE / 2, s)) > 0.5
    ys = np.nonzero(m)[0] + 0.5
    return m.sum() / s ** 2, (ys.mean() - SIZE / 2) / s


def _as_array(image) -> np.ndarray:
    if hasattr(image, "detach"):  # a [3, H, W] or [1, 3, H, W] tensor in [−1, 1]
        t = image.detach().float().cpu()
        t = t[0] if t.ndim == 4 else t
        image = ((t.permute(1, 2, 0).numpy() + 1) * 127.5).clip(0, 255)
    a = np.asarray(image, np.float32)
    if a.shape != (SIZE, SIZE, 3):
        raise ValueError(f"the oracle reads 64×64 RGB images ([64, 64, 3] or a [3, 64, 64] tensor), got {a.shape}")
    return a


@dataclass
class Reading:
    """What the oracle sees in the hole (see the module docstring); None = abstained or nothing there."""

    area: int
    colour: str | None = None
    colour_margin: float = 0.0
    shape: str | None = None
    shape_margin: float = 0.0
    iou: float = 0.0
    material: str | None = None
    material_margin: float = 0.0
    stripe: float = 0.0
    spec: float = 0.0
    fit: Obj | None = None
    scores: dict = field(default_factory=dict)
    fg: np.ndarray | None = field(default=None, repr=False)

    @property
    def found(self) -> bool:
        return self.area >= MIN_AREA


def _reference(scene: Scene, i: int) -> np.ndarray:
    return render_float(scene.without(i))


def _shadowish(a: np.ndarray, r: np.ndarray, tol: float) -> np.ndarray:
    """Pixels where ``a`` is a darker copy of ``r`` (a shadow): a ≈ α·r, α in [0.3, 0.97], within ``tol``."""
    alpha = (a * r).sum(-1) / np.maximum((r * r).sum(-1), 1e-6)
    return (alpha > 0.3) & (alpha < 0.97) & (np.linalg.norm(a - alpha[..., None] * r, axis=-1) < tol)


def _foreground(img: np.ndarray, ref: np.ndarray, hole: np.ndarray) -> np.ndarray:
    ring = _dilate(hole, 3) & ~_dilate(hole, 1)
    offset = (img[ring] - ref[ring]).mean(0) if ring.any() else np.zeros(3, np.float32)
    a, r = img - offset, ref
    raw = np.linalg.norm(a - r, axis=-1)  # sharp edges
    smooth = np.linalg.norm(_box(a, 1) - _box(r, 1), axis=-1)  # no isolated noisy pixels
    shadowish = _shadowish(a, r, 18.0) | _shadowish(_box(a, 1), _box(r, 1), 10.0)
    fg = (raw > FG_DIST) & (smooth > FG_DIST / 2) & ~shadowish & hole
    return _dilate(_erode(fg, 1), 1) & fg


def _read_colour(img: np.ndarray, fg: np.ndarray) -> tuple[str | None, float, dict]:
    h, s, v = hue(img[fg])
    ok = (s >= 0.35) & (v >= 0.16)
    if ok.sum() < MIN_AREA // 2:
        return None, 0.0, {}
    names = list(_PALETTE_HUE)
    ref = np.array([_PALETTE_HUE[n] for n in names])
    d = np.abs((h[ok][:, None] - ref[None] + 180) % 360 - 180)
    votes = np.bincount(d.argmin(1), minlength=len(names)) / ok.sum()
    order = np.argsort(-votes)
    margin = float(votes[order[0]] - votes[order[1]])
    scores = {n: float(x) for n, x in zip(names, votes)}
    return (names[order[0]] if margin >= COLOUR_MARGIN else None), margin, scores


def _fit_shape(shape: str, fg: np.ndarray, valid: np.ndarray) -> tuple[float, Obj]:
    """Best IoU of ``shape``'s silhouette and its pose (coarse grid over angle and size, then refined),
    computed in a window around the object pixels."""
    ratio, dy = _shape_stats(shape)
    ys, xs = np.nonzero(fg)
    cx, cy = xs.mean() + 0.5, ys.mean() + 0.5
    s0 = float(np.sqrt(fg.sum() / ratio))
    pad = int(np.ceil(0.5 * s0)) + 2
    win = (slice(max(ys.min() - pad, 0), min(ys.max() + pad + 1, SIZE)),
           slice(max(xs.min() - pad, 0), min(xs.max() + pad + 1, SIZE)))
    gy, gx = np.mgrid[win].astype(np.float32) + 0.5
    fg_w, valid_w = fg[win], valid[win]
    outside = int((fg & ~np.pad(np.ones_like(fg_w), ((win[0].start, SIZE - win[0].stop),
                                                        (win[1].start, SIZE - win[1].stop)))).sum())

    def score(o: Obj) -> float:
        t = (silhouette(o, gx, gy) > 0.5) & valid_w
        union = (t | fg_w).sum() + outside
        return float((t & fg_w).sum() / union) if union else 0.0

    period = SYMMETRY[shape] or 360.0
    angles = [0.0] if SYMMETRY[shape] is None else list(np.arange(-period / 2, period / 2, 10.0 if period > 90 else 7.5))
    best = (-1.0, None)
    for a in angles:
        for f in (0.92, 1.0, 1.1):
            s = s0 * f
            t = np.deg2rad(a)  # the centroid sits dy·s below the centre along the object's own axis
            o = Obj(shape, "red", "matte", cx - dy * s * np.sin(t), cy - dy * s * np.cos(t), s, a)
            iou = score(o)
            if iou > best[0]:
                best = (iou, o)
    for step in (1.0, 0.5):  # coordinate refinement
        improved = True
        while improved:
            improved = False
            o = best[1]
            for ch in ({"x": o.x + step}, {"x": o.x - step}, {"y": o.y + step}, {"y": o.y - step},
                       {"size": o.size * (1 + 0.03 * step)}, {"size": o.size * (1 - 0.03 * step)},
                       *(({"angle": o.angle + 3 * step}, {"angle": o.angle - 3 * step}) if SYMMETRY[shape] else ())):
                cand = replace(o, **ch)
                iou = score(cand)
                if iou > best[0] + 1e-4:
                    best, improved = (iou, cand), True
    return best


def _highpass(img: np.ndarray, m: np.ndarray) -> np.ndarray:
    y = img @ np.array([0.299, 0.587, 0.114], np.float32)
    w = _box(m.astype(np.float32), 2)
    mean = _box(y * m, 2) / np.maximum(w, 1e-6)
    return y - mean, y


def _read_material(img: np.ndarray, fg: np.ndarray) -> tuple[str | None, float, float, float]:
    inner = _erode(fg, 1)
    if inner.sum() < MIN_AREA // 2:
        return None, 0.0, 0.0, 0.0
    _, s, v = hue(img)
    white = (s < 0.4) & (v > 0.7) & fg
    spec = float(white[inner].mean())
    if spec >= SPEC_T:  # a whitish highlight is the shiny material's mark (matte and striped have none)
        margin = spec / SPEC_T - 1
        return ("shiny" if margin >= MATERIAL_BAND else None), margin, 0.0, spec
    body = fg & ~_dilate(white, 2)  # a faint highlight is not a pattern
    hp, y = _highpass(img, body)
    core = _erode(body, 2) if _erode(body, 2).sum() >= MIN_AREA // 2 else _erode(body, 1)
    if core.sum() < MIN_AREA // 4:
        return None, 0.0, 0.0, spec
    stripe = float(hp[core].std() / max(y[core].mean(), 1.0))
    margin_h = 1 - spec / SPEC_T
    if stripe >= STRIPE_T:
        margin = min(stripe / STRIPE_T - 1, margin_h)
        return ("striped" if margin >= MATERIAL_BAND else None), margin, stripe, spec
    margin = min(1 - stripe / STRIPE_T, margin_h)
    return ("matte" if margin >= MATERIAL_BAND else None), margin, stripe, spec


def read(image, scene: Scene, i: int, hole: np.ndarray) -> Reading:
    """What the hole of ``image`` (64×64; uint8/float array or a [−1, 1] tensor) shows, where ``scene``
    is the scene before the edit and ``i`` the edited object (``hole`` bool [64, 64], True = edited)."""
    img = _as_array(image)
    hole = np.asarray(hole, bool)
    ref = _reference(scene, i)
    fg = _foreground(img, ref, hole)
    r = Reading(int(fg.sum()), fg=fg)
    if not r.found:
        return r
    r.colour, r.colour_margin, r.scores["colour"] = _read_colour(img, fg)
    _, vis, _ = render_all(scene)
    o = scene.objects[i]
    nearer = [j for j, p in enumerate(scene.objects) if j != i and p.base > o.base]
    valid = hole & ~(np.any([vis[j] > 0.5 for j in nearer], axis=0) if nearer else False)
    fits = {s: _fit_shape(s, fg, valid) for s in SHAPES}
    order = sorted(SHAPES, key=lambda s: -fits[s][0])
    r.iou = fits[order[0]][0]
    r.shape_margin = r.iou - fits[order[1]][0]
    r.scores["shape"] = {s: fits[s][0] for s in SHAPES}
    r.fit = fits[order[0]][1]
    if r.iou >= MIN_IOU and r.shape_margin >= SHAPE_MARGIN:
        r.shape = order[0]
    r.material, r.material_margin, r.stripe, r.spec = _read_material(img, fg)
    return r


def _angle_err(a: float, b: float, period: float | None) -> float | None:
    if period is None:
        return None
    d = (a - b) % period
    return float(min(d, period - d))


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(((a - b) ** 2).mean()) if a.size else 0.0
    return float("inf") if mse == 0 else float(10 * np.log10(255.0 ** 2 / mse))


def _seam(img: np.ndarray, ref: np.ndarray, hole: np.ndarray, skip: np.ndarray) -> float:
    """Mean |edit − clean room| (8-bit, per channel) on the hole's 1-px inner border, off ``skip``. Outside
    the hole the image is kept, so this is |Δ_edit − Δ_ideal| across the border, Δ = inside − outside,
    the ideal being the clean room inside: the step a reader sees as a seam."""
    ring = hole & ~_erode(hole, 1) & ~skip
    return float(np.abs(img[ring] - ref[ring]).mean()) if ring.any() else 0.0


def judge(image, scene: Scene, i: int, hole: np.ndarray, target: str) -> dict:
    """One record: for each attribute ``target`` names, ``hit_<attr>`` True/False/None (abstained);
    ``success`` (all named hit; None if one abstained; for "" whether the object was ``removed``);
    ``n_abstain``; the free-attribute errors; ``psnr_bg``, ``seam``, ``removed``; and the raw reading."""
    img = _as_array(image)
    hole = np.asarray(hole, bool)
    r = read(img, scene, i, hole)
    ref = _reference(scene, i)
    named = parse_text(target).named if target else {}
    rec: dict = {"target": target, "area": r.area, "colour": r.colour, "shape": r.shape, "material": r.material,
                 "colour_margin": r.colour_margin, "shape_margin": r.shape_margin, "iou": r.iou,
                 "material_margin": r.material_margin, "stripe": r.stripe, "spec": r.spec}
    n_abstain = 0
    hits = []
    for key, want in named.items():
        if key == "size":  # the size class, abstaining within SIZE_BAND px of the split
            got = size_word(r.fit.size) if r.fit is not None and abs(r.fit.size - SIZE_SPLIT) >= SIZE_BAND else None
        else:
            got = getattr(r, key)
        if r.found and got is None:
            n_abstain += 1
            rec[f"hit_{key}"] = None
        else:
            rec[f"hit_{key}"] = got == want
        hits.append(rec[f"hit_{key}"])
    o = scene.objects[i]
    obj_region = r.fg if r.fg is not None else np.zeros_like(hole)
    shadow = np.zeros_like(hole)
    if r.fit is not None:
        f = r.fit
        rec.update(angle_err=_angle_err(f.angle, o.angle, SYMMETRY[f.shape]) if r.shape else None,
                   size_ratio=f.size / o.size, shift=float(np.hypot(f.x - o.x, f.base - o.base)),
                   fit_angle=f.angle, fit_size=f.size, fit_x=f.x, fit_y=f.y)
        lay = _layer(Obj(f.shape, "red", "matte", f.x, f.y, f.size, f.angle), scene.light)
        shadow[lay.shadow_win] = lay.shadow > 0.05
        obj_region = obj_region | (silhouette(f) > 0.02)
    rec["pattern_corr"] = None
    if o.material == "striped" and r.found:
        orig = render_float(scene)
        both = r.fg & (silhouette(o) > 0.5)
        if both.sum() >= MIN_AREA:
            a, _ = _highpass(img, r.fg)
            b, _ = _highpass(orig, silhouette(o) > 0.5)
            a, b = a[both] - a[both].mean(), b[both] - b[both].mean()
            rec["pattern_corr"] = float((a * b).sum() / max(np.sqrt((a * a).sum() * (b * b).sum()), 1e-6))
    bg = hole & ~_dilate(obj_region, 2) & ~_dilate(shadow, 1)
    rec["psnr_bg"] = _psnr(img[bg], ref[bg]) if bg.any() else None
    rec["bg_bad_px"] = int((np.linalg.norm(img[bg] - ref[bg], axis=-1) > FG_DIST).sum())
    rec["seam"] = _seam(img, ref, hole, _dilate(obj_region, 1) | _dilate(shadow, 1))
    rec["removed"] = (not r.found) and (rec["psnr_bg"] is None or rec["psnr_bg"] >= REMOVED_PSNR)
    rec["n_abstain"] = n_abstain
    if not target:
        rec["success"] = rec["removed"]
    else:
        rec["success"] = None if None in hits else all(hits) and r.found
    return rec


def calibrate(n: int = 500, seed: int = 12345, *, perturbed: bool = False, progress: bool = False) -> dict:
    """The oracle on ``n`` rendered objects (unedited: the truth is the scene's own description), each
    in a training-style hole; ``perturbed``: the image blurred, noised and colour-shifted like a sample
    (:func:`romlib.world.data.perturb`). Returns per attribute the share correct / wrong / abstained,
    the median free-attribute errors (which should be ≈ 0 / 1), and for an empty target how often the
    true removal (the clean room in the hole, perturbed alike) reads ``removed`` and how often the
    unedited object does (should be 1 and 0)."""
    from romlib.progress import tqdm

    from .data import object_hole, perturb
    from .scene import make_scene

    rng = np.random.default_rng(seed)
    counts = {k: {"right": 0, "wrong": 0, "abstain": 0} for k in ("colour", "shape", "material", "size")}
    free = {"angle_err": [], "size_ratio": [], "shift": []}
    removed, psnr, seam = {"truth": 0, "kept": 0}, [], []
    for _ in tqdm(range(n), disable=not progress, desc="oracle calibration"):
        scene = make_scene(rng)
        i = int(rng.integers(len(scene.objects)))
        img, vis, _ = render_all(scene)
        hole = object_hole(rng, scene, i, vis)
        if perturbed:
            img = np.where(hole[..., None], perturb(rng, img), img)
        o = scene.objects[i]
        gone = np.where(hole[..., None], render_float(scene.without(i)), img)
        if perturbed:
            gone = np.where(hole[..., None], perturb(rng, gone), gone)
        removal = judge(gone, scene, i, hole, "")
        removed["truth"] += removal["removed"]
        removed["kept"] += judge(img, scene, i, hole, "")["removed"]
        if removal["psnr_bg"] is not None:  # None: no background pixel left to compare
            psnr.append(removal["psnr_bg"])
        seam.append(removal["seam"])
        rec = judge(img, scene, i, hole, f"a {o.size_word} {o.material} {o.colour} {o.shape}")
        for k in counts:
            v = rec[f"hit_{k}"]
            counts[k]["abstain" if v is None else "right" if v else "wrong"] += 1
        for k in free:
            if rec.get(k) is not None:
                free[k].append(rec[k])
    out = {k: {c: v / n for c, v in d.items()} for k, d in counts.items()}
    out["free"] = {k: float(np.median(v)) if v else None for k, v in free.items()}
    out["removal"] = {"removed_when_removed": removed["truth"] / n, "removed_when_kept": removed["kept"] / n,
                      "median_psnr_bg": float(np.median(psnr)) if psnr else None, "median_seam": float(np.median(seam))}
    out["n"] = n
    return out
