"""What a student sees and clicks: JupyterLab in headless Chromium (Debian's chromium and chromedriver, driven by
selenium; no browser download). For each notebook with an explorer: run its explorer cell (and the cells it needs;
one kernel per notebook), change every control the way a student does (dropdowns, slider readouts, the seed box,
the budget buttons), and check that the figure changed, that the status line names the stages the control
invalidates (a ranking change: "rank" only, never "sample"), and that no error text or red output appeared; then
reopen a saved notebook without its kernel, with JupyterLab's settings as romlib's install leaves them (the test
writes no widget setting), and check that no widget is missing ("model not found") and that the explorer shows its
controls and last figure. Prints click → figure times.

Run it alone: ``python -m pytest tests/test_browser.py -s`` (``-s`` shows the timing table). Skips, saying why,
only when ``chromium`` or ``chromedriver`` is not on PATH (``apt-get install chromium chromium-driver``).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
pytestmark = [pytest.mark.skipif(not (CHROMIUM and DRIVER), reason="no chromium/chromedriver on PATH: "
                                 "apt-get install chromium chromium-driver (Debian) to run the browser test"),
              pytest.mark.timeout(600)]

#: per notebook: the cells to run (ids: the setup, what the explorer reads, the explorer) and each control's change:
#: (control, how, value, the stages the status line must name as recomputed, first to last)
CASES = {
    "03_ablation_dilation": (["03-02", "03-04", "03-13"], [
        # the world: two stages (the preview upsamples the best base sample of each ranking mode)
        ("model", "select", "remove: the empty target", ["sample", "rank-base", "upsample", "rank"]),
        ("erode", "slider", "5", ["masks", "sample", "rank-base", "upsample", "rank"]),
        ("dilation", "slider", "7", ["masks", "sample", "rank-base", "upsample", "rank"]),
        ("rank", "select", "masked", ["rank"]),
        ("seed", "text", "1", ["sample", "rank-base", "upsample", "rank"]),
        ("preset", "toggle", "paper budget", ["sample", "upsample", "rank"]),
    ]),
    "04_ablation_guidance": (["04-02", "04-explore"], [
        # the world, two stages, as 03
        ("guidance", "select", "cf", ["sample", "rank-base", "upsample", "rank"]),
        ("scale", "slider", "6", ["sample", "rank-base", "upsample", "rank"]),
        ("case", "select", "colour", ["segment", "masks", "sample", "rank-base", "upsample", "rank"]),
        ("seed", "text", "2", ["sample", "rank-base", "upsample", "rank"]),
    ]),
    "05_ablation_ranking": (["05-02", "05-explore"], [
        ("rank", "select", "masked", ["rank"]),
        ("rank", "select", "local", []),  # back to the first order: every stage cached
        ("enlarge", "slider", "2", ["rank"]),
        ("seed", "text", "3", ["sample", "rank-base", "upsample", "rank"]),
    ]),
    "07_latent_model": (["07-02", "07-explore"], [
        ("guidance", "select", "ccf-direction", ["sample", "rank"]),
        ("scale", "slider", "8", ["sample", "rank"]),
        ("seed", "text", "4", ["sample", "rank"]),
    ]),
}
REOPEN = "05_ablation_ranking"
TOKEN = "romlib-browser-test"
#: the notebook now shown (other tabs stay in the page, hidden)
PANEL = ".jp-NotebookPanel:not(.lm-mod-hidden)"
ERRORS = ("Error displaying widget", "Traceback", "failed:", "model not found")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A JupyterLab server on 127.0.0.1 serving trimmed copies of the notebooks (only the cells run)."""
    import nbformat

    home = tmp_path_factory.mktemp("lab")
    for name, (cells, _) in CASES.items():
        nb = nbformat.read(ROOT / "notebooks" / f"{name}.ipynb", as_version=4)
        by_id = {c.id: c for c in nb.cells}
        nb.cells = [by_id[i] for i in cells]
        for c in nb.cells:
            c.outputs, c.execution_count = [], None
        nbformat.write(nb, home / f"{name}.ipynb")
    settings = home / "settings" / "@jupyterlab" / "notebook-extension"
    settings.mkdir(parents=True)
    (settings / "tracker.jupyterlab-settings").write_text(json.dumps({"windowingMode": "none"}))
    (settings.parent / "apputils-extension").mkdir()
    (settings.parent / "apputils-extension" / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false", "checkForUpdates": False}))
    port = _free_port()
    env = {**os.environ, "ROMLIB_BACKEND": "offline", "ROMLIB_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "MPLBACKEND": "Agg",
           "ROMLIB_PROGRESS": "1", "PYTHONPATH": str(ROOT), "JUPYTERLAB_SETTINGS_DIR": str(home / "settings"),
           "JUPYTERLAB_WORKSPACES_DIR": str(home / "workspaces"),
           "JUPYTER_RUNTIME_DIR": str(home / "runtime")}
    log = open(home / "lab.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.ip=127.0.0.1",
                             f"--ServerApp.port={port}", f"--IdentityProvider.token={TOKEN}",
                             f"--ServerApp.root_dir={home}", "--LabApp.news_url=None",
                             "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
                             "--LabApp.extension_manager=readonly"] + (["--allow-root"] if os.geteuid() == 0 else []),
                            cwd=home, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(f"{url}/api/status?token={TOKEN}", timeout=2)
                break
            except OSError:
                if proc.poll() is not None:
                    pytest.fail(f"jupyter lab exited ({proc.returncode}): {(home / 'lab.log').read_text()[-3000:]}")
                time.sleep(0.5)
        yield url, home
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,1800"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(DRIVER), options=opts)
    try:
        yield driver
    finally:
        driver.quit()


def _wait(what, fn, timeout: float, poll: float = 0.1):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = fn()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"waited {timeout:.0f} s for {what}")


