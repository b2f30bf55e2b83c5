"""Write notebooks/00…06 from the cell lists below (the notebooks' single source).

    python tools/build_notebooks.py && python tools/refresh_notebooks.py

Notebooks stay thin: markdown with the maths → a short call into romlib → a figure (always through
``rl.nb.show``, so it exists under every backend) and the numbers behind it. Cells whose output nbval
compares start with ``# NBVAL_CHECK_OUTPUT`` and print rounded numbers only (no figures). Every
notebook opens with what you should see and ends with a summary, 2–3 exercises and a link to the next.
"""
from __future__ import annotations

from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
REPO = "romlib/romlib"  # GitHub owner/name for the Colab badges
#: Where the install cell gets romlib when it is not importable and no ``romlib-*.whl`` lies in the
#: notebook's folder: any pip requirement source (a git URL, ``romlib==0.1.0`` on an index, an https
#: wheel). Set it once here before publishing, then rebuild (README, "Publishing").
PACKAGE_SOURCE = f"git+https://github.com/{REPO}"
CHECK = "# NBVAL_CHECK_OUTPUT\n"


def badge(name: str) -> str:
    return (f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]"
            f"(https://colab.research.google.com/github/{REPO}/blob/main/notebooks/{name}.ipynb)")


INSTALL = (
    "# Install romlib when missing (Colab): a romlib-*.whl in this folder first, else ROMLIB_SOURCE. Elsewhere: nothing.\n"
    "import glob, importlib.util, os, subprocess, sys\n"
    f"ROMLIB_SOURCE = {PACKAGE_SOURCE!r}  # set in tools/build_notebooks.py (README: Publishing)\n"
    "if importlib.util.find_spec('romlib') is None:\n"
    "    wheels = sorted(glob.glob('romlib-*.whl'))\n"
    "    spec = os.path.abspath(wheels[-1]) + '[notebooks]' if wheels else 'romlib[notebooks] @ ' + ROMLIB_SOURCE\n"
    "    pip = subprocess.run([sys.executable, '-m', 'pip', 'install', '-q', spec], capture_output=True, text=True)\n"
    "    print('installed', spec) if pip.returncode == 0 else print(\n"
    "        f'Could not install romlib from {spec!r}:\\n{pip.stderr.strip()[-800:]}\\n\\nWhat to do: put a wheel (romlib-*.whl; '\n"
    "        'build it with `pip wheel --no-deps .` in the romlib repository) into this folder (Colab: the folder icon, '\n"
    "        'Upload), or set ROMLIB_SOURCE above to a pip source you can reach; then run this cell again.')")

SETUP = ("import romlib as rl\n"
         "env = rl.nb.setup()  # GPU + internet: the real models; offline or CPU: ShapesWorld (override: ROMLIB_BACKEND)")

NEXT = {"00_quickstart": ("01_diffusion_and_guidance", "how guidance works, from a 2-D toy to the inpainting model"),
        "01_diffusion_and_guidance": ("02_referring_masks", "where the mask comes from"),
        "02_referring_masks": ("03_ablation_dilation", "why the mask is dilated"),
        "03_ablation_dilation": ("04_ablation_guidance", "CF against CCF, and CCF's two changes one at a time"),
        "04_ablation_guidance": ("05_ablation_ranking", "choosing the best of B samples"),
        "05_ablation_ranking": ("06_user_study", "the paper's user study, and your own"),
        "06_user_study": ("00_quickstart", "back to the start: edit your own image")}


def header(name: str, title: str, times: str, what: str, see: str) -> list:
    return [("md", f"# {title}\n\n{badge(name)}\n\n{what}\n\n**What you should see.** {see}\n\n**Expected time** — {times}"),
            ("code", INSTALL), ("code", SETUP)]


def footer(name: str, summary: str, exercises: list[str]) -> list:
    nxt, why = NEXT[name]
    ex = "\n".join(f"{i}. {e}" for i, e in enumerate(exercises, 1))
    return [("md", f"## Summary\n\n{summary}\n\n## Exercises\n\n{ex}\n\n**Next:** [{nxt}]({nxt}.ipynb) — {why}.")]


def table_cells(name: str, question: str, claim: str, title: str = "Measured over a fixed selection (ShapesWorld)",
                rerun: str = "a few minutes on a CPU") -> list:
    """A measured table: the shipped numbers in a checked cell, and a cell that reruns them on demand."""
    return [
        ("md", f"## {title}\n\n{question}\n\nThe numbers come from "
               f"`rl.shapes.bench.notebook_table({name!r})` — shipped with the package because they take minutes on a "
               "CPU; the next cell recomputes them on demand (same cases, same seeds). Rates are over all samples, "
               "with Wilson 95 % intervals."),
        ("code", CHECK + f"table = rl.shapes.bench.notebook_table({name!r})\nprint(rl.shapes.bench.format_notebook_table(table))"),
        ("code", f"RERUN = False  # True: recompute the table above on this machine ({rerun})\n"
                 f"if RERUN:\n    print(rl.shapes.bench.format_notebook_table(rl.shapes.bench.notebook_table({name!r}, rerun=True)))"),
        ("md", claim),
    ]


NOTEBOOKS: dict[str, list] = {}

