"""The ``shapes`` backend: the shipped ShapesWorld weights loaded into the pipeline's stages.

Reading the weights needs only the models, never the trainer (:mod:`romlib.shapes.train` writes them).
"""
from __future__ import annotations

from pathlib import Path

from .scenes import WordTokenizer

__all__ = ["WEIGHTS_DIR", "BASE_STEPS", "BEST_SCALES", "VARIANTS", "weights_path", "load_inpaint_model", "load_ranker",
           "load_backend"]

#: where the shipped weights live (``romlib shapes-train --install`` writes here)
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
BASE_STEPS = "25"  # default respacing of the 1000 training steps for sampling
# default guidance scales of the shipped model: the best of each rule on `romlib shapes-bench`
# (docs/shapesworld.md); the paper's s = 15 (CCF) is tuned for GLIDE and oversaturates here
BEST_SCALES = {"cf": 3.0, "ccf": 3.0, "ccf-direction": 5.0, "cf-original": 3.0}

#: the shipped inpainting models: ``"default"`` (run B) and ``"removal"`` (run D, trained with
#: ``romlib shapes-train --p-remove 0.1 --p-partial 0.4``: an empty target removes the object, the paper's
#: Fig. 8, used by notebook 03 — but its ∅ branch became "background", so CF breaks above s = 1; see
#: docs/shapesworld.md). Each: (folder, default guidance scales = the best of each rule on 100 cases). The
#: ranker (``ranker.pt``) is shared.
VARIANTS = {
    "default": (WEIGHTS_DIR, BEST_SCALES),
    "removal": (WEIGHTS_DIR / "removal", {"cf": 1.0, "ccf": 3.0, "ccf-direction": 5.0, "cf-original": 1.0}),
}


def weights_path(name: str, weights_dir: str | Path | None = None) -> Path:
    """The shipped ``inpaint.pt`` / ``ranker.pt`` (or those in ``weights_dir``); raises with the
    command that recreates them when missing."""
    from ..io import check_file

    p = Path(weights_dir or WEIGHTS_DIR) / name
    try:
        return check_file(p, "ShapesWorld weights")
    except FileNotFoundError as e:
        raise FileNotFoundError(f"{e}; recreate them with 'romlib shapes-train --install' (about 45 min on 2 CPU "
                                "cores)") from None


_REMEDY = "use the shipped weights (no --weights) or retrain them: romlib shapes-train"


def _read_weights(name: str, weights_dir) -> tuple[Path, dict]:
    """``(path, checkpoint)`` of a ShapesWorld weights file, checked: readable as a weights-only
    torch file, a dict with a ``state_dict`` of tensors, every floating tensor finite. A damaged
    file raises ``ValueError`` naming the file (and the tensor)."""
    import pickle
    import zipfile

    import torch

    from ..hub import UnsafeCheckpoint, safe_load

    path = weights_path(name, weights_dir)
    try:
        ckpt = safe_load(path)
    except UnsafeCheckpoint:
        raise
    except (RuntimeError, pickle.UnpicklingError, EOFError, zipfile.BadZipFile, ValueError, OSError, KeyError,
            IndexError, TypeError, AttributeError) as e:  # what torch.load raises on garbage or a cut file
        why = f"{type(e).__name__}: {(str(e).strip().splitlines() or [''])[0].split('. ')[0][:120]}"
        raise ValueError(f"{path} is damaged: it cannot be read as a torch weights file ({why}); {_REMEDY}") from None
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("state_dict"), dict):
        keys = sorted(map(str, ckpt))[:6] if isinstance(ckpt, dict) else type(ckpt).__name__
        raise ValueError(f"{path} is not a ShapesWorld weights file: expected a dict with 'state_dict', got {keys}; "
                         f"{_REMEDY}")
    for k, v in ckpt["state_dict"].items():
        if not isinstance(v, torch.Tensor):
            raise ValueError(f"{path} is damaged: state_dict[{k!r}] is a {type(v).__name__}, not a tensor; {_REMEDY}")
        if v.is_floating_point() and not bool(torch.isfinite(v).all()):
            raise ValueError(f"{path} is damaged: tensor {k!r} holds NaN or infinite values; {_REMEDY}")
    return path, ckpt


def _fill(model, path: Path, state: dict):
    """``model`` with ``state`` loaded strictly; a missing, extra or mis-shaped tensor names the file."""
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        raise ValueError(f"{path} does not fit the {type(model).__name__} it is for ({' '.join(lines[1:3])[:240]}); "
                         f"{_REMEDY}") from None
    return model


def load_inpaint_model(weights_dir: str | Path | None = None, device="cpu"):
    """The trained tiny GLIDE inpainting UNet (EMA weights, float32, eval mode)."""
    from ..models.glide import GlideConfig, GlideUNet

    path, ckpt = _read_weights("inpaint.pt", weights_dir)
    try:
        model = GlideUNet(GlideConfig(**ckpt["config"]))
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{path} is damaged: its model config is unusable ({type(e).__name__}: {e}); {_REMEDY}") from None
    _fill(model, path, {k: v.float() if v.is_floating_point() else v for k, v in ckpt["state_dict"].items()})
    model.meta = ckpt.get("meta", {})
    return model.to(device).eval().requires_grad_(False)


def load_ranker(weights_dir: str | Path | None = None, device="cpu"):
    """The trained tiny CLIP (:class:`~romlib.shapes.ranker.ShapesRanker`), eval mode."""
    from .ranker import ShapesRanker

    path, ckpt = _read_weights("ranker.pt", weights_dir)
    ranker = _fill(ShapesRanker(), path, {k: v.float() for k, v in ckpt["state_dict"].items()})
    ranker.meta = ckpt.get("meta", {})
    return ranker.to(device).eval().requires_grad_(False)


def load_backend(device="cpu", weights_dir: str | Path | None = None, *, variant: str = "default"):
    """The ``"shapes"`` :class:`romlib.contracts.Backend`: rule-based segmenter, the trained tiny
    GLIDE inpainting model (no upsampler: results stay 32×32), the word tokenizer and the
    trained tiny CLIP ranker; cosine schedule of 1000 steps sampled with :data:`BASE_STEPS`.
    ``variant``: which shipped model (:data:`VARIANTS`; its guidance scales are the defaults);
    ``weights_dir``: your own ``romlib shapes-train`` output instead (the shipped ranker is used
    when the folder has no ``ranker.pt``)."""
    from ..contracts import Backend
    from .segmenter import ShapesSegmenter

    if variant not in VARIANTS:
        raise ValueError(f"unknown ShapesWorld variant {variant!r}; expected one of {sorted(VARIANTS)}")
    folder, scales = VARIANTS[variant]
    folder = Path(weights_dir) if weights_dir is not None else folder
    model = load_inpaint_model(folder, device)
    ranker_dir = folder if (folder / "ranker.pt").exists() else WEIGHTS_DIR
    return Backend(name="shapes", segmenter=ShapesSegmenter(), base_model=model, tokenizer=WordTokenizer(),
                   ranker=load_ranker(ranker_dir, device), upsampler=None,
                   base_schedule=tuple(model.meta.get("schedule", ("squaredcos_cap_v2", 1000))), base_steps=BASE_STEPS,
                   extras={"meta": model.meta, "variant": variant}, default_scales=dict(scales))
