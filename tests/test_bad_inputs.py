"""Every bad input of issue 12, table-driven: `romlib edit` exits 2 with one line naming the problem
(no traceback), and nothing is written or overwritten; the API raises the same messages.

Each CLI case runs in a fresh folder holding the input image, a mask and an earlier run; the folder
is hashed before and after: the goal is 0 files lost, 0 files written.
"""
import hashlib
import json
import logging
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from romlib.cli import main

LONG = "x" * 1500


def _png_header_only(path, width, height):
    """A PNG whose header claims width x height (a decompression bomb as far as PIL can tell)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16))
                     + chunk(b"IEND", b""))


@pytest.fixture
def scene(tmp_path):
    """photo.png (100x80), mask.png (50x40, same aspect), wide.png (a mask of another aspect), an
    earlier run in out/old (its result.json lists its files), a file named afile."""
    rng = np.random.RandomState(0)
    Image.fromarray((rng.rand(80, 100, 3) * 255).astype(np.uint8)).save(tmp_path / "photo.png")
    m = np.zeros((40, 50), np.uint8)
    m[10:30, 10:30] = 255
    Image.fromarray(m).save(tmp_path / "mask.png")
    Image.fromarray(np.full((40, 80), 255, np.uint8)).save(tmp_path / "wide.png")
    Image.fromarray(np.zeros((40, 50), np.uint8)).save(tmp_path / "black.png")
    (tmp_path / "notimage.png").write_text("not an image")
    (tmp_path / "truncated.png").write_bytes((tmp_path / "photo.png").read_bytes()[:33])
    (tmp_path / "afile").write_text("keep me")
    (tmp_path / "adir.png").mkdir()
    _png_header_only(tmp_path / "bomb.png", 15000, 12200)  # 183 MP: beyond PIL's own limit
    _png_header_only(tmp_path / "huge.png", 11000, 10000)  # 110 MP: beyond romlib's 100 MP
    old = tmp_path / "out" / "old"
    old.mkdir(parents=True)
    (old / "rank00_full.png").write_bytes(b"old")
    (old / "result.json").write_text(json.dumps({"files": {"full_res": ["rank00_full.png"], "json": ["result.json"]}}))
    return tmp_path


def _snapshot(root):
    return {str(p.relative_to(root)): hashlib.sha1(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*"))
            if p.is_file()}


def _cli(args, capsys):
    try:
        rc = main([str(a) for a in args])
    except SystemExit as e:  # argparse's own errors
        rc = e.code
    cap = capsys.readouterr()
    return rc, cap.err


# (case id, arguments after `romlib edit` ({d} = the scene folder), expected fragment of the error,
#  checked before any model is loaded)
CASES = [
    ("scale-inf", ["photo.png", "--scale", "inf"], "scale=inf is out of range", True),
    ("scale-1e308", ["photo.png", "--scale", "1e308"], "scale=1e+308 is out of range", True),
    ("scale-negative", ["photo.png", "--scale", "-1"], "scale=-1.0 is out of range", True),
    ("scale-nan", ["photo.png", "--scale", "nan"], "scale=nan", True),
    ("batch-size-0", ["photo.png", "--batch-size", "0"], "batch_size=0", True),
    ("threshold-nan", ["photo.png", "--threshold", "nan"], "threshold=nan", True),
    ("threshold-1", ["photo.png", "--threshold", "1"], "threshold=1.0", True),
    ("top-negative", ["photo.png", "--top", "-3"], "top=-3", True),
    ("samples-0", ["photo.png", "--samples", "0"], "samples=0", True),
    ("samples-1000", ["photo.png", "--samples", "1000"], "samples=1000", True),
    ("dilation-even", ["photo.png", "--dilation", "4"], "odd integer", True),
    ("seed-negative", ["photo.png", "--seed", "-1"], "seed=-1", True),
    ("steps-garbage", ["photo.png", "--steps", "abc"], "steps='abc'", True),
    ("scale-for-blended", ["photo.png", "--guidance", "blended", "--scale", "3"], "does not use scale", True),
    ("device-missing-gpu", ["photo.png", "--device", "cuda:7"], "device='cuda:7' is not available", True),
    ("device-garbage", ["photo.png", "--device", "gpu0"], "is not a device", True),
    ("image-missing", ["nope.jpg"], "image not found", True),
    ("image-not-an-image", ["notimage.png"], "cannot read", True),
    ("image-truncated", ["truncated.png"], "cannot read", True),
    ("image-is-a-folder", ["adir.png"], "is a folder", True),
    ("image-decompression-bomb", ["bomb.png"], "at most 100 MP", True),
    ("image-above-100MP", ["huge.png"], "at most 100 MP", True),
    ("mask-missing", ["photo.png", "--mask", "nomask.png"], "mask not found", True),
    ("mask-other-aspect", ["photo.png", "--mask", "wide.png"], "aspect ratio", True),
    ("mask-not-an-image", ["photo.png", "--mask", "notimage.png"], "cannot read", True),
    ("out-is-a-file", ["photo.png", "--out", "afile"], "is a file", True),
    ("out-below-a-file", ["photo.png", "--out", "afile/sub"], "is a file", True),
    ("out-unwritable", ["photo.png", "--out", "/proc/romlib-test-out"], "cannot be written", True),
    ("overwrite-onto-input-mask", ["photo.png", "--mask", "mask.png", "--out", ".", "--overwrite"],
     "would replace the input", True),
    ("mask-nothing-to-edit", ["photo.png", "--mask", "black.png"], "nothing to edit", False),
    ("long-ref-unknown-words", ["photo.png", "--ref", LONG, "--backend", "shapes"], "unknown word", False),
]


@pytest.mark.parametrize("argv,fragment,before_load", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_cli_bad_input_is_named_and_nothing_is_written(scene, capsys, monkeypatch, argv, fragment, before_load):
    import romlib.pipeline

    if before_load:
        def no_load(*a, **k):
            raise AssertionError("a model was loaded before the input was checked")

        monkeypatch.setattr(romlib.pipeline.ROMPipeline, "from_pretrained", classmethod(no_load))
    monkeypatch.chdir(scene)
    before = _snapshot(scene)
    args = ["edit", *argv] + ([] if "--ref" in argv else ["--ref", "x"])
    if "--backend" not in args:
        args += ["--backend", "tiny"]
    if "--out" not in args:
        args += ["--out", "out"]
    rc, err = _cli(args + ["--no-upsample"], capsys)
    assert rc == 2, err
    assert err.startswith("romlib edit: error: ") and fragment in err, err
    assert "Traceback" not in err and len(err.splitlines()) == 1
    assert "x" * 81 not in err  # a long text is never echoed whole
    assert _snapshot(scene) == before  # nothing written, nothing overwritten
    assert sorted(p.name for p in (scene / "out").iterdir()) == ["old"]


def test_argparse_errors_exit_2(scene, capsys, monkeypatch):
    monkeypatch.chdir(scene)
    rc, err = _cli(["edit", "photo.png", "--frame", "zoom"], capsys)
    assert rc == 2 and "invalid choice" in err and "Traceback" not in err


@pytest.mark.parametrize("where,fragment", [("sampling", "interrupted, nothing written"),
                                            ("saving", "interrupted, nothing written")])
def test_ctrl_c_exits_130_and_leaves_no_partial_file(scene, capsys, monkeypatch, where, fragment):
    import romlib.pipeline
    import romlib.result

    def interrupt(*a, **k):
        raise KeyboardInterrupt

    if where == "sampling":
        monkeypatch.setattr(romlib.pipeline.ROMPipeline, "edit", interrupt)
    else:  # the second full-resolution file: the first one and the frames are already written
        real = romlib.result.FullRes.compute
        calls = []

        def compute(self, i):
            calls.append(i)
            if len(calls) == 2:
                raise KeyboardInterrupt
            return real(self, i)

        monkeypatch.setattr(romlib.result.FullRes, "compute", compute)
    monkeypatch.chdir(scene)
    before = _snapshot(scene)
    rc, err = _cli(["edit", "photo.png", "--ref", "x", "--backend", "tiny", "--samples", "2", "--no-upsample",
                    "--best-anyway", "--out", "out"], capsys)
    assert rc == 130 and fragment in err and "Traceback" not in err
    assert _snapshot(scene) == before and sorted(p.name for p in (scene / "out").iterdir()) == ["old"]
    assert not list(scene.rglob(".*.tmp*"))


def test_out_of_memory_and_disk_full_are_named(scene, capsys, monkeypatch):
    import shutil

    import romlib.pipeline

    def oom(*a, **k):
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.chdir(scene)
    monkeypatch.setattr(romlib.pipeline.ROMPipeline, "edit", oom)
    rc, err = _cli(["edit", "photo.png", "--ref", "x", "--backend", "tiny", "--out", "out"], capsys)
    assert rc == 2 and "lower --batch-size" in err and "Traceback" not in err
    monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10**9, 10**9 - 1000, 1000))
    rc, err = _cli(["edit", "photo.png", "--ref", "x", "--backend", "tiny", "--out", "out"], capsys)
    assert rc == 2 and "not enough free space" in err


def test_runs_never_overwrite_each_other_and_overwrite_replaces_only_its_run(scene, capsys, monkeypatch):
    monkeypatch.chdir(scene)
    common = ["--mask", "mask.png", "--backend", "tiny", "--no-upsample", "--target", "a cat"]
    assert _cli(["edit", "photo.png", *common, "--samples", "3", "--out", "out"], capsys)[0] == 0
    assert _cli(["edit", "photo.png", *common, "--samples", "3", "--out", "out"], capsys)[0] == 0  # the same second
    runs = sorted(p for p in (scene / "out").iterdir() if p.name != "old")
    assert len(runs) == 2 and runs[0] != runs[1]
    first = _snapshot(runs[0])
    listed = json.loads((runs[0] / "result.json").read_text())["files"]
    assert sorted(n for group in listed.values() for n in group) == sorted(first)  # exactly the run's files
    # --overwrite into the first run: its 3 ranked files are replaced by 1, nothing else is touched
    (runs[0] / "notes.txt").write_text("mine")
    assert _cli(["edit", "photo.png", *common, "--samples", "1", "--out", runs[0], "--overwrite"], capsys)[0] == 0
    names = sorted(p.name for p in runs[0].iterdir())
    assert names == ["mask.png", "notes.txt", "rank00_full.png", "rank00_sample00.png", "result.json", "summary.png"]
    assert _snapshot(runs[1]) and (scene / "mask.png").exists()


# ---------------------------------------------------------------------------------------------- the API
@pytest.fixture(scope="module")
def pipe():
    from romlib.pipeline import ROMPipeline

    return ROMPipeline.from_pretrained("tiny", device="cpu")


API_CASES = [
    ("scale-inf", dict(scale=float("inf")), "scale=inf"),
    ("batch-size-0", dict(batch_size=0), "batch_size=0"),
    ("threshold-nan", dict(threshold=float("nan")), "threshold=nan"),
    ("samples-257", dict(samples=257), "samples=257"),
    ("mask-other-aspect", dict(mask=np.ones((10, 40))), "aspect ratio"),
    ("mask-black", dict(mask=np.zeros((40, 50))), "nothing to edit"),
    ("mask-wrong-type", dict(mask=3), "cannot use int as a mask"),
]


@pytest.mark.parametrize("kw,fragment", [c[1:] for c in API_CASES], ids=[c[0] for c in API_CASES])
def test_api_bad_input_raises_the_same_message(pipe, kw, fragment):
    image = Image.new("RGB", (100, 80))
    with pytest.raises((ValueError, TypeError), match=fragment):
        pipe.edit(image, "x", "y", samples=kw.pop("samples", 1), progress=False, upsample=False, **kw)


def test_api_refuses_images_above_the_pixel_limit(pipe):
    from romlib.io import MAX_PIXELS, load_image

    with pytest.raises(ValueError, match="at most 100 MP"):
        load_image(Image.new("L", (10001, MAX_PIXELS // 10001 + 1)))


def test_a_red_mask_is_read_as_its_message_says(caplog):
    """Any channel >= 128 = edit: red is edited (and logged as a colour mask), dark red is kept."""
    from romlib.io import load_mask

    a = np.zeros((40, 50, 3), np.uint8)
    a[5:15, 5:15] = (255, 0, 0)  # red: edit
    a[20:30, 20:30] = (100, 0, 0)  # dark red: keep
    with caplog.at_level(logging.WARNING):
        m = load_mask(Image.fromarray(a), (100, 80))
    assert m[10:30, 10:30].all() and not m[40:60, 40:60].any() and m.sum() == 400
    assert "in colour" in caplog.text and "R, G, B >= 128" in caplog.text
    with pytest.raises(ValueError, match="brightest channel is >= 128"):
        load_mask(Image.fromarray(np.full((40, 50, 3), (100, 0, 0), np.uint8)), (100, 80))


def test_a_mask_covering_everything_is_warned(pipe, caplog):
    with caplog.at_level(logging.WARNING):
        pipe.edit(Image.new("RGB", (100, 80)), "", "a cat", mask=np.ones((80, 100)), samples=1, progress=False,
                  upsample=False)
    assert "nothing of the input survives" in caplog.text


def test_truncated_and_unrepresentable_prompts_are_warned(caplog):
    from romlib.models.tokenizers import ByteTokenizer
    from romlib.shapes.scenes import WordTokenizer

    with caplog.at_level(logging.WARNING):
        ByteTokenizer().batch(["a red car " * 20], 128)
        WordTokenizer().batch(["the red circle 🚗 猫"], 16)
    assert "is 200 tokens" in caplog.text and "reads 128" in caplog.text
    assert "cannot represent '🚗猫'" in caplog.text
    assert all(len(line) < 300 for line in caplog.text.splitlines())


def test_api_save_never_overwrites_and_never_writes_over_an_input(pipe, tmp_path):
    img = tmp_path / "mask.png"  # an input named like an output
    Image.new("RGB", (100, 80), (10, 20, 30)).save(img)
    m = np.zeros((80, 100), np.uint8)
    m[20:40, 20:40] = 255
    r = pipe.edit(str(img), "", "a cat", mask=m, samples=2, progress=False, upsample=False)
    with pytest.raises(FileExistsError, match="input of this run"):
        r.save(tmp_path, overwrite=True)
    with pytest.raises(FileExistsError, match="refusing to (over)?write"):
        r.save(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mask.png"]  # nothing left behind by either refusal
    out = tmp_path / "run"
    written = r.save(out, top=1)
    assert len(written["full_res"]) == 1 and len(written["frames"]) == 2
    with pytest.raises(FileExistsError):
        r.save(out)
    assert json.loads((out / "result.json").read_text())["files"]["full_res"] == ["rank00_full.png"]
    assert np.array_equal(np.asarray(Image.open(img)), np.asarray(r.input_image))  # the input is untouched


def test_long_texts_are_quoted_short_in_api_errors():
    from romlib.contracts import NoObjectFound
    from romlib.shapes.scenes import parse_text

    long = "the " + "very " * 300 + "red car"
    assert len(str(NoObjectFound(long, 0.01, (0, 0, 1, 1), 0.1))) < 400
    with pytest.raises(ValueError) as e:
        parse_text(long + " 🚗")
    assert len(str(e.value)) < 400 and "..." in str(e.value)


def test_many_samples_warn_with_the_expected_time(caplog):
    import logging

    from romlib.models.tiny import tiny_backend
    from romlib.pipeline import ROMPipeline

    pipe = ROMPipeline(tiny_backend(), device="cpu")
    img = np.zeros((64, 64, 3), np.uint8)
    mask = np.zeros((64, 64), np.uint8)
    mask[16:48, 16:48] = 255
    with caplog.at_level(logging.WARNING, logger="romlib.pipeline"):
        pipe.edit(img, "x", "a cat", samples=65, mask=mask, steps="2", upsample=False, progress=False, rank="none")
    assert any("samples=65" in r.getMessage() and "B = 24" in r.getMessage() for r in caplog.records)
