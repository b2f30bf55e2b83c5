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
    ("steps-1", ["photo.png", "--steps", "1"], "steps='1' is out of range; accepted: a step count >= 2", True),
    ("upsample-steps-1", ["photo.png", "--upsample-steps", "1"], "upsample_steps='1' is out of range", True),
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

    from romlib.backends import tiny_backend
    from romlib.pipeline import ROMPipeline

    pipe = ROMPipeline(tiny_backend(), device="cpu")
    img = np.zeros((64, 64, 3), np.uint8)
    mask = np.zeros((64, 64), np.uint8)
    mask[16:48, 16:48] = 255
    with caplog.at_level(logging.WARNING, logger="romlib.pipeline"):
        pipe.edit(img, "x", "a cat", samples=65, mask=mask, steps="2", upsample=False, progress=False, rank="none")
    assert any("samples=65" in r.getMessage() and "B = 24" in r.getMessage() for r in caplog.records)


# ---------------------------------------------------------------------------------------------- issue 20: every input named
import os  # noqa: E402
import signal  # noqa: E402

import torch  # noqa: E402

from romlib.io import CONVENTIONS, load_image, load_mask  # noqa: E402

IMAGE_REFUSED = [
    ("numpy-float-0-255", lambda: np.full((8, 8, 3), 200.0), "divide by 255"),
    ("tensor-minus1-1", lambda: torch.linspace(-1, 1, 192).reshape(3, 8, 8), "(x + 1) / 2"),
    ("numpy-nan", lambda: np.full((8, 8, 3), np.nan), "holds NaN"),
    ("tensor-inf", lambda: torch.full((3, 8, 8), float("inf")), "holds infinite"),
    ("tensor-channels-last", lambda: torch.rand(8, 8, 3), "x.permute(2, 0, 1)"),
    ("numpy-channels-first", lambda: np.random.rand(3, 8, 9), "a.transpose(1, 2, 0)"),
    ("tensor-batch-of-2", lambda: torch.rand(2, 3, 8, 8), "a batch of 2"),
    ("int64-above-255", lambda: np.full((8, 8), 300), "must be in 0..255"),
    ("complex", lambda: np.zeros((8, 8), np.complex64), "dtype complex64"),
    ("empty", lambda: np.zeros((0, 8, 3), np.float32), "is empty"),
    ("pil-float-nan", lambda: Image.fromarray(np.full((8, 8), np.nan, np.float32)), "must be finite and in 0..65535"),
    ("pil-float-minus1-1", lambda: Image.fromarray(np.linspace(-1, 1, 64, dtype=np.float32).reshape(8, 8)), "in 0..65535"),
    ("pil-int-above-65535", lambda: Image.fromarray(np.full((8, 8), 70000, np.int32)), "values in [7e+04, 7e+04]"),
]
IMAGE_READ = [  # (case, input, the pixel [0, 0] read)
    ("uint8-tensor", lambda: torch.full((3, 8, 8), 200, dtype=torch.uint8), 200),
    ("float-tensor-0-1", lambda: torch.full((1, 3, 8, 8), 0.5), 128),
    ("bool-array", lambda: np.ones((8, 8), bool), 255),
    ("int64-in-0-255", lambda: np.full((8, 8, 3), 17), 17),
    ("uint16-array", lambda: np.full((8, 8), 65535, np.uint16), 255),
    ("half-tensor", lambda: torch.full((3, 8, 8), 1.0, dtype=torch.float16), 255),
]
MASK_REFUSED = [
    ("float-0-255", lambda: np.full((8, 8), 255.0), "divide by 255"),
    ("nan", lambda: torch.full((8, 8), float("nan")), "holds NaN"),
    ("minus1-1", lambda: torch.linspace(-1, 1, 64).reshape(1, 1, 8, 8), "(x + 1) / 2"),
]


@pytest.mark.parametrize("make,fragment", [c[1:] for c in IMAGE_REFUSED + MASK_REFUSED],
                         ids=[c[0] for c in IMAGE_REFUSED] + ["mask-" + c[0] for c in MASK_REFUSED])
