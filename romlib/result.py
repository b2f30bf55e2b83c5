"""What one edit produced (:class:`EditResult`) and how a frame goes back into the full-size input
(:func:`paste_back`, :class:`FullRes`). Saving a run goes through :class:`romlib.runs.RunWriter`
(staged, then swapped in whole: nothing is lost or half-written, see :mod:`romlib.runs`).
"""
from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from . import masks as M
from .contracts import Segmentation
from .io import to_pil
from .plots import edit_grid
from .runs import OUTPUT_PATTERN, RunWriter, new_run_dir, run_dir_name  # noqa: F401  (their home is romlib.runs)

__all__ = ["EditResult", "paste_back", "FullRes"]

log = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------------- full resolution
class FullRes(Sequence):
    """The ranked edits at the input's resolution, computed on access (one full-size copy per
    edit asked for; the B frames stay at frame size). ``full_res[0]`` is the best edit (PIL).
    Each image is computed once and kept; :meth:`compute` makes one without keeping it."""

    def __init__(self, image, frames: torch.Tensor, keep: torch.Tensor, region):
        self.image, self.frames, self.keep, self.region = image, frames.detach().cpu(), keep.detach().cpu(), tuple(region)
        self._alpha = None  # (bbox, alpha) computed once for every frame
        self._cache: dict[int, Any] = {}

    def __len__(self) -> int:
        return int(self.frames.shape[0])

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        i = range(len(self))[i]  # negative indices, IndexError
        if i not in self._cache:
            self._cache[i] = self.compute(i)
        return self._cache[i]

    def select(self, positions: list[int]) -> "FullRes":
        """The same edits in another order (positions into this sequence)."""
        new = FullRes(self.image, self.frames[list(positions)], self.keep, self.region)
        new._alpha = self._alpha
        return new

    def compute(self, i: int):
        """Edit ``i`` pasted into the input (PIL), not cached."""
        import numpy as np
        from PIL import Image

        if self._alpha is None:
            self._alpha = _paste_alpha(self.keep, self.region)
        bbox, alpha = self._alpha
        x0, y0, x1, y1 = self.region
        rw, rh = x1 - x0, y1 - y0
        out = np.array(self.image, dtype=np.uint8)  # one copy of the input; outside the mask it stays exact
        if bbox is None:
            return Image.fromarray(out)
        bx0, by0, bx1, by1 = bbox
        patch = to_pil(self.frames[i]).resize((rw, rh), Image.BICUBIC, box=None)
        patch = np.asarray(patch.crop((bx0, by0, bx1, by1)), dtype=np.float32)
        base = out[y0 + by0:y0 + by1, x0 + bx0:x0 + bx1].astype(np.float32)
        blended = base * (1 - alpha) + patch * alpha
        out[y0 + by0:y0 + by1, x0 + bx0:x0 + bx1] = np.clip(blended + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(out)


def _nearest_index(n_in: int, n_out: int) -> torch.Tensor:
    """The source index of each output index under ``F.interpolate(mode="nearest")`` (exactly)."""
    src = torch.arange(n_in, dtype=torch.float32).view(1, 1, n_in)
    return torch.nn.functional.interpolate(src, size=n_out, mode="nearest").flatten().long()


def _paste_alpha(keep: torch.Tensor, region):
    """``(bbox, alpha)``: the feathered edit mask inside the bounding box of the edited pixels of
    the region (alpha [h, w, 1] float32; 0 everywhere else). O(region pixels), once."""
    x0, y0, x1, y1 = region
    rw, rh = x1 - x0, y1 - y0
    k = keep.detach().cpu().float()
    k = k.reshape(k.shape[-2:])
    edit_small = M.to_edit_mask(k) > 0.5
    if not edit_small.any():
        return None, None
    sh, sw = edit_small.shape
    ymap, xmap = _nearest_index(sh, rh), _nearest_index(sw, rw)
    rows = torch.nonzero(edit_small.any(1)[ymap]).flatten()
    cols = torch.nonzero(edit_small.any(0)[xmap]).flatten()
    by0, by1, bx0, bx1 = int(rows.min()), int(rows.max()) + 1, int(cols.min()), int(cols.max()) + 1
    edit = edit_small[ymap[by0:by1]][:, xmap[bx0:bx1]]  # nearest upsampling of the bounding box only
    # feather over half a mask pixel at the input's resolution; none when the mask is at the input's own
    # resolution (ShapesWorld: a 1-px feather there would blend back a whole mask pixel of the input, i.e.
    # the old object's rim that the dilation was meant to cover)
    radius = round(max(rw, rh) / sw / 2)
    # beyond the box nothing is edited (a frame of kept pixels) unless the box meets the region's
    # border, which does not erode the mask
    pt, pb, pl, pr = int(by0 > 0), int(by1 < rh), int(bx0 > 0), int(bx1 < rw)
    padded = torch.nn.functional.pad(edit[None].float(), (pl, pr, pt, pb), value=0.0)[0]
    alpha = M.feather(padded, radius)[pt:pt + edit.shape[0], pl:pl + edit.shape[1]]
    return (bx0, by0, bx1, by1), alpha.numpy()[..., None].astype("float32")


def paste_back(img, frames: torch.Tensor, keep: torch.Tensor, region) -> FullRes:
    """Each frame resized to its region of the input and blended in under the dilated mask
    ``keep`` (1 = keep, any size), feathered inwards, so every pixel outside the mask is exactly
    the input's. Lazy: a :class:`FullRes` whose items are made on access (one full-size copy
    each). (romlib's own step: the authors' code stops at the 256×256 frame.)"""
    return FullRes(img, frames, keep, region)


def _finite(x):
    """NaN/inf → None (``result.json`` is strict JSON), recursively."""
    if isinstance(x, float):
        return x if x == x and x not in (float("inf"), float("-inf")) else None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite(v) for v in x]
    return x


