"""Write notebooks/00…06 from the cell lists below (the notebooks' single source).

    python tools/build_notebooks.py && python tools/refresh_notebooks.py

Notebooks stay thin: markdown with the maths → a short call into romlib → a plot or a print.
Cells whose output nbval compares start with ``# NBVAL_CHECK_OUTPUT`` and print rounded numbers.
"""
from __future__ import annotations

from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
REPO = "romlib/romlib"  # GitHub owner/name for the Colab badges and the install cell
CHECK = "# NBVAL_CHECK_OUTPUT\n"


def badge(name: str) -> str:
    return (f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]"
            f"(https://colab.research.google.com/github/{REPO}/blob/main/notebooks/{name}.ipynb)")


INSTALL = f'''# Colab: install romlib (torch, timm, transformers, open_clip come with it or with Colab). Elsewhere: nothing to do.
import importlib.util, subprocess, sys
if "google.colab" in sys.modules and importlib.util.find_spec("romlib") is None:
    subprocess.check_call([sys.executable, "-m", "pip", "install", "-q", "romlib[notebooks] @ git+https://github.com/{REPO}"])'''

SETUP = '''import romlib as rl
env = rl.nb.setup()  # GPU + internet: the real models; offline or CPU: ShapesWorld (override: ROMLIB_BACKEND)'''


def header(name: str, title: str, times: str, what: str) -> list:
    return [("md", f"# {title}\n\n{badge(name)}\n\n{what}\n\n**Expected time** — {times}"),
            ("code", INSTALL), ("code", SETUP)]


NOTEBOOKS: dict[str, list] = {}

NOTEBOOKS["00_quickstart"] = header(
    "00_quickstart", "00 · Quickstart: edit an object by naming it",
    "CPU, ShapesWorld: under a minute. Colab T4, real models: about 10 minutes the first time "
    "(5.5 GB of weights download once), then about 1–2 minutes per edit at B = 24.",
    "Referring Object Manipulation: give an image, a text that *refers* to an object (c_ref) and a "
    "*target* text (c_target); romlib finds the object (MDETR), repaints it with GLIDE under the "
    "paper's conditional classifier-free guidance (CCF), and ranks the samples with CLIP.") + [
    ("code", "pipe = rl.nb.pipeline()            # loads the models once\n"
             "image, ref, target = rl.nb.example(pipe)\n"
             "print(f'ref: {ref!r} -> target: {target!r}; image {image.size[0]}x{image.size[1]}')"),
    ("code", "result = pipe.edit(image, ref, target, guidance='ccf', samples=8)\n"
             "result.grid();"),
    ("code", CHECK + "print('settings:', {k: result.settings[k] for k in ('guidance', 'scale', 'samples', 'dilation', 'rank')})\n"
             "n = result.keep_mask_base.shape[-1]  # 64 for GLIDE, 32 for ShapesWorld\n"
             "print(f'edited pixels at {n}x{n}:', int((1 - result.keep_mask_base).sum()))"),
    ("code", "print('scores (lower = closer to the target):', [round(s, 3) for s in result.scores])\n"
             "result.best  # the top edit at the input's own resolution"),
    ("md", "## Your own image\n\nUpload a file (Colab: the folder icon on the left) and name the object:\n\n"
           "```python\nresult = rl.edit('my_photo.jpg', 'the red car', 'a blue truck')\nresult.save('edits/')\n```\n\n"
           "or from a terminal: `romlib edit my_photo.jpg --ref 'the red car' --target 'a blue truck' --out edits/`. "
           "An empty target removes the object (inpainting); `mask=` replaces segmentation with your own mask."),
]

