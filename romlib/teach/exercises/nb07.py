"""Notebook 07's exercises: CCF on a latent inpainting model — the negative prompt as the base branch (eq. 8),
and the 9 channels Stable Diffusion's inpainting UNet reads.

Both are checked against romlib's own latent loop (:mod:`romlib.sampling.latent`): ``prepare_latent`` (which
image and mask each rule shows) and ``GuidedLatentModel`` (the UNet input and the guided ε̂), on stand-in
models with diffusers' signatures that answer differently for every text, channel and image.
"""
from __future__ import annotations

import zlib
from types import SimpleNamespace

import torch

from ...guidance.cfg import RULES
from ...sampling.latent import GuidedLatentModel, prepare_latent
from .core import Exercise, Mistake, fresh_seed

# ----------------------------------------------------------------------------------------------
# stand-ins with diffusers' signatures
# ----------------------------------------------------------------------------------------------

_L, _D = 3, 8  # the stand-in text encoder's sequence length and width


def toy_encode_text(texts: list[str]) -> torch.Tensor:
    """A fixed stand-in for ``LatentInpainter.encode_text``: a list of texts → [n, L, D] states, different for
    every text (the empty text ∅ included)."""
    if not isinstance(texts, (list, tuple)) or not all(isinstance(s, str) for s in texts):
        raise TypeError(f"encode_text takes a list of texts (str), e.g. [negative_prompt, target]; got {texts!r}")
    rows = [torch.randn(_L, _D, generator=torch.Generator().manual_seed(zlib.crc32(s.encode()))) for s in texts]
    return torch.stack(rows)


def toy_unet(sample: torch.Tensor, timestep, encoder_hidden_states: torch.Tensor | None = None,
             return_dict: bool = True):
    """A fixed stand-in for diffusers' 9-channel inpainting ``UNet2DConditionModel``: ε [B, 4, h, w] from
    ``sample`` [B, 9, h, w] = cat([z_t, mask, image latents]) and one row of text states per sample row.
    Every channel group and every text changes the answer, so the check can tell what went where."""
    if sample.dim() != 4 or sample.shape[1] != 9:
        raise ValueError(f"the inpainting UNet takes [B, 9, h, w] (z_t, mask, image latents); got {tuple(sample.shape)}")
    if encoder_hidden_states is None or encoder_hidden_states.shape[0] != sample.shape[0]:
        got = None if encoder_hidden_states is None else tuple(encoder_hidden_states.shape)
        raise ValueError(f"encoder_hidden_states needs one row per sample row ({sample.shape[0]}); got {got}")
    t = float(timestep)
    text = encoder_hidden_states.float().mean(1)[:, :4, None, None]
    w = torch.linspace(0.2, 0.8, 4).view(1, 4, 1, 1)
    eps = torch.tanh(sample[:, :4] * (1 + t / 1000) + 0.5 * sample[:, 4:5] + w * sample[:, 5:9].flip(1) + text)
    return (eps,) if not return_dict else SimpleNamespace(sample=eps)


def toy_vae_encode(image: torch.Tensor) -> torch.Tensor:
    """A fixed stand-in for the VAE encoder: [1, 3, S, S] in [-1, 1] → [1, 4, S/8, S/8] latents."""
    mix = torch.tensor([[0.9, -0.3, 0.2], [0.1, 0.7, -0.5], [-0.4, 0.2, 0.8], [0.3, 0.3, 0.3]])
    pooled = torch.nn.functional.avg_pool2d(image.float(), 8)
    return torch.einsum("oc,bchw->bohw", mix, pooled) + torch.tensor([0.1, -0.2, 0.0, 0.3]).view(1, 4, 1, 1)


# ----------------------------------------------------------------------------------------------
# 07.negative-prompt: diffusers' negative-prompt branch as CCF's base branch (eq. 8)
# ----------------------------------------------------------------------------------------------


