"""Fetching files into the cache: mirror, resume, lock, checks before the record, atomic rename, ``ensure``.

A download becomes a cached file only after it passed every check: its size (the server's
``Content-Length``, the registry's size where known), its format and, for checkpoints, its manifest
(:func:`romlib.hub.formats.file_problem`), and the registry's sha256 where known. Its size and
sha256 are then recorded beside it (``<file>.json``). A file that fails is moved aside
(``<file>.bad-<time>``), never deleted, and the error says what to do.

A ``.part`` file is resumed only when the expected total size is known (the registry's size, or
the total the server announced when the part was begun, kept in ``<file>.part.meta`` with its
source) and the server answers the ``Range`` request with 206 and exactly that total; otherwise
the download starts again from zero, and the log says why."""
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

from .formats import NOUNS, file_problem
from .registry import REGISTRY, Checkpoint, CheckpointUnavailable, UnknownCheckpoint, human_size

log = logging.getLogger("romlib.hub")


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


def check_cache(cache: str | os.PathLike | None = None) -> Path:
    """The cache folder (``cache`` or :func:`cache_dir`), checked: a file or a dangling link raises
    :class:`NotADirectoryError`, an unreadable folder :class:`PermissionError`, each saying what to do.
    A folder that does not exist yet is fine."""
    root = Path(cache).expanduser() if cache is not None else cache_dir()
    problem = _cache_problem(root)
    if problem:
        raise problem[0](problem[1])
    return root


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


def _move_aside(path: Path, dest: Path | None = None) -> Path:
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
    rec = _record_path(path)
    if rec.is_file():
        os.replace(rec, bad.with_name(bad.name + ".record"))
    return bad


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


def _usable(dest: Path, ckpt: Checkpoint, *, fix: bool = True) -> bool:
    """``dest`` is cached, whole and checked. A record written before romlib checked formats (it has no
    ``format``) gets the check now, once: a good file's record is completed; a bad one (an HTML page an
    older romlib kept) is moved aside with ``fix`` (so it is fetched again), else only reported unusable."""
    if not _is_complete(dest):
        return False
    rec = _record(dest)
    if rec is None or "format" in rec:
        return True  # checked at download, or placed by hand (trusted; a strict load still checks it)
    problem = file_problem(dest, ckpt)
    if problem is None:
        try:
            _write_record(dest, {**rec, "format": ckpt.kind, "manifest": ckpt.manifest})
        except OSError:
            pass  # a read-only cache: checked again next time (a fraction of a second)
        return True
    if fix:
        try:
            bad = _move_aside(dest)
        except OSError as e:
            raise _unavailable(ckpt, dest, f"the cached copy is bad ({problem}) and cannot be moved aside "
                               f"({e.strerror or e}); replace it by hand") from None
        log.warning("%s was kept by an older romlib but %s; moved it aside to %s, fetching it again", dest, problem, bad.name)
    return False


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


def _part_meta(part: Path) -> Path:
    return part.with_name(part.name + ".meta")


def _resume_from(part: Path, src: str, expected: int | None) -> tuple[int, int | None]:
    """``(bytes of part to keep, expected total)`` for resuming ``part`` from ``src``: 0 (start again,
    logged) unless the expected total is known — ``expected`` (the registry's or a local file's size),
    else the one recorded when the part was begun from the same source — and the part is shorter."""
    if not part.is_file():
        return 0, expected
    have = part.stat().st_size
    try:
        meta = json.loads(_part_meta(part).read_text())
    except (OSError, ValueError):
        meta = None
    meta = meta if isinstance(meta, dict) else {}
    if meta and meta.get("source") != src:
        log.warning("%s: begun from %s, now fetching from %s; starting again from zero", part, meta.get("source"), src)
        return 0, expected
    total = expected if expected is not None else meta.get("total") if isinstance(meta.get("total"), int) else None
    if total is None:
        log.warning("%s (%d bytes): nothing records the total size it was begun for; starting again from zero", part, have)
        return 0, None
    if have >= total:
        log.warning("%s holds %d bytes, not fewer than the %d expected; starting again from zero", part, have, total)
        return 0, total
    return have, total


