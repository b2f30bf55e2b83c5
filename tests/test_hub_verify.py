"""Verified downloads (issue 20, point 3): nothing bad is recorded as good, a bad file is moved aside and named.

The tests' loopback mirror (tests/support/mirror.py) serves files as a mirror
does and can misbehave as mirrors, proxies and captive portals do: an HTML "200 OK" page in place
of a file, a Range request ignored, a wrong Content-Range total, a body cut short of its
Content-Length.
"""
import io
import json
import os
import signal
import time

import pytest
import torch

from romlib import hub
from romlib.cli import main
from romlib.hub import manifests
from tests.support.mirror import MirrorServer
from tests.support.reference import reference_dir

SRV: MirrorServer  # the test's loopback mirror (tests/support/mirror.py), set by the fixture

PORTAL = (b"<!DOCTYPE html>\n<html><head><title>Welcome to CampusNet</title></head>"
          b"<body>Please accept the terms of use to continue.</body></html>\n")


@pytest.fixture()
def mirror(tmp_path, monkeypatch):
    """A loopback mirror (``ROMLIB_MIRROR``) and an empty cache; yields the cache folder."""
    global SRV
    monkeypatch.setenv("ROMLIB_CACHE", str(tmp_path / "cache"))
    for var in ("ROMLIB_OFFLINE", "HF_HUB_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    added = []
    with MirrorServer(max_seconds=300) as SRV:
        monkeypatch.setenv("ROMLIB_MIRROR", SRV.url)
        yield tmp_path / "cache", added
    for name in added:
        hub.REGISTRY.pop(name, None)


def _torch_bytes(obj) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def _register(added, name, file, **kw):
    added.append(name)
    return hub.register(hub.Checkpoint(name, f"http://127.0.0.1:9/official/{file}", **kw))


def _bad_copies(cache, fname):
    return sorted(p for p in cache.glob(f"{fname}.bad-*") if not p.name.endswith(".record"))


def _nothing_recorded(cache, fname):
    return not (cache / fname).exists() and not (cache / f"{fname}.json").exists() and not (cache / f"{fname}.part").exists()


# ----------------------------------------------------------------------------- what the registry knows
def test_every_registry_entry_says_its_format_and_checkpoints_their_manifest():
    for c in hub.REGISTRY.values():
        assert c.kind in ("torch", "safetensors", "json", "config", "bpe", "image"), c.name
        assert c.size is None  # no official file's exact size is known here: none is invented
        if c.manifest is not None:
            assert c.kind == "torch" and manifests.manifest(c.manifest)
    assert hub.REGISTRY["mdetr/phrasecut-eb3"].state_key == "model"
    with pytest.raises(ValueError, match="no state-dict manifest 'nope'; shipped: .*glide_base-inpaint"):
        manifests.manifest("nope")


@pytest.mark.skipif(reference_dir() is None, reason="../shared/reference is not available")
def test_the_shipped_manifests_are_the_references():
    ref = reference_dir()
    files = sorted(ref.glob("*_state_dict_shapes.json"))
    assert len(files) == len(manifests.manifest_names()) == 6
    for p in files:
        assert manifests.manifest(p.name[:-len("_state_dict_shapes.json")]) == json.loads(p.read_text()), p.name
    assert manifests.MANIFESTS_FILE.stat().st_size < 50_000  # small package data


def test_the_manifest_check_reads_shapes_only_and_names_each_difference():
    want = manifests.manifest("glide_base-inpaint")
    with torch.device("meta"):  # 385 M parameters, no memory
        state = {k: torch.empty(v) for k, v in want.items()}
    assert manifests.state_dict_problem(state, "glide_base-inpaint") is None
    first, second = list(want)[:2]
    state[first] = torch.empty(3, device="meta")
    del state[second]
    state["extra.weight"] = torch.empty(1, device="meta")
    why = manifests.state_dict_problem(state, "glide_base-inpaint")
    assert why.startswith("its state dict does not match the manifest glide_base-inpaint (783 entries)")
    assert f"1 missing ({second})" in why and "1 not in the manifest (extra.weight)" in why
    assert f"{first} has shape [3] where the manifest says {want[first]}" in why


# ----------------------------------------------------------------------------- bad files never recorded
def test_an_84_byte_base_inpaint_is_refused_and_moved_aside(mirror):
    cache, _ = mirror
    tiny = _torch_bytes({"w": torch.ones(4)})[:84]  # what a broken mirror copy can be
    SRV.files["base_inpaint.pt"] = tiny
    with pytest.raises(hub.CheckpointUnavailable) as e:
        hub.download("glide/base-inpaint", progress=False)
    msg = str(e.value)
    assert "the downloaded base_inpaint.pt is not a checkpoint romlib can use" in msg
    assert "moved aside to" in msg and "(not deleted)" in msg
    assert "run `romlib download glide/base-inpaint` again" in msg and "the mirror (http://127.0.0.1:" in msg
    assert _nothing_recorded(cache, "base_inpaint.pt")
    bad = _bad_copies(cache, "base_inpaint.pt")
    assert len(bad) == 1 and bad[0].read_bytes() == tiny and str(bad[0]) in msg


@pytest.mark.parametrize("name, noun", [("glide/base-inpaint", "a checkpoint"), ("roberta/vocab", "a vocabulary"),
                                        ("roberta/merges", "a vocabulary"), ("clip/vit-b-16-openai", "a checkpoint")])
def test_a_captive_portal_page_is_refused_by_name(mirror, capsys, name, noun):
    cache, _ = mirror
    fname = hub.REGISTRY[name].filename
    SRV.files[fname] = PORTAL
    assert main(["download", name]) == 2
    err = capsys.readouterr().err
    assert f"this is an HTML page, not {noun}: a proxy or captive portal?" in err and "Traceback" not in err
    assert f"run `romlib download {name}` again" in err
    assert _nothing_recorded(cache, fname)
    assert [p.read_bytes() for p in _bad_copies(cache, fname)] == [PORTAL]


def _jpeg(cut: int = 0) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 30, 30)).save(buf, format="JPEG")
    return buf.getvalue()[:-cut] if cut else buf.getvalue()