def test_arrays_and_tensors_are_read_by_the_conventions_or_refused_naming_them(make, fragment):
    """Never silently white or black: a value or layout outside the conventions is refused, the
    message quoting them; the accepted ones read the pixel they hold."""
    is_mask = fragment in [c[2] for c in MASK_REFUSED] and make in [c[1] for c in MASK_REFUSED]
    with pytest.raises(ValueError) as e:
        load_mask(make(), (8, 8)) if is_mask else load_image(make())
    assert fragment in str(e.value), str(e.value)
    assert any(w in str(e.value) for w in ("[0, 1]", "batch", "empty", "mode I or F"))
    for _, read, pixel in IMAGE_READ:
        assert np.asarray(load_image(read()))[0, 0].tolist() in ([pixel] * 3, pixel), read()
    assert load_mask(torch.full((1, 1, 8, 8), 255, dtype=torch.uint8), (8, 8)).all()  # uint8 255 = edit
    assert load_mask(np.ones((8, 8), np.uint8), (8, 8)).all()  # an integer 0/1 mask is read as 0/1
    with pytest.raises(ValueError, match="nothing to edit"):
        load_mask(torch.full((8, 8), 100, dtype=torch.uint8), (8, 8))  # 100 of 255: keep, not "nonzero = edit"
    assert "float in [0, 1]" in CONVENTIONS


@pytest.fixture
def odd_files(tmp_path):
    """A named pipe, a character device, a folder and a broken symbolic link (no regular file)."""
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    (tmp_path / "folder.png").mkdir()
    (tmp_path / "broken.png").symlink_to(tmp_path / "nowhere.png")
    return {"fifo": (fifo, "named pipe"), "device": ("/dev/null", "character device"),
            "folder": (tmp_path / "folder.png", "is a folder"), "broken-link": (tmp_path / "broken.png", "broken symbolic")}


def _alarm(seconds):
    def fire(*a):
        raise TimeoutError("blocked: a file was opened before it was checked")

    signal.signal(signal.SIGALRM, fire)
    signal.alarm(seconds)


@pytest.mark.parametrize("kind", ["fifo", "device", "folder", "broken-link"])
@pytest.mark.parametrize("reader", ["image", "mask", "csv", "weights", "cli-image", "cli-mask"])
def test_non_regular_files_are_refused_before_they_are_opened(odd_files, tmp_path, capsys, monkeypatch, kind, reader):
    from romlib.shapes.backend import load_inpaint_model
    from romlib.study import load_csv

    path, fragment = odd_files[kind]
    _alarm(20)  # a FIFO that is opened blocks forever: fail instead
    try:
        if reader.startswith("cli"):
            Image.new("RGB", (40, 40)).save(tmp_path / "ok.png")
            monkeypatch.chdir(tmp_path)
            args = [path, "--ref", "x"] if reader == "cli-image" else ["ok.png", "--mask", path, "--ref", "x"]
            rc, err = _cli(["edit", *args, "--backend", "tiny", "--out", "out"], capsys)
            assert rc == 2 and fragment in err and "Traceback" not in err, err
            assert not (tmp_path / "out").exists()
            return
        if reader == "weights":
            if kind == "device":
                pytest.skip("a weights folder cannot hold /dev/null under its name")
            wdir = tmp_path / "w"
            wdir.mkdir()
            target = wdir / "inpaint.pt"
            if kind == "fifo":
                os.mkfifo(target)
            elif kind == "folder":
                target.mkdir()
            else:
                target.symlink_to(tmp_path / "nowhere.pt")
            call = lambda: load_inpaint_model(wdir)  # noqa: E731
        else:
            call = {"image": lambda: load_image(path), "mask": lambda: load_mask(path, (8, 8)),
                    "csv": lambda: load_csv(path)}[reader]
        with pytest.raises((ValueError, OSError)) as e:
            call()
        assert fragment in str(e.value), str(e.value)
    finally:
        signal.alarm(0)


