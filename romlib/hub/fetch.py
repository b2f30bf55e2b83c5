"""Fetching one file into the cache: resume, the checks before the record, atomic rename.

A download becomes a cached file only after it passed every check (:func:`accept`): it is whole — its size equals
the server's ``Content-Length`` and the registry's size where known; a body sent without a length is whole only
when its format shows its own end (:data:`romlib.hub.formats.SELF_DELIMITING`: a zip that parses to its central
directory, a safetensors header's sizes, closed JSON, an image that decodes) or it matches a SHA-256 the caller
gave —, its format, manifest and values pass :func:`romlib.hub.formats.file_problem`, and its sha256 equals the
registry's or the caller's where known. Its size and sha256 are then recorded beside it (``<file>.json``). A file
that fails is moved aside (``<file>.bad-<time>``), never deleted (no ``.part`` is left), and the error says what
to do.

The transfer asks for ``Accept-Encoding: identity``; a body sent gzip- or deflate-encoded anyway is decoded (and
must end its compressed stream), any other ``Content-Encoding`` is refused. Redirects are followed to http(s)
addresses only, and a failure after one names its target. A server that sends fewer than :data:`STALL_BYTES` in
``stall`` seconds (nothing at all, or a drip) raises :class:`BrokenOff` (``download`` retries, resuming when it
can); so does a transfer past its overall ``deadline``. The bar counts bytes as they come. A full disk is named
with the path and the sizes.

A ``.part`` file is resumed only when the expected total size is known (the registry's size, or
the total the server announced when the part was begun, kept in ``<file>.part.meta`` with its
source) and the server answers the ``Range`` request with 206 and exactly that total; otherwise
the download starts again from zero, and the log says why."""
from __future__ import annotations

import errno
import hashlib
import http.client
import json
import logging
import os
import re
import shutil
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
import zlib
from pathlib import Path

from romlib.progress import tqdm

from .cache import move_aside, write_record
from .formats import CHECKS, NOUNS, SELF_DELIMITING, file_problem
from .registry import Checkpoint, CheckpointUnavailable, human_size
from .sources import is_remote, mirror, source, unavailable

__all__ = ["fetch", "accept", "BrokenOff", "STALL_BYTES", "default_deadline"]

log = logging.getLogger("romlib.hub")

#: A transfer that brings fewer bytes than this in ``stall`` seconds is stalled (a drip counts as a stall).
STALL_BYTES = 64 * 1024
_DECODERS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}


class BrokenOff(CheckpointUnavailable):
    """A transfer that stopped before its end (a cut connection, a stall, the deadline); the ``.part`` is kept
    when ``resumable`` (the next call asks only for the rest)."""

    def __init__(self, ckpt: Checkpoint, dest: Path, why: str, *, resumable: bool = True, retry: bool = True):
        self.why = why
        self.advice = "call again to resume" if resumable else "call again to start it again"
        err = unavailable(ckpt, dest, f"{why}; {self.advice}")
        super().__init__(str(err), err.missing)
        self.resumable, self.retry = resumable, retry


def default_deadline(ckpt: Checkpoint) -> float:
    """The overall time a download of ``ckpt`` may take: 10 minutes plus its size at 100 kB/s (a 1.5 GB
    checkpoint: about 4.4 hours; unknown sizes count as 2 GB)."""
    size = ckpt.size or (ckpt.approx_mb * 1e6 if ckpt.approx_mb else 2e9)
    return 600.0 + size / 1e5


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


def fetch(ckpt: Checkpoint, dest: Path, *, progress: bool = True, stall: float = 60.0, deadline: float | None = None,
          sha256: str | None = None) -> None:
    """Fetch ``ckpt`` into ``dest.part`` (resuming it when that is safe), check it (:func:`accept`), record it, then
    rename it into place. ``stall``: seconds in which fewer than :data:`STALL_BYTES` arrive before the transfer
    counts as stalled; ``deadline``: seconds for the whole transfer (default :func:`default_deadline`); ``sha256``:
    the hash the file must have (given by the caller). Raises :class:`BrokenOff` for a transfer cut short,
    :class:`CheckpointUnavailable` for every other failure."""
    src = source(ckpt)
    part = dest.with_name(dest.name + ".part")
    try:
        if not is_remote(src):  # a local folder (ROMLIB_MIRROR=/path) or a file:// address
            total, digest = _copy_local(ckpt, dest, src, part, progress)
        else:
            total, digest = _download(ckpt, dest, src, part, progress, stall,
                                      deadline if deadline is not None else default_deadline(ckpt))
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise _disk_full(ckpt, dest, part) from None
        raise
    accept(ckpt, dest, part, src, total, digest, sha256=sha256)


