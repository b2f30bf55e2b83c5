"""Notebook helpers: the setup cell, the cached pipeline, example inputs and the widgets.

Every notebook starts with ``import romlib as rl; env = rl.nb.setup()`` and gets the same
backend choice (:func:`romlib.pipeline.default_backend`: the real models on a GPU with internet,
ShapesWorld offline or on the CPU; ``ROMLIB_BACKEND`` overrides). Widgets always show a static
rendering of their default state first, so a notebook read without a kernel (GitHub, nbval)
still shows the figure.
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from .. import hub
from ..backends import OFFLINE, OFFLINE_DEFAULT, default_backend
from ..config import RANK_MODES
from ..contracts import AmbiguousReference, NoObjectFound
from ..guidance.methods import available, get
from ..io import load_image, quote
from ..masks import erode as erode_mask, resize_edit_mask
from ..pipeline import get_pipeline
from ..plots import image_row, show
from ..sampling.diffusion import space_timesteps
from ..shapes.demo import LOCAL_EXAMPLES, select_case
from ..shapes.scenes import COLOURS, SHAPES
from ..shapes.segmenter import find_objects
from ..specs import BACKENDS, backend_spec
from ..world import cases as world_cases
from .explorer import STAGE_OF, Explorer
from .live import LiveUpdate

__all__ = ["setup", "pipeline", "removal_pipeline", "example", "chosen_case", "missing_phrase", "referred_mask",
           "centred_box_mask", "explore", "CONTROLS", "scrubber", "plot_trace", "trace_scales",
           "trace_numbers", "widgets_available", "show", "note", "baselines_note", "timesteps_1000"]

log = logging.getLogger(__name__)


@dataclass
class Env:
    device: str
    backend: str
    gpu: str | None
    progress: bool = True  # progress bars in cells; False under the tests (``ROMLIB_PROGRESS=0``)

    def __str__(self):
        where = f"GPU ({self.gpu})" if self.gpu else "CPU"
        what = BACKENDS[self.backend].summary if self.backend in BACKENDS else self.backend
        return f"romlib on the {where}; backend: {self.backend} — {what}"


#: the backend :func:`setup` chose (what :func:`pipeline` loads when it is given none)
_CHOSEN: dict = {}


def setup(seed: int = 0, quiet: bool = False, offline: str | None = None) -> Env:
    """Seed everything, pick the device and the backend, and say which (first cell of every notebook).

    The backend is :func:`romlib.backends.default_backend`'s (the real models on a GPU that reaches their
    files, else ShapesWorld; ``$ROMLIB_BACKEND`` overrides both); ``offline`` names the embedded backend the
    notebook runs on instead of :data:`~romlib.backends.OFFLINE_DEFAULT` (ShapesWorld) when the real models are not at hand (``"world"``: the 64 px world
    with its learned segmenter; also under ``$ROMLIB_BACKEND=offline``, how the tests run the notebooks). :func:`pipeline`
    then loads the chosen backend.

    ``env.progress`` is what the notebooks pass as ``progress=``: True (text bars, :mod:`romlib.progress`:
    they render in Colab and Jupyter and survive a save and reopen) unless ``ROMLIB_PROGRESS=0`` (set by nbval's conftest and the refresh tool,
    so the stored notebooks and the tests carry no frozen bars)."""
    torch.manual_seed(seed)
    logging.getLogger("romlib").setLevel(logging.WARNING)
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    backend = default_backend()
    if offline is not None:
        spec = BACKENDS.get(offline)
        if spec is None or not spec.demo:
            embedded = [n for n, b in BACKENDS.items() if b.demo]
            raise ValueError(f"offline={offline!r} is not an embedded backend; accepted: {', '.join(embedded)}")
        if backend == OFFLINE_DEFAULT and os.environ.get("ROMLIB_BACKEND", "") in ("", OFFLINE):
            backend = offline
    env = Env(device="cuda" if gpu else "cpu", backend=backend, gpu=gpu,
              progress=os.environ.get("ROMLIB_PROGRESS", "1") != "0")
    _CHOSEN["backend"] = backend
    if not quiet:
        print(env)
    return env


def pipeline(backend: str | None = None, **kwargs):
    """The notebook's pipeline, loaded once per kernel (models stay in memory between cells);
    the same models as :func:`romlib.edit` (:func:`romlib.pipeline.get_pipeline`).

    With real models a phrase such as "the cat on the left" can fit two objects almost equally well
    (MDETR was fine-tuned on PhraseCut, whose phrases may name several objects); the API then raises
    :class:`~romlib.contracts.AmbiguousReference`. A notebook must go on (*Run all*), so its pipeline
    takes the best object with a logged warning (``best_anyway=True``, what the authors' code always
    does) wherever a cell does not say otherwise. ShapesWorld's pipeline keeps the API's rule.
    ``backend`` defaults to the one :func:`setup` chose."""
    pipe = get_pipeline(backend or _CHOSEN.get("backend"), **kwargs)
    return pipe.with_defaults(best_anyway=True) if _spec(pipe).best_anyway else pipe


def removal_pipeline(pipe):
    """The pipeline an *empty* target (remove the object, the paper's Fig. 8) runs on:
    :meth:`romlib.pipeline.ROMPipeline.removal_pipeline` — on ShapesWorld the shipped ``"removal"`` model
    (:data:`romlib.shapes.VARIANTS`, trained with removal examples; the default model redraws a shape under an
    empty caption), from the same cache as :func:`pipeline`; with the real models ``pipe`` itself (GLIDE fills
    an empty-caption hole with background). ``pipe.edit(image, ref, "")`` hands over to it by itself."""
    return pipe.removal_pipeline()


def example(pipe, index: int = 0) -> tuple:
    """An input for the pipeline's backend: ``(image, ref, target)``.

    ShapesWorld and the world: a generated scene with a referring expression and a target
    (:data:`romlib.shapes.demo.LOCAL_EXAMPLES`); real models: the
    two cats of COCO val2017 #39769 (registered in :data:`romlib.hub.REGISTRY` as ``example/coco-39769``,
    fetched once like every other file; the DETR/MDETR demo image)."""
    return EXAMPLES[_spec(pipe).example](index)


#: the cases of the COCO photo (the two cats of val2017 #39769): (ref, target); the last one removes an object
COCO_CASES = [("the cat on the left", "a golden retriever"), ("the remote control on the left", "a banana"),
              ("the cat on the right", "")]


def _coco_example(index: int) -> tuple:
    ref, target = COCO_CASES[index % len(COCO_CASES)]
    return load_image(hub.download("example/coco-39769", progress=False)), ref, target


def _noise_example(index: int) -> tuple:
    rng = np.random.RandomState(index)
    return Image.fromarray((rng.rand(96, 96, 3) * 255).astype("uint8")), "the red car", "a blue truck"


#: the example inputs by :attr:`romlib.specs.BackendSpec.example`
EXAMPLES = {**LOCAL_EXAMPLES, "coco": _coco_example, "noise": _noise_example}


def _spec(pipe):
    """The :class:`~romlib.specs.BackendSpec` of ``pipe``'s backend."""
    return backend_spec(pipe.backend.name)


