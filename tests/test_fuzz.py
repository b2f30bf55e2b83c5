"""Issue 32, point 8: property-based tests (hypothesis) of the readers a user's or a server's bytes reach — images,
masks, edit settings, study CSVs — and of the download against a mirror whose answers are drawn at random. The
property of each: a clear ``ValueError`` / ``TypeError`` / :class:`CheckpointUnavailable` or a correct result, never
another exception, never a bad file recorded as good. Bounded examples, no deadline flakiness, seconds in all.

The examples are derandomized (the same on every run: the suite does not flake); ``ROMLIB_FUZZ=explore`` draws new
ones each run, ``ROMLIB_FUZZ_EXAMPLES=N`` draws N per test (to search for new failures)."""
from __future__ import annotations

import csv
import hashlib
import os
import io
import json
import string

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from romlib import hub
from romlib.config import EditConfig
from romlib.io import load_image, load_mask
from romlib.study import Rankings, load_csv, save_csv
from tests.support.mirror import MirrorServer

EXPLORE = os.environ.get("ROMLIB_FUZZ") == "explore"
N = int(os.environ.get("ROMLIB_FUZZ_EXAMPLES", "40"))
FAST = settings(max_examples=N, deadline=None, derandomize=not EXPLORE, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def _array(h, w, c, dtype, fill) -> np.ndarray:
    """An array of ``fill`` in ``dtype`` (NaN and inf cast to an integer type: whatever numpy makes of them)."""
    with np.errstate(invalid="ignore"):
        return np.full((h, w) if c == 0 else (h, w, c), fill).astype(dtype)


def _png(w, h, mode="RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, (w, h), 128).save(buf, format="PNG")
    return buf.getvalue()


GOOD_PNG = _png(20, 16)


# ----------------------------------------------------------------------------- image and mask readers
@FAST
@given(data=st.one_of(st.binary(max_size=400), st.builds(lambda cut, junk: GOOD_PNG[:cut] + junk,
                                                         st.integers(0, len(GOOD_PNG)), st.binary(max_size=40))))
def test_load_image_on_any_bytes_is_an_image_or_a_value_error(tmp_path_factory, data):
    p = tmp_path_factory.mktemp("img") / "x.png"
    p.write_bytes(data)
    try:
        img = load_image(p)
    except ValueError as e:
        assert str(p) in str(e) or "image" in str(e)
    else:
        assert img.mode == "RGB" and min(img.size) >= 1


ARRAYS = st.one_of(
    st.builds(_array, st.integers(0, 40), st.integers(0, 40), st.sampled_from([0, 1, 2, 3, 4, 5]),
              st.sampled_from(["uint8", "float32", "float64", "int64", "bool"]),
              st.sampled_from([0, 1, 0.5, 255, -1, 300, float("nan"), float("inf")])),
    st.builds(lambda shape: torch.rand(shape), st.lists(st.integers(0, 12), min_size=0, max_size=5).map(tuple)),
    st.sampled_from([None, "", 3, [1, 2], {"a": 1}, b"\x89PNG"]),
)


@FAST
@given(mask=ARRAYS, size=st.tuples(st.integers(1, 64), st.integers(1, 64)))
def test_load_mask_on_any_array_is_a_bool_mask_or_a_clear_error(mask, size):
    try:
        m = load_mask(mask, size)
    except (ValueError, TypeError, FileNotFoundError) as e:  # a text is a path: a missing file is named
        assert str(e)
    else:
        assert m.dtype == torch.bool and tuple(m.shape) == (size[1], size[0]) and bool(m.any())


@FAST
@given(image=ARRAYS)
def test_load_image_on_any_array_is_an_image_or_a_clear_error(image):
    try:
        img = load_image(image)
    except (ValueError, TypeError, FileNotFoundError) as e:  # a text is a path: a missing file is named
        assert str(e)
    else:
        assert img.mode == "RGB"


# ----------------------------------------------------------------------------- edit settings
VALUES = st.one_of(st.none(), st.booleans(), st.integers(-10**12, 10**12), st.floats(allow_nan=True),
                   st.text(max_size=12), st.lists(st.integers(-3, 300), max_size=4), st.just(float("inf")))


@FAST
@given(settings_=st.dictionaries(st.sampled_from(list(EditConfig.knobs()) + ["nope", "Samples"]), VALUES, max_size=4))
def test_any_edit_settings_are_accepted_or_refused_by_name(settings_):
    try:
        cfg = EditConfig.from_kwargs(**settings_).validate()
    except (ValueError, TypeError) as e:
        msg = str(e)
        assert msg and any(k in msg for k in settings_), msg  # the message names the setting
    else:
        assert isinstance(cfg, EditConfig)


# ----------------------------------------------------------------------------- study CSVs
NAMES = st.text(alphabet=string.printable + "=+-@\t\r'ünï€", min_size=0, max_size=12)


@FAST
@given(users=st.lists(NAMES, min_size=1, max_size=3, unique=True), cases=st.lists(NAMES, min_size=1, max_size=3, unique=True),
       seed=st.integers(0, 1000))
def test_any_names_survive_the_csv_and_nothing_exported_is_a_formula(tmp_path_factory, users, cases, seed):
    rng = np.random.default_rng(seed)
    methods = ("A", "=B", "+C")
    recs = [(u, c, m, int(r) + 1) for u in users for c in cases for m, r in zip(methods, rng.permutation(3))]
    r = Rankings.from_records(recs, methods=methods)
    path = save_csv(r, tmp_path_factory.mktemp("csv") / "r.csv")
    with open(path, newline="", encoding="utf-8") as f:
        assert not any(c.startswith(("=", "+", "-", "@", "\t", "\r")) for row in csv.reader(f) for c in row)
    back = load_csv(path, methods=methods)
    assert (back.users, back.cases) == (r.users, r.cases) and np.array_equal(back.ranks, r.ranks, equal_nan=True)


@FAST
@given(text=st.text(max_size=200))
def test_load_csv_on_any_text_is_rankings_or_a_value_error(tmp_path_factory, text):
    p = tmp_path_factory.mktemp("csv") / "r.csv"
    p.write_text("user,case,method,rank\n" + text, encoding="utf-8")
    try:
        r = load_csv(p)
    except ValueError as e:
        assert str(e)
    else:
        assert isinstance(r, Rankings)


# ----------------------------------------------------------------------------- the mirror's answers
def _ckpt() -> bytes:
    buf = io.BytesIO()
    torch.save({"w": torch.randn(64, 64), "b": torch.zeros(64)}, buf)
    return buf.getvalue()


BODY = _ckpt()
BEHAVIOURS = st.one_of(
    st.sampled_from([None, "ignore-range", "wrong-total", "no-length", "half-no-length", "gzip", ("encoding", "gzip"),
                     ("encoding", "br"), ("status", 500), ("status", 404), ("status", 200)]),
    st.builds(lambda n: ("cut", n), st.integers(0, len(BODY))),
    st.builds(lambda b: ("body", b), st.one_of(st.binary(max_size=300), st.just(b"<!DOCTYPE html><html>portal</html>"),
                                               st.builds(lambda k: BODY[:k], st.integers(0, len(BODY))))),
)


@pytest.fixture(scope="module")
def served():
    with MirrorServer(files={"ckpt.pt": BODY}, max_seconds=300, timeout=5) as srv:
        yield srv


@settings(FAST, max_examples=max(N * 3 // 4, 1))
@given(plan=st.lists(BEHAVIOURS, min_size=1, max_size=3))
def test_a_download_from_a_mirror_answering_anything_is_whole_and_right_or_a_clear_error(served, tmp_path_factory,
                                                                                        monkeypatch, plan):
    cache = tmp_path_factory.mktemp("cache")
    monkeypatch.setenv("ROMLIB_CACHE", str(cache))
    monkeypatch.setenv("ROMLIB_MIRROR", served.url)
    monkeypatch.delenv("ROMLIB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    hub.register(hub.Checkpoint("fuzz/ckpt", "http://127.0.0.1:9/ckpt.pt", format="torch"))
    served.misbehave["ckpt.pt"] = [b for b in plan]
    try:
        path = hub.download("fuzz/ckpt", progress=False, timeout=2)
    except hub.CheckpointUnavailable as e:
        assert "ckpt.pt" in str(e) and "Traceback" not in str(e)
        assert not (cache / "ckpt.pt").exists() and not (cache / "ckpt.pt.json").exists()
    else:  # recorded as good only when it is the file, whole
        assert path.read_bytes() == BODY
        rec = json.loads((cache / "ckpt.pt.json").read_text())
        assert rec["sha256"] == hashlib.sha256(BODY).hexdigest() and rec["size"] == len(BODY)
    finally:
        served.misbehave.pop("ckpt.pt", None)
        hub.REGISTRY.pop("fuzz/ckpt", None)
