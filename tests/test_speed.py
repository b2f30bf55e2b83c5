import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import romlib.perf as perf
from romlib.contracts import Backend
from romlib.models.glide import GroupNorm32, create_model
from romlib.models.tiny import tiny_glide
from romlib.models.tokenizers import ByteTokenizer
import romlib.bench
from romlib.bench import fast_vs_plain, format_bench, run_bench
from romlib.perf import (AUTO_COMPILE_COST_S, CompiledCore, accelerate, accelerate_backend, forward_gflop,
                         import_reference, recorded_compile_s)
from romlib.sampling.diffusion import create_diffusion
from romlib.sampling.inpaint import prepare_base, sample_base

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _private_compile_cache(monkeypatch, tmp_path):
    """Compile caches and records go to a temporary $ROMLIB_CACHE; the environment is restored."""
    monkeypatch.setenv("ROMLIB_CACHE", str(tmp_path / "romlib-cache"))
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", "placeholder")
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR")


def _small(seed=0, **kw):
    # a 32-px member of the family keeps CPU half precision (an emulated, slow path) quick
    return tiny_glide(seed=seed, n_vocab=257, channel_mult=(1, 2), attention_resolutions=(2,), image_size=32, **kw)


def _small_up(seed=1):
    return tiny_glide("upsample-inpaint", seed=seed, n_vocab=257, channel_mult=(1, 2), attention_resolutions=(2,),
                      image_size=32)


def _inputs(model, b, seed=0):
    g = torch.Generator().manual_seed(seed)
    s = model.cfg.image_size
    tokens, mask = torch.randint(0, 257, (b, model.cfg.text_ctx), generator=g), torch.ones(b, model.cfg.text_ctx, dtype=torch.bool)
    with torch.no_grad():
        emb = model.encode_text(tokens, mask)
    return dict(x=torch.randn(b, 3, s, s, generator=g), timesteps=torch.arange(b) * 97, text_emb=emb,
                inpaint_image=torch.rand(b, 3, s, s, generator=g) * 2 - 1,
                inpaint_mask=torch.ones(1, 1, s, s).expand(b, -1, -1, -1))


def _setup(model, scale=15.0):
    tok = ByteTokenizer()
    g = torch.Generator().manual_seed(5)
    image = torch.rand(1, 3, 32, 32, generator=g) * 2 - 1
    keep = torch.ones(1, 1, 32, 32)
    keep[..., 8:24, 8:24] = 0
    return prepare_base(model, tok, image=image, keep_mask=keep, target="a blue truck", ref="the red car", rule="ccf",
                        scale=scale)


def _sample(model, seed=0, samples=2, batch_size=None, steps="3"):
    return sample_base(_setup(model), create_diffusion(1000, "squaredcos_cap_v2", steps), samples=samples, seed=seed,
                       batch_size=batch_size)


# ----------------------------------------------------------------------------- the fast eager path
@pytest.mark.parametrize("make", [_small, _small_up], ids=["base", "upsampler"])
def test_fast_path_agrees_with_plain_within_half_precision(make):
    """Half precision: fast and plain differ by half-precision rounding only, i.e. by no more
    than the plain path itself differs from float32 (both are measured on the same inputs)."""
    model = make().convert_to_fp16()
    d = fast_vs_plain(model)
    assert d["finite"]
    assert 1e-5 < d["half_vs_fp32"] < 2e-2, d  # it really ran in half
    assert 0 < d["fast_vs_plain"] <= 2 * d["half_vs_fp32"], d  # the paths differ, by rounding only
    assert model.fast and model.dtype == torch.float16  # settings restored


