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
