"""The paper's story as figures, one call each (also reachable as ``rl.viz.<name>``):

* :func:`pipeline_figure` — Fig. 2: every stage of one edit (input, referring mask with its box and
  score, the dilated mask at the model's size, the B samples with their CLIP distances, what the
  ranking sees, the result); any backend;
* :func:`targets_figure` — Fig. 5: one input, several targets, the empty target as inpainting
  (the embedded worlds: their example case and the oracle's verdict on every panel; ShapesWorld's empty target
  on its ``removal`` model);
* :func:`forward_figure` — the forward process q(x_t | x_0) on an image, ᾱ_t under each panel;
* :func:`segmenters_figure` — one image and referring text through MDETR and CLIPSeg side by side, with
  each mask's pixels, box and score and the IoU between the masks (notebook 02).

Each returns ``(figure, numbers)``.
"""
from __future__ import annotations

import numpy as np
import torch

from ..config import SCORED_RANK_MODES, SEGMENTERS
from ..contracts import NoObjectFound
from ..io import load_image, to_tensor
from ..masks import enlarge_box, rank_crop
from ..pipeline import MIN_IMAGE_SIDE
from ..plots import _box as draw, _full_mask, _imshow, as_array, box_legend, overlay_mask
from ..rank import ranking_inputs
from ..sampling.diffusion import create_diffusion
from ..shapes import demo as shapes_cases
from ..shapes.oracle import describe_region, judge, object_region, removed, rim_left
from ..shapes.scenes import COLOURS, SHAPES
from ..specs import backend_spec
from ..world import cases as world_cases, oracle as world_oracle
from ..world.dilstudy import gone
from ..world.language import describe
from ..world.scene import COLOURS as WORLD_COLOURS, MATERIALS as WORLD_MATERIALS, SHAPES as WORLD_SHAPES
from .nb import removal_pipeline


__all__ = ["pipeline_figure", "targets_figure", "default_targets", "forward_figure", "segmenters_figure", "mask_iou"]


def _off(ax):
    ax.set_xticks([]), ax.set_yticks([])


def _box(ax, box, color, lw=2.0):
    draw(ax, box, color=color, lw=lw)


