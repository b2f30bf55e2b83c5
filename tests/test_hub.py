"""romlib.hub against a loopback HTTP server (Range support, cut connections, slow responses)."""
import io
import json
import multiprocessing as mp
import time
from pathlib import Path

import pytest
import torch

from romlib import hub
from romlib.hub.download import RETRIES
from tests.support.mirror import MirrorServer


SRV: MirrorServer  # the test's loopback server (tests/support/mirror.py), set by the fixture


@pytest.fixture()
def server():
    global SRV
    with MirrorServer(max_seconds=300) as SRV:
        yield SRV, SRV.url


def _checkpoint_bytes(n=200_000):
    buf = io.BytesIO()
    torch.save({"w": torch.arange(n, dtype=torch.float32)}, buf)
    return buf.getvalue()


@pytest.fixture()
def entry(server, tmp_path, monkeypatch):
    srv, base = server
    data = _checkpoint_bytes()
    SRV.files["ckpt.pt"] = data
    monkeypatch.setenv("ROMLIB_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("ROMLIB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("ROMLIB_MIRROR", raising=False)
    hub.register(hub.Checkpoint("test/ckpt", base + "/ckpt.pt", approx_mb=1))
    yield data
    hub.REGISTRY.pop("test/ckpt", None)


def test_cache_dir_honours_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("ROMLIB_CACHE", str(tmp_path / "a"))
    assert hub.cache_dir() == tmp_path / "a"
    monkeypatch.delenv("ROMLIB_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert hub.cache_dir() == tmp_path / "xdg" / "romlib"


def test_full_download_is_recorded_and_cached(entry, tmp_path):
    path = hub.download("test/ckpt", progress=False)
    assert path.read_bytes() == entry
    rec = json.loads(path.with_name("ckpt.pt.json").read_text())
    assert rec["size"] == len(entry) and len(rec["sha256"]) == 64
    assert not path.with_name("ckpt.pt.part").exists()
    n = len(SRV.log)
    assert hub.download("test/ckpt", progress=False) == path and len(SRV.log) == n  # no second request
    assert torch.equal(hub.load_checkpoint("test/ckpt", progress=False)["w"], torch.arange(200_000, dtype=torch.float32))


def test_a_cut_is_resumed_at_once(entry, caplog):
    SRV.misbehave["ckpt.pt"] = ("cut", 100_000)
    path = hub.download("test/ckpt", progress=False)  # tried again by itself, asking only for the rest
    assert path.read_bytes() == entry
    assert SRV.log == [("/ckpt.pt", None), ("/ckpt.pt", "bytes=100000-")]
    assert "broke off at 100000 of the" in caplog.text and "; trying again (1 of 2), resuming" in caplog.text


def test_resume_after_cuts_that_outlast_the_retries(entry):
    SRV.misbehave["ckpt.pt"] = [("cut", 100_000)] * (RETRIES + 1)
    with pytest.raises(hub.CheckpointUnavailable, match=r"of the body \(tried 3 times\); call again to resume"):
        hub.download("test/ckpt", progress=False)
    part = hub.cache_dir() / "ckpt.pt.part"
    have = part.stat().st_size
    assert have == 300_000  # three cuts of 100 kB, each resumed
    path = hub.download("test/ckpt", progress=False)
    assert path.read_bytes() == entry
    assert SRV.log[-1] == ("/ckpt.pt", f"bytes={have}-")  # asked only for the rest


def test_truncated_cached_file_is_fetched_again(entry):
    path = hub.download("test/ckpt", progress=False)
    path.write_bytes(entry[:5000])  # truncated behind our back
    assert hub.download("test/ckpt", progress=False).read_bytes() == entry


def test_corrupt_file_without_record_is_replaced_on_load(entry):
    cache = hub.cache_dir()
    cache.mkdir(parents=True)
    (cache / "ckpt.pt").write_bytes(b"this is not a checkpoint" * 100)  # e.g. copied by hand, broken
    state = hub.load_checkpoint("test/ckpt", progress=False)
    assert state["w"].shape == (200_000,)
    assert (cache / "ckpt.pt").read_bytes() == entry


def _worker(url, cache, q):
    import os

    os.environ["ROMLIB_CACHE"] = cache
    from romlib import hub as h

    h.register(h.Checkpoint("test/ckpt", url))
    q.put(str(h.download("test/ckpt", progress=False)))


def test_two_concurrent_callers_share_one_download(entry, server):
    _, base = server
    SRV.misbehave["ckpt.pt"] = ("delay", 0.002)  # slow enough that the second caller arrives mid-download
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(base + "/ckpt.pt", str(hub.cache_dir()), q)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    paths = {q.get(timeout=5) for _ in procs}
    assert len(paths) == 1
    assert open(paths.pop(), "rb").read() == entry
    assert [p for p, _ in SRV.log].count("/ckpt.pt") == 1


def test_offline_error_names_file_url_and_destination(entry, monkeypatch):
    monkeypatch.setenv("ROMLIB_OFFLINE", "1")
    with pytest.raises(hub.CheckpointUnavailable) as e:
        hub.download("test/ckpt", progress=False)
    msg = str(e.value)
    assert "ckpt.pt" in msg and hub.REGISTRY["test/ckpt"].url in msg and str(hub.cache_dir()) in msg
    assert SRV.log == []  # offline: nothing was asked of the network


def test_unreachable_server_and_unknown_names(tmp_path, monkeypatch):
    monkeypatch.setenv("ROMLIB_CACHE", str(tmp_path))
    monkeypatch.delenv("ROMLIB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    with pytest.raises(hub.CheckpointUnavailable, match="no connection"):
        hub.download("http://127.0.0.1:9/none.pt", progress=False, timeout=2)
    with pytest.raises(KeyError, match="valid names: .*glide/base-inpaint") as e:
        hub.download("glide/nope")
    assert isinstance(e.value, ValueError)  # the command line turns it into a clear error, exit 2


def test_only_named_types_are_unpickled(tmp_path, monkeypatch):
    import argparse

    monkeypatch.setenv("ROMLIB_CACHE", str(tmp_path))
    torch.save({"model": {"w": torch.ones(2)}, "args": argparse.Namespace(lr=1)}, tmp_path / "m.pth")
    (tmp_path / "m.pth.json").unlink(missing_ok=True)
    hub.register(hub.Checkpoint("test/ns", "http://127.0.0.1:9/m.pth"))
    try:
        with pytest.raises(Exception, match="Namespace"):
            hub.load_checkpoint("test/ns", progress=False)
        assert torch.equal(hub.load_checkpoint("test/ns", allow=["argparse.Namespace"], key="model", progress=False)["w"], torch.ones(2))
        with pytest.raises(ValueError, match="only"):
            hub.load_checkpoint("test/ns", allow=["os.system"])
    finally:
        hub.REGISTRY.pop("test/ns")


# ----------------------------------------------------------------------------- mirror, ensure, bad inputs
def _official_unreachable(name="test/ckpt"):
    """Register the test file with an official address nobody can reach (only a mirror can serve it)."""
    hub.register(hub.Checkpoint(name, "http://127.0.0.1:9/official/ckpt.pt", approx_mb=1))


def test_http_mirror_serves_every_file_by_its_name(entry, server, monkeypatch):
    _, base = server
    _official_unreachable()
    monkeypatch.setenv("ROMLIB_MIRROR", base + "/")
    path = hub.download("test/ckpt", progress=False)
    assert path.read_bytes() == entry and SRV.log == [("/ckpt.pt", None)]
    assert json.loads(path.with_name("ckpt.pt.json").read_text())["source"] == base + "/ckpt.pt"


def test_mirror_lacking_a_file_says_so(entry, server, monkeypatch):
    _, base = server
    monkeypatch.setenv("ROMLIB_MIRROR", base)
    hub.register(hub.Checkpoint("test/other", "http://127.0.0.1:9/other.pt", approx_mb=2))
    try:
        with pytest.raises(hub.CheckpointUnavailable, match="the mirror has no other.pt") as e:
            hub.download("test/other", progress=False)
        assert "official address: http://127.0.0.1:9/other.pt" in str(e.value)
        assert not list(hub.cache_dir().glob("other.pt*.part"))
    finally:
        hub.REGISTRY.pop("test/other")


def test_local_folder_mirror_works_offline_and_resumes(entry, tmp_path, monkeypatch):
    folder = tmp_path / "usb-stick"
    folder.mkdir()
    (folder / "ckpt.pt").write_bytes(entry)
    _official_unreachable()
    monkeypatch.setenv("ROMLIB_MIRROR", str(folder))
    monkeypatch.setenv("ROMLIB_OFFLINE", "1")  # a folder is not the network
    cache = hub.cache_dir()
    cache.mkdir(parents=True)
    (cache / "ckpt.pt.part").write_bytes(entry[:1000])  # an earlier copy broke off
    assert hub.download("test/ckpt", progress=False).read_bytes() == entry
    assert not (cache / "ckpt.pt.part").exists()


def test_ensure_names_every_missing_file_at_once_offline(entry, monkeypatch):
    monkeypatch.setenv("ROMLIB_OFFLINE", "1")
    hub.register(hub.Checkpoint("test/second", "http://127.0.0.1:9/second.pt", approx_mb=3))
    try:
        t0 = time.perf_counter()
        with pytest.raises(hub.CheckpointUnavailable) as e:
            hub.ensure(["test/ckpt", "test/second"], progress=False)
        assert time.perf_counter() - t0 < 2
        msg = str(e.value)
        assert "2 file(s)" in msg and "ckpt.pt" in msg and "second.pt" in msg and msg.count("put it by hand at") == 2
        assert {c.name for c, _, _ in e.value.missing} == {"test/ckpt", "test/second"}
        assert SRV.log == []
    finally:
        hub.REGISTRY.pop("test/second")


def test_ensure_fetches_what_is_missing_and_reports_an_unreachable_host_quickly(entry, monkeypatch):
    hub.register(hub.Checkpoint("test/dead", "http://127.0.0.1:9/dead.pt"))
    try:
        with pytest.raises(hub.CheckpointUnavailable, match="cannot reach 127.0.0.1") as e:
            hub.ensure(["test/ckpt", "test/dead"], progress=False)
        assert [c.name for c, _, _ in e.value.missing] == ["test/dead"]
        assert hub.cached("test/ckpt") is not None  # the reachable one was fetched anyway
    finally:
        hub.REGISTRY.pop("test/dead")


def test_a_stale_part_larger_than_the_file_is_restarted(entry):
    cache = hub.cache_dir()
    cache.mkdir(parents=True)
    (cache / "ckpt.pt.part").write_bytes(b"x" * (len(entry) + 10))
    assert hub.download("test/ckpt", progress=False).read_bytes() == entry


def test_force_keeps_the_good_file_until_the_new_one_is_whole(entry):
    path = hub.download("test/ckpt", progress=False)
    SRV.misbehave["ckpt.pt"] = [("cut", 50_000)] * 3
    with pytest.raises(hub.CheckpointUnavailable, match="resume"):
        hub.download("test/ckpt", progress=False, force=True)
    assert path.read_bytes() == entry  # the good copy is untouched beside the .part


@pytest.mark.parametrize("error", [MemoryError(), RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: "
                                                                 "can't allocate memory: you tried to allocate 1540000000 bytes")])
def test_a_good_file_is_never_deleted_when_memory_runs_out(entry, monkeypatch, error):
    path = hub.download("test/ckpt", progress=False)

    def boom(*a, **k):
        raise error

    monkeypatch.setattr(torch, "load", boom)
    with pytest.raises(type(error)) as e:
        hub.load_checkpoint("test/ckpt", progress=False)
    said = str(e.value) + " ".join(getattr(e.value, "__notes__", []))
    assert "ckpt.pt" in said and "kept" in said
    assert path.read_bytes() == entry and path.with_name("ckpt.pt.json").exists()
    assert len(SRV.log) == 1  # not fetched again


def test_a_broken_archive_of_the_right_size_is_replaced(entry):
    path = hub.download("test/ckpt", progress=False)
    data = bytearray(entry)
    data[-200:] = b"\0" * 200  # the zip directory is gone; the size still matches the record
    path.write_bytes(bytes(data))
    assert torch.equal(hub.load_checkpoint("test/ckpt", progress=False)["w"], torch.arange(200_000, dtype=torch.float32))
    assert path.read_bytes() == entry and len(SRV.log) == 2


def test_a_code_carrying_pickle_is_refused_not_run_not_deleted(entry, tmp_path):
    import os

    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.makedirs, (str(marker),))

    cache = hub.cache_dir()
    cache.mkdir(parents=True)
    torch.save({"w": torch.ones(2), "x": Payload()}, cache / "ckpt.pt")
    with pytest.raises(hub.UnsafeCheckpoint, match=r"refused: .*ckpt.pt asks to run code .*GLOBAL"):
        hub.load_checkpoint("test/ckpt", progress=False)
    assert not marker.exists() and (cache / "ckpt.pt").exists() and SRV.log == []


def _read_only(monkeypatch, folder):
    """Make ``folder`` read-only (root ignores permission bits, so hub's write check is told too)."""
    import os

    folder.chmod(0o555)
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if Path(p) == folder and mode & os.W_OK else real(p, mode, **kw))


