"""A rehearsal of the real-weight path without the real weights.

The official files cannot be reached from CI, so the ``glide`` backend's whole path — download,
cache, strict loads, a full-size edit — is rehearsed on stand-ins: files with **random weights in
the official formats** (every name and shape from the manifests in ``../shared/reference``),
served by a loopback **mirror** that ``ROMLIB_MIRROR`` points at.

* :func:`build_mirror` writes them into a folder under their cache file names: GLIDE, noised
  CLIP and ADM as plain float32 state dicts; MDETR as ``{"model": ..., "args": Namespace}`` with
  the legacy ``position_ids`` entry of files saved with transformers < 4.31; CLIP ViT-B/16 as the
  open_clip safetensors file open_clip fetches for ``openai``; RoBERTa's ``vocab.json`` and
  ``merges.txt`` (from the GPT-2 vocabulary, with RoBERTa's special tokens); a 640×480 JPEG for
  the COCO example photo.
* :class:`~tests.support.mirror.MirrorServer` (the tests' one loopback mirror, re-exported here) serves that folder.

Weights are drawn fast rather than well: each tensor is cut from one pool of Gaussian numbers,
scaled by 1/sqrt(fan-in); norm scales are 1 and biases 0, so activations stay finite.
* :func:`reduce_budget` caps every edit, comparison and trace at :data:`REDUCED` (1 sample, 2 base and
  2 upsampler steps; Blended Diffusion at 2 of its own steps) so the notebooks' real path runs on a CPU,
  handing each method only the knobs its registry entry reads (:func:`reduced_knobs`).

Used by ``tests/test_rehearsal.py`` and ``tools/rehearse_notebooks.py``; nothing here is needed
to use romlib.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from pathlib import Path
from typing import Iterable

import torch

from romlib import hub
from romlib.config import EditConfig
from romlib.guidance.methods import SAMPLING_KNOBS, get
from romlib.guidance.baselines import adm_diffusion as create_diffusion
from romlib.pipeline import ROMPipeline

from .mirror import MirrorServer
from .reference import reference_dir

__all__ = ["MANIFESTS", "BUILDABLE", "build_mirror", "build_file", "random_state_dict", "MirrorServer", "REDUCED",
           "reduced_knobs", "reduce_budget"]

log = logging.getLogger(__name__)

#: registry name -> manifest file in the reference folder (``{name: shape}`` of the official state dict)
MANIFESTS = {
    "glide/base-inpaint": "glide_base-inpaint_state_dict_shapes.json",
    "glide/upsample-inpaint": "glide_upsample-inpaint_state_dict_shapes.json",
    "glide/clip-image-enc": "glide_clip_image_encoder_state_dict_shapes.json",
    "glide/clip-text-enc": "glide_clip_text_encoder_state_dict_shapes.json",
    "adm/256x256-uncond": "adm_256x256_diffusion_uncond_state_dict_shapes.json",
    "mdetr/phrasecut-eb3": "mdetr_efficientnetB3_phrasecut_state_dict_shapes.json",
}
#: Every registry file a rehearsal can stand in for (MDETR R101 has no manifest, so it is not one).
BUILDABLE = tuple(MANIFESTS) + ("clip/vit-b-16-openai", "roberta/vocab", "roberta/merges", "example/coco-39769")

_ONES = {"weight", "g", "running_var"}
_ZEROS = {"bias", "b", "running_mean", "in_proj_bias"}


class _Pool:
    """One block of N(0, 1) numbers; tensors are filled by copying pieces of it (fast, not i.i.d.)."""

    def __init__(self, seed: int, n: int = 1 << 22):
        g = torch.Generator().manual_seed(seed)
        self.data = torch.randn(n, generator=g)
        self.offset = 0

    def fill_(self, t: torch.Tensor, scale: float) -> torch.Tensor:
        flat, n, i = t.view(-1), t.numel(), 0
        while i < n:
            k = min(n - i, self.data.numel() - self.offset)
            torch.mul(self.data[self.offset:self.offset + k], scale, out=flat[i:i + k])  # one pass over memory
            i += k
            self.offset = (self.offset + k + 7919) % self.data.numel()  # a prime step: neighbours differ
        return t


def random_state_dict(shapes: dict[str, list[int]], *, seed: int = 0, pool: _Pool | None = None) -> dict[str, torch.Tensor]:
    """Float32 tensors of the given names and shapes: weights ~ N(0, 1/fan-in), norm scales 1, biases 0."""
    pool = pool or _Pool(seed)
    out = {}
    for name, shape in shapes.items():
        leaf = name.rsplit(".", 1)[-1]
        t = torch.empty(shape, dtype=torch.float32)
        if len(shape) >= 2:
            pool.fill_(t, 1.0 / math.sqrt(max(1, math.prod(shape[1:]))))
        elif leaf in _ONES:
            t.fill_(1.0)
        elif leaf in _ZEROS:
            t.zero_()
        else:
            pool.fill_(t, 0.02)
        out[name] = t
    return out


def _manifest(reference: Path, name: str) -> dict:
    return json.loads((reference / MANIFESTS[name]).read_text())


def _mdetr_args(shapes: dict):
    """The saved training arguments: an ``argparse.Namespace``, as MDETR's ``main.py`` stores them."""
    import argparse

    layers = lambda part: len({k.split(".")[3] for k in shapes if k.startswith(f"detr.transformer.{part}.layers.")})
    return argparse.Namespace(
        backbone="timm_tf_efficientnet_b3_ns", text_encoder_type="roberta-base", masks=True, dataset_config="configs/phrasecut.json",
        hidden_dim=shapes["detr.query_embed.weight"][1], num_queries=shapes["detr.query_embed.weight"][0],
        enc_layers=layers("encoder"), dec_layers=layers("decoder"), nheads=8, dim_feedforward=2048, dropout=0.1,
        position_embedding="sine", contrastive_align_loss=True, lr=1e-5, epochs=10, seed=42, frozen_weights=None)


