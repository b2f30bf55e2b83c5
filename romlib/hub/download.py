"""Getting files into the cache: ``download`` (one file, under a lock, retried when the transfer broke off),
``cached``, ``ensure`` (a whole set, every missing file named at once). The fetching itself, with its checks, is
:mod:`romlib.hub.fetch`."""
from __future__ import annotations

import logging
import os
import socket
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterable

from filelock import FileLock

from .cache import cache_dir, is_complete, move_aside, odd_entry, record, size_problem, writable, write_record
from .fetch import BrokenOff, fetch
from .formats import CHECKS, file_problem
from .registry import (BASELINES, CLIPSEG, EXAMPLES, GLIDE_BACKEND, MDETR, SD_BACKEND, Checkpoint, CheckpointUnavailable,
                       human_size)
from .sources import is_remote, missing_text, offline, resolve, source, unavailable

__all__ = ["download", "cached", "ensure", "usable", "download_command", "RETRIES"]

log = logging.getLogger("romlib.hub")

#: How many times a transfer that broke off (cut, stalled) is tried again, resuming when it can, before the error.
RETRIES = 2


def usable(dest: Path, ckpt: Checkpoint, *, fix: bool = True) -> bool:
    """``dest`` is cached, whole and checked. A record written by an older romlib's checks (no ``format``, or a
    ``checks`` below :data:`romlib.hub.formats.CHECKS`: names and shapes but not values) gets today's check now,
    once: a good file's record is completed; a bad one (an HTML page, NaN weights an older romlib kept) is moved
    aside with ``fix`` (so it is fetched again), else only reported unusable."""
    if not is_complete(dest):
        return False
    rec = record(dest)
    if rec is None or ("format" in rec and rec.get("checks", 1) >= CHECKS):
        return True  # checked at download, or placed by hand (trusted; a strict load still checks it)
    problem = file_problem(dest, ckpt)
    if problem is None:
        try:
            write_record(dest, {**rec, "format": ckpt.kind, "manifest": ckpt.manifest, "checks": CHECKS})
        except OSError:
            pass  # a read-only cache: checked again next time
        return True
    if fix:
        try:
            bad = move_aside(dest)
        except OSError as e:
            raise unavailable(ckpt, dest, f"the cached copy is bad ({problem}) and cannot be moved aside "
                              f"({e.strerror or e}); replace it by hand") from None
        log.warning("%s was kept by an older romlib but %s; moved it aside to %s, fetching it again", dest, problem, bad.name)
    return False


def download(
    name_or_url: str,
    *,
    cache: str | os.PathLike | None = None,
    progress: bool = True,
    force: bool = False,
    timeout: float = 60.0,
    deadline: float | None = None,
    sha256: str | None = None,
) -> Path:
    """Return the local path of a registry file (or URL), fetching it once (from ``$ROMLIB_MIRROR`` when set).

    A cached file whose size matches its record is returned without any lock or write (a read-only
    cache works). ``force`` fetches it again; the old copy is replaced only once the new one is whole.
    ``timeout``: seconds in which a transfer must bring at least 64 kB (else it stalled); ``deadline``: seconds for
    the whole transfer (default :func:`romlib.hub.fetch.default_deadline`); a transfer that broke off (cut, stalled)
    is tried :data:`RETRIES` more times, resuming when it can, then named in the error. ``sha256``: the hash the
    file must have (for an address whose server sends no length). Used by :func:`ensure`,
    :func:`load_checkpoint` and the model loaders.
    """
    if sha256 is not None and not (len(sha256) == 64 and all(c in "0123456789abcdefABCDEF" for c in sha256)):
        raise ValueError(f"sha256={sha256!r} is not a SHA-256 (64 hexadecimal digits)")
    ckpt = resolve(name_or_url)
    root = Path(cache) if cache is not None else cache_dir()
    dest = root / ckpt.filename
    if not force and usable(dest, ckpt):
        return dest
    odd = odd_entry(dest)
    if odd:
        raise unavailable(ckpt, dest, odd)
    problem = writable(root)
    if problem:
        if dest.is_file() and not force:
            raise unavailable(ckpt, dest, f"the cached copy is damaged ({size_problem(dest)}) and {problem}")
        raise unavailable(ckpt, dest, problem)
    with FileLock(str(dest) + ".lock"):
        if not force and usable(dest, ckpt):  # another process finished it while we waited
            return dest
        if dest.is_file() and not force:
            log.warning("cached %s is damaged (%s); fetching it again", dest, size_problem(dest))
        if offline() and is_remote(source(ckpt)):
            raise unavailable(ckpt, dest, "offline mode (ROMLIB_OFFLINE or HF_HUB_OFFLINE is set)")
        for attempt in range(RETRIES + 1):
            try:
                fetch(ckpt, dest, progress=progress, stall=timeout, deadline=deadline, sha256=sha256)
                break
            except BrokenOff as e:
                if attempt == RETRIES or not e.retry:
                    if attempt:
                        raise BrokenOff(ckpt, dest, f"{e.why} (tried {attempt + 1} times)", resumable=e.resumable,
                                        retry=False) from None
                    raise
                log.warning("%s: %s; trying again (%d of %d)%s", ckpt.filename, e.why, attempt + 1, RETRIES,
                            ", resuming" if e.resumable else "")
    return dest


