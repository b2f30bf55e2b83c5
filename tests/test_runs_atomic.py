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


def test_an_interrupt_just_after_the_commit_says_the_new_run_was_saved_whole(edits, old_run, fake_sampling,
                                                                            monkeypatch, capsys):
    """A signal that lands after the swap committed but before the command's own handler (the commit returning, the
    folder lock's release: seen once in 24 real signals on a loaded machine) reports the new run as kept."""
    import romlib.runs

    d = edits[0]
    finish = romlib.runs.RunWriter.finish

    def finish_then_signal(self, *a, **k):
        finish(self, *a, **k)  # the swap, committed, its own deferred block left
        raise KeyboardInterrupt  # as a SIGTERM arriving right then

    monkeypatch.setattr(romlib.runs.RunWriter, "finish", finish_then_signal)
    rc, err = _cli(_edit_args(d, old_run), capsys)
    assert rc == 130 and "saved whole in" in err and "nothing written" not in err, err
    assert _complete(old_run, {"notes.txt"}) == NEW_TARGET


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
                 "not json", '{"files": {"x": "result.json"}, "extra": 1', '{"files": {"full_res": 3}}',
                 '{"files": {"full_res": null}}', '{"files": {"full_res": [["a.png"]]}}'):
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
            from romlib.interrupts import install

            install()  # what main's first line does (the moments before it: the test of every command below)
            import threading

            import tqdm.auto
            import tqdm.std
            import torch

            # tqdm's default lock holds a multiprocessing semaphore that a fork shares with pytest: a signal landing
            # inside its acquire would leave it held by a dead child, and pytest's next progress bar would wait forever
            for cls in {tqdm.std.tqdm, tqdm.auto.tqdm}:
                cls.set_lock(threading.RLock())

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
        time.sleep(rng.uniform(0.02, 1.2 * length))
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
@pytest.mark.parametrize("command", [["demo", "--out", "out"], ["edit", "photo.png", "--out", "out"], ["download", "--verify"],
                                     ["bench"], ["shapes-train", "--out", "out"], ["shapes-bench", "--out", "out"]],
                         ids=lambda c: c[0])
def test_every_command_catches_an_interrupt_from_its_first_line(command, tmp_path):
    """The signal is sent as soon as main has installed its handlers, while the command is still
    importing torch: one line saying so, exit 130 (SIGINT) or 143 (SIGTERM), nothing written."""
    sig = signal.SIGTERM if command[0] in ("edit", "bench", "shapes-bench") else signal.SIGINT
    env = {**os.environ, "ROMLIB_CACHE": str(tmp_path / "cache")}
    proc = subprocess.Popen([sys.executable, "-m", "romlib.cli", *command], cwd=tmp_path, env=env,
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


def test_a_signal_the_moment_the_handlers_are_in_place_is_caught(python_signal_handlers, monkeypatch, capsys):
    """The narrowest window of the test above, made certain: the signal lands on the very instruction
    after the handlers are installed (a CI run once hit it: exit 1 and a traceback)."""
    import romlib.interrupts as interrupts

    real_install = interrupts.install

    def install_then_signal():
        old = real_install()
        signal.raise_signal(signal.SIGINT)  # delivered to the handler just installed
        return old

    monkeypatch.setattr(interrupts, "install", install_then_signal)
    assert main(["demo", "--out", "never"]) == 130
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "romlib demo: interrupted, nothing written (SIGINT, exit status 130)")


# ---------------------------------------------------------------------------------------------- shapes-train / -bench
TRAIN = ["shapes-train", "--what", "inpaint", "--batch-size", "2", "--save-every", "2", "--threads", "1", "--quiet"]


def _losses(folder):
    import csv

    with open(folder / "inpaint_loss.csv") as f:
        return [(int(r["step"]), float(r["loss"])) for r in csv.DictReader(f)]


