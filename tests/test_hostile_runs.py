"""Issue 32, points 3, 4, 5, 6 and 7: readers see one run while another process replaces it, a second writer is
refused before it computes, locks and leftovers cannot outlive their owner, the study CSV is safe to open in a
spreadsheet, ``rl.check`` gives a verdict within seconds for any answer, a full disk is named with its sizes."""
from __future__ import annotations

import errno
import json
import multiprocessing as mp
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import romlib.runs as runs
from romlib.cli import main
from romlib.study import Rankings, load_csv, save_csv
from romlib.study.data import FORMULA_STARTS, escape_cell, unescape_cell
from romlib.teach.exercises import EXERCISES, check


# ----------------------------------------------------------------------------- 3. readers see one run
def _write_run(folder: Path, n: int, overwrite: bool) -> None:
    """A run whose every file says which run it is (``n``)."""
    with runs.RunWriter(folder, overwrite=overwrite) as w:
        names = [f"rank{i:02d}_full.png" for i in range(3)] + ["mask.png"]
        for name in names:
            w.write(name, lambda p, n=n, name=name: p.write_bytes(f"{name}:{n}".encode() * 50))
        w.finish({"run": n}, {"full_res": names[:3], "mask": [names[3]]})


def _writer(folder: str, seconds: float, q) -> None:
    import tqdm.std

    tqdm.std.tqdm.set_lock(__import__("threading").RLock())  # nothing shared with pytest's lock over the fork
    n, end = 1, time.monotonic() + seconds
    while time.monotonic() < end:
        n += 1
        _write_run(Path(folder), n, overwrite=True)
    q.put(n)


def test_load_run_never_mixes_two_runs_while_another_process_replaces_them(tmp_path):
    folder = tmp_path / "out"
    _write_run(folder, 1, overwrite=False)
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    p = ctx.Process(target=_writer, args=(str(folder), 4.0, q))
    p.start()
    reads, seen = 0, set()
    try:
        while p.is_alive() and reads < 4000:
            run = runs.load_run(folder)
            n = run.result["run"]
            for name, data in run.files.items():
                if name != "result.json":
                    assert data == f"{name}:{n}".encode() * 50, (name, n)  # every file of the same run
            assert set(run.files) == {"result.json", "rank00_full.png", "rank01_full.png", "rank02_full.png", "mask.png"}
            reads += 1
            seen.add(n)
    finally:
        p.join(30)
    swaps = q.get(timeout=5)
    assert p.exitcode == 0 and swaps > 10 and reads > 50 and len(seen) > 3  # it really read across many swaps
    assert not list(folder.glob(".romlib-*"))  # lock, staging and backup folders all gone


def test_load_run_reads_images_and_names_what_is_missing(tmp_path):
    from PIL import Image

    folder = tmp_path / "run"
    with runs.RunWriter(folder) as w:
        w.write("mask.png", lambda p: Image.new("L", (4, 3), 255).save(p))
        w.finish({"x": 1}, {"mask": ["mask.png"]})
    run = runs.load_run(folder)
    assert run.image("mask.png").size == (4, 3) and run.result["x"] == 1
    with pytest.raises(KeyError, match="has no file 'rank00_full.png'; it has mask.png, result.json"):
        run.image("rank00_full.png")
    with pytest.raises(FileNotFoundError, match="records no run"):
        runs.load_run(tmp_path / "empty", tries=2, wait=0)
    (folder / "result.json").write_text('{"files": {"mask": ["../x"]}}')
    with pytest.raises(ValueError, match="unexpected shape"):
        runs.load_run(folder)


def _hold_lock(folder, ready, release):
    with runs.hold(folder):
        ready.set()
        release.wait(30)


def test_a_second_overwrite_is_refused_before_it_computes(tmp_path, capsys, monkeypatch):
    folder = tmp_path / "demo"
    _write_run(folder, 1, overwrite=False)
    ctx = mp.get_context("fork")
    ready, release = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold_lock, args=(folder, ready, release))
    holder.start()
    try:
        assert ready.wait(20)
        computed = []
        import romlib.shapes.demo as demo

        monkeypatch.setattr(demo, "run", lambda *a, **k: computed.append(1))
        capsys.readouterr()
        t0 = time.monotonic()
        assert main(["demo", "--out", str(folder), "--overwrite", "--quiet"]) == 2
        err = capsys.readouterr().err
        assert computed == [] and time.monotonic() - t0 < 10  # refused before any work
        assert f"another romlib run (process {holder.pid}, started " in err and f"on {socket.gethostname()}" in err
        assert str(folder / runs.LOCK) in err
    finally:
        release.set()
        holder.join(20)
    assert not (folder / runs.LOCK).exists()  # released by its owner


# ----------------------------------------------------------------------------- 4. locks that cannot outlive their owner
def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def _stage(folder: Path, pid: int, owner: dict | None) -> Path:
    stage = folder / f"{runs.STAGING}{pid}-1"
    stage.mkdir(parents=True)
    (stage / "rank00_full.png").write_bytes(b"new")
    if owner is not None:
        (stage / ".owner").write_text(json.dumps(owner))
    return stage