SEED_CASES = [  # (command line, fragment)
    (["edit", "photo.png", "--ref", "x", "--seed", str(2**63)], "seed=9223372036854775808 is out of range"),
    (["edit", "photo.png", "--ref", "x", "--seed", "-1"], "seed=-1 is out of range"),
    (["demo", "--seed", str(2**64)], "--seed=18446744073709551616 is out of range"),
    (["shapes-bench", "--seed", str(2**63)], "in [0, 2**63)"),
    (["shapes-train", "--seed", "-5"], "--seed=-5 is out of range"),
]


@pytest.mark.parametrize("argv,fragment", SEED_CASES, ids=[" ".join(c[0][:1] + c[0][-2:]) for c in SEED_CASES])
def test_seeds_numpy_scalars_and_bools(scene, capsys, monkeypatch, argv, fragment):
    """Seeds outside [0, 2**63) are refused (they would alias a smaller seed); numpy integers are
    integers; True is not a number, nor a rank."""
    from romlib.config import EditConfig
    import romlib.study as st

    monkeypatch.chdir(scene)
    before = _snapshot(scene)
    rc, err = _cli([*argv, *(["--backend", "tiny", "--out", "out"] if argv[0] == "edit" else [])], capsys)
    assert rc == 2 and fragment in err and "Traceback" not in err, err
    assert _snapshot(scene) == before
    cfg = EditConfig(seed=np.int64(7), samples=np.int32(2), scale=np.float32(2.5), best_anyway=np.bool_(True)).validate()
    assert (cfg.seed, cfg.samples, cfg.scale, cfg.best_anyway) == (7, 2, 2.5, True) and type(cfg.seed) is int
    from romlib.sampling.diffusion import sample_generators

    with pytest.raises(ValueError, match=r"seed=9223372036854775808 is out of range"):
        sample_generators(2**63, 1)  # every API path's noise goes through here
    for bad in (dict(seed=2**63), dict(seed=True), dict(samples=True), dict(progress="no"), dict(dilation=np.float64(3))):
        with pytest.raises(ValueError, match=f"{next(iter(bad))}=.* is out of range"):
            EditConfig(**bad).validate()
    img = lambda c: np.full((8, 8, 3), c, np.uint8)  # noqa: E731
    cases = [dict(id="c0", image=img(0), target="t", outputs={m: img(40 * k) for k, m in enumerate(st.METHODS)})]
    s = st.RankingSession(cases, user="a")
    with pytest.raises(ValueError, match="rank True of 'A' is a bool"):
        s.record("c0", {"A": True, "B": 2, "C": 3, "D": 4})
    assert sorted(s.record("c0", {"A": np.int64(1), "B": 2, "C": 3, "D": 4}).values()) == [1, 2, 3, 4]


