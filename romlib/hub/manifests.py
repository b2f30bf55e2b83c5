"""The state-dict manifests of the official checkpoints, shipped as package data, and the check against them.

``manifests.json.gz`` holds ``{manifest name: {parameter or buffer name: shape}}`` for every
official checkpoint whose module romlib builds (written from ``../shared/reference/*_state_dict_shapes.json``
by ``tools/build_manifests.py``; a registry entry names its manifest in ``Checkpoint.manifest``).
A downloaded checkpoint is compared with its manifest by names, shapes and dtypes (every entry of an official
state dict is a floating-point weight or buffer: :data:`DTYPES`); the file is memory-mapped, so no tensor is read
here (a 1.5 GB checkpoint in a tenth of a second; its values are checked by :func:`romlib.hub.formats.values_problem`).
"""
from __future__ import annotations

import functools
import gzip
import json
from pathlib import Path

__all__ = ["MANIFESTS_FILE", "DTYPES", "LEGACY_KEYS", "manifest", "manifest_names", "state_dict_problem"]

#: The dtypes a weight may have (a manifest's entries, and every tensor of a checkpoint but its index buffers).
DTYPES = ("float16", "bfloat16", "float32", "float64")

#: The shipped manifests (package data).
MANIFESTS_FILE = Path(__file__).with_name("manifests.json.gz")
#: entries an official file may hold beyond its manifest: MDETR's ``position_ids``, which files saved with
#: transformers < 4.31 hold and current transformers no longer keeps (mdetr issue #106); the MDETR loader drops them
LEGACY_KEYS = ("detr.transformer.text_encoder.embeddings.position_ids",)


@functools.lru_cache(maxsize=1)
def _all() -> dict[str, dict[str, list[int]]]:
    with gzip.open(MANIFESTS_FILE, "rt", encoding="utf-8") as f:
        return json.load(f)


def manifest_names() -> list[str]:
    """The names of the shipped manifests (``glide_base-inpaint``, ``mdetr_efficientnetB3_phrasecut``, …)."""
    return sorted(_all())


def manifest(name: str) -> dict[str, list[int]]:
    """``{name: shape}`` of the official state dict ``name`` (a key of the shipped manifests)."""
    table = _all()
    if name not in table:
        raise ValueError(f"no state-dict manifest {name!r}; shipped: {', '.join(sorted(table))}")
    return table[name]


def _listed(names: list[str], limit: int = 3) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def state_dict_problem(state, name: str) -> str | None:
    """Why ``state`` (a loaded state dict) does not have exactly the names, shapes and dtypes (:data:`DTYPES`) of
    manifest ``name``, or None. Only shapes are read, so memory-mapped or ``meta`` tensors cost nothing.

    The legacy entries of :data:`LEGACY_KEYS` (MDETR's ``position_ids``, which
    files saved with transformers < 4.31 hold and current transformers no longer keeps) are accepted
    beyond the manifest, as the MDETR loader drops them."""
    import torch

    want = manifest(name)
    if not isinstance(state, dict):
        return f"it holds a {type(state).__name__}, not a state dict of tensors (manifest {name})"
    not_tensors = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if not_tensors:
        return f"its entries {_listed(not_tensors)} are not tensors (manifest {name})"
    missing = [k for k in want if k not in state]
    extra = [k for k in state if k not in want and k not in LEGACY_KEYS]
    wrong = [f"{k} has shape {list(state[k].shape)} where the manifest says {want[k]}"
             for k in want if k in state and list(state[k].shape) != want[k]]
    dtypes = [f"{k} is {str(state[k].dtype).replace('torch.', '')} where the manifest's entries are {'/'.join(DTYPES)}"
              for k in want if k in state and str(state[k].dtype).replace("torch.", "") not in DTYPES]
    if not (missing or extra or wrong or dtypes):
        return None
    parts = ([f"{len(missing)} missing ({_listed(missing)})"] if missing else []) + \
            ([f"{len(extra)} not in the manifest ({_listed(extra)})"] if extra else []) + \
            ([f"{len(wrong)} of the wrong shape ({_listed(wrong, 2)})"] if wrong else []) + \
            ([f"{len(dtypes)} of the wrong dtype ({_listed(dtypes, 2)})"] if dtypes else [])
    return f"its state dict does not match the manifest {name} ({len(want)} entries): " + "; ".join(parts)
