"""Fetching one file into the cache: resume, the checks before the record, atomic rename.

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

from .cache import _move_aside, _write_record
from .formats import NOUNS, file_problem
from .registry import Checkpoint
from .sources import _is_remote, _unavailable, mirror, source

log = logging.getLogger("romlib.hub")


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
