"""Run folders, and how a run is written or replaced so that nothing is ever lost
(:class:`RunWriter`, :func:`new_run_dir`, :func:`read_run`, :func:`recover`).

A *run* is the set of files a ``result.json`` lists, ``result.json`` included; ``romlib edit``
writes each run into a new folder (:func:`new_run_dir`), ``romlib edit --overwrite`` and
``EditResult.save(folder, overwrite=True)`` replace the run recorded in ``folder/result.json``.

Writing a run (the CLI and :meth:`romlib.result.EditResult.save` share it):

0. *the lock*: a writer holds ``folder/.romlib-lock`` (:func:`hold`, taken by the CLI before it computes an
   edit, so a second ``--overwrite`` into the same folder is refused at once); the lock, like every staging and
   backup folder, records its owner — process ID, the process's start time and the host — so a lock or
   leftover whose owner is gone (dead, or its process ID now another process's) is settled by itself, and one
   held on another host is named with the exact path to delete;
1. *staging*: every file, ``result.json`` last, is written complete into a hidden folder beside the
   run's files, ``folder/.romlib-new-<pid>-<n>`` (same file system, so moving is a rename);
2. *swap* (signals held by :class:`romlib.interrupts.deferred`, so Ctrl-C or SIGTERM takes effect
   only after it): with ``overwrite``, the earlier ``result.json`` and then the files it records are
   renamed into ``folder/.romlib-old-<pid>-<n>``; the new files are hard-linked into ``folder``
   (a link never replaces a file: a file that appeared meanwhile is refused), ``result.json`` last;
   linking the new ``result.json`` is the commit;
3. the old folder and the staging folder are deleted.

Any failure or interrupt before the commit undoes the swap (:func:`_rollback`: the new links are
removed, the old files renamed back, ``result.json`` last). At every moment ``folder`` holds the old
run or the new one whole, or the old run is whole in ``.romlib-old-*`` and the new one whole in
``.romlib-new-*``. A process killed outright (SIGKILL, power loss) can leave that last state; the
next :class:`RunWriter` (any ``romlib edit``/``demo`` into that folder) calls :func:`recover`, which
settles it by one rule: ``folder/result.json`` present means the swap committed (or never began),
so the leftovers are deleted; absent means it did not, so the old run is restored from
``.romlib-old-*``. Both are logged. Leftovers of a process still alive are left alone (and an
overwrite is refused while they exist).

*Reading* a run while another process may replace it: :func:`load_run` returns one run's ``result.json`` and
the files it lists, read whole into memory — never a mix of two runs: it opens every file, then checks that
``result.json`` and each file are still the ones it opened (a swap in between: it reads again).

Never replaced, even with ``overwrite``: an input of the run (``protect``), a file that no
``result.json`` records (a user's own ``summary.png``), a file a ``result.json`` lists under a
name romlib does not write (:data:`OUTPUT_PATTERN`). A ``result.json`` of an unexpected shape is
refused with the shape expected. Without ``overwrite`` no existing file is replaced at all.
"""
from __future__ import annotations

import contextlib
import errno
import io
import itertools
import json
import logging
import os
import re
import shutil
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .interrupts import deferred

__all__ = ["RunWriter", "commits", "committed", "new_run_dir", "run_dir_name", "read_run", "load_run", "Run", "RunChanging", "unrecorded_outputs",
           "recover", "refuse_broken_link", "hold", "FolderBusy", "owner", "OUTPUT_PATTERN", "LOCK"]

log = logging.getLogger(__name__)

#: the names a saved run uses (an input whose name matches, in a folder written with overwrite, is refused)
OUTPUT_PATTERN = re.compile(r"^(rank\d+_(sample\d+|full)\.png|mask\.png|result\.json|summary\.png|input\.png|demo\.png)$")
STAGING, BACKUP = ".romlib-new-", ".romlib-old-"
#: the lock file of a folder being written (JSON: its owner)
LOCK = ".romlib-lock"
_OWNER = ".owner"  # the owner record inside a staging or backup folder
_HELD: dict[str, int] = {}  # folders this process holds the lock of (re-entrant)
_SHAPE = 'a JSON object whose "files" maps each kind to a list of file names in the folder'
_seq = itertools.count(1)
_ACTIVE: set[str] = set()  # tokens of this process's writers now at work (never recovered under them)
#: the folders whose run this process committed (recorded with signals deferred, so a caller interrupted at any moment
#: after the commit can tell: :func:`committed`)
_COMMITTED: list[str] = []