def _disk_full(ckpt: Checkpoint, dest: Path, part: Path) -> CheckpointUnavailable:
    """The error of a full disk: the path, what was written, what the file needs and what is free."""
    have = part.stat().st_size if part.is_file() else 0
    free = shutil.disk_usage(dest.parent).free
    need = ckpt.size or (int(ckpt.approx_mb * 1e6) if ckpt.approx_mb else None)
    needs = (f"the file needs {'' if ckpt.size else 'about '}{human_size(need)}, {human_size(max(need - have, 0))} more"
             if need else "its size is not known")
    return unavailable(ckpt, dest, f"the disk holding {dest.parent} is full (No space left on device) while writing "
                       f"{part.name}: {human_size(have)} written, {human_size(free)} free, {needs}; free space there "
                       "or set ROMLIB_CACHE to a folder on a larger disk, then call again (the part is resumed)")


def _copy_local(ckpt: Checkpoint, dest: Path, src: str, part: Path, progress: bool):
    path = Path(urllib.parse.urlparse(src).path) if src.lower().startswith("file://") else Path(src)
    if not path.is_file():
        raise unavailable(ckpt, dest, f"the mirror folder has no {ckpt.filename}" if mirror() else f"{path} does not exist")
    total = path.stat().st_size
    if ckpt.size is not None and total != ckpt.size:
        raise unavailable(ckpt, dest, f"{path} has {total} bytes, romlib expects exactly {ckpt.size}: another file "
                          "(check the mirror folder)")
    have, _ = _resume_from(part, src, total)
    digest = _begin(part, have, src, total)
    with open(path, "rb") as fi:
        fi.seek(have)
        _copy(iter(lambda: fi.read(1 << 22), b""), part, have, total, digest, ckpt, progress)
    return total, digest.hexdigest()


class _Redirects(urllib.request.HTTPRedirectHandler):
    """Follows redirects to http(s) addresses only, and remembers them (a failure names the last target)."""

    def __init__(self):
        self.chain: list[str] = []

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        scheme = urllib.parse.urlsplit(newurl).scheme.lower()
        if scheme not in ("http", "https"):
            raise urllib.error.HTTPError(newurl, code, f"a redirect to {newurl} ({scheme}:) refused: romlib follows "
                                         "redirects to http(s) addresses only", headers, fp)
        self.chain.append(newurl)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _download(ckpt: Checkpoint, dest: Path, src: str, part: Path, progress: bool, stall: float, deadline: float):
    have, expected = _resume_from(part, src, ckpt.size)
    resp, have, total, decoder = _open(ckpt, dest, src, have, expected, stall)
    digest = _begin(part, have, src, None if decoder else total)
    raw_total = None if total is None else total - have  # the bytes this response's body announces
    with resp:
        blocks = _blocks(resp, part, ckpt, dest, total, stall, time.monotonic() + deadline, deadline, raw_total,
                         resumable=decoder is None and total is not None)
        try:
            _copy(_decoded(blocks, decoder, ckpt, dest) if decoder else blocks, part, have,
                  None if decoder else total, digest, ckpt, progress)
        except zlib.error as e:
            _refuse(ckpt, dest, part, src, f"the server's compressed (Content-Encoding) body cannot be decoded ({e})")
    return (None if decoder else total), digest.hexdigest()


