"""Figures of edits (matplotlib imported inside each function). Each returns the ``Figure``; the notebooks
print the numbers behind every figure next to it. ``EditResult.grid``, ``ROMPipeline.compare`` and the notebooks'
figures (:mod:`romlib.teach.viz`, which also holds the paper's story figures) draw with these."""
from __future__ import annotations

import numpy as np
import torch

from .io import to_uint8
from .masks import box_iou, enlarge_box

__all__ = ["show", "png", "overlay_mask", "edit_grid", "samples_grid", "image_row", "as_array", "enlarge", "comparison_grid", "segmentation_figure",
           "box_legend", "DISPLAY_SIDE", "BOX_COLOURS", "MASK_COLOUR"]

#: small images (ShapesWorld's 32 px) are enlarged by an integer factor, nearest neighbour, to at least this
#: many pixels on their longer side before drawing, so a projector shows sharp pixels (no blur)
DISPLAY_SIDE = 256
#: what every box colour means (the figures' legends read it from here)
BOX_COLOURS = {"yellow": "object box (segmenter)", "cyan": "box ×1.3: what local ranking crops",
               "white": "other queries"}
#: the edit mask's outline colour (the object's own colour stays readable inside it)
MASK_COLOUR = (255, 40, 40)


def _scale_text(settings: dict, fmt: str) -> str:
    """The guidance scale formatted with ``fmt``, or "" for methods without one (Blended)."""
    return fmt.format(settings["scale"]) if settings.get("scale") is not None else ""


def as_array(img) -> np.ndarray:
    """PIL image, [3, H, W] tensor in [-1, 1] or HxWx3 array → HxWx3 uint8."""
    if isinstance(img, torch.Tensor):
        return to_uint8(img[0] if img.ndim == 4 else img)
    a = np.asarray(img)
    return a if a.dtype == np.uint8 else (np.clip(a, 0, 1) * 255).astype(np.uint8)


def enlarge(img, min_side: int = DISPLAY_SIDE) -> np.ndarray:
    """HxWx3 uint8, enlarged by the smallest integer factor that makes its longer side ≥ ``min_side``
    (nearest neighbour: every pixel becomes an f×f block, no blur); larger images are returned as they are."""
    a = as_array(img)
    f = max(1, -(-int(min_side) // max(a.shape[:2])))
    return a if f == 1 else np.repeat(np.repeat(a, f, axis=0), f, axis=1)


def _mask_array(edit_mask, shape) -> np.ndarray:
    """The mask (tensor / array, any size) as a bool array of ``shape`` (nearest)."""
    m = np.asarray(edit_mask.float().cpu() if isinstance(edit_mask, torch.Tensor) else edit_mask, dtype=np.float32)
    m = m.reshape(m.shape[-2:])
    if m.shape != tuple(shape):
        from PIL import Image

        m = np.asarray(Image.fromarray((m * 255).astype(np.uint8)).resize(tuple(shape)[::-1], Image.NEAREST)) / 255.0
    return m > 0.5


def overlay_mask(image, edit_mask, color=MASK_COLOUR, alpha: float = 0.45, *, style: str = "outline",
                 min_side: int = DISPLAY_SIDE) -> np.ndarray:
    """The image with the edit mask (1 = edit) drawn on it, as an array ready for ``imshow``.

    ``style="outline"`` (default): the image enlarged (:func:`enlarge`, nearest) and the mask's inner
    border drawn in ``color`` a fraction of a source pixel thick, so the colour *inside* the mask — the
    object being edited — stays exactly readable; ``"tint"``: the mask blended with ``color`` at
    ``alpha`` at the image's own size (changes the colours under it: purple reads as magenta)."""
    if style not in ("outline", "tint"):
        raise ValueError(f"style={style!r}; expected 'outline' or 'tint'")
    a = as_array(image)
    m = _mask_array(edit_mask, a.shape[:2])
    if style == "tint":
        tint = np.array(color, dtype=np.float32)
        out = a.astype(np.float32) * (1 - alpha * m[..., None]) + tint * alpha * m[..., None]
        return out.clip(0, 255).astype(np.uint8)
    big = enlarge(a, min_side).copy()
    f = big.shape[0] // a.shape[0]
    mb = np.repeat(np.repeat(m, f, axis=0), f, axis=1)
    width = max(2, f // 4) if f > 1 else max(2, round(max(a.shape[:2]) / 160))  # visible when shown ~2-3 inches wide
    p = np.pad(mb, width, constant_values=False)
    inner = mb.copy()
    for dy in range(-width, width + 1):
        for dx in range(-width, width + 1):
            inner &= p[width + dy:width + dy + mb.shape[0], width + dx:width + dx + mb.shape[1]]
    big[mb & ~inner] = color
    return big


def _imshow(ax, img, size=None):
    """Draw an image sharply (nearest, enlarged when small); ``size=(W, H)``: the coordinates of the
    original image, so boxes in its pixels land right on an enlarged array."""
    a = as_array(img)
    if size is None:
        a = enlarge(a)
        size = (a.shape[1], a.shape[0])
    W, H = size
    ax.imshow(a, interpolation="nearest", extent=(-0.5, W - 0.5, H - 0.5, -0.5))


def box_legend(fig_or_ax, colours=("yellow", "cyan"), extra: dict | None = None,
               mask: str = "edit mask (outline; inside: the pixels edited)", **kw):
    """A legend naming every box colour drawn (:data:`BOX_COLOURS`) and the mask outline (``mask``: what it is)."""
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=c, lw=2, label=BOX_COLOURS[c]) for c in colours]
    handles.append(Line2D([], [], color=np.array(MASK_COLOUR) / 255, lw=2, label=mask))
    for label, c in (extra or {}).items():
        handles.append(Line2D([], [], color=c, lw=2, label=label))
    kw.setdefault("fontsize", 7)
    kw.setdefault("facecolor", "0.55")  # mid grey: yellow, cyan, white and red lines all show
    kw.setdefault("frameon", True)
    return fig_or_ax.legend(handles=handles, **kw)


def _box(ax, box, color="yellow", lw=1.5, ls="-"):
    from matplotlib.patches import Rectangle

    x0, y0, x1, y1 = box  # pixel edges (x1 exclusive); imshow centres pixel i at i, so its edges are at i ± 0.5
    ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, edgecolor=color, linewidth=lw,
                           linestyle=ls))


