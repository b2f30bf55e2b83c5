"""Issue 32, points 1, 2 and 7: nothing recorded as good that is not, nothing that waits forever, messages that name
the thing — against the tests' loopback mirror (tests/support/mirror.py) made hostile: bodies without a length,
half bodies, compressed bodies, drips and stalls, redirects to dead ports and other schemes, decompression bombs,
checkpoints of the right names and shapes but wrong dtypes or non-finite values, bad ROMLIB_MIRROR values, a full
disk."""
from __future__ import annotations

import errno
import hashlib
import io
import json
import socket
import time

import pytest
import torch
from PIL import Image

from romlib import hub
from romlib.cli import main
from romlib.hub import fetch as fetch_module
from tests.support.mirror import MirrorServer

SRV: MirrorServer  # set by the fixture


@pytest.fixture()
def mirror(tmp_path, monkeypatch):
    """A loopback mirror (``ROMLIB_MIRROR``), an empty cache; yields the cache folder and a list of names to unregister."""
    global SRV
    monkeypatch.setenv("ROMLIB_CACHE", str(tmp_path / "cache"))
    for var in ("ROMLIB_OFFLINE", "HF_HUB_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    added: list = []
    with MirrorServer(max_seconds=300, timeout=5) as SRV:
        monkeypatch.setenv("ROMLIB_MIRROR", SRV.url)
        yield tmp_path / "cache", added
    for name in added:
        hub.REGISTRY.pop(name, None)


def _register(added, name, file, **kw):
    added.append(name)
    return hub.register(hub.Checkpoint(name, f"http://127.0.0.1:9/official/{file}", **kw))


def _torch_bytes(obj) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def _safetensors_bytes(state) -> bytes:
    from safetensors.torch import save

    return save(state)


def _png(w=64, h=48) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (w, h), (200, 40, 90)).save(buf, format="PNG")
    return buf.getvalue()


def _jpeg(w=160, h=120) -> bytes:
    import numpy as np

    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (h, w, 3), dtype=np.uint8)).save(buf, format="JPEG")
    return buf.getvalue()


def _nothing_kept(cache, fname) -> bool:
    """Not recorded, not cached, no .part left (a refused file is moved aside as .bad-*)."""
    return not any((cache / n).exists() for n in (fname, fname + ".json", fname + ".part"))


# ----------------------------------------------------------------------------- 1. whole: length, encoding, format end
WEIGHTS = {"w": torch.randn(300, 300), "b": torch.zeros(300)}
BODIES = {  # file name, format, whole bytes
    "weights.pt": ("torch", _torch_bytes(WEIGHTS)),
    "weights.safetensors": ("safetensors", _safetensors_bytes(WEIGHTS)),
    "photo.jpg": ("image", _jpeg()),
    "photo.png": ("image", _png()),
    "config.json": ("config", json.dumps({"a": list(range(2000))}).encode()),
    "merges.txt": ("bpe", ("#version: 0.2\n" + "".join(f"a{i} b{i}\n" for i in range(3000))).encode()),
}


@pytest.mark.parametrize("fname", list(BODIES))
def test_half_a_body_without_a_length_is_never_recorded(mirror, fname):
    cache, added = mirror
    kind, data = BODIES[fname]
    _register(added, "t/f", fname, format=kind)
    SRV.files[fname] = data
    SRV.misbehave[fname] = "half-no-length"
    with pytest.raises(hub.CheckpointUnavailable) as e:
        hub.download("t/f", progress=False)
    assert fname in str(e.value) and _nothing_kept(cache, fname)
    assert "without a length" in str(e.value)  # the message says why it cannot be trusted


@pytest.mark.parametrize("fname", [f for f, (kind, _) in BODIES.items() if kind != "bpe"])
def test_a_whole_body_without_a_length_is_accepted_by_its_format_end(mirror, fname):
    cache, added = mirror
    kind, data = BODIES[fname]
    _register(added, "t/f", fname, format=kind)
    SRV.files[fname] = data
    SRV.misbehave[fname] = "no-length"
    assert hub.download("t/f", progress=False).read_bytes() == data
    assert hub.verify(["t/f"])[0]["status"] == "ok"


