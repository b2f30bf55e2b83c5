"""Is a file what its registry entry says it is? The checks a download passes before it is recorded as good.

:func:`file_problem` answers with the reason a file is not a good file of its format, or None:

* an HTML page (a proxy's or captive portal's "200 OK" page saved in place of the file) is refused
  by name, whatever format was expected;
* ``torch``: a whole zip archive (or a pickle), opened with ``torch.load(weights_only=True, mmap=True)``,
  ``checkpoint[state_key]`` where the weights are nested, for an entry with a manifest the state dict's names,
  shapes and dtypes (:mod:`romlib.hub.manifests`), and its values (:func:`values_problem`);
* ``safetensors``: a header that parses and describes exactly the file's bytes, and its values;
* ``json``: UTF-8 JSON holding an object of token ids (a vocabulary maps tokens to ids);
* ``config``: UTF-8 JSON holding an object (a model's or scheduler's configuration);
* ``bpe``: UTF-8 text whose lines (after an optional ``#version`` line) are pairs of symbols;
* ``image``: an image PIL opens, verifies and decodes whole, within the pixel limit of ``romlib edit``
  (:data:`romlib.io.MAX_PIXELS`; a decompression bomb is refused by name).

*Values*: every tensor of a checkpoint is floating-point (float16, bfloat16, float32 or float64) and finite — an
``int8``, ``complex64`` or NaN entry is named — except the integer index buffers (:data:`INTEGER_ENTRIES`). The
values are read once (memory-mapped, in blocks: a 1.5 GB checkpoint in about a second).

*A whole file*: the formats in :data:`SELF_DELIMITING` show their own end (a zip's central directory, a
safetensors header's sizes, JSON's closing brace, an image's last block), so a body that a server sent without a
length is complete when it passes this check; a BPE text or a file of no known format cannot show it.
"""
from __future__ import annotations

import json
import warnings
import zipfile
from pathlib import Path

from ..io import MAX_PIXELS
from .manifests import DTYPES, state_dict_problem
from .registry import Checkpoint, UnsafeCheckpoint
from .safe import safe_load

__all__ = ["file_problem", "html_problem", "structure_problem", "values_problem", "NOUNS", "SELF_DELIMITING",
           "INTEGER_ENTRIES", "CHECKS"]

#: Bumped when the checks grow: a record of an older check is checked again once (``CHECKS`` 2: values).
CHECKS = 2
#: Formats whose content shows where the file ends (a truncated copy fails :func:`file_problem`).
SELF_DELIMITING = ("torch", "safetensors", "json", "config", "image")
#: Entries that are integer index buffers, not weights (the last part of their names).
INTEGER_ENTRIES = ("position_ids", "num_batches_tracked")

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


def structure_problem(path: Path, kind: str | None = None) -> str | None:
    """Why ``path`` is not a whole file of its kind (cheap checks: zip directory, safetensors header), or None.
    ``kind``: ``"torch"`` or ``"safetensors"`` (default: from the file name's suffix)."""
    with open(path, "rb") as f:
        head = f.read(8)
    size = path.stat().st_size
    if kind is None:
        kind = {".safetensors": "safetensors", ".pt": "torch", ".pth": "torch", ".bin": "torch", ".ckpt": "torch"}.get(path.suffix)
    if kind == "safetensors":
        header, problem = _safetensors_header(path, head, size)
        return problem
    if kind == "torch":
        if zipfile.is_zipfile(path):
            return None
        if head[:1] != b"\x80":  # neither torch's zip format nor a legacy pickle
            return "it is neither a zip archive nor a pickle (truncated or not a checkpoint)"
    return None


def _safetensors_header(path: Path, head: bytes, size: int) -> tuple[dict | None, str | None]:
    if size < 8:
        return None, "shorter than a safetensors header"
    n = int.from_bytes(head, "little")
    if n > size - 8:
        return None, "its safetensors header is longer than the file"
    try:
        with open(path, "rb") as f:
            f.seek(8)
            header = json.loads(f.read(n))
        end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
    except (ValueError, KeyError, TypeError, IndexError, AttributeError) as e:
        return None, f"its safetensors header is unreadable ({e})"
    if 8 + n + end != size:
        return None, f"its safetensors header describes {8 + n + end} bytes, the file has {size}"
    return header, None


def _integer_entry(name: str) -> bool:
    return name.rsplit(".", 1)[-1] in INTEGER_ENTRIES


def _dtype_name(dtype) -> str:
    return str(dtype).replace("torch.", "")


