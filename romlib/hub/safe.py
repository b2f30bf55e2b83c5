"""Reading checkpoints safely (torch is imported on first use): ``torch.load(weights_only=True)``, memory-mapped, with only named plain types allowed."""
from __future__ import annotations

import argparse
import os
import pickle
import re
import zipfile
from typing import Any, Callable, Iterable

from .registry import UnsafeCheckpoint

__all__ = ["SAFE_GLOBALS", "safe_load"]

# Plain, non-tensor types that official checkpoint files pickle; allowed by name only.
SAFE_GLOBALS: dict[str, Callable[[], Iterable[Any]]] = {
    "argparse.Namespace": lambda: [argparse.Namespace],
}


def _blocked_global(err: Exception) -> str | None:
    """The ``module.name`` a weights-only unpickler refused, or None for any other error.

    torch 2.14 says "Unsupported global: GLOBAL x.y was not an allowed global by default" and
    older releases "unsupported GLOBAL ... blocked"; both name the global after ``GLOBAL``."""
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
    import torch  # heavy: loaded on use, so that importing romlib.hub stays light

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
