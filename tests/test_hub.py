"""romlib.hub against a loopback HTTP server (Range support, cut connections, slow responses)."""
import http.server
import io
import json
import multiprocessing as mp
import threading
import time

import pytest
import torch

from romlib import hub


class _Handler(http.server.BaseHTTPRequestHandler):
    files: dict = {}
    log: list = []
    cut_after: dict = {}  # path -> bytes to send before dropping the connection (once)
    delay = 0.0

    def log_message(self, *a):
        pass

    def do_GET(self):
        data = self.files.get(self.path)
        self.log.append((self.path, self.headers.get("Range")))
        if data is None:
            self.send_error(404)
            return
        start = 0
        rng = self.headers.get("Range")
        if rng:
            start = int(rng.split("=")[1].split("-")[0])
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        cut = self.cut_after.pop(self.path, None)
        if cut is not None:
            self.wfile.write(body[:cut])
            self.wfile.flush()
            self.connection.shutdown(2)
            return
        for i in range(0, len(body), 4096):
            self.wfile.write(body[i:i + 4096])
            if self.delay:
                time.sleep(self.delay)


@pytest.fixture()
def server():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    _Handler.files, _Handler.log, _Handler.cut_after, _Handler.delay = {}, [], {}, 0.0
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv, f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


def _checkpoint_bytes(n=200_000):
    buf = io.BytesIO()
    torch.save({"w": torch.arange(n, dtype=torch.float32)}, buf)
    return buf.getvalue()


@pytest.fixture()
def entry(server, tmp_path, monkeypatch):
    srv, base = server
    data = _checkpoint_bytes()
    _Handler.files["/ckpt.pt"] = data
    monkeypatch.setenv("ROMLIB_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("ROMLIB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
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
    n = len(_Handler.log)
    assert hub.download("test/ckpt", progress=False) == path and len(_Handler.log) == n  # no second request
    assert torch.equal(hub.load_checkpoint("test/ckpt", progress=False)["w"], torch.arange(200_000, dtype=torch.float32))


def test_resume_after_a_cut(entry):
    _Handler.cut_after["/ckpt.pt"] = 100_000
    with pytest.raises(hub.CheckpointUnavailable, match="resume"):
        hub.download("test/ckpt", progress=False)
    part = hub.cache_dir() / "ckpt.pt.part"
    have = part.stat().st_size
    assert 0 < have <= 100_000
    path = hub.download("test/ckpt", progress=False)
    assert path.read_bytes() == entry
    assert _Handler.log[-1] == ("/ckpt.pt", f"bytes={have}-")  # asked only for the rest


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
    _Handler.delay = 0.002  # slow enough that the second caller arrives mid-download
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
    assert [p for p, _ in _Handler.log].count("/ckpt.pt") == 1


def test_offline_error_names_file_url_and_destination(entry, monkeypatch):
    monkeypatch.setenv("ROMLIB_OFFLINE", "1")
    with pytest.raises(hub.CheckpointUnavailable) as e:
        hub.download("test/ckpt", progress=False)
    msg = str(e.value)
    assert "ckpt.pt" in msg and hub.REGISTRY["test/ckpt"].url in msg and str(hub.cache_dir()) in msg
    assert _Handler.log == []  # offline: nothing was asked of the network


def test_unreachable_server_and_unknown_names(tmp_path, monkeypatch):
    monkeypatch.setenv("ROMLIB_CACHE", str(tmp_path))
    monkeypatch.delenv("ROMLIB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    with pytest.raises(hub.CheckpointUnavailable, match="no connection"):
        hub.download("http://127.0.0.1:9/none.pt", progress=False, timeout=2)
    with pytest.raises(KeyError, match="known names"):
        hub.download("glide/nope")


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