def missing_phrase(pipe, image) -> str:
    """A referring phrase that matches nothing in ``image`` (notebook 02's failure case)."""
    if _spec(pipe).example == "world":  # a colour and shape that no object of the scene has, in the world's words
        return world_cases.missing_phrase(image)
    if not _spec(pipe).oracle:
        return "a purple elephant"
    present = {(o["colour"], o["shape"]) for o in find_objects(image)}
    return next(f"the {c} {s}" for c in COLOURS for s in SHAPES if (c, s) not in present)


def centred_box_mask(image) -> torch.Tensor:
    """A bool edit mask [H, W] (True = edit) over the middle third of ``image`` in each direction: the
    named fallback of :func:`referred_mask` when the segmenter finds nothing usable."""
    W, H = load_image(image).size
    mask = torch.zeros(H, W, dtype=torch.bool)
    mask[H // 3:H - H // 3, W // 3:W - W // 3] = True
    return mask


def referred_mask(pipe, image, ref: str, *, erode: int = 1) -> tuple:
    """The referred object's edit mask (bool [H, W], True = the object), eroded by a k×k window when
    ``erode`` > 1 (notebook 03's deliberately under-covering mask): ``(segmentation, mask)``.

    A notebook meeting "nothing found" says so and goes on with a named fallback, never a traceback:
    no query above the segmenter's score (:class:`~romlib.contracts.NoObjectFound`), or several objects
    fitting equally well (:class:`~romlib.contracts.AmbiguousReference`) → the best query anyway
    (``best_anyway=True``, what the authors' code always did); a mask that covers no pixel at the
    diffusion model's resolution (e.g. a random-weight MDETR's speckles, eroded) →
    :func:`centred_box_mask`."""
    try:
        seg = pipe.segment(image, ref)
    except NoObjectFound as e:
        note(f"**Nothing found** for {quote(ref)} (best score {e.best_score:.3f}, below {e.min_score}): "
             "going on with the best query anyway (`best_anyway=True`).")
        seg = pipe.segment(image, ref, best_anyway=True)
    except AmbiguousReference as e:
        note(f"**No single object found**: {e.summary}. Going on with the best one (`best_anyway=True`).")
        seg = pipe.segment(image, ref, best_anyway=True)
    mask = erode_mask(seg.mask.float(), erode) > 0 if erode > 1 else seg.mask.bool()
    size = pipe.backend.base_model.cfg.image_size
    if resize_edit_mask(mask, size).sum() == 0:
        what = f"eroded by {erode}×{erode}, " if erode > 1 else ""
        note(f"**Nothing found**: the mask of {quote(ref)} ({what}{int(mask.sum())} pixels) covers no pixel at the "
             f"model's {size}×{size}; going on with a fallback, a centred box over the middle third of the image "
             "(`rl.nb.centred_box_mask`).")
        mask = centred_box_mask(image)
    return seg, mask


def widgets_available() -> bool:
    import importlib.util

    if importlib.util.find_spec("ipywidgets") is None:
        return False
    try:
        from IPython import get_ipython

        return get_ipython() is not None
    except ImportError:
        return False


def chosen_case(pipe, kind: str = "both", seed: int = 0) -> tuple:
    """The notebooks' example, chosen by a fixed, documented rule (not by eye): ``(image, ref, target)``.

    ShapesWorld: :func:`romlib.shapes.demo.select_case` — the first case of
    ``make_cases(..., seed)`` of the ``kind`` (``"both"``: the target names colour and shape;
    ``"colour"`` / ``"shape"``: it names only that one, so CCF has an attribute to keep;
    ``"distractors"``: three objects, one sharing the referred one's colour or shape). Other
    backends: :func:`example` (the two cats; ``"removal"`` is its empty-target case). The world:
    :func:`romlib.world.cases.select_case` (the same kinds, and ``"material"``)."""
    if _spec(pipe).example == "world":
        case = world_cases.select_case(kind, seed)
        return case.pil(), case.ref, case.target
    if _spec(pipe).oracle:
        case = select_case(kind, seed)
        return case.scene.pil(), case.ref, case.target
    return example(pipe, 2 if kind == "removal" else 0)


_show = show  # the widget helpers' name


def note(markdown: str) -> None:
    """Show a Markdown paragraph in the notebook (printed outside IPython)."""
    try:
        from IPython import get_ipython
        from IPython.display import Markdown, display

        if get_ipython() is not None:
            display(Markdown(markdown))
            return
    except ImportError:  # pragma: no cover
        pass
    print(markdown)


BASELINES = ("clip", "blended")


def baselines_note(pipe, guidances=BASELINES) -> list[str]:
    """Say, visibly, which baseline rows a comparison will lack on this backend and how to get them.
    Returns the missing guidance names (empty when every baseline is loaded)."""
    missing = [g for g in guidances if g in BASELINES and g not in pipe.backend.extras]
    if missing:
        note(f"**No {' and no '.join(repr(g) for g in missing)} rows here:** the `{pipe.backend.name}` backend has no "
             "baseline models (CLIP-guided GLIDE needs the noised CLIP, Blended Diffusion the 256×256 ADM UNet: 2.8 GB, "
             "a GPU). To get them: run this notebook on a GPU (Colab: *Runtime → Change runtime type → T4*), "
             "`romlib download --baselines` once, and `rl.nb.pipeline(baselines=True)`.")
    return missing


def timesteps_1000(trace: list[dict], num_timesteps: int = 1000) -> list[int]:
    """The trace's steps as timesteps of the original ``num_timesteps`` schedule (the toy's and the
    paper's convention), in sampling order. Traces that carry ``"index"`` (the step's index in the
    respaced schedule) already hold the original timestep in ``"t"``; older ones hold the index in
    ``"t"``, mapped here through ``space_timesteps(1000, str(len(trace)))`` (e.g. 24…0 → 999…0)."""
    if all("index" in s for s in trace):
        return [int(s["t"]) for s in trace]
    kept = sorted(space_timesteps(num_timesteps, str(len(trace))))
    return [kept[int(s["t"])] for s in trace]


#: the controls :func:`explore` can show, in this order (``controls=`` picks some)
CONTROLS = ("case", "guidance", "scale", "model", "erode", "dilation", "rank", "enlarge", "seed", "preset")
#: each explorer cell's controls by default: the knobs of notebook 03's first explorer
DEFAULT_CONTROLS = ("guidance", "scale", "dilation", "rank", "seed", "preset")


def explore(pipe, image, ref: str, target: str, *, samples: int | None = None, controls=DEFAULT_CONTROLS,
            guidances=None, cases: dict | None = None, debounce: float = 0.1, **settings):
    """The ablation explorer (:class:`romlib.teach.explorer.Explorer`): live controls over one edit.

    ``controls``: which knobs get a widget (:data:`CONTROLS`: the example ``case`` of ``cases=``, the guidance
    rule — ``guidances=`` limits the choice, e.g. the four rules —, its scale, the ``model`` (edit, or remove with
    the removal or the default model), the mask's erosion and dilation, the ranking mode and its crop factor
    ``enlarge``, the seed and the budget). Each widget names the first stage it invalidates ("→ sample"); a change
    updates the figure by itself (sliders on release), recomputing only the stages the change touches — a ranking
    change re-ranks the cached samples, never samples again — and the line above the figure says what was
    recomputed and how long it took. Updates run one at a time on a worker thread (:class:`romlib.teach.live.
    LiveUpdate`): a change made meanwhile is queued, merged with later ones, and never lost; an update starts
    ``debounce`` seconds after the last change (0.1 s: every click waits it, and the controls fire once per
    change — sliders on release, the seed on Enter —, so only a held arrow key in a dropdown makes a burst). The
    budget starts at "preview" (said in the label); "paper" is an explicit choice. ``settings``: starting values and fixed knobs of
    :class:`~romlib.config.EditConfig` (``mask=``, ``steps=``) and the explorer's own (``erode``, ``model``,
    ``case``, ``enlarge``); ``samples``: None = the preset's. The first setting is drawn statically first (every
    sample, ranked), so the notebook shows it without a kernel; without widgets,
    ``explorer.update(rank="masked")`` returns the new :class:`~romlib.result.EditResult`. Returns the explorer."""
    unknown = [c for c in controls if c not in CONTROLS]
    if unknown:
        raise ValueError(f"controls {unknown!r} unknown; accepted: {', '.join(CONTROLS)}")
    if samples is not None:
        settings["samples"] = samples
    if cases and "case" not in settings:
        settings["case"] = next(iter(cases))
    explorer = Explorer(pipe, image, ref, target, cases=cases, **settings)
    explorer.update()
    explorer.show()
    if not widgets_available():
        return explorer
    explorer.widget = _live_widget(explorer, pipe, controls, guidances, debounce)
    from IPython.display import display

    display(explorer.widget)
    return explorer


def _model_options(pipe) -> list[tuple[str, str]]:
    """The explorer's model choices: edit, or remove (the empty target); where the backend hands an empty target to
    another model (ShapesWorld), remove with that one or with the default model."""
    if pipe.backend.extras.get("removal", "self") == "self":  # the same model removes (GLIDE, SD, the world)
        return [("edit: the target", "edit"), ("remove: the empty target", "removal")]
    return [("edit: the target", "edit"), ("remove: removal model", "removal"), ("remove: default model", "default")]


def _live_widget(explorer, pipe, controls, guidances, debounce):
    """The controls, a status line and the live figure of :func:`explore` (ipywidgets)."""
    import html

    import ipywidgets as W

    s, v = explorer.result.settings, explorer.settings
    rules = list(guidances or available(pipe.backend))
    scale0 = s.get("scale") or get(s["guidance"]).scale(pipe.backend) or 1.0
    style = {"description_width": "initial"}

    def named(knob: str, what: str) -> str:
        return f"{what} → {STAGE_OF[knob]}"

    make = {
        "case": lambda: W.Dropdown(options=list(explorer.cases), value=v.get("case"), description=named("case", "example")),
        "guidance": lambda: W.Dropdown(options=rules, value=s["guidance"], description=named("guidance", "rule")),
        "scale": lambda: W.FloatSlider(value=scale0, min=0.5, max=30, step=0.5, continuous_update=False,
                                       description=named("scale", "scale s")),
        "model": lambda: W.Dropdown(options=_model_options(pipe), value=v.get("model", "edit"),
                                    description=named("model", "model")),
        "erode": lambda: W.IntSlider(value=v.get("erode", 1), min=1, max=7, step=2, continuous_update=False,
                                     description=named("erode", "erode mask")),
        "dilation": lambda: W.IntSlider(value=s["dilation"], min=1, max=15, step=2, continuous_update=False,
                                        description=named("dilation", "dilation k")),
        "rank": lambda: W.Dropdown(options=list(RANK_MODES), value=s["rank"], description=named("rank", "ranking")),
        "enlarge": lambda: W.FloatSlider(value=v.get("enlarge", 1.3), min=1.0, max=2.5, step=0.1,
                                         continuous_update=False, description=named("enlarge", "crop ×")),
        "seed": lambda: W.IntText(value=s["seed"], description=named("seed", "seed"), continuous_update=False),
        "preset": lambda: W.ToggleButtons(options=[("preview budget", "preview"), ("paper budget", "paper")],
                                          value=s["preset"], description=named("preset", "budget")),
    }
    ctl = {}
    for name in controls:
        ctl[name] = make[name]()
        ctl[name].style = style
        slider = isinstance(ctl[name], (W.IntSlider, W.FloatSlider))
        ctl[name].layout = W.Layout(width="340px" if slider else "auto", max_width="100%")
        ctl[name].add_class(f"romlib-control-{name}")
    status = W.HTML(layout=W.Layout(max_width="100%"))
    status.add_class("romlib-status")
    figure = W.Image(format="png", layout=W.Layout(max_width="100%", height="auto", display="none"))
    figure.add_class("romlib-figure")

    def say(text: str) -> None:
        status.value = f"<pre style='white-space: pre-wrap; margin: 0'>{html.escape(text)}</pre>"

    started: dict = {}

    def update(changes: dict):
        started.update(wall=time.perf_counter(), cpu=time.thread_time())  # both stages run on this worker thread
        if "guidance" in changes and get(changes["guidance"]).default_scale is None:
            changes = {**changes, "scale": None}
        return explorer.update(**changes)

    def render(_result, changes: dict) -> None:
        figure.value = explorer.png()
        figure.layout.display = None
        # the CPU seconds are what the update and the figure take on an idle core: a busy machine adds the rest
        wall, cpu = time.perf_counter() - started["wall"], time.thread_time() - started["cpu"]
        say(f"update {live.done + 1} ({_changed(changes)}): {wall:.2f} s with the figure, {cpu:.2f} s of it CPU\n"
            f"{explorer.label()}")

    live = LiveUpdate(update, render, status=say, debounce=debounce)
    for name, c in ctl.items():
        c.observe(lambda change, name=name: live.request(**{name: change["new"]}), names="value")
    say("change a control: the figure below follows it (the one above is the first setting)\n" + explorer.label())
    box = W.VBox([W.HBox(list(ctl.values()), layout=W.Layout(flex_flow="row wrap", max_width="100%")), status, figure],
                 layout=W.Layout(max_width="100%"))
    box.add_class("romlib-explorer")
    box.live = live
    return box


def _changed(changes: dict) -> str:
    return ", ".join(f"{k}={v!r} → {STAGE_OF.get(k, 'sample')}" for k, v in changes.items())


def trace_numbers(trace: list[dict], edit_mask=None) -> list[dict]:
    """Per step: t (of the 1000-step schedule), |ε_cond − ε_base| (the guidance direction's RMS size)
    and the x̂_0 range, rounded. With ``edit_mask`` (1 = edit, any size, e.g. ``result.edit_mask``) also
    "share in mask": the fraction of the difference's energy Σ(ε_cond − ε_base)² inside the mask — which
    rule's difference is concentrated on the object (the mask's share of the pixels is the no-preference level)."""
    rows = []
    inside = None
    if edit_mask is not None:
        m = torch.as_tensor(edit_mask, dtype=torch.float32)
        m = m.reshape(1, 1, *m.shape[-2:])
        side = trace[0]["eps_cond"].shape[-2:]
        inside = torch.nn.functional.interpolate(m, size=tuple(side), mode="nearest")[0, 0] > 0.5
    for s, t in zip(trace, timesteps_1000(trace)):
        d = s["eps_cond"] - s["eps_base"]
        row = {"t (of 1000)": t, "|eps_cond - eps_base|": round(d.norm().item() / d.numel() ** 0.5, 4),
               "x0 min": round(s["pred_xstart"].min().item(), 3), "x0 max": round(s["pred_xstart"].max().item(), 3)}
        if inside is not None:
            e = (d ** 2).sum(0)
            row["share in mask"] = round((e[inside].sum() / e.sum().clamp_min(1e-12)).item(), 3)
            row["mask share of pixels"] = round(inside.float().mean().item(), 3)
        rows.append(row)
    return rows


def trace_scales(*traces: list[dict]) -> dict:
    """The display scales common to every step of the ``traces`` (give two, e.g. CF's and CCF's, to
    draw both on one scale): ``eps`` = max |ε| over both branches and every step, ``diff`` = max
    |ε_cond − ε_base| over every step (so a difference 4× larger at one t *looks* 4× larger)."""
    steps = [s for trace in traces for s in trace]
    if not steps:
        raise ValueError("trace_scales needs at least one non-empty trace")
    return {"eps": max(max(s["eps_cond"].abs().max().item(), s["eps_base"].abs().max().item()) for s in steps) + 1e-8,
            "diff": max((s["eps_cond"] - s["eps_base"]).abs().max().item() for s in steps) + 1e-8}


def plot_trace(trace: list[dict], step: int, labels=("ε(x|c_target)", "ε(x|c_base)"), scales: dict | None = None):
    """One step of a :meth:`~romlib.pipeline.ROMPipeline.trace`: x_t, the two branches, their
    difference (what the scale multiplies) and the x̂_0 prediction. The branches and the difference are
    each drawn on **one scale for the whole trace** (:func:`trace_scales`, or ``scales``), stated in the titles."""
    s = trace[step]
    sc = scales or trace_scales(trace)
    diff = s["eps_cond"] - s["eps_base"]
    d_here = diff.abs().max().item()
    return image_row([s["x_t"].clamp(-1, 1), (s["eps_cond"] / sc["eps"]).clamp(-1, 1), (s["eps_base"] / sc["eps"]).clamp(-1, 1),
                      (diff / sc["diff"]).clamp(-1, 1), s["pred_xstart"]],
                     ["x_t", f"{labels[0]}\n÷ {sc['eps']:.2f} (all steps)", f"{labels[1]}\n÷ {sc['eps']:.2f} (all steps)",
                      f"difference ÷ {sc['diff']:.3f} (all steps)\nhere max {d_here:.3f} = {d_here / sc['diff']:.0%}", "x̂_0"],
                     suptitle=f"step {step + 1} of {len(trace)}: t = {timesteps_1000(trace)[step]} of 1000")


def scrubber(trace: list[dict], labels=("ε(x|c_target)", "ε(x|c_base)"), static_steps: int = 4,
             scales: dict | None = None):
    """A timestep slider over a trace. Static fallback: ``static_steps`` evenly spaced steps. Every
    step is drawn on one scale (:func:`trace_scales` of this trace, or ``scales``: e.g.
    ``trace_scales(cf_trace, ccf_trace)`` to compare two rules on one scale)."""
    n = len(trace)
    scales = scales or trace_scales(trace)
    for i in sorted({round(j * (n - 1) / max(1, static_steps - 1)) for j in range(static_steps)}):
        _show(plot_trace(trace, i, labels, scales))
    if not widgets_available():
        return
    import ipywidgets as W

    W.interact(lambda step: _show(plot_trace(trace, step, labels, scales)), step=W.IntSlider(value=0, min=0, max=n - 1))