def _np_cases(seed: int = 0):
    g = torch.Generator().manual_seed(fresh_seed(7, seed))
    out = []
    for h, t, s, ref, target in ((4, 981, 7.5, "the cat on the left", "a golden retriever"),
                                 (8, 501, 15.0, "the red circle", "a blue square"),
                                 (4, 21, 1.0, "the dog", "a cat"),
                                 (6, 250, 0.0, "the remote control", "a banana"),
                                 (4, 700, 3.0, "the yellow triangle", "a triangle")):
        out.append((toy_unet, toy_encode_text, torch.randn(1, 9, h, h, generator=g), torch.tensor(t), ref, target, s))
    return out


def _np_reference(unet, encode_text, latent_model_input, t, ref, target, scale):
    z_t, mask, latents = latent_model_input.split([4, 1, 4], dim=1)
    model = GuidedLatentModel(unet, encode_text([target]), encode_text([RULES["ccf"].base_prompt(ref)]), mask,
                              latents, scale)
    return model(z_t, t)


def ccf_noise_pred(unet, encode_text, latent_model_input, t, ref, target, scale):
    """CCF's ε̂ (eq. 8) as diffusers computes it: the negative prompt is c_ref."""
    negative_prompt = ref
    states = encode_text([negative_prompt, target])
    eps = unet(latent_model_input.repeat(2, 1, 1, 1), t, encoder_hidden_states=states).sample
    noise_pred_uncond, noise_pred_text = eps.chunk(2)
    return noise_pred_uncond + scale * (noise_pred_text - noise_pred_uncond)


def _np_variant(base: str, form: str = "glide"):
    def fn(unet, encode_text, latent_model_input, t, ref, target, scale):
        negative = {"ref": ref, "empty": "", "target": target}[base]
        eps = unet(latent_model_input.repeat(2, 1, 1, 1), t,
                   encoder_hidden_states=encode_text([negative, target])).sample
        u, c = eps.chunk(2)
        return {"glide": lambda: u + scale * (c - u), "swapped": lambda: c + scale * (u - c),
                "1+w": lambda: c + scale * (c - u)}[form]()
    return fn


NEGATIVE_PROMPT = Exercise(
    id="07.negative-prompt", title="the negative prompt as CCF's base branch", function="ccf_noise_pred",
    paper="§4.3, eq. 8 on a latent model (diffusers' negative prompt)",
    prompt="Write ccf_noise_pred(unet, encode_text, latent_model_input, t, ref, target, scale): one step's guided ε̂ "
           "of CCF, the way diffusers' inpainting pipeline computes classifier-free guidance. It encodes "
           "[negative_prompt, prompt], runs the UNet once on both rows (negative first) and combines "
           "noise_pred_uncond and noise_pred_text with guidance_scale. Choose the negative prompt that makes this "
           "eq. 8, and write the guidance line in GLIDE's form (s = 1: the text branch alone).",
    stub='''def ccf_noise_pred(unet, encode_text, latent_model_input, t, ref, target, scale):
    """CCF's ε̂ (eq. 8) in diffusers' words: one UNet call, the negative-prompt row first."""
    negative_prompt = ...  # TODO: the text of CCF's base branch (diffusers' default is "")
    states = encode_text([negative_prompt, target])  # [2, L, D]
    eps = unet(latent_model_input.repeat(2, 1, 1, 1), t, encoder_hidden_states=states).sample
    noise_pred_uncond, noise_pred_text = eps.chunk(2)
    return ...  # TODO: the guidance line, with guidance_scale = scale
''',
    reference=_np_reference, solution=ccf_noise_pred, cases=_np_cases,
    mistakes=(
        Mistake(_np_variant("empty"),
                "your negative prompt is the empty text ∅ (diffusers' default): that is CF, eq. 6; CCF's base branch "
                "is ε(z_t|c_ref), so negative_prompt = ref (eq. 8)"),
        Mistake(_np_variant("ref", "swapped"),
                "the branches are swapped (or the chunks read in the wrong order): you start at ε(z_t|c_target) and move "
                "towards c_ref, back to the object you are removing; diffusers' rows are [negative, prompt], and "
                "ε̂ = noise_pred_uncond + s·(noise_pred_text − noise_pred_uncond)"),
        Mistake(_np_variant("ref", "1+w"),
                "that is the (1 + w) form, ε(c_target) + w·(ε(c_target) − ε(c_ref)): diffusers and GLIDE write "
                "ε̂ = noise_pred_uncond + s·(noise_pred_text − noise_pred_uncond); yours equals it at s + 1"),
        Mistake(_np_variant("target"),
                "your ε̂ is ε(z_t|c_target) at every scale: either the scale is ignored or the negative prompt is the "
                "target itself (both branches then agree and the guidance vanishes); the negative prompt is ref"),
    ),
    checks="ε̂ against romlib's GuidedLatentModel with RULES['ccf']'s base text, at s = 0, 1, 3, 7.5, 15, on a "
           "stand-in UNet and text encoder that answer differently for every text",
    hints=("§4.3 of the paper (eq. 8) and notebook 07: in diffusers the 'unconditional' branch is the negative prompt.",
           'Encode c_ref as the negative prompt and c_target as the prompt, run the UNet on both, and combine as eq. 8 does.'),
    hint="negative_prompt = ref; return noise_pred_uncond + scale · (noise_pred_text − noise_pred_uncond).",
)