def image_row(images, titles=None, size: float = 2.4, suptitle: str | None = None):
    """One row of images with titles (small images enlarged, nearest neighbour: :func:`enlarge`)."""
    import matplotlib.pyplot as plt

    n = len(images)
    fig, axes = plt.subplots(1, n, figsize=(size * n, size * 1.15), squeeze=False)
    for i, (ax, img) in enumerate(zip(axes[0], images)):
        _imshow(ax, img)
        ax.set_xticks([]), ax.set_yticks([])
        if titles:
            ax.set_title(titles[i], fontsize=8)
    if suptitle:
        fig.suptitle(suptitle, fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 0.9) if suptitle else None)  # keep the suptitle clear of the panel titles
    return fig


def edit_grid(result, top: int = 4, size: float = 2.2):
    """Input, the mask overlay with the ranking box, and the ``top`` ranked edits with scores."""
    import matplotlib.pyplot as plt

    top = min(top, len(result.images))
    fig, axes = plt.subplots(1, top + 2, figsize=(size * (top + 2), size * 1.2), squeeze=False)
    ax = axes[0]
    side = result.edit_mask.shape[-1]
    _imshow(ax[0], result.frame_input)
    ax[0].set_title(f"input\nref: {result.settings['ref']!r}", fontsize=8)
    _imshow(ax[1], overlay_mask(result.frame_input, result.edit_mask), size=(side, side))
    if result.rank_box is not None:
        side = result.edit_mask.shape[-1]
        _box(ax[1], result.rank_box, ls=(0, (3, 2)))  # dashed: the mask's red outline shows where they cross
        if result.settings["rank"] == "local":  # what the local ranking crops
            _box(ax[1], enlarge_box(result.rank_box, 1.3, side, side), color="cyan", lw=1.0, ls=(0, (3, 2)))
    ax[1].set_title(f"mask (k={result.settings['dilation']})\nseg. score {result.segmentation.score:.2f}", fontsize=8)
    for i in range(top):
        _imshow(ax[i + 2], result.images[i])
        s = result.scores[i]
        ax[i + 2].set_title(f"#{i + 1}  {result.settings['target']!r}\n" + (f"d = {s:.3f}" if s == s else "unranked"), fontsize=8)
    for a in ax:
        a.set_xticks([]), a.set_yticks([])
    fig.suptitle(f"{result.settings['guidance']}{_scale_text(result.settings, ' (s = {:g})')}, rank = {result.settings['rank']}",
                 fontsize=9)
    fig.tight_layout(rect=(0, 0.1, 1, 0.88))  # keep the suptitle clear of the two-line panel titles
    box_legend(fig, ("yellow", "cyan") if result.settings["rank"] == "local" else ("yellow",), loc="lower center", ncol=3)
    return fig