@pytest.mark.parametrize("name, served, said", [
    ("roberta/vocab", b'{"error": "rate limited", "retry": true}', "its entry 'error' maps to 'rate limited', not to a token id"),
    ("roberta/vocab", b'["<s>", "<pad>"]', "it holds a JSON list, not a vocabulary"),
    ("roberta/vocab", b"\x80\x02}q\x00.", "it is not UTF-8 text (byte 0"),
    ("roberta/merges", "#version: 0.2\nĠ t\nthis line has four symbols\n".encode(), "its merge line 2 ('this line has four symbols') is not a pair"),
    ("example/coco-39769", b"GIF89a not really", "it is not an image PIL can read"),
    ("example/coco-39769", None, "it is not an image PIL can read"),  # a JPEG cut short by 300 bytes
    ("clip/vit-b-16-openai", (10).to_bytes(8, "little") + b'{"a": 1}  ', "its safetensors header is unreadable"),
    ("sd15-inpaint/unet/config.json", b'["in_channels", 9]', "it holds a JSON list, not a configuration"),
    ("sd15-inpaint/unet/config.json", b'{"in_channels": 9,', "it is not valid JSON"),
])
def test_a_file_of_the_wrong_format_is_refused_with_the_reason(mirror, name, served, said):
    cache, _ = mirror
    fname = hub.REGISTRY[name].filename
    served = _jpeg(cut=300) if served is None else served
    SRV.files[fname] = served
    with pytest.raises(hub.CheckpointUnavailable) as e:
        hub.download(name, progress=False)
    assert said in str(e.value) and "moved aside to" in str(e.value)
    assert _nothing_recorded(cache, fname) and [p.read_bytes() for p in _bad_copies(cache, fname)] == [served]