NOTEBOOKS["01_diffusion_and_guidance"] = header(
    "01_diffusion_and_guidance", "01 · Diffusion and guidance, from scratch",
    "CPU: about 1 minute (the toy trains in seconds). Colab T4: about 3 minutes.",
    "The forward process, ε-prediction, respacing, classifier guidance, classifier-free guidance (CF) and the "
    "paper's conditional classifier-free guidance (CCF) — first on a 2-D toy where every vector can be drawn, "
    "then inside the real inpainting model.") + [
    ("md", "## 1. The forward process\n\nq(x_t | x_0) = N(√ᾱ_t x_0, (1 − ᾱ_t) I), with ᾱ_t = Π_s (1 − β_s). "
           "GLIDE's base model uses the cosine schedule (`squaredcos_cap_v2`), its upsampler the linear one."),
    ("code", CHECK + "import numpy as np\n"
             "for name in ('squaredcos_cap_v2', 'linear'):\n"
             "    d = rl.diffusion.create_diffusion(1000, name, '1000')\n"
             "    print(name, 'alpha_bar at t = 0, 250, 500, 750, 999:', np.round(d.alphas_cumprod[[0, 250, 500, 750, 999]], 4))"),
    ("md", "## 2. Respacing\n\nSampling uses a subset of the 1000 steps; the kept steps get β = 1 − ᾱ_i/ᾱ_prev so the "
           "marginals stay the same. The base model samples 100 steps, the upsampler GLIDE's `fast27`."),
    ("code", CHECK + "for spec in ('100', 'fast27', 'ddim25', '10,10,10'):\n"
             "    kept = sorted(rl.diffusion.space_timesteps(1000, spec))\n"
             "    print(f'{spec:>9}: {len(kept):3d} steps, first {kept[:4]}, last {kept[-3:]}')"),
    ("md", "## 3. A toy that trains in seconds\n\nPoints from three labelled blobs. A small MLP learns "
           "ε_θ(x_t, t, c) with L_simple = E‖ε − ε_θ‖² (eq. 3); 20 % of the labels are dropped to ∅ so the same "
           "network also predicts ε_θ(x_t, t, ∅)."),
    ("code", "world = rl.toy.ToyWorld()\nmodel, losses = rl.toy.train_toy(world, steps=1500)\n"
             "print(f'loss: first 100 steps {np.mean(losses[:100]):.3f}, last 100 steps {np.mean(losses[-100:]):.3f}')"),
    ("md", "## 4. Guidance: CF (eq. 6) and CCF (eq. 8)\n\n"
           "CF: ε̂ = ε(x|∅) + s·(ε(x|c_target) − ε(x|∅)).  CCF: ε̂ = ε(x|c_ref) + s·(ε(x|c_target) − ε(x|c_ref)).\n\n"
           "Both are the one line `rl.guidance.guided_eps(eps_cond, eps_base, s)`; they differ in the base branch. "
           "The figure is the paper's Fig. 3 made real: at one x_t, the noise predictions and the two guided directions "
           "(arrows point along −ε, the denoising direction), and the whole CF and CCF fields."),
    ("code", "fig, at_point = rl.toy.plot_guidance_field(model, world, ref='the red car', target='a blue truck', scale=3.0)\n"
             "print({k: [round(v, 2) for v in vec] for k, vec in at_point.items()})"),
    ("code", "samples = {f'{rule} s={s}': rl.toy.toy_sample(model, world, 'a blue truck', base=base, scale=s, n=400)\n"
             "           for rule, base in (('CF', ''), ('CCF', 'the red car')) for s in (1, 3)}\n"
             "rl.toy.plot_samples(samples, world)\n"
             "print({k: [round(v, 2) for v in x.mean(0).tolist()] for k, x in samples.items()})"),
    ("md", "CCF pushes *away from the referring text* as well as towards the target: with a large s it overshoots "
           "in the toy, while in an image the original pixels and the known region keep it on the manifold.\n\n"
           "## 5. Inside the inpainting model\n\nThe same rule inside the real (or ShapesWorld) inpainting model. "
           "The scrubber shows, at each step, x_t, ε(x|c_target), the base branch (ε(x|∅) for CF, ε(x|c_ref) for CCF), "
           "their difference — the direction the scale multiplies — and the x̂_0 prediction."),
    ("code", "pipe = rl.nb.pipeline()\nimage, ref, target = rl.nb.example(pipe)\n"
             "trace = pipe.trace(image, ref, target, guidance='ccf', steps=25)\n"
             "rl.nb.scrubber(trace, labels=('ε(x|c_target)', 'ε(x|c_ref)'))"),
    ("code", "for row in rl.nb.trace_numbers(trace)[::6]:\n    print(row)"),
]