def samples_grid(result, *, cols: int = 8, width: float = 9.0, title: str | None = None, fig=None):
    """The input with its mask, then *every* sample of ``result`` in ranked order with its score, wrapped after
    ``cols`` panels so that the figure is at most ``width`` inches wide (900 px at 100 dpi: an output area's
    width). Drawn without pyplot (a :class:`matplotlib.figure.Figure`), so a worker thread can draw it while a
    cell runs (the explorer's live updates). ``fig``: a figure an earlier call returned; when its grid has the same
    rows, columns and size, its axes are kept and only their images, boxes and titles replaced (the same pixels as
    a new figure, without building its axes again: the explorer's clicks), else a new figure is made."""
    from matplotlib.figure import Figure

    n = len(result.images)
    panels = n + 2
    cols = max(1, min(cols, panels))
    rows = -(-panels // cols)
    side = min(width / cols, 1.6)
    grid = (rows, cols, panels, side)
    if fig is not None and getattr(fig, "_romlib_grid", None) == grid:
        axes = fig._romlib_axes
        for a in axes[:panels]:
            for artist in [*a.images, *a.patches]:
                artist.remove()
        fig.subplots_adjust(**fig._romlib_params)  # tight_layout starts from where a new figure starts
    else:
        fig = Figure(figsize=(side * cols, side * rows * 1.25 + 0.4))
        axes = fig.subplots(rows, cols, squeeze=False).ravel()
        for a in axes:
            a.set_xticks([]), a.set_yticks([])
        for a in axes[panels:]:
            a.set_axis_off()
        fig._romlib_grid, fig._romlib_axes = grid, axes
        fig._romlib_params = {k: getattr(fig.subplotpars, k) for k in ("left", "right", "bottom", "top", "wspace", "hspace")}
    side_px = result.edit_mask.shape[-1]
    _imshow(axes[0], result.frame_input)
    axes[0].set_title(f"input\n{result.settings['ref']!r}", fontsize=7)
    _imshow(axes[1], overlay_mask(result.frame_input, result.edit_mask), size=(side_px, side_px))
    if result.rank_box is not None:
        _box(axes[1], result.rank_box, ls=(0, (3, 2)))
    axes[1].set_title(f"mask (k={result.settings['dilation']})", fontsize=7)
    for i in range(n):
        _imshow(axes[i + 2], result.images[i])
        sc = result.scores[i]
        axes[i + 2].set_title(f"#{i + 1}  " + (f"d = {sc:.3f}" if sc == sc else "unranked"), fontsize=7)
    target = result.settings["target"]
    what = repr(target) if target else "remove (empty target)"
    drawn = result.settings.get("samples") or n
    which = f"all {n} samples" if n >= drawn else f"the {n} upsampled best of {drawn} samples"
    fig.suptitle(title or f"{result.settings['guidance']}{_scale_text(result.settings, ' (s = {:g})')} → {what}: "
                 f"{which}, ranked {result.settings['rank']}",
                 fontsize=8)
    fig.tight_layout(rect=(0, 0, 1, 0.93))
    return fig


def png(fig, *, dpi: int = 100) -> bytes:
    """The figure as PNG bytes (tight box), without pyplot; a pyplot figure is closed afterwards."""
    import io

    import matplotlib.pyplot as plt
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    if fig.canvas is None or not hasattr(fig.canvas, "print_png"):
        FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def comparison_grid(results: dict, top: int = 4, size: float = 2.0):
    """One row per method (e.g. cf, ccf, clip, blended) on the same input, mask and seeds: the input
    with its mask, then each method's ``top`` ranked edits (at the input's resolution) with scores."""
    import matplotlib.pyplot as plt

    rows = list(results.items())
    top = min(top, min(len(r.full_res) for _, r in rows))
    fig, axes = plt.subplots(len(rows), top + 1, figsize=(size * (top + 1), size * len(rows) * 1.15), squeeze=False)
    for (name, r), ax in zip(rows, axes):
        _imshow(ax[0], overlay_mask(r.input_image, _full_mask(r)))
        ax[0].set_ylabel(f"{name}{_scale_text(r.settings, chr(10) + 's = {:g}')}", fontsize=9)
        for i in range(top):
            _imshow(ax[i + 1], r.full_res[i])
            s = r.scores[i]
            ax[i + 1].set_title(f"#{i + 1}" + (f"  d = {s:.3f}" if s == s else ""), fontsize=8)
        for a in ax:
            a.set_xticks([]), a.set_yticks([])
    first = rows[0][1].settings
    fig.suptitle(f"{first['ref']!r} → {first['target']!r}  (same mask, seed {first['seed']})", fontsize=10)
    fig.tight_layout(rect=(0, 0.05, 1, 0.95))
    box_legend(fig, (), loc="lower center")
    return fig


def _full_mask(result):
    """The edit mask at the input's resolution (for overlays)."""
    import torch.nn.functional as F

    w, h = result.input_image.size
    x0, y0, x1, y1 = result.settings["region"]
    m = torch.zeros(h, w)
    edit = 1 - result.keep_mask_base[None, None].float()
    m[y0:y1, x0:x1] = F.interpolate(edit, size=(y1 - y0, x1 - x0), mode="nearest")[0, 0]
    return m


def segmentation_figure(image, seg, top: int = 5):
    """The segmenter's view (notebook 02): the ``top`` queries' boxes with their scores (queries whose boxes
    coincide, IoU > 0.8, drawn as one box labelled with each score), and the chosen query's mask. Returns
    (figure, rows of (query, score, box)) — the numbers behind it."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(8, 4.6))
    W, H = as_array(image).shape[1::-1]
    _imshow(ax[0], image, size=(W, H))
    rows = []
    if seg.scores is not None and seg.boxes is not None:
        order = torch.argsort(seg.scores, descending=True)[:top].tolist()
        for q in order:
            rows.append((q, round(float(seg.scores[q]), 3), tuple(round(float(v), 1) for v in seg.boxes[q])))
        # queries whose boxes coincide (IoU > 0.8: DETR-style duplicates) are drawn once, with every score in one label
        groups: list[list[int]] = []
        for q in ([seg.index] if seg.index in order else []) + [q for q in order if q != seg.index]:
            home = next((g for g in groups if box_iou(seg.boxes[g[0]], seg.boxes[q]) > 0.8), None)
            home.append(q) if home is not None else groups.append([q])
        for g in reversed(groups):  # the chosen query's group last, on top
            box = tuple(round(float(v), 1) for v in seg.boxes[g[0]])
            chosen = seg.index in g
            _box(ax[0], box, color="yellow" if chosen else "white", lw=2 if chosen else 1)
            label = ", ".join(f"{float(seg.scores[q]):.2f}" for q in g)
            ax[0].text(box[0], box[1], label, color="k", fontsize=7, backgroundcolor="w")
    n = 0 if seg.scores is None else len(seg.scores)
    shown = (f"all {n} queries" if len(rows) == n else f"the {len(rows)} best of {n} queries") if rows else "no query scores"
    ax[0].set_title(f"{shown} for {seg.text!r}", fontsize=9)
    _imshow(ax[1], overlay_mask(image, seg.mask), size=(W, H))
    _box(ax[1], seg.box)
    ax[1].set_title(f"chosen: score {seg.score:.2f}", fontsize=9)
    for a in ax:
        a.set_xticks([]), a.set_yticks([])
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    box_legend(fig, ("yellow", "white"), loc="lower center", ncol=3,
               mask="the segmenter's mask (outline; at the image's resolution, before resizing and dilation)")
    return fig, rows


def show(fig, *, dpi: int = 100) -> None:
    """Display a matplotlib figure explicitly, as a PNG, and close it (every notebook figure goes
    through here). Works the same under Colab's and Jupyter's inline backend, under ``Agg`` (the
    tests: an implicitly shown figure would vanish there) and in nbval; returns None so the cell
    does not echo the figure a second time. Outside IPython it only closes the figure."""
    import io

    import matplotlib.pyplot as plt

    if isinstance(fig, tuple):  # (figure, numbers) from the plotting helpers
        fig = fig[0]
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    try:
        from IPython import get_ipython
        from IPython.display import Image, display
    except ImportError:  # pragma: no cover - plain Python
        return
    if get_ipython() is not None:
        display(Image(data=buf.getvalue(), format="png"))
