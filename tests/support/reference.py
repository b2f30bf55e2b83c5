"""Test helpers: where the reference fixtures live (``../shared/reference``) and the GPT-2 tokenizer
built from their vocabulary copies. Only tests and tools import this module; tiny models are in
:mod:`romlib.models.tiny`.
"""
from __future__ import annotations

import os
from pathlib import Path

from romlib.models.tokenizers import GlideTokenizer

__all__ = ["reference_dir", "reference_tokenizer"]


def reference_dir() -> Path | None:
    """``../shared/reference`` beside the repository (or ``$ROMLIB_REFERENCE``), if present."""
    env = os.environ.get("ROMLIB_REFERENCE")
    candidates = [Path(env)] if env else []
    here = Path(__file__).resolve().parents[2]  # the repository
    candidates += [here.parent / "shared" / "reference", here / "shared" / "reference"]
    for c in candidates:
        if (c / "README.md").is_file():
            return c
    return None


def reference_tokenizer():
    """GLIDE's GPT-2 tokenizer from the reference copies of its vocabulary (offline)."""
    ref = reference_dir()
    if ref is None:
        raise FileNotFoundError("the reference folder ../shared/reference is not available")
    return GlideTokenizer.from_files(ref / "encoder.json.gz", ref / "vocab.bpe.gz")

