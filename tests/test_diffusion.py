import numpy as np
import pytest
import torch

from romlib.sampling.diffusion import create_diffusion, get_named_beta_schedule, space_timesteps, sample_generators

CASES = {"squaredcos_cap_v2_100": ("squaredcos_cap_v2", "100"), "linear_fast27": ("linear", "fast27"),
         "squaredcos_cap_v2_25": ("squaredcos_cap_v2", "25")}


@pytest.fixture(scope="module")
def golden(ref):
    return torch.load(ref / "glide_diffusion_golden.pt", weights_only=True)


@pytest.mark.parametrize("key", list(CASES))
def test_schedules_and_respacing_match_reference(golden, key):
    sched, resp = CASES[key]
    g = golden[key]
    np.testing.assert_allclose(get_named_beta_schedule(sched, 1000), g["betas_full"].numpy(), rtol=0, atol=1e-15)
    d = create_diffusion(1000, sched, resp)
    assert sorted(d.timestep_map) == g["timesteps_used"].tolist()
    np.testing.assert_allclose(d.betas, g["betas_spaced"].numpy(), rtol=0, atol=1e-12)


@pytest.mark.parametrize("key", list(CASES))
def test_p_mean_variance_and_condition_mean_match_reference(golden, key):
    g = golden[key]
    d = create_diffusion(1000, *CASES[key])
    seen_t = []

    def model(x, t):
        seen_t.append(t)
        return g["model_out"]

    out = d.p_mean_variance(model, g["x_t"], g["t"], clip_denoised=True)
    # the model is called with the original (unspaced) timesteps
    assert seen_t[0].tolist() == [d.timestep_map[i] for i in g["t"].tolist()]
    for k in ("mean", "log_variance", "pred_xstart"):
        assert (out[k] - g[k]).abs().max().item() <= 1e-6, k
    cm = d.condition_mean(lambda x, t: g["cond_grad"], out, g["x_t"], g["t"])
    assert (cm - g["conditioned_mean"]).abs().max().item() <= 1e-6


def test_space_timesteps_variants():
    assert space_timesteps(1000, "ddim25") == set(range(0, 1000, 40))
    assert space_timesteps(300, "10,15,20") == space_timesteps(300, [10, 15, 20])
    assert len(space_timesteps(300, "10,15,20")) == 45
    s = space_timesteps(1000, "fast27")
    assert len(s) == 27 and 999 not in s and 997 in s
    with pytest.raises(ValueError, match="cannot divide"):
        space_timesteps(10, "20")
    with pytest.raises(ValueError, match="bad timestep respacing"):
        space_timesteps(10, "fast")
    with pytest.raises(ValueError, match="unknown beta schedule"):
        get_named_beta_schedule("cosine", 10)


def test_q_sample_marginal():
    d = create_diffusion(1000, "linear", "1000")
    x0 = torch.full((20000, 1), 0.5)
    t = torch.full((20000,), 500)
    xt = d.q_sample(x0, t)
    a = d.alphas_cumprod[500]
    assert abs(xt.mean().item() - 0.5 * np.sqrt(a)) < 0.02
    assert abs(xt.var().item() - (1 - a)) < 0.03


def _toy_model(x, t):
    # ε = 0.1 x, variance value 0: a deterministic function for sampler tests
    return torch.cat([0.1 * x, torch.zeros_like(x)], dim=1)


def test_progressive_yields_every_step_and_is_repeatable():
    d = create_diffusion(1000, "squaredcos_cap_v2", "10")
    steps = list(d.p_sample_loop_progressive(_toy_model, (2, 3, 4, 4), generator=7, device="cpu"))
    assert [s["t"] for s in steps] == list(range(9, -1, -1))
    assert all(set(s) >= {"sample", "pred_xstart", "eps"} for s in steps)
    a = d.p_sample_loop(_toy_model, (2, 3, 4, 4), generator=7, device="cpu")
    b = d.p_sample_loop(_toy_model, (2, 3, 4, 4), generator=torch.Generator().manual_seed(7), device="cpu")
    c = d.p_sample_loop(_toy_model, (2, 3, 4, 4), generator=8, device="cpu")
    assert torch.equal(a, steps[-1]["sample"]) and torch.equal(a, b)
    assert not torch.equal(a, c)


def test_per_sample_generators_do_not_depend_on_batching():
    d = create_diffusion(1000, "squaredcos_cap_v2", "5")
    gens = sample_generators(3, 4)
    full = d.p_sample_loop(_toy_model, (4, 3, 4, 4), generator=gens, device="cpu")
    gens = sample_generators(3, 4)
    parts = [d.p_sample_loop(_toy_model, (2, 3, 4, 4), generator=gens[i:i + 2], device="cpu") for i in (0, 2)]
    assert torch.allclose(full, torch.cat(parts), atol=1e-6)


def test_skip_timesteps_and_postprocess():
    d = create_diffusion(1000, "linear", "10")
    init = torch.zeros(1, 3, 4, 4)
    calls = []
    steps = list(d.p_sample_loop_progressive(_toy_model, (1, 3, 4, 4), generator=0, device="cpu", skip_timesteps=3,
                                             init_image=init, postprocess_fn=lambda out, t: calls.append(int(t[0])) or out))
    assert [s["t"] for s in steps] == list(range(6, -1, -1)) and calls == list(range(6, -1, -1))
