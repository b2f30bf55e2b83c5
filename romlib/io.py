"""Reading images and masks the way users hand them to us: any path, PIL image or array, any mode
or bit depth, EXIF orientation honoured; and converting between PIL and [-1, 1] tensors."""
from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch

if TYPE_CHECKING:  # PIL is imported where used
    from PIL import Image

__all__ = ["load_image", "load_mask", "to_tensor", "to_pil", "resize_image", "to_uint8", "Resample"]

Resample = Literal["bicubic", "lanczos"]


def _open(path) -> "Image.Image":
    from PIL import Image, UnidentifiedImageError

    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"image not found: {p}")
    try:
        img = Image.open(p)
        img.load()
    except (UnidentifiedImageError, OSError) as e:
        raise ValueError(f"cannot read {p} as an image: {e}") from e
    return img


def _to_rgb(img) -> "Image.Image":
    """Any PIL mode to 8-bit RGB: 16-bit and float images are rescaled, alpha is composited on white."""
    from PIL import Image

    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        a = np.asarray(img, dtype=np.float64)
        hi = 65535.0 if img.mode.startswith("I;16") or a.max() > 255 else 255.0
        if img.mode == "F" and a.max() <= 1.0:
            hi = 1.0
        img = Image.fromarray(np.clip(a / hi * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    if img.mode == "P":
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA"):
        bg = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(bg, img.convert("RGBA"))
    return img.convert("RGB")


def load_image(image, *, min_size: int = 1) -> "Image.Image":
    """A path, PIL image, numpy array (HxW, HxWx3/4, uint8/uint16/float in [0, 1]) or tensor
    ([3, H, W] in [0, 1]) → an RGB PIL image with EXIF orientation applied."""
    from PIL import Image, ImageOps

    if isinstance(image, (str, os.PathLike)):
        img = _open(image)
    elif isinstance(image, Image.Image):
        img = image
    elif isinstance(image, torch.Tensor):
        t = image.detach().cpu().float()
        if t.ndim == 4 and t.shape[0] == 1:
            t = t[0]
        if t.ndim != 3 or t.shape[0] not in (1, 3):
            raise ValueError(f"a tensor image must be [3, H, W] or [1, H, W] in [0, 1], got shape {tuple(image.shape)}")
        img = Image.fromarray((t.clamp(0, 1).permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8).squeeze())
    elif isinstance(image, np.ndarray):
        a = image
        if a.dtype == np.uint16:
            a = (a.astype(np.float64) / 65535.0 * 255 + 0.5).astype(np.uint8)
        elif a.dtype.kind == "f":
            a = (np.clip(a, 0, 1) * 255 + 0.5).astype(np.uint8)
        elif a.dtype == bool:
            a = a.astype(np.uint8) * 255
        elif a.dtype != np.uint8:
            raise ValueError(f"unsupported array dtype {a.dtype}; use uint8, uint16, bool or float in [0, 1]")
        if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (1, 3, 4)):
            raise ValueError(f"an array image must be HxW or HxWxC with C in 1, 3, 4; got shape {a.shape}")
        img = Image.fromarray(a.squeeze(-1) if a.ndim == 3 and a.shape[2] == 1 else a)
    else:
        raise TypeError(f"cannot use {type(image).__name__} as an image; pass a path, PIL image, array or tensor")
    img = ImageOps.exif_transpose(img) or img
    img = _to_rgb(img)
    if min(img.size) < min_size:
        raise ValueError(f"the image is {img.size[0]}x{img.size[1]} pixels; at least {min_size} px per side are needed")
    return img


def load_mask(mask, size: tuple[int, int]) -> torch.Tensor:
    """A user mask (path, PIL, array or tensor; white / nonzero / True = edit) → bool [H, W] at
    ``size`` = (width, height), resized if needed. Raises if nothing is to be edited."""
    from PIL import Image

    if isinstance(mask, torch.Tensor):
        m = mask.detach().cpu().float().squeeze()
    else:
        if isinstance(mask, (str, os.PathLike)):
            img = _open(mask)
        elif isinstance(mask, Image.Image):
            img = mask
        elif isinstance(mask, np.ndarray):
            a = mask.astype(np.float32)
            m = torch.from_numpy(a if a.max() <= 1 else a / a.max()).squeeze()
            img = None
        else:
            raise TypeError(f"cannot use {type(mask).__name__} as a mask")
        if isinstance(mask, (str, os.PathLike, Image.Image)):
            if img.mode in ("RGBA", "LA") and np.asarray(img.getchannel("A")).min() < 255:
                a = np.asarray(img.getchannel("A"), dtype=np.float32) / 255.0  # painted alpha = edit
            else:
                a = np.asarray(_to_rgb(img).convert("L"), dtype=np.float32) / 255.0
            m = torch.from_numpy(a)
    if m.ndim != 2:
        raise ValueError(f"a mask must be a single-channel image, got shape {tuple(m.shape)}")
    w, h = size
    if m.shape != (h, w):
        m = torch.nn.functional.interpolate(m[None, None], size=(h, w), mode="bilinear", align_corners=False)[0, 0]
    out = m > 0.5
    if not out.any():
        raise ValueError("the mask has nothing to edit: it must be white (or nonzero) where the object is")
    return out


def to_tensor(img, size: int | tuple[int, int] | None = None, *, resample: Resample = "bicubic") -> torch.Tensor:
    """PIL RGB → [1, 3, H, W] in [-1, 1], optionally resized (bicubic as the ROM authors' GLIDE code;
    Blended Diffusion's code uses LANCZOS)."""
    if size is not None:
        img = resize_image(img, size, resample=resample)
    a = np.asarray(img.convert("RGB"), dtype=np.float32)
    return torch.from_numpy(a).permute(2, 0, 1)[None] / 127.5 - 1


def resize_image(img, size: int | tuple[int, int], *, resample: Resample = "bicubic"):
    from PIL import Image

    size = (size, size) if isinstance(size, int) else tuple(size)
    return img.resize(size, resample={"bicubic": Image.BICUBIC, "lanczos": Image.LANCZOS}[resample])


def to_pil(x: torch.Tensor):
    """[3, H, W] (or [1, 3, H, W]) in [-1, 1] → PIL RGB."""
    from PIL import Image

    if x.ndim == 4:
        x = x[0]
    return Image.fromarray(to_uint8(x))


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """[3, H, W] in [-1, 1] → [H, W, 3] uint8 (rounded; the one place romlib converts a sample to pixels)."""
    return ((x.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).numpy()