def test_good_vocabularies_and_images_pass(mirror):
    SRV.files["roberta-base-vocab.json"] = json.dumps({"<s>": 0, "Ġthe": 1}).encode()
    SRV.files["roberta-base-merges.txt"] = "#version: 0.2\nĠ t\nh e\n".encode()
    SRV.files["000000039769.jpg"] = _jpeg()
    for name in ("roberta/vocab", "roberta/merges", "example/coco-39769"):
        assert hub.download(name, progress=False).is_file()


def test_a_checkpoint_whose_state_dict_differs_from_its_manifest_is_refused(mirror, monkeypatch):
    cache, added = mirror
    monkeypatch.setitem(manifests._all(), "test_tiny", {"a.weight": [4, 3], "a.bias": [4], "b.weight": [2]})
    _register(added, "test/tiny", "tiny.pt", manifest="test_tiny")
    served = _torch_bytes({"a.weight": torch.zeros(4, 3), "a.bias": torch.zeros(5), "c.weight": torch.zeros(2)})
    SRV.files["tiny.pt"] = served
    with pytest.raises(hub.CheckpointUnavailable) as e:
        hub.download("test/tiny", progress=False)
    msg = str(e.value)
    assert "does not match the manifest test_tiny (3 entries)" in msg
    assert "1 missing (b.weight)" in msg and "1 not in the manifest (c.weight)" in msg
    assert "a.bias has shape [5] where the manifest says [4]" in msg
    assert _nothing_recorded(cache, "tiny.pt") and [p.read_bytes() for p in _bad_copies(cache, "tiny.pt")] == [served]


def test_an_mdetr_style_checkpoint_nests_its_weights_and_may_hold_the_legacy_position_ids(mirror, monkeypatch):
    import argparse

    from romlib.models.mdetr import LEGACY_KEYS

    cache, added = mirror
    monkeypatch.setitem(manifests._all(), "test_nested", {"w": [2, 2]})
    _register(added, "test/nested", "nested.pth", manifest="test_nested", state_key="model", allow=("argparse.Namespace",))
    state = {"w": torch.ones(2, 2), LEGACY_KEYS[0]: torch.arange(514)[None]}
    SRV.files["nested.pth"] = _torch_bytes({"model": state, "args": argparse.Namespace(lr=1)})
    path = hub.download("test/nested", progress=False)
    rec = json.loads(path.with_name("nested.pth.json").read_text())
    assert rec["format"] == "torch" and rec["manifest"] == "test_nested" and len(rec["sha256"]) == 64
    assert hub.load_checkpoint("test/nested", key="model", progress=False)["w"].shape == (2, 2)  # Namespace allowed by the registry
    SRV.files["nested.pth"] = _torch_bytes({"weights": state, "args": argparse.Namespace(lr=1)})
    with pytest.raises(hub.CheckpointUnavailable, match=r"it has no entry 'model' holding the weights \(it holds \['args', 'weights'\]\)"):
        hub.download("test/nested", progress=False, force=True)
    assert path.exists()  # the good copy stays


# ----------------------------------------------------------------------------- sizes and resuming
def _ckpt_entry(mirror, **kw):
    _, added = mirror
    data = _torch_bytes({"w": torch.arange(100_000, dtype=torch.float32)})
    _register(added, "test/ckpt", "ckpt.pt", **kw)
    SRV.files["ckpt.pt"] = data
    return data


def _stale_part(cache, n, total):
    """A .part of ``n`` zero bytes, begun (so says its .meta) from the mirror for a file of ``total`` bytes."""
    cache.mkdir(parents=True, exist_ok=True)
    (cache / "ckpt.pt.part").write_bytes(b"\0" * n)
    (cache / "ckpt.pt.part.meta").write_text(json.dumps({"source": hub.source(hub.REGISTRY["test/ckpt"]), "total": total}))


@pytest.mark.parametrize("how, said", [("ignore-range", "ignored the Range request (HTTP 200, the whole file): starting again from zero"),
                                       ("wrong-total", "/{wrong}', not bytes 100000-…/{total}: starting again from zero")])