def pipeline_figure(result, top: int = 8):
    """Fig. 2 of the paper for one :class:`~romlib.result.EditResult` (any backend). Top row: the input;
    the referring mask (outline) with the segmenter's box (yellow) and score; the mask after resizing to
    the model's n×n and dilating k×k (outline, at n×n); what the ranker sees of the best sample
    (local: the box ×1.3 crop, cyan; masked: the masked frame); the result at the input's resolution.
    Bottom row: up to ``top`` of the B samples in sampling order, each with its CLIP distance d and rank.
    Returns ``(figure, numbers)``: score, box, mask pixels, dilated pixels, crop box, order and distances."""
    import matplotlib.pyplot as plt


    s = result.settings
    seg = result.segmentation
    W, H = result.input_image.size
    n_base = int(result.keep_mask_base.shape[-1])
    edit_base = (1 - result.keep_mask_base.float()) > 0.5
    side = int(result.images.shape[-1])
    B = len(result.order)
    shown = min(int(top), B)
    fig = plt.figure(figsize=(max(13.0, 2.0 * shown), 6.2))
    outer = fig.add_gridspec(2, 1, height_ratios=[1.15, 1])
    up, down = outer[0].subgridspec(1, 5), outer[1].subgridspec(1, shown)
    ax = [fig.add_subplot(up[0, i]) for i in range(5)]
    _imshow(ax[0], result.input_image, size=(W, H))
    ax[0].set_title(f"1. input\nref: {s['ref']!r}", fontsize=8)
    seg_mask = seg.mask if seg.mask.shape[-2:] == (H, W) else torch.nn.functional.interpolate(
        seg.mask[None, None].float(), size=(H, W), mode="nearest")[0, 0]
    _imshow(ax[1], overlay_mask(result.input_image, seg_mask), size=(W, H))
    _box(ax[1], seg.box, "yellow")
    source = (seg.extra or {}).get("source", "segmenter")
    ax[1].set_title(f"2. referring mask ({source}; red: as predicted)\nscore {seg.score:.2f}, {int(seg_mask.sum())} px", fontsize=8)
    small = result.input_image.resize((n_base, n_base))
    _imshow(ax[2], overlay_mask(small, edit_base), size=(n_base, n_base))
    ax[2].set_title(f"3. mask at {n_base}×{n_base}, k = {s['dilation']}\n{int(edit_base.sum())} px edited", fontsize=8)
    rank = s["rank"]
    numbers = {"segmentation score": round(float(seg.score), 3), "box": tuple(round(float(v), 1) for v in seg.box),
               "mask px": int(seg_mask.sum()), "base size": n_base, "dilated px": int(edit_base.sum()),
               "frame size": side, "rank": rank, "order": list(result.order),
               "distances (ranked)": [round(float(d), 4) for d in result.scores]}
    if rank in SCORED_RANK_MODES:
        best = result.images[:1]
        if rank == "local":
            crop = rank_crop(result.rank_box, side, side)
            numbers["crop box (frame px)"] = crop
            what = ranking_inputs(best, "local", box=result.rank_box)[0]
            title = f"4. ranker's view of #1: box ×1.3\n{crop} of {side}×{side}, d = {result.scores[0]:.3f}"
        else:
            what = ranking_inputs(best, "masked", edit_mask=result.edit_mask[None, None])[0]
            title = f"4. ranker's view of #1: masked frame\nd = {result.scores[0]:.3f}"
        _imshow(ax[3], what * 2 - 1)
        ax[3].set_title(title, fontsize=8)
    else:
        _imshow(ax[3], result.images[0])
        ax[3].set_title("4. no ranking (rank = 'none')\nsampling order", fontsize=8)
    _imshow(ax[4], result.best, size=(W, H))
    ax[4].set_title(f"5. result (#1 of {B})\ntarget: {s['target']!r}", fontsize=8)
    rank_of = {int(i): r for r, i in enumerate(result.order)}
    for i in range(shown):
        a = fig.add_subplot(down[0, i])
        r = rank_of[i]
        _imshow(a, result.images[r], size=(side, side))  # the ranked frame of sample i, in frame pixels
        if rank == "local" and result.rank_box is not None:
            _box(a, enlarge_box(result.rank_box, 1.3, side, side), "cyan", lw=1.0)
        d = result.scores[r]
        a.set_title(f"sample {i}: rank #{r + 1}\n" + (f"d = {d:.3f}" if d == d else "unranked"), fontsize=7,
                    fontweight="bold" if r == 0 else "normal")
        _off(a)
    for a in ax:
        _off(a)
    scale = f", s = {s['scale']:g}" if s.get("scale") is not None else ""
    fig.suptitle(f"Fig. 2, one edit stage by stage ({s['backend']}): {s['guidance']}{scale}, B = {B}, rank = {rank}; "
                 f"bottom: the B samples in sampling order (first {shown})", fontsize=9)
    fig.tight_layout(rect=(0, 0.04, 1, 0.95))
    box_legend(fig, ("yellow", "cyan") if rank == "local" else ("yellow",), loc="lower center", ncol=3)
    return fig, numbers


def default_targets(case) -> list[str]:
    """Fig. 5's targets for an embedded world's case. The 64 px world: the case's own target, then targets that
    name one attribute each (another colour, another shape, another material: the first of each list that differs
    from the object's), and '' (remove). ShapesWorld: another colour, another shape, both, and ''."""
    if isinstance(case, world_cases.WorldCase):
        o = case.scene.objects[case.i].attrs()
        other = {k: next(v for v in values if v != o[k])
                 for k, values in (("colour", tuple(WORLD_COLOURS)), ("shape", WORLD_SHAPES),
                                   ("material", WORLD_MATERIALS))}
        return list(dict.fromkeys([case.target, *(describe({k: v}, (k,)) for k, v in other.items()), ""]))
    o = case.original
    colour = next(c for c in COLOURS if c != o.colour)
    shape = next(s for s in SHAPES if s != o.shape)
    return [f"a {colour} {o.shape}", f"a {o.colour} {shape}", f"a {colour} {shape}", ""]


