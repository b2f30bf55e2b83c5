"""Is a file what its registry entry says it is? The checks a download passes before it is recorded as good.

:func:`file_problem` answers with the reason a file is not a good file of its format, or None:

* an HTML page (a proxy's or captive portal's "200 OK" page saved in place of the file) is refused
  by name, whatever format was expected;
* ``torch``: opens with ``torch.load(weights_only=True, mmap=True)`` (only the pickle is read; the
  tensors stay in the file), ``checkpoint[state_key]`` where the weights are nested, and for an
  entry with a manifest the state dict's names and shapes (:mod:`romlib.hub.manifests`);
* ``safetensors``: a header that parses and describes exactly the file's bytes;
* ``json``: UTF-8 JSON holding an object of token ids (a vocabulary maps tokens to ids);
* ``config``: UTF-8 JSON holding an object (a model's or scheduler's configuration);
* ``bpe``: UTF-8 text whose lines (after an optional ``#version`` line) are pairs of symbols;
* ``image``: an image PIL opens, verifies and decodes.

A checkpoint's check reads only its header and pickle (a 1.5 GB checkpoint: about 0.2 s); the
vocabularies and the photo are small and read whole.
"""
from __future__ import annotations

import json
from pathlib import Path

from .registry import Checkpoint, UnsafeCheckpoint

__all__ = ["file_problem", "html_problem", "NOUNS"]

#: How a message names a file of each format ("this is an HTML page, not a checkpoint").
NOUNS = {"torch": "a checkpoint", "safetensors": "a checkpoint", "json": "a vocabulary", "config": "a configuration file", "bpe": "a vocabulary",
         "image": "an image", None: "the file expected"}
_HTML_STARTS = (b"<!doctype html", b"<html", b"<head", b"<body", b"<meta", b"<title", b"<!--", b"<?xml")


def html_problem(path: Path, kind: str | None) -> str | None:
    """The message for an HTML page saved in place of a file of format ``kind``, or None."""
    with open(path, "rb") as f:
        head = f.read(1024)
    head = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if head.startswith(_HTML_STARTS):
        return f"this is an HTML page, not {NOUNS.get(kind, NOUNS[None])}: a proxy or captive portal?"
    return None


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0][:160]}" if text else type(err).__name__


def _torch_problem(path: Path, ckpt: Checkpoint) -> str | None:
    from .checks import _structure_problem
    from .load import safe_load
    from .manifests import state_dict_problem

    problem = _structure_problem(path, "torch")
    if problem:
        return problem
    try:
        obj = safe_load(path, allow=ckpt.allow, mmap=True)
    except UnsafeCheckpoint as e:
        return str(e)
    except Exception as e:  # a damaged or foreign file fails in many ways inside the unpickler
        return f"it cannot be read as a torch checkpoint ({_first_line(e)})"
    if ckpt.state_key is not None:
        if not isinstance(obj, dict) or ckpt.state_key not in obj:
            held = sorted(map(str, obj))[:6] if isinstance(obj, dict) else type(obj).__name__
            return f"it has no entry {ckpt.state_key!r} holding the weights (it holds {held})"
        obj = obj[ckpt.state_key]
    if ckpt.manifest is not None:
        return state_dict_problem(obj, ckpt.manifest)
    if not isinstance(obj, dict):
        return f"it holds a {type(obj).__name__}, not a dict of weights"
    return None


def _safetensors_problem(path: Path) -> str | None:
    from .checks import _structure_problem

    return _structure_problem(path, "safetensors")


def _text(path: Path) -> tuple[str | None, str | None]:
    try:
        return path.read_text(encoding="utf-8"), None
    except UnicodeDecodeError as e:
        return None, f"it is not UTF-8 text (byte {e.start}: {e.object[e.start:e.start + 1]!r})"


def _json(path: Path) -> tuple[object, str | None]:
    """``(the parsed JSON, None)`` or ``(None, why it is not JSON)``."""
    text, problem = _text(path)
    if problem:
        return None, problem
    try:
        return json.loads(text), None
    except ValueError as e:
        return None, f"it is not valid JSON ({_first_line(e)})"


def _json_problem(path: Path) -> str | None:
    obj, problem = _json(path)
    if problem:
        return problem
    if not isinstance(obj, dict) or not obj:
        return f"it holds a JSON {type(obj).__name__}{' (empty)' if not obj else ''}, not a vocabulary (an object of tokens)"
    odd = next((k for k, v in obj.items() if not isinstance(v, int) or isinstance(v, bool)), None)
    if odd is not None:
        return f"its entry {odd[:40]!r} maps to {str(obj[odd])[:40]!r}, not to a token id: not a vocabulary"
    return None


def _config_problem(path: Path) -> str | None:
    obj, problem = _json(path)
    if problem:
        return problem
    if not isinstance(obj, dict):
        return f"it holds a JSON {type(obj).__name__}, not a configuration (an object)"
    return None


def _bpe_problem(path: Path) -> str | None:
    text, problem = _text(path)
    if problem:
        return problem
    lines = [line for line in text.split("\n") if line.strip() and not line.startswith("#version")]  # not splitlines: it splits on U+0085 too
    if not lines:
        return "it holds no BPE merges (no line after the #version line)"
    for i, line in enumerate(lines):
        if len(line.split()) != 2:
            return f"its merge line {i + 1} ({line[:40]!r}) is not a pair of symbols"
    return None


def _image_problem(path: Path) -> str | None:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.verify()  # the structure; then every pixel (a cut-off JPEG fails only here)
        with Image.open(path) as im:
            im.load()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        return f"it is not an image PIL can read ({_first_line(e)})"
    return None


def file_problem(path: str | Path, ckpt: Checkpoint) -> str | None:
    """Why ``path`` is not a good file of ``ckpt``'s format (:attr:`Checkpoint.kind`) and manifest, or None.

    A file of no known format is only checked for being an HTML page."""
    path = Path(path)
    kind = ckpt.kind
    problem = html_problem(path, kind)
    if problem or kind is None:
        return problem
    if path.stat().st_size == 0:
        return "it is empty (0 bytes)"
    check = {"torch": lambda: _torch_problem(path, ckpt), "safetensors": lambda: _safetensors_problem(path),
             "json": lambda: _json_problem(path), "config": lambda: _config_problem(path), "bpe": lambda: _bpe_problem(path), "image": lambda: _image_problem(path)}
    if kind not in check:
        raise ValueError(f"unknown format {kind!r} of {ckpt.name}; known: {', '.join(check)}")
    return check[kind]()