# ----------------------------------------------------------------------------------------------
# 07.unet-input: cat([z_t, mask, image latents]), mask 1 = repaint, the original image under CCF
# ----------------------------------------------------------------------------------------------

_REF, _TARGET = "the cat on the left", "a golden retriever"


def _in_cases(seed: int = 0):
    g = torch.Generator().manual_seed(fresh_seed(9, seed))
    out = []
    for S, box in ((32, (8, 24, 4, 20)), (64, (16, 40, 24, 56))):
        image = torch.rand(1, 3, S, S, generator=g) * 2 - 1
        keep = torch.ones(1, 1, S, S)
        keep[..., box[0]:box[1], box[2]:box[3]] = 0  # GLIDE's convention: 0 = edit
        for rule in ("cf", "ccf"):
            out.append((torch.randn(1, 4, S // 8, S // 8, generator=g), keep, image, rule, toy_vae_encode))
    return out


def _in_reference(z_t, keep_mask, image, rule, encode):
    """What romlib's own loop feeds the UNet: prepare_latent's mask and image, GuidedLatentModel's concatenation."""
    S, h = image.shape[-1], z_t.shape[-1]
    model = SimpleNamespace(cfg=SimpleNamespace(frame_size=S, image_size=h), encode_text=toy_encode_text)
    setup = prepare_latent(model, image=image, keep_mask=keep_mask, target=_TARGET, ref=_REF, rule=rule, scale=1.0)
    seen = []

    def unet(sample, t, encoder_hidden_states=None, return_dict=True):
        seen.append(sample)
        return (sample[:, :4],)

    GuidedLatentModel(unet, setup.emb_cond, setup.emb_base, setup.mask, encode(setup.image[None]), 1.0)(z_t, 0)
    return seen[0][: z_t.shape[0]]  # the base branch's half (both halves are the same input)


def unet_input(z_t, keep_mask, image, rule, encode):
    """The 9 channels SD inpainting's UNet reads under rule 'cf' or 'ccf'. keep_mask: 1 = keep (GLIDE's)."""
    import torch
    import torch.nn.functional as F

    edit = 1 - keep_mask                                   # diffusers' mask: 1 = repaint
    shown = image if rule == "ccf" else image * keep_mask  # CCF shows the original image
    mask = F.interpolate(edit, size=z_t.shape[-2:])        # nearest, to the latent grid
    return torch.cat([z_t, mask, encode(shown)], dim=1)


def _in_variant(order=("z", "m", "x"), original=("ccf",), edit_is_keep=False, masked_from_edit=False):
    def fn(z_t, keep_mask, image, rule, encode):
        edit = keep_mask if edit_is_keep else 1 - keep_mask
        masked = image * (1 - edit) if masked_from_edit else image * keep_mask
        shown = image if rule in original else masked
        parts = {"z": z_t, "m": torch.nn.functional.interpolate(edit, size=z_t.shape[-2:]), "x": encode(shown)}
        return torch.cat([parts[k] for k in order], dim=1)
    return fn


UNET_INPUT = Exercise(
    id="07.unet-input", title="what the 9-channel inpainting UNet sees", function="unet_input",
    paper="§4.3 (CCF's original image) on Stable Diffusion inpainting",
    prompt="Write unet_input(z_t, keep_mask, image, rule, encode): the [1, 9, h, w] input of Stable Diffusion's "
           "inpainting UNet — the noisy latents z_t, the mask at the latent grid, and the VAE latents "
           "encode(shown) of the image the model is shown. keep_mask is GLIDE's (1 = keep); diffusers' mask is "
           "1 = repaint. rule is 'cf' (the masked image, image·keep_mask) or 'ccf' (CCF's second change).",
    stub='''def unet_input(z_t, keep_mask, image, rule, encode):
    """The 9 channels SD inpainting's UNet reads under rule 'cf' or 'ccf'. keep_mask: 1 = keep (GLIDE's)."""
    import torch
    import torch.nn.functional as F
    edit = ...    # TODO: the mask in diffusers' convention (1 = repaint)
    shown = ...   # TODO: the image the UNet is shown under this rule
    mask = F.interpolate(edit, size=z_t.shape[-2:])  # nearest, to the latent grid
    return torch.cat([..., ..., ...], dim=1)  # TODO: 4 + 1 + 4 channels, in the UNet's order
''',
    reference=_in_reference, solution=unet_input, cases=_in_cases,
    mistakes=(
        Mistake(_in_variant(order=("z", "x", "m")),
                "the mask and the image latents are swapped: the UNet reads cat([z_t, mask, masked_image_latents]) — "
                "channel 4 is the mask, channels 5–8 the image latents"),
        Mistake(_in_variant(order=("m", "z", "x")),
                "z_t comes first: channels 0–3 are the noisy latents the UNet denoises (the scheduler steps them), "
                "then the mask, then the image latents"),
        Mistake(_in_variant(original=()),
                "under CCF you showed the masked image: CCF's second change feeds the *original* image's latents "
                "(masked_image_latents = E(original), §4.3); the masked image is CF's input"),
        Mistake(_in_variant(original=("cf", "ccf")),
                "under CF you showed the original image: CF (GLIDE, eq. 6) sees the masked image, image·keep_mask; "
                "only CCF feeds the original (that is the 'cf-original' ablation)"),
        Mistake(_in_variant(edit_is_keep=True),
                "the mask channel is inverted: you gave GLIDE's keep mask (1 = keep); diffusers' inpainting mask is "
                "1 = repaint, i.e. 1 − keep_mask"),
        Mistake(_in_variant(edit_is_keep=True, masked_from_edit=True),
                "the mask is inverted, and so is the masked image: with edit = keep_mask, image·(1 − edit) blanks the "
                "kept region and shows the object to remove; the edit mask is 1 − keep_mask"),
    ),
    checks="the [1, 9, h, w] input against romlib's prepare_latent + GuidedLatentModel for 'cf' and 'ccf' at two "
           "frame sizes, with a stand-in VAE",
    hints=("§4.3 of the paper (CCF's original image) and notebook 07's anatomy: the 9 input channels.",
           'Concatenate the latent, the mask (1 = repaint) and the latents of the image the rule shows (the original for CCF, the masked one for CF).'),
    hint="cat([z_t, mask, encode(shown)]) with mask from 1 − keep_mask; shown = image for 'ccf', image·keep_mask for 'cf'.",
)

EXERCISES = (NEGATIVE_PROMPT, UNET_INPUT)
