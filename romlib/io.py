"""Reading images and masks the way users hand them to us, and converting between PIL and [-1, 1] tensors.

**The conventions** (anything else is refused with a message that names them; nothing is silently
read as white or black):

* a **path**: any format PIL reads, EXIF orientation honoured; it must name a *regular* file
  (a folder, a named pipe, a device or a socket is refused before it is opened: :func:`check_file`);
* a **PIL image**: any mode or bit depth (16-bit and float modes rescaled by their maximum to 0..1,
  0..255 or 0..65535; NaN, negative values and values above 65535 refused; alpha composited on white);
* a **numpy array**: channels last, ``H x W`` or ``H x W x C`` with C in 1, 3, 4 (RGBA);
  ``uint8`` is 0–255, ``uint16`` 0–65535, ``bool`` False/True, **floating point 0–1**;
* a **torch tensor**: channels first, ``[H, W]``, ``[C, H, W]`` or ``[1, C, H, W]`` with C in 1, 3, 4;
  ``uint8`` is 0–255, ``bool`` False/True, **floating point 0–1**. romlib's own samples are in
  [−1, 1]: pass ``(x + 1) / 2`` (or ``romlib.io.to_pil(x)``).

A float outside [0, 1] (beyond a rounding slack of 1e-3), NaN or ±inf, another integer type, or
another layout (a CHW array, an HWC tensor, a batch of several) raises ``ValueError`` saying which
convention applies. Masks follow the same rules (:func:`load_mask` says what counts as "edit"); an
integer mask whose largest value is 1 is read as 0/1.
"""
from __future__ import annotations

import logging
import os
import stat
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch

from .checks import quote

if TYPE_CHECKING:  # PIL is imported where used
    from PIL import Image

__all__ = ["load_image", "load_mask", "to_tensor", "to_pil", "resize_image", "to_uint8", "Resample", "MAX_PIXELS",
           "check_pixels", "image_size", "quote", "MASK_ASPECT_TOLERANCE", "check_file", "CONVENTIONS"]

log = logging.getLogger(__name__)

Resample = Literal["bicubic", "lanczos"]

#: images above this many pixels (100 MP) are refused: a 100 MP edit needs about 2 GB of memory
MAX_PIXELS = 100_000_000
#: a mask whose width/height differs from the image's by more than this (relative) is refused
MASK_ASPECT_TOLERANCE = 0.01
#: the accepted value conventions, quoted by every refusal
CONVENTIONS = ("uint8 0-255, uint16 0-65535 (arrays), bool, or float in [0, 1]; numpy arrays are HxW or HxWxC "
               "(C = 1, 3, 4), tensors [H, W], [C, H, W] or [1, C, H, W] (C = 1, 3, 4)")
#: how far a float may stray outside [0, 1] (resampling overshoot) before it is refused; it is clipped
FLOAT_SLACK = 1e-3

_KINDS = {stat.S_ISFIFO: "a named pipe (FIFO)", stat.S_ISCHR: "a character device", stat.S_ISBLK: "a block device",
          stat.S_ISSOCK: "a socket", stat.S_ISDIR: "a folder"}


def check_file(path, what: str = "file") -> "Path":
    """``path`` as a :class:`~pathlib.Path` if it names a regular file (after symbolic links);
    ``FileNotFoundError`` when missing (a dangling link included), ``IsADirectoryError`` for a
    folder, ``ValueError`` for a named pipe, device or socket. Nothing is opened (a FIFO would
    block forever). An empty path (``""``, which would name the current folder) is a ``ValueError``."""
    if not os.fspath(path).strip():
        raise ValueError(f"{what} path is empty ({os.fspath(path)!r}); give the path of a file")
    p = Path(path)
    try:
        mode = os.stat(p).st_mode
    except FileNotFoundError:
        raise FileNotFoundError(f"{what} not found: {p}" + (" (a broken symbolic link)" if p.is_symlink() else "")) \
            from None
    except OSError as e:
        raise OSError(f"cannot read {what} {p}: {e.strerror or e}") from None
    if stat.S_ISREG(mode):
        return p
    kind = next((name for test, name in _KINDS.items() if test(mode)), "not a regular file")
    if stat.S_ISDIR(mode):
        raise IsADirectoryError(f"{what} {p} is a folder, not a file")
    raise ValueError(f"{what} {p} is {kind}, not a regular file; give a file")


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

    p = check_file(path, what)
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
        if not np.isfinite(a).all() or a.min() < -FLOAT_SLACK or a.max() > 65535:  # above: clipped to white
            raise ValueError(f"a {img.mode}-mode image with values in [{a.min():.4g}, {a.max():.4g}]: PIL images of "
                             "mode I or F must be finite and in 0..65535 (read as 0..1, 0..255 or 0..65535 by their "
                             "maximum)")
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


