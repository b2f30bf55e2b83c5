"""What an edit keeps: the paper's claim that CCF "keeps the pose/shape" of the object, measured.

The paper shows it with pictures; ShapesWorld's oracle measures it (:func:`romlib.shapes.oracle.keeps`):
for each sample, is the target reached, and did the object keep its **size**, its **position** and
the attribute the target leaves to it? Cases are grouped by what the target says about the
original object ("the red circle"):

* ``restates`` — the target names both attributes and one of them is the original's ("a red
  square"): the restated attribute must stay (the text says so), size and position too;
* ``leaves free`` — the target names one attribute ("a square"): the other one, the size and the
  position should stay, though the text does not say so (CCF's claimed property);
* ``changes both`` — both named, both new ("a blue square"): only size and position can stay.

One sample per case (independent samples, so the Wilson intervals hold), the true object mask
dilated by 3, every rule at the same scale and from the same noise. The shipped report is in
``weights/notebook_tables.json`` (``"keeps"``; notebook 04 and ``docs/shapesworld.md`` show it);
``python -m romlib.shapes.bench keeps`` recomputes it (about 5 minutes on 2 cores).
"""
from __future__ import annotations

from .cases import Case, table_cases
from . import measure
from .measure import _edit_mask, _uint8, rate
from .oracle import describe_region, judge, keeps, object_region
from .scenes import parse_text

__all__ = ["GROUPS", "target_group", "measure_keeps"]

GROUPS = ("restates", "leaves free", "changes both")


def target_group(case: Case) -> str:
    """Which of :data:`GROUPS` a case's target belongs to."""
    named, o = parse_text(case.target).named, case.original
    if len(named) == 1:
        return "leaves free"
    return "restates" if named["colour"] == o.colour or named["shape"] == o.shape else "changes both"


def _kept_attribute(case: Case, j: dict) -> bool | None:
    """The attribute that should stay: the unnamed one (leaves free), the restated one (restates)."""
    named, o = parse_text(case.target).named, case.original
    if len(named) == 1:
        return j["preserved"]
    same = [k for k, v in named.items() if getattr(o, k) == v]
    return all(j[k] == getattr(o, k) for k in same) if same else None


def measure_keeps(b, diffusion, cfg) -> list[dict]:
    """One row per rule and target group: success, attribute / size / position kept, and all of
    them at once with the target reached ("edited, all kept"); rates with Wilson intervals."""
    cases = table_cases(cfg["cases"])
    masks = [_edit_mask(c, 0, cfg["dilation"]) for c in cases]
    groups = [target_group(c) for c in cases]
    before = []
    for c, m in zip(cases, masks):
        region = object_region(m, c.original.mask, c.others)
        before.append((region, describe_region(c.scene.image, region)))
    rows = []
    for rule in cfg["methods"]:
        xs = measure.sample_cases(b.base_model, b.tokenizer, diffusion, cases, masks, rule=rule, scale=cfg["scale"],
                          samples=cfg["samples"])
        flags = {g: {k: [] for k in ("success", "attribute kept", "size kept", "position kept", "edited, all kept")}
                 for g in GROUPS}
        for c, g, (region, orig), ss in zip(cases, groups, before, xs):
            for x in ss:
                seen = describe_region(_uint8(x), region)
                j, geo = judge(seen, c.target, c.original), keeps(seen, orig)
                attr = _kept_attribute(c, j)
                f = flags[g]
                f["success"].append(j["success"])
                if attr is not None:
                    f["attribute kept"].append(attr)
                f["size kept"].append(geo["size_kept"])
                f["position kept"].append(geo["position_kept"])
                f["edited, all kept"].append(j["success"] and attr is not False and geo["size_kept"] and geo["position_kept"])
        for g in GROUPS:
            f = flags[g]
            rows.append({"rule": rule, "targets": g, "n": len(f["success"]),
                         **{k: (rate(v) if v else "–") for k, v in f.items()}})
    return rows
