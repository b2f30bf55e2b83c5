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