def _fetch(ckpt: Checkpoint, dest: Path, progress: bool, timeout: float) -> None:
    """Fetch into ``dest.part`` (resuming it when that is safe), check, record, then rename into place."""
    src = source(ckpt)
    part = dest.with_name(dest.name + ".part")
    if not _is_remote(src):  # a local folder (ROMLIB_MIRROR=/path) or a file:// address
        path = Path(src[7:]) if src.startswith("file://") else Path(src)
        if not path.is_file():
            raise _unavailable(ckpt, dest, f"the mirror folder has no {ckpt.filename}" if mirror() else f"{path} does not exist")
        total = path.stat().st_size
        if ckpt.size is not None and total != ckpt.size:
            raise _unavailable(ckpt, dest, f"{path} has {total} bytes, romlib expects exactly {ckpt.size}: another file "
                               "(check the mirror folder)")
        have, _ = _resume_from(part, src, total)
        digest = _begin(part, have, src, total)
        with open(path, "rb") as fi:
            fi.seek(have)
            _copy(iter(lambda: fi.read(1 << 22), b""), part, have, total, digest, ckpt, progress)
    else:
        have, expected = _resume_from(part, src, ckpt.size)
        resp, have, total = _open(ckpt, dest, src, have, expected, timeout)
        digest = _begin(part, have, src, total)
        with resp:
            _copy(_blocks(resp, part, ckpt, dest, total), part, have, total, digest, ckpt, progress)
    _accept(ckpt, dest, part, src, total, digest.hexdigest())