def commits() -> int:
    """How many runs this process has committed so far (pass it to :func:`committed` as ``since``)."""
    return len(_COMMITTED)


def committed(folder=None, since: int = 0) -> Path | None:
    """The folder of the last whole run this process committed (its ``result.json`` swapped in) after its first
    ``since`` commits (:func:`commits`), if it is ``folder`` or a run folder directly inside it (``None``: any);
    else None."""
    if len(_COMMITTED) <= since:
        return None
    last = Path(_COMMITTED[-1])
    if folder is None or last == Path(folder).resolve() or last.parent == Path(folder).resolve():
        return last
    return None


def run_dir_name(guidance: str, text: str, when: float | None = None) -> str:
    """``2026-11-27T10-42-05_ccf_the-red-car``: the start time, the method and the text (a slug)."""
    stamp = time.strftime("%Y-%m-%dT%H-%M-%S", time.localtime(when if when is not None else time.time()))
    slug = re.sub(r"[^a-z0-9]+", "-", (text or "").lower()).strip("-")[:40].strip("-") or "edit"
    return f"{stamp}_{re.sub(r'[^a-z0-9]+', '-', guidance.lower())}_{slug}"


def refuse_broken_link(folder: Path, what: str = "--out") -> None:
    """A dangling symbolic link or a loop of links as an output folder: FileExistsError naming it
    (``mkdir`` would fail later with a bare "[Errno 17] File exists")."""
    from .io import quote

    folder = Path(folder)
    if folder.is_symlink() and not folder.exists():
        raise FileExistsError(f"{what} {quote(folder, 120)} is a broken symbolic link (to {quote(os.readlink(folder), 120)}); "
                              "remove it or choose another folder")


def new_run_dir(parent: str | os.PathLike, name: str) -> Path:
    """Create ``parent/name`` (or ``name-2``, ``name-3``, ... if taken; created atomically, so two
    runs started in the same second never share a folder)."""
    parent = Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    for n in range(1, 10000):
        p = parent / (name if n == 1 else f"{name}-{n}")
        try:
            p.mkdir()
            return p
        except FileExistsError:
            continue
    raise FileExistsError(f"cannot make a new run folder named {name} in {parent}")


def _listed(path: Path) -> list[str]:
    """The file names ``path`` (a result.json) lists, checked; ValueError naming the shape expected."""
    try:
        text = path.read_bytes()
    except OSError as e:
        raise ValueError(f"{path} cannot be read as a run's result.json ({type(e).__name__}: {str(e)[:80]}); expected "
                         f"{_SHAPE}; move it away or choose another folder") from None
    return _listed_text(text, path)


def _listed_text(text: bytes, path: Path) -> list[str]:
    """The file names a result.json's bytes list, checked; ValueError naming the shape expected."""
    try:
        data = json.loads(text.decode("utf-8"))
    except ValueError as e:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise ValueError(f"{path} cannot be read as a run's result.json ({type(e).__name__}: {str(e)[:80]}); expected "
                         f"{_SHAPE}; move it away or choose another folder") from None
    files = data.get("files") if isinstance(data, dict) else None
    groups = list(files.values()) if isinstance(files, dict) else None
    shaped = groups is not None and all(isinstance(g, (str, list)) for g in groups)
    names = [n for g in groups for n in ([g] if isinstance(g, str) else g)] if shaped else []
    if not shaped or not all(isinstance(n, str) and n == Path(n).name and n not in ("", ".", "..") for n in names):
        raise ValueError(f"{path} has an unexpected shape for a run's result.json; expected {_SHAPE} "
                         "(romlib replaces only what it recorded): move it away or choose another folder")
    return names