def test_a_text_without_a_length_needs_a_hash_and_a_wrong_hash_is_refused(mirror):
    cache, added = mirror
    kind, data = BODIES["merges.txt"]
    _register(added, "t/m", "merges.txt", format=kind)
    SRV.files["merges.txt"] = data
    SRV.misbehave["merges.txt"] = ["no-length"] * 3
    with pytest.raises(hub.CheckpointUnavailable, match=r"without a length .* --sha256"):
        hub.download("t/m", progress=False)
    with pytest.raises(hub.CheckpointUnavailable, match="differs from the one given"):
        hub.download("t/m", progress=False, sha256="0" * 64)
    good = hashlib.sha256(data).hexdigest()
    assert hub.download("t/m", progress=False, sha256=good).read_bytes() == data
    with pytest.raises(ValueError, match="is not a SHA-256"):
        hub.download("t/m", progress=False, sha256="xyz")


@pytest.mark.parametrize("fname", ["weights.pt", "photo.jpg", "config.json"])
def test_a_gzip_encoded_body_is_decoded_then_checked(mirror, fname):
    cache, added = mirror
    kind, data = BODIES[fname]
    _register(added, "t/f", fname, format=kind)
    SRV.files[fname] = data
    SRV.misbehave[fname] = "gzip"
    path = hub.download("t/f", progress=False)
    assert path.read_bytes() == data  # stored decoded, never compressed
    assert json.loads((cache / (fname + ".json")).read_text())["sha256"] == hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("encoding", ["br", "compress", "zstd", "gzip, br"])
def test_an_encoding_romlib_cannot_decode_is_refused_by_name(mirror, encoding):
    cache, added = mirror
    _register(added, "t/f", "weights.pt", format="torch")
    SRV.files["weights.pt"] = BODIES["weights.pt"][1]
    SRV.misbehave["weights.pt"] = ("encoding", encoding)
    with pytest.raises(hub.CheckpointUnavailable, match=rf"Content-Encoding: {encoding}, which romlib does not decode"):
        hub.download("t/f", progress=False)
    assert _nothing_kept(cache, "weights.pt")


def test_a_gzip_body_labelled_but_not_compressed_is_refused(mirror):
    cache, added = mirror
    _register(added, "t/f", "weights.pt", format="torch")
    SRV.files["weights.pt"] = BODIES["weights.pt"][1]
    SRV.misbehave["weights.pt"] = ("encoding", "gzip")
    with pytest.raises(hub.CheckpointUnavailable, match="cannot be decoded"):
        hub.download("t/f", progress=False)
    assert _nothing_kept(cache, "weights.pt")


# ----------------------------------------------------------------------------- 1. no wait forever: stalls, drips, deadline
def test_a_dripping_server_is_given_up_within_seconds_with_a_clear_error(mirror):
    cache, added = mirror
    _register(added, "t/f", "weights.pt", format="torch")
    SRV.files["weights.pt"] = BODIES["weights.pt"][1]
    SRV.misbehave["weights.pt"] = [("drip", 0.05, 100)] * 3  # 2 kB/s: never 64 kB in a second
    t0 = time.monotonic()
    with pytest.raises(hub.CheckpointUnavailable, match=r"fewer than 64 kB in 1 s .*\(tried 3 times\)"):
        hub.download("t/f", progress=False, timeout=1)
    assert time.monotonic() - t0 < 15
    assert len(SRV.log) == 3 and SRV.log[1][1] is not None  # tried again, resuming (the length was known)