SUBCOMMAND_CASES = [  # (command line, fragment of the one-line error)
    (["bench", "--steps", "0"], "--steps=0 is out of range"),
    (["bench", "--steps", "1"], "--steps=1 is out of range; accepted: an integer in 2..1000"),
    (["bench", "--json", "pipe.json"], "--json file pipe.json is a named pipe (FIFO)"),  # blocked forever after the run
    (["bench", "--json", "nowhere/rows.json"], "--json nowhere/rows.json: no folder nowhere"),
    (["bench", "--cache-dir", "afile"], "--cache-dir afile is a file, not a folder"),
    (["bench", "--upsample-steps", "1"], "--upsample-steps='1' is out of range; accepted: a step count >= 2"),
    (["shapes-bench", "--steps", "1"], "--steps='1' is out of range"),
    (["bench", "--batch", "2", "0"], "--batch=0 is out of range"),
    (["bench", "--micro-batch", "0"], "--micro-batch=0"),
    (["bench", "--upsample-steps", "x"], "--upsample-steps='x'"),
    (["bench", "--paths", "eager", "turbo"], "--paths turbo: unknown"),
    (["bench", "--reference", "nowhere"], "is not a glide-text2im checkout"),
    (["shapes-bench", "--samples", "0"], "--samples=0 is out of range"),
    (["shapes-bench", "--cases", "0"], "--cases=0 is out of range"),
    (["shapes-bench", "--scales", "nan"], "nan is out of range"),
    (["shapes-bench", "--scales=-3"], "-3 is out of range"),
    (["shapes-bench", "--scales", "1,abc"], "'abc' is not a float"),
    (["shapes-bench", "--methods", ""], "--methods='' is empty"),
    (["shapes-bench", "--methods", "ccf,nope"], "unknown 'nope'"),
    (["shapes-bench", "--dilations", "2"], "odd integers"),
    (["shapes-bench", "--steps", "0"], "--steps='0'"),
    (["shapes-bench", "--threads", "0"], "--threads=0"),
    (["shapes-bench", "--weights", "nowhere"], "no such folder"),
    (["shapes-train", "--threads", "-1"], "--threads=-1 is out of range"),
    (["shapes-train", "--batch-size", "0"], "--batch-size=0 is out of range"),
    (["shapes-train", "--device", "meta"], "--device='meta' cannot run"),
    (["shapes-train", "--device", "cuda:9"], "is not available here"),
    (["shapes-train", "--lr", "nan"], "--lr=nan"),
    (["shapes-train", "--minutes", "0"], "--minutes=0.0"),
    (["shapes-train", "--p-source", "1.5"], "--p-source=1.5"),
    (["demo", "--samples", "0"], "--samples=0 is out of range"),
    (["edit", "photo.png", "--ref", "x", "--device", "meta"], "--device='meta' cannot run"),
    (["edit", "photo.png", "--ref", "x", "--device", "cpu:9"], "--device='cpu:9': there is one CPU device"),
    (["edit", "photo.png", "--ref", "x", "--out", "dangling"], "broken symbolic link"),
    (["edit", "photo.png", "--ref", "x", "--out", "dangling", "--overwrite"], "broken symbolic link"),
    (["shapes-bench", "--out", "dangling"], "--out 'dangling' is a broken symbolic link"),  # found after the run
    (["shapes-train", "--out", "dangling"], "--out 'dangling' is a broken symbolic link"),  # was [Errno 17]
    (["shapes-train", "--out", "fifo_run", "--resume"], "--resume checkpoint fifo_run/inpaint_checkpoint.pt is a named pipe"),
]


@pytest.mark.parametrize("argv,fragment", [c[:2] for c in SUBCOMMAND_CASES],
                         ids=[" ".join(c[0][:1] + c[0][-2:]) for c in SUBCOMMAND_CASES])
def test_every_subcommand_checks_its_arguments_before_work(scene, capsys, monkeypatch, argv, fragment):
    import romlib.bench
    import romlib.pipeline
    import romlib.shapes.bench
    import romlib.shapes.demo
    import romlib.shapes.train

    def no_work(*a, **k):
        raise AssertionError("work started before the arguments were checked")

    for mod, name in ((romlib.bench, "run_bench"), (romlib.shapes.bench, "run_benchmark"),
                      (romlib.shapes.train, "train_inpaint"), (romlib.shapes.train, "train_ranker"),
                      (romlib.shapes.demo, "run")):
        monkeypatch.setattr(mod, name, no_work)
    monkeypatch.setattr(romlib.pipeline.ROMPipeline, "from_pretrained", classmethod(no_work))
    monkeypatch.chdir(scene)
    (scene / "dangling").symlink_to(scene / "gone")
    os.mkfifo(scene / "pipe.json")
    (scene / "fifo_run").mkdir()
    os.mkfifo(scene / "fifo_run" / "inpaint_checkpoint.pt")
    before = _snapshot(scene)
    extra = ["--backend", "tiny"] if argv[0] == "edit" else []
    rc, err = _cli([*argv, *extra] + ([] if "--out" in argv or argv[0] == "bench" else ["--out", "new_out"]), capsys)
    assert rc == 2, err
    assert err.startswith(f"romlib {argv[0]}: error: ") and fragment in err, err
    assert "Traceback" not in err and len(err.splitlines()) == 1
    assert _snapshot(scene) == before and not (scene / "new_out").exists()