def test_fast_path_is_used_in_half_and_bitwise_plain_in_fp32():
    model = _small()
    kw = _inputs(model, 2)
    with torch.no_grad():
        fast, plain = model.set_fast(True)(**kw), model.set_fast(False)(**kw)
    assert torch.equal(fast, plain)
    norm = model.input_blocks[1][0].out_layers[0]
    assert isinstance(norm, GroupNorm32)
    model.set_fast(True).convert_to_fp16()
    assert norm.uses_fast_path(torch.zeros(1, 32, 4, 4, dtype=torch.float16))
    assert not norm.uses_fast_path(torch.zeros(1, 32, 4, 4))
    model.set_fast(False)
    assert not model.fast and not norm.uses_fast_path(torch.zeros(1, 32, 4, 4, dtype=torch.float16))


def test_fast_path_half_norm_params_follow_weight_updates():
    norm = GroupNorm32(64, silu=True)
    x = torch.randn(2, 64, 4, 4).half()
    a = norm(x)
    with torch.no_grad():
        norm.weight.mul_(2)  # an in-place update (as load_state_dict does) refreshes the cached half copy
    b = norm(x)
    assert not torch.equal(a, b)
    assert torch.allclose(b.float(), torch.nn.functional.silu(torch.nn.functional.group_norm(x.float(), 32, norm.weight, norm.bias)),
                          atol=1e-2)


def test_fast_path_keeps_autograd_intact():
    """In-place SiLU / residual adds are skipped where autograd needs the inputs (Blended
    Diffusion and CLIP guidance backpropagate through these UNets)."""
    grads = []
    for fast in (True, False):
        model = _small().set_fast(fast)
        kw = _inputs(model, 2)
        x = kw.pop("x").requires_grad_()
        model(x, **kw).square().sum().backward()
        grads.append(x.grad)
    assert torch.equal(grads[0], grads[1])


# ----------------------------------------------------------------------------- the compiled path
def _fake_compile(calls):
    """A stand-in for torch.compile that runs the function eagerly and records its inputs."""

    def compile(fn, **kw):
        calls.append(("compile", kw))

        def run(*args):
            calls.append(("call", args[0].shape[0], all(a.is_contiguous() for a in args[:7] if isinstance(a, torch.Tensor)),
                          getattr(args[0], "_dynamo_weak_dynamic_indices", set())))
            return fn(*args)

        return run

    return compile


def test_compiled_path_pads_a_single_row_and_marks_the_batch_dynamic(monkeypatch):
    calls = []
    monkeypatch.setattr(torch, "compile", _fake_compile(calls))
    model = _small()
    with torch.no_grad():
        eager = {b: model(**_inputs(model, b)) for b in (1, 3)}
        model._core = CompiledCore(model, "default")
        got = {b: model(**_inputs(model, b)) for b in (3, 1)}
    assert [c[0] for c in calls] == ["compile", "call", "call"]  # one compilation for both sizes
    assert calls[0][1]["dynamic"] is None
    assert [c[1] for c in calls[1:]] == [3, 2]  # 1 is padded to 2
    assert all(c[2] for c in calls[1:]) and all(0 in c[3] for c in calls[1:])  # contiguous, batch marked dynamic
    assert torch.equal(got[3], eager[3])
    assert got[1].shape == eager[1].shape
    assert torch.allclose(got[1], eager[1], atol=1e-5)  # batch-1 kernels round differently from batch-2 ones


def test_compiled_path_gives_the_same_samples_in_micro_batches(monkeypatch):
    """3 samples in micro-batches of 2 and 1 (forward batches 4 and 2, both branches) through
    the compiled path's input handling give exactly the eager samples."""
    calls = []
    monkeypatch.setattr(torch, "compile", _fake_compile(calls))
    eager = _sample(_small(), samples=3, batch_size=2, steps="2")
    model = _small()
    model._core = CompiledCore(model, "default")
    assert torch.equal(_sample(model, samples=3, batch_size=2, steps="2"), eager)
    assert {c[1] for c in calls[1:]} == {4, 2} and sum(c[0] == "compile" for c in calls) == 1


def test_compile_failure_falls_back_to_eager(monkeypatch, caplog):
    def broken(fn, **kw):
        def run(*a, **k):
            raise RuntimeError("no backend here")
        return run

    monkeypatch.setattr(torch, "compile", broken)
    model = accelerate(_small(), compile="default")
    with caplog.at_level(logging.WARNING):
        out = _sample(model)
    assert "falling back to eager" in caplog.text and "damaged" not in caplog.text
    assert model._core == model._forward
    assert torch.equal(out, _sample(_small()))