NOTEBOOKS["02_referring_masks"] = header(
    "02_referring_masks", "02 · Referring segmentation: from a phrase to a mask",
    "CPU, ShapesWorld: seconds. Colab T4, MDETR EfficientNet-B3: about 2 minutes with the download.",
    "MDETR (fine-tuned on PhraseCut) scores every object query against the phrase; the query with the highest "
    "1 − p(no-object) is kept and its mask is sigmoid > 0.5. The pipeline then resizes the mask logits to "
    "64×64 and dilates them (notebook 03).") + [
    ("code", "pipe = rl.nb.pipeline()\nimage, ref, target = rl.nb.example(pipe)\nseg = pipe.segment(image, ref)\n"
             "fig, rows = rl.viz.segmentation_figure(image, seg)\nfor q, score, box in rows:\n    print(f'query {q:3d}  score {score:.3f}  box {box}')"),
    ("code", CHECK + "print('chosen box (x0, y0, x1, y1):', tuple(round(v) for v in seg.box))\n"
             "print('mask pixels:', int(seg.mask.sum()), 'of', seg.mask.numel())"),
    ("md", "## The 64×64 mask GLIDE sees\n\nThe authors resize the *logits* bilinearly to 64×64, then threshold, then dilate "
           "with a k×k all-ones kernel (k = 3). `pipe.prepare` does exactly that and returns GLIDE's keep mask (1 = keep)."),
    ("code", CHECK + "p = pipe.prepare(image, ref, dilation=3)\n"
             "n = p.keep_base.shape[-1]  # the base model's resolution: 64 for GLIDE, 32 for ShapesWorld\n"
             "print(f'edit pixels at {n}x{n} after dilation k=3:', int((1 - p.keep_base).sum()))\n"
             "print('ranking box in frame pixels:', tuple(round(v, 1) for v in p.rank_box))"),
    ("md", "## Failure cases\n\nA phrase that matches nothing raises `NoObjectFound` with the best score and box — "
           "unless you ask for the best query anyway (what the authors' code always did), or give a mask yourself."),
    ("code", "phrase = rl.nb.missing_phrase(pipe, image)\ntry:\n    pipe.segment(image, phrase, min_score=0.5)\n"
             "except rl.contracts.NoObjectFound as e:\n    print(e)\n"
             "best = pipe.segment(image, phrase, best_anyway=True)\nprint('best anyway: score', round(best.score, 3))"),
]

NOTEBOOKS["03_ablation_dilation"] = header(
    "03_ablation_dilation", "03 · Ablation: mask dilation (paper Fig. 8)",
    "CPU, ShapesWorld: about 2 minutes. Colab T4, real models: about 6 minutes.",
    "A predicted mask that does not fully cover the object leaves boundaries from which the model completes the old "
    "object. Dilating the 64×64 mask by a k×k kernel trades leftover boundaries against over-coverage. Here the "
    "mask is deliberately eroded first, so the effect is visible; the target is empty (pure inpainting), as in Fig. 8.") + [
    ("code", "pipe = rl.nb.pipeline()\nimage, ref, target = rl.nb.example(pipe)\n"
             "seg = pipe.segment(image, ref)\nk_erode = 3 if min(image.size) <= 64 else 9  # about 1/30 of the image\n"
             "under = rl.masks.erode(seg.mask.float(), k_erode) > 0  # an under-covering mask\n"
             "print('mask pixels: predicted', int(seg.mask.sum()), '-> eroded', int(under.sum()))"),
    ("code", "results = {k: pipe.edit(image, ref, '', mask=under, dilation=k, samples=4, seed=0, progress=False) for k in (1, 3, 5, 7)}\n"
             "rl.viz.image_row([r.best for r in results.values()], [f'k = {k}' for k in results]);"),
    ("code", CHECK + "for k, r in results.items():\n    n = r.keep_mask_base.shape[-1]\n    print(f'k = {k}: edited pixels at {n}x{n} = {int((1 - r.keep_mask_base).sum())}')"),
    ("md", "Try other kernels and seeds with the widget (it reruns `edit`)."),
    ("code", "rl.nb.explore(pipe, image, ref, target, samples=4, dilation=3);"),
]