def _clip_state_dict(pool: _Pool) -> dict[str, torch.Tensor]:
    """Open_clip's ViT-B-16 (QuickGELU) state dict: the names and shapes of the file open_clip loads for ``openai``."""
    import open_clip
    from open_clip.model import CLIP

    cfg = open_clip.get_model_config("ViT-B-16")
    with torch.device("meta"):
        model = CLIP(**cfg, quick_gelu=True)
    state = random_state_dict({k: list(v.shape) for k, v in model.state_dict().items()}, pool=pool)
    state["logit_scale"] = torch.tensor(math.log(100.0))
    return state


def _roberta_files(reference: Path) -> tuple[str, str]:
    """RoBERTa-style ``vocab.json`` (GPT-2's tokens after ``<s> <pad> </s> <unk>``, then ``<mask>``) and ``merges.txt``."""
    import gzip

    encoder = json.loads(gzip.open(reference / "encoder.json.gz", "rt", encoding="utf-8").read())
    vocab = {t: i for i, t in enumerate(["<s>", "<pad>", "</s>", "<unk>"])}
    for tok, _ in sorted(encoder.items(), key=lambda kv: kv[1]):
        if tok != "<|endoftext|>":
            vocab[tok] = len(vocab)
    vocab["<mask>"] = len(vocab)
    merges = gzip.open(reference / "vocab.bpe.gz", "rt", encoding="utf-8").read()
    return json.dumps(vocab, ensure_ascii=False), merges


def _example_jpeg(path: Path) -> None:
    """A 640×480 photo-like JPEG standing in for COCO #39769 (two blobs on a gradient)."""
    import numpy as np
    from PIL import Image

    y, x = np.mgrid[0:480, 0:640].astype(np.float32)
    img = np.stack([x / 640 * 200 + 30, y / 480 * 150 + 50, np.full_like(x, 120)], -1)
    for cx, cy, colour in ((180, 260, (200, 140, 60)), (460, 250, (90, 90, 90))):
        inside = ((x - cx) / 120) ** 2 + ((y - cy) / 90) ** 2 < 1
        img[inside] = colour
    Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(path, quality=90)


def build_file(name: str, folder: str | Path, *, reference: str | Path, seed: int = 0) -> Path:
    """Write the stand-in for registry file ``name`` into ``folder`` under its cache file name."""
    ckpt = hub.REGISTRY[name]
    reference, folder = Path(reference), Path(folder)
    path = folder / ckpt.filename
    pool = _Pool(seed + sum(map(ord, name)))
    if name in MANIFESTS:
        shapes = _manifest(reference, name)
        state = random_state_dict(shapes, pool=pool)
        if name.startswith("mdetr/"):
            state["detr.transformer.text_encoder.embeddings.position_ids"] = torch.arange(514)[None]  # legacy entry
            torch.save({"model": state, "args": _mdetr_args(shapes), "epoch": 9}, path)
        else:
            torch.save(state, path)
    elif name == "clip/vit-b-16-openai":
        from safetensors.torch import save_file

        save_file(_clip_state_dict(pool), str(path))
    elif name in ("roberta/vocab", "roberta/merges"):
        vocab, merges = _roberta_files(reference)
        path.write_text(vocab if name == "roberta/vocab" else merges, encoding="utf-8")
    elif name == "example/coco-39769":
        _example_jpeg(path)
    else:
        raise ValueError(f"no stand-in for {name!r}; buildable: {', '.join(BUILDABLE)}")
    return path


#: Bumped whenever a stand-in's content changes, so reused folders are rebuilt.
BUILDER_VERSION = 1