def test_a_stale_part_is_restarted_when_the_server_does_not_honour_the_range(mirror, caplog, how, said):
    cache, _ = mirror
    data = _ckpt_entry(mirror)
    _stale_part(cache, 100_000, len(data))
    SRV.misbehave["ckpt.pt"] = how
    with caplog.at_level("WARNING", logger="romlib.hub"):
        path = hub.download("test/ckpt", progress=False)
    assert path.read_bytes() == data  # the zeros were not kept
    assert SRV.log[0] == ("/ckpt.pt", "bytes=100000-")
    assert said.format(wrong=len(data) + 1000, total=len(data)) in caplog.text
    if how == "wrong-total":
        assert SRV.log[1:] == [("/ckpt.pt", None)]  # asked again for the whole file
    assert not (cache / "ckpt.pt.part").exists() and not (cache / "ckpt.pt.part.meta").exists()


def test_a_stale_part_of_zeros_resumed_by_an_honest_server_is_caught_by_the_format_check(mirror):
    cache, _ = mirror
    data = _ckpt_entry(mirror)
    _stale_part(cache, 50_000, len(data))  # the case of issue 20: zeros + the real rest of the file
    with pytest.raises(hub.CheckpointUnavailable, match="is not a checkpoint romlib can use: it cannot be read as a torch checkpoint"):
        hub.download("test/ckpt", progress=False)
    assert SRV.log == [("/ckpt.pt", "bytes=50000-")]
    assert _nothing_recorded(cache, "ckpt.pt")
    (bad,) = _bad_copies(cache, "ckpt.pt")
    assert bad.read_bytes() == b"\0" * 50_000 + data[50_000:]
    assert hub.download("test/ckpt", progress=False).read_bytes() == data  # run again: fetched whole


def test_a_part_nothing_records_the_size_of_is_not_resumed(mirror, caplog):
    cache, _ = mirror
    data = _ckpt_entry(mirror)
    cache.mkdir(parents=True)
    (cache / "ckpt.pt.part").write_bytes(b"\0" * 5000)  # no .meta, no registry size
    with caplog.at_level("WARNING", logger="romlib.hub"):
        assert hub.download("test/ckpt", progress=False).read_bytes() == data
    assert SRV.log == [("/ckpt.pt", None)] and "nothing records the total size" in caplog.text


def test_a_body_cut_short_of_its_content_length_is_kept_as_a_part_and_resumed(mirror):
    cache, _ = mirror
    data = _ckpt_entry(mirror)
    SRV.misbehave["ckpt.pt"] = [("cut", 50_000)] * 3  # each try resumed, and cut again
    with pytest.raises(hub.CheckpointUnavailable, match=rf"(stopped|broke off) at \d+ of the {len(data)} bytes the server announced.*call again to resume"):
        hub.download("test/ckpt", progress=False)
    assert not (cache / "ckpt.pt").exists() and not (cache / "ckpt.pt.json").exists()
    have = (cache / "ckpt.pt.part").stat().st_size
    assert have == 150_000
    assert hub.download("test/ckpt", progress=False).read_bytes() == data
    assert SRV.log[-1] == ("/ckpt.pt", f"bytes={have}-")


def test_a_content_length_other_than_the_registry_size_is_refused_before_writing(mirror):
    cache, _ = mirror
    data = _ckpt_entry(mirror, size=None)
    hub.register(hub.Checkpoint("test/ckpt", hub.REGISTRY["test/ckpt"].url, size=len(data) + 1))
    with pytest.raises(hub.CheckpointUnavailable, match=rf"the server announces {len(data)} bytes \(Content-Length\).*"
                                                        rf"romlib expects exactly {len(data) + 1}.*nothing was written"):
        hub.download("test/ckpt", progress=False)
    assert not cache.exists() or not any(cache.glob("ckpt.pt*[!k]"))  # at most the lock file
    hub.register(hub.Checkpoint("test/ckpt", hub.REGISTRY["test/ckpt"].url, size=len(data)))
    assert hub.download("test/ckpt", progress=False).read_bytes() == data


