"""The renderer: a :class:`~romlib.world.scene.Scene` → pixels, masks, backgrounds, with analytic anti-aliasing.

Everything is drawn in the 64×64 frame from signed distances (pixels): a pixel's coverage of a shape is
``clip(0.5 − d, 0, 1)`` (the exact area for straight edges, nearly so for curves), and the floor's
patterns are box-filtered over each pixel's footprint (a filtered square wave: a pattern finer than a
pixel fades to its mean, as a mip-map does), so edges and far tiles are smooth, never aliased.
32×32 images are the 64 px render averaged over 2×2 blocks (:func:`downsample`).

* **background** — a wall (vertical gradient, optional wallpaper stripes) above the horizon, a floor
  below (checker, tiles, stripes receding or across, or a plain gradient; in perspective or flat);
* **shadows** — each object darkens the floor under a soft ellipse at its foot, cast away from the light;
* **objects** — far to near (depth = the foot's y), each shaded by the scene's light: a sphere by its
  normal (Lambert), a cylinder or cone across its width with a lit top, a cube flat with a lit top face;
  ``shiny`` adds a specular highlight, ``striped`` dark bands across the object's own axis.

What each function draws:

=========================  ============================================================================
``render(scene)``          the scene (uint8 [S, S, 3])
``render_background``      the room alone, no object and **no shadow** (``shadows=True``: with every shadow)
``render(scene.without(i))``  the ground truth of removing object i: its shadow goes too, the others stay
``render_masks(scene)``    each object's visible and amodal (full) coverage [N, S, S] in [0, 1]
``shadow_masks(scene)``    each object's shadow coverage [N, S, S] (where its shadow darkens the floor)
=========================  ============================================================================

The scene with one object replaced is ``render(scene.replace_object(i, shape="cone"))``.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from .scene import COLOURS, SIZE, Background, Obj, Scene

__all__ = ["render", "render_float", "render_all", "render_background", "render_masks", "shadow_masks", "downsample",
           "silhouette", "light_vector", "AMBIENT", "SHADOW"]

AMBIENT, DIFFUSE = 0.32, 0.78
SHADOW = 0.45  # how much a shadow darkens the floor at its centre
SPECULAR = 0.85
STRIPE_DARK = 0.5  # albedo factor of a stripe's dark band

_YS, _XS = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32, copy=False) + 0.5  # pixel centres


# ----------------------------------------------------------------------------- filtered patterns
def _sq(t: np.ndarray, w) -> np.ndarray:
    """Square wave (+1 on the first half period, −1 on the second) box-filtered over ``w`` periods."""
    w = np.maximum(w, 1e-3)

    def integral(s):
        f = s - np.floor(s)
        return np.minimum(f, 1 - f)

    return (integral(t + w / 2) - integral(t - w / 2)) / w


def _pulse(t: np.ndarray, w, g: float) -> np.ndarray:
    """Indicator of ``frac(t) < g`` box-filtered over ``w`` periods (grout lines)."""
    w = np.maximum(w, 1e-3)

    def integral(s):
        fl = np.floor(s)
        return fl * g + np.minimum(s - fl, g)

    return (integral(t + w / 2) - integral(t - w / 2)) / w


def _coverage(sd: np.ndarray, soft: float = 1.0) -> np.ndarray:
    return np.clip(0.5 - sd / soft, 0.0, 1.0)


# ----------------------------------------------------------------------------- background
_COL, _ROW = _YS[:, :1], _XS[:1, :]  # [64, 1] and [1, 64]: the 1-D parts of the room are computed once per row


@lru_cache(maxsize=2048)
def _background(bg: Background) -> np.ndarray:
    """The room [64, 64, 3] float32 (0–255), read-only (cached)."""
    wall, wall2 = np.array(bg.wall, np.float32), np.array(bg.wall2, np.float32)
    floor, floor2 = np.array(bg.floor, np.float32), np.array(bg.floor2, np.float32)
    t = np.clip(_COL / bg.horizon, 0, 1)[..., None]  # [64, 1, 1]
    top = wall * (1 - t) + wall2 * t
    if bg.wall_stripes:
        top = top + 7.0 * _sq(_ROW / bg.wall_stripes, 1 / bg.wall_stripes)[..., None]
    d = np.maximum(_COL - bg.horizon, 0.25)  # px below the horizon, [64, 1]
    depth = SIZE - bg.horizon  # rows of floor
    p = bg.period
    if bg.perspective:
        X, Z = (_ROW - SIZE / 2) * (depth / d / p), depth * depth * 0.9 / d / p
        wX = np.hypot(depth / d / p, (_ROW - SIZE / 2) * (depth / d ** 2 / p))
        wZ = depth * depth * 0.9 / d ** 2 / p
    else:
        X, Z, wX, wZ = _ROW / p, _COL / p, 1 / p, 1 / p
    X, Z = X + bg.offset, Z + bg.offset
    if bg.pattern == "checker":
        mix = (1 - _sq(X, wX) * _sq(Z, wZ)) / 2
    elif bg.pattern == "tiles":
        mix = 1 - (1 - _pulse(X, wX, 0.14)) * (1 - _pulse(Z, wZ, 0.14))
    elif bg.pattern == "stripes-x":
        mix = (1 - _sq(X, wX)) / 2
    elif bg.pattern == "stripes-z":
        mix = (1 - _sq(Z, wZ)) / 2
    elif bg.pattern == "plain":
        mix = 1 - np.clip(d / depth, 0, 1)
    else:
        raise ValueError(f"unknown floor pattern {bg.pattern!r}")
    mix = np.broadcast_to(mix, (SIZE, SIZE))[..., None]
    bottom = floor + (floor2 - floor) * mix
    c = np.clip(_COL + 0.5 - bg.horizon, 0, 1)[..., None]  # the horizon, anti-aliased
    img = np.clip(top + (bottom - top) * c, 0, 255).astype(np.float32, copy=False)
    img.flags.writeable = False
    return img


@lru_cache(maxsize=2048)
def _floor(horizon: float) -> np.ndarray:
    return np.clip(_YS + 0.5 - horizon, 0, 1)


# ----------------------------------------------------------------------------- objects
def light_vector(light: float) -> np.ndarray:
    """Unit vector towards the light (image x right, y down, z towards the viewer) for ``light`` degrees
    from straight above (positive: from the right)."""
    a = np.deg2rad(light)
    v = np.array([0.75 * np.sin(a), -0.75 * np.cos(a) * 0.8, 0.6], np.float32)
    return v / np.linalg.norm(v)


def _ellipse_sd(u, v, a, b):
    f = (u / a) ** 2 + (v / b) ** 2 - 1
    g = 2 * np.sqrt((u / a ** 2) ** 2 + (v / b ** 2) ** 2) + 1e-6
    return f / g


def _box_sd(u, v, a, b):
    qx, qy = np.abs(u) - a, np.abs(v) - b
    return np.hypot(np.maximum(qx, 0), np.maximum(qy, 0)) + np.minimum(np.maximum(qx, qy), 0)


def _shape_sd(shape: str, u, v, s: float):
    """Signed distance (px) to the shape of height ``s`` in its own frame (u right, v down, centred),
    and the top-face indicator distance (None for a sphere)."""
    h = s / 2
    if shape == "sphere":
        return np.hypot(u, v) - h, None
    if shape == "cube":
        a = 0.42 * s
        return _box_sd(u, v, a, a), v - (-a + 0.26 * s)
    if shape == "cylinder":
        w, e = 0.32 * s, 0.1 * s
        body = _box_sd(u, v, w, h - e)
        top = _ellipse_sd(u, v + (h - e), w, e)
        return np.minimum(np.minimum(body, top), _ellipse_sd(u, v - (h - e), w, e)), top
    if shape == "cone":
        wb, e = 0.44 * s, 0.1 * s
        base = h - e
        length = np.hypot(2 * h - e, wb)  # the right side runs from the apex (0, −h) to (wb, base)
        side = (np.abs(u) * (2 * h - e) - (v + h) * wb) / length
        return np.minimum(np.maximum(side, v - base), _ellipse_sd(u, v - base, wb, e)), None
    raise ValueError(f"unknown shape {shape!r}")


def _local(o: Obj, xs, ys):
    a = np.deg2rad(o.angle)
    dx, dy = xs - o.x, ys - o.y
    return dx * np.cos(a) - dy * np.sin(a), dx * np.sin(a) + dy * np.cos(a), dx, dy


def _window(cx: float, cy: float, r: float) -> tuple[slice, slice]:
    y0, y1 = max(int(np.floor(cy - r)), 0), min(int(np.ceil(cy + r)) + 1, SIZE)
    x0, x1 = max(int(np.floor(cx - r)), 0), min(int(np.ceil(cx + r)) + 1, SIZE)
    return slice(y0, max(y0, y1)), slice(x0, max(x0, x1))


@dataclass(frozen=True)
class _Layer:
    win: tuple[slice, slice]
    cov: np.ndarray  # [h, w] in [0, 1]
    rgb: np.ndarray  # [h, w, 3] 0–255
    shadow_win: tuple[slice, slice]
    shadow: np.ndarray  # [h, w] in [0, 1]


def silhouette(o: Obj, xs=None, ys=None) -> np.ndarray:
    """Coverage [64, 64] (or on the given pixel-centre grids) of object ``o`` alone."""
    xs, ys = (_XS, _YS) if xs is None else (xs, ys)
    u, v, _, _ = _local(o, xs, ys)
    return _coverage(_shape_sd(o.shape, u, v, o.size)[0])


@lru_cache(maxsize=8192)
def _layer(o: Obj, light: float) -> _Layer:
    win = _window(o.x, o.y, 0.62 * o.size + 1.5)
    xs, ys = _XS[win], _YS[win]
    u, v, dx, dy = _local(o, xs, ys)
    sd, top = _shape_sd(o.shape, u, v, o.size)
    cov = _coverage(sd)
    L = light_vector(light)
    h, a = o.size / 2, np.deg2rad(o.angle)
    if o.shape == "sphere":
        nx, ny = dx / h, dy / h
        nz = np.sqrt(np.clip(1 - nx ** 2 - ny ** 2, 0, 1))
        shade = AMBIENT + DIFFUSE * np.maximum(nx * L[0] + ny * L[1] + nz * L[2], 0)
    else:
        half_w = 0.32 * o.size if o.shape == "cylinder" else 0.44 * o.size * np.clip((v + h) / (1.8 * h), 0.05, 1)
        if o.shape == "cube":
            nu, tilt = np.clip(u / (0.42 * o.size), -1, 1) * 0.25, 0.0
        else:
            nu, tilt = np.clip(u / half_w, -1, 1) * 0.9, (-0.35 if o.shape == "cone" else 0.0)
        nz = np.sqrt(np.clip(1 - nu ** 2 - tilt ** 2, 0, 1))
        # the local normal (nu, tilt, nz) turned into the image frame
        nx, ny = nu * np.cos(a) + tilt * np.sin(a), -nu * np.sin(a) + tilt * np.cos(a)
        shade = AMBIENT + DIFFUSE * np.maximum(nx * L[0] + ny * L[1] + nz * L[2], 0)
        if top is not None:  # a lit top face: its normal points up (local −v), tilted to the viewer
            tx, ty, tz = -0.85 * np.sin(a), -0.85 * np.cos(a), 0.53
            top_shade = AMBIENT + DIFFUSE * max(tx * L[0] + ty * L[1] + tz * L[2], 0) + 0.08
            t = _coverage(top)
            shade = shade * (1 - t) + top_shade * t
    albedo = np.array(COLOURS[o.colour], np.float32) * o.brightness
    rgb = albedo * shade[..., None]
    if o.material == "striped":
        period = o.size / 3.6
        band = (1 - _sq(v / period + 0.25, 1 / period)) / 2  # 1 on the dark band
        rgb = rgb * (1 - (1 - STRIPE_DARK) * band)[..., None]
    elif o.material == "shiny":
        H = L + np.array([0, 0, 1], np.float32)
        H = H / np.linalg.norm(H)  # the half vector: a sphere's highlight is where its normal is H
        if o.shape == "sphere":
            hx, hy, sigma = h * H[0], h * H[1], 0.2 * h
        else:  # on the lit side of the body, where it is wide (local frame), turned into the image
            lu = L[0] * np.cos(a) - L[1] * np.sin(a)
            hu = 0.45 * np.sign(lu) * (0.32 * o.size if o.shape == "cylinder" else 0.3 * o.size)
            hv = {"cube": -0.05, "cylinder": -0.1, "cone": 0.22}[o.shape] * o.size
            hx, hy, sigma = hu * np.cos(a) + hv * np.sin(a), -hu * np.sin(a) + hv * np.cos(a), 0.1 * o.size
        spec = np.exp(-((dx - hx) ** 2 + (dy - hy) ** 2) / (2 * sigma ** 2))
        rgb = rgb + (255 - rgb) * (SPECULAR * spec)[..., None]
    # the shadow: a soft ellipse at the foot, cast away from the light
    s_a = np.deg2rad(light)
    scx, scy = o.x - 0.45 * o.size * np.sin(s_a), o.base - 0.04 * o.size
    ra, rb = 0.5 * o.size * (1 + 0.35 * abs(np.sin(s_a))), 0.15 * o.size
    swin = _window(scx, scy, ra + 3)
    shadow = _coverage(_ellipse_sd(_XS[swin] - scx, _YS[swin] - scy, ra, rb), soft=3.0)
    out = _Layer(win, cov.astype(np.float32, copy=False), np.clip(rgb, 0, 255).astype(np.float32, copy=False), swin, shadow.astype(np.float32, copy=False))
    for arr in (out.cov, out.rgb, out.shadow):
        arr.flags.writeable = False
    return out


# ----------------------------------------------------------------------------- compositing
def _compose(scene: Scene, with_objects: bool = True, with_shadows: bool = True):
    """(image [64, 64, 3] float32, visible [N, 64, 64], amodal [N, 64, 64])."""
    bg = scene.background
    img = np.array(_background(bg))
    n = len(scene.objects)
    layers = [_layer(o, scene.light) for o in scene.objects]
    if with_shadows and n:
        dark = np.ones((SIZE, SIZE), np.float32)
        for lay in layers:
            dark[lay.shadow_win] *= 1 - SHADOW * lay.shadow
        img *= (1 - (1 - dark) * _floor(bg.horizon))[..., None]
    vis = np.zeros((n, SIZE, SIZE), np.float32)
    amodal = np.zeros((n, SIZE, SIZE), np.float32)
    if with_objects:
        for j in scene.depth_order():
            lay = layers[j]
            a = lay.cov
            img[lay.win] = img[lay.win] * (1 - a[..., None]) + lay.rgb * a[..., None]
            vis[:, lay.win[0], lay.win[1]] *= 1 - a
            vis[j][lay.win] = a
            amodal[j][lay.win] = a
    return img, vis, amodal


def downsample(a: np.ndarray, size: int) -> np.ndarray:
    """Box-average the trailing-[64, 64(, C)] array ``a`` to ``size`` (a divisor of 64)."""
    if size == SIZE:
        return a
    if SIZE % size:
        raise ValueError(f"size must divide {SIZE}, got {size}")
    f = SIZE // size
    img = a.shape[-1] == 3 and a.ndim >= 3 and a.shape[-2] == SIZE
    if img:
        return a.reshape(*a.shape[:-3], size, f, size, f, 3).mean(axis=(-4, -2))
    return a.reshape(*a.shape[:-2], size, f, size, f).mean(axis=(-3, -1))


def render_float(scene: Scene, size: int = SIZE) -> np.ndarray:
    """The scene as float32 [size, size, 3] in 0–255 (no rounding; what training batches use)."""
    return downsample(_compose(scene)[0], size)


def render_all(scene: Scene, size: int = SIZE) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(image float32 [size, size, 3] 0–255, visible, amodal [N, size, size]) in one pass."""
    img, vis, amodal = _compose(scene)
    return downsample(img, size), downsample(vis, size), downsample(amodal, size)


