"""The cache folder and what is recorded of each file in it: size and sha256 records, moving bad files aside."""
from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

from ..io import check_file

__all__ = ["cache_dir", "check_cache", "odd_entry", "writable", "sha256", "record_path", "record", "write_record",
           "move_aside", "size_problem", "is_complete"]


def cache_dir() -> Path:
    """``$ROMLIB_CACHE``, else ``$XDG_CACHE_HOME/romlib``, else ``~/.cache/romlib``."""
    if os.environ.get("ROMLIB_CACHE"):
        return Path(os.environ["ROMLIB_CACHE"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(xdg) / "romlib"


def _cache_problem(root: Path) -> tuple[type[OSError], str] | None:
    """``(error class, why)`` when ``root`` cannot serve as the cache folder (a file, a dangling link,
    an unreadable folder), or None (it may not exist yet)."""
    env = os.environ.get("ROMLIB_CACHE")
    where = f"ROMLIB_CACHE={root}" if env and Path(env).expanduser() == root else f"the cache folder {root}"
    if root.is_symlink() and not root.exists():
        return NotADirectoryError, (f"{where} is a link to {os.readlink(root)}, which does not exist: create that "
                                    "folder or point ROMLIB_CACHE elsewhere")
    if root.exists() and not root.is_dir():
        return NotADirectoryError, f"{where} is a file, not a folder: point ROMLIB_CACHE at a folder (or unset it for ~/.cache/romlib)"
    if root.is_dir() and not os.access(root, os.R_OK | os.X_OK):
        return PermissionError, f"{where} cannot be read (permission denied): give yourself read access or point ROMLIB_CACHE elsewhere"
    return None


def odd_entry(dest: Path) -> str | None:
    """Why the cache cannot use ``dest`` or its companions (``.part``, ``.part.meta``, ``.lock``): one of
    them exists and is not a regular file (a folder, a named pipe that would block the download forever,
    a device, a broken link), or None. Nothing is opened."""
    for p in (dest, dest.with_name(dest.name + ".part"), dest.with_name(dest.name + ".part.meta"),
              dest.with_name(dest.name + ".lock")):
        if os.path.lexists(p):
            try:
                check_file(p, "the cache entry")
            except (OSError, ValueError) as e:
                return f"{e}; move it out of the cache"
    return None


def check_cache(cache: str | os.PathLike | None = None) -> Path:
    """The cache folder (``cache`` or :func:`cache_dir`), checked: a file or a dangling link raises
    :class:`NotADirectoryError`, an unreadable folder :class:`PermissionError`, each saying what to do.
    A folder that does not exist yet is fine."""
    root = Path(cache).expanduser() if cache is not None else cache_dir()
    problem = _cache_problem(root)
    if problem:
        raise problem[0](problem[1])
    return root


def writable(root: Path) -> str | None:
    """Why files cannot be written into ``root``, or None."""
    problem = _cache_problem(root)
    if problem:
        return problem[1]
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        return f"the cache directory {root} cannot be created ({e.strerror or e})"
    if not os.access(root, os.W_OK | os.X_OK):
        return f"the cache directory {root} is read-only"
    return None


def sha256(path: Path, chunk: int = 1 << 20) -> str:
    """The SHA-256 of a file, hex."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def record_path(path: Path) -> Path:
    """``<file>.json``: the record of a cached file."""
    return path.with_name(path.name + ".json")


def record(path: Path) -> dict | None:
    """What was recorded of a cached file at download (a dict), or None (no record, or not readable)."""
    try:
        rec = json.loads(record_path(path).read_text())
    except (OSError, ValueError):
        return None
    return rec if isinstance(rec, dict) else None


def write_record(path: Path, rec: dict) -> None:
    tmp = path.with_name(path.name + ".json.tmp")
    tmp.write_text(json.dumps(rec, indent=1))
    os.replace(tmp, record_path(path))


def move_aside(path: Path, dest: Path | None = None) -> Path:
    """Rename ``path`` to ``<dest name>.bad-<UTC time>`` beside it (``dest``: the cached file it was
    meant to become; default ``path``), with its record as ``<that>.record``; returns the new path.
    Bad files are kept for a look, never deleted."""
    dest = dest or path
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    bad = dest.with_name(f"{dest.name}.bad-{stamp}")
    n = 1
    while bad.exists():
        n += 1
        bad = dest.with_name(f"{dest.name}.bad-{stamp}-{n}")
    os.replace(path, bad)
    rec = record_path(path)
    if rec.is_file():
        os.replace(rec, bad.with_name(bad.name + ".record"))
    return bad


def size_problem(path: Path) -> str | None:
    """Why a cached file is not whole (its size differs from its record), or None."""
    rec = record(path)
    if rec is None or not isinstance(rec.get("size"), int):
        return None  # put there by hand: trusted (a strict load still checks it)
    size = path.stat().st_size
    if size != rec["size"]:
        return f"its size {size} differs from the {rec['size']} bytes recorded at download"
    return None


def is_complete(path: Path) -> bool:
    """A cached file is trusted when it exists and its size matches what was recorded at download."""
    return path.is_file() and size_problem(path) is None