def test_a_damaged_compile_cache_is_named(monkeypatch, caplog):
    """Seen on the CPU: a process killed while compiling leaves a truncated kernel in the cache,
    and the next process's compile fails loading it."""
    cache = perf.compile_cache_dir()

    def broken(fn, **kw):
        def run(*a, **k):
            raise ImportError(f"{cache}/cf/kernel.main.so: file too short")
        return run

    monkeypatch.setattr(torch, "compile", broken)
    model = _small()
    model._core = CompiledCore(model, "default")
    with caplog.at_level(logging.WARNING), torch.no_grad():
        model(**_inputs(model, 2))
    assert "falling back to eager" in caplog.text and f"damaged, e.g. by a process killed while compiling: delete {cache}" in caplog.text


def test_compiled_artifacts_are_cached_under_romlib_cache(monkeypatch, tmp_path):
    monkeypatch.setattr(torch, "compile", _fake_compile([]))
    monkeypatch.setenv("ROMLIB_CACHE", str(tmp_path))
    model = accelerate(_small(), compile="default")
    assert Path(os.environ["TORCHINDUCTOR_CACHE_DIR"]) == (tmp_path / "torch-compile").resolve()
    with torch.no_grad():
        model(**_inputs(model, 2))
    assert model._core.first_call_s > 0
    assert recorded_compile_s(model, "default") == pytest.approx(model._core.first_call_s)
    # a user's own inductor cache is respected
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "mine"))
    accelerate(_small(), compile="default")
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "mine")


def test_auto_stays_eager_on_the_cpu_and_compiles_after_its_cost_on_a_gpu(monkeypatch):
    model = accelerate(_small(), compile="auto")
    assert model._core == model._forward  # CPU: never compiles
    # the rule itself (as on a GPU): eager until the eager time reaches the compile cost
    calls = []
    monkeypatch.setattr(torch, "compile", _fake_compile(calls))
    monkeypatch.setattr(perf.fast, "_compile_available", lambda device: (True, ""))
    model = accelerate(_small(), compile="auto")
    core = model._core
    assert isinstance(core, CompiledCore) and core.after_s == AUTO_COMPILE_COST_S and core.mode == "default"
    core.after_s = 1e-9  # a compile cost any forward pass exceeds
    with torch.no_grad():
        model(**_inputs(model, 2))
        assert calls == [] and core.eager_s > 0
        model(**_inputs(model, 2))
    assert [c[0] for c in calls] == ["compile", "call"]
    # a later process expects the compile time this one measured
    assert accelerate(_small(), compile="auto")._core.after_s == pytest.approx(core.first_call_s)


def test_accelerate_backend_sets_both_unets(monkeypatch):
    monkeypatch.setattr(torch, "compile", _fake_compile([]))
    backend = Backend(name="t", segmenter=None, base_model=_small().set_fast(False), upsampler=_small_up().set_fast(False),
                      tokenizer=ByteTokenizer())
    assert accelerate_backend(backend) is backend
    assert backend.base_model.fast and backend.upsampler.fast
    assert backend.base_model._core == backend.base_model._forward
    accelerate_backend(backend, compile="reduce-overhead")
    assert all(isinstance(m._core, CompiledCore) and m._core.mode == "reduce-overhead"
               for m in (backend.base_model, backend.upsampler))
    accelerate_backend(backend, compile="off")
    assert backend.base_model._core == backend.base_model._forward
    with pytest.raises(ValueError, match="compile='fast'.*accepted: off, auto"):
        accelerate_backend(backend, compile="fast")


