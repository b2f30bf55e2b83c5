import pytest
import torch

from romlib.teach.toy import ToyWorld, guidance_vectors, plot_guidance_field, toy_sample, train_toy


@pytest.fixture(scope="module")
def toy():
    world = ToyWorld()
    model, losses = train_toy(world, steps=800, seed=0)
    return world, model, losses


def test_toy_learns_conditionals(toy):
    world, model, losses = toy
    assert sum(losses[-50:]) / 50 < 0.6 * sum(losses[:50]) / 50
    centres = torch.tensor(list(world.classes.values()))
    for name in world.names:
        s = toy_sample(model, world, name, n=200, steps="25")
        nearest = torch.cdist(s, centres).argmin(1)
        assert (nearest == world.label(name)).float().mean() > 0.8, name


def test_guidance_vectors_follow_eq6_and_eq8(toy):
    world, model, _ = toy
    x = torch.randn(5, 2)
    v = guidance_vectors(model, world, x, 300, ref="the red car", target="a blue truck", scale=4.0)
    assert torch.allclose(v["cf"], v["uncond"] + 4 * (v["target"] - v["uncond"]), atol=1e-6)
    assert torch.allclose(v["ccf"], v["ref"] + 4 * (v["target"] - v["ref"]), atol=1e-6)
    fig, at_point = plot_guidance_field(model, world, ref="the red car", target="a blue truck", scale=4.0)
    assert set(at_point) == {"uncond", "ref", "target", "cf", "ccf"}
    with pytest.raises(ValueError, match="unknown toy prompt"):
        world.label("a bicycle")


def test_fig3_draws_true_lengths_on_one_scale_and_samples_fit_the_axes(toy):
    """Fig. 3: ε-space arrows end at the true −ε (no unit arrows); both quiver fields share one scale;
    the sample panels' common axes contain every sample (the CCF overshoot included)."""
    from romlib.teach.toy import plot_samples

    world, model, _ = toy
    fig, at_point = plot_guidance_field(model, world, ref="the red car", target="a blue truck", scale=3.0)
    tips = {tuple(round(v, 4) for v in a.xy) for a in fig.axes[0].texts}
    for k, v in at_point.items():
        assert (round(-v[0], 4), round(-v[1], 4)) in tips, k
    quivers = [c for ax in fig.axes[1:3] for c in ax.collections if type(c).__name__ == "Quiver"]
    assert len(quivers) == 2 and quivers[0].scale == quivers[1].scale
    samples = {"CCF s=3": toy_sample(model, world, "a blue truck", base="the red car", scale=3.0, n=100, steps="25")}
    ax = plot_samples(samples, world).axes[0]
    s = samples["CCF s=3"]
    (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
    assert x0 <= s[:, 0].min() and s[:, 0].max() <= x1 and y0 <= s[:, 1].min() and s[:, 1].max() <= y1


def test_classifier_and_clip_guidance_follow_eq4_and_eq7(toy):
    """Eq. 4 / 7 in ε-form on the conditional branch: ε̂ = ε(x|c) − s·√(1−ᾱ)·∇score; the exact noised classifier
    is a proper distribution whose push saturates inside the target blob; the toy CLIP's gradient is the same
    everywhere (g/√v_t); all four rules are drawn on one arrow scale."""
    from romlib.sampling.diffusion import create_diffusion
    from romlib.teach.toy import classifier_log_prob, clip_score, score_grad

    world, model, _ = toy
    x = torch.tensor([[0.0, 0.2], [1.2, 0.6], [-2.0, 2.0]])
    t = torch.full((3,), 400)
    assert torch.allclose(classifier_log_prob(world, x, t).exp().sum(-1), torch.ones(3), atol=1e-5)
    g_cls = score_grad(world, x, t, "a blue truck", "classifier")
    assert g_cls[0].norm() > 10 * g_cls[1].norm()  # at the blob's (noised) centre the classifier is sure: no push
    g_clip = score_grad(world, x, t, "a blue truck", "clip")
    assert torch.allclose(g_clip, g_clip[:1].expand(3, 2), atol=1e-5) and g_clip[0, 0] > 0  # towards the truck
    ab = float(create_diffusion(1000, "squaredcos_cap_v2", "1000").alphas_cumprod[400])
    v = guidance_vectors(model, world, x, 400, ref="the red car", target="a blue truck", scale=3.0, classifier_scale=2.0,
                         clip_scale=1.5)
    for kind, s, grad in (("classifier", 2.0, g_cls), ("clip", 1.5, g_clip)):
        assert torch.allclose(v[kind], v["target"] - s * (1 - ab) ** 0.5 * grad, atol=1e-5), kind
    assert clip_score(world, x, t, "a blue truck").shape == (3,)
    with pytest.raises(ValueError, match="kind='gan'"):
        score_grad(world, x, t, "a blue truck", "gan")
    fig, at_point = plot_guidance_field(model, world, ref="the red car", target="a blue truck", scale=3.0,
                                        classifier_scale=3.0, clip_scale=1.0)
    assert {"classifier", "clip"} <= set(at_point) and len(fig.axes) == 5
    quivers = [c for ax in fig.axes[1:] for c in ax.collections if type(c).__name__ == "Quiver"]
    assert len(quivers) == 4 and len({q.scale for q in quivers}) == 1


def test_classifier_guidance_stays_on_the_blob_and_clip_guidance_overshoots(toy):
    from romlib.teach.toy import toy_sample_gradient

    world, model, _ = toy
    truck = torch.tensor(world.classes["a blue truck"])
    cls = toy_sample_gradient(model, world, "a blue truck", kind="classifier", scale=3.0, n=200, steps="25")
    clip = toy_sample_gradient(model, world, "a blue truck", kind="clip", scale=3.0, n=200, steps="25")
    assert (cls.mean(0) - truck).norm() < 0.3 and (clip.mean(0) - truck).norm() > 2 * (cls.mean(0) - truck).norm()