NOTEBOOKS["00_quickstart"] = header(
    "00_quickstart", "00 · Quickstart: edit an object by naming it",
    "CPU, ShapesWorld: under a minute. Colab T4, real models: about 10 minutes the first time "
    "(5.5 GB of weights download once), then about 1–2 minutes per edit at B = 24.",
    "Referring Object Manipulation: give an image, a text that *refers* to an object (c_ref) and a "
    "*target* text (c_target); romlib finds the object (MDETR), repaints it with GLIDE under the "
    "paper's conditional classifier-free guidance (CCF), and ranks the samples with CLIP.",
    "the input with the edit mask in red, then the four best-ranked edits: the referred object repainted to match "
    "the target, everything outside the mask unchanged. On the CPU the backend is ShapesWorld (32×32 coloured "
    "shapes, tiny trained models shipped in the package); on a GPU with internet, the real models on a photo.") + [
    ("md", "## One edit\n\nThe example is chosen by a fixed rule (`rl.nb.chosen_case`: on ShapesWorld the first benchmark "
           "case whose target names colour and shape; with the real models the two cats of COCO #39769)."),
    ("code", "pipe = rl.nb.pipeline()            # loads the models once\n"
             "image, ref, target = rl.nb.chosen_case(pipe, 'both')\n"
             "print(f'ref: {ref!r} -> target: {target!r}; image {image.size[0]}x{image.size[1]}')"),
    ("code", "result = pipe.edit(image, ref, target, guidance='ccf', samples=8, progress=env.progress)\n"
             "rl.nb.show(result.grid())"),
    ("code", CHECK + "print('settings:', {k: result.settings[k] for k in ('guidance', 'scale', 'samples', 'dilation', 'rank')})\n"
             "n = result.keep_mask_base.shape[-1]  # 64 for GLIDE, 32 for ShapesWorld\n"
             "print(f'edited pixels at {n}x{n}:', int((1 - result.keep_mask_base).sum()))"),
    ("code", "print('scores (lower = closer to the target):', [round(s, 3) for s in result.scores])\n"
             "result.best.resize((4 * result.best.size[0], 4 * result.best.size[1]), 0)  # the top edit, 4x enlarged"),
    ("md", "## Your own image\n\n**Photos need the `glide` backend**: the real MDETR, GLIDE and CLIP (a GPU, and 5.5 GB of "
           "weights downloaded once — Colab: *Runtime → Change runtime type → T4 GPU*, then run all). There, upload a file "
           "(the folder icon on the left) and name the object with any words:\n\n"
           "```python\nresult = pipe.edit('my_photo.jpg', 'the red car', 'a blue truck', samples=8)\n```\n\n"
           "or from a terminal: `romlib edit my_photo.jpg --ref 'the red car' --target 'a blue truck' --out edits/`. "
           "An empty target removes the object (inpainting); `mask=` replaces segmentation with your own mask.\n\n"
           "**ShapesWorld understands only its own words** (the cell prints them): colours, shapes, and positions such as "
           "'the circle on the left'. A phrase with other words ('the red car') is refused with the list of known words. "
           "So on the CPU the cell below edits a generated scene saved as a file, exactly as it would edit your photo."),
    ("code", "import os, tempfile\n"
             "path, ref_own, target_own = 'my_photo.jpg', 'the red car', 'a blue truck'  # your file and words (real models)\n"
             "if env.backend == 'shapes':  # closed vocabulary: a generated scene, saved as a file, stands in for the photo\n"
             "    print('ShapesWorld vocabulary:', ' '.join(rl.shapes.VOCAB[1:]))\n"
             "    path, ref_own, target_own = os.path.join(tempfile.mkdtemp(), 'my_scene.png'), 'the yellow square', 'a blue triangle'\n"
             "    rl.shapes.make_scene(2).pil().save(path)\n"
             "if os.path.exists(path):\n"
             "    rl.nb.show(pipe.edit(path, ref_own, target_own, samples=4, progress=env.progress).grid())\n"
             "else:\n"
             "    print(f'upload {path!r} first (or change path), then run this cell again')"),
] + footer(
    "00_quickstart",
    "One call, `pipe.edit(image, ref, target)`, runs the whole method: segment the referred object, inpaint the mask "
    "under CCF guidance, rank the samples. Every knob of the paper's ablations is a keyword of that call.",
    ["Change `target` to a text that names only a colour (e.g. 'a green shape' on ShapesWorld). Predict: does the "
     "shape stay? Check with `rl.nb.explore(pipe, image, ref, 'a green shape')`.",
     "Set `samples=2` and then `samples=16`. Predict how the best score (lower = closer) moves; check "
     "`result.scores[0]`.",
     "Try `guidance='cf'` on the same image and seed. Predict whether the edit changes; compare the two grids."])