def test_the_free_space_estimate_is_what_a_run_writes(scene, capsys, monkeypatch):
    """A small run needs well under 2 MB: 2 MB free is enough (it was refused as 'about 4 MB');
    a disk that is really too small is still refused before work."""
    import shutil

    from romlib.cli import _need_bytes

    small = _need_bytes(100, 80, 1, 4, frame=32)
    assert small < 1_000_000 and _need_bytes(4000, 3000, 24, 4) > 4 * 4000 * 3000 * 3
    monkeypatch.chdir(scene)
    usage = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(p)._replace(free=2_000_000))
    rc, err = _cli(["edit", "photo.png", "--mask", "mask.png", "--backend", "tiny", "--samples", "1", "--steps", "2",
                    "--no-upsample", "--out", "small"], capsys)
    assert rc == 0, err
    written = sum(p.stat().st_size for p in (scene / "small").rglob("*") if p.is_file())
    assert written < _need_bytes(100, 80, 1, 4, frame=64)
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(p)._replace(free=100_000))
    rc, err = _cli(["edit", "photo.png", "--mask", "mask.png", "--backend", "tiny", "--out", "small2"], capsys)
    assert rc == 2 and "not enough free space" in err and not (scene / "small2").exists()


def _bad_weights(folder, kind):
    from romlib.shapes.backend import WEIGHTS_DIR

    folder.mkdir()
    raw = (WEIGHTS_DIR / "inpaint.pt").read_bytes()
    ck = torch.load(WEIGHTS_DIR / "inpaint.pt", weights_only=True)
    sd = dict(ck["state_dict"])
    first = next(k for k, v in sd.items() if v.is_floating_point())
    path = folder / "inpaint.pt"
    if kind == "garbage":
        path.write_bytes(b"<html>captive portal</html>" * 20)
    elif kind == "truncated":
        path.write_bytes(raw[: len(raw) // 2])
    elif kind == "nan":
        torch.save({**ck, "state_dict": {**sd, first: torch.full_like(sd[first], float("nan"))}}, path)
    elif kind == "missing-key":
        torch.save({**ck, "state_dict": {k: v for k, v in sd.items() if k != first}}, path)
    elif kind == "wrong-shape":
        torch.save({**ck, "state_dict": {**sd, first: torch.zeros(3)}}, path)
    elif kind == "not-a-dict":
        torch.save([1, 2, 3], path)
    return first


@pytest.mark.parametrize("kind,fragment", [("garbage", "is damaged: it cannot be read"),
                                           ("truncated", "is damaged: it cannot be read"),
                                           ("nan", "non-finite values (NaN or inf)"),
                                           ("missing-key", "Missing key"), ("wrong-shape", "size mismatch"),
                                           ("not-a-dict", "expected a dict, got a list")])
def test_damaged_weights_are_named_as_damaged(tmp_path, capsys, monkeypatch, kind, fragment):
    import romlib.shapes.bench

    first = _bad_weights(tmp_path / "w", kind)
    monkeypatch.setattr(romlib.shapes.bench, "run_benchmark", lambda *a, **k: pytest.fail("ran on damaged weights"))
    monkeypatch.chdir(tmp_path)
    rc, err = _cli(["shapes-bench", "--weights", "w", "--out", "bench_out"], capsys)
    assert rc == 2 and fragment in err and "w/inpaint.pt" in err and "Traceback" not in err, err
    assert not (tmp_path / "bench_out").exists()
    if kind == "nan":
        assert repr(first) in err  # the tensor is named


def test_a_weights_folder_without_a_usable_ranker_says_so(tmp_path, caplog):
    """No ranker.pt: the shipped one, with a warning (once per folder); a ranker.pt that is a FIFO or
    damaged is named, never silently swapped for the shipped one."""
    import shutil

    from romlib.shapes.backend import WEIGHTS_DIR, load_backend

    folder = tmp_path / "w"
    folder.mkdir()
    shutil.copy(WEIGHTS_DIR / "inpaint.pt", folder / "inpaint.pt")
    with caplog.at_level(logging.WARNING):
        load_backend("cpu", folder)
        load_backend("cpu", folder)
    assert caplog.text.count("has no ranker.pt") == 1 and str(folder) in caplog.text
    os.mkfifo(folder / "ranker.pt")
    _alarm(20)
    try:
        with pytest.raises(ValueError, match="ranker.pt is a named pipe"):
            load_backend("cpu", folder)
    finally:
        signal.alarm(0)
    (folder / "ranker.pt").unlink()
    (folder / "ranker.pt").write_bytes(b"junk" * 10)
    with pytest.raises(ValueError, match="ranker.pt is damaged"):
        load_backend("cpu", folder)


def test_api_arguments_are_checked_before_work(pipe, tmp_path):
    """A dict as config is read as settings; the other calls refuse clearly, naming the value."""
    import romlib.study as st

    image = Image.new("RGB", (64, 64))
    mask = np.zeros((64, 64))
    mask[16:48, 16:48] = 1
    r = pipe.edit(image, "x", "y", {"samples": 1, "mask": mask, "steps": "2", "upsample": False, "progress": False})
    assert r.settings["samples"] == 1 and r.settings["steps"] == "2"
    # numpy scalars are numbers wherever Python numbers are
    assert len(pipe.trace(image, "x", "y", mask=mask, dilation=np.int64(3), seed=np.int64(1), sample=np.int64(1),
                          steps="2")) == 2
    assert pipe.segment(image, "x", threshold=np.float32(0.5), best_anyway=True).mask.shape == (64, 64)
    cases = [
        (lambda: pipe.edit(image, "x", "y", ["samples", 1]), TypeError, "config must be an EditConfig or a dict"),
        (lambda: pipe.edit(image, "x", "y", {"sample": 1}), TypeError, "unknown edit setting(s) sample"),
        (lambda: pipe.edit(image, "x", "y", mask=mask, progress="no"), ValueError, "progress='no' is out of range"),
        (lambda: pipe.trace(image, "x", "y", sample=-1, mask=mask), ValueError, "sample=-1 is out of range"),
        (lambda: pipe.compare(image, "x", "y", guidances=(), mask=mask), ValueError, "guidances=() is empty"),
        (lambda: pipe.compare(image, "x", "y", guidances=("ccf", "nope"), mask=mask), ValueError, "guidance='nope'"),
        (lambda: pipe.compare(image, "x", "y", samples=0, mask=mask), ValueError, "samples=0 is out of range"),
        (lambda: st.load_csv([]), ValueError, "load_csv got no file"),
        (lambda: pipe.segment(image, "x", threshold=2), ValueError, "threshold=2 is out of range"),
        (lambda: pipe.segment(image, "x", min_score=-1), ValueError, "min_score=-1 is out of range"),
        (lambda: pipe.prepare(image, "x", threshold=0), ValueError, "threshold=0 is out of range"),
        (lambda: pipe.prepare(image, "x", mask=mask, frame="sideways"), ValueError, "frame='sideways'"),
        (lambda: r.save(tmp_path / "loop"), FileExistsError, "loop' is a broken symbolic link"),
    ]
    (tmp_path / "loop").symlink_to(tmp_path / "loop2")  # a symbolic link loop as the output folder
    (tmp_path / "loop2").symlink_to(tmp_path / "loop")
    for call, kind, fragment in cases:
        with pytest.raises(kind) as e:
            call()
        assert fragment in str(e.value), (fragment, str(e.value))
    img = lambda c: np.full((8, 8, 3), c, np.uint8)  # noqa: E731
    case = [dict(id="c0", image=img(0), target="t", outputs={m: img(40 * k) for k, m in enumerate(st.METHODS)})]
    s = st.RankingSession(case, user="zoë")
    s.record("c0", {"A": 1, "B": 2, "C": 3, "D": 4})
    st.save_csv(s.rankings(), tmp_path / "plain.csv")
    text = (tmp_path / "plain.csv").read_text(encoding="utf-8")
    (tmp_path / "bom.csv").write_text(text, encoding="utf-8-sig")  # what a spreadsheet saves
    assert st.load_csv(tmp_path / "bom.csv").users == st.load_csv(tmp_path / "plain.csv").users
    (tmp_path / "latin1.csv").write_text(text, encoding="latin-1")
    with pytest.raises(ValueError, match=r"latin1.csv is not UTF-8 text .*save it as UTF-8"):
        st.load_csv(tmp_path / "latin1.csv")


@pytest.fixture
def three_squares(tmp_path):
    from romlib.shapes.scenes import make_scene

    sc = make_scene(0)
    assert [o.shape for o in sc.objects] == ["square"] * 3
    Image.fromarray(sc.image).save(tmp_path / "scene.png")
    return sc, tmp_path


@pytest.mark.parametrize("ref", ["the square", "a square", "the shape"])
def test_a_text_that_fits_several_objects_says_so_and_lists_them(three_squares, capsys, monkeypatch, caplog, ref):
    from romlib.contracts import AmbiguousReference
    from romlib.segment import ambiguous_queries
    from romlib.shapes.segmenter import ShapesSegmenter

    sc, folder = three_squares
    with pytest.raises(AmbiguousReference) as e:
        ShapesSegmenter().segment(sc.image, ref)
    assert len(e.value.candidates) == 3 and all(f"the {o.colour} square" in str(e.value) for o in sc.objects)
    with caplog.at_level(logging.WARNING):
        seg = ShapesSegmenter().segment(sc.image, ref, best_anyway=True)
    assert "matches 3 objects" in caplog.text and seg.score == 1.0
    caplog.clear()
    from romlib.shapes.scenes import COLOURS

    other = next(c for c in COLOURS if c not in {o.colour for o in sc.objects})
    with caplog.at_level(logging.WARNING):  # a colour no object has: three ties at 0.1, none of them a match
        miss = ShapesSegmenter().segment(sc.image, f"the {other} square", best_anyway=True)
    assert miss.score == pytest.approx(0.1) and "matches 3 objects" not in caplog.text
    assert f"no object matches 'the {other} square'" in caplog.text and "the first of 3 tied" in caplog.text
    named = ShapesSegmenter().segment(sc.image, f"the {sc.objects[1].colour} square")  # not ambiguous
    assert torch.equal(named.mask, torch.from_numpy(sc.objects[1].mask))
    monkeypatch.chdir(folder)
    rc, err = _cli(["edit", "scene.png", "--ref", ref, "--target", "a red circle", "--backend", "shapes", "--samples",
                    "1", "--out", "out"], capsys)
    assert rc == 2 and "matches 3 objects" in err and "--best-anyway" in err and "Traceback" not in err, err
    assert not (folder / "out").exists()
    # MDETR's rule: a second query within 0.1 of the best, on a box of IoU < 0.1 (duplicates are one object)
    scores = torch.tensor([0.95, 0.93, 0.92, 0.5, 0.90])
    boxes = torch.tensor([[0, 0, 10, 10], [0, 0, 10, 11], [50, 50, 60, 60], [80, 80, 90, 90], [51, 50, 60, 61]]).float()
    assert ambiguous_queries(scores, boxes, 0, 0.1) == [2]
    assert ambiguous_queries(scores, boxes, 0, 0.93) == []  # the other object is below min_score
    assert ambiguous_queries(torch.tensor([0.95, 0.93, 0.80]), boxes[:3], 0, 0.1) == []  # far below the best


def test_mdetr_segmenter_refuses_an_ambiguous_text(monkeypatch, caplog):
    from romlib.contracts import AmbiguousReference
    from romlib.backends import tiny_segmenter

    seg = tiny_segmenter()
    Q = seg.model.cfg.num_queries if hasattr(seg.model.cfg, "num_queries") else 10

    def forward(x, ids, mask, queries="best"):
        logits = torch.full((1, Q, 3), -10.0)
        logits[0, :, -1] = 5.0  # no object ...
        logits[0, 0, 0] = logits[0, 3, 0] = 10.0  # ... but queries 0 and 3, on two far-apart boxes
        boxes = torch.tensor([[0.2, 0.2, 0.2, 0.2]] * Q)
        boxes[3] = torch.tensor([0.8, 0.8, 0.2, 0.2])
        return {"pred_logits": logits, "pred_boxes": boxes[None], "mask_queries": torch.tensor([[0]]),
                "pred_masks": torch.zeros(1, 1, x.shape[-2] // 4, x.shape[-1] // 4)}

    monkeypatch.setattr(seg.model, "forward", forward)
    image = Image.new("RGB", (100, 80))
    with pytest.raises(AmbiguousReference, match="matches 2 objects: query 0 .*; query 3"):
        seg.segment(image, "the cat")
    with caplog.at_level(logging.WARNING):
        assert seg.segment(image, "the cat", best_anyway=True).index == 0
    assert "best_anyway: took query 0" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):  # the same two queries, both below min_score: no match, not "2 objects"
        assert seg.segment(image, "the cat", min_score=0.999, best_anyway=True).index == 0
    assert "no query matches 'the cat'" in caplog.text and "min_score=0.999" in caplog.text
    assert "matches 2 objects" not in caplog.text


@pytest.mark.parametrize("text,dropped", [("the blue square 🚗", "🚗"), ("the blue square ❤️", "❤"),
                                          ("the blue square №2", "№2"), ("the blue square ✓", "✓")])
def test_texts_note_every_character_dropped(three_squares, caplog, text, dropped):
    from romlib.models.tokenizers import _WARNED
    from romlib.shapes.segmenter import ShapesSegmenter

    sc, _ = three_squares
    _WARNED.clear()
    with caplog.at_level(logging.WARNING):
        seg = ShapesSegmenter().segment(sc.image, text)
    blue = next(o for o in sc.objects if o.colour == "blue")
    assert torch.equal(seg.mask, torch.from_numpy(blue.mask))
    assert "cannot represent" in caplog.text and dropped in caplog.text, caplog.text
    with pytest.raises(ValueError, match="has no word of ShapesWorld's vocabulary"):
        ShapesSegmenter().segment(sc.image, "123")  # not "empty"
    with pytest.raises(TypeError, match="text must be a string, got int"):
        ShapesSegmenter().segment(sc.image, 123)


def test_help_texts_say_what_each_flag_does():
    from romlib.cli import build_parser

    parser = build_parser()
    subs = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction").choices
    for name, sub in subs.items():
        for action in sub._actions:
            assert action.help and len(action.help) > 8, (name, action.option_strings)
    upsample = next(a for a in subs["edit"]._actions if "--no-upsample" in a.option_strings)
    assert upsample.help.startswith("skip the 64->256 upsampler")
    best = next(a for a in subs["edit"]._actions if "--best-anyway" in a.option_strings)
    assert "several objects" in best.help
    scales = next(a for a in subs["shapes-bench"]._actions if "--scales" in a.option_strings)
    assert "(0, 10000)" in scales.help


@pytest.mark.parametrize("target", [None, 123, b"a dog"])
def test_a_target_that_is_not_a_text_is_refused_not_read_as_removal(target):
    """``target=None`` once meant '' (remove the object) without a word; any non-text target is refused by name."""
    from romlib.pipeline import get_pipeline
    from romlib.teach.nb import example

    pipe = get_pipeline("shapes", device="cpu")
    image, ref, _ = example(pipe)
    with pytest.raises(TypeError, match=f"target must be a text, got {type(target).__name__}"):
        pipe.edit(image, ref, target, samples=1)
    assert pipe.edit(image, ref, "", samples=1, progress=False).settings["target"] == ""
