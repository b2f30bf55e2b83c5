"""Reading checkpoints safely: weights-only, memory-mapped, never deleting a good file."""
from __future__ import annotations

import logging
import os
from typing import Any, Callable, Iterable

from .checks import _damage, _discard
from .download import download
from .registry import CheckpointUnavailable, UnsafeCheckpoint, human_size
from .sources import _resolve

log = logging.getLogger("romlib.hub")


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

    A file that fails to load is moved aside and fetched once more only when it is really damaged
    (:func:`_damage`); any other failure (memory, a refused global, a read-only cache) is raised
    with the file kept and named.
    """
    allow = tuple(dict.fromkeys([*allow, *_resolve(name_or_url).allow]))  # the registry knows what the file pickles
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