NOTEBOOKS["01_diffusion_and_guidance"] = header(
    "01_diffusion_and_guidance", "01 · Diffusion and guidance, from scratch",
    "CPU: about 1–2 minutes (the toy trains in about 20 seconds). Colab T4: about 3 minutes.",
    "The forward process, ε-prediction, respacing, classifier-free guidance (CF) and the paper's conditional "
    "classifier-free guidance (CCF) — first on a 2-D toy where every vector can be drawn, then inside the real "
    "inpainting model. One timestep convention throughout: t counts the 1000 training steps (t = 999 is pure noise).",
    "in ε-space, CCF's guided vector much longer than CF's (it adds s·(ε_target − ε_ref), and the two branches "
    "point apart); in the samples, CF at s = 3 still lands on the target blob while CCF at s = 3 overshoots far past "
    "it; in the inpainting model, the guidance difference smallest at pure noise (t = 999, where both texts predict "
    "almost the same ε) and about four times larger from t ≈ 500 on, concentrated on the object.") + [
    ("md", "## 1. The forward process\n\nq(x_t | x_0) = N(√ᾱ_t x_0, (1 − ᾱ_t) I), with ᾱ_t = Π_s (1 − β_s). "
           "GLIDE's base model uses the cosine schedule (`squaredcos_cap_v2`), its upsampler the linear one."),
    ("code", CHECK + "import numpy as np\n"
             "for name in ('squaredcos_cap_v2', 'linear'):\n"
             "    d = rl.diffusion.create_diffusion(1000, name, '1000')\n"
             "    print(name, 'alpha_bar at t = 0, 250, 500, 750, 999:', np.round(d.alphas_cumprod[[0, 250, 500, 750, 999]], 4))"),
    ("md", "## 2. Respacing\n\nSampling uses a subset of the 1000 steps; the kept steps get β = 1 − ᾱ_i/ᾱ_prev so the "
           "marginals stay the same. The base model samples 100 steps, the upsampler GLIDE's `fast27`, ShapesWorld 25."),
    ("code", CHECK + "for spec in ('100', 'fast27', 'ddim25', '25'):\n"
             "    kept = sorted(rl.diffusion.space_timesteps(1000, spec))\n"
             "    print(f'{spec:>9}: {len(kept):3d} steps, first {kept[:4]}, last {kept[-3:]}')"),
    ("md", "## 3. A toy that trains in seconds\n\nPoints from three labelled blobs. A small MLP learns "
           "ε_θ(x_t, t, c) with L_simple = E‖ε − ε_θ‖² (eq. 3); 20 % of the labels are dropped to ∅ so the same "
           "network also predicts ε_θ(x_t, t, ∅)."),
    ("code", "world = rl.toy.ToyWorld()\nmodel, losses = rl.toy.train_toy(world, steps=800, progress=env.progress)\n"
             "print(f'loss: first 100 steps {np.mean(losses[:100]):.3f}, last 100 steps {np.mean(losses[-100:]):.3f}')"),
    ("md", "## 4. Guidance: CF (eq. 6) and CCF (eq. 8)\n\n"
           "CF: ε̂ = ε(x|∅) + s·(ε(x|c_target) − ε(x|∅)).  CCF: ε̂ = ε(x|c_ref) + s·(ε(x|c_target) − ε(x|c_ref)).\n\n"
           "Both are the one line `rl.guidance.guided_eps(eps_cond, eps_base, s)`; they differ in the base branch. "
           "Question: at one x_t (t = 400 of 1000), how large are the two guided vectors, and where do they point? "
           "Left: ε-space, every vector −ε (the denoising direction) from the origin with its **true length**; the dotted "
           "segment is the s·(ε_target − ε_base) added to the base branch. Middle and right: the whole CF and CCF fields "
           "on **one common arrow scale**."),
    ("code", "fig, at_point = rl.toy.plot_guidance_field(model, world, ref='the red car', target='a blue truck', scale=3.0)\n"
             "rl.nb.show(fig)\n"
             "print({k: f'|eps| = {np.linalg.norm(v):.2f}, -eps = ({-v[0]:.2f}, {-v[1]:.2f})' for k, v in at_point.items()})"),
    ("md", "Question: where do the samples land? 400 samples per rule, all panels on the same axes (wide enough for "
           "the overshoot); ★ marks the mean."),
    ("code", "samples = {f'{rule} s={s}': rl.toy.toy_sample(model, world, 'a blue truck', base=base, scale=s, n=400)\n"
             "           for rule, base in (('CF', ''), ('CCF', 'the red car')) for s in (1, 3)}\n"
             "rl.nb.show(rl.toy.plot_samples(samples, world))\n"
             "print({k: [round(v, 2) for v in x.mean(0).tolist()] for k, x in samples.items()})"),
    ("md", "At s = 1 both rules are plain conditional sampling (ε̂ = ε(x|c_target)) and land on the target blob. At s = 3 "
           "CCF pushes *away from the referring text* as well as towards the target, so in the toy it overshoots far past "
           "the blob; CF only sharpens. In an image the original pixels and the forced known region keep CCF on the data, "
           "which is why the paper can use s = 15 — and why ShapesWorld's models use s = 3.\n\n"
           "## 5. Inside the inpainting model\n\nThe same rule inside the real (or ShapesWorld) inpainting model. "
           "Question: how large is the guidance direction over the steps? Each row shows, at one step, x_t, "
           "ε(x|c_target), the base branch (ε(x|c_ref) for CCF), their difference — the direction the scale multiplies "
           "— and the x̂_0 prediction; titles give t of 1000 (the 25 sampling steps are t = 999 … 0)."),
    ("code", "pipe = rl.nb.pipeline()\nimage, ref, target = rl.nb.chosen_case(pipe, 'both')\n"
             "trace = pipe.trace(image, ref, target, guidance='ccf', steps=25)\n"
             "rl.nb.scrubber(trace, labels=('ε(x|c_target)', 'ε(x|c_ref)'))"),
    ("code", "for row in rl.nb.trace_numbers(trace)[::6]:\n    print(row)"),
] + footer(
    "01_diffusion_and_guidance",
    "Guidance is one line, ε̂ = ε_base + s·(ε_target − ε_base). CF's base is ∅, CCF's is the referring text, so CCF's "
    "difference is what changes between the two texts — and it is larger, which the toy shows as overshoot.",
    ["In `plot_guidance_field`, change `t=400` to `t=900` and to `t=50`. Predict which guided vector grows; check the "
     "printed |ε| values.",
     "Sample CCF at s = 2 (`toy_sample(..., base='the red car', scale=2)`). Predict where its mean lands between "
     "s = 1 and s = 3; check with `plot_samples`.",
     "Write CCF yourself: `eps_hat = eps_ref + s * (eps_target - eps_ref)` with the tensors of `rl.toy.guidance_vectors`, "
     "and compare with its `'ccf'` entry."])