def _open(ckpt: Checkpoint, dest: Path, src: str, have: int, expected: int | None, timeout: float):
    """The server's response for the rest of ``src`` (from ``have``), ``have`` (0 if the download
    starts again) and the total size the server announces (None when it does not say)."""
    via = f" from the mirror {mirror()}" if mirror() else ""
    req = urllib.request.Request(src, headers={"User-Agent": "romlib"})
    if have:
        req.add_header("Range", f"bytes={have}-")
    try:
        resp = urllib.request.urlopen(req, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # the server has fewer bytes than the part: start again
            log.warning("%s: the server refused the Range bytes=%d- (HTTP 416); starting again from zero", ckpt.filename, have)
            return _open(ckpt, dest, src, 0, expected, timeout)
        what = f"the mirror has no {ckpt.filename} (HTTP 404)" if e.code == 404 and mirror() else f"the server answered HTTP {e.code}{via}"
        raise _unavailable(ckpt, dest, what) from e
    except (urllib.error.URLError, OSError) as e:
        raise _unavailable(ckpt, dest, f"no connection{via} ({getattr(e, 'reason', e)})") from e
    if have:
        rng = resp.headers.get("Content-Range", "")
        if resp.status != 206:
            log.warning("%s: the server ignored the Range request (HTTP %d, the whole file): starting again from zero",
                        ckpt.filename, resp.status)
            have = 0
        elif _content_range(rng) != (have, expected):
            resp.close()
            log.warning("%s: the server answered the Range bytes=%d- with Content-Range %r, not bytes %d-…/%d: "
                        "starting again from zero", ckpt.filename, have, rng, have, expected)
            return _open(ckpt, dest, src, 0, expected, timeout)
    length = resp.headers.get("Content-Length")
    total = have + int(length) if length is not None and length.isdigit() else None
    if ckpt.size is not None and total is not None and total != ckpt.size:
        resp.close()
        raise _unavailable(ckpt, dest, f"the server announces {total} bytes (Content-Length){via}, romlib expects exactly "
                           f"{ckpt.size}: another file or an error page (check the mirror or proxy); nothing was written")
    return resp, have, total


def _content_range(value: str) -> tuple[int, int | None] | None:
    """``(first byte, total)`` of a ``Content-Range: bytes a-b/total`` header (total None for ``*``), or None."""
    import re

    m = re.fullmatch(r"\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*", value or "")
    if not m:
        return None
    return int(m[1]), None if m[3] == "*" else int(m[3])


def _begin(part: Path, have: int, src: str, total: int | None):
    """A sha256 of the kept first ``have`` bytes of ``part`` (a fresh part is emptied), with the part's
    source and expected total written to ``<part>.meta`` so that a later call knows what it may resume."""
    digest = hashlib.sha256()  # computed while the bytes arrive (a resumed part is hashed first)
    if have:
        _hash_part(part, have, digest)
    else:
        part.write_bytes(b"")
        tmp = part.with_name(part.name + ".meta.tmp")
        tmp.write_text(json.dumps({"source": src, "total": total}))
        os.replace(tmp, _part_meta(part))
    return digest


def _blocks(resp, part: Path, ckpt: Checkpoint, dest: Path, total: int | None):
    """The response body in blocks; a connection cut keeps the part (the next call resumes it)."""
    while True:
        try:
            block = resp.read(1 << 20)
        except (OSError, ValueError, http.client.HTTPException) as e:
            got = part.stat().st_size
            of = f" of the {total} bytes the server announced" if total is not None else " bytes"
            raise _unavailable(ckpt, dest, f"the download broke off at {got}{of} ({type(e).__name__}); "
                               "call again to resume") from e
        if not block:
            return
        yield block


def _copy(blocks, part: Path, have: int, total: int | None, digest, ckpt: Checkpoint, progress: bool) -> None:
    from tqdm.auto import tqdm

    with open(part, "r+b") as f, tqdm(total=total, initial=have, unit="B", unit_scale=True, unit_divisor=1024,
                                      desc=ckpt.filename, disable=not progress) as bar:
        f.seek(have)
        f.truncate()
        for block in blocks:
            f.write(block)
            digest.update(block)
            bar.update(len(block))


def _accept(ckpt: Checkpoint, dest: Path, part: Path, src: str, total: int | None, digest: str) -> None:
    """Check the whole ``part`` (size, format, manifest, registry sha256), record it and rename it into place;
    a part that fails is moved aside and named in the error."""
    size = part.stat().st_size
    if total is not None and size != total:
        raise _unavailable(ckpt, dest, f"the download stopped at {size} of the {total} bytes the server announced "
                           "(Content-Length); call again to resume")
    if ckpt.size is not None and size != ckpt.size:
        _refuse(ckpt, dest, part, src, f"it has {size} bytes, romlib expects exactly {ckpt.size}")
    problem = file_problem(part, ckpt)
    if problem:
        _refuse(ckpt, dest, part, src, problem)
    if ckpt.sha256 and digest != ckpt.sha256:
        _refuse(ckpt, dest, part, src, f"its sha256 {digest} differs from the registry's {ckpt.sha256}")
    _write_record(dest, {"name": ckpt.name, "source": src, "size": size, "sha256": digest, "format": ckpt.kind,
                         "manifest": ckpt.manifest, "fetched": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    os.replace(part, dest)  # atomic on one filesystem: a good file is never replaced by half of one
    _part_meta(part).unlink(missing_ok=True)


def _bad_file_advice(ckpt: Checkpoint, src: str | None = None) -> str:
    """What to do about a bad copy of ``ckpt``: fetch it again, then suspect whoever served it."""
    src = src or source(ckpt)
    served = f"the mirror ({mirror()})" if mirror() else f"a proxy between you and {urllib.parse.urlparse(src).netloc or src}"
    return (f"run `romlib download {ckpt.name}` again; if the copy is bad again, {served} serves something other "
            "than the file: check it")


def _refuse(ckpt: Checkpoint, dest: Path, part: Path, src: str, why: str):
    bad = _move_aside(part, dest)
    _part_meta(part).unlink(missing_ok=True)
    log.info("%s from %s is bad (%s); moved aside to %s", ckpt.filename, src, why, bad)  # the error says it all
    raise _unavailable(ckpt, dest, f"the downloaded {ckpt.filename} is not {NOUNS.get(ckpt.kind, NOUNS[None])} romlib "
                       f"can use: {why}. It was moved aside to {bad} (not deleted); {_bad_file_advice(ckpt, src)}")


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
    if not force and _usable(dest, ckpt):
        return dest
    if dest.exists() and not dest.is_file():
        raise _unavailable(ckpt, dest, f"{dest} exists and is not a file (a folder?): move it out of the cache")
    problem = _writable(root)
    if problem:
        if dest.is_file() and not force:
            raise _unavailable(ckpt, dest, f"the cached copy is damaged ({_size_problem(dest)}) and {problem}")
        raise _unavailable(ckpt, dest, problem)
    from filelock import FileLock

    with FileLock(str(dest) + ".lock"):
        if not force and _usable(dest, ckpt):  # another process finished it while we waited
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
    return dest if _usable(dest, ckpt, fix=False) else None


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
        if _usable(dest, ckpt, fix=False):  # a bad one is moved aside by download(), its error collected below
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