def targets_figure(pipe, image=None, ref: str | None = None, targets=None, *, case=None, samples: int = 4, seed: int = 0,
                   **knobs):
    """Fig. 5: one input, several targets, the empty target ('') as inpainting — one edit per target, the
    same mask and seeds, the best of ``samples`` each, in a row.

    The embedded worlds (the 64 px world; ShapesWorld): by default the notebooks' example case (``"both"``:
    :func:`romlib.world.cases.select_case`, :func:`romlib.shapes.demo.select_case`) and :func:`default_targets`,
    and every panel carries the oracle's verdict ("target ✓/✗" with what it reads; for '': "removed ✓/✗" with what
    is left of the object); ShapesWorld's empty target runs on its ``removal`` model
    (:func:`romlib.teach.nb.removal_pipeline`). Other backends: ``image``, ``ref`` and ``targets`` are required (no
    oracle). Returns ``(figure, rows)``."""
    import matplotlib.pyplot as plt


    spec = backend_spec(pipe.backend.name)
    world = spec.example == "world"
    if (spec.oracle or world) and image is None:
        case = case or (world_cases if world else shapes_cases).select_case("both")
        image, ref = (case.pil() if world else case.scene.pil()), case.ref
    if image is None or ref is None:
        raise ValueError("targets_figure needs image= and ref= on the "
                         f"{pipe.backend.name!r} backend (an embedded world picks its example case itself)")
    if targets is None:
        if case is None:
            raise ValueError("targets_figure needs targets= (e.g. ['a golden retriever', 'a tabby cat', '']) "
                             "unless an embedded world's case gives its defaults")
        targets = default_targets(case)
    targets = list(targets)
    results, rows = {}, []
    for t in targets:
        p = removal_pipeline(pipe) if t == "" else pipe
        results[t] = r = p.edit(image, ref, t, samples=samples, seed=seed, progress=False, **knobs)
        row = {"target": t, "model": "removal" if (t == "" and p is not pipe) else "default", "scores": [round(x, 4) for x in r.scores]}
        if case is not None:
            row.update(_world_verdict(case, r, t) if isinstance(case, world_cases.WorldCase)
                       else _oracle_verdict(case, r, t))
        rows.append(row)
    fig, axes = plt.subplots(1, len(targets) + 1, figsize=(2.6 * (len(targets) + 1), 3.2), squeeze=False)
    first = next(iter(results.values()))
    W, H = first.input_image.size
    _imshow(axes[0, 0], overlay_mask(first.input_image, _full_edit_mask(first)), size=(W, H))
    axes[0, 0].set_title(f"input + mask\nref: {ref!r}", fontsize=8)
    for ax, row in zip(axes[0, 1:], rows):
        r = results[row["target"]]
        _imshow(ax, r.best, size=(W, H))
        name = repr(row["target"]) if row["target"] else "'' (inpaint: remove)"
        verdict = row.get("verdict", "")
        ax.set_title(f"{name}\n{verdict}" + (f"\n({row['model']} model)" if row["model"] != "default" else ""), fontsize=8,
                     color="tab:red" if row.get("ok") is False else "k")
    for ax in axes.flat:
        _off(ax)
    g = first.settings
    scale = f", s = {g['scale']:g}" if g.get("scale") is not None else ""
    fig.suptitle(f"Fig. 5: one input, {len(targets)} targets ({g['guidance']}{scale}, best of {samples}, seed {seed})", fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 0.9))
    return fig, rows


def _full_edit_mask(result) -> torch.Tensor:
    return _full_mask(result)


def _world_verdict(case, result, target: str) -> dict:
    """The world's oracle (:func:`romlib.world.oracle.judge`) on the best edit: the target reached and what it reads
    there, or (empty target) whether the object is gone (removed in the hole and no more than a few of its pixels
    left outside it: :func:`romlib.world.dilstudy.gone`)."""
    hole = _full_edit_mask(result).numpy() > 0.5
    j = world_oracle.judge(result.best, case.scene, case.i, hole, target)
    if target == "":
        left = int((case.mask & ~hole).sum())
        ok = gone({"removed": j["removed"], "left_px": left})
        mark = "?" if ok is None else ("✓" if ok else "✗")
        why = ("the oracle cannot tell" if j["removed"] is None else
               "the hole is not background" if not j["removed"] else f"{left} px of it left outside the hole")
        return {"ok": ok, "left_px": left, "verdict": f"removed {mark} ({why})"}
    seen = " ".join(v for v in (j["material"], j["colour"], j["shape"]) if v) or "nothing"
    mark = "?" if j["success"] is None else ("✓" if j["success"] else "✗")
    return {"ok": j["success"], "seen": seen, "verdict": f"target {mark} (reads {seen})"}