def test_a_silent_server_counts_as_stalled_and_a_retry_resumes(mirror, caplog):
    cache, added = mirror
    data = BODIES["weights.pt"][1]
    _register(added, "t/f", "weights.pt", format="torch")
    SRV.files["weights.pt"] = data
    SRV.misbehave["weights.pt"] = ("stall", 100_000, 30)  # 100 kB, then silence
    path = hub.download("t/f", progress=False, timeout=1)
    assert path.read_bytes() == data
    assert SRV.log == [("/weights.pt", None), ("/weights.pt", "bytes=100000-")]
    assert "no bytes for 1 s (the server stalled)" in caplog.text


def test_the_overall_deadline_is_not_retried(mirror):
    cache, added = mirror
    _register(added, "t/f", "weights.pt", format="torch")
    SRV.files["weights.pt"] = BODIES["weights.pt"][1]
    SRV.misbehave["weights.pt"] = ("delay", 0.01)  # 400 kB/s: not stalled, but slower than the deadline allows
    with pytest.raises(hub.CheckpointUnavailable, match="longer than its deadline of 0.3 s"):
        hub.download("t/f", progress=False, deadline=0.3)
    assert len(SRV.log) == 1


def test_the_bar_counts_bytes_as_they_arrive(mirror, monkeypatch):
    cache, added = mirror
    _register(added, "t/f", "weights.pt", format="torch")
    SRV.files["weights.pt"] = BODIES["weights.pt"][1]
    SRV.misbehave["weights.pt"] = ("delay", 0.001)
    seen = []
    real = fetch_module.tqdm

    class Bar(real):
        def update(self, n=1):
            seen.append(n)
            return super().update(n)

    monkeypatch.setattr(fetch_module, "tqdm", Bar)
    hub.download("t/f", progress=True)
    assert len(seen) > 5 and max(seen) <= 1 << 16 and sum(seen) == len(BODIES["weights.pt"][1])


# ----------------------------------------------------------------------------- 1. images: romlib edit's limits
def _bomb_png(w: int, h: int) -> bytes:
    """A valid PNG header claiming ``w``×``h`` with almost no data (a decompression bomb)."""
    import struct
    import zlib

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


@pytest.mark.parametrize("w,h,said", [(12000, 9000, "over the 100 MP"), (30000, 30000, "decompression bomb .*at most 100 MP"),
                                      (200_000, 200_000, "decompression bomb"), (640, 480, "not an image PIL can read")])
def test_an_image_beyond_romlib_edits_limits_or_not_whole_is_refused_without_a_part(mirror, w, h, said):
    cache, added = mirror
    _register(added, "t/img", "photo.png", format="image")
    SRV.files["photo.png"] = _bomb_png(w, h)
    with pytest.raises(hub.CheckpointUnavailable, match=said) as e:
        hub.download("t/img", progress=False)
    assert "Traceback" not in str(e.value) and _nothing_kept(cache, "photo.png")
    assert list(cache.glob("photo.png.bad-*"))  # moved aside, never deleted


def test_the_example_photo_from_a_hostile_mirror_through_the_cli(mirror, capsys):
    cache, _ = mirror
    SRV.files["000000039769.jpg"] = _bomb_png(12000, 9000)
    assert main(["download", "example/coco-39769"]) == 2
    err = capsys.readouterr().err
    assert "12000x9000" in err and "Traceback" not in err and _nothing_kept(cache, "000000039769.jpg")


# ----------------------------------------------------------------------------- 2. values, not only names
BAD_VALUES = [
    ("int8 weights", {"w": torch.ones(4, 4, dtype=torch.int8), "b": torch.zeros(4)}, "w is int8"),
    ("complex64", {"w": torch.ones(4, 4, dtype=torch.complex64), "b": torch.zeros(4)}, "w is complex64"),
    ("NaN", {"w": torch.full((4, 4), float("nan")), "b": torch.zeros(4)}, "w has 16 of 16 values NaN or infinite"),
    ("inf in a bias", {"w": torch.ones(4, 4), "b": torch.tensor([0, float("inf"), 0, 0])}, "b has 1 of 4 values"),
    ("bool", {"w": torch.ones(4, 4, dtype=torch.bool), "b": torch.zeros(4)}, "w is bool"),
    ("float position_ids", {"w": torch.ones(4, 4), "emb.position_ids": torch.zeros(1, 4)}, "position_ids is float32"),
]