def test_a_read_only_cache_with_every_file_works_and_names_what_it_lacks(entry, monkeypatch):
    from filelock import FileLock

    path = hub.download("test/ckpt", progress=False)
    path.with_name("ckpt.pt.lock").unlink(missing_ok=True)
    cache = path.parent
    _read_only(monkeypatch, cache)
    monkeypatch.setattr(FileLock, "__enter__", lambda self: pytest.fail("a lock was taken to read"))
    try:
        assert hub.download("test/ckpt", progress=False) == path
        assert hub.load_checkpoint("test/ckpt", progress=False)["w"].shape == (200_000,)
        assert sorted(p.name for p in cache.iterdir()) == ["ckpt.pt", "ckpt.pt.json"]
        hub.register(hub.Checkpoint("test/absent", "http://127.0.0.1:9/absent.pt"))
        with pytest.raises(hub.CheckpointUnavailable, match="read-only"):
            hub.download("test/absent", progress=False)
    finally:
        hub.REGISTRY.pop("test/absent", None)
        cache.chmod(0o755)


def test_a_damaged_file_in_a_read_only_cache_is_named_and_kept(entry, monkeypatch):
    import os

    path = hub.download("test/ckpt", progress=False)
    path.write_bytes(entry[:-200] + b"\0" * 200)
    real_replace, real_unlink = os.replace, Path.unlink

    def replace(a, b):
        if Path(a).parent == path.parent:
            raise PermissionError(13, "Read-only file system")
        return real_replace(a, b)

    def unlink(self, missing_ok=False):
        if self.parent == path.parent:
            raise PermissionError(13, "Read-only file system")
        return real_unlink(self, missing_ok=missing_ok)

    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(Path, "unlink", unlink)
    with pytest.raises(hub.CheckpointUnavailable, match=r"ckpt.pt is damaged .* cannot be moved aside"):
        hub.load_checkpoint("test/ckpt", progress=False)
    assert path.exists()


