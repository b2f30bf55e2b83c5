"""No checkpoint loaded by romlib or its tools can run code: every torch.load is weights-only."""
import re
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def test_every_torch_load_is_weights_only():
    offenders = []
    for folder in ("romlib", "tools"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            text = path.read_text(encoding="utf-8")
            for m in re.finditer(r"torch\.load\(", text):
                call = text[m.start(): text.find(")", m.end()) + 1]
                if "weights_only=True" not in call:
                    offenders.append(f"{path.relative_to(ROOT)}:{text.count(chr(10), 0, m.start()) + 1}")
    assert offenders == [], f"torch.load without weights_only=True: {offenders}"


class _Payload:
    def __reduce__(self):  # what a crafted checkpoint does: call a function on load
        return (Path.touch, (Path(_Payload.target),))


@pytest.mark.parametrize("loader", ["hub", "shapes_inpaint", "shapes_ranker"])
def test_code_in_a_checkpoint_is_refused_not_run(tmp_path, loader):
    from romlib.hub import UnsafeCheckpoint, safe_load

    _Payload.target = str(tmp_path / "pwned")
    name = {"hub": "x.pt", "shapes_inpaint": "inpaint.pt", "shapes_ranker": "ranker.pt"}[loader]
    bad = tmp_path / name
    torch.save({"state_dict": {}, "config": _Payload()}, bad)
    with pytest.raises(UnsafeCheckpoint, match=r"refused: .* asks to run code .*GLOBAL"):
        if loader == "hub":
            safe_load(bad)
        elif loader == "shapes_inpaint":
            from romlib.shapes import load_inpaint_model

            load_inpaint_model(tmp_path)
        else:
            from romlib.shapes import load_ranker

            load_ranker(tmp_path)
    assert not (tmp_path / "pwned").exists(), "the payload ran"
    assert bad.is_file(), "the refused file must not be deleted"


def test_plain_checkpoint_still_loads(tmp_path):
    from romlib.hub import safe_load

    torch.save({"w": torch.ones(2), "meta": {"steps": 3, "name": "x", "pair": (1, 2)}}, tmp_path / "ok.pt")
    obj = safe_load(tmp_path / "ok.pt")
    assert obj["meta"] == {"steps": 3, "name": "x", "pair": (1, 2)} and obj["w"].sum() == 2