NOTEBOOKS["02_referring_masks"] = header(
    "02_referring_masks", "02 · Referring segmentation: from a phrase to a mask",
    "CPU, ShapesWorld: seconds. Colab T4, MDETR EfficientNet-B3: about 2 minutes with the download.",
    "MDETR (fine-tuned on PhraseCut) scores every object query against the phrase; the query with the highest "
    "1 − p(no-object) is kept and its mask is sigmoid > 0.5. The pipeline then resizes the mask logits to the "
    "model's resolution (64×64) and dilates them (notebook 03). **On the CPU the segmenter is ShapesWorld's, and it "
    "is rule-based, not MDETR**: it finds every coloured blob, scores each against the parsed phrase (1 = every "
    "named attribute matches) and returns the best, with the same outputs as MDETR (scores, boxes, the chosen mask).",
    "a scene with distractors: every candidate box with its score, the referred object's box highest (yellow); then "
    "the mask the diffusion model sees, at its own resolution, before and after dilation.") + [
    ("md", "## All candidates, and the chosen one\n\nThe example is chosen by a rule: the first benchmark case with three "
           "objects, one sharing the referred object's colour or shape (`rl.nb.chosen_case(pipe, 'distractors')`)."),
    ("code", "pipe = rl.nb.pipeline()\nimage, ref, target = rl.nb.chosen_case(pipe, 'distractors')\nseg = pipe.segment(image, ref)\n"
             "fig, rows = rl.viz.segmentation_figure(image, seg)\nrl.nb.show(fig)\n"
             "print(f'phrase {ref!r}')\nfor q, score, box in rows:\n    print(f'query {q:3d}  score {score:.3f}  box {box}')"),
    ("code", CHECK + "print('chosen box (x0, y0, x1, y1):', tuple(round(v) for v in seg.box))\n"
             "print('mask pixels:', int(seg.mask.sum()), 'of', seg.mask.numel())"),
    ("md", "## The mask the diffusion model sees\n\nThe authors resize the *logits* bilinearly to 64×64, then threshold, then "
           "dilate with a k×k all-ones kernel (k = 3). `pipe.prepare` does exactly that and returns GLIDE's keep mask "
           "(1 = keep; red here = 0 = edit). Question: how many pixels does dilation add at the model's resolution?"),
    ("code", "ps = {k: pipe.prepare(image, ref, dilation=k) for k in (1, 3)}\n"
             "panels, titles = [], []\nfor k, p in ps.items():\n"
             "    panels += [rl.viz.overlay_mask(p.image_base[0], 1 - p.keep_base), (1 - p.keep_base[0]).repeat(3, 1, 1) * 2 - 1]\n"
             "    titles += [f'model input, k = {k}', f'edit mask (white), k = {k}']\n"
             "rl.nb.show(rl.viz.image_row(panels, titles, size=2.6))"),
    ("code", CHECK + "for k, p in ps.items():\n    n = p.keep_base.shape[-1]  # the base model's resolution: 64 for GLIDE, 32 for ShapesWorld\n"
             "    print(f'k = {k}: edit pixels at {n}x{n} = {int((1 - p.keep_base).sum())}')\n"
             "print('ranking box in frame pixels:', tuple(round(v, 1) for v in ps[3].rank_box))"),
    ("md", "## Failure cases\n\nA phrase that matches nothing raises `NoObjectFound` with the best score and box — "
           "unless you ask for the best query anyway (what the authors' code always did), or give a mask yourself."),
    ("code", "phrase = rl.nb.missing_phrase(pipe, image)\ntry:\n    pipe.segment(image, phrase, min_score=0.5)\n"
             "except rl.contracts.NoObjectFound as e:\n    print(e)\n"
             "best = pipe.segment(image, phrase, best_anyway=True)\nprint('best anyway: score', round(best.score, 3))"),
    ("md", "## Measured over a fixed selection (ShapesWorld)\n\nQuestion: among distractors, does the segmenter pick the "
           "referred object, and by what margin? The first 24 distractor cases of `make_cases(seed=0)`; exact = the mask "
           "is the referred object's, pixel for pixel; margin = chosen score − best other score."),
    ("code", CHECK + "print(rl.shapes.bench.format_segmenter_table(rl.shapes.bench.segmenter_table(24)))"),
    ("md", "ShapesWorld's rule-based segmenter is exact on its own world by construction, so this table checks the "
           "plumbing (phrase → query → mask → model resolution), not MDETR's accuracy; MDETR's failure cases on photos "
           "are the ones above (no match, or a wrong best query)."),
] + footer(
    "02_referring_masks",
    "The mask is chosen by one score per query; the pipeline resizes it to the model's resolution and dilates it. "
    "What the diffusion model edits is that small mask, not the full-resolution one.",
    ["Refer to the same object by position only (e.g. 'the shape on the left' on ShapesWorld). Predict the scores of "
     "the other objects; check with `segmentation_figure`.",
     "Prepare with `dilation=7`. Predict the number of edit pixels at the model's resolution; check with "
     "`pipe.prepare(image, ref, dilation=7).keep_base`.",
     "Give a phrase naming two objects ('the red circle and the blue square'). Predict the error; read its message."])

