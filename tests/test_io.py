import numpy as np
import pytest
import torch
from PIL import Image

from romlib.io import load_image, load_mask, to_pil, to_tensor


def test_exif_orientation_is_honoured(tmp_path):
    img = Image.new("RGB", (40, 20), (255, 0, 0))
    img.paste((0, 0, 255), (0, 0, 10, 20))  # blue on the left
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise on display
    p = tmp_path / "rot.jpg"
    img.save(p, exif=exif.tobytes())
    out = load_image(p)
    assert out.size == (20, 40)  # portrait after orientation
    a = np.asarray(out)
    assert a[2, 10, 2] > 200 and a[2, 10, 0] < 60  # blue is now on top


@pytest.mark.parametrize("mode", ["L", "LA", "RGBA", "P", "I;16", "CMYK", "1"])
def test_any_mode_becomes_rgb(mode, tmp_path):
    base = Image.new("RGB", (33, 35), (10, 200, 30))
    if mode == "I;16":
        img = Image.fromarray((np.full((35, 33), 40000)).astype(np.uint16))
    else:
        img = base.convert(mode)
    p = tmp_path / f"x.{'tiff' if mode in ('CMYK', 'I;16') else 'png'}"
    img.save(p)
    out = load_image(p)
    assert out.mode == "RGB" and out.size == (33, 35)
    if mode == "I;16":
        assert abs(int(np.asarray(out)[0, 0, 0]) - round(40000 / 65535 * 255)) <= 1


def test_alpha_is_composited_on_white():
    img = Image.new("RGBA", (32, 32), (0, 0, 0, 0))
    assert np.asarray(load_image(img))[0, 0].tolist() == [255, 255, 255]


def test_bad_paths_and_sizes_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.png"):
        load_image(tmp_path / "nope.png")
    (tmp_path / "bad.png").write_text("not an image")
    with pytest.raises(ValueError, match="bad.png"):
        load_image(tmp_path / "bad.png")
    with pytest.raises(ValueError, match="at least 32"):
        load_image(Image.new("RGB", (20, 40)), min_size=32)
    with pytest.raises(TypeError, match="int"):
        load_image(3)


def test_arrays_and_tensors():
    a = (np.random.RandomState(0).rand(16, 12, 3) * 255).astype(np.uint8)
    assert np.array_equal(np.asarray(load_image(a)), a)
    t = torch.from_numpy(a).permute(2, 0, 1).float() / 255
    assert np.abs(np.asarray(load_image(t)).astype(int) - a).max() <= 1
    assert np.array_equal(np.asarray(to_pil(to_tensor(Image.fromarray(a)))), a)


def test_mask_is_resized_and_must_edit_something(tmp_path):
    m = Image.new("L", (10, 5), 0)  # the image's aspect ratio (another one is refused: test_mask_aspect...)
    m.paste(255, (0, 0, 5, 5))
    p = tmp_path / "m.png"
    m.save(p)
    out = load_mask(p, (40, 20))
    assert out.shape == (20, 40) and out[:, :18].all() and not out[:, 22:].any()
    with pytest.raises(ValueError, match="nothing to edit"):
        load_mask(Image.new("L", (8, 8), 0), (8, 8))