def cached(name: str, *, cache: str | os.PathLike | None = None) -> Path | None:
    """The cached path of a registry file when it is there and whole (size as recorded), else None. Never fetches."""
    ckpt = resolve(name)
    dest = (Path(cache) if cache is not None else cache_dir()) / ckpt.filename
    return dest if usable(dest, ckpt, fix=False) else None


def _address(src: str) -> tuple[str, int] | None:
    u = urllib.parse.urlparse(src)
    try:
        port = u.port
    except ValueError:  # a port out of range: download() names it
        return None
    if u.scheme not in ("http", "https") or not u.hostname:
        return None
    return u.hostname, port or (443 if u.scheme == "https" else 80)


def _unreachable(sources: Iterable[str], timeout: float = 5.0) -> dict[tuple[str, int], str]:
    """``{(host, port): reason}`` for the servers of ``sources`` a TCP connection cannot reach within
    ``timeout`` (probed in parallel, so an offline machine learns it in seconds, not minutes).
    Skipped behind a proxy, where only the proxy is reachable."""
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
        ckpt = resolve(n)
        dest = root / ckpt.filename
        if usable(dest, ckpt, fix=False):  # a bad one is moved aside by download(), its error collected below
            paths[n] = dest
        else:
            todo.append(ckpt)
    failures: list[tuple] = []
    if todo:
        remote = [c for c in todo if is_remote(source(c))]
        if offline() and remote:
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
        lines = "".join(missing_text(c, dest, why) for c, dest, why in failures)
        raise CheckpointUnavailable(
            f"{len(failures)} file(s) needed are not cached and cannot be fetched (about {human_size(total * 1e6)}):\n"
            f"{lines}Fetch them where there is a network with {download_command(c.name for c, _, _ in failures)} "
            f"and copy the cache folder "
            f"({root}), or set ROMLIB_MIRROR to a folder or http(s) address that holds them.",
            missing=failures)
    return paths


def download_command(names: Iterable[str]) -> str:
    """The ``romlib download`` command(s) that fetch these registry ``names`` (the offline error's advice), without
    a backend's worth of files more than needed: ``romlib download`` with ``--baselines`` / ``--clipseg`` for the glide
    backend's files and what it adds, ``--sd`` for the sd backend's (CLIPSeg included), the names themselves for the
    rest (e.g. MDETR's files for ``segmenter="mdetr"`` on the sd backend)."""
    left = list(dict.fromkeys(names))
    commands: list[str] = []
    if any(n in SD_BACKEND and n not in GLIDE_BACKEND for n in left):
        commands.append("romlib download --sd")
        left = [n for n in left if n not in {*SD_BACKEND, *CLIPSEG, *EXAMPLES}]
    glide_command = {*GLIDE_BACKEND, *EXAMPLES, *BASELINES, *CLIPSEG}
    if left and ((not commands and all(n in glide_command for n in left))
                 or any(n in GLIDE_BACKEND and n not in MDETR for n in left)):
        flags = "".join(f" --{flag}" for flag, group in (("baselines", BASELINES), ("clipseg", CLIPSEG))
                        if any(n in group for n in left))
        commands.insert(0, "romlib download" + flags)
        left = [n for n in left if n not in glide_command]
    if left:
        commands.append("romlib download " + " ".join(left))
    return " and ".join(f"`{c}`" for c in commands or ["romlib download"])