def _no_temporary_files(root):
    return not [p for p in root.rglob("*") if p.name.startswith(".") or ".tmp" in p.name]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A finished 4-step training run (checkpoints at steps 2 and 4)."""
    out = tmp_path_factory.mktemp("train") / "run"
    assert main([*TRAIN, "--steps", "4", "--out", str(out)]) == 0
    return out


def test_shapes_train_never_trains_over_a_run(trained, capsys):
    before = _snapshot(trained)
    rc, err = _cli([*TRAIN, "--steps", "4", "--out", trained], capsys)
    assert rc == 2 and "already holds a training run" in err and "inpaint_checkpoint.pt (step 4)" in err
    assert "--resume" in err and "--overwrite" in err and _snapshot(trained) == before
    rc, err = _cli([*TRAIN, "--steps", "4", "--out", trained.parent / "empty", "--resume"], capsys)
    assert rc == 2 and "no checkpoint in" in err and "empty/inpaint_checkpoint.pt" in err
    assert not (trained.parent / "empty").exists()
    rc, err = _cli([*TRAIN, "--out", trained, "--resume", "--overwrite"], capsys)
    assert rc == 2 and "exclude each other" in err and _snapshot(trained) == before


def test_shapes_train_interrupted_keeps_its_checkpoint_and_resumes_from_it(trained, tmp_path, capsys, monkeypatch):
    import romlib.shapes.train as T

    real, calls = T.make_batch, []

    def batch(*a, **k):  # Ctrl-C while drawing step 4's batch: the checkpoint of step 2 is kept
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return real(*a, **k)

    out = tmp_path / "run"
    with monkeypatch.context() as m:
        m.setattr(T, "make_batch", batch)
        rc, err = _cli([*TRAIN, "--steps", "4", "--out", out], capsys)
    assert rc == 130 and "Traceback" not in err
    assert f"kept: inpaint_checkpoint.pt (step 2), inpaint_loss.csv in {out}; rerun the same command with --resume" in err
    assert sorted(p.name for p in out.iterdir()) == ["inpaint_checkpoint.pt", "inpaint_loss.csv"]
    assert _losses(out) == _losses(trained)[:2]
    rc, err = _cli([*TRAIN, "--steps", "4", "--out", out, "--resume"], capsys)
    assert rc == 0, err
    resumed, straight = _losses(out), _losses(trained)
    assert [s for s, _ in resumed] == [1, 2, 3, 4]
    assert [v for _, v in resumed] == pytest.approx([v for _, v in straight], rel=1e-5)  # as if never interrupted
    assert _no_temporary_files(tmp_path)


def test_shapes_train_real_sigterm_keeps_a_whole_checkpoint(tmp_path):
    """SIGTERM at a random moment after the first checkpoint: exit 143, the message names the
    checkpoint's step, that checkpoint is whole and `--resume` continues from it."""
    from romlib.training import checkpoint_step as _checkpoint_step

    out = tmp_path / "run"
    log = tmp_path / "train.log"
    pid = _fork_edit([*TRAIN, "--steps", "10000", "--minutes", "2", "--save-every", "1", "--out", out], log)
    deadline = time.monotonic() + 60
    while not (out / "inpaint_checkpoint.pt").exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(random.Random(3).uniform(0, 0.5))
    os.kill(pid, signal.SIGTERM)
    assert _wait(pid) == 143
    err = log.read_text()
    step = _checkpoint_step(out / "inpaint_checkpoint.pt")
    assert f"inpaint_checkpoint.pt (step {step}), inpaint_loss.csv in {out}" in err and "(SIGTERM, exit status 143)" in err
    assert [s for s, _ in _losses(out)] == list(range(1, step + 1)) and _no_temporary_files(tmp_path / "run")
    assert main([*TRAIN, "--steps", str(step + 1), "--out", str(out), "--resume"]) == 0
    assert _checkpoint_step(out / "inpaint_checkpoint.pt") == step + 1


