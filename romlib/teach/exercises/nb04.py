"""Notebook 04's exercises: what each guidance rule feeds its branches, and the oracle's verdict on an edit."""
from __future__ import annotations

from types import SimpleNamespace

import torch

from ...guidance.cfg import RULES
from ...shapes.oracle import judge
from ...shapes.scenes import COLOURS, SHAPES, parse_text
from .core import Exercise, Mistake, fresh_seed

# ----------------------------------------------------------------------------------------------
# 04.rule-inputs: CCF's two changes, one at a time
# ----------------------------------------------------------------------------------------------

_RULE_NAMES = ("cf", "ccf", "ccf-direction", "cf-original")


def _rule_cases(seed: int = 0):
    g = torch.Generator().manual_seed(fresh_seed(8, seed))
    image = torch.rand(1, 3, 4, 4, generator=g) * 2 - 1
    keep = torch.ones(1, 1, 4, 4)
    keep[..., 1:3, 1:3] = 0
    return [(rule, "the red circle", target, image, keep) for target in ("a blue square", "a square", "")
            for rule in _RULE_NAMES]


def _rule_reference(rule, ref, target, image, keep_mask):
    spec = RULES[rule]
    return spec.base_prompt(ref), (image if spec.uses_original(target) else image * keep_mask)


def branch_inputs(rule, ref, target, image, keep_mask):
    """(the base branch's text, the image both branches see) for cf, ccf and CCF's two one-change ablations."""
    base_text = ref if rule in ("ccf", "ccf-direction") else ""
    original = rule in ("ccf", "cf-original") and target.strip() != ""  # an empty target: plain inpainting
    return base_text, image if original else image * keep_mask


def _rules(base_ref, original, empty_rule=True):
    def fn(rule, ref, target, image, keep_mask):
        use_original = rule in original and (target.strip() != "" or not empty_rule)
        return (ref if rule in base_ref else ""), (image if use_original else image * keep_mask)
    return fn


RULE_INPUTS = Exercise(
    id="04.rule-inputs", title="CCF's two changes, one at a time", function="branch_inputs",
    paper="§4.3 (eq. 8 and the original image), §5.3",
    prompt="Write branch_inputs(rule, ref, target, image, keep_mask) for rule in 'cf', 'ccf', 'ccf-direction', "
           "'cf-original': return (base_text, inpaint_image) — the text of the base branch ('' for ∅, or ref) and "
           "the image both branches see (image, or the masked image·keep_mask). CCF changes two things of CF; each "
           "ablation takes one. With an empty target there is nothing to move towards: CCF is plain inpainting "
           "(masked image).",
    stub='''def branch_inputs(rule, ref, target, image, keep_mask):
    """(base branch text, image the model sees) for 'cf', 'ccf', 'ccf-direction', 'cf-original'."""
    base_text = ...   # TODO: '' (∅) or ref?
    original = ...    # TODO: does this rule feed the original image? (not with an empty target)
    return base_text, image if original else image * keep_mask
''',
    reference=_rule_reference, solution=branch_inputs, cases=_rule_cases,
    mistakes=(
        Mistake(_rules(base_ref=("ccf", "cf-original"), original=("ccf", "ccf-direction")),
                "the two ablations are swapped: 'ccf-direction' keeps CCF's base branch (c_ref) with GLIDE's masked "
                "image; 'cf-original' keeps GLIDE's ∅ base branch with CCF's original image"),
        Mistake(_rules(base_ref=("ccf", "ccf-direction"), original=()),
                "every rule sees the masked image: CCF and 'cf-original' feed the original image (§4.3)"),
        Mistake(_rules(base_ref=("ccf", "ccf-direction"), original=("ccf", "cf-original"), empty_rule=False),
                "with an empty target CCF is plain inpainting and feeds the masked image "
                "(GuidanceSpec.uses_original): there is no target to move towards, and the original would put the "
                "object back"),
        Mistake(_rules(base_ref=_RULE_NAMES, original=("ccf", "cf-original")),
                "CF and 'cf-original' start from ∅, the empty text ''; only CCF and 'ccf-direction' start from c_ref"),
    ),
    checks="(base text, image) against romlib.guidance.cfg.RULES for the four rules and three targets (one empty)",
    hints=('§4.3 (eq. 8, the original image) and §5.3 of the paper, and the table at the top of romlib.guidance.cfg.',
           'Each rule is two choices: the base text (∅ or c_ref) and the image (masked or original); with an empty target CCF falls back to plain inpainting.'),
    hint="the table of notebook 04: cf (∅, masked), ccf-direction (c_ref, masked), cf-original (∅, original), ccf (c_ref, original).",
)

# ----------------------------------------------------------------------------------------------
# 04.judge: target reached? free attribute kept?
# ----------------------------------------------------------------------------------------------