def _not_finite(t) -> int:
    """How many values of floating tensor ``t`` are NaN or infinite, read in blocks of 16 M values with numpy (not
    torch's thread pool, which can hang in a forked process); bfloat16 by its exponent bits."""
    import numpy as np
    import torch

    flat = t.detach().reshape(-1)
    bad = 0
    for i in range(0, flat.numel(), 1 << 24):
        block = flat[i:i + (1 << 24)]
        if block.dtype == torch.bfloat16:
            bits = block.view(torch.int16).numpy()
            bad += int(np.count_nonzero((bits & 0x7F80) == 0x7F80))  # exponent all ones: inf or NaN
        else:
            a = block.numpy()
            bad += int(a.size - np.count_nonzero(np.isfinite(a)))
    return bad


def values_problem(tensors) -> str | None:
    """Why the tensors (``(name, tensor)`` pairs, a state dict's ``items()``) are not usable weights, or None: an
    entry that is not floating-point (``int8``, ``complex64``, ``bool``…) where weights are, or one that holds NaN
    or infinite values. Integer index buffers (:data:`INTEGER_ENTRIES`) must be integers. Names the first three."""
    import torch

    wrong, nonfinite = [], []
    for name, t in tensors:
        if not isinstance(t, torch.Tensor):
            continue
        dtype = _dtype_name(t.dtype)
        if _integer_entry(name):
            if t.is_floating_point() or t.is_complex():
                wrong.append(f"{name} is {dtype} where an integer index buffer is expected")
            continue
        if dtype not in DTYPES:
            wrong.append(f"{name} is {dtype}, not a floating-point type ({', '.join(DTYPES)})")
        elif t.numel() and (bad := _not_finite(t)):
            nonfinite.append(f"{name} has {bad} of {t.numel()} values NaN or infinite")
    if not (wrong or nonfinite):
        return None
    parts = ([f"{len(wrong)} entr{'y' if len(wrong) == 1 else 'ies'} of the wrong dtype ({'; '.join(wrong[:3])}"
              f"{'; …' if len(wrong) > 3 else ''})"] if wrong else []) + \
            ([f"{len(nonfinite)} entr{'y' if len(nonfinite) == 1 else 'ies'} not finite ({'; '.join(nonfinite[:3])}"
              f"{'; …' if len(nonfinite) > 3 else ''})"] if nonfinite else [])
    return "its values are not usable weights: " + "; ".join(parts)


def _torch_problem(path: Path, ckpt: Checkpoint) -> str | None:
    problem = structure_problem(path, "torch")
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
        problem = state_dict_problem(obj, ckpt.manifest)
        if problem:
            return problem
    if not isinstance(obj, dict):
        return f"it holds a {type(obj).__name__}, not a dict of weights"
    try:
        return values_problem(obj.items())
    except (RuntimeError, OSError) as e:  # a memory-mapped tensor whose bytes are missing
        return f"its tensors cannot be read ({_first_line(e)})"


def _safetensors_problem(path: Path) -> str | None:
    with open(path, "rb") as f:
        head = f.read(8)
    header, problem = _safetensors_header(path, head, path.stat().st_size)
    if problem:
        return problem
    from safetensors import safe_open  # with torch: loaded on use

    try:
        with safe_open(str(path), framework="pt") as f:
            return values_problem((k, f.get_tensor(k)) for k in f.keys())
    except Exception as e:  # safetensors raises its own SafetensorError (and others) for a bad file
        return f"its tensors cannot be read ({_first_line(e)})"


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
    """Within :data:`romlib.io.MAX_PIXELS` by its header (checked before anything is decoded), then verified and
    decoded whole (a cut-off JPEG or PNG fails only there); a decompression bomb is refused by name."""
    from PIL import Image, ImageFile, UnidentifiedImageError

    truncated_ok, ImageFile.LOAD_TRUNCATED_IMAGES = ImageFile.LOAD_TRUNCATED_IMAGES, False  # a half image is refused
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # romlib's own limit applies
            with Image.open(path) as im:
                w, h = im.size
                if w * h > MAX_PIXELS:  # the limit of romlib edit (romlib.io.check_pixels)
                    return (f"it claims {w}x{h} = {w * h / 1e6:.0f} MP, over the {MAX_PIXELS / 1e6:.0f} MP romlib accepts "
                            "(refused before decoding: a decompression bomb or not the expected image)")
                im.verify()
            with Image.open(path) as im:
                im.load()
    except Image.DecompressionBombError as e:
        return (f"it is a decompression bomb ({_first_line(e)}); romlib accepts images of at most "
                f"{MAX_PIXELS / 1e6:.0f} MP")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, MemoryError) as e:
        return f"it is not an image PIL can read ({_first_line(e)})"
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = truncated_ok
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