# ----------------------------------------------------------------------------- later damage, the cache, names
def test_verify_finds_later_damage_names_it_and_moves_it_aside(mirror, capsys):
    cache, _ = mirror
    data = _ckpt_entry(mirror)
    path = hub.download("test/ckpt", progress=False)
    assert main(["download", "--verify", "test/ckpt"]) == 0
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0x01  # one bit in the weights: same size, loads silently
    path.write_bytes(bytes(flipped))
    capsys.readouterr()
    assert main(["download", "--verify", "test/ckpt"]) == 1
    out = capsys.readouterr()
    assert "damaged: its sha256 differs from the one recorded at download" in out.out
    assert "romlib download: ckpt.pt is damaged: its sha256 differs" in out.err and "moved aside to" in out.err
    assert "run `romlib download test/ckpt` to fetch them again" in out.err
    assert not path.exists() and [p.read_bytes() for p in _bad_copies(cache, "ckpt.pt")] == [bytes(flipped)]

    path = hub.download("test/ckpt", progress=False)  # fetched again
    path.write_bytes(b"<html>" + data[6:])  # same size, no longer a checkpoint: the format check names it
    rows = hub.verify(["test/ckpt"])
    assert rows[0]["status"].startswith("bad: this is an HTML page, not a checkpoint") and not rows[0]["ok"]
    assert rows[0]["moved_to"].exists() and not path.exists()


def test_a_bad_file_an_older_romlib_recorded_as_good_is_checked_once_and_fetched_again(mirror, caplog):
    from romlib.hub.cache import sha256

    cache, _ = mirror
    data = _ckpt_entry(mirror)
    cache.mkdir(parents=True)
    (cache / "ckpt.pt").write_bytes(PORTAL)  # kept by the romlib of issue 20, with its record
    (cache / "ckpt.pt.json").write_text(json.dumps({"name": "test/ckpt", "size": len(PORTAL), "sha256": sha256(cache / "ckpt.pt")}))
    assert hub.cached("test/ckpt") is None and (cache / "ckpt.pt").exists()  # reported, nothing moved
    with caplog.at_level("WARNING", logger="romlib.hub"):
        assert hub.download("test/ckpt", progress=False).read_bytes() == data
    assert "kept by an older romlib but this is an HTML page" in caplog.text
    assert [p.read_bytes() for p in _bad_copies(cache, "ckpt.pt")] == [PORTAL]
    rec = json.loads((cache / "ckpt.pt.json").read_text())
    assert rec["format"] == "torch" and rec["size"] == len(data)
    good = json.loads((cache / "ckpt.pt.json").read_text())
    del good["format"]  # a good file with an old record: checked once, its record completed
    (cache / "ckpt.pt.json").write_text(json.dumps(good))
    n = len(SRV.log)
    assert hub.download("test/ckpt", progress=False).read_bytes() == data and len(SRV.log) == n
    assert json.loads((cache / "ckpt.pt.json").read_text())["format"] == "torch"


def test_a_hand_placed_file_is_format_checked_by_verify(mirror):
    cache, _ = mirror
    _ckpt_entry(mirror)
    cache.mkdir(parents=True)
    (cache / "ckpt.pt").write_bytes(PORTAL)
    (row,) = hub.verify(["test/ckpt"])
    assert row["status"].startswith("bad: this is an HTML page") and row["moved_to"].read_bytes() == PORTAL