def _judge_cases(seed: int = 0):
    if seed == 0:  # the cases the notebook shows: a red circle edited towards six targets, seen four ways
        out = []
        for target in ("a blue square", "a square", "a blue shape", "the red circle", "a red square", ""):
            for seen in (("blue", "square"), ("red", "square"), ("blue", "circle"), ("red", "circle")):
                out.append((seen[0], seen[1], target, "red", "circle"))
        return out
    # fresh inputs (an assignment's hidden tests): other originals, targets naming a colour, a shape, both or neither
    g = torch.Generator().manual_seed(fresh_seed(40, seed))
    colours, shapes = sorted(COLOURS), list(SHAPES)

    def pick(options):
        return options[int(torch.randint(len(options), (1,), generator=g))]

    out = []
    for _ in range(24):
        colour, shape = pick(colours), pick(shapes)
        target = pick([f"a {colour} {shape}", f"a {shape}", f"a {colour} shape", ""])
        out.append((pick(colours), pick(shapes), target, pick(colours), pick(shapes)))
    return out


def _judge_reference(seen_colour, seen_shape, target, original_colour, original_shape):
    j = judge(SimpleNamespace(colour=seen_colour, shape=seen_shape), target,
              SimpleNamespace(colour=original_colour, shape=original_shape))
    return j["success"], j["preserved"]


def judge_edit(seen_colour, seen_shape, target, original_colour, original_shape):
    """(success, preserved): every attribute the target names is seen; every attribute it leaves free kept
    the original's value (None when it names both)."""
    from romlib.shapes.scenes import parse_text  # the solution shown to the student is self-contained

    parsed = parse_text(target)
    named = parsed.named
    seen = {"colour": seen_colour, "shape": seen_shape}
    original = {"colour": original_colour, "shape": original_shape}
    success = all(seen[k] == v for k, v in named.items()) and not parsed.empty
    free = [k for k in ("colour", "shape") if k not in named]
    preserved = all(seen[k] == original[k] for k in free) if free else None
    return success, preserved


def _judge_variant(*, empty_success=False, preserved_all=False, success_changed=False, none_when_both=True):
    def fn(seen_colour, seen_shape, target, original_colour, original_shape):
        parsed = parse_text(target)
        named = parsed.named
        seen = {"colour": seen_colour, "shape": seen_shape}
        original = {"colour": original_colour, "shape": original_shape}
        if success_changed:
            success = any(seen[k] != original[k] for k in seen)
        else:
            success = all(seen[k] == v for k, v in named.items()) and (empty_success or not parsed.empty)
        free = list(seen) if preserved_all else [k for k in seen if k not in named]
        preserved = all(seen[k] == original[k] for k in free) if (free or not none_when_both) else None
        return success, preserved
    return fn


JUDGE = Exercise(
    id="04.judge", title="the oracle's verdict: target reached, free attribute kept", function="judge_edit",
    paper="§5.3 ('keeps the pose/shape'); ShapesWorld's oracle",
    prompt="Write judge_edit(seen_colour, seen_shape, target, original_colour, original_shape) → (success, "
           "preserved). success: the edit shows every attribute the target text names (an empty target names nothing "
           "and succeeds at nothing). preserved: every attribute the target leaves free kept the original's value; "
           "None when the target names both. parse_text(target).named gives what the text names, e.g. "
           "{'shape': 'square'}.",
    stub='''from romlib.shapes.scenes import parse_text

def judge_edit(seen_colour, seen_shape, target, original_colour, original_shape):
    """(success, preserved) of one edit, as ShapesWorld's oracle reads it."""
    parsed = parse_text(target)            # parsed.named: the attributes the text names; parsed.empty
    seen = {"colour": seen_colour, "shape": seen_shape}
    original = {"colour": original_colour, "shape": original_shape}
    success = ...    # TODO
    preserved = ...  # TODO: None when nothing is left free
    return success, preserved
''',
    reference=_judge_reference, solution=judge_edit, cases=_judge_cases,
    mistakes=(
        Mistake(_judge_variant(preserved_all=True),
                "'preserved' also compared the attribute the target names — that one is meant to change; compare only "
                "the attributes the target leaves free"),
        Mistake(_judge_variant(none_when_both=False),
                "when the target names both attributes nothing is left free: preserved is None, not True"),
        Mistake(_judge_variant(empty_success=True),
                "an empty target names nothing, so nothing is reached: success is False (all() of nothing is True)"),
        Mistake(_judge_variant(success_changed=True),
                "success means the edit shows what the target names, not that it differs from the original"),
    ),
    checks="(success, preserved) against romlib.shapes.oracle.judge for 6 targets (one empty) × 4 seen objects",
    hints=("§5.3 of the paper ('keeps the pose/shape') and notebook 04's keeps table: what a target names, and what it leaves free.",
           "Success: every attribute the target names is seen (and there is a target). Kept: the attributes it does not name equal the original's — None when it names both."),
    hint="success: all named attributes seen and the target not empty; preserved: the unnamed attributes equal the original's, None if none.",
)

EXERCISES = (RULE_INPUTS, JUDGE)
