"""A 2-D diffusion toy that trains in seconds on a CPU (notebook 01): where the guidance vectors
of CF (paper eq. 6) and CCF (eq. 8) can be drawn — Fig. 3 of the paper made real.

Data: points from a few labelled Gaussian blobs ("the red car", "a blue truck", ...). The model
ε_θ(x_t, t, c) is a small MLP trained with L_simple (eq. 3) and label dropout, so that the same
network also predicts ε_θ(x_t, t, ∅). Its variance is fixed to β_t (output v = 1 for
:mod:`romlib.sampling.diffusion`'s learned-range parameterisation).

The two gradient-based baselines of the paper, on the same toy, beside CF and CCF:

* **classifier guidance** (eq. 4, Dhariwal & Nichol): μ̂ = μ + s·Σ·∇ log p(c|x_t). The toy's *noised
  classifier* is exact: the blobs noised to level t are Gaussians N(√ᾱ_t μ_k, (ᾱ_t σ² + 1 − ᾱ_t) I), so
  p(c|x_t) is their softmax (:func:`classifier_log_prob`). It saturates: once x_t is surely in the
  target's blob, p(c|x_t) ≈ 1 and the push stops.
* **CLIP guidance** (eq. 7): the classifier is replaced by an image–text similarity f(x_t)·g(c). The toy's
  "CLIP" (:func:`clip_score`) has an image encoder f(x_t) = the vector from the noised centre of the
  world to x_t (in noise units) and a text encoder g(c) = the unit vector towards the blob of c. Like
  CLIP it knows *which direction* the text means, not a likelihood: its push is the same everywhere
  and never says "enough" (the analogy: CLIP scores how much an image looks like the text, not whether
  it is a plausible image of it — hence adversarial, over-pushed samples at large s).

Both are written in ε-form (Dhariwal & Nichol's eq. 14: a mean shift of s·Σ·∇ is an ε shift of
−s·√(1 − ᾱ_t)·∇) on the conditional branch, as eq. 4 and 7 write them (μ_θ(x_t|y), μ_θ(x_t|c)):
ε̂ = ε(x|c) − s·√(1 − ᾱ_t)·∇ score(x_t, c).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..sampling.diffusion import create_diffusion, make_generator
from ..models.glide import timestep_embedding
from ..guidance.cfg import guided_eps

__all__ = ["ToyWorld", "ToyModel", "train_toy", "train_step", "exact_eps", "toy_sample", "toy_sample_gradient", "guidance_vectors", "plot_guidance_field",
           "plot_samples", "DEFAULT_CLASSES", "classifier_log_prob", "clip_score", "score_grad", "GUIDANCE_COLOURS"]

#: one colour per guidance rule in every toy figure
GUIDANCE_COLOURS = {"uncond": "grey", "ref": "tab:red", "target": "tab:blue", "cf": "tab:orange", "ccf": "tab:green",
                    "classifier": "tab:purple", "clip": "tab:brown"}

DEFAULT_CLASSES = {
    "the red car": (-1.2, 0.6),
    "a blue truck": (1.2, 0.6),
    "a green tree": (0.0, -1.1),
}


@dataclass
class ToyWorld:
    """Labelled Gaussian blobs in the plane; label index ``len(classes)`` is ∅ (no text)."""

    classes: dict = field(default_factory=lambda: dict(DEFAULT_CLASSES))
    std: float = 0.22

    @property
    def names(self) -> list[str]:
        return list(self.classes)

    @property
    def null(self) -> int:
        return len(self.classes)

    def label(self, text: str) -> int:
        if text == "":
            return self.null
        if text not in self.classes:
            raise ValueError(f"unknown toy prompt {text!r}; known: {self.names} or '' (∅)")
        return self.names.index(text)

    def sample(self, n: int, generator=None) -> tuple[torch.Tensor, torch.Tensor]:
        g = make_generator(generator)
        labels = torch.randint(0, len(self.classes), (n,), generator=g)
        centres = torch.tensor(list(self.classes.values()), dtype=torch.float32)
        return centres[labels] + self.std * torch.randn(n, 2, generator=g), labels


class ToyModel(nn.Module):
    """ε_θ(x_t, t, c): an MLP on [x_t, timestep embedding, label embedding]; returns [ε, v = 1]."""

    def __init__(self, n_labels: int, width: int = 128, t_dim: int = 32):
        super().__init__()
        self.t_dim = t_dim
        self.label = nn.Embedding(n_labels + 1, t_dim)
        self.net = nn.Sequential(nn.Linear(2 + 2 * t_dim, width), nn.SiLU(), nn.Linear(width, width), nn.SiLU(),
                                 nn.Linear(width, width), nn.SiLU(), nn.Linear(width, 2))

    def eps(self, x, t, labels):
        h = torch.cat([x, timestep_embedding(t, self.t_dim), self.label(labels)], dim=-1)
        return self.net(h)

    def forward(self, x, t, labels):
        return torch.cat([self.eps(x, t, labels), torch.ones_like(x)], dim=-1)


def train_toy(world: ToyWorld | None = None, *, steps: int = 2000, batch: int = 512, p_uncond: float = 0.2,
              lr: float = 2e-3, seed: int = 0, progress: bool = False) -> tuple[ToyModel, list[float]]:
    """Train ε_θ with L_simple = E‖ε − ε_θ(x_t, t, c)‖² and label dropout (c → ∅ with p_uncond).
    A few seconds on a CPU. Returns the model and the loss curve."""
    from romlib.progress import tqdm

    world = world or ToyWorld()
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    diffusion = create_diffusion(1000, "squaredcos_cap_v2", "1000")
    model = ToyModel(len(world.classes))
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    abar = torch.from_numpy(diffusion.alphas_cumprod)
    losses = []
    for _ in tqdm(range(steps), disable=not progress, desc="training the toy"):
        x0, labels = world.sample(batch, g)
        labels = torch.where(torch.rand(batch, generator=g) < p_uncond, torch.full_like(labels, world.null), labels)
        t = torch.randint(0, diffusion.num_timesteps, (batch,), generator=g)
        noise = torch.randn(batch, 2, generator=g)
        losses.append(train_step(model, opt, x0, labels, t, noise, abar))
        sched.step()
    return model.eval().requires_grad_(False), losses


def train_step(model: ToyModel, optimizer, x0: torch.Tensor, labels: torch.Tensor, t: torch.Tensor, noise: torch.Tensor,
               alphas_cumprod: torch.Tensor) -> float:
    """One step of L_simple (eq. 3): x_t = sqrt(ᾱ_t)·x_0 + sqrt(1 − ᾱ_t)·ε, loss = ‖ε − ε_θ(x_t, t, c)‖² (mean),
    one optimizer step. Returns the loss (notebook 08 has the student write it)."""
    a = alphas_cumprod[t].reshape(-1, *[1] * (x0.dim() - 1))
    x_t = a.sqrt().float() * x0 + (1 - a).sqrt().float() * noise
    loss = F.mse_loss(model.eps(x_t, t, labels), noise)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss.item()


def _guided(model: ToyModel, world: ToyWorld, target: str, base: str, scale: float):
    """The guided ε̂ as a model function: ε(x|base) + s·(ε(x|target) − ε(x|base))."""
    lt, lb = world.label(target), world.label(base)

    def fn(x, t):
        n = x.shape[0]
        eps_c = model.eps(x, t, torch.full((n,), lt))
        eps_b = model.eps(x, t, torch.full((n,), lb))
        return torch.cat([guided_eps(eps_c, eps_b, scale), torch.ones_like(x)], dim=-1)

    return fn


def toy_sample(model: ToyModel, world: ToyWorld, target: str, *, base: str = "", scale: float = 1.0, n: int = 500,
               steps: str = "50", seed: int = 0) -> torch.Tensor:
    """Samples of ε̂ = ε(x|base) + s·(ε(x|target) − ε(x|base)); ``base=""`` is CF, ``base=ref`` is CCF."""
    diffusion = create_diffusion(1000, "squaredcos_cap_v2", steps)
    return diffusion.p_sample_loop(_guided(model, world, target, base, scale), (n, 2), generator=seed, device="cpu",
                                   clip_denoised=False)


def _alpha_bar(t) -> torch.Tensor:
    d = create_diffusion(1000, "squaredcos_cap_v2", "1000")
    return torch.as_tensor(d.alphas_cumprod, dtype=torch.float32)[torch.as_tensor(t).long()]


def classifier_log_prob(world: ToyWorld, x: torch.Tensor, t) -> torch.Tensor:
    """log p(c | x_t) [N, classes] of the exact noised classifier: x_t of class k is
    N(√ᾱ_t μ_k, (ᾱ_t σ² + 1 − ᾱ_t) I) (equal priors), so p(c | x_t) is a softmax of those log-densities."""
    ab = _alpha_bar(t).reshape(-1, 1)
    centres = torch.tensor(list(world.classes.values()), dtype=torch.float32)
    var = ab * world.std ** 2 + 1 - ab
    d2 = ((x[:, None, :] - ab.sqrt()[:, :, None] * centres[None]) ** 2).sum(-1)
    return torch.log_softmax(-d2 / (2 * var), dim=-1)


def clip_score(world: ToyWorld, x: torch.Tensor, t, text: str) -> torch.Tensor:
    """The toy "CLIP" similarity f(x_t)·g(c) [N], eq. 7's dot product: the image embedding f = u / √v_t with
    u = x_t − √ᾱ_t·o, the vector from the noised world centre to x_t, in units of the noise's standard
    deviation (v_t = ᾱ_t σ² + 1 − ᾱ_t: what a *noised* CLIP can read at level t); the text embedding g =
    the unit vector from o to the blob of ``text`` (o = the mean of the blob centres). f·g is linear in
    x_t, so its gradient g/√v_t is the same everywhere: it knows the text's *direction*, not where its
    blob ends (a classifier's log p(c|x_t) saturates; this never does)."""
    ab = _alpha_bar(t).reshape(-1, 1)
    centres = torch.tensor(list(world.classes.values()), dtype=torch.float32)
    o = centres.mean(0)
    f = (x - ab.sqrt() * o) / (ab * world.std ** 2 + 1 - ab).sqrt()
    g = F.normalize(centres[world.label(text)] - o, dim=0)
    return (f * g).sum(-1)


def score_grad(world: ToyWorld, x: torch.Tensor, t, text: str, kind: str) -> torch.Tensor:
    """∇_x of the guidance score at x_t: ``"classifier"``: log p(c|x_t) (eq. 4); ``"clip"``: f(x_t)·g(c) (eq. 7)."""
    if kind not in ("classifier", "clip"):
        raise ValueError(f"kind={kind!r}; expected 'classifier' or 'clip'")
    with torch.enable_grad():
        x = x.detach().clone().requires_grad_(True)
        if kind == "classifier":
            score = classifier_log_prob(world, x, t)[:, world.label(text)]
        else:
            score = clip_score(world, x, t, text)
        (grad,) = torch.autograd.grad(score.sum(), x)
    return grad


def exact_eps(world: ToyWorld, x: torch.Tensor, t, text: str) -> torch.Tensor:
    """The exact ε(x_t, t | c) of the toy [N, 2]: x_t of blob k is N(√ᾱ_t μ_k, v_t I), v_t = ᾱ_t σ² + 1 − ᾱ_t, so
    ε = −√(1 − ᾱ_t)·∇ log p(x_t | c) = √(1 − ᾱ_t)·(x_t − √ᾱ_t μ)/v_t for a text, and the posterior-weighted mean of
    that over the blobs for ∅. Where the learned ε_θ extrapolates (far off the data), this one does not."""
    tt = torch.as_tensor(t).long().expand(x.shape[0]) if torch.as_tensor(t).ndim == 0 else torch.as_tensor(t).long()
    ab = _alpha_bar(tt).reshape(-1, 1, 1)
    centres = torch.tensor(list(world.classes.values()), dtype=torch.float32)
    v = ab * world.std ** 2 + 1 - ab
    per_blob = (1 - ab).sqrt() * (x[:, None, :] - ab.sqrt() * centres[None]) / v  # [N, K, 2]
    if text == "":
        w = classifier_log_prob(world, x, tt).exp()[:, :, None]
        return (w * per_blob).sum(1)
    return per_blob[:, world.label(text)]


def _gradient_guided_eps(model: ToyModel, world: ToyWorld, x, t, target: str, scale: float, kind: str,
                         exact: bool = False) -> torch.Tensor:
    """ε̂ = ε(x|c_target) − s·√(1 − ᾱ_t)·∇ score(x_t, c_target) (eq. 4 / 7 in ε-form, on the conditional
    branch as the paper writes them: μ_θ(x_t|y), μ_θ(x_t|c)); ``exact``: the toy's exact ε (:func:`exact_eps`)."""
    tt = torch.as_tensor(t).long().expand(x.shape[0]) if torch.as_tensor(t).ndim == 0 else torch.as_tensor(t).long()
    eps = exact_eps(world, x, tt, target) if exact else model.eps(x, tt, torch.full((x.shape[0],), world.label(target)))
    ab = _alpha_bar(tt).reshape(-1, 1)
    return eps - scale * (1 - ab).sqrt() * score_grad(world, x, tt, target, kind)


def toy_sample_gradient(model: ToyModel, world: ToyWorld, target: str, *, kind: str, scale: float = 1.0, n: int = 500,
                        steps: str = "50", seed: int = 0, exact: bool = False) -> torch.Tensor:
    """Samples under classifier (``kind="classifier"``, eq. 4) or CLIP guidance (``"clip"``, eq. 7). ``exact=True``:
    the toy's exact ε (:func:`exact_eps`) instead of the learned one — CLIP's push carries samples far off the data,
    where a small learned ε_θ extrapolates and its samples land where the exact model's do not (notebook 01)."""
    diffusion = create_diffusion(1000, "squaredcos_cap_v2", steps)

    def fn(x, t):
        return torch.cat([_gradient_guided_eps(model, world, x, t, target, scale, kind, exact), torch.ones_like(x)], dim=-1)

    return diffusion.p_sample_loop(fn, (n, 2), generator=seed, device="cpu", clip_denoised=False)


def guidance_vectors(model: ToyModel, world: ToyWorld, x: torch.Tensor, t: int, *, ref: str, target: str,
                     scale: float, classifier_scale: float | None = None, clip_scale: float | None = None
                     ) -> dict[str, torch.Tensor]:
    """At points x [N, 2] and timestep t (of 1000): the noise predictions and the two guided
    predictions. The denoising direction is −ε (x̂_0 = (x_t − sqrt(1−ᾱ)ε)/sqrt(ᾱ)). With
    ``classifier_scale`` / ``clip_scale`` also ``"classifier"`` (eq. 4) and ``"clip"`` (eq. 7), in ε-form."""
    tt = torch.full((x.shape[0],), int(t))
    e = {name: model.eps(x, tt, torch.full((x.shape[0],), world.label(c))) for name, c in
         (("uncond", ""), ("ref", ref), ("target", target))}
    e["cf"] = guided_eps(e["target"], e["uncond"], scale)
    e["ccf"] = guided_eps(e["target"], e["ref"], scale)
    for kind, s in (("classifier", classifier_scale), ("clip", clip_scale)):
        if s is not None:
            e[kind] = _gradient_guided_eps(model, world, x, tt, target, s, kind)
    return e


def plot_guidance_field(model: ToyModel, world: ToyWorld, *, ref: str, target: str, scale: float = 3.0, t: int = 400,
                        point=(0.0, 0.2), grid: int = 9, classifier_scale: float | None = None,
                        clip_scale: float | None = None):
    """Fig. 3 made real, at timestep ``t`` of 1000 (the convention of the whole notebook).

    Left: ε-space at one x_t — the vectors −ε(x|∅), −ε(x|c_ref), −ε(x|c_target) and the CF and CCF
    guided −ε̂ (and, with ``classifier_scale`` / ``clip_scale``, classifier guidance, eq. 4, and CLIP
    guidance, eq. 7), all drawn from the origin with their **true lengths** on equal axes (the dotted
    segments are s·(ε(x|c_target) − ε(x|base)) added to the base branch: the overshoot). Then one
    panel per rule: its field −ε̂ on a grid of x_t, all drawn with **one common arrow scale** (the key
    arrow gives it). Returns (figure, the vectors at the point as lists)."""
    import matplotlib.pyplot as plt

    rules = ["cf", "ccf"] + [k for k, s in (("classifier", classifier_scale), ("clip", clip_scale)) if s is not None]
    centres = torch.tensor(list(world.classes.values()))
    fig, axes = plt.subplots(1, 1 + len(rules), figsize=(14 + 4.6 * (len(rules) - 2), 5.4),
                             gridspec_kw={"width_ratios": [1.25] + [1] * len(rules)})
    p = torch.tensor([point], dtype=torch.float32)
    kw = dict(ref=ref, target=target, scale=scale, classifier_scale=classifier_scale, clip_scale=clip_scale)
    v = guidance_vectors(model, world, p, t, **kw)
    colours = GUIDANCE_COLOURS
    scales = {"cf": scale, "ccf": scale, "classifier": classifier_scale, "clip": clip_scale}
    labels = {"uncond": "−ε(x|∅)", "ref": "−ε(x|c_ref)", "target": "−ε(x|c_target)", "cf": f"CF −ε̂, s={scale:g}",
              "ccf": f"CCF −ε̂, s={scale:g}", "classifier": f"classifier −ε̂ (eq. 4), s={classifier_scale}",
              "clip": f"CLIP −ε̂ (eq. 7), s={clip_scale}"}
    ax = axes[0]
    tips = [torch.zeros(2)]
    for k in ["uncond", "ref", "target"] + rules:
        d = -v[k][0]
        tips.append(d)
        ax.annotate("", xy=(d[0].item(), d[1].item()), xytext=(0, 0),
                    arrowprops=dict(arrowstyle="-|>", color=colours[k], lw=2.2 if k in rules else 1.6,
                                    shrinkA=0, shrinkB=0))
        ax.plot([], [], color=colours[k], lw=2, label=f"{labels[k]}  |ε| = {v[k].norm().item():.2f}")
    for k, base in (("cf", "uncond"), ("ccf", "ref"), ("classifier", "target"), ("clip", "target")):
        if k not in rules:
            continue
        b, g = -v[base][0], -v[k][0]  # base + the guidance term: where the guided vector comes from
        ax.plot([b[0].item(), g[0].item()], [b[1].item(), g[1].item()], ":", color=colours[k], lw=1.2)
    tips = torch.stack(tips)
    lo, hi = tips.min(0).values, tips.max(0).values
    pad = 0.12 * float((hi - lo).max()) + 0.05
    ax.set_xlim(lo[0].item() - pad, hi[0].item() + pad), ax.set_ylim(lo[1].item() - pad, hi[1].item() + pad)
    ax.set_aspect("equal"), ax.grid(alpha=0.3)
    ax.axhline(0, color="k", lw=0.5), ax.axvline(0, color="k", lw=0.5)
    ax.set_xlabel("−ε, first coordinate"), ax.set_ylabel("−ε, second coordinate")
    ax.set_title(f"ε-space at x_t = {tuple(point)} (•), t = {t} of 1000\ntrue lengths; dotted: the guidance term added to the base",
                 fontsize=9)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2)
    xs = torch.linspace(-2, 2, grid)
    gx, gy = torch.meshgrid(xs, xs, indexing="xy")
    pts = torch.stack([gx.flatten(), gy.flatten()], -1)
    field_v = guidance_vectors(model, world, pts, t, **kw)
    longest = max(field_v[k].norm(dim=-1).max().item() for k in rules)
    spacing = 4.0 / (grid - 1)
    qscale = longest / (0.9 * spacing)  # data units per arrow length: the longest arrow spans 0.9 cells
    key = float(f"{longest / 2:.1g}")
    bases = {"cf": "ε(x|∅) + s·(ε(x|c_target) − ε(x|∅))", "ccf": "ε(x|c_ref) + s·(ε(x|c_target) − ε(x|c_ref))",
             "classifier": "ε(x|c) − s·√(1−ᾱ)·∇log p(c|x_t)", "clip": "ε(x|c) − s·√(1−ᾱ)·∇ f(x_t)·g(c)"}
    for ax, k in zip(axes[1:], rules):
        d = -field_v[k]
        q = ax.quiver(pts[:, 0], pts[:, 1], d[:, 0], d[:, 1], color=colours[k], angles="xy", scale_units="xy",
                      scale=qscale, width=0.006)
        ax.quiverkey(q, 0.82, 0.06, key, f"|ε̂| = {key:g}", labelpos="N", coordinates="axes",
                     fontproperties={"size": 7})
        ax.set_xlabel(f"x_t (one arrow scale in all {len(rules)} panels; longest |ε̂| = {longest:.2f})", fontsize=8)
        ax.scatter(centres[:, 0], centres[:, 1], s=60, marker="x", color="k")
        for name, c in world.classes.items():
            ax.annotate(name, c, textcoords="offset points", xytext=(4, -10), fontsize=7)
        ax.scatter(*point, s=30, color="k", marker="o")
        name = {"cf": "CF", "ccf": "CCF", "classifier": "classifier (eq. 4)", "clip": "CLIP (eq. 7)"}[k]
        ax.set_title(f"{name} field −ε̂, s = {scales[k]:g}, t = {t} of 1000\nε̂ = {bases[k]}", fontsize=8)
        ax.set_xlim(-2.5, 2.5), ax.set_ylim(-2.5, 2.5), ax.set_aspect("equal")
    fig.tight_layout()
    return fig, {k: v[k][0].tolist() for k in v}