@pytest.mark.parametrize("what,state,said", BAD_VALUES, ids=[c[0] for c in BAD_VALUES])
@pytest.mark.parametrize("fmt", ["torch", "safetensors"])
def test_right_names_and_shapes_but_bad_values_are_refused_naming_the_entry(mirror, what, state, said, fmt):
    cache, added = mirror
    fname = "w.pt" if fmt == "torch" else "w.safetensors"
    _register(added, "t/w", fname, format=fmt)
    SRV.files[fname] = _torch_bytes(state) if fmt == "torch" else _safetensors_bytes(state)
    with pytest.raises(hub.CheckpointUnavailable) as e:
        hub.download("t/w", progress=False)
    assert said in str(e.value) and fname in str(e.value) and _nothing_kept(cache, fname)


def test_a_manifest_checkpoint_of_the_wrong_dtype_is_named_against_the_manifest(mirror, monkeypatch):
    from romlib.hub import manifests

    cache, added = mirror
    monkeypatch.setattr(manifests, "_all", lambda: {"m": {"w": [4, 4], "b": [4]}})
    _register(added, "t/m", "m.pt", format="torch", manifest="m")
    SRV.files["m.pt"] = _torch_bytes({"w": torch.ones(4, 4, dtype=torch.float64).to(torch.int8), "b": torch.zeros(4)})
    with pytest.raises(hub.CheckpointUnavailable, match=r"1 of the wrong dtype \(w is int8 where the manifest's entries"):
        hub.download("t/m", progress=False)


@pytest.mark.parametrize("what,state,said", BAD_VALUES[:3], ids=[c[0] for c in BAD_VALUES[:3]])
def test_verify_finds_bad_values_in_a_file_an_older_romlib_recorded(mirror, what, state, said, capsys):
    cache, added = mirror
    _register(added, "t/w", "w.pt", format="torch")
    cache.mkdir(parents=True)
    (cache / "w.pt").write_bytes(_torch_bytes(state))
    rec = {"name": "t/w", "size": (cache / "w.pt").stat().st_size, "format": "torch",
           "sha256": hashlib.sha256((cache / "w.pt").read_bytes()).hexdigest()}
    (cache / "w.pt.json").write_text(json.dumps(rec))  # an older romlib's record: names only, no "checks"
    assert main(["download", "--verify", "t/w"]) == 1
    out = capsys.readouterr()
    assert said in out.out and "moved aside" in out.out and not (cache / "w.pt").exists()


def test_a_good_float16_checkpoint_and_integer_index_buffers_pass(mirror):
    cache, added = mirror
    _register(added, "t/w", "w.pt", format="torch")
    SRV.files["w.pt"] = _torch_bytes({"w": torch.randn(8, 8).half(), "x": torch.randn(3).bfloat16(),
                                      "emb.position_ids": torch.arange(4)[None], "bn.num_batches_tracked": torch.tensor(3)})
    assert hub.download("t/w", progress=False).is_file()


def test_no_official_size_or_hash_is_invented():
    assert all(c.size is None and c.sha256 is None for c in hub.REGISTRY.values())


# ----------------------------------------------------------------------------- 7. redirects and ROMLIB_MIRROR values
def _dead_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@pytest.mark.parametrize("target", ["http://127.0.0.1:{dead}/weights.pt", "http://127.0.0.1:{dead}/elsewhere/x.pt",
                                    "ftp://127.0.0.1/weights.pt", "file:///etc/passwd"])