NOTEBOOKS["04_ablation_guidance"] = header(
    "04_ablation_guidance", "04 · Ablation: guidance rules (paper Fig. 4 and 6)",
    "CPU, ShapesWorld: about 3 minutes. Colab T4, real models with the baselines: about 15 minutes "
    "(Blended Diffusion backpropagates through a 550 M-parameter UNet).",
    "The same image, mask and seeds under CLIP-guided GLIDE, CF, CCF and Blended Diffusion; then CCF's two changes "
    "taken one at a time: the guidance direction (c_ref instead of ∅) and the input (original instead of masked image).") + [
    ("code", "pipe = rl.nb.pipeline(baselines=(env.backend == 'glide'))\nimage, ref, target = rl.nb.example(pipe)\n"
             "results, fig = pipe.compare(image, ref, target, guidances=('clip', 'cf', 'ccf', 'blended'), samples=4)\n"
             "for g, r in results.items():\n    print(g, 's =', r.settings['scale'], 'scores', [round(s, 3) for s in r.scores])"),
    ("md", "## CCF's two changes, separately\n\n| rule | base branch | model input |\n|---|---|---|\n"
           "| `cf` | ∅ | masked image |\n| `ccf-direction` | c_ref | masked image |\n| `cf-original` | ∅ | original image |\n"
           "| `ccf` | c_ref | original image |"),
    ("code", "results, fig = pipe.compare(image, ref, target, guidances=('cf', 'ccf-direction', 'cf-original', 'ccf'), samples=4)"),
    ("code", CHECK + "for g, spec in rl.guidance.RULES.items():\n    print(f'{g:14s} base: {spec.base_text:5s}  input: {spec.inpaint_input}')\n"
             "print('paper scales:', {g: rl.guidance.DEFAULT_SCALE[g] for g in ('cf', 'ccf', 'clip')})\n"
             "print('this backend:', {g: pipe.backend.scale(g) for g in ('cf', 'ccf', 'clip')})"),
    ("md", "## Step by step: CF versus CCF\n\nThe difference ε(x|c_target) − ε(x|base) is what the scale multiplies. "
           "With CCF the base is the referring text, so the difference isolates *what changes* between the two texts."),
    ("code", "for rule, base in (('cf', 'ε(x|∅)'), ('ccf', 'ε(x|c_ref)')):\n"
             "    trace = pipe.trace(image, ref, target, guidance=rule, steps=25)\n"
             "    rl.nb.scrubber(trace, labels=('ε(x|c_target)', base), static_steps=3)\n"
             "    print(rule, rl.nb.trace_numbers(trace)[::8])"),
    ("md", "## Measured, not just shown (ShapesWorld)\n\nIn ShapesWorld an exact oracle reads the colour and shape of the "
           "edited region, so the comparison becomes numbers: target success, preservation of what the target does not "
           "name, background PSNR and seam error (`romlib shapes-bench`; full results in `docs/shapesworld.md`)."),
    ("code", "if env.backend == 'shapes':\n"
             "    bench = rl.shapes.bench.run_benchmark(n_cases=20, methods=('cf', 'ccf'), scales=(3.0,), samples=4, progress=False)\n"
             "    print(rl.shapes.bench.format_table(bench))"),
]

NOTEBOOKS["05_ablation_ranking"] = header(
    "05_ablation_ranking", "05 · Ablation: localized versus masked ranking (paper Fig. 7)",
    "CPU, ShapesWorld: about a minute. Colab T4, real models: about 3 minutes.",
    "The same B samples, ranked two ways by CLIP distance d = 2·arcsin(‖x̂ − ŷ‖/2)² to the target: the paper's "
    "*local* ranking crops the box enlarged ×1.3 (object plus context); Blended Diffusion's *masked* ranking scores "
    "only the masked region.") + [
    ("code", "pipe = rl.nb.pipeline()\nimage, ref, target = rl.nb.example(pipe)\n"
             "local = pipe.edit(image, ref, target, samples=8, rank='local')\nmasked = pipe.rerank(local, 'masked')"),
    ("code", "rl.viz.image_row(list(local.images[:4]), [f'local #{i + 1}: d={s:.3f}' for i, s in enumerate(local.scores[:4])])\n"
             "rl.viz.image_row(list(masked.images[:4]), [f'masked #{i + 1}: d={s:.3f}' for i, s in enumerate(masked.scores[:4])])\n"
             "print('local order :', local.order)\nprint('masked order:', masked.order)"),
    ("code", CHECK + "print('same samples:', sorted(local.order) == sorted(masked.order), '| B =', len(local.order))\n"
             "n = local.images.shape[-1]\n"
             "print('what CLIP sees: local = the box x1.3', tuple(round(v) for v in rl.masks.enlarge_box(local.rank_box, 1.3, n, n)),\n"
             "      f'of the {n}x{n} frame | masked = the frame with the outside set to 0')"),
    ("code", "x = rl.rank.ranking_inputs(local.images[:1], 'local', box=local.rank_box)\n"
             "y = rl.rank.ranking_inputs(local.images[:1], 'masked', edit_mask=local.edit_mask[None, None])\n"
             "rl.viz.image_row([x[0] * 2 - 1, y[0] * 2 - 1], ['local input to CLIP', 'masked input to CLIP']);"),
]

