"""Where each file comes from (its official address or ``$ROMLIB_MIRROR``) and the error that names a file romlib cannot get."""
from __future__ import annotations

import os
import urllib.parse
from pathlib import Path

from .registry import REGISTRY, Checkpoint, CheckpointUnavailable, UnknownCheckpoint


def mirror() -> str | None:
    """``$ROMLIB_MIRROR``: an ``http(s)://`` base address or a local folder, or None."""
    m = os.environ.get("ROMLIB_MIRROR", "").strip()
    return m or None


def source(ckpt: Checkpoint) -> str:
    """Where ``ckpt`` is fetched from: ``$ROMLIB_MIRROR``/<file name> when a mirror is set, else its official address."""
    m = mirror()
    if m is None:
        return ckpt.url
    if "://" in m and not m.startswith("file://"):
        return m.rstrip("/") + "/" + urllib.parse.quote(ckpt.filename)
    return str(_local(m) / ckpt.filename)


def _local(m: str) -> Path:
    return Path(urllib.parse.urlparse(m).path if m.startswith("file://") else m).expanduser()


def _is_remote(src: str) -> bool:
    return src.startswith(("http://", "https://"))


def _offline() -> bool:
    return any(os.environ.get(v, "").lower() in ("1", "true", "yes") for v in ("ROMLIB_OFFLINE", "HF_HUB_OFFLINE"))


def _resolve(name_or_url: str) -> Checkpoint:
    if name_or_url in REGISTRY:
        return REGISTRY[name_or_url]
    if "://" in name_or_url:
        return Checkpoint(name_or_url, name_or_url)
    raise UnknownCheckpoint(f"unknown file {name_or_url!r}; valid names: {', '.join(sorted(REGISTRY))} "
                            "(or an http(s):// address)")


def _missing_text(ckpt: Checkpoint, dest: Path, why: str) -> str:
    src = source(ckpt)
    where = f"  address: {src}\n" + (f"  official address: {ckpt.url}\n" if src != ckpt.url else "")
    return (f"{ckpt.filename} ({ckpt.size_text}; {ckpt.name}): {why}\n{where}  put it by hand at: {dest}\n")


def _unavailable(ckpt: Checkpoint, dest: Path, why: str) -> CheckpointUnavailable:
    src = source(ckpt)
    official = f"  official address: {ckpt.url}\n" if src != ckpt.url else ""
    return CheckpointUnavailable(
        f"checkpoint {ckpt.name!r} is not cached and cannot be downloaded: {why}.\n"
        f"  file: {ckpt.filename} ({ckpt.size_text})\n  address: {src}\n{official}  put it by hand at: {dest}\n"
        f"  (the cache directory is {dest.parent}; set ROMLIB_CACHE to use another, ROMLIB_MIRROR to fetch from a mirror)",
        missing=[(ckpt, dest, why)],
    )