def _open(driver, url: str, name: str):
    from selenium.webdriver.common.by import By

    driver.get("about:blank")
    driver.get(f"{url}/lab/tree/{name}.ipynb?reset&token={TOKEN}")  # reset: no tab of the last notebook restored
    _wait("the notebook", lambda: driver.find_elements(By.CSS_SELECTOR, f"{PANEL} .jp-Cell"), 90)
    time.sleep(1)
    for accept in driver.find_elements(By.CSS_SELECTOR, ".jp-Dialog .jp-mod-accept"):  # "Select Kernel": Python 3
        accept.click()
    _wait("a kernel", lambda: driver.execute_script(
        "const k = document.querySelector('.jp-Toolbar-kernelName');"
        "return k && k.textContent.includes('Python');"), 30, 0.3)
    _wait("an idle kernel", lambda: driver.execute_script(
        "const s = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook-ExecutionIndicator');"
        "return s && s.getAttribute('data-status') === 'idle';"), 90, 0.3)


def _saved_outputs(path: Path) -> list:
    """The saved outputs of the notebook's last cell ([] while the file is being written)."""
    try:
        return json.loads(path.read_text())["cells"][-1]["outputs"]
    except json.JSONDecodeError:
        return []


def _saves_widget_state(url: str) -> bool:
    """Whether this JupyterLab saves widget state with a notebook ("Save Widget State Automatically"): the user's
    setting if any (the test writes none), else the default, which romlib's overrides.d file sets (setup.py)."""
    req = urllib.request.urlopen(f"{url}/lab/api/settings/@jupyter-widgets/jupyterlab-manager:plugin?token={TOKEN}")
    data = json.loads(req.read())
    return (data.get("settings") or {}).get("saveState", data["schema"]["properties"]["saveState"]["default"])


def _shut_down_kernels(url: str) -> None:
    req = urllib.request.Request(f"{url}/api/sessions?token={TOKEN}")
    for session in json.loads(urllib.request.urlopen(req).read()):
        urllib.request.urlopen(urllib.request.Request(f"{url}/api/sessions/{session['id']}?token={TOKEN}",
                                                      method="DELETE"))


def _menu(driver, menu: str, item: str) -> None:
    """Click ``item`` in the menu bar's ``menu`` (as a student runs all cells)."""
    from selenium.webdriver.common.by import By

    next(e for e in driver.find_elements(By.CSS_SELECTOR, ".lm-MenuBar-itemLabel") if e.text == menu).click()
    _wait(f"the {menu} menu's {item!r}", lambda: [e for e in driver.find_elements(By.CSS_SELECTOR, ".lm-Menu-itemLabel")
                                                  if e.text == item], 10)[0].click()


def _status(driver) -> str:
    from selenium.webdriver.common.by import By

    found = driver.find_elements(By.CSS_SELECTOR, f"{PANEL} .romlib-status")
    return found[-1].text if found else ""


