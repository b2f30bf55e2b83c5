"""The embedded world's language: parser, resolver, generated referring expressions, tokenizer."""
import numpy as np
import pytest

from romlib.world.language import (TEXT_CTX, VOCAB, NP, Parsed, describe, needs_context, parse_text,
                                   referring_expressions, resolve, sample_expression, tokenizer)
from romlib.world.scene import Background, Obj, Scene, make_scene

BG = Background(20.0, (150, 150, 150), (140, 140, 140), (110, 110, 110), (90, 90, 90), "plain")


def _scene(*objs):
    return Scene(BG, tuple(objs))


@pytest.mark.parametrize("seed", range(60))
def test_every_generated_expression_resolves_to_its_object(seed):
    scene = make_scene(seed, lookalike=0.8)
    for i in range(len(scene.objects)):
        refs = referring_expressions(scene, i)
        for text in refs:
            assert resolve(scene, text) == (i, ""), text
            assert parse_text(text).text() == text  # the parser reads back what the generator wrote
            assert len(tokenizer().encode(text)) <= TEXT_CTX


def test_sampled_expressions_resolve_and_use_lookalikes():
    rng = np.random.default_rng(0)
    n_context = 0
    for seed in range(80):
        scene = make_scene(seed, lookalike=0.8)
        i = int(rng.integers(len(scene.objects)))
        text = sample_expression(rng, scene, i, p_context=0.7)
        assert text is not None and resolve(scene, text)[0] == i, text
        n_context += needs_context(scene, text)
    assert n_context >= 25  # look-alikes are common and used


def test_relations_comparatives_and_ambiguity():
    red_sphere = Obj("sphere", "red", "matte", 44, 40, 24)
    cube_l = Obj("cube", "green", "matte", 14, 44, 16)
    cube_r = Obj("cube", "green", "shiny", 50, 56, 26)  # right of the sphere, nearer
    s = _scene(red_sphere, cube_l, cube_r)
    assert resolve(s, "the cube left of the red sphere") == (1, "")
    assert resolve(s, "the cube right of the red sphere") == (2, "")
    assert resolve(s, "the larger of the two green ones") == (2, "")
    assert resolve(s, "the smaller of the two cubes") == (1, "")
    assert resolve(s, "the cube in front") == (2, "")
    assert resolve(s, "the shiny cube") == (2, "")
    assert resolve(s, "the small one") == (1, "")
    assert resolve(s, "the cube")[0] is None  # two cubes: ambiguous
    assert resolve(s, "the blue cube")[0] is None  # absent
    near = _scene(Obj("cube", "red", "matte", 30, 40, 20), Obj("cube", "red", "matte", 32.5, 40, 20))
    assert resolve(near, "the cube on the left")[0] is None  # 2.5 px apart: below the margin


def test_descriptions_and_parser():
    o = Obj("sphere", "blue", "striped", 30, 40, 26)
    assert describe(o) == "a large striped blue sphere"
    assert describe(o, ("colour",)) == "a blue one"
    assert parse_text("a large striped sphere").named == {"size": "large", "material": "striped", "shape": "sphere"}
    assert parse_text("").empty and parse_text("a cube").named == {"shape": "cube"}
    p = parse_text("the cube left of the red sphere")
    assert p.relation == "left" and p.anchor == NP(colour="red", shape="sphere") and p.definite
    assert parse_text("the larger of the two green ones") == Parsed(NP(colour="green"), True, comparative="larger")
    with pytest.raises(ValueError, match="unknown word"):
        parse_text("the pyramid")
    with pytest.raises(ValueError, match="two colour words"):
        parse_text("a red blue cube")


def test_tokenizer_round_trip_and_batch():
    tok = tokenizer()
    text = "the larger of the two green ones"
    assert tok.decode(tok.encode(text)) == text
    ids, mask = tok.batch([text, ""], TEXT_CTX)
    assert ids.shape == (2, TEXT_CTX) and mask[0].sum() == 7 and mask[1].sum() == 0
    assert int(ids.max()) < len(VOCAB) and tok.n_vocab == len(VOCAB)
