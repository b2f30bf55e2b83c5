"""The samplers of romlib.sampling.samplers: DDIM (η = 0, η > 0), DPM-Solver++(2M), ancestral — on tiny models
and on a 1-D Gaussian whose exact ε-prediction is known."""
import math

import pytest
import torch

from romlib.models.tiny import tiny_glide
from romlib.models.tokenizers import ByteTokenizer
from romlib.sampling.diffusion import create_diffusion, randn, sample_generators
from romlib.sampling.inpaint import prepare_base, sample_base
from romlib.sampling.samplers import SAMPLERS, ddim_mean_variance, get_sampler, sample_ddim, sample_dpmpp_2m


def _small(seed=0):
    return tiny_glide(seed=seed, n_vocab=257, channel_mult=(1, 2), attention_resolutions=(2,), image_size=32)


def _setup(model, rule="ccf", scale=3.0):
    g = torch.Generator().manual_seed(5)
    image = torch.rand(1, 3, 32, 32, generator=g) * 2 - 1
    keep = torch.ones(1, 1, 32, 32)
    keep[..., 8:24, 8:24] = 0
    return prepare_base(model, ByteTokenizer(), image=image, keep_mask=keep, target="a blue truck", ref="the red car",
                        rule=rule, scale=scale), image, keep


@pytest.fixture(scope="module")
def model():
    return _small()


def test_registry_matches_the_config_choices_and_refuses_unknown_names():
    import dataclasses

    from romlib.config import EditConfig

    choices = {f.name: f.metadata["choices"] for f in dataclasses.fields(EditConfig)}["sampler"]
    assert tuple(SAMPLERS) == tuple(choices)
    with pytest.raises(ValueError, match="sampler='euler'.*accepted: ancestral, ddim, dpmpp-2m"):
        get_sampler("euler")


@pytest.mark.parametrize("rule", ["cf", "ccf", "ccf-direction", "cf-original"])
def test_ddim_eta0_is_deterministic_given_the_seed_and_keeps_the_known_region(model, rule):
    setup, image, keep = _setup(model, rule)
    d = create_diffusion(1000, "squaredcos_cap_v2", "5")
    a = sample_base(setup, d, samples=2, seed=3, sampler="ddim")
    b = sample_base(setup, d, samples=2, seed=3, sampler="ddim", batch_size=1)
    c = sample_base(setup, d, samples=2, seed=4, sampler="ddim")
    assert torch.equal(a, sample_base(setup, d, samples=2, seed=3, sampler="ddim"))  # reproduces
    assert torch.allclose(a, b, atol=1e-4)  # one generator per sample: the batch size does not matter
    assert not torch.allclose(a, c, atol=1e-3)  # another seed, another x_T
    # the last step returns x̂_0, whose known pixels the known-region step forced
    assert ((a - image) * keep).abs().max() < 1e-5


def test_ddim_eta0_uses_no_noise_after_x_T():
    """Deterministic: the whole run depends on x_T only (a generator that would be drawn from is never read)."""
    d = create_diffusion(1000, "squaredcos_cap_v2", "6")
    model = lambda x, t: torch.cat([0.3 * x + 0.01 * t.float().view(-1, 1, 1, 1), torch.zeros_like(x)], 1)  # noqa: E731
    x_T = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)
    assert torch.equal(sample_ddim(model, x_T, d, generator=g1), sample_ddim(model, x_T, d, generator=g2))
    s1 = sample_ddim(model, x_T, d, eta=1.0, generator=torch.Generator().manual_seed(1))
    s2 = sample_ddim(model, x_T, d, eta=1.0, generator=torch.Generator().manual_seed(2))
    assert not torch.allclose(s1, s2)  # η > 0 draws noise
    with pytest.raises(ValueError, match="eta=1.5 is out of range"):
        sample_ddim(model, x_T, d, eta=1.5)


@pytest.mark.parametrize("steps", ["10", "25", "ddim25"])
def test_ddim_eta1_step_is_the_ancestral_step_with_the_posterior_variance(model, steps):
    """Theory: with η = 1, σ_t² = β̃_t (the posterior variance) and the mean is the posterior mean μ̃_t(x_t, x̂_0).
    GLIDE's ancestral step has that mean and, where the model's variance output v = −1, that variance."""
    setup, _, _ = _setup(model)
    d = create_diffusion(1000, "squaredcos_cap_v2", steps)

    def v_low(x, t):  # the guided model with its learned range at the lower end: Σ = β̃_t
        out = setup.model_fn(x, t)
        return torch.cat([out[:, :3], -torch.ones_like(out[:, 3:])], 1)

    x = randn((2, 3, 32, 32), sample_generators(0, 2), "cpu")
    for i in reversed(range(1, d.num_timesteps)):  # t = 0 has no variance in either
        t = torch.full((2,), i, dtype=torch.long)
        with torch.no_grad():
            out = d.p_mean_variance(v_low, x, t, denoised_fn=setup.denoised_fn)
        mean, var = ddim_mean_variance(d, x, t, out["pred_xstart"], eta=1.0)
        torch.testing.assert_close(mean, out["mean"], atol=5e-4, rtol=0)  # float32 rounding of ε at ᾱ_T ≈ 0
        torch.testing.assert_close(var.expand_as(x), out["variance"], atol=1e-7, rtol=1e-4)
        assert var[0].max().item() == pytest.approx(d.posterior_variance[i], rel=1e-5)
        x = out["mean"] + out["variance"].sqrt() * torch.randn(x.shape, generator=torch.Generator().manual_seed(i))
    # and with η = 0.5 the variance is η² β̃_t
    _, var = ddim_mean_variance(d, x, torch.full((2,), 3, dtype=torch.long), out["pred_xstart"], eta=0.5)
    assert var.max().item() == pytest.approx(0.25 * d.posterior_variance[3], rel=1e-5)