def test_a_redirects_failure_names_its_target_not_the_mirror(mirror, target):
    cache, added = mirror
    target = target.format(dead=_dead_port())
    _register(added, "t/f", "weights.pt", format="torch")
    SRV.files["weights.pt"] = BODIES["weights.pt"][1]
    SRV.misbehave["weights.pt"] = ("redirect", target)
    with pytest.raises(hub.CheckpointUnavailable) as e:
        hub.download("t/f", progress=False)
    assert f"the redirect to {target} failed" in str(e.value) or f"a redirect to {target}" in str(e.value)
    assert _nothing_kept(cache, "weights.pt")


def test_a_redirect_to_a_good_address_is_followed(mirror):
    cache, added = mirror
    data = BODIES["weights.pt"][1]
    _register(added, "t/f", "weights.pt", format="torch")
    SRV.files["weights.pt"] = data
    SRV.files["moved.pt"] = data
    SRV.misbehave["weights.pt"] = ("redirect", SRV.url + "/moved.pt")
    assert hub.download("t/f", progress=False).read_bytes() == data


@pytest.mark.parametrize("value,said", [
    ("http://[::1", "not a valid address"), ("http://127.0.0.1:99999", "not a valid address"),
    ("http://127.0.0.1:0", "port 0"), ("http://", "names no host"), ("ftp://mirror.example/files", "scheme ftp://"),
    ("s3://bucket/x", "scheme s3://"), ("this is not a mirror", "does not exist"),
    ("localhost:8000", "looks like an address without http://"), ("/no/such/folder/romlib", "does not exist"),
    ("file:///no/such/folder", "does not exist"),
])
def test_a_bad_mirror_value_is_refused_naming_the_variable_its_value_and_the_forms(tmp_path, monkeypatch, capsys,
                                                                                     value, said):
    monkeypatch.setenv("ROMLIB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("ROMLIB_MIRROR", value)
    monkeypatch.delenv("ROMLIB_OFFLINE", raising=False)
    with pytest.raises(ValueError) as e:
        hub.mirror()
    msg = str(e.value)
    assert msg.startswith(f"ROMLIB_MIRROR={value!r} cannot be used") and said in msg
    assert "http:// or https:// address" in msg and "local folder that exists" in msg
    assert main(["download", "roberta/vocab"]) == 2  # the CLI: a clear error, no traceback
    err = capsys.readouterr().err
    assert "ROMLIB_MIRROR=" in err and "Traceback" not in err


def test_a_mirror_that_is_a_file_is_refused(tmp_path, monkeypatch):
    (tmp_path / "f").write_text("x")
    monkeypatch.setenv("ROMLIB_MIRROR", str(tmp_path / "f"))
    with pytest.raises(ValueError, match="is a file, not a folder"):
        hub.mirror()


# ----------------------------------------------------------------------------- 7. a full disk
def test_a_full_disk_is_named_with_the_path_and_sizes_and_the_part_kept(mirror, monkeypatch):
    cache, added = mirror
    data = BODIES["weights.pt"][1]
    _register(added, "t/f", "weights.pt", format="torch", approx_mb=0.36)
    SRV.files["weights.pt"] = data
    real_copy = fetch_module._copy

    def full(blocks, part, *a, **k):
        def some():
            for i, b in enumerate(blocks):
                if i == 2:
                    raise OSError(errno.ENOSPC, "No space left on device")
                yield b
        return real_copy(some(), part, *a, **k)

    monkeypatch.setattr(fetch_module, "_copy", full)
    with pytest.raises(hub.CheckpointUnavailable) as e:
        hub.download("t/f", progress=False)
    msg = str(e.value)
    have = (cache / "weights.pt.part").stat().st_size  # kept: the next call resumes it
    assert 0 < have < len(data)
    assert f"the disk holding {cache} is full" in msg and f"{hub.human_size(have)} written" in msg
    assert " free, the file needs about 360.0 kB" in msg and "0 MB" not in msg
    monkeypatch.setattr(fetch_module, "_copy", real_copy)
    assert hub.download("t/f", progress=False).read_bytes() == data
    assert SRV.log[-1] == ("/weights.pt", f"bytes={have}-")
