"""Write notebooks/07_latent_model.ipynb (its single source), with the helpers of ``build_notebooks.py``.

    python tools/build_notebook_07.py && python tools/refresh_notebooks.py notebooks/07_latent_model.ipynb

Kept apart from ``build_notebooks.py`` (notebooks 00–06) so the two can change independently.
"""
from __future__ import annotations

import sys
from pathlib import Path

import nbformat

sys.path.insert(0, str(Path(__file__).resolve().parent))
import build_notebooks as bn  # noqa: E402

NAME = "07_latent_model"
bn.NEXT.setdefault(NAME, ("00_quickstart", "back to the start: edit your own image"))
CHECK = bn.CHECK

CELLS = bn.header(
    NAME, "07 · The paper's guidance on a latent model",
    "offline (CPU): under a minute, mostly imports; on a GPU with Stable Diffusion 1.5 inpainting: a 3.3 GB download "
    "once, then about 20–25 s per rule for B = 4 (T4, estimated)",
    "The paper says any inpainting diffusion model with a mask input can replace GLIDE. Here CCF runs on **Stable "
    "Diffusion 1.5 inpainting** (diffusers' UNet, VAE and schedulers under romlib's own loop).\n\n"
    "**Objectives.** (1) Say what a latent model denoises and what its UNet sees. (2) Recognise diffusers' "
    "*negative prompt* as CCF's base branch, in the equation and in the code. (3) Compare CF, CCF and CCF's two "
    "changes on one photo, mask and seeds, with CLIPSeg and MDETR masks.\n\n"
    "**Prerequisites.** Notebook 01 (classifier-free guidance) and 04 (CCF's two changes).",
    "romlib's loop and diffusers' pipeline give the same latents (difference 0 here) for CF and for CCF written as "
    "a negative prompt; on a GPU, the four rules side by side on the two cats; offline, the same comparison on "
    "ShapesWorld.",
) + [
    ("md", "## Pixel versus latent diffusion\n\n"
           "GLIDE denoises **pixels**: a 64×64×3 image, then an upsampler to 256. Stable Diffusion denoises "
           "**latents**: a VAE encodes the 512×512 frame into 4×64×64 numbers (48 times fewer), the UNet denoises "
           "those, and the VAE decodes the result. Its inpainting UNet reads 9 channels: z_t, the mask at 64×64 "
           "(1 = edit) and the VAE latents of the image it is shown.\n\n"
           "`LATENT` is `'sd'` on a GPU with the files, else `'tiny-sd'`: random tiny models of the same classes, "
           "enough for the mechanics (not for pictures)."),
    ("code", "LATENT = rl.latent.latent_backend()  # 'sd' on a GPU with the files; else 'tiny-sd' (offline, random)\n"
             "lat = rl.nb.pipeline(LATENT)  # loaded once per kernel\n"
             "print('backend:', LATENT)"),
    ("code", CHECK + "for k, v in rl.latent.anatomy(lat.backend.base_model).items():\n    print(f'{k:24s} {v}')"),
    ("md", "## The negative prompt is CCF's base branch\n\n"
           "Eq. 8 on a latent model, with E(x) the VAE latents of the image the UNet sees:\n\n"
           "$$\\hat\\epsilon = \\epsilon(z_t \\mid c_{ref}, E(x)) + s\\,\\big(\\epsilon(z_t \\mid c_{target}, E(x)) - "
           "\\epsilon(z_t \\mid c_{ref}, E(x))\\big)$$\n\n"
           "diffusers computes `noise_pred_uncond` from the **negative prompt** (∅ when none is given). So "
           "`negative_prompt = c_ref` is CCF's direction, and `masked_image_latents = E(original)` is CCF's second "
           "change (the original image instead of the masked one). romlib's line is the same `guided_eps` as on "
           "GLIDE:"),
    ("code", "print(rl.latent.guidance_lines())"),
    ("md", "Question: does romlib's own loop give what diffusers' `StableDiffusionInpaintPipeline` gives, on the same "
           "model, seeds, scheduler (DDIM, 6 steps) and scale? CF against the plain pipeline; CCF against the pipeline "
           "with `negative_prompt=ref` and `masked_image_latents` of the original image (tiny random models: the "
           "same code as the real ones)."),
    ("code", "tiny = rl.sd.tiny_inpainter()\n"
             "checks = {rule: rl.latent.conformance(tiny, rule=rule, scale=s) for rule, s in (('cf', 7.5), ('ccf', 15.0))}\n"
             "for rule, d in checks.items():\n"
             "    print(f\"{rule}: max |romlib - diffusers| = {d['max_abs_diff']:.1e} on latents up to {d['max_abs']:.1f}\")"),
    ("code", CHECK + "for rule, d in checks.items():\n"
                     "    print(rule, 'equal within fp32 rounding:', d['max_abs_diff'] <= 1e-5 * d['max_abs'])"),
    ("md", "## CF, CCF and the one-change ablations, same photo, mask and seeds\n\n"
           "Question: with the mask and seeds fixed, what does each change do? On a GPU: the two cats (COCO "
           "#39769), 'the cat on the left' → 'a golden retriever', every rule at s = 7.5, masks from CLIPSeg and "
           "from MDETR. Offline: the same four rules on ShapesWorld's pixel model (notebook 04's case: the target "
           "names only the colour, so there is a shape to keep)."),
    ("code", "pipe, (image, ref, target), s, segmenters = rl.latent.comparison_setup(LATENT)\n"
             "for seg in segmenters:  # GPU: CLIPSeg's mask, then MDETR's; offline: ShapesWorld's own segmenter\n"
             "    results, fig = pipe.compare(image, ref, target, guidances=rl.latent.RULES4, samples=4, scale=s,\n"
             "                                segmenter=seg, progress=env.progress)\n"
             "    rl.nb.show(fig)\n"
             "    print(f'{pipe.backend.name} ({seg or \"own\"} mask): {ref!r} -> {target!r}, s = {s:g}')\n"
             "    for g, r in results.items():\n"
             "        print(f'{g:14s} scores', [round(x, 3) for x in r.scores])\n"
             "    if env.gpu:\n"
             "        print('\\n'.join(rl.latent.gpu_numbers(results)))  # measured on this GPU"),
    ("md", "## Time and memory\n\n"
           "On a GPU the cell above printed the measured time and peak memory. For a T4 (Colab's free GPU) romlib "
           "states an estimate; nobody has measured it yet:"),
    ("code", "print(rl.latent.T4_ESTIMATE)"),
    ("md", "**What the GPU path adds.** Offline you saw the mechanics (the same rule, the same loop as diffusers, "
           "bit for bit) and the effect of the two changes on a model trained for this notebook. The GPU path adds "
           "what a student actually edits: real photos at 512×512, pasted back at the photo's resolution, two "
           "referring segmenters to compare, and the visual answer to whether CCF's original-image input keeps the "
           "cat's pose on a model the paper never tried. Stable Diffusion's licence (CreativeML OpenRAIL-M) must be "
           "accepted before `romlib download --sd`."),
    ("md", "## Exercise 1: what does the scale multiply?\n\n"
           "Predict, then run. At s = 1, ε̂ = ε(z_t | c_target): the base branch drops out. Which of the four "
           "rules then give the same samples on the same seeds? Write your guess as pairs, then run the cell."),
    ("code", "my_guess = []  # e.g. [('cf', 'ccf')]: pairs of rl.latent.RULES4 you expect to coincide at s = 1\n"
             "same = rl.latent.coincide_at_scale(lat.backend.base_model, scale=1.0)\n"
             "print('coinciding at s = 1:', same)\n"
             "print('your guess:', 'right' if {frozenset(p) for p in my_guess} == {frozenset(p) for p in same} "
             "else 'not quite: which input does each rule show the UNet?')"),
]
CELLS += bn.footer(NAME, "CCF needs no particular model: on Stable Diffusion inpainting it is the negative prompt set "
                         "to the referring text plus the original image's latents, one `guided_eps` line in romlib's "
                         "loop, equal to diffusers' pipeline. CLIP-guided GLIDE and Blended Diffusion do not run on a "
                         "latent model, and the registry says so.", [
    "Exercise 1 above (predict, then run).",
    "Write CCF with diffusers yourself: `StableDiffusionInpaintPipeline(...)(prompt=target, negative_prompt=ref, "
    "masked_image_latents=...)`. Predict the difference to romlib's `ccf`, then check with "
    "`rl.latent.conformance(tiny, rule='ccf')` (read its source for the posterior draw).",
    "On a GPU: predict which segmenter gives the larger mask for 'the remote control on the left', then compare "
    "`lat.segment(image, ref, segmenter='clipseg').mask.sum()` with `segmenter='mdetr'`.",
])


def build() -> None:
    nb = nbformat.v4.new_notebook()
    nb.metadata = {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
                   "language_info": {"name": "python"}}
    nb.cells = [nbformat.v4.new_markdown_cell(src) if kind == "md" else nbformat.v4.new_code_cell(src)
                for kind, src in CELLS]
    for i, c in enumerate(nb.cells):
        c["id"] = f"{NAME[:2]}-{i:02d}"
    nbformat.write(nb, bn.ROOT / "notebooks" / f"{NAME}.ipynb")
    print(f"wrote notebooks/{NAME}.ipynb ({len(CELLS)} cells)")


if __name__ == "__main__":
    build()