@pytest.mark.slow
def test_one_dynamo_graph_serves_every_batch_size():
    """With the real compiler front end (dynamo; no code generation), batch sizes 2, 4, 1 and 3
    share one graph."""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    model = _small()
    model._core = CompiledCore(model, backend="eager")
    with torch.no_grad():
        for b in (2, 4, 1, 3):
            out = model(**_inputs(model, b))
            assert out.shape[0] == b
    assert counters["stats"]["unique_graphs"] == 1


# ----------------------------------------------------------------------------- the bench
def test_flop_count_matches_the_published_work():
    assert abs(forward_gflop(create_model("base-inpaint", device="meta"), 64) - 238.3) < 0.5
    assert abs(forward_gflop(create_model("upsample-inpaint", device="meta"), 256, low_res=True) - 1282.0) < 0.5


def _bench_models_small(device, tiny, dtype):
    from romlib.backends import tiny_clip_ranker

    base, up = _small(), _small_up()
    up.cfg.image_size = 128  # frames of 128 px: the pipeline upsamples 32 -> 128 (any factor works)
    return base.to(device), up.to(device), ByteTokenizer(), tiny_clip_ranker()


def test_bench_times_the_pipeline_edit_on_the_cpu(monkeypatch):
    monkeypatch.setattr(romlib.bench, "_bench_models", _bench_models_small)
    rows = run_bench("cpu", batches=(1,), steps=2, upsample_steps="2", paths=("eager",), warmup_steps=2)
    (row,) = rows
    assert (row.path, row.dtype, row.batch, row.steps, row.upsample_steps) == ("eager", "fp32", 1, 2, 2)
    assert row.warmup_s > 0 and row.base_s > 0 and row.upsample_s > 0 and row.rank_s >= 0
    assert row.total_s >= row.base_s + row.upsample_s
    assert row.compile_s is None and row.peak_gib is None  # eager; no CUDA memory on the CPU
    assert row.gflop > 0 and row.tflops > 0
    table = format_bench(rows, "CPU")
    assert "TFLOP/s" in table and "warm-up s" in table and "eager" in table
    md = format_bench(rows + [perf.BenchRow("reference", "fp32", 1, 2, 2, 1.0, 1.0, None, 2 * row.total_s, 1.0, None,
                                            None, row.gflop)], markdown=True)
    assert md.splitlines()[2].split("|")[12].strip() == "0.50"  # x ref: half the reference's time


def test_bench_times_the_sampler_it_is_given(monkeypatch):
    """``romlib bench --sampler dpmpp-2m``: the timed edit runs that sampler (the pipeline records it) and the row says so."""
    import romlib.pipeline

    monkeypatch.setattr(romlib.bench, "_bench_models", _bench_models_small)
    used, edit = [], romlib.pipeline.ROMPipeline.edit

    def spy(self, *a, **k):
        r = edit(self, *a, **k)
        used.append(r.settings["sampler"])
        return r

    monkeypatch.setattr(romlib.pipeline.ROMPipeline, "edit", spy)
    (row,) = run_bench("cpu", batches=(1,), steps=2, upsample_steps="2", warmup_steps=2, sampler="dpmpp-2m")
    assert used == ["dpmpp-2m", "dpmpp-2m"] and row.sampler == "dpmpp-2m"
    assert "dpmpp-2m" in format_bench([row]).splitlines()[2]
    from romlib.cli import build_parser

    with pytest.raises(SystemExit):
        build_parser().parse_args(["bench", "--sampler", "euler"])


def test_reference_must_be_a_glide_checkout(tmp_path):
    with pytest.raises(ValueError, match="not a glide-text2im checkout.*model_creation.py"):
        import_reference(tmp_path)
    with pytest.raises(ValueError, match="not a glide-text2im checkout"):
        run_bench("cpu", batches=(1,), reference=str(tmp_path))  # before any timing
    from romlib.cli import main

    assert main(["bench", "--reference", str(tmp_path)]) == 2