def _oracle_verdict(case, result, target: str) -> dict:
    """The ShapesWorld oracle on the best edit: target success, or (empty target) removal with the rim."""
    a = as_array(result.best)
    em = _full_edit_mask(result).numpy() > 0.5
    seen = describe_region(a, object_region(em, case.original.mask, case.others))
    if target == "":
        rim = rim_left(a, case.original, case.scene.background)
        ok = removed(seen, rim)
        return {"ok": ok, "rim": round(rim, 3), "verdict": f"removed {'✓' if ok else '✗'} (old outline {rim:.0%})"}
    j = judge(seen, target, case.original)
    seen_txt = f"{seen.colour or '?'} {seen.shape or '?'}"
    return {"ok": j["success"], "seen": seen_txt, "verdict": f"target {'✓' if j['success'] else '✗'} (sees {seen_txt})"}


def forward_figure(image, ts=(0, 100, 250, 500, 750, 999), *, schedule: str = "squaredcos_cap_v2", seed: int = 0,
                   size: int | None = None):
    """The forward process q(x_t | x_0) = N(√ᾱ_t x_0, (1 − ᾱ_t) I) on an image (PIL, or [3, H, W] /
    [1, 3, H, W] in [-1, 1]): x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε for each t of the 1000-step ``schedule``, one
    noise ε for all, ᾱ_t under each panel. ``size``: resize first (default: as is, at most 256).
    Returns ``(figure, {t: ᾱ_t})``."""
    import matplotlib.pyplot as plt


    if isinstance(image, torch.Tensor):
        x0 = image[None] if image.ndim == 3 else image
        x0 = x0[:1].float()
    else:
        img = image.convert("RGB")
        side = size or (min(256, max(img.size)) if max(img.size) > 256 else None)
        x0 = to_tensor(img, side)
    d = create_diffusion(1000, schedule, "1000")
    bad = [t for t in ts if not 0 <= int(t) < d.num_timesteps]
    if bad:
        raise ValueError(f"timesteps {bad} are outside 0..{d.num_timesteps - 1}")
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed))
    fig, axes = plt.subplots(1, len(ts), figsize=(2.3 * len(ts), 2.9), squeeze=False)
    numbers = {}
    for ax, t in zip(axes[0], ts):
        ab = float(d.alphas_cumprod[int(t)])
        numbers[int(t)] = round(ab, 4)
        x_t = d.q_sample(x0, torch.tensor([int(t)]), noise)
        _imshow(ax, x_t[0].clamp(-1, 1))
        ax.set_title(f"x_t, t = {int(t)}", fontsize=8)
        ax.set_xlabel(f"ᾱ_t = {ab:.4f}\n√ᾱ = {np.sqrt(ab):.2f}, √(1−ᾱ) = {np.sqrt(1 - ab):.2f}", fontsize=8)
        ax.set_xticks([]), ax.set_yticks([])
    fig.suptitle(f"the forward process, {schedule} schedule (one noise draw, seed {seed})", fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 0.92))
    return fig, numbers


def mask_iou(a, b) -> float:
    """Intersection over union of two boolean masks of one shape (NaN when both are empty)."""
    a, b = torch.as_tensor(a).bool(), torch.as_tensor(b).bool()
    if a.shape != b.shape:
        raise ValueError(f"the masks must have one shape; got {tuple(a.shape)} and {tuple(b.shape)}")
    union = int((a | b).sum())
    return float("nan") if union == 0 else int((a & b).sum()) / union


