"""Reading a checkpoint of the registry: downloaded once, read weights-only and memory-mapped (:func:`safe_load`),
a damaged copy fetched again, a good file never deleted."""
from __future__ import annotations

import os
from typing import Any, Iterable

from .checks import damage, discard
from .download import download
from .registry import CheckpointUnavailable, UnsafeCheckpoint, human_size
from .safe import safe_load
from .sources import resolve

__all__ = ["load_checkpoint"]


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
    (:func:`~romlib.hub.checks.damage`); any other failure (memory, a refused global, a read-only cache) is raised
    with the file kept and named.
    """
    allow = tuple(dict.fromkeys([*allow, *resolve(name_or_url).allow]))  # the registry knows what the file pickles
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
            why = damage(path, e)
            if why is None:
                if hasattr(e, "add_note"):
                    e.add_note(f"romlib: {path} looks intact and was kept in the cache")
                raise
            if attempt:
                raise CheckpointUnavailable(f"{path} is damaged even after a fresh download ({why})") from e
            discard(path, why)
    if key is not None:
        if not isinstance(obj, dict) or key not in obj:
            raise KeyError(f"{path} has no entry {key!r}; it holds {list(obj)[:10] if isinstance(obj, dict) else type(obj)}")
        obj = obj[key]
    return obj
