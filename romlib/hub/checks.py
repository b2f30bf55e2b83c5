"""Checking cached files: ``verify`` (size, format, manifest, values, sha256), ``fetch_checked``, and telling
damage from other failures (``damage``, ``discard``)."""
from __future__ import annotations

import logging
import os
import pickle
import zipfile
from pathlib import Path
from typing import Iterable

from .cache import check_cache, move_aside, odd_entry, record, sha256, size_problem
from .download import download
from .formats import file_problem, structure_problem
from .registry import REGISTRY, Checkpoint, CheckpointUnavailable, UnsafeCheckpoint
from .sources import resolve

__all__ = ["verify", "fetch_checked", "damage", "discard"]

log = logging.getLogger("romlib.hub")


def _entry(fname: str, name: str, rec: dict | None) -> Checkpoint:
    """The registry entry of a cached file, or one made from its record (a file fetched by address)."""
    known = next((c for c in REGISTRY.values() if c.filename == fname), None)
    if known is not None:
        return known
    return Checkpoint(name, str((rec or {}).get("source") or name), file=fname)


def _check_file(path: Path, ckpt: Checkpoint, rec: dict | None) -> tuple[str, bool]:
    """``(status, ok)`` of one cached file: its size against its record and the registry, its format
    and manifest, its sha256 against its record and the registry."""
    size = path.stat().st_size
    problem = size_problem(path)
    if problem:
        return f"damaged: {problem}", False
    if ckpt.size is not None and size != ckpt.size:
        return f"bad: it has {size} bytes, romlib expects exactly {ckpt.size}", False
    problem = file_problem(path, ckpt)
    if problem:
        return f"bad: {problem}", False
    digest = sha256(path)
    if ckpt.sha256 and digest != ckpt.sha256:
        return f"bad: its sha256 differs from the registry's {ckpt.sha256[:16]}…", False
    if rec is None or "sha256" not in rec:
        return f"no record (placed by hand?); format checked; sha256 {digest[:16]}…", True
    if digest != rec["sha256"]:
        return "damaged: its sha256 differs from the one recorded at download", False
    return "ok", True


def verify(names: Iterable[str] | None = None, *, cache: str | os.PathLike | None = None,
           move_bad: bool = True) -> list[dict]:
    """Re-check cached files: size (record, registry), format, manifest (names, shapes, dtypes) and values (every
    tensor floating and finite; :func:`~romlib.hub.formats.file_problem`) and sha256 (record, registry). ``names`` default: every registry file that is cached plus every
    recorded file in the cache. One row per file: ``name``, ``file``, ``size``, ``status`` (``"ok"``,
    ``"damaged: ..."``, ``"bad: ..."``, ``"no record ..."``, ``"not cached"``), ``ok`` (False for a
    damaged or bad file) and ``moved_to`` (where a bad file was moved aside with ``move_bad``, else None).

    A cache that is a file or an unreadable folder raises (:func:`~romlib.hub.check_cache`)."""
    root = check_cache(cache)
    if names is None:
        files = {c.filename: c.name for c in REGISTRY.values() if os.path.lexists(root / c.filename)}
        if root.is_dir():
            for meta in root.glob("*.json"):
                fname = meta.name[:-5]
                if ".bad-" not in fname and not fname.endswith(".part") and meta.with_name(fname).is_file():
                    files.setdefault(fname, (record(meta.with_name(fname)) or {}).get("name") or fname)
    else:
        files = {resolve(n).filename: n for n in names}
    rows = []
    for fname in sorted(files):
        path = root / fname
        row = {"name": files[fname], "file": fname, "size": path.stat().st_size if path.is_file() else None, "moved_to": None}
        odd = odd_entry(path)
        if odd:
            row.update(status=f"bad: {odd}", ok=False)
            rows.append(row)
            continue
        if not path.is_file():
            row.update(status="not cached", ok=True)
            rows.append(row)
            continue
        rec = record(path)
        status, ok = _check_file(path, _entry(fname, files[fname], rec), rec)
        if not ok and move_bad:
            try:
                row["moved_to"] = move_aside(path)
                status += f"; moved aside to {row['moved_to'].name}"
            except OSError as e:
                status += f"; could not be moved aside ({e.strerror or e})"
        row.update(status=status, ok=ok)
        rows.append(row)
    return rows


def damage(path: Path, err: BaseException) -> str | None:
    """Why a file that failed to load is really damaged, or None when it is intact (or we cannot tell):
    memory and allocation failures, refused globals and permission errors never count as damage."""
    if isinstance(err, (MemoryError, UnsafeCheckpoint, PermissionError, KeyboardInterrupt)):
        return None
    text = str(err).lower()
    if isinstance(err, RuntimeError) and any(w in text for w in ("alloc", "out of memory", "not enough memory")):
        return None
    if not path.is_file():
        return None
    problem = size_problem(path) or structure_problem(path)
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
    if isinstance(err, (pickle.UnpicklingError, EOFError, IndexError, ValueError)):
        return f"it cannot be unpickled ({type(err).__name__}: {err})"
    return None


def discard(path: Path, why: str) -> None:
    """Move a damaged cached file (and its record) aside as ``<file>.bad-<time>``; a read-only cache
    gets a clear error instead. Never deletes it."""
    try:
        bad = move_aside(path)
    except OSError as e:
        raise CheckpointUnavailable(
            f"{path} is damaged ({why}) and cannot be moved aside ({e.strerror or e}); replace it by hand "
            f"with a good copy (romlib download where the cache is writable)") from None
    log.warning("%s is damaged (%s); moved it aside to %s, fetching it again", path, why, bad.name)


def fetch_checked(name: str, *, cache: str | os.PathLike | None = None, progress: bool = True) -> Path:
    """:func:`download`, then the format check of :func:`~romlib.hub.formats.file_problem` (a safetensors
    header: cheap); a bad file is moved aside and fetched once more. For files read by other libraries (open_clip)."""
    for attempt in (0, 1):
        path = download(name, cache=cache, progress=progress)
        why = file_problem(path, resolve(name))
        if why is None:
            return path
        if attempt:
            raise CheckpointUnavailable(f"{path} is damaged even after a fresh download ({why})")
        discard(path, why)
    raise AssertionError  # pragma: no cover
