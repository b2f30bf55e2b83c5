"""Downloads and caching of the official checkpoints.

Every model romlib can load is named in :data:`REGISTRY` with its official address.
:func:`download` fetches a file once into the cache directory and returns its path:

* cache directory: ``$ROMLIB_CACHE``, else ``$XDG_CACHE_HOME/romlib``, else ``~/.cache/romlib``;
* a tqdm progress bar; an interrupted download resumes from its ``.part`` file (HTTP ``Range``);
* the finished file is checked (size from the server, sha256 where the registry knows it), its
  size and sha256 are recorded in a ``.json`` beside it, and it is renamed into place atomically;
* a lock file makes a second process wait instead of writing the same file;
* a cached file whose size no longer matches its record (truncated) is fetched again;
* offline (``ROMLIB_OFFLINE=1``, ``HF_HUB_OFFLINE=1``, or no network) with no cached copy raises
  :class:`CheckpointUnavailable`, which names the file, the address and where to put it by hand.

:func:`load_checkpoint` reads a checkpoint with ``torch.load(weights_only=True)`` (a pickle in a
cache directory can run code otherwise), allowing by name only the plain types the official file
needs, and fetches the file again once if it cannot be read (corrupt).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import http.client
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

__all__ = [
    "Checkpoint",
    "REGISTRY",
    "CheckpointUnavailable",
    "cache_dir",
    "download",
    "load_checkpoint",
    "register",
    "safe_load",
    "UnsafeCheckpoint",
]

log = logging.getLogger(__name__)

_GLIDE = "https://openaipublic.blob.core.windows.net/diffusion/dec-2021/"
_ADM = "https://openaipublic.blob.core.windows.net/diffusion/jul-2021/"
_MDETR = "https://zenodo.org/record/4721981/files/"


@dataclass(frozen=True)
class Checkpoint:
    """One downloadable file: where it lives and what we know about it."""

    name: str
    url: str
    description: str = ""
    sha256: str | None = None  # checked after download when known
    approx_mb: int | None = None  # for messages and the README

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[-1].split("?")[0]


REGISTRY: dict[str, Checkpoint] = {}


def register(ckpt: Checkpoint) -> Checkpoint:
    """Add (or replace) a registry entry; returns it."""
    REGISTRY[ckpt.name] = ckpt
    return ckpt


for _c in [
    Checkpoint("glide/base-inpaint", _GLIDE + "base_inpaint.pt", "GLIDE (filtered) 64x64 inpainting", approx_mb=1540),
    Checkpoint("glide/upsample-inpaint", _GLIDE + "upsample_inpaint.pt", "GLIDE (filtered) 64->256 inpainting upsampler", approx_mb=1600),
    Checkpoint("glide/clip-image-enc", _GLIDE + "clip_image_enc.pt", "GLIDE noised CLIP image encoder", approx_mb=346),
    Checkpoint("glide/clip-text-enc", _GLIDE + "clip_text_enc.pt", "GLIDE noised CLIP text encoder", approx_mb=287),
    Checkpoint("adm/256x256-uncond", _ADM + "256x256_diffusion_uncond.pt", "guided-diffusion 256x256 unconditional (Blended Diffusion)", approx_mb=2210),
    Checkpoint("mdetr/phrasecut-eb3", _MDETR + "phrasecut_EB3_checkpoint.pth", "MDETR EfficientNet-B3 fine-tuned on PhraseCut", approx_mb=1830),
    Checkpoint("mdetr/phrasecut-r101", _MDETR + "phrasecut_resnet101_checkpoint.pth", "MDETR ResNet-101 fine-tuned on PhraseCut", approx_mb=2320),
]:
    register(_c)


class CheckpointUnavailable(RuntimeError):
    """A checkpoint is not cached and cannot be downloaded (offline, or the server failed)."""


def cache_dir() -> Path:
    """``$ROMLIB_CACHE``, else ``$XDG_CACHE_HOME/romlib``, else ``~/.cache/romlib``."""
    if os.environ.get("ROMLIB_CACHE"):
        return Path(os.environ["ROMLIB_CACHE"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(xdg) / "romlib"


def _offline() -> bool:
    return any(os.environ.get(v, "").lower() in ("1", "true", "yes") for v in ("ROMLIB_OFFLINE", "HF_HUB_OFFLINE"))


def _resolve(name_or_url: str) -> Checkpoint:
    if name_or_url in REGISTRY:
        return REGISTRY[name_or_url]
    if "://" in name_or_url:
        return Checkpoint(name_or_url, name_or_url)
    raise KeyError(f"unknown checkpoint {name_or_url!r}; known names: {', '.join(sorted(REGISTRY))} (or pass a URL)")


def _sha256(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def _record(path: Path) -> dict | None:
    meta = path.with_name(path.name + ".json")
    try:
        return json.loads(meta.read_text())
    except (OSError, ValueError):
        return None


def _is_complete(path: Path) -> bool:
    """A cached file is trusted when its size matches what was recorded at download."""
    if not path.is_file():
        return False
    rec = _record(path)
    if rec is None:  # put there by hand: trust it (a strict load still checks it)
        return True
    return rec.get("size") == path.stat().st_size


def _unavailable(ckpt: Checkpoint, dest: Path, why: str) -> CheckpointUnavailable:
    size = f" (about {ckpt.approx_mb} MB)" if ckpt.approx_mb else ""
    return CheckpointUnavailable(
        f"checkpoint {ckpt.name!r} is not cached and cannot be downloaded: {why}.\n"
        f"  file: {ckpt.filename}{size}\n  address: {ckpt.url}\n"
        f"  put it by hand at: {dest}\n"
        f"  (the cache directory is {dest.parent}; set ROMLIB_CACHE to use another)"
    )


def _fetch(ckpt: Checkpoint, dest: Path, progress: bool, timeout: float) -> None:
    """Download into ``dest.part`` (resuming it), verify, then rename into place."""
    from tqdm.auto import tqdm

    part = dest.with_name(dest.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    req = urllib.request.Request(ckpt.url, headers={"User-Agent": "romlib"})
    if have:
        req.add_header("Range", f"bytes={have}-")
    try:
        resp = urllib.request.urlopen(req, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # nothing left to fetch, or a stale part: start again
            part.unlink()
            return _fetch(ckpt, dest, progress, timeout)
        raise _unavailable(ckpt, dest, f"the server answered HTTP {e.code}") from e
    except (urllib.error.URLError, OSError) as e:
        raise _unavailable(ckpt, dest, f"no connection ({getattr(e, 'reason', e)})") from e
    with resp:
        if have and resp.status != 206:  # server ignored Range: start from zero
            have = 0
        length = resp.headers.get("Content-Length")
        total = have + int(length) if length is not None else None
        mode = "ab" if have else "wb"
        with open(part, mode) as f, tqdm(
            total=total, initial=have, unit="B", unit_scale=True, unit_divisor=1024,
            desc=ckpt.filename, disable=not progress,
        ) as bar:
            while True:
                try:
                    block = resp.read(1 << 20)
                except (OSError, ValueError, http.client.HTTPException) as e:  # connection cut: keep the part for a resume
                    raise _unavailable(ckpt, dest, f"the download broke off after {f.tell()} bytes ({e}); "
                                       "call again to resume") from e
                if not block:
                    break
                f.write(block)
                bar.update(len(block))
    size = part.stat().st_size
    if total is not None and size != total:
        raise _unavailable(ckpt, dest, f"the download stopped at {size} of {total} bytes; call again to resume")
    digest = _sha256(part)
    if ckpt.sha256 and digest != ckpt.sha256:
        part.unlink()
        raise _unavailable(ckpt, dest, f"sha256 mismatch (got {digest}, expected {ckpt.sha256}); the partial file was removed")
    dest.with_name(dest.name + ".json").write_text(json.dumps({"url": ckpt.url, "size": size, "sha256": digest}))
    os.replace(part, dest)  # atomic on one filesystem


def download(
    name_or_url: str,
    *,
    cache: str | os.PathLike | None = None,
    progress: bool = True,
    force: bool = False,
    timeout: float = 60.0,
) -> Path:
    """Return the local path of a registry checkpoint (or URL), downloading it once.

    Used by :func:`romlib.models.glide.load_model`, :func:`romlib.segment.load_segmenter` and the baselines.
    """
    ckpt = _resolve(name_or_url)
    root = Path(cache) if cache is not None else cache_dir()
    root.mkdir(parents=True, exist_ok=True)
    dest = root / ckpt.filename
    from filelock import FileLock

    with FileLock(str(dest) + ".lock"):
        if force and dest.exists():
            dest.unlink()
        if _is_complete(dest):
            return dest
        if dest.exists():
            log.warning("cached %s is truncated (size differs from its record); fetching it again", dest)
            dest.unlink()
        if _offline():
            raise _unavailable(ckpt, dest, "offline mode (ROMLIB_OFFLINE or HF_HUB_OFFLINE is set)")
        _fetch(ckpt, dest, progress, timeout)
    return dest


# Plain, non-tensor types that official checkpoint files pickle; allowed by name only.
SAFE_GLOBALS: dict[str, Callable[[], Iterable[Any]]] = {
    "argparse.Namespace": lambda: [__import__("argparse").Namespace],
}


class UnsafeCheckpoint(RuntimeError):
    """A checkpoint file that asks to run code when unpickled; it is refused, never executed."""


def _blocked_global(err: Exception) -> str | None:
    """The ``module.name`` a weights-only unpickler refused, or None for any other error.

    torch 2.14 says "Unsupported global: GLOBAL x.y was not an allowed global by default" and
    older releases "unsupported GLOBAL ... blocked"; both name the global after ``GLOBAL``."""
    import re

    text = str(err)
    if "GLOBAL" not in text and "global" not in text.lower():
        return None
    m = re.search(r"GLOBAL\s+([\w.]+)", text)
    return m.group(1) if m else None


def safe_load(path: str | os.PathLike, *, map_location: Any = "cpu", allow: Iterable[str] = ()) -> Any:
    """``torch.load(path, weights_only=True)``: tensors and plain containers only.

    A file that pickles anything else (a class, a function: code that would run on load) raises
    :class:`UnsafeCheckpoint` naming that global; nothing in it is executed and the file is left
    where it is. ``allow`` names extra plain types from :data:`SAFE_GLOBALS`."""
    import pickle

    import torch

    unknown = [a for a in allow if a not in SAFE_GLOBALS]
    if unknown:
        raise ValueError(f"cannot allow {unknown}: only {sorted(SAFE_GLOBALS)} may be unpickled")
    safe = [g for a in allow for g in SAFE_GLOBALS[a]()]
    try:
        with torch.serialization.safe_globals(safe):
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        glob = _blocked_global(e)
        if glob is None:
            raise
        raise UnsafeCheckpoint(f"refused: {path} asks to run code when loaded (GLOBAL {glob}); "
                               "romlib reads weights only and did not execute it") from None


def load_checkpoint(
    name_or_url: str,
    *,
    map_location: Any = "cpu",
    allow: Iterable[str] = (),
    key: str | None = None,
    cache: str | os.PathLike | None = None,
    progress: bool = True,
) -> dict:
    """Download (once) and read a checkpoint with ``torch.load(weights_only=True)``.

    ``allow`` names extra plain types the file pickles (from :data:`SAFE_GLOBALS`, e.g.
    ``"argparse.Namespace"`` for MDETR's saved arguments). ``key`` picks a sub-dict (MDETR keeps
    its weights under ``"model"``). A file that cannot be read is treated as corrupt: it is
    removed and fetched once more.
    """

    for attempt in (0, 1):
        path = download(name_or_url, cache=cache, progress=progress)
        try:
            obj = safe_load(path, map_location=map_location, allow=allow)
            break
        except UnsafeCheckpoint:
            raise  # not corruption: the file pickles code; never executed, never deleted
        except Exception as e:  # a damaged file can fail in many ways inside the unpickler
            if attempt:
                raise RuntimeError(f"{path} is unreadable even after a fresh download: {e}") from e
            log.warning("%s is unreadable (%s); removing it and downloading again", path, e)
            path.unlink(missing_ok=True)
            path.with_name(path.name + ".json").unlink(missing_ok=True)
    if key is not None:
        if not isinstance(obj, dict) or key not in obj:
            raise KeyError(f"{path} has no entry {key!r}; it holds {list(obj)[:10] if isinstance(obj, dict) else type(obj)}")
        obj = obj[key]
    return obj