def _open(ckpt: Checkpoint, dest: Path, src: str, have: int, expected: int | None, stall: float):
    """The server's response for the rest of ``src`` (from ``have``), ``have`` (0 if the download
    starts again), the total size the server announces (None when it does not say) and the decoder of
    its ``Content-Encoding`` (None: identity)."""
    via = f" from the mirror {mirror()}" if mirror() else ""
    req = urllib.request.Request(src, headers={"User-Agent": "romlib", "Accept-Encoding": "identity"})
    if have:
        req.add_header("Range", f"bytes={have}-")
    redirects = _Redirects()
    try:
        resp = urllib.request.build_opener(redirects).open(req, timeout=stall)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # the server has fewer bytes than the part: start again
            log.warning("%s: the server refused the Range bytes=%d- (HTTP 416); starting again from zero", ckpt.filename, have)
            return _open(ckpt, dest, src, 0, expected, stall)
        if redirects.chain or e.url != src:
            target = e.url if e.url != src else redirects.chain[-1]
            what = f"the redirect to {target} failed: {e.reason if e.code in (301, 302, 303, 307, 308) else f'HTTP {e.code}'}"
        elif e.code == 404 and mirror():
            what = f"the mirror has no {ckpt.filename} (HTTP 404)"
        else:
            what = f"the server answered HTTP {e.code}{via}"
        raise unavailable(ckpt, dest, what) from e
    except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError) as e:
        reason = getattr(e, "reason", None) or e
        if redirects.chain:
            what = f"the redirect to {redirects.chain[-1]} failed: no connection there ({reason})"
        elif isinstance(e, (ValueError, http.client.InvalidURL)):
            what = f"the address {src} cannot be used ({reason})"
        else:
            what = f"no connection{via} ({reason})"
        raise unavailable(ckpt, dest, what) from e
    encoding = (resp.headers.get("Content-Encoding") or "").strip().lower()
    if encoding not in ("", "identity") and encoding not in _DECODERS:
        resp.close()
        raise unavailable(ckpt, dest, f"the server sent it with Content-Encoding: {encoding}, which romlib does not "
                          "decode (it asked for identity; gzip and deflate are decoded); nothing was written")
    if have and (resp.status != 206 or encoding not in ("", "identity")):
        log.warning("%s: the server ignored the Range request (HTTP %d%s, the whole file): starting again from zero",
                    ckpt.filename, resp.status, f", {encoding}-encoded" if encoding not in ("", "identity") else "")
        if resp.status == 206:  # a range of an encoded body: ask again for the whole
            resp.close()
            return _open(ckpt, dest, src, 0, expected, stall)
        have = 0
    elif have:
        rng = resp.headers.get("Content-Range", "")
        if _content_range(rng) != (have, expected):
            resp.close()
            log.warning("%s: the server answered the Range bytes=%d- with Content-Range %r, not bytes %d-…/%d: "
                        "starting again from zero", ckpt.filename, have, rng, have, expected)
            return _open(ckpt, dest, src, 0, expected, stall)
    length = resp.headers.get("Content-Length")
    total = have + int(length) if length is not None and length.strip().isdigit() else None
    decoder = zlib.decompressobj(_DECODERS[encoding]) if encoding in _DECODERS else None
    if decoder is None and ckpt.size is not None and total is not None and total != ckpt.size:
        resp.close()
        raise unavailable(ckpt, dest, f"the server announces {total} bytes (Content-Length){via}, romlib expects exactly "
                          f"{ckpt.size}: another file or an error page (check the mirror or proxy); nothing was written")
    return resp, have, total, decoder


def _content_range(value: str) -> tuple[int, int | None] | None:
    """``(first byte, total)`` of a ``Content-Range: bytes a-b/total`` header (total None for ``*``), or None."""
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


def _blocks(resp, part: Path, ckpt: Checkpoint, dest: Path, total: int | None, stall: float, until: float,
            deadline: float, raw_total: int | None, *, resumable: bool):
    """The response body in blocks as they arrive; a cut connection, a stall (fewer than :data:`STALL_BYTES` in
    ``stall`` seconds) or the ``deadline`` raise :class:`BrokenOff` (the part is kept)."""
    window_start, window_bytes, got = time.monotonic(), 0, 0

    def broke(why: str, *, retry: bool = True) -> BrokenOff:
        have = part.stat().st_size
        of = f" of the {total} bytes the server announced" if total is not None else " bytes (the server announced no length)"
        return BrokenOff(ckpt, dest, f"the download broke off at {have}{of}: {why}", resumable=resumable, retry=retry)

    while True:
        try:
            block = resp.read1(1 << 16)  # as soon as bytes arrive: the bar moves, the stall clock sees them
        except (TimeoutError, socket.timeout):
            raise broke(f"no bytes for {stall:g} s (the server stalled)") from None
        except (OSError, ValueError, http.client.HTTPException) as e:
            raise broke(f"the connection was cut ({type(e).__name__})") from e
        if not block:
            if raw_total is not None and got < raw_total:
                raise broke(f"the connection closed after {got} of the {raw_total} bytes of the body")
            return
        got += len(block)
        now = time.monotonic()
        if now > until:
            raise broke(f"it took longer than its deadline of {deadline:g} s", retry=False)
        window_bytes += len(block)
        if window_bytes >= STALL_BYTES:
            window_start, window_bytes = now, 0
        elif now - window_start > stall:
            raise broke(f"fewer than {STALL_BYTES // 1024} kB in {stall:g} s (the server drips or stalled)")
        yield block


