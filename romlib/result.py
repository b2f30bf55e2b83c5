"""What one edit produced (:class:`EditResult`), and how a frame goes back into the full-size input."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from . import masks as M
from .contracts import Segmentation
from .io import to_pil

__all__ = ["EditResult", "paste_back"]


@dataclass
class EditResult:
    """What one :meth:`ROMPipeline.edit` call produced, best first.

    ``images``: ranked frames [B, 3, S, S] in [-1, 1] (S = 256 with the upsampler);
    ``scores``: their ranking distances (lower = closer to the target text);
    ``full_res``: ranked edits as PIL images at the input's resolution (only the mask changed);
    ``samples``: the base samples [B, 3, 64, 64] in sampling order; ``order``: ranked indices;
    ``edit_mask`` [S, S] (1 = edited) and ``keep_mask_base`` [64, 64] (GLIDE convention);
    ``box``: the object box in input pixels; ``rank_box`` the same in frame pixels.
    """

    images: torch.Tensor
    scores: list[float]
    order: list[int]
    samples: torch.Tensor
    full_res: list
    edit_mask: torch.Tensor
    keep_mask_base: torch.Tensor
    box: tuple
    rank_box: tuple | None
    segmentation: Segmentation
    frame_input: Any
    input_image: Any
    settings: dict
    timings: dict = field(default_factory=dict)

    @property
    def best(self):
        """The top-ranked edit at the input's resolution (PIL)."""
        return self.full_res[0]

    def save(self, out_dir: str | os.PathLike) -> dict:
        """Write ranked frames, full-resolution edits, the mask and ``result.json`` (settings,
        scores, box, timings). Returns {kind: [paths]}."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        written: dict[str, list[str]] = {"frames": [], "full_res": [], "mask": [], "json": []}
        for r, (img, score) in enumerate(zip(self.images, self.scores)):
            p = out / f"rank{r:02d}_sample{self.order[r]:02d}.png"
            to_pil(img).save(p)
            written["frames"].append(str(p))
        for r, img in enumerate(self.full_res):
            p = out / f"rank{r:02d}_full.png"
            img.save(p)
            written["full_res"].append(str(p))
        from PIL import Image

        p = out / "mask.png"
        Image.fromarray((self.edit_mask.cpu().numpy() * 255).astype("uint8")).save(p)
        written["mask"].append(str(p))
        p = out / "result.json"
        payload = {"settings": self.settings, "order": self.order,
                   "scores": [None if s != s else s for s in self.scores],
                   "box": list(self.box), "rank_box": list(self.rank_box) if self.rank_box else None,
                   "segmentation_score": self.segmentation.score, "timings": self.timings, "files": written}
        p.write_text(json.dumps(payload, indent=2))
        written["json"].append(str(p))
        return written

    def grid(self, top: int = 4):
        """Input, mask overlay and the ``top`` edits (a matplotlib Figure)."""
        from .teach.viz import edit_grid

        return edit_grid(self, top=top)


def paste_back(img, frames: torch.Tensor, keep: torch.Tensor, region) -> list:
    """Each frame resized to its region of the input and blended in under the dilated mask
    ``keep`` (1 = keep, any size), feathered inwards, so every pixel outside the mask is exactly
    the input's. (romlib's own step: the authors' code stops at the 256×256 frame.)"""
    import numpy as np
    from PIL import Image

    x0, y0, x1, y1 = region
    rw, rh = x1 - x0, y1 - y0
    edit = M.to_edit_mask(keep.cpu())[None, None] if keep.ndim == 2 else M.to_edit_mask(keep.cpu())
    edit = torch.nn.functional.interpolate(edit, size=(rh, rw), mode="nearest")[0, 0]
    radius = max(1, round(max(rw, rh) / keep.shape[-1] / 2))
    alpha = M.feather(edit, radius).numpy()[..., None]
    base = np.asarray(img, dtype=np.float32)
    out = []
    for f in frames:
        patch = np.asarray(to_pil(f).resize((rw, rh), Image.BICUBIC), dtype=np.float32)
        full = base.copy()
        full[y0:y1, x0:x1] = base[y0:y1, x0:x1] * (1 - alpha) + patch * alpha
        out.append(Image.fromarray(np.clip(full + 0.5, 0, 255).astype(np.uint8)))
    return out
