"""Downloads and caching of every file the real models need.

Every file romlib can fetch is named in :data:`REGISTRY` with its official address: the GLIDE,
noised-CLIP, ADM and MDETR checkpoints, CLIP ViT-B/16 (OpenAI weights in open_clip's file),
RoBERTa's tokenizer files and the notebooks' example photo. :func:`download` fetches one file
once into the cache and returns its path; :func:`ensure` checks or fetches a whole set before any
model is built, and names *every* file it could not get in one :class:`CheckpointUnavailable`.

* cache directory: ``$ROMLIB_CACHE``, else ``$XDG_CACHE_HOME/romlib``, else ``~/.cache/romlib``;
* ``$ROMLIB_MIRROR`` (an ``http(s)://`` base address or a local folder) replaces every official
  address: each file is fetched by its cache file name from there (a classroom: one machine runs
  ``romlib download`` and serves its cache folder, the others set ``ROMLIB_MIRROR``);
* one tqdm progress bar per file; an interrupted download resumes from its ``.part`` file (HTTP
  ``Range``); a lock file makes a second process wait instead of writing the same file; the
  finished file is renamed into place atomically, so a good file is never replaced by half of one;
* integrity: the size and sha256 of each file are recorded in a ``.json`` beside it at its first
  download; the size is re-checked on every use (a truncated file is fetched again) and
  :func:`verify` (``romlib download --verify``) re-hashes every cached file against its record;
* a cache that holds every file needs no write access (nothing is locked or written to read);
* offline (``ROMLIB_OFFLINE=1``, ``HF_HUB_OFFLINE=1``, or no network) with no cached copy raises
  :class:`CheckpointUnavailable`, which names the file, its size, its address and where to put it.

:func:`load_checkpoint` reads a checkpoint with ``torch.load(weights_only=True, mmap=True)`` (a
pickle in a cache directory can run code otherwise; ``mmap`` keeps a 1.5 GB file from being held
twice in memory). A cached file is removed only when it is really damaged (not a readable archive,
a bad CRC, a size that differs from its record) — never because of a ``MemoryError``, a failed
allocation, a refused pickle global (:class:`UnsafeCheckpoint`) or a read-only cache.
"""
from __future__ import annotations

import hashlib
import http.client
import json
import logging
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

__all__ = [
    "Checkpoint",
    "REGISTRY",
    "GLIDE_BACKEND",
    "BASELINES",
    "EXAMPLES",
    "CheckpointUnavailable",
    "UnsafeCheckpoint",
    "cache_dir",
    "human_size",
    "cached",
    "mirror",
    "source",
    "download",
    "ensure",
    "fetch_checked",
    "load_checkpoint",
    "register",
    "safe_load",
    "verify",
]

log = logging.getLogger(__name__)

_GLIDE = "https://openaipublic.blob.core.windows.net/diffusion/dec-2021/"
_ADM = "https://openaipublic.blob.core.windows.net/diffusion/jul-2021/"
_MDETR = "https://zenodo.org/record/4721981/files/"
_HF = "https://huggingface.co/"


@dataclass(frozen=True)
class Checkpoint:
    """One downloadable file: where it lives and what we know about it.

    ``file``: the name in the cache and on a mirror (default: the last part of ``url``)."""

    name: str
    url: str
    description: str = ""
    sha256: str | None = None  # checked after download when known
    approx_mb: float | None = None  # for messages and the README
    file: str | None = None

    @property
    def filename(self) -> str:
        return self.file or self.url.rsplit("/", 1)[-1].split("?")[0]

    @property
    def size_text(self) -> str:
        return f"about {human_size(self.approx_mb * 1e6)}" if self.approx_mb else "size unknown"


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
    # the file open_clip itself fetches for ViT-B-16 / "openai": OpenAI's weights as an open_clip state dict
    Checkpoint("clip/vit-b-16-openai", _HF + "timm/vit_base_patch16_clip_224.openai/resolve/main/open_clip_model.safetensors",
               "CLIP ViT-B/16, OpenAI weights (open_clip safetensors)", approx_mb=599, file="clip_vit_b16_openai.safetensors"),
    Checkpoint("roberta/vocab", _HF + "FacebookAI/roberta-base/resolve/main/vocab.json",
               "RoBERTa-base BPE vocabulary (MDETR's text encoder)", approx_mb=0.9, file="roberta-base-vocab.json"),
    Checkpoint("roberta/merges", _HF + "FacebookAI/roberta-base/resolve/main/merges.txt",
               "RoBERTa-base BPE merges (MDETR's text encoder)", approx_mb=0.46, file="roberta-base-merges.txt"),
    Checkpoint("example/coco-39769", "http://images.cocodataset.org/val2017/000000039769.jpg",
               "COCO val2017 #39769, two cats on a couch (the notebooks' example)", approx_mb=0.17),
]:
    register(_c)