def _stamp(name: str, reference: Path) -> str:
    import hashlib

    h = hashlib.sha256(f"{BUILDER_VERSION}:{name}".encode())
    if name in MANIFESTS:
        h.update((reference / MANIFESTS[name]).read_bytes())
    return h.hexdigest()[:16]


def build_mirror(folder: str | Path, names: Iterable[str] | None = None, *, reference: str | Path | None = None,
                 seed: int = 0, reuse: bool = False) -> dict[str, Path]:
    """Stand-ins for ``names`` (default: every file of the ``glide`` backend and the example photo)
    in ``folder``, named as in the cache. Returns ``{name: path}``.

    ``reuse``: keep files an earlier call built for the same manifests and builder (recorded in
    ``folder/stamps.json``), so a kept folder saves the minute of building."""
    reference = Path(reference) if reference is not None else reference_dir()
    if reference is None:
        raise FileNotFoundError("the reference folder ../shared/reference (manifests, GPT-2 vocabulary) is not available")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    stamps_path = folder / "stamps.json"
    stamps = json.loads(stamps_path.read_text()) if reuse and stamps_path.is_file() else {}
    names = list(names) if names is not None else list(hub.GLIDE_BACKEND + hub.EXAMPLES)
    out = {}
    for n in names:
        path, stamp = folder / hub.REGISTRY[n].filename, _stamp(n, reference)
        if reuse and path.is_file() and stamps.get(n) == [stamp, path.stat().st_size]:
            out[n] = path
            continue
        t0 = time.perf_counter()
        out[n] = build_file(n, folder, reference=reference, seed=seed)
        stamps[n] = [stamp, out[n].stat().st_size]
        stamps_path.write_text(json.dumps(stamps, indent=1))
        log.info("built %s (%s) in %.1f s", out[n].name, hub.human_size(out[n].stat().st_size), time.perf_counter() - t0)
    return out


#: ``tools/rehearse_notebooks.py --reduced``: every edit at 1 sample, 2 base and 2 upsampler steps (a CPU's budget)
REDUCED = {"samples": 1, "steps": 2, "upsample_steps": 2}
#: Blended Diffusion's own schedule under the reduced budget: respaced to 4 steps, the first 2 skipped (2 run)
REDUCED_BLENDED = {"steps": "4", "skip_timesteps": 2}


def reduced_knobs(guidance: str, budget: dict | None = None) -> dict:
    """The part of ``budget`` (default :data:`REDUCED`) that ``guidance`` reads: the sampling knobs
    its registry entry honours (:attr:`romlib.guidance.methods.Method.honours`), and every other
    knob (``samples``) as is. Blended, which reads no sampling knob, gets ``{"samples": 1}``."""
    method = get(guidance)
    return {k: v for k, v in (REDUCED if budget is None else budget).items()
            if k not in SAMPLING_KNOBS or k in method.honours}


def _reduce_blended(backend) -> None:
    """Cut the loaded Blended baseline (if any) to :data:`REDUCED_BLENDED`: its step count lives on the
    baseline, not on the edit's knobs (Blended refuses ``steps=``)."""
    blended = backend.extras.get("blended")
    if blended is None or getattr(blended, "_reduced", False):
        return
    blended.diffusion = create_diffusion(REDUCED_BLENDED["steps"])
    blended.kw = {**blended.kw, "skip_timesteps": REDUCED_BLENDED["skip_timesteps"]}
    blended._reduced = True


def reduce_budget(budget: dict | None = None) -> None:
    """Patch :class:`romlib.pipeline.ROMPipeline` in this process so that every ``edit`` (and so every
    ``compare``, widget and study case) runs at ``budget`` (default :data:`REDUCED`), each method with
    only the knobs it reads (:func:`reduced_knobs`), and every ``trace`` at the budget's ``steps``.
    The rehearsal's first cell calls it; idempotent."""
    budget = dict(REDUCED if budget is None else budget)
    if getattr(ROMPipeline.edit, "_reduced", False):
        ROMPipeline.edit, ROMPipeline.trace = ROMPipeline.edit.__wrapped__, ROMPipeline.trace.__wrapped__
    edit, trace = ROMPipeline.edit, ROMPipeline.trace

    def reduced_edit(self, image, ref, target, config=None, **knobs):
        cfg = EditConfig.from_kwargs(config, **knobs)
        _reduce_blended(self.backend)
        return edit(self, image, ref, target, dataclasses.replace(cfg, **reduced_knobs(cfg.guidance, budget)))

    def reduced_trace(self, *args, **kw):
        return trace(self, *args, **{**kw, "steps": budget.get("steps", kw.get("steps"))})

    for new, old in ((reduced_edit, edit), (reduced_trace, trace)):
        new.__wrapped__, new._reduced, new.__doc__ = old, True, old.__doc__
    ROMPipeline.edit, ROMPipeline.trace = reduced_edit, reduced_trace