def test_verify_rehashes_the_cache_and_the_cli_reports_damage(entry, capsys):
    from romlib.cli import main

    path = hub.download("test/ckpt", progress=False)
    rows = hub.verify(["test/ckpt"])
    assert rows[0]["status"] == "ok" and rows[0]["size"] == len(entry)
    assert main(["download", "--verify", "test/ckpt"]) == 0
    data = bytearray(entry)
    data[len(data) // 2] ^= 0xFF  # one flipped bit in the weights: same size, loads silently
    path.write_bytes(bytes(data))
    assert main(["download", "--verify"]) == 1
    out = capsys.readouterr()
    assert "ckpt.pt" in out.out and "damaged: its sha256 differs" in out.err
    bad = list(path.parent.glob("ckpt.pt.bad-*"))
    assert not path.exists() and [p.read_bytes() for p in bad if not p.name.endswith(".record")] == [bytes(data)]
    assert hub.download("test/ckpt", progress=False).read_bytes() == entry  # fetched again
    assert hub.verify(["test/ckpt"])[0]["status"] == "ok"


def test_download_command_ends_with_a_table(entry, capsys):
    from romlib.cli import main

    assert main(["download", "test/ckpt"]) == 0
    assert main(["download", "test/ckpt"]) == 0
    out = capsys.readouterr().out
    assert "file" in out and "status" in out and "downloaded" in out and "cached" in out


def test_download_command_covers_the_backend_and_baselines(monkeypatch, tmp_path, capsys):
    from romlib.cli import main

    asked = []
    monkeypatch.setenv("ROMLIB_CACHE", str(tmp_path))
    monkeypatch.setattr(hub, "ensure", lambda names, **kw: asked.extend(names))
    assert main(["download", "--baselines"]) == 0
    assert set(asked) == set(hub.GLIDE_BACKEND + hub.EXAMPLES + hub.BASELINES)
    assert "clip_vit_b16_openai.safetensors" in capsys.readouterr().out


def test_open_clip_is_never_left_to_fetch_weights_itself():
    from romlib.rank import load_clip_ranker

    with pytest.raises(ValueError, match="not registered in romlib.hub"):
        load_clip_ranker(pretrained="laion2b_s34b_b88k")
    assert ("ViT-B-16", "openai") in __import__("romlib.rank", fromlist=["CLIP_FILES"]).CLIP_FILES


def test_the_offline_advice_names_the_command_that_fetches_exactly_the_missing_files(monkeypatch, tmp_path):
    from romlib.hub.download import download_command

    assert download_command(hub.GLIDE_BACKEND + hub.EXAMPLES) == "`romlib download`"
    assert download_command(hub.GLIDE_BACKEND[:1] + hub.BASELINES[:1]) == "`romlib download --baselines`"
    assert download_command(hub.SD_BACKEND + hub.CLIPSEG) == "`romlib download --sd`"
    assert download_command(hub.EXAMPLES) == "`romlib download`"
    # CLIPSeg for the glide backend (notebook 02): the glide command and its --clipseg flag, with or without the rest
    assert download_command(hub.GLIDE_BACKEND + hub.CLIPSEG) == "`romlib download --clipseg`"
    assert download_command(hub.CLIPSEG) == "`romlib download --clipseg`"
    # MDETR for the sd backend: its three files by name, not the glide backend's 5.5 GB
    assert download_command(hub.SD_BACKEND + hub.MDETR) == f"`romlib download --sd` and `romlib download {' '.join(hub.MDETR)}`"
    assert download_command(hub.SD_BACKEND + hub.GLIDE_BACKEND) == "`romlib download` and `romlib download --sd`"
    assert download_command(["test/ckpt"]) == "`romlib download test/ckpt`"
    monkeypatch.setenv("ROMLIB_OFFLINE", "1")
    monkeypatch.setenv("ROMLIB_CACHE", str(tmp_path))
    monkeypatch.delenv("ROMLIB_MIRROR", raising=False)
    with pytest.raises(hub.CheckpointUnavailable, match=r"network with `romlib download --sd` and copy"):
        hub.ensure(hub.SD_BACKEND, progress=False)