# ---------------------------------------------------------------------------------------------- the result
@dataclass
class EditResult:
    """What one :meth:`ROMPipeline.edit` call produced, best first.

    ``images``: ranked frames [B, 3, S, S] in [-1, 1] (S = 256 with the upsampler);
    ``scores``: their ranking distances (lower = closer to the target text);
    ``full_res``: ranked edits as PIL images at the input's resolution (only the mask changed),
    a lazy :class:`FullRes` sequence: each is made when first read;
    ``samples``: the base samples [B, 3, 64, 64] in sampling order; ``order``: ranked indices;
    ``edit_mask`` [S, S] (1 = edited) and ``keep_mask_base`` [64, 64] (GLIDE convention);
    ``box``: the object box in input pixels; ``rank_box`` the same in frame pixels;
    ``sources``: the input files (image, mask) when given as paths: :meth:`save` never writes over them;
    ``work``: what the edit computed — ``{"passes": {"base": n, "upsample": m}, "gflop_per_pass", "tflop",
    "uncounted"}`` (one pass = one image row through a UNet; :mod:`romlib.perf.work`). With ``upsample_top``
    (the preview preset) ``images``/``scores``/``order`` hold only the upsampled best samples.
    """

    images: torch.Tensor
    scores: list[float]
    order: list[int]
    samples: torch.Tensor
    full_res: Any
    edit_mask: torch.Tensor
    keep_mask_base: torch.Tensor
    box: tuple
    rank_box: tuple | None
    segmentation: Segmentation
    frame_input: Any
    input_image: Any
    settings: dict
    timings: dict = field(default_factory=dict)
    sources: tuple = ()
    work: dict = field(default_factory=dict)

    @property
    def best(self):
        """The top-ranked edit at the input's resolution (PIL)."""
        return self.full_res[0]

    def save(self, out_dir: str | os.PathLike, *, top: int | None = None, summary: str | None = None,
             overwrite: bool = False, extra: dict | None = None) -> dict:
        """Write the ranked frames (all B, at frame size), the ``top`` best edits at full resolution
        (default: all), the mask, optionally the figure :meth:`grid` as ``summary`` (a file name)
        and ``extra`` ({name: PIL image}), then ``result.json`` (settings, scores, box, timings and
        the list of files) last.

        ``out_dir`` is used as given: the API makes no run folder (``romlib edit`` does, see
        :func:`romlib.runs.new_run_dir`). An existing file is never replaced unless ``overwrite=True``,
        which replaces the run the folder's ``result.json`` records, whole (the new run is written
        complete, then swapped in; files no run recorded are refused, never replaced); an input
        (``sources``) is never replaced. A failed or interrupted save leaves the folder as it was.
        Returns {kind: [paths]} (kinds: frames, full_res, mask, summary, extra, json)."""
        top = len(self.images) if top is None else int(top)
        if top < 1:
            raise ValueError(f"top={top} is out of range; accepted: an integer >= 1")
        written: dict[str, list[str]] = {"frames": [], "full_res": [], "mask": [], "json": []}
        with RunWriter(out_dir, overwrite=overwrite, protect=self.sources) as w:
            for name, img in (extra or {}).items():
                written.setdefault("extra", []).append(str(w.write(name, lambda p, img=img: img.save(p, format="PNG"))))
            for r in range(len(self.images)):
                p = w.write(f"rank{r:02d}_sample{self.order[r]:02d}.png",
                            lambda p, r=r: to_pil(self.images[r]).save(p, format="PNG"))
                written["frames"].append(str(p))
            for r in range(min(top, len(self.images))):
                fr = self.full_res
                make = (lambda r=r: fr.compute(r)) if isinstance(fr, FullRes) and r not in fr._cache else (lambda r=r: fr[r])
                p = w.write(f"rank{r:02d}_full.png", lambda p, make=make: make().save(p, format="PNG"))
                written["full_res"].append(str(p))
            from PIL import Image

            mask = Image.fromarray((self.edit_mask.cpu().numpy() * 255).astype("uint8"))
            written["mask"].append(str(w.write("mask.png", lambda p: mask.save(p, format="PNG"))))
            if summary:
                import matplotlib.pyplot as plt

                fig = self.grid(top=min(top, len(self.images)))
                try:
                    p = w.write(summary, lambda p: fig.savefig(p, dpi=120, format="png"))
                finally:
                    plt.close(fig)
                written["summary"] = [str(p)]
            payload = {"settings": self.settings, "order": self.order, "scores": self.scores,
                       "box": list(self.box), "rank_box": list(self.rank_box) if self.rank_box else None,
                       "segmentation_score": self.segmentation.score, "timings": self.timings, "work": self.work}
            files = {k: [Path(v).name for v in vs] for k, vs in written.items() if k != "json"}
            files["json"] = ["result.json"]
            p = w.finish(_finite(_jsonable(payload)), files)
            written["json"].append(str(p))
        return written

    def grid(self, top: int = 4):
        """Input, mask overlay and the ``top`` edits (a matplotlib Figure)."""
        return edit_grid(self, top=top)


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (str, int, float, bool)) or x is None:
        return x
    if isinstance(x, torch.Tensor) and x.numel() == 1:
        return x.item()
    return str(x)
