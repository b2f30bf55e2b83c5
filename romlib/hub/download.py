"""Fetching files into the cache: mirror, resume, lock, atomic rename, integrity records, ``ensure``."""
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
from pathlib import Path
from typing import Iterable

from .registry import REGISTRY, Checkpoint, CheckpointUnavailable, human_size

log = logging.getLogger("romlib.hub")


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