def test_gpu_check_script_dry_run(tmp_path):
    out = subprocess.run(["bash", str(ROOT / "tools" / "gpu_check.sh"), "--dry-run", "--out", str(tmp_path / "t.md"),
                          "--reference", "/some/glide-text2im"], capture_output=True, text=True, check=True).stdout
    assert "--paths plain eager" in out and "compile:default" in out and "--batch 4 24" in out
    assert "--reference /some/glide-text2im" in out and "--fast-vs-plain" in out
    assert str(tmp_path / "t.md") in out and "reduce-overhead" not in out
    graphs = subprocess.run(["bash", str(ROOT / "tools" / "gpu_check.sh"), "--dry-run", "--cudagraphs"],
                            capture_output=True, text=True, check=True).stdout
    assert "compile:reduce-overhead" in graphs
    bad = subprocess.run(["bash", str(ROOT / "tools" / "gpu_check.sh"), "--bogus"], capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown argument --bogus" in bad.stderr


_FAKE_GLIDE = '''
"""A stand-in for glide-text2im's model_creation API (test only), built from romlib's own code."""
from romlib.models.glide import GlideConfig, GlideUNet
from romlib.sampling.diffusion import create_diffusion

CREATED = []


class _Tokenizer:
    def encode(self, text):
        return list(text.encode())

    def padded_tokens_and_mask(self, tokens, ctx):
        tokens = tokens[:ctx]
        return tokens + [0] * (ctx - len(tokens)), [True] * len(tokens) + [False] * (ctx - len(tokens))


def model_and_diffusion_defaults():
    return dict(image_size=64, num_channels=192, text_ctx=128, diffusion_steps=1000, noise_schedule="squaredcos_cap_v2",
                timestep_respacing="", use_fp16=True, inpaint=False, super_res=False)


def model_and_diffusion_defaults_upsampler():
    return dict(model_and_diffusion_defaults(), image_size=256, noise_schedule="linear", super_res=True)


def create_gaussian_diffusion(steps, noise_schedule, timestep_respacing):
    return create_diffusion(steps, noise_schedule, timestep_respacing)


def create_model_and_diffusion(**o):
    CREATED.append(o)
    cfg = GlideConfig(text_ctx=o["text_ctx"], xf_width=16, xf_layers=1, xf_heads=1, model_channels=32, num_res_blocks=1,
                      channel_mult=(1, 1), attention_resolutions=(), num_head_channels=16, n_vocab=256,
                      inpaint=o["inpaint"], super_res=o["super_res"], image_size=o["image_size"])
    model = GlideUNet(cfg)
    model.tokenizer = _Tokenizer()
    return model, create_gaussian_diffusion(o["diffusion_steps"], o["noise_schedule"], o["timestep_respacing"])
'''


@pytest.mark.slow  # 256-px sampling on the CPU: about 15-45 s
def test_reference_loop_runs_from_a_checkout_path(tmp_path):
    pkg = tmp_path / "glide_text2im"
    pkg.mkdir()
    for name in ("__init__.py", "gaussian_diffusion.py", "text2im_model.py"):
        (pkg / name).write_text("")
    (pkg / "model_creation.py").write_text(_FAKE_GLIDE)
    try:
        rows = perf.run_reference(str(tmp_path), "cpu", batches=(1,), dtype="fp32", tiny=True, steps=2,
                                  upsample_steps="2", warmup_steps=2)
        created = sys.modules["glide_text2im.model_creation"].CREATED
    finally:
        for name in [m for m in sys.modules if m.startswith("glide_text2im")]:
            del sys.modules[name]
        sys.path.remove(str(tmp_path.resolve()))
    (row,) = rows
    assert (row.path, row.batch, row.steps, row.upsample_steps) == ("reference", 1, 2, 2)
    assert row.base_s > 0 and row.upsample_s > 0 and row.total_s == row.base_s + row.upsample_s and row.warmup_s > 0
    base, up = created  # the options the checkout was asked for: romlib's tiny sizes, inpainting, fp32
    assert base["inpaint"] and up["inpaint"] and up["super_res"] and not base["use_fp16"]
    assert base["timestep_respacing"] == "2" and base["channel_mult"] == "1,1,2,2" and base["attention_resolutions"] == "16,8"