def test_damaged_checkpoints_and_weights_are_named(trained, tmp_path, capsys):
    import torch

    good = torch.load(trained / "inpaint_checkpoint.pt", weights_only=True)
    wrong_shape = {**good, "model": {k: (v[:1] if v.ndim else v) for k, v in good["model"].items()}}
    cases = {"garbage": os.urandom(4000), "truncated": (trained / "inpaint_checkpoint.pt").read_bytes()[:5000],
             "empty": b"", "wrong-shapes": wrong_shape, "missing-keys": {k: v for k, v in good.items() if k != "opt"},
             "not-a-dict": [1, 2]}
    for name, content in cases.items():
        out = tmp_path / name
        out.mkdir()
        if isinstance(content, bytes):
            (out / "inpaint_checkpoint.pt").write_bytes(content)
        else:
            torch.save(content, out / "inpaint_checkpoint.pt")
        before = _snapshot(out)
        rc, err = _cli([*TRAIN, "--steps", "4", "--out", out, "--resume"], capsys)
        assert rc == 2 and f"{out / 'inpaint_checkpoint.pt'} is damaged" in err, (name, err)
        assert len(err.splitlines()) == 1 and "Traceback" not in err and _snapshot(out) == before, name
        if isinstance(content, bytes) or name == "wrong-shapes":  # the same files as --weights of shapes-bench
            (out / "inpaint.pt").write_bytes((out / "inpaint_checkpoint.pt").read_bytes())
            rc, err = _cli(["shapes-bench", "--weights", out, "--cases", "1", "--out", tmp_path / "bench", "--quiet"], capsys)
            assert rc == 2 and f"{out / 'inpaint.pt'} is damaged" in err and len(err.splitlines()) == 1, (name, err)
    nan = torch.load(trained / "inpaint.pt", weights_only=True)
    nan["state_dict"] = {k: v.fill_(float("nan")) if v.is_floating_point() else v for k, v in nan["state_dict"].items()}
    torch.save(nan, tmp_path / "garbage" / "inpaint.pt")
    rc, err = _cli(["shapes-bench", "--weights", tmp_path / "garbage", "--cases", "1", "--out", tmp_path / "bench"], capsys)
    assert rc == 2 and "is damaged" in err and "non-finite" in err
    assert not (tmp_path / "bench").exists()


def test_shapes_bench_writes_a_new_folder_per_run(tmp_path, capsys):
    args = ["shapes-bench", "--cases", "2", "--samples", "1", "--scales", "3", "--methods", "ccf", "--dilations", "",
            "--steps", "2", "--quiet", "--out", tmp_path / "bench"]
    assert _cli(args, capsys)[0] == 0
    first = [p for p in (tmp_path / "bench").iterdir()]
    snap = _snapshot(first[0])
    assert _cli(args, capsys)[0] == 0  # the same second, the same settings
    runs_ = sorted((tmp_path / "bench").iterdir())
    assert len(runs_) == 2 and first[0] in runs_ and _snapshot(first[0]) == snap
    for r in runs_:
        assert sorted(p.name for p in r.iterdir()) == ["benchmark.png", "results.json", "table.md"]
        assert "_bench_2-cases-seed-0" in r.name


def test_deferred_holds_a_signal_until_the_block_ends(python_signal_handlers):
    from romlib.interrupts import Interrupted, deferred, install, restore

    done = []
    with pytest.raises(KeyboardInterrupt):
        with deferred():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)
            done.append("after the signal")
    assert done == ["after the signal"]
    old = install()
    try:
        with pytest.raises(Interrupted) as e:
            with deferred():
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(0.05)
                done.append("again")
        assert e.value.signum == signal.SIGTERM and done[-1] == "again"
        with deferred(ignore=True):  # dropped: the cleanup after an interrupt runs to its end
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.05)
    finally:
        restore(old)
    assert signal.getsignal(signal.SIGTERM) == old[signal.SIGTERM]


def test_an_undo_that_fails_keeps_the_old_run_and_the_next_run_restores_it(edits, old_run, monkeypatch):
    _, _, _, new_result = edits
    old = _snapshot(old_run)
    real_replace, real_link, replaced, linked = os.replace, os.link, [], []

    def replace(src, dst):
        replaced.append(dst)
        if len(replaced) == (len(old) - 1) + 2:  # the old run's files moved aside, then in the undo the second
            # one cannot be moved back
            raise PermissionError(13, "Permission denied")
        return real_replace(src, dst)

    def link(src, dst):
        linked.append(dst)
        if len(linked) == 4:  # in the swap: the old run moved aside, 3 new files linked in
            raise KeyboardInterrupt
        return real_link(src, dst)

    with monkeypatch.context() as m:
        m.setattr(os, "replace", replace)
        m.setattr(os, "link", link)
        with pytest.raises(OSError, match="could not restore the earlier run .* its files are kept in .*romlib-old-"):
            new_result.save(old_run, top=2, summary="summary.png", overwrite=True)
    assert not (old_run / "result.json").exists() and list(old_run.glob(".romlib-old-*"))
    settled = runs.recover(old_run)
    assert "restored" in settled[0] and _snapshot(old_run) == old and _complete(old_run, {"notes.txt"}) == OLD_TARGET