NOTEBOOKS["03_ablation_dilation"] = header(
    "03_ablation_dilation", "03 · Ablation: mask dilation (paper Fig. 8)",
    "CPU, ShapesWorld: about a minute (the table is shipped). Colab T4, real models: about 12 minutes.",
    "A predicted mask that does not fully cover the object leaves boundaries from which the model completes the old "
    "object. Dilating the model-resolution mask by a k×k kernel trades leftover boundaries against over-coverage. "
    "Here the mask is deliberately eroded first, so the effect is visible.",
    "the masks grow with k (red); at k = 1 the old object's rim is left outside the mask, so the object cannot be "
    "removed and the model often completes the old object instead of the target; from k = 3 on the empty target "
    "leaves a background-like (blurred) fill and the target text is followed more and more often; larger k repaints "
    "more background.") + [
    ("md", "**The paper's Fig. 8 removes the object**: an *empty* target asks for the clean background. On ShapesWorld "
           "this uses a second shipped model, `removal` (`rl.nb.removal_pipeline`), trained with removal examples "
           "(`romlib shapes-train --p-remove 0.1 --p-partial 0.4`, 38 minutes on 2 cores): it removes the object in "
           "200 of 200 benchmark cases, where the default model, never taught that an empty caption means \"nothing "
           "here\", removes it in 19 % and redraws a shape otherwise. Why not make it the default: learning that "
           "∅ = background made CF's direction ε(x|c) − ε(x|∅) so large that CF breaks above s = 1 "
           "(`docs/shapesworld.md`). With the real models the same pipeline does both. The case's target text, drawn by "
           "the default model, shows the same trade-off when something new must be drawn. The example follows a rule: "
           "the first benchmark case whose target names colour and shape."),
    ("code", "pipe = rl.nb.pipeline()\nimage, ref, target = rl.nb.chosen_case(pipe, 'both')\n"
             "seg = pipe.segment(image, ref)\nk_erode = 3 if min(image.size) <= 64 else 9  # about 1/30 of the image\n"
             "under = rl.masks.erode(seg.mask.float(), k_erode) > 0  # an under-covering mask\n"
             "print(f'{ref!r} -> removed (empty target) and -> {target!r}; mask pixels: predicted', int(seg.mask.sum()), '-> eroded', int(under.sum()))"),
    ("md", "Question: what does each k leave uncovered, and what does it repaint? Top row: the mask each k gives (red = "
           "edit). Middle row: the best of 4 samples with the empty target (remove). Bottom row: the same with the target "
           "text under CCF. Same seeds everywhere."),
    ("code", "ks = (1, 3, 5, 7)\n"
             "remover = rl.nb.removal_pipeline(pipe)  # ShapesWorld: the model trained with removal examples\n"
             "removal = {k: remover.edit(image, ref, '', mask=under, dilation=k, samples=4, seed=0, progress=env.progress) for k in ks}\n"
             "results = {k: pipe.edit(image, ref, target, mask=under, dilation=k, samples=4, seed=0, progress=env.progress) for k in ks}\n"
             "rl.nb.show(rl.viz.image_row([rl.viz.overlay_mask(r.frame_input, r.edit_mask) for r in results.values()],\n"
             "                            [f'mask, k = {k}' for k in ks]))\n"
             "rl.nb.show(rl.viz.image_row([r.best for r in removal.values()], [f\"remove (''), k = {k}\" for k in ks]))\n"
             "rl.nb.show(rl.viz.image_row([r.best for r in results.values()], [f'{target!r}, k = {k}' for k in ks]))"),
    ("code", CHECK + "for k, r in results.items():\n    n = r.keep_mask_base.shape[-1]\n"
             "    print(f'k = {k}: edited pixels at {n}x{n} = {int((1 - r.keep_mask_base).sum())}')"),
] + table_cells(
    "dilation",
    "Question: does a larger k leave fewer boundary pixels, and at what cost? Per k: the object pixels left outside the "
    "mask (leftover), the background pixels inside it (over), then for the empty target how often the object is gone "
    "(`removed ('')`: no shape left in the region) or the old object came back whole, and for the target text how "
    "often it is reached, or the old object (colour and shape unchanged) won.",
    "**Claim, in numbers:** with the rim left (k = 1: 33 object pixels outside the mask) removal is impossible (0 %; "
    "the model completes the whole old object in 17 % of samples) and the target is reached in only 15 % (the old "
    "object wins 71 %); k = 3 leaves about 2 pixels and removes the object in 100 % (target 75 %), k = 5 leaves under "
    "one (target 96 %); from there nothing improves for removal while over-coverage keeps growing (37 → 80 background "
    "pixels repainted at k = 5 → 7) — the paper's trade-off, and why its kernel is small (k = 3 at 64×64) and the mask "
    "slightly larger than the object. What \"removed\" means here: no shape of 6 or more pixels is left (specks at a "
    "triangle's thin tips can survive k = 3, as in the figure, and are gone at k = 5); the fill is background-like but "
    "blurred (the whole hole against the clean background: 23.6 dB for the `removal` model, 11.5 dB for the default "
    "one that redraws a shape; 100 cases, k = 3) — a tiny model brings textures such as the checks back as a smudge.") + [
    ("md", "Try other kernels and seeds with the widget (it reruns `edit` on the predicted mask)."),
    ("code", "rl.nb.explore(pipe, image, ref, target, samples=4, dilation=3);"),
] + footer(
    "03_ablation_dilation",
    "Dilation is a trade: too small leaves the old object's rim, which the model completes; too large repaints "
    "background for nothing. The measured table puts numbers on both sides.",
    ["Erode the mask more (`k_erode = 5`). Predict which k is now the smallest that works; check with the widget "
     "(set dilation, run).",
     "Use the *predicted* mask (drop `mask=under`). Predict whether k = 1 still fails; check the best edit.",
     "Remove with the *default* model: `pipe.edit(image, ref, '', dilation=7)`. Predict (from the note above) what it "
     "draws instead of background; check, then compare with `remover`."])

