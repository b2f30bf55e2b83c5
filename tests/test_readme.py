"""The README's code blocks say where they run, and the CPU/offline ones run as shown (so they cannot drift).

Every ```bash / ```python block of README.md starts with ``# CPU, offline`` or ``# GPU, real models``. The offline
blocks run here, in README order, in one empty folder, offline, each bash line as typed (``set -e``): all but the
install lines and the test command itself, which CI runs (``.ci/run``: checked below).
"""
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
OFFLINE, GPU = "# CPU, offline", "# GPU, real models"
#: lines of an offline block that CI runs instead (installing romlib; the suite itself)
RUN_BY_CI = re.compile(r"^(pip install |python -m pytest\b)")


def _blocks() -> list[tuple[str, str]]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    return re.findall(r"(?ms)^```(bash|python)\n(.*?)^```", text)


def test_every_code_block_says_where_it_runs():
    blocks = _blocks()
    assert len(blocks) >= 4
    unsaid = [code.splitlines()[0] for _, code in blocks if not code.startswith((OFFLINE, GPU))]
    assert not unsaid, f"README blocks that do not say where they run (first lines): {unsaid}"
    assert any(lang == "python" and code.startswith(OFFLINE) for lang, code in blocks)
    assert any(lang == "bash" and code.startswith(OFFLINE) for lang, code in blocks)


def test_ci_runs_the_readmes_install_and_test_lines():
    ci = (ROOT / ".ci" / "run").read_text()
    first = next(code for lang, code in _blocks() if lang == "bash" and code.startswith(OFFLINE))
    skipped = [line.split("  #")[0].strip() for line in first.splitlines() if RUN_BY_CI.match(line)]
    install = next(line for line in skipped if line.startswith("pip install -e"))
    assert f"python -m {install}".replace("pip install", "pip install -q") in ci, install
    assert re.search(r"(?m)^(step )?python -m pytest( |$)", ci)  # exactly the README's test command


@pytest.mark.timeout(900)
def test_the_offline_blocks_run_as_shown(tmp_path):
    env = {**os.environ, "ROMLIB_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "MPLBACKEND": "Agg",
           "ROMLIB_CACHE": str(tmp_path / "cache"),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("ROMLIB_BACKEND", None)
    work = tmp_path / "work"
    work.mkdir()
    ran = []
    t0 = time.perf_counter()
    for lang, code in _blocks():
        if not code.startswith(OFFLINE):
            continue
        if lang == "bash":
            lines = [line for line in code.splitlines() if not RUN_BY_CI.match(line)]
            cmd = ["bash", "-euo", "pipefail", "-c", "\n".join(lines)]
        else:
            cmd = [sys.executable, "-c", code]
        r = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, f"README block failed:\n{code}\n--- stdout\n{r.stdout[-3000:]}\n--- stderr\n{r.stderr[-3000:]}"
        assert "Traceback" not in r.stderr, r.stderr[-3000:]
        ran.append(lang)
    assert ran.count("bash") >= 2 and ran.count("python") >= 1, ran
    # what the blocks wrote: the demo's run folder, the example files, the edits, the Python block's files
    assert list((work / "romlib_demo").glob("*/demo.png")) and (work / "photo.png").is_file()
    assert (work / "mask.png").is_file() and list((work / "edits").glob("*/summary.png"))
    assert (work / "edited.png").is_file() and (work / "my_edit" / "result.json").is_file()
    print(f"README offline blocks: {len(ran)} in {time.perf_counter() - t0:.1f} s")