def plot_samples(samples: dict[str, torch.Tensor], world: ToyWorld):
    """Scatter plots of sample clouds, one panel per entry, on **common axes** wide enough for every
    sample (so an overshoot far past the target blob stays visible); the blob centres are marked."""
    import matplotlib.pyplot as plt

    cols = min(3, len(samples))  # at most three panels a row: readable when projected
    rows = -(-len(samples) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.8 * rows), squeeze=False)
    for ax in axes.flat[len(samples):]:
        ax.set_visible(False)
    centres = torch.tensor(list(world.classes.values()))
    every = torch.cat([torch.cat(list(samples.values())), centres])
    lo, hi = every.min(0).values - 0.4, every.max(0).values + 0.4
    for ax, (title, s) in zip(axes.flat, samples.items()):
        ax.scatter(s[:, 0], s[:, 1], s=3, alpha=0.5)
        ax.scatter(centres[:, 0], centres[:, 1], s=50, marker="x", color="k")
        for name, c in world.classes.items():
            ax.annotate(name, c, textcoords="offset points", xytext=(3, 3), fontsize=8)
        m = s.mean(0)
        ax.scatter(*m.tolist(), s=60, marker="*", color="tab:red")
        ax.set_title(f"{title}\nmean ({m[0]:.2f}, {m[1]:.2f}) ★", fontsize=10)
        ax.set_xlim(lo[0].item(), hi[0].item()), ax.set_ylim(lo[1].item(), hi[1].item())
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig
