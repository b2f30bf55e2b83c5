"""The networks, written by romlib and checkpoint-compatible with the official files (``strict=True``).

* :mod:`~romlib.models.glide` — GLIDE's text-conditional inpainting UNets (base 64×64, upsampler 64→256);
* :mod:`~romlib.models.mdetr` — MDETR (EfficientNet-B3 + RoBERTa + DETR, PhraseCut mask head);
* :mod:`~romlib.models.noised_clip` — GLIDE's noised CLIP (CLIP-guided baseline);
* :mod:`~romlib.models.adm` — the 256×256 unconditional ADM (Blended Diffusion baseline);
* :mod:`~romlib.models.tokenizers` — GLIDE's GPT-2 BPE tokenizer and a byte tokenizer;
* :mod:`~romlib.models.tiny` — tiny random-weight versions of all of them (tests, CPU benchmarks).
"""