def test_every_sampler_takes_every_classifier_free_rule_and_the_known_region(model):
    d = create_diffusion(1000, "squaredcos_cap_v2", "4")
    for rule in ("cf", "ccf"):
        setup, image, keep = _setup(model, rule)
        outs = {}
        for name in SAMPLERS:
            outs[name] = x = sample_base(setup, d, samples=2, seed=0, sampler=name)
            assert x.shape == (2, 3, 32, 32) and torch.isfinite(x).all()
            assert ((x - image) * keep).abs().max() < 0.03, name  # known region kept (ancestral: μ̃ at t = 0)
        assert not torch.allclose(outs["ddim"], outs["dpmpp-2m"], atol=1e-3)


def test_sampler_callback_sees_every_step_and_counts_one_forward_pass_per_step(model):
    setup, _, _ = _setup(model)
    d = create_diffusion(1000, "squaredcos_cap_v2", "7")
    calls = []
    fn = setup.model_fn

    def counting(x, t, **kw):
        calls.append(x.shape[0])
        return fn(x, t, **kw)

    for name, run in SAMPLERS.items():
        calls.clear()
        seen = []
        run(counting, torch.randn(2, 3, 32, 32), d, denoised_fn=setup.denoised_fn, callback=seen.append,
            generator=sample_generators(0, 2))
        assert len(calls) == 7 and [s["i"] for s in seen] == list(range(7)), name
        assert [s["t"] for s in seen] == list(range(6, -1, -1)) and set(seen[0]) == {"x", "i", "t", "denoised"}


# ----------------------------------------------------------------------------- the 1-D Gaussian toy
MU, S = 0.3, 0.2  # data ~ N(μ, s²)


def _exact_eps_model(diffusion):
    """ε*(x_t) = E[ε | x_t] = σ_t (x_t − α_t μ) / (α_t² s² + σ_t²) for x_t = α_t x_0 + σ_t ε, with the original
    timestep's α_t (the spaced diffusion calls the model with the original timesteps)."""
    ac = torch.from_numpy(create_diffusion(1000, "squaredcos_cap_v2", "1000").alphas_cumprod)

    def model(x, t):
        a = ac[t].sqrt().view(-1, 1, 1, 1).to(x)
        s = (1 - ac[t]).sqrt().view(-1, 1, 1, 1).to(x)
        eps = s * (x - a * MU) / (a ** 2 * S ** 2 + s ** 2)
        return torch.cat([eps, torch.zeros_like(eps)], 1)

    return model


def _exact_answer(d, x_T):
    """The probability-flow ODE maps the Gaussian marginals affinely: x_t0 at the last kept step from x_T, then
    the exact x̂_0 there (the samplers' last step returns x̂_0)."""
    ac = torch.from_numpy(d.alphas_cumprod)
    a_T, s_T, a_0, s_0 = ac[-1].sqrt(), (1 - ac[-1]).sqrt(), ac[0].sqrt(), (1 - ac[0]).sqrt()
    z = (x_T - a_T * MU) / (a_T ** 2 * S ** 2 + s_T ** 2).sqrt()
    x_0 = a_0 * MU + (a_0 ** 2 * S ** 2 + s_0 ** 2).sqrt() * z
    eps = s_0 * (x_0 - a_0 * MU) / (a_0 ** 2 * S ** 2 + s_0 ** 2)
    return (x_0 - s_0 * eps) / a_0


@pytest.mark.parametrize("run", [sample_dpmpp_2m, sample_ddim], ids=["dpmpp-2m", "ddim"])
def test_deterministic_samplers_converge_to_the_exact_flow_on_a_gaussian(run):
    x_T = torch.linspace(-2.5, 2.5, 11, dtype=torch.float64).view(-1, 1, 1, 1)
    errors = {}
    for n in (5, 10, 20, 50):
        d = create_diffusion(1000, "squaredcos_cap_v2", str(n))
        x = run(_exact_eps_model(d), x_T.float(), d, clip_denoised=False)
        errors[n] = (x.double() - _exact_answer(d, x_T)).abs().max().item()
    assert errors[5] > errors[10] > errors[20] > errors[50], errors
    assert errors[50] < (5e-3 if run is sample_dpmpp_2m else 5e-2), errors
    if run is sample_dpmpp_2m:  # second order: more accurate than first-order DDIM, by far at 50 steps
        for n, factor in ((20, 1.5), (50, 8)):
            d = create_diffusion(1000, "squaredcos_cap_v2", str(n))
            ddim = (sample_ddim(_exact_eps_model(d), x_T.float(), d, clip_denoised=False).double()
                    - _exact_answer(d, x_T)).abs().max().item()
            assert errors[n] * factor < ddim, (n, errors, ddim)
    # the answer is a sample of N(μ, s²): the affine map of x_T's z
    assert math.isclose(_exact_answer(create_diffusion(1000, "squaredcos_cap_v2", "50"), torch.tensor(0.0)).item(),
                        MU, abs_tol=0.02)
