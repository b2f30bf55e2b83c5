"""The world's latent model (romlib.world.latent, backend world-latent): SD's classes trained on the world, its
tokenizer, its trainers and weight files, and romlib's latent loop on it (notebook 07 offline)."""
import numpy as np
import pytest
import torch

pytest.importorskip("diffusers")

from romlib.models.sd import LatentInpainter  # noqa: E402
from romlib.pipeline import ROMPipeline  # noqa: E402
from romlib.sampling.latent import prepare_latent  # noqa: E402
from romlib.world import backend as WB  # noqa: E402
from romlib.world import data as batches  # noqa: E402
from romlib.world import latent as L  # noqa: E402
from romlib.world import train as T  # noqa: E402
from romlib.world.language import VOCAB  # noqa: E402


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def test_every_world_word_is_one_clip_token_and_texts_read_back():
    tok = L.world_clip_tokenizer()
    for w in VOCAB[1:]:
        assert len(tok.tokenize(w)) == 1, (w, tok.tokenize(w))
    text = "the larger of the two green cubes"
    ids = tok([text], padding="max_length", max_length=tok.model_max_length, return_tensors="pt").input_ids[0]
    words = text.split()
    assert ids[0] == 0 and (ids[1:len(words) + 1] != 1).all() and (ids[len(words) + 1:] == 1).all()
    assert tok.decode(ids, skip_special_tokens=True).strip() == text
    assert len(set(tok.convert_tokens_to_ids([w + "</w>" for w in VOCAB[1:]]))) == len(VOCAB) - 1
    # a word outside the vocabulary falls back to letters (never an error, never another word's token)
    assert tok.tokenize("zebra") == ["z", "e", "b", "r", "a</w>"]


def test_latent_mask_is_the_one_sampling_gives_the_unet():
    keep = torch.ones(1, 1, 64, 64)
    keep[..., 10:37, 20:50] = 0
    model = T.SETUPS["latent"](batches, vae=L.build_vae()).model
    setup = prepare_latent(model, image=torch.zeros(1, 3, 64, 64), keep_mask=keep, target="a red cube", ref="the cube",
                           rule="cf", scale=3.0)
    assert torch.equal(L.latent_mask(keep), setup.mask)
    assert setup.mask.shape[-1] == L.LATENT_SIZE == 16


@pytest.mark.parametrize("name", ["vae", "latent"])
def test_steps_lower_the_loss_on_a_fixed_batch(name):
    s = T.SETUPS[name](batches, eval_n=0) if name == "vae" else T.SETUPS[name](batches, vae=L.build_vae())
    trainable = [p for p in s.model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=2e-3)

    def loss():
        torch.manual_seed(1)
        return s.loss_fn(s.model, np.random.default_rng(1), 4)["loss"]

    first = loss().item()
    for _ in range(6):
        value = loss()
        opt.zero_grad()
        value.backward()
        opt.step()
    assert loss().item() < 0.9 * first
    if name == "latent":  # the VAE is frozen: only the UNet and the text encoder learn
        assert all(not p.requires_grad for p in s.model.vae.parameters())


def test_the_latent_model_needs_the_runs_vae_first(tmp_path):
    with pytest.raises(FileNotFoundError, match="--what vae"):
        T.train("latent", tmp_path, batches=batches, steps=1, batch_size=2, progress=False)


@pytest.fixture(scope="module")
def latent_weights(tmp_path_factory):
    """A weights folder with a VAE and a latent model trained for two steps each, and the shipped segmenter and
    ranker (the world-latent backend's four files)."""
    folder = tmp_path_factory.mktemp("world_latent")
    kw = dict(steps=2, batch_size=2, progress=False, save_every=1)
    T.train("vae", folder, batches=batches, setup_options={"eval_n": 8}, **kw)
    T.train("latent", folder, batches=batches, **kw)
    for m in ("segmenter", "ranker"):
        (folder / f"{m}.pt").symlink_to(WB.WEIGHTS_DIR / f"{m}.pt")
    return folder


