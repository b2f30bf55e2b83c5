"""The blinded, randomised in-class ranking session of notebook 06 (re-exported by :mod:`romlib.study`).

Its results are :class:`romlib.study.Rankings`, so the statistics of the paper's Table 1 apply unchanged.
"""
from __future__ import annotations

import html
import io
import logging
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from .data import METHODS, TABLE1_GUIDANCE, Rankings, _check_permutation, save_csv

__all__ = ["StudyCase", "RankingSession", "cases_from_pipeline", "StudyMethods", "study_methods", "STAND_INS"]

#: What stands in for Table 1's baselines on a backend without their models (ShapesWorld has no Blended
#: Diffusion and no noised CLIP): CCF's two one-change ablations, so the class still ranks four outputs.
STAND_INS = ("ccf-direction", "cf-original")


def _title(name: str) -> str:
    from ..guidance.methods import METHODS as REGISTRY

    return REGISTRY[name].title if name in REGISTRY else name


@dataclass(frozen=True)
class StudyMethods:
    """Which methods a class study ranks, measured against Table 1's four (Blended, CLIP-guided GLIDE,
    CF-guided GLIDE, CCF). ``label`` says it in one line, naming them (for the cell that builds the cases);
    ``blind_label`` says it without a name (for next to the blinded outputs)."""

    ranked: tuple[str, ...]  # the methods ranked (guidance names, or Table 1's names)
    missing: tuple[str, ...]  # Table 1's methods not ranked (guidance names)
    stand_ins: tuple[str, ...] = ()  # methods ranked in their place

    @property
    def is_table1(self) -> bool:
        return not self.missing and len(self.ranked) == len(TABLE1_GUIDANCE)

    @property
    def label(self) -> str:
        names = ", ".join(_title(m) for m in self.ranked)
        if self.is_table1:
            return f"This study ranks Table 1's four methods: {names}."
        why = (f"; {', '.join(_title(m) for m in self.stand_ins)} stand in for them" if self.stand_ins else "")
        return (f"Not Table 1's methods: this study ranks {names}. Missing from Table 1's four: "
                f"{', '.join(_title(m) for m in self.missing)} (the backend has no models for them{why}).")

    @property
    def blind_label(self) -> str:
        """The same fact without a method's name, for next to the blinded outputs (the ranking widget):
        whether these are Table 1's four, and how many are missing or stand in."""
        if self.is_table1:
            return "These outputs are Table 1's four methods, shown blind."
        extra = f", and {len(self.stand_ins)} stand-in(s) take their place" if self.stand_ins else ""
        return (f"Not Table 1's methods: {len(self.missing)} of Table 1's {len(TABLE1_GUIDANCE)} are missing on this "
                f"backend{extra} (which: session.study_methods.label, best read after ranking).")

    @classmethod
    def of(cls, methods: Sequence[str]) -> "StudyMethods":
        """Describe a set of ranked methods (guidance names or Table 1's names)."""
        ranked = tuple(methods)
        missing = tuple(g for g, long in zip(TABLE1_GUIDANCE, METHODS) if g not in ranked and long not in ranked)
        stand_ins = tuple(m for m in ranked if m not in TABLE1_GUIDANCE and m not in METHODS) if missing else ()
        return cls(ranked, missing, stand_ins)


def study_methods(backend, *, stand_ins: bool = True) -> StudyMethods:
    """The methods an in-class study on ``backend`` ranks: Table 1's four where the backend has them
    (``romlib.guidance.methods.available``); where it does not, the ones it has, and (``stand_ins``)
    CCF's ablations (:data:`STAND_INS`) in place of the missing, so the class still ranks four."""
    from ..guidance.methods import available

    have = available(backend)
    ranked = [g for g in TABLE1_GUIDANCE if g in have]
    missing = tuple(g for g in TABLE1_GUIDANCE if g not in have)
    extra = [g for g in STAND_INS if g in have][:len(missing)] if stand_ins else []
    if len(ranked) + len(extra) < 2:
        raise ValueError(f"the {getattr(backend, 'name', 'given')!r} backend runs {list(have)}; a study ranks at "
                         f"least two of Table 1's methods {list(TABLE1_GUIDANCE)} or their stand-ins {list(STAND_INS)}")
    return StudyMethods(tuple(ranked + extra), missing, tuple(extra))