def read_run(folder: str | os.PathLike) -> list[str] | None:
    """The file names of the run recorded in ``folder/result.json`` (``result.json`` included), or
    None when the folder records no run; ValueError for a ``result.json`` of an unexpected shape."""
    path = Path(folder) / "result.json"
    if not os.path.lexists(path):
        return None
    names = _listed(path)
    return names if "result.json" in names else [*names, "result.json"]


def unrecorded_outputs(folder: str | os.PathLike) -> list[str]:
    """Files in ``folder`` named like a run's outputs that its ``result.json`` does not record (all
    of them when there is none): ``--overwrite`` never replaces them."""
    folder = Path(folder)
    recorded = set(read_run(folder) or ())
    return sorted(p.name for p in folder.iterdir() if OUTPUT_PATTERN.match(p.name) and p.name not in recorded)


class FolderBusy(FileExistsError):
    """A folder another living romlib process is writing into (or whose owner cannot be told: the message names
    exactly what to delete)."""


class RunChanging(RuntimeError):
    """A run folder that kept being replaced while :func:`load_run` read it."""


def _process_start(pid: int) -> float | None:
    """When process ``pid`` started (seconds since the epoch, 10 ms steps), from /proc; None where unknown."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            ticks = int(f.read().rsplit(")", 1)[1].split()[19])  # field 22: start time in clock ticks after boot
        with open("/proc/stat") as f:
            boot = next(int(line.split()[1]) for line in f if line.startswith("btime "))
        return round(boot + ticks / os.sysconf("SC_CLK_TCK"), 2)
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def owner() -> dict:
    """This process as the owner of a lock or staging folder: ``pid``, ``start`` (its start time) and ``host``."""
    return {"pid": os.getpid(), "start": _process_start(os.getpid()), "host": socket.gethostname()}


def _read_owner(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("pid"), int) else None


def _owner_state(who: dict | None, pid: int, since: float | None) -> str:
    """``"alive"`` (the owner is running), ``"gone"`` (dead, or its process ID is now another process's),
    ``"elsewhere"`` (another host: cannot be told from here). ``who``: the recorded owner (None: an older romlib
    recorded only ``pid``); ``since``: when the lock or folder was last changed (a process that started later
    cannot be its owner)."""
    if who is not None and who.get("host") not in (None, socket.gethostname()):
        return "elsewhere"
    if pid <= 0 or not _pid_alive(pid):
        return "gone"
    start = _process_start(pid)
    if who is not None and who.get("start") is not None and start is not None:
        return "alive" if abs(start - who["start"]) < 0.015 else "gone"
    if since is not None and start is not None and start > since + 1:
        return "gone"  # started after the folder was last written: not its owner
    if who is None and not _may_be_romlib(pid):
        return "gone"  # an older romlib recorded only the pid, and that pid is now, e.g., init
    return "alive"


def _may_be_romlib(pid: int) -> bool:
    """Process ``pid``'s command line names python or romlib (True where it cannot be read)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmd = f.read().lower()
    except OSError:
        return True
    return not cmd or b"python" in cmd or b"romlib" in cmd


def _describe(who: dict | None, pid: int) -> str:
    if who is None:
        return f"process {pid}"
    start = who.get("start")
    when = time.strftime(", started %Y-%m-%d %H:%M:%S", time.localtime(start)) if isinstance(start, (int, float)) else ""
    return f"process {pid}{when}, on {who.get('host') or 'this host'}"


def _acquire(folder: Path) -> None:
    key = str(folder.resolve())
    if key in _HELD:
        _HELD[key] += 1
        return
    path = folder / LOCK
    for _ in range(5):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            _settle_lock(folder, path)
            continue
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump({**owner(), "since": time.time()}, f)
        _HELD[key] = 1
        return
    raise FolderBusy(f"{folder} is being locked and unlocked by other romlib runs ({path}); try again")


def _settle_lock(folder: Path, path: Path) -> None:
    """Remove the lock ``path`` of an owner that is gone, else raise :class:`FolderBusy` naming the owner."""
    who = _read_owner(path)
    try:
        since = path.stat().st_mtime
    except FileNotFoundError:
        return  # released meanwhile
    pid = who["pid"] if who else -1
    state = _owner_state(who, pid, since) if who else ("gone" if time.time() - since > 5 else "alive")
    if state == "alive":
        raise FolderBusy(f"another romlib run ({_describe(who, pid)}) is writing into {folder} now; wait for it to "
                         f"finish or choose another folder (if no romlib run is writing there, delete {path})")
    if state == "elsewhere":
        raise FolderBusy(f"a romlib run on host {who.get('host')} ({_describe(who, pid)}) holds {folder} (its lock "
                         f"{path}); if no romlib run is writing there now, delete {path}")
    aside = path.with_name(f"{LOCK}.stale-{os.getpid()}")
    try:
        os.replace(path, aside)
    except FileNotFoundError:
        return
    if _read_owner(aside) != who:  # a new owner took the lock between our look and the move: give it back
        with contextlib.suppress(OSError):
            os.link(aside, path)
        aside.unlink(missing_ok=True)
        return
    aside.unlink(missing_ok=True)
    log.warning("%s: removed the lock of a romlib run that is gone (%s)", folder, _describe(who, pid))


def _release(folder: Path) -> None:
    key = str(folder.resolve())
    if key not in _HELD:
        return
    _HELD[key] -= 1
    if _HELD[key] == 0:
        del _HELD[key]
        path = folder / LOCK
        if _read_owner(path) is not None and _read_owner(path).get("pid") == os.getpid():
            path.unlink(missing_ok=True)


@contextlib.contextmanager
def hold(folder: str | os.PathLike):
    """Hold the lock of ``folder`` (created if needed) for the ``with`` block: a second writer — another process's
    :class:`RunWriter` or ``romlib edit --overwrite`` — is refused at once with :class:`FolderBusy` naming the
    owner. Re-entrant in one process; a lock whose owner is gone is settled by itself."""
    folder = Path(folder)
    refuse_broken_link(folder, "output folder")
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(f"output folder {folder} exists and is a file; choose another folder")
    folder.mkdir(parents=True, exist_ok=True)
    taken = False
    try:
        with deferred():  # an interrupt between creating the lock and recording it would leave the lock behind
            _acquire(folder)
            taken = True
        yield folder
    finally:
        if taken:
            with deferred():
                _release(folder)


@dataclass
class Run:
    """One run read whole by :func:`load_run`: ``result`` (its ``result.json``), ``files`` (``{name: bytes}``,
    ``result.json`` included) and the ``folder`` it was read from."""

    folder: Path
    result: dict
    files: dict[str, bytes] = field(repr=False)

    def image(self, name: str):
        """File ``name`` of the run as a PIL image (decoded from the bytes read with the run)."""
        from PIL import Image

        if name not in self.files:
            raise KeyError(f"the run in {self.folder} has no file {name!r}; it has {', '.join(sorted(self.files))}")
        img = Image.open(io.BytesIO(self.files[name]))
        img.load()
        return img


def _ident(st: os.stat_result) -> tuple:
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


def load_run(folder: str | os.PathLike, *, tries: int = 100, wait: float = 0.02) -> Run:
    """The run recorded in ``folder/result.json`` and every file it lists, read whole — one run's files, never a mix,
    even while another process replaces the run (``--overwrite``): every file is opened, then ``result.json`` and each
    file must still be the ones opened, else it reads again (up to ``tries`` times, ``wait`` seconds apart, longer
    each time). FileNotFoundError when the folder records no run; :class:`RunChanging` when it kept changing."""
    folder = Path(folder)
    for attempt in range(tries):
        files: dict = {}
        try:
            with contextlib.ExitStack() as stack:
                head = stack.enter_context(open(folder / "result.json", "rb"))
                ident = _ident(os.fstat(head.fileno()))
                text = head.read()
                names = _listed_text(text, folder / "result.json")
                opened = {n: stack.enter_context(open(folder / n, "rb")) for n in names if n != "result.json"}
                same = _ident(os.stat(folder / "result.json")) == ident and all(
                    _ident(os.stat(folder / n)) == _ident(os.fstat(f.fileno())) for n, f in opened.items())
                if same:
                    files = {"result.json": text, **{n: f.read() for n, f in opened.items()}}
        except FileNotFoundError:
            if attempt == tries - 1 and not os.path.lexists(folder / "result.json") and not any(folder.glob(BACKUP + "*")):
                raise FileNotFoundError(f"{folder} records no run (no result.json)") from None
            files = {}
        if files:
            return Run(folder, json.loads(text.decode("utf-8")), files)
        time.sleep(wait * min(attempt + 1, 10))
    raise RunChanging(f"the run in {folder} was replaced {tries} times while being read; read it again when no "
                      "romlib run is writing there")


def _size(n: float) -> str:
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.1f} {unit} ({int(n)} bytes)"
    return f"{int(n)} bytes"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def _same(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _rollback(folder: Path, stage: Path, backup: Path) -> None:
    """Undo a swap that did not (or may not) commit: remove what was linked or moved from ``stage``
    into ``folder``, then rename the old run back from ``backup`` (``result.json`` last)."""
    listing = stage / "result.json"
    names = _listed(listing) if listing.is_file() else []
    # the new result.json first: should a step below fail, the folder claims no run and
    # recover() restores the old one from ``backup`` again
    for n in dict.fromkeys(["result.json", *names]):
        dst, src = folder / n, stage / n
        if not os.path.lexists(dst):
            continue
        if src.exists():
            if _same(src, dst):
                dst.unlink()  # our hard link; the staged file stays
        elif stage.is_dir() and n in names:
            os.replace(dst, src)  # moved there by the no-hard-link path
    if backup.is_dir():
        (backup / _OWNER).unlink(missing_ok=True)
        old = sorted(os.listdir(backup), key=lambda n: n == "result.json")
        for n in old:
            os.replace(backup / n, folder / n)
        backup.rmdir()


def recover(folder: str | os.PathLike, *, refuse_busy: bool = False) -> list[str]:
    """Settle what a writer killed outright left in ``folder`` (see the module docstring): the swap
    committed when ``folder/result.json`` exists (the leftovers are deleted), else the old run is
    restored. Returns one line per leftover settled (also logged). ``refuse_busy``: raise when a
    living process is writing into the folder now."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    tokens = sorted({p.name[len(STAGING):] for p in folder.glob(STAGING + "*")}
                    | {p.name[len(BACKUP):] for p in folder.glob(BACKUP + "*")})
    done = []
    for token in tokens:
        if token in _ACTIVE:
            continue
        pid = int(token.split("-")[0]) if token.split("-")[0].isdigit() else -1
        stage, backup = folder / (STAGING + token), folder / (BACKUP + token)
        who = _read_owner(stage / _OWNER) or _read_owner(backup / _OWNER)
        since = max((d.stat().st_mtime for d in (stage, backup) if d.is_dir()), default=None)
        state = "gone" if pid == os.getpid() else _owner_state(who, pid, since)
        if state != "gone":
            leftovers = " and ".join(str(d) for d in (stage, backup) if os.path.lexists(d))
            if state == "elsewhere":
                raise FolderBusy(f"{folder} holds the leftovers of a romlib run on host {who.get('host')} "
                                 f"({_describe(who, pid)}): {leftovers}. If no romlib run is writing there now: when "
                                 f"{folder / 'result.json'} is missing, move the files of {backup.name} back into "
                                 f"{folder}; then delete {leftovers}")
            if refuse_busy:
                raise FolderBusy(f"another romlib run ({_describe(who, pid)}) is writing into {folder} now "
                                 f"({leftovers}); wait for it to finish or choose another folder. If no romlib run is "
                                 f"writing there: when {folder / 'result.json'} is missing, move the files of "
                                 f"{backup.name} back into {folder}; then delete {leftovers}")
            continue
        committed = os.path.lexists(folder / "result.json")
        try:
            if not committed:
                _rollback(folder, stage, backup)
            for d in (stage, backup):
                if os.path.lexists(d):
                    shutil.rmtree(d)
        except (OSError, ValueError) as e:
            raise OSError(f"{folder} holds the leftovers of an interrupted run ({stage.name}, {backup.name}) that could "
                          f"not be settled ({e}); if {folder / 'result.json'} is missing, move the files of "
                          f"{backup.name} back into {folder}, then delete both") from None
        line = (f"{folder}: a run killed while being written was settled: "
                + ("the new run had been committed; its leftovers were deleted" if committed
                   else "the earlier run was restored"))
        log.warning(line)
        done.append(line)
    return done


class RunWriter:
    """Writes the files of one run into ``folder`` (see the module docstring): each into a
    staging folder first; :meth:`finish` swaps the complete run in, ``result.json`` last, and
    :meth:`abort` (or an exception in the ``with`` block, Ctrl-C included) removes everything
    staged, so an earlier run stays whole until the new one is complete. Never over an input
    (``protect``); without ``overwrite`` never over any existing file; with ``overwrite`` only the
    files of the run recorded in ``folder/result.json`` are replaced (the ones this run does not
    write are removed with it). ``created``: the folder was made for this run (removed on abort
    when empty)."""

    def __init__(self, folder: str | os.PathLike, *, overwrite: bool = False, protect=(), created: bool = False):
        self.folder = Path(folder)
        refuse_broken_link(self.folder, "output folder")
        if self.folder.exists() and not self.folder.is_dir():
            raise NotADirectoryError(f"output folder {self.folder} exists and is a file; choose another --out")
        self.created = created or not self.folder.exists()
        self.folder.mkdir(parents=True, exist_ok=True)
        self.overwrite = overwrite
        self.protect = [Path(p) for p in protect if p is not None]
        try:
            _acquire(self.folder)  # a second writer is refused here, before anything is staged
        except FolderBusy:
            self._remove_if_created()
            raise
        self._locked = True
        try:
            recover(self.folder, refuse_busy=overwrite)
            self._old = read_run(self.folder) if overwrite else None
            if not overwrite and os.path.lexists(self.folder / "result.json"):
                raise FileExistsError(f"refusing to overwrite {self.folder / 'result.json'}: {self.folder} already holds "
                                      "a run; write into a new folder, or pass --overwrite / overwrite=True to replace "
                                      "that run")
        except BaseException:
            self._unlock()
            raise
        self._swapped = False  # finish() began the swap: from then on it alone cleans up
        self.token = f"{os.getpid()}-{next(_seq)}"
        self.stage = self.folder / (STAGING + self.token)
        self.backup = self.folder / (BACKUP + self.token)
        self._names: list[str] = []
        self.written: list[Path] = []

    def __enter__(self) -> "RunWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()

    def _check_target(self, name: str) -> Path:
        if name != Path(name).name or name.startswith(".") or name in self._names:
            raise ValueError(f"file name {name!r} cannot be written: a run's files are plain, distinct names "
                             "(no folder, not hidden)")
        path = self.folder / name
        for p in self.protect:
            if path.resolve() == p.resolve() or _same(path, p):
                raise FileExistsError(f"refusing to write {path}: it is an input of this run; choose another --out")
        if os.path.lexists(path):
            if not self.overwrite:
                raise FileExistsError(f"refusing to overwrite {path}: it exists (another run's output?); write into a "
                                      "new folder, or pass --overwrite / overwrite=True to replace that run")
            if name not in (self._old or ()):
                raise FileExistsError(f"refusing to replace {path}: no result.json in {self.folder} records it (a file "
                                      "no run recorded is never replaced); move it or choose another folder")
        return path

    def _unlock(self) -> None:
        if getattr(self, "_locked", False):
            self._locked = False
            _release(self.folder)

    def _remove_if_created(self) -> None:
        if self.created:
            with contextlib.suppress(OSError):
                self.folder.rmdir()  # only if empty

    def write(self, name: str, save: Callable[[Path], None]) -> Path:
        """``save(path)`` writes the file in the staging folder; it becomes ``folder/name`` at :meth:`finish`.
        A full disk raises OSError (ENOSPC) naming the file, the folder and the sizes."""
        final = self._check_target(name)
        if not self._names:
            _ACTIVE.add(self.token)
            self.stage.mkdir()
            (self.stage / _OWNER).write_text(json.dumps(owner()), encoding="utf-8")
        self._names.append(name)
        try:
            save(self.stage / name)
        except OSError as e:
            if e.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            staged = sum(p.stat().st_size for p in self.stage.iterdir() if p.is_file() and p.name != _OWNER)
            free = shutil.disk_usage(self.stage).free
            raise OSError(e.errno, f"no space left on the disk of {self.folder} while writing {name}: "
                          f"{_size(staged)} of this run staged so far, {_size(free)} free; free some space there or "
                          "write the run to another disk (the earlier run, if any, is untouched)", str(self.stage / name)) from None
        return final

    def _old_files(self) -> list[str]:
        """What the swap moves aside: the recorded ``result.json`` first, then the recorded files
        romlib writes (or this run writes), never an input."""
        if not self._old:
            return []
        mine = set(self._names)
        rest = [n for n in self._old if n != "result.json" and os.path.lexists(self.folder / n)
                and (OUTPUT_PATTERN.match(n) or n in mine)
                and not any((self.folder / n).resolve() == p.resolve() for p in self.protect)]
        return ["result.json", *rest]

    def _place(self, name: str) -> None:
        src, dst = self.stage / name, self.folder / name
        if os.path.lexists(dst):
            raise FileExistsError(f"refusing to overwrite {dst}: it appeared while writing (a concurrent run?)")
        try:
            os.link(src, dst)  # atomic and never replaces: a concurrent writer cannot be clobbered
        except FileExistsError:
            raise FileExistsError(f"refusing to overwrite {dst}: it appeared while writing (a concurrent run?)") from None
        except OSError:  # no hard links on this file system
            os.replace(src, dst)

    def finish(self, payload: dict, files: dict) -> Path:
        """Write ``result.json`` (``payload`` plus ``files``) into the staging folder, then swap the
        complete run into place (the earlier recorded run, with ``overwrite``, goes with the swap)."""
        text = json.dumps({**payload, "files": files}, indent=2, allow_nan=False)
        self.write("result.json", lambda p: p.write_text(text, encoding="utf-8"))
        self._swapped = True
        try:
            with deferred():  # a signal that arrives during the swap is raised after it
                try:
                    old = self._old_files()
                    if old:
                        self.backup.mkdir()
                        (self.backup / _OWNER).write_text(json.dumps(owner()), encoding="utf-8")
                        for n in old:
                            os.replace(self.folder / n, self.backup / n)
                    for n in self._names:  # result.json last: the commit
                        self._place(n)
                except BaseException:
                    self._undo()
                    raise
                self.written = [self.folder / n for n in self._names]
                _COMMITTED.append(str(self.folder.resolve()))
                self._cleanup()
                self._unlock()
        except KeyboardInterrupt as e:
            if self.written:  # arrived during the swap, which completed
                e.kept = f"the new run, saved whole in {self.folder}"
            raise
        return self.folder / "result.json"

    def _undo(self) -> None:
        try:
            _rollback(self.folder, self.stage, self.backup)
        except (OSError, ValueError) as e:
            _ACTIVE.discard(self.token)  # the next writer into this folder settles what is left
            self._unlock()
            raise OSError(f"could not restore the earlier run in {self.folder} ({e}); its files are kept in "
                          f"{self.backup}: the next romlib run into this folder restores them") from None
        self._cleanup()
        self._unlock()

    def _cleanup(self) -> None:
        for d in (self.backup, self.stage):
            if d.exists():
                try:
                    shutil.rmtree(d)
                except OSError as e:
                    log.warning("could not delete %s (%s); the next run into %s deletes it", d, e, self.folder)
        _ACTIVE.discard(self.token)

    def abort(self) -> None:
        """Remove everything staged (and the folder when it was made for this run and is empty)."""
        with deferred(ignore=True):  # it runs because the save is ending: a second Ctrl-C must not cut it
            if not self._swapped and self.stage.exists():
                self._cleanup()
            self._names = []
            self._unlock()
            self._remove_if_created()
