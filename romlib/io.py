"""Reading images and masks the way users hand them to us: any path, PIL image or array, any mode
or bit depth, EXIF orientation honoured; and converting between PIL and [-1, 1] tensors."""
from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch

if TYPE_CHECKING:  # PIL is imported where used
    from PIL import Image

__all__ = ["load_image", "load_mask", "to_tensor", "to_pil", "resize_image", "to_uint8", "Resample", "MAX_PIXELS",
           "check_pixels", "image_size", "quote", "MASK_ASPECT_TOLERANCE"]

log = logging.getLogger(__name__)

Resample = Literal["bicubic", "lanczos"]

#: images above this many pixels (100 MP) are refused: a 100 MP edit needs about 2 GB of memory
MAX_PIXELS = 100_000_000
#: a mask whose width/height differs from the image's by more than this (relative) is refused
MASK_ASPECT_TOLERANCE = 0.01


def quote(text, limit: int = 80) -> str:
    """``repr(text)`` cut to at most ``limit`` characters (errors never echo a whole long text)."""
    r = repr(str(text))
    return r if len(r) <= limit else r[:limit - 4] + "...'"


def check_pixels(width: int, height: int, what="the image") -> None:
    """Refuse an image above :data:`MAX_PIXELS`."""
    if width * height > MAX_PIXELS:
        raise ValueError(f"{what} is {width}x{height} = {width * height / 1e6:.0f} MP; romlib accepts at most "
                         f"{MAX_PIXELS / 1e6:.0f} MP: downscale it first (e.g. to 8000x6000)")


def image_size(path, what: str = "image") -> tuple[int, int]:
    """(width, height) of an image file from its header (nothing decoded), after EXIF rotation;
    raises the same errors as :func:`load_image`, including the pixel limit."""
    img = _open(path, decode=False, what=what)
    w, h = img.size
    try:
        if img.getexif().get(0x0112, 1) in (5, 6, 7, 8):
            w, h = h, w
    except Exception:  # a broken EXIF block: PIL ignores it when decoding too
        pass
    img.close()
    return w, h


def _open(path, decode: bool = True, what: str = "image") -> "Image.Image":
    """Open (and decode) an image file; the pixel limit is checked on the header, before decoding."""
    from PIL import Image, UnidentifiedImageError

    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{what} not found: {p}")
    if p.is_dir():
        raise IsADirectoryError(f"{what} {p} is a folder, not an image file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # romlib's own limit applies
            img = Image.open(p)
            check_pixels(*img.size, what=f"{what} {p}")
            if decode:
                img.load()
    except Image.DecompressionBombError as e:  # beyond PIL's hard limit (2 x 89 MP)
        raise ValueError(f"{what} {p} is too large ({e}); romlib accepts at most {MAX_PIXELS / 1e6:.0f} MP: "
                         "downscale it first") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
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
    check_pixels(*img.size)
    img = ImageOps.exif_transpose(img) or img
    img = _to_rgb(img)
    if min(img.size) < min_size:
        raise ValueError(f"the image is {img.size[0]}x{img.size[1]} pixels; at least {min_size} px per side are needed")
    return img


def load_mask(mask, size: tuple[int, int]) -> torch.Tensor:
    """A user mask (path, PIL, array or tensor) → bool [H, W] at ``size`` = (width, height).

    What is read: a pixel is **edited where any colour channel is at least half-bright** (>= 128 of
    255, or >= 0.5 for floats): white, red, green, ... all mean "edit", black means "keep"
    (a colour mask is logged with what was read). A mask with a transparent part uses its alpha
    instead (opaque = edit). A mask of another size is resized (bilinear, then > 0.5), but one
    whose aspect ratio differs from the image's by more than 1 % is refused (it would be
    stretched). Raises if nothing is to be edited."""
    from PIL import Image

    name = f"mask {mask}" if isinstance(mask, (str, os.PathLike)) else "the mask"
    how = "brightest channel >= 128"
    if isinstance(mask, torch.Tensor):
        m = mask.detach().cpu().float().squeeze()
        if m.ndim == 3 and m.shape[0] in (3, 4):
            m = m[:3].amax(0)
    elif isinstance(mask, np.ndarray):
        a = mask.astype(np.float32)
        if a.ndim == 3 and a.shape[2] in (3, 4):
            a = a[..., :3].max(-1)
        top = 1.0 if mask.dtype == bool or a.max() <= 1 else (65535.0 if mask.dtype == np.uint16 else 255.0)
        m = torch.from_numpy(a / top).squeeze()
    elif isinstance(mask, (str, os.PathLike, Image.Image)):
        img = _open(mask, what="mask") if isinstance(mask, (str, os.PathLike)) else mask
        if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
            img = img.convert("RGBA") if img.mode != "LA" else img
            alpha = np.asarray(img.getchannel("A"))
        else:
            alpha = None
        if alpha is not None and alpha.min() < 255:
            a = alpha.astype(np.float32) / 255.0  # painted alpha = edit
            how = "alpha (opaque = edit)"
        else:
            rgb = np.asarray(_to_rgb(img), dtype=np.float32)
            a = rgb.max(-1) / 255.0
            coloured = (np.ptp(rgb, axis=-1) > 16).mean() > 0.001
            if coloured:
                log.warning("%s is in colour: read as 'edit where any of R, G, B >= 128' (%.1f %% of it; "
                            "black = keep)", name, 100.0 * float((a > 0.5).mean()))
        m = torch.from_numpy(np.ascontiguousarray(a))
    else:
        raise TypeError(f"cannot use {type(mask).__name__} as a mask; pass a path, PIL image, array or tensor")
    if m.ndim != 2:
        raise ValueError(f"a mask must be a single image [H, W] (or [H, W, 3]), got shape {tuple(m.shape)}")
    w, h = size
    mh, mw = m.shape
    if abs((mw / mh) / (w / h) - 1) > MASK_ASPECT_TOLERANCE:
        raise ValueError(f"{name} is {mw}x{mh} (aspect {mw / mh:.3f}) but the image is {w}x{h} (aspect {w / h:.3f}); "
                         "a mask must have the image's aspect ratio (within 1 %): it would be stretched")
    if m.shape != (h, w):
        m = torch.nn.functional.interpolate(m[None, None].float(), size=(h, w), mode="bilinear", align_corners=False)[0, 0]
    out = m > 0.5
    if not out.any():
        raise ValueError(f"{name} has nothing to edit: a pixel is edited where its brightest channel is >= 128 "
                         f"(white, red, ...; read: {how}); the brightest value in this mask is {float(m.max()) * 255:.0f}")
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