def test_the_weight_files_load_back_as_sd_classes(latent_weights):
    vae = L.load_vae(latent_weights / "vae.pt")
    assert vae.meta["steps"] == 2 and 0 < vae.config.scaling_factor != 1.0  # measured on the data when saved
    assert np.isfinite(vae.meta["heldout_psnr_db"])
    model = L.load_latent(latent_weights / "latent.pt", vae)
    assert isinstance(model, LatentInpainter) and type(model.unet).__name__ == "UNet2DConditionModel"
    assert (model.cfg.frame_size, model.cfg.image_size, model.cfg.latent_channels) == (64, 16, 8)
    assert model.unet.config.in_channels == 17  # 8 (z_t) + 1 (mask) + 8 (image latents)
    assert model.cfg.scaling_factor == pytest.approx(vae.config.scaling_factor)
    assert all(p.dtype == torch.float32 for p in model.parameters()) and not model.training


def test_damaged_weight_files_are_named(tmp_path, latent_weights):
    bad = tmp_path / "latent.pt"
    bad.write_bytes(b"not a torch file")
    vae = L.load_vae(latent_weights / "vae.pt")
    with pytest.raises(ValueError, match="latent.pt is damaged.*--what latent"):
        L.load_latent(bad, vae)
    other = tmp_path / "vae.pt"
    torch.save({"config": {}, "state_dict": {"nothing": torch.zeros(1)}}, other)
    with pytest.raises(ValueError, match="vae.pt is damaged"):
        L.load_vae(other)


def test_the_backend_edits_with_the_latent_loop_and_names_missing_files(latent_weights, tmp_path, monkeypatch):
    monkeypatch.setattr(WB, "LATENT_STEPS", "2")
    pipe = ROMPipeline(WB.load_latent_backend(weights=latent_weights))
    image = np.full((64, 64, 3), 90, np.uint8)
    mask = torch.zeros(64, 64, dtype=torch.bool)
    mask[20:40, 20:40] = True
    r = pipe.edit(image, "the red cube", "a blue cube", samples=2, mask=mask, guidance="ccf", progress=False)
    assert r.images.shape == (2, 3, 64, 64) and r.settings["steps"] == "2" and r.settings["base_size"] == 16
    keep = ~r.edit_mask.bool().numpy()
    assert (np.asarray(r.full_res[0])[keep] == 90).all()  # pasted back: only the hole changed
    frame = ((r.images[0] + 1) * 127.5).round().permute(1, 2, 0).numpy()
    assert (frame[keep] != 90).any()  # the frame itself is the VAE's decode, the known region included
    (tmp_path / "segmenter.pt").symlink_to(WB.WEIGHTS_DIR / "segmenter.pt")
    with pytest.raises(FileNotFoundError, match=r"lacks vae.pt, latent.pt, ranker.pt.*--what vae"):
        WB.load_latent_backend(weights=tmp_path)


def test_an_inpainter_refuses_a_unet_that_does_not_read_its_vaes_latents():
    cfg = {**L.unet_config(), "in_channels": 9, "out_channels": 4}  # SD's 4-channel layout on the 8-channel VAE
    with pytest.raises(ValueError, match="8-channel latents takes 17 input channels.*not in_channels=9"):
        L.build_latent(L.build_vae(), cfg)


def test_the_shipped_latent_pair_is_trained_and_loads_with_nothing_set(monkeypatch):
    monkeypatch.delenv(WB.WEIGHTS_ENV, raising=False)
    b = WB.load_latent_backend()
    model = b.base_model
    assert b.family == "latent" and b.segmenter_name == "world" and b.default_scales == WB.LATENT_SCALES
    assert model.meta["steps"] > 1000 and model.vae.meta["steps"] > 1000
    assert model.vae.meta["heldout_psnr_db"] > 25  # the round trip the notebook shows (28.4 dB when shipped)
    assert model.cfg.scaling_factor != 1.0
