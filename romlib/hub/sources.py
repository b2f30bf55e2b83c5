"""Where each file comes from (its official address or ``$ROMLIB_MIRROR``, checked) and the error that names a
file romlib cannot get."""
from __future__ import annotations

import os
import urllib.parse
from pathlib import Path

from .registry import REGISTRY, Checkpoint, CheckpointUnavailable, UnknownCheckpoint

__all__ = ["MIRROR_FORMS", "mirror", "source", "is_remote", "offline", "resolve", "missing_text", "unavailable"]

#: What ``$ROMLIB_MIRROR`` may be (the message of a value that is none of these quotes it).
MIRROR_FORMS = ("an http:// or https:// address (http://host:port/folder, port 1-65535)",
                "a file:// address of a folder", "the path of a local folder that exists")


def _bad_mirror(value: str, why: str) -> ValueError:
    return ValueError(f"ROMLIB_MIRROR={value!r} cannot be used: {why}. Accepted: {'; '.join(MIRROR_FORMS)} "
                      "(or unset it to fetch from the official addresses)")


def _check_address(value: str) -> None:
    """Refuse an http(s) address that has no host, a port out of range or brackets that do not close."""
    try:
        u = urllib.parse.urlsplit(value)
        port = u.port  # raises for a port out of range or not a number
    except ValueError as e:
        raise _bad_mirror(value, f"it is not a valid address ({e})") from None
    if not u.hostname:
        raise _bad_mirror(value, "it names no host")
    if port == 0:
        raise _bad_mirror(value, "port 0 is not a port a server listens on")
    if any(c.isspace() for c in value):
        raise _bad_mirror(value, "it contains a space")


def mirror() -> str | None:
    """``$ROMLIB_MIRROR`` checked: an ``http(s)://`` base address, a ``file://`` address or a local folder, or None.

    Any other value (another scheme such as ``ftp://``, an address with no host or a port out of range, a folder
    that does not exist) raises ValueError naming the variable, its value and the accepted forms."""
    m = os.environ.get("ROMLIB_MIRROR", "").strip()
    if not m:
        return None
    scheme = m.split("://", 1)[0].lower() if "://" in m else None
    if scheme in ("http", "https"):
        _check_address(m)
        return m
    if scheme not in (None, "file"):
        raise _bad_mirror(m, f"the scheme {scheme}:// is not one romlib fetches from")
    folder = _local(m)
    if not folder.is_dir():
        what = "is a file, not a folder" if folder.exists() else "does not exist"
        looks = (" (it looks like an address without http://)" if scheme is None and ":" in m and not folder.is_absolute()
                 else "")
        raise _bad_mirror(m, f"the folder {folder} {what}{looks}")
    return m


def source(ckpt: Checkpoint) -> str:
    """Where ``ckpt`` is fetched from: ``$ROMLIB_MIRROR``/<file name> when a mirror is set, else its official address."""
    m = mirror()
    if m is None:
        return ckpt.url
    if "://" in m and not m.lower().startswith("file://"):
        return m.rstrip("/") + "/" + urllib.parse.quote(ckpt.filename)
    return str(_local(m) / ckpt.filename)


def _local(m: str) -> Path:
    return Path(urllib.parse.urlparse(m).path if m.lower().startswith("file://") else m).expanduser()


def is_remote(src: str) -> bool:
    """``src`` is fetched over http(s) (not a local file)."""
    return src.startswith(("http://", "https://"))


def offline() -> bool:
    """``ROMLIB_OFFLINE`` or ``HF_HUB_OFFLINE`` is set (1, true, yes)."""
    return any(os.environ.get(v, "").lower() in ("1", "true", "yes") for v in ("ROMLIB_OFFLINE", "HF_HUB_OFFLINE"))


def resolve(name_or_url: str) -> Checkpoint:
    """The registry entry of a name, or an entry made for an http(s) address; UnknownCheckpoint otherwise."""
    if name_or_url in REGISTRY:
        return REGISTRY[name_or_url]
    if "://" in name_or_url:
        return Checkpoint(name_or_url, name_or_url)
    raise UnknownCheckpoint(f"unknown file {name_or_url!r}; valid names: {', '.join(sorted(REGISTRY))} "
                            "(or an http(s):// address)")


def missing_text(ckpt: Checkpoint, dest: Path, why: str) -> str:
    """The lines that name one file romlib cannot get (in :class:`CheckpointUnavailable` messages)."""
    src = source(ckpt)
    where = f"  address: {src}\n" + (f"  official address: {ckpt.url}\n" if src != ckpt.url else "")
    return (f"{ckpt.filename} ({ckpt.size_text}; {ckpt.name}): {why}\n{where}  put it by hand at: {dest}\n")


def unavailable(ckpt: Checkpoint, dest: Path, why: str) -> CheckpointUnavailable:
    """The :class:`CheckpointUnavailable` for one file: why, its address(es) and where to put it by hand."""
    src = source(ckpt)
    official = f"  official address: {ckpt.url}\n" if src != ckpt.url else ""
    return CheckpointUnavailable(
        f"checkpoint {ckpt.name!r} is not cached and cannot be downloaded: {why}.\n"
        f"  file: {ckpt.filename} ({ckpt.size_text})\n  address: {src}\n{official}  put it by hand at: {dest}\n"
        f"  (the cache directory is {dest.parent}; set ROMLIB_CACHE to use another, ROMLIB_MIRROR to fetch from a mirror)",
        missing=[(ckpt, dest, why)],
    )