log = logging.getLogger(__name__)


@dataclass
class StudyCase:
    """One case of the study: the input image, the texts and the outputs of every method
    (PIL images, HxWx3 arrays or [3, H, W] tensors in [-1, 1]); ``region``: optionally an image of the
    local region of interest (the paper shows it next to the input)."""

    case_id: str
    image: Any
    target: str
    outputs: dict[str, Any]
    ref: str = ""
    region: Any = None


def _as_case(c, index: int) -> StudyCase:
    if isinstance(c, StudyCase):
        return c
    if isinstance(c, Mapping):
        d = dict(c)
        d.setdefault("case_id", d.pop("id", f"case{index:02d}"))
        try:
            return StudyCase(**d)
        except TypeError as e:
            raise ValueError(f"case {index}: {e}; a case needs case_id, image, target, outputs (ref, region optional)"
                             ) from None
    raise TypeError(f"case {index} is a {type(c).__name__}; expected a StudyCase or a dict")


def _png(img) -> bytes:
    from PIL import Image

    if not isinstance(img, Image.Image):
        from ..teach.viz import as_array

        img = Image.fromarray(as_array(img))
    buf = io.BytesIO()
    img.convert("RGB").save(buf, format="PNG")
    return buf.getvalue()


def cases_from_pipeline(pipe, examples: Sequence[tuple], guidances: Sequence[str] | None = None, *, samples: int = 2,
                        seed: int = 0, progress: bool = False, **kwargs) -> list[StudyCase]:
    """Study cases from a pipeline: for each ``(image, ref, target)`` of ``examples``, the best edit of
    every guidance rule (:meth:`~romlib.pipeline.ROMPipeline.compare`: one shared mask, same seeds).
    ``guidances=None``: Table 1's four methods where the backend has them (:func:`study_methods`; on
    ShapesWorld, CF and CCF with CCF's two ablations standing in for Blended and CLIP-guided GLIDE);
    a :class:`RankingSession` over these cases says which methods it ranks (``session.study_methods``).

    The comparison figures, which carry the method names, are closed here without being displayed:
    under an inline backend an open figure would otherwise render at the end of the cell, right
    under the blind ranking widget, and un-blind the study."""
    import matplotlib.pyplot as plt

    if guidances is None:
        chosen = study_methods(pipe.backend)
        guidances = chosen.ranked
        log.info("study cases: %s", chosen.label)
    cases = []
    for i, (image, ref, target) in enumerate(examples):
        results, fig = pipe.compare(image, ref, target, guidances=tuple(guidances), samples=samples, seed=seed,
                                    progress=progress, **kwargs)
        plt.close(fig)
        cases.append(StudyCase(f"case{i}", image, target, {g: r.best for g, r in results.items()}, ref=ref))
    return cases