@pytest.mark.parametrize("when", ["taking", "releasing"])
def test_an_interrupt_while_the_lock_is_taken_or_released_leaves_no_lock(tmp_path, monkeypatch, when,
                                                                         python_signal_handlers):
    """A real SIGINT delivered in the middle of writing (or reading) the lock file: the lock is gone after."""
    import signal

    real = runs.owner if when == "taking" else runs._read_owner
    fired = []

    def interrupting(*a, **k):
        if not fired:
            fired.append(1)
            os.kill(os.getpid(), signal.SIGINT)
        return real(*a, **k)

    monkeypatch.setattr(runs, "owner" if when == "taking" else "_read_owner", interrupting)
    with pytest.raises(KeyboardInterrupt):
        with runs.hold(tmp_path / "out"):
            if when == "taking":
                pytest.fail("the interrupt should have ended the block before it began")
    assert fired
    assert not (tmp_path / "out" / runs.LOCK).exists()
    assert not runs._HELD


@pytest.mark.parametrize("case", ["dead pid", "pid reused (other start time)", "legacy: pid 1 is not romlib",
                                  "legacy: pid started after the folder"])
def test_a_leftover_staging_folder_of_an_owner_that_is_gone_is_settled(tmp_path, case, caplog):
    folder = tmp_path / "out"
    _write_run(folder, 1, overwrite=False)
    me = runs.owner()
    if case == "dead pid":
        stage = _stage(folder, _dead_pid(), {**me, "pid": 0})
        stage = stage.rename(folder / f"{runs.STAGING}{_dead_pid()}-1")
    elif case.startswith("pid reused"):
        parent = os.getppid()  # alive, but not the process that wrote the folder
        stage = _stage(folder, parent, {"pid": parent, "start": 12345.0, "host": me["host"]})
    elif case.startswith("legacy: pid 1"):
        if not os.path.exists("/proc/1/cmdline") or b"python" in open("/proc/1/cmdline", "rb").read():
            pytest.skip("process 1 here is a python process")
        stage = _stage(folder, 1, None)
    else:
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
        try:
            stage = _stage(folder, child.pid, None)
            old = time.time() - 3600
            os.utime(stage, (old, old))  # written an hour before that process started
            _write_run(folder, 2, overwrite=True)
        finally:
            child.kill()
            child.wait()
        assert not stage.exists() and runs.load_run(folder).result["run"] == 2
        return
    _write_run(folder, 2, overwrite=True)  # not blocked: the leftover is settled
    assert not stage.exists() and runs.load_run(folder).result["run"] == 2
    assert "a run killed while being written was settled" in caplog.text


def test_a_living_owner_blocks_with_its_identity_and_another_hosts_names_what_to_delete(tmp_path):
    folder = tmp_path / "out"
    _write_run(folder, 1, overwrite=False)
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        time.sleep(0.3)
        start = runs._process_start(child.pid)
        stage = _stage(folder, child.pid, {"pid": child.pid, "start": start, "host": socket.gethostname()})
        with pytest.raises(runs.FolderBusy, match=rf"another romlib run \(process {child.pid}, started .*, on "
                                                   rf"{socket.gethostname()}\) is writing into .* delete {stage}"):
            runs.RunWriter(folder, overwrite=True)
    finally:
        child.kill()
        child.wait()
    _write_run(folder, 2, overwrite=True)  # its owner is dead now: settled
    elsewhere = _stage(folder, 4242, {"pid": 4242, "start": 1.0, "host": "other-host.example"})
    with pytest.raises(runs.FolderBusy, match=rf"on host other-host.example .*then delete {elsewhere}"):
        runs.RunWriter(folder, overwrite=True)
    import shutil

    shutil.rmtree(elsewhere)
    (folder / runs.LOCK).write_text(json.dumps({"pid": 4242, "start": 1.0, "host": "other-host.example"}))
    with pytest.raises(runs.FolderBusy, match=rf"on host other-host.example .*delete {folder / runs.LOCK}"):
        runs.RunWriter(folder, overwrite=True)
    (folder / runs.LOCK).write_text(json.dumps({"pid": _dead_pid(), "start": 1.0, "host": socket.gethostname()}))
    _write_run(folder, 3, overwrite=True)  # a dead owner's lock: settled
    assert runs.load_run(folder).result["run"] == 3 and not (folder / runs.LOCK).exists()


# ----------------------------------------------------------------------------- 7. a full disk while saving a run
def test_a_full_disk_while_saving_names_the_file_and_the_sizes_and_keeps_the_old_run(tmp_path):
    folder = tmp_path / "out"
    _write_run(folder, 1, overwrite=False)

    def full(p):
        p.write_bytes(b"x" * 1000)
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError) as e:
        with runs.RunWriter(folder, overwrite=True) as w:
            w.write("mask.png", full)
    msg = str(e.value)
    assert e.value.errno == errno.ENOSPC and f"no space left on the disk of {folder} while writing mask.png" in msg
    assert "1.0 kB (1000 bytes) of this run staged so far" in msg and " free" in msg
    assert runs.load_run(folder).result["run"] == 1 and not list(folder.glob(".romlib-*"))


