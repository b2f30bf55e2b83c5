"""Checking cached files: ``verify`` (re-hash against the records) and telling damage from other failures."""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Iterable

from .download import _record, _record_path, _resolve, _sha256, _size_problem, cache_dir, download
from .registry import REGISTRY, CheckpointUnavailable, UnsafeCheckpoint

log = logging.getLogger("romlib.hub")


def verify(names: Iterable[str] | None = None, *, cache: str | os.PathLike | None = None) -> list[dict]:
    """Re-hash cached files against their records. ``names`` default: every registry file that is
    cached plus every recorded file in the cache. One row per file: ``file``, ``size``, ``status``
    (``"ok"``, ``"damaged: ..."``, ``"no record ..."``, ``"not cached"``), ``ok`` (False only for damage)."""
    root = Path(cache) if cache is not None else cache_dir()
    if names is None:
        files = {c.filename: c.name for c in REGISTRY.values() if (root / c.filename).is_file()}
        if root.is_dir():
            for meta in root.glob("*.json"):
                if meta.name.endswith(".json") and meta.with_name(meta.name[:-5]).is_file():
                    files.setdefault(meta.name[:-5], meta.name[:-5])
    else:
        files = {_resolve(n).filename: n for n in names}
    rows = []
    for fname in sorted(files):
        path = root / fname
        row = {"name": files[fname], "file": fname, "size": path.stat().st_size if path.is_file() else None}
        rec = _record(path)
        if not path.is_file():
            row.update(status="not cached", ok=True)
        elif rec is None or "sha256" not in rec:
            row.update(status=f"no record (placed by hand?); sha256 {_sha256(path)[:16]}…", ok=True)
        elif _size_problem(path):
            row.update(status=f"damaged: {_size_problem(path)}", ok=False)
        elif _sha256(path) != rec["sha256"]:
            row.update(status="damaged: sha256 differs from the one recorded at download", ok=False)
        else:
            row.update(status="ok", ok=True)
        rows.append(row)
    return rows


def _structure_problem(path: Path) -> str | None:
    """Why ``path`` is not a whole file of its kind (cheap checks: zip directory, safetensors header), or None."""
    import zipfile

    with open(path, "rb") as f:
        head = f.read(8)
    size = path.stat().st_size
    if path.suffix == ".safetensors":
        if size < 8:
            return "shorter than a safetensors header"
        n = int.from_bytes(head, "little")
        if n > size - 8:
            return "its safetensors header is longer than the file"
        try:
            with open(path, "rb") as f:
                f.seek(8)
                header = json.loads(f.read(n))
            end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
        except (ValueError, KeyError, TypeError, IndexError) as e:
            return f"its safetensors header is unreadable ({e})"
        if 8 + n + end != size:
            return f"its safetensors header describes {8 + n + end} bytes, the file has {size}"
        return None
    if path.suffix in (".pt", ".pth", ".bin", ".ckpt"):
        if zipfile.is_zipfile(path):
            return None
        if head[:1] != b"\x80":  # neither torch's zip format nor a legacy pickle
            return "it is neither a zip archive nor a pickle (truncated or not a checkpoint)"
    return None


def _damage(path: Path, err: BaseException) -> str | None:
    """Why a file that failed to load is really damaged, or None when it is intact (or we cannot tell):
    memory and allocation failures, refused globals and permission errors never count as damage."""
    import zipfile

    if isinstance(err, (MemoryError, UnsafeCheckpoint, PermissionError, KeyboardInterrupt)):
        return None
    text = str(err).lower()
    if isinstance(err, RuntimeError) and any(w in text for w in ("alloc", "out of memory", "not enough memory")):
        return None
    if not path.is_file():
        return None
    problem = _size_problem(path) or _structure_problem(path)
    if problem:
        return problem
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as z:
                bad = z.testzip()  # reads every member and checks its CRC
        except (zipfile.BadZipFile, OSError, EOFError, ValueError) as e:
            return f"its zip archive is broken ({e})"
        if bad is not None:
            return f"its archive member {bad} fails its CRC check"
        return None
    import pickle

    if isinstance(err, (pickle.UnpicklingError, EOFError, IndexError, ValueError)):
        return f"it cannot be unpickled ({type(err).__name__}: {err})"
    return None


def _discard(path: Path, why: str) -> None:
    """Remove a damaged cached file and its record; a read-only cache gets a clear error instead."""
    try:
        path.unlink(missing_ok=True)
        _record_path(path).unlink(missing_ok=True)
    except OSError as e:
        raise CheckpointUnavailable(
            f"{path} is damaged ({why}) and cannot be removed ({e.strerror or e}); replace it by hand "
            f"with a good copy (romlib download where the cache is writable)") from None
    log.warning("%s is damaged (%s); removed it, fetching it again", path, why)


def fetch_checked(name: str, *, cache: str | os.PathLike | None = None, progress: bool = True) -> Path:
    """:func:`download`, then a cheap structural check (zip directory, safetensors header); a
    damaged file is removed and fetched once more. For files read by other libraries (open_clip)."""
    for attempt in (0, 1):
        path = download(name, cache=cache, progress=progress)
        why = _structure_problem(path)
        if why is None:
            return path
        if attempt:
            raise CheckpointUnavailable(f"{path} is damaged even after a fresh download ({why})")
        _discard(path, why)
    raise AssertionError  # pragma: no cover