NOTEBOOKS["04_ablation_guidance"] = header(
    "04_ablation_guidance", "04 · Ablation: guidance rules (paper Fig. 4 and 6)",
    "CPU, ShapesWorld: about a minute (the table is shipped). Colab T4, real models with the baselines: about 15 "
    "minutes (Blended Diffusion backpropagates through a 550 M-parameter UNet).",
    "The same image, mask and seeds under CLIP-guided GLIDE, CF, CCF and Blended Diffusion; then CCF's two changes "
    "taken one at a time: the guidance direction (c_ref instead of ∅) and the input (original instead of masked image). "
    "The example's target names **only the colour**, so there is something CCF should keep: the shape.",
    "every rule reaches the target colour at the same scale; the rules differ in whether the shape survives — and "
    "on ShapesWorld, unlike in the paper, the direction change (c_ref base) keeps it *less* often (tables below: 24 "
    "cases, then 400 with size and position) — even if, as in this example, CCF's four samples may all keep the circle while CF draws triangles: one "
    "case is an anecdote, the table is the evidence.") + [
    ("md", "## The rules side by side\n\nThe example follows a rule: the first benchmark case whose target names only the "
           "colour (`rl.nb.chosen_case(pipe, 'colour')`). Rows: the rules; columns: the input with its mask, then the best "
           "edits, same seeds."),
    ("code", "pipe = rl.nb.pipeline(baselines=(env.backend == 'glide'))\nimage, ref, target = rl.nb.chosen_case(pipe, 'colour')\n"
             "print(f'{ref!r} -> {target!r}')\nmissing = rl.nb.baselines_note(pipe)  # says so, visibly, when CLIP-guided / Blended are absent\n"
             "results, fig = pipe.compare(image, ref, target, guidances=('clip', 'cf', 'ccf', 'blended'), samples=4, progress=env.progress)\n"
             "rl.nb.show(fig)\nfor g, r in results.items():\n    print(g, 's =', r.settings['scale'], 'scores', [round(s, 3) for s in r.scores])"),
    ("md", "**On the CPU (ShapesWorld) the CLIP-guided and Blended rows are absent**: those baselines need GLIDE's noised "
           "CLIP and the 256×256 ADM UNet (2.8 GB, a GPU). To get them, open this notebook in Colab with a T4 GPU "
           "(*Runtime → Change runtime type*), run `romlib download --baselines` once (or just run all: it downloads), "
           "and the first cell loads them with `rl.nb.pipeline(baselines=True)`.\n\n"
           "## CCF's two changes, separately, at one scale\n\n| rule | base branch | model input |\n|---|---|---|\n"
           "| `cf` | ∅ | masked image |\n| `ccf-direction` | c_ref | masked image |\n| `cf-original` | ∅ | original image |\n"
           "| `ccf` | c_ref | original image |\n\nAll four at the same s (CCF's default on this backend), same mask and seeds. "
           "(The paper's scales, tuned for GLIDE: CCF 15, CF 5, CLIP-guided 2; ShapesWorld's best is s = 3 for CF and CCF.)"),
    ("code", "s = rl.guidance.METHODS['ccf'].scale(pipe.backend)\n"
             "results, fig = pipe.compare(image, ref, target, guidances=('cf', 'ccf-direction', 'cf-original', 'ccf'), samples=4,\n"
             "                            scale=s, progress=env.progress)\n"
             "rl.nb.show(fig)\nfor g, r in results.items():\n    print(f'{g:14s} s = {r.settings[\"scale\"]:g}  scores', [round(x, 3) for x in r.scores])"),
    ("code", CHECK + "for g, spec in rl.guidance.RULES.items():\n    print(f'{g:14s} base: {spec.base_text:5s}  input: {spec.inpaint_input}')"),
    ("md", "## Step by step: CF versus CCF\n\nThe difference ε(x|c_target) − ε(x|base) is what the scale multiplies. "
           "With CCF the base is the referring text, so the difference isolates *what changes* between the two texts. "
           "Question: which rule's difference is concentrated on the object? (first, middle and last step; t of 1000)"),
    ("code", "for rule, base in (('cf', 'ε(x|∅)'), ('ccf', 'ε(x|c_ref)')):\n"
             "    trace = pipe.trace(image, ref, target, guidance=rule, steps=25)\n"
             "    rl.nb.scrubber(trace, labels=('ε(x|c_target)', base), static_steps=3)\n"
             "    print(rule, rl.nb.trace_numbers(trace)[::12])"),
] + table_cells(
    "guidance",
    "Question: at equal scale, which rule reaches the target, and which keeps the attribute the target does not name? "
    "Success = every named attribute right; preservation = the unnamed attribute kept its value (the shape for "
    "'a red shape', the colour for 'a square'). `inpaint` = empty target, the floor.",
    "**Claim, in numbers — and a plain contradiction.** Every guided rule reaches the target at s = 3 (96–100 % "
    "against 23 % for plain inpainting). The paper credits CCF with keeping what the target does not name; on "
    "ShapesWorld the *original-image input* is the change that keeps it (`cf-original` 41.7 % against CF's 31.2 %), "
    "while the *direction* change preserves *less* (`ccf-direction` 18.8 %, CCF, which includes it, 27.1 %). With 48 "
    "samples the intervals overlap, so read the order, not the gaps; the 200-case benchmark of `docs/shapesworld.md` "
    "gives the same order at s = 3 (CF-original 41.9 %, CF 30.3 %, CCF 20.7 %, CCF-direction 11.6 %). Why: ε(x|c_target) − ε(x|c_ref) subtracts "
    "the referring text, which names the very attributes to keep ('the red circle' → 'a red shape' subtracts 'circle'), "
    "so at s = 3 guidance pushes the shape *away* from the original — the toy's overshoot of notebook 01 in a world too "
    "small to absorb it. The next table measures it on 400 cases, with size and position.") + table_cells(
    "keeps",
    "Question: the paper says CCF \"keeps the pose/shape\". What does an edit keep here — the object's size, its "
    "position, and the attribute it should keep — and does it matter whether the target *says* what should stay? "
    "Three kinds of target, by what they say about the original ('the red circle'): **restates** ('a red square': "
    "the colour is named and must stay), **leaves free** ('a square': the colour is not named; CCF's claimed "
    "property), **changes both** ('a blue square'). Size kept = the longer side of the object's box within 2 px; "
    "position kept = its centre within 2 px; *edited, all kept* = target reached and everything that should stay "
    "stayed. One sample per case over 400 cases (`romlib.shapes.keeps`).",
    "**Claim, in numbers.** *Size and position* are kept by every rule (95–100 % in every row): on ShapesWorld the "
    "mask fixes where and how big the new object can be, so the \"pose\" comes from the mask, not from the rule. When the "
    "target *restates* what should stay ('a red square'), every rule keeps it (attribute kept 98.9–100 %, edited with "
    "everything kept 97.7–100 %). When the target *leaves it free* ('a square'), no rule keeps it reliably, and the "
    "order is the guidance table's: CF-original 44.8 % [38, 52], CF 35.8 % [30, 43], CCF 23.4 % [18, 30], "
    "CCF-direction 14.9 % [11, 20] (201 cases each; CF and CCF-direction do not overlap). **This is where ShapesWorld "
    "contradicts the paper**, and why: the c_ref direction subtracts the referring text, which names exactly what "
    "should stay, and s = 3 amplifies that push; at s = 1, where nothing is amplified, CCF keeps the free attribute in "
    "55 % of samples (`docs/shapesworld.md`). *Can* a model keep it? Yes, if it is trained to read the original: "
    "with 90 % of the training examples showing a source object under the hole (`romlib shapes-train --p-source 0.9 "
    "--p-partial 0.4`, run E, 38 minutes, not shipped) the free attribute is kept by CF-original in 66.7 % [60, 73] "
    "and by CCF in 51.2 % [44, 58] — now above CF (35.3 %), as the paper says — at the price of target success (CCF "
    "87.0 % over the 400 cases, against 98.8 %); the direction change still lowers it (CCF below CF-original, "
    "CCF-direction 20.4 % below CF). What works with the shipped model: name what should stay — then every rule "
    "keeps it.",
    title="What an edit keeps: size, position, attributes (400 cases, ShapesWorld)",
    rerun="about 10 minutes on 2 CPU cores") + footer(
    "04_ablation_guidance",
    "The rules differ in one line (the base branch) and one input (original or masked image). Measured at equal scale, "
    "all reach the target; they differ in what they keep.",
    ["Change the scale of the four-rule comparison to `s = 1`. Predict which rules become identical (hint: the table in "
     "the cell after it); check with `pipe.compare`.",
     "Pick a shape-only target (`rl.nb.chosen_case(pipe, 'shape')`). Predict which rule keeps the colour; check with "
     "`rl.nb.explore(pipe, image, ref, target)` switching the guidance dropdown.",
     "Set `RERUN = True` and compare your numbers with the shipped ones: which differences are inside the intervals?"])

