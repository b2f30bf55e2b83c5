import logging

import torch

from romlib.perf import format_bench, forward_gflop, run_bench
from romlib.sampling.diffusion import create_diffusion
from romlib.models.glide import create_model
from romlib.sampling.inpaint import prepare_base, sample_base
from romlib.perf import accelerate
from romlib.models.tiny import tiny_glide
from romlib.models.tokenizers import ByteTokenizer


def _small(seed=0):
    # a 32-px member of the family keeps CPU half precision (an emulated, slow path) quick
    return tiny_glide(seed=seed, n_vocab=257, channel_mult=(1, 2), attention_resolutions=(2,), image_size=32)


def _setup(model, scale=15.0):
    tok = ByteTokenizer()
    g = torch.Generator().manual_seed(5)
    image = torch.rand(1, 3, 32, 32, generator=g) * 2 - 1
    keep = torch.ones(1, 1, 32, 32)
    keep[..., 8:24, 8:24] = 0
    return prepare_base(model, tok, image=image, keep_mask=keep, target="a blue truck", ref="the red car", rule="ccf",
                        scale=scale)


def _sample(model, seed=0, scale=15.0):
    return sample_base(_setup(model, scale), create_diffusion(1000, "squaredcos_cap_v2", "4"), samples=2, seed=seed)


def _worst_step_error(scale):
    plain_setup = _setup(_small(), scale)
    fast_setup = _setup(accelerate(_small().convert_to_fp16(), channels_last=True), scale)
    diffusion = create_diffusion(1000, "squaredcos_cap_v2", "10")
    worst = 0.0
    for step in diffusion.p_sample_loop_progressive(plain_setup.model_fn, (2, 3, 32, 32), generator=0, device="cpu",
                                                    denoised_fn=plain_setup.denoised_fn):
        x, t = step["sample"], torch.full((2,), max(step["t"] - 1, 0))
        with torch.no_grad():
            ref, got = plain_setup.model_fn(x, t), fast_setup.model_fn(x, t)
        worst = max(worst, ((got - ref).abs().max() / ref.abs().max()).item())
    return worst


def test_fast_path_matches_plain_fp32_within_half_precision():
    """Along the fp32 trajectory, every step of the fast path (fp16 + channels-last) agrees with
    plain fp32 to half-precision rounding; guidance at scale s amplifies that rounding by ~s.
    (Whole random-weight trajectories are chaotic — an x̂_0 error at t ≈ T is amplified ~1e4
    before clipping — so they are compared step by step.)"""
    unguided = _worst_step_error(1.0)
    assert 1e-5 < unguided < 1e-2, unguided  # it really ran in half, and only rounding differs
    guided = _worst_step_error(15.0)
    assert guided < 15 * 1e-2, guided


def test_compile_failure_falls_back_to_eager(monkeypatch, caplog):
    def broken(fn, **kw):
        def run(*a, **k):
            raise RuntimeError("no backend here")
        return run

    monkeypatch.setattr(torch, "compile", broken)
    model = accelerate(_small(), compile="default")
    with caplog.at_level(logging.WARNING):
        out = _sample(model)
    assert "falling back to eager" in caplog.text
    assert torch.equal(out, _sample(_small()))


def test_flop_count_matches_the_published_work():
    assert abs(forward_gflop(create_model("base-inpaint", device="meta"), 64) - 238.3) < 0.5
    assert abs(forward_gflop(create_model("upsample-inpaint", device="meta"), 256, low_res=True) - 1282.0) < 0.5


def test_bench_runs_on_the_cpu_and_prints_a_table():
    rows = run_bench("cpu", batches=(1,), dtypes=("fp32",), tiny=True, steps=2, upsample_steps="2")
    stages = [r.stage for r in rows]
    assert stages == ["base (CCF, 2B/step)", "upsample", "rank (CLIP, local)"]
    assert all(r.seconds > 0 for r in rows) and rows[0].gflop > 0 and rows[0].tflops > 0
    table = format_bench(rows, "CPU")
    assert "TFLOP/s" in table and "upsample" in table