def _unit_values(a: np.ndarray, what: str, *, zero_one: bool = False) -> np.ndarray:
    """An array's values read by the conventions of this module → float32 in [0, 1].

    ``uint8`` / ``uint16`` / ``bool`` by their range; other integer types when their values lie in
    0..255 (read as uint8); floats must be finite and in [0, 1] (± :data:`FLOAT_SLACK`, clipped).
    ``zero_one`` (masks): an integer array whose largest value is 1 is read as 0/1."""
    if a.size == 0:
        raise ValueError(f"{what} is empty (shape {a.shape})")
    if a.dtype == bool:
        return a.astype(np.float32)
    if a.dtype.kind == "f":
        a = a.astype(np.float32)
        if not np.isfinite(a).all():
            bad = "NaN" if np.isnan(a).any() else "infinite"
            raise ValueError(f"{what} holds {bad} values; accepted: {CONVENTIONS}")
        lo, hi = float(a.min()), float(a.max())
        if lo < -FLOAT_SLACK or hi > 1 + FLOAT_SLACK:
            if lo >= -1 - FLOAT_SLACK and hi <= 1 + FLOAT_SLACK:
                hint = "values in [-1, 1], as romlib's samples: pass (x + 1) / 2"
            elif lo >= -FLOAT_SLACK and hi <= 255 + FLOAT_SLACK:
                hint = "values in 0..255: divide by 255, or pass uint8"
            else:
                hint = "rescale it to [0, 1]"
            raise ValueError(f"{what} is floating point with values in [{lo:.4g}, {hi:.4g}]; a float image or mask "
                             f"must be in [0, 1] ({hint}); accepted: {CONVENTIONS}")
        return np.clip(a, 0.0, 1.0)
    if a.dtype.kind not in "ui":
        raise ValueError(f"{what} has dtype {a.dtype}; accepted: {CONVENTIONS}")
    lo, hi = int(a.min()), int(a.max())
    if a.dtype == np.uint16:
        top = 65535.0
    elif 0 <= lo and hi <= 255:
        top = 255.0
    else:
        raise ValueError(f"{what} has dtype {a.dtype} with values in [{lo}, {hi}]; integers other than uint16 must "
                         f"be in 0..255; accepted: {CONVENTIONS}")
    if zero_one and hi <= 1:
        top = 1.0
    return a.astype(np.float32) / top


def _tensor_to_array(t: torch.Tensor, what: str, channels=(1, 3, 4)) -> np.ndarray:
    """A channels-first tensor ([H, W], [C, H, W] or [1, C, H, W]) → an HxW or HxWxC numpy array
    (values untouched; the dtype's convention is applied by :func:`_unit_values`)."""
    shape = tuple(t.shape)
    if t.ndim == 4:
        if shape[0] != 1:
            raise ValueError(f"{what} is a batch of {shape[0]} ({list(shape)}); pass one of them, x[i]")
        t = t[0]
    if t.ndim == 3 and t.shape[0] not in channels:
        hint = " (channels last? tensors are channels first: x.permute(2, 0, 1))" if t.shape[-1] in channels else ""
        raise ValueError(f"{what} is a tensor of shape {list(shape)}{hint}; accepted: {CONVENTIONS}")
    if t.ndim not in (2, 3):
        raise ValueError(f"{what} is a tensor of shape {list(shape)}; accepted: {CONVENTIONS}")
    t = t.detach().cpu()
    if t.is_floating_point():
        t = t.float()
    a = t.numpy()
    return a.transpose(1, 2, 0) if a.ndim == 3 else a


def _array_layout(a: np.ndarray, what: str) -> np.ndarray:
    """Check a numpy image's layout (HxW or HxWxC, C in 1, 3, 4); returns it."""
    if a.ndim == 3 and a.shape[2] not in (1, 3, 4):
        hint = " (channels first? numpy arrays are channels last: a.transpose(1, 2, 0))" if a.shape[0] in (1, 3, 4) else ""
        raise ValueError(f"{what} is an array of shape {a.shape}{hint}; accepted: {CONVENTIONS}")
    if a.ndim not in (2, 3):
        raise ValueError(f"{what} is an array of shape {a.shape}; accepted: {CONVENTIONS}")
    return a


def load_image(image, *, min_size: int = 1) -> "Image.Image":
    """A path, PIL image, numpy array or tensor → an RGB PIL image with EXIF orientation applied.

    Arrays and tensors follow the module's conventions (uint8 0–255, float 0–1; arrays HxW or
    HxWxC, tensors [C, H, W] or [1, C, H, W]); anything else is refused with a ``ValueError``."""
    from PIL import Image, ImageOps

    if isinstance(image, (str, os.PathLike)):
        img = _open(image)
    elif isinstance(image, Image.Image):
        img = image
    elif isinstance(image, (torch.Tensor, np.ndarray)):
        what = "the image"
        a = _tensor_to_array(image, what) if isinstance(image, torch.Tensor) else _array_layout(image, what)
        if a.dtype != np.uint8:
            a = (_unit_values(a, what) * 255.0 + 0.5).astype(np.uint8)
        elif a.size == 0:
            raise ValueError(f"{what} is empty (shape {a.shape})")
        img = Image.fromarray(np.ascontiguousarray(a.squeeze(-1) if a.ndim == 3 and a.shape[2] == 1 else a))
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
    if isinstance(mask, (torch.Tensor, np.ndarray)):
        a = mask
        if isinstance(a, torch.Tensor):
            while a.ndim > 2 and a.shape[0] == 1:  # [1, 1, H, W], [1, H, W]
                a = a[0]
            a = _tensor_to_array(a, name, channels=(3, 4))
        if a.ndim == 3 and a.shape[2] == 1:
            a = a[..., 0]
        a = _unit_values(a, name, zero_one=True)
        if a.ndim == 3 and a.shape[2] in (3, 4):
            a = a[..., :3].max(-1)
        m = torch.from_numpy(np.ascontiguousarray(a))
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