def test_a_cache_that_is_a_file_or_unreadable_is_a_clear_error(tmp_path, monkeypatch, capsys):
    import os

    not_a_folder = tmp_path / "cache-file"
    not_a_folder.write_text("x")
    monkeypatch.setenv("ROMLIB_CACHE", str(not_a_folder))
    for args in (["download", "--verify"], ["download", "roberta/vocab"]):
        assert main(args) == 2
        err = capsys.readouterr().err
        assert f"ROMLIB_CACHE={not_a_folder} is a file, not a folder" in err and "Traceback" not in err
    folder = tmp_path / "locked"
    folder.mkdir()
    monkeypatch.setenv("ROMLIB_CACHE", str(folder))
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if str(p) == str(folder) else real(p, mode, **kw))
    assert main(["download", "--verify"]) == 2  # (root ignores permission bits; the check asks os.access)
    assert f"ROMLIB_CACHE={folder} cannot be read (permission denied)" in capsys.readouterr().err
    monkeypatch.setattr(os, "access", real)
    dangling = tmp_path / "link"
    dangling.symlink_to(tmp_path / "gone")
    monkeypatch.setenv("ROMLIB_CACHE", str(dangling))
    assert main(["download", "roberta/vocab"]) == 2
    assert f"is a link to {tmp_path / 'gone'}, which does not exist" in capsys.readouterr().err
    monkeypatch.setenv("ROMLIB_CACHE", str(folder))
    (folder / "roberta-base-vocab.json").mkdir()
    with pytest.raises(hub.CheckpointUnavailable, match="roberta-base-vocab.json is a folder, not a file; move it out"):
        hub.download("roberta/vocab", progress=False)


@pytest.mark.parametrize("entry, make, said", [
    (".part", os.mkfifo, "ckpt.pt.part is a named pipe (FIFO)"),  # opening it to write blocked forever
    (".part", os.mkdir, "ckpt.pt.part is a folder"),  # was a bare [Errno 21]
    (".part.meta", os.mkfifo, "ckpt.pt.part.meta is a named pipe (FIFO)"),
    (".lock", os.mkdir, "ckpt.pt.lock is a folder"),
    ("", os.mkfifo, "ckpt.pt is a named pipe (FIFO)"),
])
def test_a_cache_entry_that_is_not_a_regular_file_is_named_never_opened(mirror, capsys, entry, make, said):
    cache, added = mirror
    _register(added, "test/ckpt", "ckpt.pt")
    SRV.files["ckpt.pt"] = _torch_bytes({"w": torch.ones(4)})
    cache.mkdir(parents=True)
    make(cache / f"ckpt.pt{entry}")

    def blocked(*a):
        raise TimeoutError("blocked on a cache entry that is not a regular file")

    signal.signal(signal.SIGALRM, blocked)
    signal.alarm(20)
    try:
        assert main(["download", "test/ckpt"]) == 2
        err = capsys.readouterr().err
        assert said in err and "move it out of the cache" in err and "Traceback" not in err, err
        assert main(["download", "--verify", "test/ckpt"]) == 1  # not "not cached", exit 0
        out = capsys.readouterr()
        assert said in out.out + out.err
    finally:
        signal.alarm(0)
    assert not (cache / "ckpt.pt").is_file()


def test_an_unknown_name_lists_the_valid_ones(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ROMLIB_CACHE", str(tmp_path))
    for args in (["download", "not/a-name"], ["download", "--verify", "glide/base-inpaint", "nope"]):
        assert main(args) == 2
        err = capsys.readouterr().err
        assert "unknown file name(s) '" in err and "valid names: adm/256x256-uncond" in err and "roberta/vocab" in err
        assert "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(reference_dir() is None, reason="../shared/reference is not available")
def test_a_full_size_stand_in_checkpoint_passes_and_is_checked_quickly(tmp_path):
    from tests.support.rehearsal import build_file

    path = build_file("glide/clip-text-enc", tmp_path, reference=reference_dir())  # 287 MB, random weights
    ckpt = hub.REGISTRY["glide/clip-text-enc"]
    t0, c0 = time.perf_counter(), time.process_time()
    assert hub.file_problem(path, ckpt) is None
    took = time.process_time() - c0
    assert took < 2.0, f"the format and manifest check took {took:.2f} s CPU ({time.perf_counter() - t0:.2f} s wall)"
