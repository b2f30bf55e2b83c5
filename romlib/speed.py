"""Making GLIDE sampling fast without changing what it computes (issue: GPU speed).

What the default path already does (``romlib.glide``, ``romlib.inpaint``):

* half precision for exactly the layers the reference runs in half (``dtype=torch.float16``);
* ``scaled_dot_product_attention`` (flash / memory-efficient kernels) instead of einsum + softmax;
* the text transformer once per call (``encode_text`` → ``text_emb=``), on the distinct prompts only;
* both guidance branches in one forward pass; noise drawn once per sample.

:func:`accelerate` adds what needs a GPU to pay off: channels-last memory format for the
convolutions, and ``torch.compile`` of the UNet body (``mode="reduce-overhead"`` adds CUDA
graphs, i.e. one launch per step). Compilation falls back to eager execution, with a warning,
wherever it is unavailable or fails.
"""
from __future__ import annotations

import logging
from typing import Literal

import torch

__all__ = ["accelerate", "CompileMode"]

log = logging.getLogger(__name__)

CompileMode = Literal["off", "default", "reduce-overhead", "max-autotune"]


def accelerate(model, *, channels_last: bool | None = None, compile: CompileMode = "off"):
    """Speed options for a :class:`romlib.glide.GlideUNet` (or any model with ``_core``), in place.

    ``channels_last`` defaults to True on CUDA. ``compile`` wraps the model's body in
    ``torch.compile`` (first call compiles: about a minute; worth it for many samples).
    Returns the model.
    """
    device = next(model.parameters()).device
    if channels_last is None:
        channels_last = device.type == "cuda"
    if channels_last:
        model.to(memory_format=torch.channels_last)
    if compile != "off":
        eager = model._forward
        try:
            compiled = torch.compile(eager, mode=compile, dynamic=False)
        except Exception as e:  # e.g. no compiler toolchain, unsupported platform
            log.warning("torch.compile unavailable (%s); running eagerly", e)
            return model

        def core(*args, **kwargs):
            try:
                return compiled(*args, **kwargs)
            except Exception as e:  # a backend failure at the first call: keep working, eagerly
                log.warning("torch.compile failed (%s: %s); falling back to eager execution", type(e).__name__, e)
                model._core = eager
                return eager(*args, **kwargs)

        model._core = core
    return model
