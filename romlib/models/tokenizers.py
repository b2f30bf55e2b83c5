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
import logging
import os
import string
import shutil
import tempfile
from pathlib import Path

import torch

from ..io import quote

__all__ = ["TextTokenizer", "GlideTokenizer", "ByteTokenizer", "warn_text"]

log = logging.getLogger(__name__)
_WARNED: set = set()


def warn_text(text: str, n_tokens: int, text_ctx: int, *, reader: str, dropped: str = "") -> None:
    """Log (once per text and reader) when a prompt is cut to ``text_ctx`` tokens or characters
    were dropped because the tokenizer cannot represent them."""
    if n_tokens > text_ctx and (text, text_ctx, reader) not in _WARNED:
        _WARNED.add((text, text_ctx, reader))
        log.warning("the prompt %s is %d tokens; %s reads %d: the rest is ignored", quote(text), n_tokens, reader,
                    text_ctx)
    if dropped and (text, "dropped", reader) not in _WARNED:
        _WARNED.add((text, "dropped", reader))
        log.warning("%s cannot represent %s in the prompt %s: dropped", reader, quote(dropped, 40), quote(text))


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
        encoded = [self.encode(t) for t in texts]
        for t, tok in zip(texts, encoded):
            warn_text(t, len(tok), text_ctx, reader=f"{type(self).__name__}", dropped=self.dropped(t, tok))
        rows = [self.padded_tokens_and_mask(tok, text_ctx) for tok in encoded]
        tokens = torch.tensor([r[0] for r in rows], dtype=torch.long, device=device)
        mask = torch.tensor([r[1] for r in rows], dtype=torch.bool, device=device)
        return tokens, mask

    def dropped(self, text: str, tokens: list[int]) -> str:
        """The characters of ``text`` its tokens do not give back (letters, digits, symbols, emoji;
        spaces and ASCII punctuation are not counted). Byte-level tokenizers drop nothing."""
        decode = getattr(self, "decode", None)
        if decode is None or not text:
            return ""
        return unrepresented(text, decode(tokens))


def unrepresented(text: str, kept: str) -> str:
    """The characters of ``text`` (lower-cased) that ``kept`` lacks, each once: what a reader of
    ``text`` dropped (spaces and ASCII punctuation are not counted)."""
    back = kept.lower()
    ignore = set(string.whitespace + string.punctuation)
    return "".join(dict.fromkeys(c for c in text.lower() if c not in ignore and c not in back))


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

    def dropped(self, text: str, tokens: list[int]) -> str:
        return ""  # byte-level BPE: every character is representable


class ByteTokenizer(TextTokenizer):
    """UTF-8 bytes of the lower-cased text (256 ids) plus an end token: offline, for tiny test models."""

    n_vocab = 257
    end_token = 256

    def dropped(self, text: str, tokens: list[int]) -> str:
        return ""  # every character is its UTF-8 bytes

    def encode(self, text: str) -> list[int]:
        return list(text.lower().encode("utf-8"))
