"""Issue 20, points 1 and 2: nothing lost, nothing half-written.

`romlib edit --overwrite` is interrupted at every rename of its swap (in-process, before and after
each call), killed outright at every rename (then settled by the next run), and sent real SIGINT and
SIGTERM at random moments; each time a complete run (the old one or the new one, its result.json
listing exactly the files present) remains and no hidden file is left. `romlib shapes-train` never
replaces a run, names damaged checkpoints, says what an interrupt kept, and that resumes;
`romlib shapes-bench` writes a new folder per run.
"""
import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

import romlib.runs as runs
from romlib.cli import main

NEW_TARGET, OLD_TARGET = "a red circle", "a blue square"


def _cli(args, capsys):
    rc = main([str(a) for a in args])
    return rc, capsys.readouterr().err


def _snapshot(folder):
    return {p.name: hashlib.sha1(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def _complete(folder, others=()) -> str:
    """The folder holds one whole run and nothing hidden; returns the run's target text."""
    present = {p.name for p in folder.iterdir()} - set(others)
    hidden = sorted(n for n in present if n.startswith("."))
    assert not hidden, f"left behind: {hidden}"
    listed = runs.read_run(folder)
    assert listed is not None, f"no result.json in {folder}: {sorted(present)}"
    assert sorted(listed) == sorted(present), (sorted(listed), sorted(present))
    return json.loads((folder / "result.json").read_text())["settings"]["target"]


@pytest.fixture(scope="module")
def edits(tmp_path_factory):
    """A photo and a mask, the shapes pipeline, and two edits of it: the old run's (3 samples) and
    the new run's (2 samples: the swap must also remove the old run's extra files)."""
    from romlib.pipeline import ROMPipeline

    d = tmp_path_factory.mktemp("edits")
    rng = np.random.RandomState(0)
    Image.fromarray((rng.rand(48, 64, 3) * 255).astype(np.uint8)).save(d / "photo.png")
    m = np.zeros((48, 64), np.uint8)
    m[10:30, 10:30] = 255
    Image.fromarray(m).save(d / "mask.png")
    pipe = ROMPipeline.from_pretrained("shapes", device="cpu")
    kw = dict(mask=str(d / "mask.png"), steps="5", progress=False)
    old = pipe.edit(str(d / "photo.png"), "", OLD_TARGET, samples=3, **kw)
    new = pipe.edit(str(d / "photo.png"), "", NEW_TARGET, samples=2, **kw)
    return d, pipe, old, new


@pytest.fixture
def old_run(edits, tmp_path):
    """``tmp_path/run``: the old run, plus a file of the user's (notes.txt) that no run records."""
    d, _, old, _ = edits
    folder = tmp_path / "run"
    old.save(folder, top=3, summary="summary.png")
    (folder / "notes.txt").write_text("mine")
    return folder


def _edit_args(d, folder):
    return ["edit", d / "photo.png", "--mask", d / "mask.png", "--target", NEW_TARGET, "--backend", "shapes",
            "--samples", "2", "--out", folder, "--overwrite"]


@pytest.fixture
def fake_sampling(edits, monkeypatch):
    """`romlib edit` returns the precomputed new edit: only the writing is exercised."""
    import romlib.pipeline

    _, pipe, _, new = edits
    monkeypatch.setattr(romlib.pipeline.ROMPipeline, "from_pretrained", classmethod(lambda cls, *a, **k: pipe))
    monkeypatch.setattr(romlib.pipeline.ROMPipeline, "edit", lambda self, *a, **k: new)


def _inject(monkeypatch, folder, at: int, after: bool):
    """os.replace / os.link on paths in ``folder`` raise KeyboardInterrupt at call ``at`` (before or
    after doing it); returns the list of calls seen."""
    calls = []

    def wrap(real):
        def call(src, dst, *a, **k):
            mine = str(folder) in os.fspath(src) or str(folder) in os.fspath(dst)
            if mine:
                calls.append((real.__name__, os.path.basename(src), os.path.basename(dst)))
            if mine and len(calls) == at + 1 and not after:
                raise KeyboardInterrupt
            out = real(src, dst, *a, **k)
            if mine and len(calls) == at + 1 and after:
                raise KeyboardInterrupt
            return out
        return call

    monkeypatch.setattr(os, "replace", wrap(os.replace))
    monkeypatch.setattr(os, "link", wrap(os.link))
    return calls


def test_overwrite_interrupted_at_every_rename_leaves_a_whole_run(edits, old_run, fake_sampling, monkeypatch, capsys):
    d = edits[0]
    old = _snapshot(old_run)
    assert _complete(old_run, {"notes.txt"}) == OLD_TARGET
    # a clean run first: how many renames the swap makes, and the new run's files
    clean = old_run.parent / "clean"
    clean.mkdir()
    for p in old_run.iterdir():
        (clean / p.name).write_bytes(p.read_bytes())
    with monkeypatch.context() as m:
        calls = _inject(m, clean, at=10**6, after=False)
        assert _cli(_edit_args(d, clean), capsys)[0] == 0
    new = _snapshot(clean)
    assert _complete(clean, {"notes.txt"}) == NEW_TARGET and new != old and (clean / "notes.txt").read_text() == "mine"
    n = len(calls)
    assert n == (len(old) - 1) + (len(new) - 1), calls  # the old files moved aside, the new ones linked in
    assert calls[0][1:] == ("result.json", "result.json") and calls[-1][0] == "link" and calls[-1][2] == "result.json"
    for after in (False, True):
        for i in range(n):
            with monkeypatch.context() as m:
                _inject(m, old_run, at=i, after=after)
                rc, err = _cli(_edit_args(d, old_run), capsys)
            assert rc == 130 and "interrupted, nothing written" in err and "Traceback" not in err, (i, after, err)
            # an error inside the swap, even just after its commit, undoes it: the old run, whole
            assert _complete(old_run, {"notes.txt"}) == OLD_TARGET and _snapshot(old_run) == old, (i, after)
    assert not [p for p in old_run.parent.rglob("*") if p.name.startswith(".")]


def test_a_swap_killed_at_every_rename_is_settled_by_the_next_run(edits, old_run, monkeypatch, capsys):
    """A process killed outright mid-swap (no undo runs): the next writer restores the old run or
    keeps the committed new one, whole."""
    _, _, old_result, new_result = edits
    old = _snapshot(old_run)
    seen = set()
    n = len(old) - 1 + 7  # the renames of the swap (as counted above)
    for i in range(n):
        with monkeypatch.context() as m:
            m.setattr(runs.RunWriter, "_undo", lambda self: None)  # the process died here: nothing undone
            m.setattr(runs.RunWriter, "_cleanup", lambda self: None)
            _inject(m, old_run, at=i, after=True)
            with pytest.raises(KeyboardInterrupt):
                new_result.save(old_run, top=2, summary="summary.png", overwrite=True)
        runs._ACTIVE.clear()  # that writer is dead
        assert list(old_run.glob(".romlib-*")), i  # it left its staging (and old) folder
        settled = runs.recover(old_run)
        assert len(settled) == 1
        target = _complete(old_run, {"notes.txt"})
        seen.add(target)
        assert ("restored" in settled[0]) == (target == OLD_TARGET)
        if target == NEW_TARGET:
            for name in _snapshot(old_run):
                if name != "notes.txt":
                    (old_run / name).unlink()
            old_result.save(old_run, top=3, summary="summary.png")
        assert _snapshot(old_run) == old
    assert seen == {OLD_TARGET, NEW_TARGET}  # killed after the commit, the new run is kept


def test_overwrite_refuses_what_no_run_recorded_and_a_strange_result_json(edits, tmp_path, fake_sampling, capsys):
    d = edits[0]
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "summary.png").write_bytes(b"my own figure")
    rc, err = _cli(_edit_args(d, mine), capsys)
    assert rc == 2 and "summary.png, which no result.json there records" in err and "Traceback" not in err
    assert (mine / "summary.png").read_bytes() == b"my own figure"
    for text in ("[1, 2]", '{"files": ["rank00_full.png"]}', '{"files": {"json": [3]}}', '{"files": {"x": ["../a.png"]}}',
                 "not json", '{"files": {"x": "result.json"}, "extra": 1'):
        (mine / "summary.png").unlink(missing_ok=True)
        (mine / "result.json").write_text(text)
        rc, err = _cli(_edit_args(d, mine), capsys)
        assert rc == 2 and "result.json" in err and "expected a JSON object" in err and "Traceback" not in err, (text, err)
        assert sorted(p.name for p in mine.iterdir()) == ["result.json"] and (mine / "result.json").read_text() == text
    (mine / "result.json").write_text('{"files": 3}')
    with pytest.raises(ValueError, match="unexpected shape"):
        edits[3].save(mine, overwrite=True)


# ---------------------------------------------------------------------------------------------- real signals
def _fork_edit(argv, log):
    """`romlib edit` in a forked child (a real process that gets real signals; torch and the models
    are already imported, so a trial costs the edit, not the imports)."""
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        rc = 1
        try:
            import torch

            torch.set_num_threads(1)  # no OpenMP pool is carried over a fork
            sys.stdout = sys.stderr = open(log, "w", buffering=1)
            rc = main([str(a) for a in argv])
        finally:
            sys.stderr.flush()
            os._exit(rc)
    return pid


def _wait(pid, timeout=120.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.01)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    raise AssertionError(f"romlib edit (pid {pid}) did not end within {timeout} s")


def test_real_sigint_and_sigterm_at_random_moments_leave_a_whole_run(edits, old_run):
    d = edits[0]
    args = _edit_args(d, old_run) + ["--steps", "5"]
    old = _snapshot(old_run)
    backup = {n: (old_run / n).read_bytes() for n in old}
    t0 = time.perf_counter()
    pid = _fork_edit(args, old_run.parent / "clean.log")
    assert _wait(pid) == 0, (old_run.parent / "clean.log").read_text()
    length = time.perf_counter() - t0
    assert _complete(old_run, {"notes.txt"}) == NEW_TARGET
    rng = random.Random(20)
    results = []
    for trial in range(24):
        for n in list(_snapshot(old_run)):
            (old_run / n).unlink()
        for n, data in backup.items():
            (old_run / n).write_bytes(data)
        sig = (signal.SIGINT, signal.SIGTERM)[trial % 2]
        log = old_run.parent / f"trial{trial}.log"
        pid = _fork_edit(args, log)
        time.sleep(rng.uniform(0.0, 1.2 * length))
        os.kill(pid, sig)
        rc = _wait(pid)
        err = log.read_text()
        target = _complete(old_run, {"notes.txt"})
        assert rc in (0, 128 + sig), (trial, rc, err)
        assert "Traceback" not in err, err
        if rc:
            assert f"({signal.Signals(sig).name}, exit status {rc})" in err, err
            assert ("saved whole" in err) == (target == NEW_TARGET), (trial, err)
        else:
            assert target == NEW_TARGET
        if target == OLD_TARGET:
            assert _snapshot(old_run) == old
        results.append((sig, rc, target))
        log.unlink()
    assert not [p for p in old_run.parent.rglob("*") if p.name.startswith(".") or ".tmp" in p.name]
    assert {rc for _, rc, _ in results} >= {130, 143}, results  # both signals landed in the middle of some runs


def _handles_sigterm(pid) -> bool:
    """Whether process ``pid`` has a handler for SIGTERM (Linux: /proc/PID/status, SigCgt): true
    once `romlib`'s main has run its first line (Python itself catches only SIGINT)."""
    try:
        text = open(f"/proc/{pid}/status").read()
    except OSError:
        return False
    caught = int(next(line.split()[1] for line in text.splitlines() if line.startswith("SigCgt:")), 16)
    return bool(caught >> (signal.SIGTERM - 1) & 1)


@pytest.mark.skipif(not os.path.exists(f"/proc/{os.getpid()}/status"), reason="needs Linux /proc")
@pytest.mark.parametrize("command", [["demo"], ["edit", "photo.png"], ["download", "--verify"], ["bench"],
                                     ["shapes-train"], ["shapes-bench"]], ids=lambda c: c[0])
def test_every_command_catches_an_interrupt_from_its_first_line(command, tmp_path):
    """The signal is sent as soon as main has installed its handlers, while the command is still
    importing torch: one line saying so, exit 130 (SIGINT) or 143 (SIGTERM), nothing written."""
    sig = signal.SIGTERM if command[0] in ("edit", "bench", "shapes-bench") else signal.SIGINT
    env = {**os.environ, "ROMLIB_CACHE": str(tmp_path / "cache")}
    proc = subprocess.Popen([sys.executable, "-m", "romlib.cli", *command, "--out", "out"] if command[0] != "download"
                            else [sys.executable, "-m", "romlib.cli", *command], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not _handles_sigterm(proc.pid) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    with open(f"/proc/{proc.pid}/maps") as f:
        assert "libtorch" not in f.read()  # the handlers come before the heavy imports
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + sig, (proc.returncode, err)
    assert err.strip().splitlines()[-1] == (f"romlib {command[0]}: interrupted, nothing written "
                                            f"({signal.Signals(sig).name}, exit status {128 + sig})"), err
    assert "Traceback" not in err and sorted(p.name for p in tmp_path.iterdir()) == []