#: What the ``glide`` backend reads, in loading order.
GLIDE_BACKEND = ("mdetr/phrasecut-eb3", "roberta/vocab", "roberta/merges", "glide/base-inpaint",
                 "glide/upsample-inpaint", "clip/vit-b-16-openai")
#: What the CLIP-guided GLIDE and Blended Diffusion baselines add.
BASELINES = ("glide/clip-image-enc", "glide/clip-text-enc", "adm/256x256-uncond")
#: The notebooks' example input.
EXAMPLES = ("example/coco-39769",)


class CheckpointUnavailable(RuntimeError):
    """Files that are not cached and cannot be fetched (offline, no mirror copy, the server failed).

    ``missing``: one ``(Checkpoint, destination, reason)`` per file."""

    def __init__(self, message: str, missing: Iterable[tuple] = ()):
        super().__init__(message)
        self.missing = list(missing)


class UnsafeCheckpoint(RuntimeError):
    """A checkpoint file that asks to run code when unpickled; it is refused, never executed."""


def human_size(n: float) -> str:
    """``1.5 GB``, ``600.0 MB``, ``170.0 kB``: a size in bytes for messages and tables."""
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} B"


def cache_dir() -> Path:
    """``$ROMLIB_CACHE``, else ``$XDG_CACHE_HOME/romlib``, else ``~/.cache/romlib``."""
    if os.environ.get("ROMLIB_CACHE"):
        return Path(os.environ["ROMLIB_CACHE"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(xdg) / "romlib"


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
    raise KeyError(f"unknown checkpoint {name_or_url!r}; known names: {', '.join(sorted(REGISTRY))} (or pass a URL)")


def _sha256(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def _record_path(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def _record(path: Path) -> dict | None:
    try:
        rec = json.loads(_record_path(path).read_text())
    except (OSError, ValueError):
        return None
    return rec if isinstance(rec, dict) else None


def _write_record(path: Path, rec: dict) -> None:
    tmp = path.with_name(path.name + ".json.tmp")
    tmp.write_text(json.dumps(rec, indent=1))
    os.replace(tmp, _record_path(path))


def _size_problem(path: Path) -> str | None:
    """Why a cached file is not whole (its size differs from its record), or None."""
    rec = _record(path)
    if rec is None or not isinstance(rec.get("size"), int):
        return None  # put there by hand: trusted (a strict load still checks it)
    size = path.stat().st_size
    if size != rec["size"]:
        return f"its size {size} differs from the {rec['size']} bytes recorded at download"
    return None


def _is_complete(path: Path) -> bool:
    """A cached file is trusted when it exists and its size matches what was recorded at download."""
    return path.is_file() and _size_problem(path) is None


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


def _fetch(ckpt: Checkpoint, dest: Path, progress: bool, timeout: float) -> None:
    """Fetch into ``dest.part`` (resuming it), verify, record, then rename into place."""
    from tqdm.auto import tqdm

    src = source(ckpt)
    via = f" from the mirror {mirror()}" if mirror() else ""
    part = dest.with_name(dest.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    digest = hashlib.sha256()  # computed while the bytes arrive (a resumed part is hashed first)
    if not _is_remote(src):  # a local folder (ROMLIB_MIRROR=/path) or a file:// address
        path = Path(src[7:]) if src.startswith("file://") else Path(src)
        if not path.is_file():
            raise _unavailable(ckpt, dest, f"the mirror folder has no {ckpt.filename}" if mirror() else f"{path} does not exist")
        total = path.stat().st_size
        if have > total:
            have = 0
        _hash_part(part, have, digest)
        with open(path, "rb") as fi, open(part, "ab" if have else "wb") as fo, tqdm(
                total=total, initial=have, unit="B", unit_scale=True, unit_divisor=1024, desc=ckpt.filename,
                disable=not progress) as bar:
            fi.seek(have)
            for block in iter(lambda: fi.read(1 << 22), b""):
                fo.write(block)
                digest.update(block)
                bar.update(len(block))
    else:
        req = urllib.request.Request(src, headers={"User-Agent": "romlib"})
        if have:
            req.add_header("Range", f"bytes={have}-")
        try:
            resp = urllib.request.urlopen(req, timeout=timeout)
        except urllib.error.HTTPError as e:
            if e.code == 416 and have:  # nothing left to fetch, or a stale part: start again
                part.unlink()
                return _fetch(ckpt, dest, progress, timeout)
            what = f"the mirror has no {ckpt.filename} (HTTP 404)" if e.code == 404 and mirror() else f"the server answered HTTP {e.code}{via}"
            raise _unavailable(ckpt, dest, what) from e
        except (urllib.error.URLError, OSError) as e:
            raise _unavailable(ckpt, dest, f"no connection{via} ({getattr(e, 'reason', e)})") from e
        with resp:
            if have and resp.status != 206:  # server ignored Range: start from zero
                have = 0
            elif have and not resp.headers.get("Content-Range", "").startswith(f"bytes {have}-"):
                resp.close()  # the server answered another range than the one asked: start again
                part.unlink()
                return _fetch(ckpt, dest, progress, timeout)
            _hash_part(part, have, digest)
            length = resp.headers.get("Content-Length")
            total = have + int(length) if length is not None else None
            with open(part, "ab" if have else "wb") as f, tqdm(
                total=total, initial=have, unit="B", unit_scale=True, unit_divisor=1024,
                desc=ckpt.filename, disable=not progress,
            ) as bar:
                while True:
                    try:
                        block = resp.read(1 << 20)
                    except (OSError, ValueError, http.client.HTTPException) as e:  # connection cut: keep the part
                        raise _unavailable(ckpt, dest, f"the download broke off after {f.tell()} bytes ({e}); "
                                           "call again to resume") from e
                    if not block:
                        break
                    f.write(block)
                    digest.update(block)
                    bar.update(len(block))
    size = part.stat().st_size
    if total is not None and size != total:
        raise _unavailable(ckpt, dest, f"the download stopped at {size} of {total} bytes; call again to resume")
    digest = digest.hexdigest()
    if ckpt.sha256 and digest != ckpt.sha256:
        part.unlink()
        raise _unavailable(ckpt, dest, f"sha256 mismatch (got {digest}, expected {ckpt.sha256}); the partial file was removed")
    _write_record(dest, {"name": ckpt.name, "source": src, "size": size, "sha256": digest,
                         "fetched": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    os.replace(part, dest)  # atomic on one filesystem: a good file is never replaced by half of one


def _hash_part(part: Path, have: int, digest) -> None:
    """Feed the first ``have`` bytes of a resumed ``.part`` file to ``digest``."""
    if not have:
        return
    with open(part, "rb") as f:
        left = have
        while left:
            block = f.read(min(left, 1 << 20))
            if not block:
                raise OSError(f"{part} shrank while it was being resumed")
            digest.update(block)
            left -= len(block)


def _writable(root: Path) -> str | None:
    """Why files cannot be written into ``root``, or None."""
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        return f"the cache directory {root} cannot be created ({e.strerror or e})"
    if not os.access(root, os.W_OK | os.X_OK):
        return f"the cache directory {root} is read-only"
    return None


def download(
    name_or_url: str,
    *,
    cache: str | os.PathLike | None = None,
    progress: bool = True,
    force: bool = False,
    timeout: float = 60.0,
) -> Path:
    """Return the local path of a registry file (or URL), fetching it once (from ``$ROMLIB_MIRROR`` when set).

    A cached file whose size matches its record is returned without any lock or write (a read-only
    cache works). ``force`` fetches it again; the old copy is replaced only once the new one is whole.
    Used by :func:`ensure`, :func:`load_checkpoint` and the model loaders.
    """
    ckpt = _resolve(name_or_url)
    root = Path(cache) if cache is not None else cache_dir()
    dest = root / ckpt.filename
    if not force and _is_complete(dest):
        return dest
    problem = _writable(root)
    if problem:
        if dest.is_file() and not force:
            raise _unavailable(ckpt, dest, f"the cached copy is damaged ({_size_problem(dest)}) and {problem}")
        raise _unavailable(ckpt, dest, problem)
    from filelock import FileLock

    with FileLock(str(dest) + ".lock"):
        if not force and _is_complete(dest):  # another process finished it while we waited
            return dest
        if dest.is_file() and not force:
            log.warning("cached %s is damaged (%s); fetching it again", dest, _size_problem(dest))
        if _offline() and _is_remote(source(ckpt)):
            raise _unavailable(ckpt, dest, "offline mode (ROMLIB_OFFLINE or HF_HUB_OFFLINE is set)")
        _fetch(ckpt, dest, progress, timeout)
    return dest


def cached(name: str, *, cache: str | os.PathLike | None = None) -> Path | None:
    """The cached path of a registry file when it is there and whole (size as recorded), else None. Never fetches."""
    ckpt = _resolve(name)
    dest = (Path(cache) if cache is not None else cache_dir()) / ckpt.filename
    return dest if _is_complete(dest) else None


def _address(src: str) -> tuple[str, int] | None:
    u = urllib.parse.urlparse(src)
    if u.scheme not in ("http", "https") or not u.hostname:
        return None
    return u.hostname, u.port or (443 if u.scheme == "https" else 80)


def _unreachable(sources: Iterable[str], timeout: float = 5.0) -> dict[tuple[str, int], str]:
    """``{(host, port): reason}`` for the servers of ``sources`` a TCP connection cannot reach within
    ``timeout`` (probed in parallel, so an offline machine learns it in seconds, not minutes).
    Skipped behind a proxy, where only the proxy is reachable."""
    import socket
    from concurrent.futures import ThreadPoolExecutor

    if urllib.request.getproxies():
        return {}
    servers = {a for a in map(_address, sources) if a is not None}

    def probe(address):
        try:
            socket.create_connection(address, timeout=timeout).close()
            return address, None
        except OSError as e:
            return address, f"cannot reach {address[0]}:{address[1]} ({e.strerror or e})"

    if not servers:
        return {}
    with ThreadPoolExecutor(len(servers)) as pool:
        return {a: why for a, why in pool.map(probe, servers) if why}


def ensure(names: Iterable[str], *, cache: str | os.PathLike | None = None, progress: bool = True,
           timeout: float = 60.0) -> dict[str, Path]:
    """Every file of ``names`` cached (fetching what is missing), or one :class:`CheckpointUnavailable`
    that lists **every** file that is missing with its size, address and destination.

    Call it before building any model: offline, the answer comes at once (no network is tried);
    with a network that cannot reach a host, after one short probe of each host."""
    root = Path(cache) if cache is not None else cache_dir()
    paths: dict[str, Path] = {}
    todo: list[Checkpoint] = []
    for n in names:
        ckpt = _resolve(n)
        dest = root / ckpt.filename
        if _is_complete(dest):
            paths[n] = dest
        else:
            todo.append(ckpt)
    failures: list[tuple] = []
    if todo:
        remote = [c for c in todo if _is_remote(source(c))]
        if _offline() and remote:
            failures = [(c, root / c.filename, "offline mode (ROMLIB_OFFLINE or HF_HUB_OFFLINE is set)") for c in remote]
            todo = [c for c in todo if c not in remote]
        dead = _unreachable([source(c) for c in todo])
        for c in todo:
            address = _address(source(c))
            if address in dead:
                failures.append((c, root / c.filename, dead[address]))
                continue
            try:
                paths[c.name] = download(c.name, cache=root, progress=progress, timeout=timeout)
            except CheckpointUnavailable as e:
                failures.extend(e.missing or [(c, root / c.filename, str(e))])
    if failures:
        total = sum(c.approx_mb or 0 for c, _, _ in failures)
        lines = "".join(_missing_text(c, dest, why) for c, dest, why in failures)
        raise CheckpointUnavailable(
            f"{len(failures)} file(s) needed are not cached and cannot be fetched (about {human_size(total * 1e6)}):\n"
            f"{lines}Fetch them where there is a network with `romlib download` and copy the cache folder "
            f"({root}), or set ROMLIB_MIRROR to a folder or http(s) address that holds them.",
            missing=failures)
    return paths


# ----------------------------------------------------------------------------------------- checks
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


# ----------------------------------------------------------------------------------------- loading
# Plain, non-tensor types that official checkpoint files pickle; allowed by name only.
SAFE_GLOBALS: dict[str, Callable[[], Iterable[Any]]] = {
    "argparse.Namespace": lambda: [__import__("argparse").Namespace],
}


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


def safe_load(path: str | os.PathLike, *, map_location: Any = "cpu", allow: Iterable[str] = (), mmap: bool = True) -> Any:
    """``torch.load(path, weights_only=True)``: tensors and plain containers only.

    A file that pickles anything else (a class, a function: code that would run on load) raises
    :class:`UnsafeCheckpoint` naming that global; nothing in it is executed and the file is left
    where it is. ``allow`` names extra plain types from :data:`SAFE_GLOBALS`. ``mmap``: map the
    tensors from the file instead of reading them (torch's zip format; legacy files are read)."""
    import pickle
    import zipfile

    import torch

    unknown = [a for a in allow if a not in SAFE_GLOBALS]
    if unknown:
        raise ValueError(f"cannot allow {unknown}: only {sorted(SAFE_GLOBALS)} may be unpickled")
    safe = [g for a in allow for g in SAFE_GLOBALS[a]()]
    mmap = bool(mmap) and zipfile.is_zipfile(path)
    try:
        with torch.serialization.safe_globals(safe):
            return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
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
    mmap: bool = True,
) -> dict:
    """Download (once) and read a checkpoint with ``torch.load(weights_only=True, mmap=mmap)``.

    ``allow`` names extra plain types the file pickles (from :data:`SAFE_GLOBALS`, e.g.
    ``"argparse.Namespace"`` for MDETR's saved arguments). ``key`` picks a sub-dict (MDETR keeps
    its weights under ``"model"``). With ``mmap`` the tensors stay backed by the file, so loading
    them into a model with ``load_state_dict(..., assign=True)`` holds the weights once.

    A file that fails to load is removed and fetched once more only when it is really damaged
    (:func:`_damage`); any other failure (memory, a refused global, a read-only cache) is raised
    with the file kept and named.
    """
    for attempt in (0, 1):
        path = download(name_or_url, cache=cache, progress=progress)
        try:
            obj = safe_load(path, map_location=map_location, allow=allow, mmap=mmap)
            break
        except UnsafeCheckpoint:
            raise  # not corruption: the file pickles code; never executed, never deleted
        except MemoryError as e:
            raise MemoryError(f"not enough memory to load {path} ({human_size(path.stat().st_size)}); the file is "
                              "intact and was kept: free memory (close other notebooks) and try again") from e
        except Exception as e:  # a damaged file can fail in many ways inside the unpickler
            why = _damage(path, e)
            if why is None:
                if hasattr(e, "add_note"):
                    e.add_note(f"romlib: {path} looks intact and was kept in the cache")
                raise
            if attempt:
                raise CheckpointUnavailable(f"{path} is damaged even after a fresh download ({why})") from e
            _discard(path, why)
    if key is not None:
        if not isinstance(obj, dict) or key not in obj:
            raise KeyError(f"{path} has no entry {key!r}; it holds {list(obj)[:10] if isinstance(obj, dict) else type(obj)}")
        obj = obj[key]
    return obj