NOTEBOOKS["05_ablation_ranking"] = header(
    "05_ablation_ranking", "05 · Ablation: localized versus masked ranking (paper Fig. 7)",
    "CPU, ShapesWorld: under a minute (the table is shipped). Colab T4, real models: about 3 minutes.",
    "The same B samples, ranked two ways by the CLIP distance d = 2·arcsin(‖x̂ − ŷ‖/2)² between image and target "
    "text embeddings (lower = closer): the paper's *local* ranking crops the box enlarged ×1.3 (object plus context); "
    "Blended Diffusion's *masked* ranking scores the frame with everything outside the mask set to 0.",
    "the same samples in two orders. The two distances are computed on different CLIP inputs, so their values are on "
    "different scales: compare orders within a row, never numbers across rows. On ShapesWorld local ranking picks a "
    "correct sample slightly more often than masked ranking, within the noise of 24 cases (table).") + [
    ("md", "## One case, two rankings\n\nThe example follows a rule: the first benchmark case whose target names colour and "
           "shape; B = 8 samples under CCF at its default scale."),
    ("code", "pipe = rl.nb.pipeline()\nimage, ref, target = rl.nb.chosen_case(pipe, 'both')\n"
             "local = pipe.edit(image, ref, target, samples=8, rank='local', progress=env.progress)\nmasked = pipe.rerank(local, 'masked')"),
    ("code", "rl.nb.show(rl.viz.image_row(list(local.images[:4]), [f'local #{i + 1}\\nd_local = {s:.3f}' for i, s in enumerate(local.scores[:4])],\n"
             "                            suptitle='ranked by d_local (CLIP distance on the box ×1.3 crop)'))\n"
             "rl.nb.show(rl.viz.image_row(list(masked.images[:4]), [f'masked #{i + 1}\\nd_masked = {s:.3f}' for i, s in enumerate(masked.scores[:4])],\n"
             "                            suptitle='ranked by d_masked (CLIP distance on the masked frame): another scale'))\n"
             "print('local order :', local.order)\nprint('masked order:', masked.order)"),
    ("code", CHECK + "print('same samples:', sorted(local.order) == sorted(masked.order), '| B =', len(local.order))\n"
             "n = local.images.shape[-1]\n"
             "print('what CLIP sees: local = the box x1.3', tuple(round(v) for v in rl.masks.enlarge_box(local.rank_box, 1.3, n, n)),\n"
             "      f'of the {n}x{n} frame | masked = the frame with the outside set to 0')"),
    ("md", "Question: what exactly does CLIP see in each mode?"),
    ("code", "x = rl.rank.ranking_inputs(local.images[:1], 'local', box=local.rank_box)\n"
             "y = rl.rank.ranking_inputs(local.images[:1], 'masked', edit_mask=local.edit_mask[None, None])\n"
             "rl.nb.show(rl.viz.image_row([x[0] * 2 - 1, y[0] * 2 - 1], ['local input to CLIP', 'masked input to CLIP']))"),
] + table_cells(
    "ranking",
    "Question: how often is the top-ranked sample a success, ranking locally or masked, against taking the first sample "
    "unranked? CCF at s = 1 (so that some of the 8 samples miss the target and the ranking has something to choose).",
    "**Claim, in numbers — not demonstrated here.** The local ranking's top sample is right in 91.7 % of the 24 cases, "
    "the masked ranking's in 87.5 %, the same as taking the first sample unranked (87.5 %; the average sample: 89.1 %). "
    "The direction is the paper's (Fig. 7: local beats masked), but the intervals overlap almost entirely, so ShapesWorld "
    "does not show the effect: its objects are isolated on plain backgrounds, so the masked frame loses little of the "
    "context a local crop adds, and its tiny CLIP is a weak judge of near-misses. The paper's claim rests on real photos, "
    "where context matters (notebook 06 discusses what such small differences need).") + footer(
    "05_ablation_ranking",
    "Ranking picks one of B samples; local ranking looks at the object with its context, masked ranking only at the "
    "mask. The distances live on different scales; only the orders compare.",
    ["Rank with `rank='none'` (`pipe.rerank(local, 'none')`). Predict the order; check `.order`.",
     "Draw `samples=16` at `scale=1`. Predict whether local and masked now disagree on the top sample more often; check "
     "the two orders.",
     "With the widget (`rl.nb.explore(pipe, image, ref, target)`), switch the ranking dropdown. Predict whether the best "
     "image changes; check."])