class RankingSession:
    """A blinded ranking session for one participant (the in-class version of the paper's study).

    Per case, the M outputs are shown in a random order under the labels A, B, C, D (the mapping is
    drawn from ``seed`` and the user name, so students with the same seed still see different orders);
    the participant gives each label a rank (1 = best, a permutation). :meth:`record` is the whole API
    (the widget calls it too); :meth:`rankings`/:meth:`save_csv` give the usual table for
    :func:`summarize`. ``session.ui`` holds the widget's controls once :meth:`widget` was built.

    >>> s = RankingSession(cases, user="alice")              # doctest: +SKIP
    >>> s.record("case00", {"A": 2, "B": 1, "C": 4, "D": 3})   # doctest: +SKIP
    """

    def __init__(self, cases: Sequence[StudyCase | Mapping], *, user: str = "user", seed: int = 0,
                 methods: Sequence[str] | None = None):
        self.cases = [_as_case(c, i) for i, c in enumerate(cases)]
        if not self.cases:
            raise ValueError("a ranking session needs at least one case")
        ids = [c.case_id for c in self.cases]
        if len(set(ids)) != len(ids):
            raise ValueError(f"case ids must be unique; got {ids}")
        self.user = str(user)
        from ..config import check_seed

        self.seed = check_seed("seed", seed)
        self.methods = tuple(methods) if methods is not None else tuple(self.cases[0].outputs)
        if not 2 <= len(self.methods) <= 26:
            raise ValueError(f"{len(self.methods)} methods; a session ranks 2 to 26")
        for c in self.cases:
            if set(c.outputs) != set(self.methods):
                raise ValueError(f"case {c.case_id!r} has outputs for {sorted(c.outputs)}; expected {sorted(self.methods)}")
        #: which methods this session ranks, against Table 1's four (``study_methods.label`` says it)
        self.study_methods = StudyMethods.of(self.methods)
        self.labels = tuple("ABCDEFGHIJKLMNOPQRSTUVWXYZ"[: len(self.methods)])
        rng = np.random.default_rng([seed, zlib.crc32(self.user.encode())])
        self._blind = {c.case_id: dict(zip(self.labels, (self.methods[k] for k in rng.permutation(len(self.methods)))))
                       for c in self.cases}
        self._results: dict[str, dict[str, int]] = {}
        self.ui: dict = {}

    # --- the non-widget API -------------------------------------------------------------------
    def _case(self, case_id: str) -> StudyCase:
        for c in self.cases:
            if c.case_id == case_id:
                return c
        raise ValueError(f"unknown case {case_id!r}; cases: {[c.case_id for c in self.cases]}")

    def blinded(self, case_id: str) -> list[tuple[str, Any]]:
        """What the participant sees for a case: ``(label, output image)`` in label order."""
        c = self._case(case_id)
        return [(lab, c.outputs[m]) for lab, m in self._blind[case_id].items()]

    def reveal(self, case_id: str) -> dict[str, str]:
        """The blinding key of a case: ``{label: method}``."""
        self._case(case_id)
        return dict(self._blind[case_id])

    def record(self, case_id: str, ranks_by_label: Mapping[str, int]) -> dict[str, int]:
        """Record one ranking: ``{label: rank}`` with every label once and the ranks a permutation of
        1..M (1 = best). Returns ``{method: rank}``; recording a case again replaces its ranking."""
        self._case(case_id)
        given = {str(k).strip().upper(): v for k, v in ranks_by_label.items()}
        if set(given) != set(self.labels) or len(given) != len(ranks_by_label):
            raise ValueError(f"case {case_id!r}: got labels {sorted(map(str, ranks_by_label))}; expected each of "
                             f"{list(self.labels)} exactly once")
        ranks = _check_permutation(given, f"case {case_id!r}")
        by_method = {self._blind[case_id][lab]: r for lab, r in ranks.items()}
        if case_id in self._results:
            log.info("case %s ranked again; the new ranking replaces the old one", case_id)
        self._results[case_id] = {m: by_method[m] for m in self.methods}
        return dict(self._results[case_id])

    @property
    def n_recorded(self) -> int:
        return len(self._results)

    def next_case(self) -> str | None:
        """The first case not ranked yet (None when all are)."""
        return next((c.case_id for c in self.cases if c.case_id not in self._results), None)

    def rankings(self) -> Rankings:
        """This participant's rankings as a :class:`Rankings` table (one user)."""
        if not self._results:
            raise ValueError("no case ranked yet: record(case_id, {label: rank}) first")
        recs = [(self.user, c.case_id, m, self._results[c.case_id][m]) for c in self.cases
                if c.case_id in self._results for m in self.methods]
        return Rankings.from_records(recs, methods=self.methods)

    def save_csv(self, path: str | Path) -> Path:
        """Save the rankings so far (``user,case,method,rank``); merge a class with :func:`load_csv`."""
        return save_csv(self.rankings(), path)

    # --- display ------------------------------------------------------------------------------
    def text(self) -> str:
        """The static fallback (no widgets): the state and how to rank without a UI."""
        nxt = self.next_case()
        lines = [f"Blinded ranking for {self.user!r}: {len(self.cases)} cases, {len(self.methods)} outputs each, "
                 f"labelled {self.labels[0]}–{self.labels[-1]} in a shuffled order per case; "
                 f"{self.n_recorded}/{len(self.cases)} ranked.", self.study_methods.blind_label]
        if nxt is None:
            lines.append(f"All cases ranked: session.save_csv('ranks_{self.user}.csv').")
        else:
            c = self._case(nxt)
            example = ", ".join(f"{lab!r}: {i + 1}" for i, lab in enumerate(self.labels))
            lines.append(f"Next: {nxt!r} — target {c.target!r}" + (f" (referring to {c.ref!r})" if c.ref else "")
                         + f". Rank it with session.record({nxt!r}, {{{example}}})  (1 = best)")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.text()

    def figure(self, case_id: str | None = None, size: float = 2.2):
        """A static figure of one blinded case (input, region, outputs A–D): what the widget shows."""
        from ..teach.viz import image_row

        c = self._case(case_id or self.next_case() or self.cases[0].case_id)
        imgs = [c.image] + ([c.region] if c.region is not None else []) + [im for _, im in self.blinded(c.case_id)]
        titles = ["input"] + (["region"] if c.region is not None else []) + [lab for lab in self.labels]
        return image_row(imgs, titles, size=size, suptitle=f"{c.case_id}: target {c.target!r}")

    def widget(self):
        """The ipywidgets UI: one case at a time, a rank dropdown under each output, submit/previous
        buttons and a message line. Submitting calls :meth:`record`; invalid rank sets are reported in
        the message and not recorded."""
        import ipywidgets as W

        size = 170
        header = W.HTML()
        inputs = W.HBox()
        drops = {lab: W.Dropdown(options=[("–", 0)] + [(str(k), k) for k in range(1, len(self.labels) + 1)], value=0,
                                 description=lab, layout=W.Layout(width=f"{size}px")) for lab in self.labels}
        panels = {lab: W.Image(format="png", width=size) for lab in self.labels}
        submit = W.Button(description="submit ranks", button_style="primary")
        back = W.Button(description="previous")
        message = W.HTML()
        state = {"index": 0}
        self.ui = {"header": header, "dropdowns": drops, "images": panels, "submit": submit, "previous": back,
                   "message": message, "state": state}

        def show(index: int):
            state["index"] = index
            c = self.cases[index]
            header.value = (f"<b>Case {index + 1}/{len(self.cases)}</b> — target: <i>{html.escape(c.target)}</i>"
                            + (f" (referring to <i>{html.escape(c.ref)}</i>)" if c.ref else "")
                            + f" — rank the outputs, 1 = best ({self.n_recorded} ranked)"
                            + f"<br><small>{html.escape(self.study_methods.blind_label)}</small>")
            ims = [c.image] + ([c.region] if c.region is not None else [])
            inputs.children = [W.Image(value=_png(im), format="png", width=size) for im in ims]
            done = self._results.get(c.case_id)
            for lab, im in self.blinded(c.case_id):
                panels[lab].value = _png(im)
                drops[lab].value = done[self._blind[c.case_id][lab]] if done else 0

        def on_submit(_):
            c = self.cases[state["index"]]
            given = {lab: d.value for lab, d in drops.items()}
            if 0 in given.values():
                message.value = "<span style='color:#b00'>give every output a rank (1 = best)</span>"
                return
            try:
                self.record(c.case_id, given)
            except ValueError as e:
                message.value = f"<span style='color:#b00'>{html.escape(str(e))}</span>"
                return
            nxt = self.next_case()
            if nxt is None:
                message.value = (f"All {len(self.cases)} cases ranked — save with "
                                 f"<code>session.save_csv('ranks_{self.user}.csv')</code>")
                show(state["index"])
            else:
                message.value = f"recorded {c.case_id}"
                show([x.case_id for x in self.cases].index(nxt))

        def on_back(_):
            show(max(0, state["index"] - 1))

        submit.on_click(on_submit)
        back.on_click(on_back)
        nxt = self.next_case()
        show([x.case_id for x in self.cases].index(nxt) if nxt else 0)
        outputs = W.HBox([W.VBox([panels[lab], drops[lab]]) for lab in self.labels])
        return W.VBox([header, inputs, outputs, W.HBox([back, submit]), message])

    def show(self, *, figure: bool = True):
        """Display the session: the static text (and a figure of the next case) first, so a notebook read
        without a kernel shows something, then the widget when ipywidgets can render."""
        from ..teach.nb import _show, widgets_available

        print(self.text())
        if figure:
            try:
                _show(self.figure())
            except ImportError:  # no matplotlib: the text is the fallback
                pass
        if widgets_available():
            from IPython.display import display

            display(self.widget())