def _decoded(blocks, decoder, ckpt: Checkpoint, dest: Path):
    """The decoded body of a gzip- or deflate-encoded response; a compressed stream that does not end is refused."""
    for block in blocks:
        out = decoder.decompress(block)  # zlib.error for a body that is not what its encoding says: refused
        if out:
            yield out
    out = decoder.flush()
    if out:
        yield out
    if not decoder.eof:
        raise BrokenOff(ckpt, dest, "the server's compressed (Content-Encoding) body ends before its compressed stream "
                        "does: the body was cut short", resumable=False)


def _copy(blocks, part: Path, have: int, total: int | None, digest, ckpt: Checkpoint, progress: bool) -> None:
    with open(part, "r+b") as f, tqdm(total=total, initial=have, unit="B", unit_scale=True, unit_divisor=1024,
                                      desc=ckpt.filename, disable=not progress) as bar:
        f.seek(have)
        f.truncate()
        for block in blocks:
            f.write(block)
            digest.update(block)
            bar.update(len(block))


def accept(ckpt: Checkpoint, dest: Path, part: Path, src: str, total: int | None, digest: str, *,
           sha256: str | None = None) -> None:
    """Check the whole ``part`` (size, that it is whole, format, manifest, values, the registry's and the caller's
    sha256), record it and rename it into place; a part that fails is moved aside and named in the error."""
    size = part.stat().st_size
    if total is not None and size != total:
        raise BrokenOff(ckpt, dest, f"the download stopped at {size} of the {total} bytes the server announced "
                        "(Content-Length)")
    if ckpt.size is not None and size != ckpt.size:
        _refuse(ckpt, dest, part, src, f"it has {size} bytes, romlib expects exactly {ckpt.size}")
    known_hash = sha256 or ckpt.sha256
    if total is None and ckpt.size is None and not known_hash and ckpt.kind not in SELF_DELIMITING:
        _refuse(ckpt, dest, part, src, f"the server sent it without a length (no Content-Length) and "
                f"{NOUNS.get(ckpt.kind, NOUNS[None])} does not show where it ends, so nothing tells a whole copy from a "
                f"cut one ({size} bytes arrived); give its SHA-256 (romlib download {ckpt.name} --sha256 HEX) or "
                "fetch it from a server that states the length")
    problem = file_problem(part, ckpt)
    if problem:
        if total is None and ckpt.size is None:
            problem += f" (the server sent {size} bytes without a length: probably cut short)"
        _refuse(ckpt, dest, part, src, problem)
    for want, whose in ((ckpt.sha256, "the registry's"), (sha256, "the one given")):
        if want and digest != want.lower():
            _refuse(ckpt, dest, part, src, f"its sha256 {digest} differs from {whose} {want}")
    write_record(dest, {"name": ckpt.name, "source": src, "size": size, "sha256": digest, "format": ckpt.kind,
                        "manifest": ckpt.manifest, "checks": CHECKS,
                        "fetched": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    os.replace(part, dest)  # atomic on one filesystem: a good file is never replaced by half of one
    _part_meta(part).unlink(missing_ok=True)


def bad_file_advice(ckpt: Checkpoint, src: str | None = None) -> str:
    """What to do about a bad copy of ``ckpt``: fetch it again, then suspect whoever served it."""
    src = src or source(ckpt)
    served = f"the mirror ({mirror()})" if mirror() else f"a proxy between you and {urllib.parse.urlparse(src).netloc or src}"
    return (f"run `romlib download {ckpt.name}` again; if the copy is bad again, {served} serves something other "
            "than the file: check it")


def _refuse(ckpt: Checkpoint, dest: Path, part: Path, src: str, why: str):
    bad = move_aside(part, dest)
    _part_meta(part).unlink(missing_ok=True)
    log.info("%s from %s is bad (%s); moved aside to %s", ckpt.filename, src, why, bad)  # the error says it all
    raise unavailable(ckpt, dest, f"the downloaded {ckpt.filename} is not {NOUNS.get(ckpt.kind, NOUNS[None])} romlib "
                      f"can use: {why}. It was moved aside to {bad} (not deleted); {bad_file_advice(ckpt, src)}")


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