def render(scene: Scene, size: int = SIZE) -> np.ndarray:
    """The scene as uint8 [size, size, 3]."""
    return np.round(render_float(scene, size)).astype(np.uint8)


def render_background(scene: Scene, size: int = SIZE, *, shadows: bool = False) -> np.ndarray:
    """The room without any object, uint8 [size, size, 3]: with no shadow (default) or with every object's."""
    return np.round(downsample(_compose(scene, with_objects=False, with_shadows=shadows)[0], size)).astype(np.uint8)


def render_masks(scene: Scene, size: int = SIZE) -> tuple[np.ndarray, np.ndarray]:
    """(visible, amodal) coverage [N, size, size] float32 in [0, 1]: what of each object shows after
    occlusion by nearer ones, and its whole silhouette. Binary masks: ``> 0.5``."""
    _, vis, amodal = _compose(scene, with_shadows=False)
    return downsample(vis, size), downsample(amodal, size)


def shadow_masks(scene: Scene, size: int = SIZE) -> np.ndarray:
    """Each object's shadow coverage [N, size, size] on the floor (before occlusion by objects)."""
    out = np.zeros((len(scene.objects), SIZE, SIZE), np.float32)
    floor = _floor(scene.background.horizon)
    for j, o in enumerate(scene.objects):
        lay = _layer(o, scene.light)
        out[j][lay.shadow_win] = lay.shadow * floor[lay.shadow_win]
    return downsample(out, size)