NOTEBOOKS["06_user_study"] = header(
    "06_user_study", "06 · The user study (paper Table 1), its uncertainty, and your own",
    "CPU or Colab: about a minute; the in-class ranking takes as long as your class wants.",
    "60 users ranked 4 methods on 20 cases. We draw Table 1, attach confidence intervals (stating the assumption), "
    "check its internal consistency, and then run the same study in class with a blinded, randomised widget whose "
    "CSV goes through the very same code (`romlib.study`).") + [
    ("code", "table = rl.study.paper_table1()\nprint(rl.study.format_table(table, ci=False))"),
    ("md", "## Confidence intervals\n\nAssumption: 60 users × 20 cases = 1200 rankings. Treating them as independent gives "
           "the narrowest intervals; if cases share variance (intraclass correlation), the effective sample shrinks."),
    ("code", "print(rl.study.format_table(rl.study.table_ci(table)))\n"
             "print(rl.study.format_table(rl.study.table_ci(table, icc_case=0.1)))"),
    ("code", "rl.study.plot_average_rank({'independent': rl.study.table_ci(table), 'icc_case = 0.1': rl.study.table_ci(table, icc_case=0.1)})\n"
             "rl.study.plot_win_matrix(table);"),
    ("md", "## Does Table 1 add up?\n\nWithout ties, P(i beats j) + P(j beats i) = 1, and the average rank of method i is "
           "1 + Σ_j P(j beats i) (one plus the number of methods expected to beat it)."),
    ("code", CHECK + "print(rl.study.consistency_check(table))"),
    ("md", "## How many users would you need?\n\nSimulating rankings from strengths fitted to Table 1 shows how the "
           "interval of a win probability shrinks with the number of users."),
    ("code", "strengths = rl.study.fit_strengths(table.win_prob)\nrows = rl.study.ci_vs_users(strengths, n_users=(5, 10, 20, 60, 120))\n"
             "rl.study.plot_ci_vs_users(rows)\nfor r in rows:\n    print(r)"),
    ("md", "## Run the study in class\n\nEach student ranks the four anonymised outputs (labels A–D shuffled per case and "
           "per student) and saves a CSV; pool the CSVs and the same functions compute the table."),
    ("code", "pipe = rl.nb.pipeline()\ncases = []\nfor i in range(3):\n    image, ref, target = rl.nb.example(pipe, i)\n"
             "    res, _ = pipe.compare(image, ref, target, guidances=('cf', 'ccf', 'ccf-direction', 'cf-original'), samples=2, progress=False)\n"
             "    cases.append({'id': f'case{i}', 'image': image, 'target': target, 'outputs': {g: r.best for g, r in res.items()}})\n"
             "session = rl.study.RankingSession(cases, user='student-1', seed=0)\nsession.show()"),
    ("code", "# after ranking: session.save_csv('ranks_student-1.csv'); then pool everybody's files:\n"
             "# table = rl.study.summarize(rl.study.load_csv(['ranks_student-1.csv', ...]))\n"
             "print(session.n_recorded, 'of', len(cases), 'cases ranked so far')"),
]


def build() -> None:
    out = ROOT / "notebooks"
    out.mkdir(exist_ok=True)
    for name, cells in NOTEBOOKS.items():
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
    build()
