"""GLIDE's text encoding: GPT-2 byte-level BPE on lower-cased text, padded with the end token.

GLIDE reads exactly ``text_ctx`` (128) tokens: the prompt's tokens, truncated, then the end token
50256 as padding, with a boolean mask (True = a real token). The vocabulary is GPT-2's: its two
files (``encoder.json``, ``vocab.bpe``, 0.6 MB gzipped) ship inside the package as glide-text2im
ships them, so :meth:`GlideTokenizer.default` needs no network; :meth:`GlideTokenizer.from_files`
reads other copies and :meth:`GlideTokenizer.from_pretrained` a Hugging Face hub name.

Any tokenizer with ``encode(text) -> list[int]``, ``end_token`` and ``n_vocab`` works with
:meth:`TextTokenizer.batch` (the ShapesWorld word tokenizer is another).
"""
from __future__ import annotations

import gzip
import os
import shutil
import tempfile
from pathlib import Path

import torch

__all__ = ["TextTokenizer", "GlideTokenizer", "ByteTokenizer"]


class TextTokenizer:
    """Shared padding logic: subclasses give ``encode``, ``end_token`` and ``n_vocab``."""

    end_token: int
    n_vocab: int

    def encode(self, text: str) -> list[int]:  # pragma: no cover - abstract
        raise NotImplementedError

    def padded_tokens_and_mask(self, tokens: list[int], text_ctx: int) -> tuple[list[int], list[bool]]:
        """Truncate to ``text_ctx``, pad with the end token; mask is True on real tokens."""
        tokens = list(tokens)[:text_ctx]
        pad = text_ctx - len(tokens)
        return tokens + [self.end_token] * pad, [True] * len(tokens) + [False] * pad

    def batch(self, texts: list[str] | str, text_ctx: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(tokens [B, text_ctx] long, mask [B, text_ctx] bool)`` for a list of prompts."""
        if isinstance(texts, str):
            texts = [texts]
        rows = [self.padded_tokens_and_mask(self.encode(t), text_ctx) for t in texts]
        tokens = torch.tensor([r[0] for r in rows], dtype=torch.long, device=device)
        mask = torch.tensor([r[1] for r in rows], dtype=torch.bool, device=device)
        return tokens, mask


class GlideTokenizer(TextTokenizer):
    """GPT-2 BPE as GLIDE uses it (text lower-cased first; no special tokens added)."""

    def __init__(self, hf_tokenizer):
        self._tok = hf_tokenizer
        self.n_vocab = len(hf_tokenizer)
        self.end_token = self.n_vocab - 1

    @classmethod
    def default(cls) -> "GlideTokenizer":
        """GPT-2's vocabulary from the copies shipped in ``romlib/assets`` (offline; the same files
        as the ``gpt2`` tokenizer on the Hugging Face hub)."""
        assets = Path(__file__).resolve().parent.parent / "assets"
        return cls.from_files(assets / "encoder.json.gz", assets / "vocab.bpe.gz")

    @classmethod
    def from_pretrained(cls, name: str = "gpt2") -> "GlideTokenizer":
        """A vocabulary from the Hugging Face hub (cached by ``huggingface_hub``); GLIDE's own is
        :meth:`default`, which needs no network."""
        from transformers import GPT2Tokenizer

        return cls(GPT2Tokenizer.from_pretrained(name))

    @classmethod
    def from_files(cls, vocab: str | os.PathLike, merges: str | os.PathLike) -> "GlideTokenizer":
        """From ``vocab.json``/``encoder.json`` and ``merges.txt``/``vocab.bpe`` (``.gz`` accepted)."""
        from transformers import GPT2Tokenizer

        with tempfile.TemporaryDirectory() as tmp:
            paths = []
            for src, name in ((Path(vocab), "vocab.json"), (Path(merges), "merges.txt")):
                if not src.is_file():
                    raise FileNotFoundError(f"tokenizer file not found: {src}")
                dst = Path(tmp) / name
                opener = gzip.open if src.suffix == ".gz" else open
                with opener(src, "rb") as fi, open(dst, "wb") as fo:
                    shutil.copyfileobj(fi, fo)
                paths.append(str(dst))
            return cls(GPT2Tokenizer(vocab=paths[0], merges=paths[1]))

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text.lower(), add_special_tokens=False)

    def decode(self, tokens: list[int]) -> str:
        return self._tok.decode([t for t in tokens if t != self.end_token])


class ByteTokenizer(TextTokenizer):
    """UTF-8 bytes of the lower-cased text (256 ids) plus an end token: offline, for tiny test models."""

    n_vocab = 257
    end_token = 256

    def encode(self, text: str) -> list[int]:
        return list(text.lower().encode("utf-8"))