def _figure(driver) -> bytes:
    """The pixels of the explorer's figure: the live one once drawn, else the static first one."""
    from selenium.webdriver.common.by import By

    live = [e for e in driver.find_elements(By.CSS_SELECTOR, f"{PANEL} .romlib-figure") if e.is_displayed()]
    if live:
        return live[-1].screenshot_as_png
    return driver.find_elements(By.CSS_SELECTOR, f"{PANEL} .jp-OutputArea-output img")[-1].screenshot_as_png


def _change(driver, control: str, how: str, value: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select

    el = driver.find_element(By.CSS_SELECTOR, f"{PANEL} .romlib-control-{control}")
    if how == "select":
        Select(el.find_element(By.TAG_NAME, "select")).select_by_visible_text(value)
    elif how == "slider":  # type into the readout, as a student does for an exact value; Enter = released
        readout = el.find_element(By.CSS_SELECTOR, ".widget-readout")
        readout.click()
        readout.send_keys(Keys.CONTROL, "a")
        readout.send_keys(value, Keys.ENTER)
    elif how == "text":
        box = el.find_element(By.TAG_NAME, "input")
        box.send_keys(Keys.CONTROL, "a")
        box.send_keys(value, Keys.ENTER)
    elif how == "toggle":
        next(b for b in el.find_elements(By.TAG_NAME, "button") if b.text.strip() == value).click()
    else:
        raise ValueError(f"how={how!r}; accepted: select, slider, text, toggle")


def _recomputed(status: str) -> list[str]:
    line = next((ln for ln in status.splitlines() if ln.startswith("recomputed:")), None)
    assert line is not None, f"no 'recomputed:' line in the status:\n{status}"
    what = line[len("recomputed:"):].split(";")[0].strip()
    return [] if what == "nothing" else [part.split()[0] for part in what.split(", ")]


def _kernel_seconds(status: str) -> tuple[float, float]:
    """The kernel's seconds for the update and its figure, and the CPU seconds of them, from the status line's
    "update 4 (seed=3 → sample): 2.10 s with the figure, 1.40 s of it CPU"."""
    m = re.search(r": ([0-9.]+) s with the figure, ([0-9.]+) s of it CPU$", status.splitlines()[0])
    assert m, f"no kernel seconds in the status line:\n{status}"
    return float(m[1]), float(m[2])


def _no_errors(driver, where: str) -> None:
    from selenium.webdriver.common.by import By

    text = driver.find_element(By.CSS_SELECTOR, PANEL).text
    bad = [e for e in ERRORS if e in text]
    assert not bad, f"{where}: error text on the page: {bad}\n{text[-2000:]}"
    red = driver.find_elements(By.CSS_SELECTOR, f"{PANEL} .jp-RenderedText[data-mime-type='application/vnd.jupyter.stderr'], "
                                                f"{PANEL} .jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']")
    assert not red, f"{where}: red (stderr) output: {[r.text[:300] for r in red]}"


def test_every_explorer_control_updates_its_figure_in_the_browser(lab, browser, tmp_path):
    url, home = lab
    try:
        _drive(browser, url, home, tmp_path)
    finally:  # what the page showed last (a failure's picture), where ROMLIB_BROWSER_SHOTS says
        browser.save_screenshot(str(tmp_path / "last.png"))
        if os.environ.get("ROMLIB_BROWSER_SHOTS"):
            shutil.copytree(tmp_path, os.environ["ROMLIB_BROWSER_SHOTS"], dirs_exist_ok=True)


def _drive(browser, url, home, tmp_path):
    from selenium.webdriver.common.by import By

    # JupyterLab as a student has it: the test writes no widget setting, so what the reopened notebook shows is what
    # romlib's environment default gives (docs/teaching.md, "Reopening a notebook")
    assert _saves_widget_state(url), (
        "JupyterLab here does not save widget state by default, so a reopened explorer would say 'model not found': "
        f"romlib's share/jupyter/lab/settings/overrides.d/romlib-widget-state.json is missing from {sys.prefix} "
        "(reinstall romlib: pip install -e .)")
    rows, t_all = [], time.monotonic()
    for name, (cells, changes) in CASES.items():
        t_nb = time.monotonic()
        _open(browser, url, name)
        _menu(browser, "Run", "Run All Cells")
        _wait(f"{name}: the explorer's controls", lambda: "change a control" in _status(browser), 120, 0.3)
        first = time.monotonic() - t_nb
        browser.save_screenshot(str(tmp_path / f"{name}-start.png"))
        for n, (control, how, value, stages) in enumerate(changes, 1):
            before = _figure(browser)
            t0 = time.monotonic()
            _change(browser, control, how, value)
            status = _wait(f"{name}: update {n} after {control}={value}",
                           lambda: (s := _status(browser)).startswith(f"update {n} ") and s, 180, 0.05)
            seconds = time.monotonic() - t0
            assert f"{control}=" in status.splitlines()[0], f"{name}: the update names another change:\n{status}"
            assert _recomputed(status) == stages, f"{name}: {control}={value}: expected {stages} recomputed:\n{status}"
            after = _figure(browser)
            if stages or n == 1:
                assert after != before, f"{name}: {control}={value}: the figure did not change"
            _no_errors(browser, f"{name} after {control}={value}")
            rows.append((name, control, value, seconds, *_kernel_seconds(status), ", ".join(stages) or "nothing (all cached)"))
        browser.save_screenshot(str(tmp_path / f"{name}-end.png"))
        rows.append((name, "(open + run cells)", "", first, None, None, "kernel, imports, first edit"))
        browser.find_element(By.CSS_SELECTOR, f"{PANEL} [data-command='docmanager:save']").click()  # the save button
        _wait(f"{name}: saved", lambda: _saved_outputs(home / f"{name}.ipynb"), 30)
        _shut_down_kernels(url)  # one kernel at a time; the saved file is what reopens
    print(f"\nclick -> figure in JupyterLab (headless Chromium), {time.monotonic() - t_all:.0f} s in all, "
          f"load average {os.getloadavg()[0]:.1f}")
    print("seconds: click -> new figure on the page; kernel: the update and its figure in the kernel, cpu: the CPU "
          "seconds of them (what an idle core takes); idle: seconds - kernel + cpu, the click on an idle machine")
    print(f"{'notebook':22s} {'control':18s} {'value':22s} {'seconds':>8s} {'kernel':>7s} {'cpu':>6s} {'idle':>6s}  "
          "recomputed")
    for name, control, value, seconds, kernel, cpu, stages in rows:
        more = "" if kernel is None else f"{kernel:7.2f} {cpu:6.2f} {seconds - kernel + cpu:6.2f}"
        print(f"{name:22s} {control:18s} {value:22s} {seconds:8.2f} {more:>21s}  {stages}")

    # reopen one saved notebook without its kernel: every output must render, no widget missing, and the explorer
    # shows its controls and its last live figure (from the widget state saved with the notebook)
    saved = json.loads((home / f"{REOPEN}.ipynb").read_text())
    assert saved["metadata"].get("widgets"), f"{REOPEN}: the saved notebook has no widget state (metadata.widgets)"
    print(f"{REOPEN}: widget state saved with the notebook, {len(json.dumps(saved['metadata']['widgets'])) / 1e3:.0f} kB")
    _open(browser, url, REOPEN)

    def live_figure():
        return [e for e in browser.find_elements(By.CSS_SELECTOR, f"{PANEL} .romlib-explorer .romlib-figure")
                if e.is_displayed()]

    def settled():  # the explorer drawn, or an error shown instead (then _no_errors says which)
        text = browser.find_element(By.CSS_SELECTOR, PANEL).text
        return any(e in text for e in ERRORS) or (live_figure() and "Loading widget" not in text)

    try:
        _wait(f"{REOPEN} reopened: the explorer's controls and last figure", settled, 30, 0.3)
        time.sleep(1)  # every other view restored (or failed to) by now
    finally:
        browser.save_screenshot(str(tmp_path / f"{REOPEN}-reopened.png"))
    _no_errors(browser, f"{REOPEN} reopened")
    assert live_figure(), f"{REOPEN} reopened: the explorer's last figure is not shown"
    imgs = browser.find_elements(By.CSS_SELECTOR, f"{PANEL} .jp-OutputArea-output img")
    assert len(imgs) >= 2, f"{REOPEN} reopened: {len(imgs)} images; expected the first figure and the live one"
    assert "seed=" in _status(browser) and "update 4 " in _status(browser), \
        f"{REOPEN} reopened: the status line is not the last update's:\n{_status(browser)}"