def test_the_free_space_check_names_sizes_never_zero_mb(tmp_path, monkeypatch, capsys):
    import shutil
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10**9, 10**9, 0))
    assert main(["demo", "--out", str(tmp_path / "d"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "0 MB" not in err and "0 bytes) are free" in err and f"on {tmp_path}" in err and "the run needs up to" in err


# ----------------------------------------------------------------------------- 5. a study CSV a spreadsheet opens safely
HOSTILE_NAMES = ["=HYPERLINK(\"http://x\",\"y\")", "+cmd|' /C calc'!A0", "-2+3", "@SUM(A1)", "\tlead", "\rcr",
                 "'=already quoted", "'plain", "plain", "a,b \"c\"", "ünïcødé", ""]


def _rankings(names) -> Rankings:
    methods = ("m1", "=m2")
    recs = [(u, c, m, r) for u in names[:6] for c in names[6:] for m, r in zip(methods, (1, 2))]
    return Rankings.from_records(recs, methods=methods)


def test_cells_a_spreadsheet_would_evaluate_are_escaped_and_read_back_unchanged(tmp_path):
    r = _rankings(HOSTILE_NAMES)
    path = save_csv(r, tmp_path / "ranks.csv")
    import csv

    with open(path, newline="", encoding="utf-8") as f:
        cells = [c for row in csv.reader(f) for c in row]
    assert not any(c.startswith(FORMULA_STARTS) for c in cells)  # nothing a spreadsheet evaluates
    back = load_csv(path, methods=r.methods)
    assert back.users == r.users and back.cases == r.cases and back.methods == r.methods
    assert np.array_equal(back.ranks, r.ranks, equal_nan=True)


@pytest.mark.parametrize("text", HOSTILE_NAMES)
def test_escape_round_trip(text):
    assert unescape_cell(escape_cell(text)) == text
    assert not escape_cell(text).startswith(FORMULA_STARTS)


def test_a_row_of_the_wrong_width_is_refused_with_its_line(tmp_path):
    p = tmp_path / "r.csv"
    p.write_text("user,case,method,rank\nu,c,m1,1\nu,c,m2\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"line 3: the row has 3 cells where the header has 4"):
        load_csv(p)
    p.write_text("user,case,method,rank\nu,c,m1,1,extra\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"line 2: the row has 5 cells"):
        load_csv(p)


# ----------------------------------------------------------------------------- 6. rl.check: a verdict within seconds
class _BadText(Exception):
    def __str__(self):
        raise RuntimeError("no text")


class _SlowStr(str):
    def __eq__(self, other):
        time.sleep(60)
        return True

    __hash__ = str.__hash__


class _Hostile:
    def __getattr__(self, name):
        raise RuntimeError("boom")

    def __repr__(self):
        raise ValueError("no repr")

    def __eq__(self, other):
        time.sleep(60)
        return True


def _raises_bad_text(*a):
    raise _BadText()


def _loop(*a):
    while True:
        pass


def _loop_that_swallows(*a):
    while True:
        try:
            time.sleep(0.05)
        except BaseException:
            pass


def _generator(*a):
    yield 1


ANSWERS = {
    "zero-stride view of 200 M values": (lambda *a: torch.zeros(1).expand(200_000_000), "has shape (200000000,)"),
    "a huge view of the right number of dims": (lambda *a: torch.zeros(1).expand(10**5, 10**5), "has shape (100000, 100000)"),
    "exception whose __str__ raises": (_raises_bad_text, "its __str__ raised RuntimeError"),
    "slow __eq__ (str subclass)": (lambda *a: _SlowStr("x"), "is a _SlowStr"),
    "hostile object": (lambda *a: _Hostile(), "could not be compared"),
    "generator": (_generator, "is a generator, not a value"),
    "generator function passed": (_generator, "generator"),
    "endless loop": (_loop, "gave no result within 2 s"),
    "endless loop with a bare except": (_loop_that_swallows, "gave no result within 2 s"),
    "not callable": (42, "expected the function"),
}


@pytest.mark.parametrize("what", list(ANSWERS))
def test_check_gives_a_verdict_within_seconds_for_any_answer(what):
    answer, said = ANSWERS[what]
    ex = EXERCISES["01.q-sample"]
    t0 = time.monotonic()
    v = ex.check(answer, time_limit=2)
    assert time.monotonic() - t0 < 6 and not v.ok and said in v.message, v.message


@pytest.mark.parametrize("bad_id", [["01.cf"], None, 3.5, "nope"])
def test_check_with_a_bad_id_is_a_verdict(bad_id):
    v = check(bad_id, lambda: 0, show=False)
    assert not v.ok and "no exercise" in v.message and "01.cf" in v.message


def test_the_solutions_still_pass_under_the_time_limit():
    for ex in EXERCISES.values():
        assert ex.check(ex.solution).ok, ex.id
