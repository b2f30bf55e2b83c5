"""Downloads and caching of every file the real models need.

The modules import one way, each only from those before it: ``registry`` (entries, errors) → ``sources`` (mirror,
addresses) → ``cache`` (records) → ``manifests``, ``safe`` (weights-only reading) → ``formats`` (what a file must
be) → ``fetch`` (one transfer, checked) → ``download`` (lock, retries, ``ensure``) → ``checks`` (``verify``) →
``load`` (``load_checkpoint``); each uses the others' public names only.

Every file romlib can fetch is named in :data:`REGISTRY` with its official address: the GLIDE,
noised-CLIP, ADM and MDETR checkpoints, CLIP ViT-B/16 (OpenAI weights in open_clip's file),
RoBERTa's tokenizer files and the notebooks' example photo. :func:`download` fetches one file
once into the cache and returns its path; :func:`ensure` checks or fetches a whole set before any
model is built, and names *every* file it could not get in one :class:`CheckpointUnavailable`.

* cache directory: ``$ROMLIB_CACHE``, else ``$XDG_CACHE_HOME/romlib``, else ``~/.cache/romlib``;
* ``$ROMLIB_MIRROR`` (an ``http(s)://`` base address, a ``file://`` address or a local folder that exists;
  any other value is refused naming the variable, its value and these forms) replaces every official
  address: each file is fetched by its cache file name from there (a classroom: one machine runs
  ``romlib download`` and serves its cache folder, the others set ``ROMLIB_MIRROR``);
* one tqdm progress bar per file, counting bytes as they arrive; a transfer that stalls (fewer than 64 kB in
  ``timeout`` seconds, a drip included) or breaks off is tried again, resuming from its ``.part`` file (HTTP
  ``Range``) when it can, and past an overall deadline it is given up with a clear error; a lock file makes a
  second process wait instead of writing the same file; the finished file is renamed into place atomically,
  so a good file is never replaced by half of one; a full disk is named with the path and the sizes;
* verified: each registry entry records what is known of its file (exact size and sha256 where public records
  give them — no official file's are known here, so none is invented —, its format, for checkpoints the
  shipped state-dict manifest); a download is recorded as good only when it is whole (its ``Content-Length``,
  the registry's size; a body sent without a length only when its format shows its own end or it matches a
  sha256 the caller gave), its ``Content-Encoding`` decoded (gzip, deflate) or refused, its format (a checkpoint
  opens with ``weights_only=True``, a safetensors header, JSON / BPE text, an image within ``romlib edit``'s
  pixel limit that decodes whole; an HTML page and a decompression bomb are refused by name), its manifest's
  names, shapes and dtypes, and its values (every weight floating-point and finite) were checked
  (:mod:`~romlib.hub.formats`);
* integrity: the size and sha256 of each file are recorded in a ``.json`` beside it at its first
  download; the size is re-checked on every use (a truncated file is fetched again) and
  :func:`verify` (``romlib download --verify``) re-checks size, format, manifest, values and sha256;
* a bad file is moved aside as ``<file>.bad-<time>`` (never deleted) and the error says what to do;
* a ``.part`` is resumed only when the server answers the ``Range`` with 206 and the expected total
  size; otherwise the download starts again from zero (and the log says so);
* a cache that holds every file needs no write access (nothing is locked or written to read);
* offline (``ROMLIB_OFFLINE=1``, ``HF_HUB_OFFLINE=1``, or no network) with no cached copy raises
  :class:`CheckpointUnavailable`, which names the file, its size, its address and where to put it.

:func:`load_checkpoint` reads a checkpoint with ``torch.load(weights_only=True, mmap=True)`` (a
pickle in a cache directory can run code otherwise; ``mmap`` keeps a 1.5 GB file from being held
twice in memory). A cached file is moved aside only when it is really damaged (not a readable archive,
a bad CRC, a size that differs from its record) — never because of a ``MemoryError``, a failed
allocation, a refused pickle global (:class:`UnsafeCheckpoint`) or a read-only cache.
"""
from __future__ import annotations

from .cache import cache_dir, check_cache
from .checks import fetch_checked, verify
from .download import cached, download, ensure
from .formats import file_problem
from .load import load_checkpoint
from .registry import (BASELINES, CLIPSEG, EXAMPLES, GLIDE_BACKEND, MDETR, REGISTRY, SD_BACKEND, Checkpoint,
                       CheckpointUnavailable, UnknownCheckpoint, UnsafeCheckpoint, human_size, register)
from .safe import SAFE_GLOBALS, safe_load
from .sources import mirror, source
__all__ = [
    "Checkpoint",
    "REGISTRY",
    "GLIDE_BACKEND",
    "BASELINES",
    "SD_BACKEND",
    "CLIPSEG",
    "MDETR",
    "EXAMPLES",
    "CheckpointUnavailable",
    "UnknownCheckpoint",
    "UnsafeCheckpoint",
    "cache_dir",
    "check_cache",
    "file_problem",
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
    "SAFE_GLOBALS",
]