NOTEBOOKS["06_user_study"] = header(
    "06_user_study", "06 · The user study (paper Table 1), its uncertainty, and your own",
    "CPU or Colab: about a minute; the in-class ranking takes as long as your class wants.",
    "60 users ranked 4 methods on 20 cases. We draw Table 1, attach confidence intervals (stating the assumption), "
    "check its internal consistency, and then run the same study in class with a blinded, randomised widget whose "
    "CSV goes through the very same code (`romlib.study`).",
    "CCF ('Ours') with the best average rank; its advantage over Blended *not* significant once cases share variance "
    "(the interval of 54.4 % crosses 50 %); Table 1 *not* quite adding up (one pair sums to 104 %); and a blinded "
    "ranking widget that shows outputs only under the labels A–D.") + [
    ("code", "table = rl.study.paper_table1()\nprint(rl.study.format_table(table, ci=False))"),
    ("md", "## Confidence intervals\n\nAssumption: 60 users × 20 cases = 1200 rankings. Treating them as independent gives "
           "the narrowest intervals; if cases share variance (intraclass correlation), the effective sample shrinks."),
    ("code", "print(rl.study.format_table(rl.study.table_ci(table)))\n"
             "print(rl.study.format_table(rl.study.table_ci(table, icc_case=0.1)))"),
    ("md", "Question: which differences survive shared case variance? Bars: average rank with intervals under both "
           "assumptions; matrix: P(row ranked better than column)."),
    ("code", "rl.nb.show(rl.study.plot_average_rank({'independent': rl.study.table_ci(table),\n"
             "                                      'icc_case = 0.1': rl.study.table_ci(table, icc_case=0.1)}))\n"
             "rl.nb.show(rl.study.plot_win_matrix(table))"),
    ("code", CHECK + "ci = rl.study.table_ci(table, icc_case=0.1).win_prob\n"
             "i, j = table.methods.index('Ours (CCF-guided)'), table.methods.index('Blended')\n"
             "lo, hi = 100 * ci.low[i, j], 100 * ci.high[i, j]\n"
             "print(f'Ours beats Blended: {100 * ci.value[i, j]:.1f} % [{lo:.1f}, {hi:.1f}] at icc_case = 0.1; '\n"
             "      f'crosses 50 %: {lo < 50 < hi}')"),
    ("md", "**Ours vs Blended is not established at icc_case = 0.1**: 54.4 % with the interval [47.0, 61.6] crosses 50 %. "
           "Independent rankings would make it significant, but the 60 users ranked the *same* 20 cases, so case-level "
           "variance does not average out with more users. Ours' advantage over the two GLIDE baselines survives."),
    ("md", "## Does Table 1 add up?\n\nWithout ties, P(i beats j) + P(j beats i) = 1, and the average rank of method i is "
           "1 + Σ_j P(j beats i) (one plus the number of methods expected to beat it). Question: does the published "
           "table satisfy both identities? (It does not quite: read the verdict.)"),
    ("code", CHECK + "print(rl.study.consistency_check(table))"),
    ("md", "## How many users would you need?\n\nSimulating rankings from strengths fitted to Table 1 shows how the "
           "interval of a win probability shrinks with the number of users."),
    ("code", "strengths = rl.study.fit_strengths(table.win_prob)\nrows = rl.study.ci_vs_users(strengths, n_users=(5, 10, 20, 60, 120))\n"
             "rl.nb.show(rl.study.plot_ci_vs_users(rows))\nfor r in rows:\n    print(r)"),
    ("md", "## Run the study in class\n\nEach student ranks the four anonymised outputs (labels A–D shuffled per case and "
           "per student) and saves a CSV; pool the CSVs and the same functions compute the table. The outputs are made "
           "first, in their own cell, and no comparison figure is displayed: the method names must never appear near "
           "the widget."),
    ("code", "pipe = rl.nb.pipeline()\nexamples = [rl.nb.chosen_case(pipe, kind) for kind in ('both', 'colour', 'shape')]\n"
             "cases = rl.study.session.cases_from_pipeline(pipe, examples, ('cf', 'ccf', 'ccf-direction', 'cf-original'),\n"
             "                                             samples=2, progress=env.progress)\n"
             "print(len(cases), 'cases ready')"),
    ("code", "session = rl.study.RankingSession(cases, user='student-1', seed=0)\nsession.show()"),
    ("code", "# after ranking: session.save_csv('ranks_student-1.csv'); then pool everybody's files:\n"
             "# table = rl.study.summarize(rl.study.load_csv(['ranks_student-1.csv', ...]))\n"
             "print(session.n_recorded, 'of', len(cases), 'cases ranked so far')"),
] + footer(
    "06_user_study",
    "Table 1 is nearly but not exactly consistent (CLIP-guided vs CF sums to 104 %, so three average ranks are off by "
    "up to 0.05); with intervals that admit shared case variance, Ours is ahead of the GLIDE baselines but not "
    "demonstrably ahead of Blended. The in-class widget produces the same table from your class.",
    ["Set `icc_case=0.2`. Predict which other differences stop being significant; check the printed table.",
     "Rank the three cases in the widget, save the CSV and summarise it. Predict your own ranking of CCF; check with "
     "`rl.study.summarize`.",
     "With `ci_vs_users`, predict how many users halve the 60-user interval; check the printed rows."])


def build(names=None) -> None:
    """Write every notebook, or only ``names`` (e.g. ``04_ablation_guidance``); written notebooks have no outputs
    until ``tools/refresh_notebooks.py`` runs them."""
    out = ROOT / "notebooks"
    out.mkdir(exist_ok=True)
    for name, cells in NOTEBOOKS.items():
        if names and name not in names:
            continue
        nb = nbformat.v4.new_notebook()
        nb.metadata = {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
                       "language_info": {"name": "python"}}
        nb.cells = [nbformat.v4.new_markdown_cell(src) if kind == "md" else nbformat.v4.new_code_cell(src)
                    for kind, src in cells]
        for i, c in enumerate(nb.cells):
            c["id"] = f"{name[:2]}-{i:02d}"  # stable ids: rebuilding gives the same file
        nbformat.write(nb, out / f"{name}.ipynb")
        print(f"wrote notebooks/{name}.ipynb ({len(cells)} cells)")


if __name__ == "__main__":
    import sys

    build(sys.argv[1:])