def segmenters_figure(pipe, image, ref: str, segmenters=("mdetr", "clipseg"), *, threshold: float = 0.5,
                      best_anyway: bool = False):
    """The same image and referring text through several segmenters, side by side (notebook 02): each
    panel shows one segmenter's mask as an outline with its box (yellow), score and mask pixels; the title
    gives the IoU between the masks.

    ``segmenters``: names of :data:`romlib.config.SEGMENTERS` (or the backend's own, e.g. ``"shapes"``), each
    run through ``pipe.segment(..., segmenter=name)``. A segmenter the backend does not have (the ``shapes``
    backend has neither MDETR nor CLIPSeg) gets a *skipped panel* saying so and which it has; one that finds
    no object (:class:`~romlib.contracts.NoObjectFound`; pass ``best_anyway=True`` to keep its best guess)
    gets a panel with the message. A ``ValueError`` when a name is unknown or none of them can run.
    Returns ``(figure, numbers)``: per segmenter ``{"mask px", "score", "box"}`` (or ``{"skipped": why}``),
    and ``"iou"``: the IoU of every pair of masks, e.g. ``{"mdetr/clipseg": 0.71}``."""
    import matplotlib.pyplot as plt


    b = pipe.backend
    names = [segmenters] if isinstance(segmenters, str) else list(segmenters)
    has = list(dict.fromkeys([b.segmenter_name, *b.segmenters]))
    unknown = [n for n in names if n not in (*SEGMENTERS, *has)]
    if not names or unknown:
        raise ValueError(f"segmenters={segmenters!r}: unknown {unknown!r}; accepted: {', '.join(SEGMENTERS)} "
                         f"(this {b.name!r} backend has: {', '.join(has)})")
    if not any(n in has for n in names):
        raise ValueError(f"none of segmenters={tuple(names)!r} is available on the {b.name!r} backend; it has: "
                         f"{', '.join(has)}")
    img = load_image(image, min_size=MIN_IMAGE_SIDE)
    W, H = img.size
    masks, numbers = {}, {}
    fig, axes = plt.subplots(1, len(names), figsize=(3.4 * len(names), 3.8), squeeze=False)
    for ax, name in zip(axes[0], names):
        _off(ax)
        if name not in has:
            numbers[name] = {"skipped": f"not available on the {b.name!r} backend (it has: {', '.join(has)})"}
            _imshow(ax, np.asarray(img) // 3 + 85, size=(W, H))  # the input, faded
            ax.set_title(f"{name}: skipped", fontsize=9)
            ax.text(W / 2, H / 2, f"not on the {b.name!r} backend\n(it has: {', '.join(has)})", ha="center",
                    va="center", fontsize=8, wrap=True)
            continue
        try:
            seg = pipe.segment(img, ref, segmenter=name, threshold=threshold, best_anyway=best_anyway)
        except NoObjectFound as e:
            numbers[name] = {"skipped": f"no object found (best score {e.best_score:.3f})"}
            _imshow(ax, img, size=(W, H))
            ax.set_title(f"{name}: no object found\nbest score {e.best_score:.2f} (best_anyway=True keeps it)", fontsize=8)
            continue
        m = seg.mask.bool() if seg.mask.shape[-2:] == (H, W) else torch.nn.functional.interpolate(
            seg.mask[None, None].float(), size=(H, W), mode="nearest")[0, 0].bool()
        masks[name] = m.cpu()
        numbers[name] = {"mask px": int(m.sum()), "score": round(float(seg.score), 3),
                         "box": tuple(round(float(v), 1) for v in seg.box)}
        _imshow(ax, overlay_mask(img, m), size=(W, H))
        _box(ax, seg.box, "yellow")
        ax.set_title(f"{name}: score {seg.score:.2f}\n{int(m.sum())} px of {W}×{H}", fontsize=9)
    done = list(masks)
    numbers["iou"] = {f"{x}/{y}": round(mask_iou(masks[x], masks[y]), 3)
                      for i, x in enumerate(done) for y in done[i + 1:]}
    iou = ", ".join(f"IoU {k} = {v:.2f}" for k, v in numbers["iou"].items())
    fig.suptitle(f"{ref!r} through {len(names)} segmenters ({b.name} backend)" + (f"; {iou}" if iou else ""), fontsize=9)
    fig.tight_layout(rect=(0, 0.07, 1, 0.93))
    box_legend(fig, ("yellow",), loc="lower center", ncol=2)
    return fig, numbers
