"""The `romlib` command end to end on the tiny random backend (CPU)."""
import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from romlib.cli import build_parser, main


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    rng = np.random.RandomState(0)
    p = d / "photo.png"
    Image.fromarray((rng.rand(80, 100, 3) * 255).astype(np.uint8)).save(p)
    return p


def _run(args):
    return main([str(a) for a in args])


def _run_folder(out):
    """The one run folder `romlib edit` made inside --out."""
    runs = [p for p in out.iterdir() if p.is_dir()]
    assert len(runs) == 1, runs
    return runs[0]


def test_help_documents_every_edit_flag():
    text = build_parser()._subparsers._group_actions[0].choices["edit"].format_help()
    for flag in ("--ref", "--target", "--guidance", "--scale", "--samples", "--dilation", "--rank", "--seed", "--mask",
                 "--frame", "--device", "--out", "--backend", "--steps"):
        assert flag in text
    out = subprocess.run([sys.executable, "-m", "romlib.cli", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "demo" in out.stdout and "edit" in out.stdout


@pytest.mark.parametrize("guidance,rank", [("ccf", "local"), ("cf", "masked"), ("clip", "local"), ("blended", "masked")])
def test_edit_writes_ranked_files_and_a_summary(photo, tmp_path, capsys, guidance, rank):
    out = tmp_path / "out"
    rc = _run(["edit", photo, "--ref", "the red car", "--target", "a blue truck", "--guidance", guidance, "--rank", rank,
               "--samples", 2, "--backend", "tiny", "--device", "cpu", "--out", out, "--no-upsample", "--best-anyway"])
    assert rc == 0
    printed = capsys.readouterr().out
    out = _run_folder(out)  # each run writes into a new folder inside --out
    assert out.name.endswith(f"_{guidance}_the-red-car") and str(out) in printed
    payload = json.loads((out / "result.json").read_text())
    assert payload["settings"]["guidance"] == guidance and payload["settings"]["rank"] == rank
    assert payload["settings"]["samples"] == 2 and len(payload["order"]) == 2
    assert (out / "rank00_full.png").exists() and (out / "summary.png").exists() and (out / "mask.png").exists()
    assert Image.open(out / "rank00_full.png").size == (100, 80)
    assert str(out / "rank00_full.png") in printed and "result.json" in printed


def test_edit_with_a_mask_file_of_another_size(photo, tmp_path):
    m = np.zeros((40, 50), np.uint8)
    m[10:30, 10:30] = 255
    Image.fromarray(m).save(tmp_path / "mask.png")
    out = tmp_path / "o"
    assert _run(["edit", photo, "--target", "a cat", "--mask", tmp_path / "mask.png", "--samples", 1, "--backend", "tiny",
                 "--out", out, "--no-upsample"]) == 0
    edited = np.asarray(Image.open(_run_folder(out) / "rank00_full.png")).astype(int)
    original = np.asarray(Image.open(photo)).astype(int)
    assert (edited[70:] == original[70:]).all()  # far outside the (resized, dilated) mask


@pytest.mark.parametrize("args,msg", [
    (["--scale", "-1"], "scale"), (["--dilation", "4"], "odd integer"), (["--samples", "0"], "samples"),
])
def test_bad_knobs_exit_2_with_the_accepted_range(photo, tmp_path, capsys, args, msg):
    rc = _run(["edit", photo, "--ref", "x", "--target", "y", "--backend", "tiny", "--out", tmp_path] + args)
    assert rc == 2 and msg in capsys.readouterr().err


def test_missing_image_is_named(tmp_path, capsys):
    assert _run(["edit", tmp_path / "nope.jpg", "--ref", "x", "--backend", "tiny"]) == 2
    err = capsys.readouterr().err
    assert "romlib edit: error: image not found" in err and "nope.jpg" in err


@pytest.mark.parametrize("extra,fragment", [
    (["--device", "cuda:7"], "device='cuda:7' is not available"), (["--scale", "inf"], "scale=inf"),
    (["--batch-size", "0"], "batch_size=0"), (["--threshold", "nan"], "threshold=nan"), (["--top", "-3"], "top=-3"),
    (["--guidance", "blended", "--scale", "3"], "does not use scale"),
])
def test_bad_settings_fail_before_any_model_loads(tmp_path, capsys, monkeypatch, extra, fragment):
    import romlib.pipeline

    def no_load(*a, **k):
        raise AssertionError("a model was loaded before the settings were checked")

    monkeypatch.setattr(romlib.pipeline.ROMPipeline, "from_pretrained", classmethod(no_load))
    img = tmp_path / "in.png"
    Image.new("RGB", (64, 48)).save(img)
    assert _run(["edit", img, "--ref", "x", "--backend", "tiny", "--out", tmp_path / "o", *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("romlib edit: error: ") and fragment in err and "Traceback" not in err


def test_ctrl_c_exits_130(tmp_path, capsys, monkeypatch):
    import romlib.pipeline

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(romlib.pipeline.ROMPipeline, "from_pretrained", classmethod(interrupted))
    img = tmp_path / "in.png"
    Image.new("RGB", (64, 48)).save(img)
    assert _run(["edit", img, "--ref", "x", "--backend", "tiny", "--out", tmp_path / "o"]) == 130
    assert "interrupted" in capsys.readouterr().err


@pytest.mark.parametrize("backend,segmenter,files,advice", [
    ("glide", "clipseg", 13, "`romlib download --clipseg`"),
    ("sd", "mdetr", 23, "`romlib download --sd` and `romlib download mdetr/phrasecut-eb3 roberta/vocab roberta/merges`"),
])
def test_edit_offline_names_the_requested_segmenters_files_with_the_backends(photo, tmp_path, monkeypatch, capsys,
                                                                           backend, segmenter, files, advice):
    """The segmenter a run asks for loads after the models: its files are listed in the same first error, with
    the command that fetches them, before any model is built (exit 2, nothing written)."""
    from romlib import backends, hub

    if backend == "sd":
        pytest.importorskip("diffusers")
    monkeypatch.setenv("ROMLIB_OFFLINE", "1")
    monkeypatch.setenv("ROMLIB_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("ROMLIB_MIRROR", raising=False)
    import romlib.models.glide
    import romlib.segment

    def built(*a, **k):
        pytest.fail("a model was built before the files were checked")

    monkeypatch.setattr(romlib.models.glide, "load_model", built)
    monkeypatch.setattr(romlib.segment, "load_segmenter", built)
    if backend == "sd":
        import romlib.models.sd

        monkeypatch.setattr(romlib.models.sd, "load_inpainter", built)
    assert len(backends.files(backend, segmenter=segmenter)) == files
    rc = _run(["edit", photo, "--ref", "the car", "--target", "a truck", "--backend", backend, "--segmenter", segmenter,
               "--out", tmp_path / "out"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("put it by hand at") == files and advice in err
    extra = hub.CLIPSEG if segmenter == "clipseg" else hub.MDETR
    assert all(hub.REGISTRY[n].filename in err for n in extra) and not (tmp_path / "out").exists()


def test_an_interrupted_download_names_the_command_to_run_again(monkeypatch, capsys, tmp_path):
    from romlib import hub

    monkeypatch.setenv("ROMLIB_CACHE", str(tmp_path))

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(hub, "ensure", interrupted)
    rc = _run(["download", "--sd", "--clipseg"])
    err = capsys.readouterr().err
    assert rc == 130 and "`romlib download --sd --clipseg` again fetches the rest" in err


def test_edit_on_sd_without_diffusers_says_so_before_listing_files(photo, tmp_path, monkeypatch, capsys):
    import romlib.models.sd

    def missing():
        raise ImportError("the sd and tiny-sd backends need diffusers, an optional extra: pip install romlib[sd]")

    monkeypatch.setattr(romlib.models.sd, "require_diffusers", missing)
    monkeypatch.setenv("ROMLIB_OFFLINE", "1")
    monkeypatch.setenv("ROMLIB_CACHE", str(tmp_path / "cache"))
    rc = _run(["edit", photo, "--ref", "the car", "--target", "a truck", "--backend", "sd", "--out", tmp_path / "out"])
    err = capsys.readouterr().err
    assert rc == 2 and "pip install romlib[sd]" in err and "put it by hand" not in err


# ---------------------------------------------------------------------------------------------- help in a blink
HEAVY = ("torch", "numpy", "PIL", "matplotlib")
_PROBE = """
import sys, time
t = time.perf_counter()
from romlib.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as e:  # argparse: help (0) or a usage error (2)
    code = e.code
took = time.perf_counter() - t
heavy = sorted({m.split(".")[0] for m in sys.modules} & set(%r))
print("PROBE", code, round(took, 3), ",".join(heavy), file=sys.stderr)
""" % (HEAVY,)


@pytest.mark.parametrize("argv", [["--help"], ["edit", "--help"], ["demo", "--help"], ["download", "--help"],
                                  ["bench", "--help"], ["shapes-train", "--help"], ["shapes-bench", "--help"],
                                  ["edit"], ["demo", "--samples", "x"], ["edit", "p.png", "--guidance", "nope"],
                                  ["demo", "--samples", "0"], ["nope"]],
                         ids=lambda a: " ".join(a))
def test_help_and_argument_errors_import_no_torch(argv):
    """`romlib --help`, `romlib CMD --help` and an argument error print before torch, numpy, PIL or matplotlib is
    imported; the import and the parse take well under the half second a user waits for help (timed in-process,
    the interpreter's own start excluded; 0.5 s allows a loaded machine)."""
    r = subprocess.run([sys.executable, "-c", _PROBE, *argv], capture_output=True, text=True, timeout=120)
    probe = next(line for line in r.stderr.splitlines() if line.startswith("PROBE"))
    _, code, took, heavy = (probe.split(" ") + [""])[:4]
    assert heavy == "", f"romlib {' '.join(argv)} imported {heavy}"
    assert int(code) == (0 if argv[-1] == "--help" else 2), r.stderr
    assert (r.stdout if argv[-1] == "--help" else r.stderr).startswith("usage: romlib") or "error" in r.stderr
    assert float(took) < 0.5, f"romlib {' '.join(argv)} took {took} s before printing"


def test_romlib_help_is_fast_from_the_command_line():
    """The whole `python -m romlib.cli --help` (interpreter start included), best of three runs: under a second
    even on a loaded machine (about 0.07 s on a quiet one)."""
    import time

    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        r = subprocess.run([sys.executable, "-m", "romlib.cli", "--help"], capture_output=True, text=True, timeout=120)
        best = min(best, time.perf_counter() - t)
        assert r.returncode == 0 and "usage: romlib" in r.stdout
    assert best < 1.0, best


def test_the_parsers_names_are_the_registries():
    """The light name tuples the parser offers (romlib.config) are exactly the registries' names."""
    from romlib import backends, config
    from romlib.guidance.methods import METHODS
    from romlib.sampling.samplers import SAMPLERS
    from romlib.shapes.bench import DEFAULT_SCALES, METHODS as BENCH_METHODS

    assert config.METHOD_NAMES == tuple(METHODS) and config.SAMPLER_NAMES == tuple(SAMPLERS)
    assert config.BACKEND_NAMES == backends.NAMES
    text = " ".join(build_parser()._subparsers._group_actions[0].choices["shapes-bench"].format_help().split())
    assert f"(default {','.join(f'{s:g}' for s in DEFAULT_SCALES)})" in text
    assert "inpaint" in text and ",".join(BENCH_METHODS[1:]) in text.replace("- ", "-")


def test_demo_runs_again_and_again(tmp_path, monkeypatch, capsys):
    """`romlib demo` twice in one folder: two run folders inside romlib_demo/, each printed with its figure."""
    monkeypatch.chdir(tmp_path)
    folders = []
    for _ in range(2):
        assert _run(["demo", "--samples", 1, "--quiet"]) == 0
        printed = capsys.readouterr().out
        figure = next(line.split("figure: ", 1)[1] for line in printed.splitlines() if "figure: " in line)
        assert (tmp_path / figure).is_file() and figure.startswith("romlib_demo/")
        folders.append((tmp_path / figure).parent)
    assert folders[0] != folders[1] and sorted(p.name for p in (tmp_path / "romlib_demo").iterdir()) == \
        sorted(f.name for f in folders)
    assert all((f / "result.json").is_file() and (f / "input.png").is_file() for f in folders)
    assert "_ccf_the-" in folders[0].name


def test_example_writes_the_photo_and_mask_the_readme_uses(tmp_path, capsys):
    """`romlib example`: ShapesWorld's example photo and the mask of its object (white), the texts printed; run
    again, it refuses to replace them unless --overwrite."""
    from romlib.shapes.demo import demo_case

    case = demo_case(0)
    assert _run(["example", "--out", tmp_path]) == 0
    printed = capsys.readouterr().out
    photo, mask = Image.open(tmp_path / "photo.png"), np.asarray(Image.open(tmp_path / "mask.png"))
    assert photo.size == case.scene.pil().size and (mask > 127).sum() == case.original.mask.sum() > 0
    assert case.ref in printed and case.target in printed and "romlib edit" in printed
    assert _run(["example", "--out", tmp_path]) == 2 and "--overwrite" in capsys.readouterr().err
    assert _run(["example", "--out", tmp_path, "--overwrite"]) == 0
