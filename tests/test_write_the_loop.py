"""Notebook 08's loop checks and the hints of every exercise: where two loops part, what an untouched stub is told,
what an unnamed mistake is told, and how rl.hint goes from a pointer to the formula."""
from __future__ import annotations

import pytest
import torch

import romlib as rl
from romlib.teach import exercises
from romlib.teach.exercises import EXERCISES, check, nb08

IDS = list(EXERCISES)


def _stub(e):
    ns = {"rl": rl, "reverse_step": nb08.reverse_step, "sample_loop": nb08.sample_loop}
    exec(e.stub, ns)
    return ns[e.function]


@pytest.mark.parametrize("eid", IDS)
def test_an_untouched_stub_is_not_attempted_yet_and_shows_no_formula(eid):
    e = EXERCISES[eid]
    v = check(eid, _stub(e), show=False)
    assert not v.ok and v.message.startswith("not attempted yet"), v.message
    assert e.hint not in v.message and f"rl.hint({eid!r})" in v.message


@pytest.mark.parametrize("eid", IDS)
def test_hints_go_from_the_paper_to_the_formula_one_call_at_a_time(eid, monkeypatch):
    monkeypatch.setattr(exercises, "_GIVEN", {})
    e = EXERCISES[eid]
    first, second, third, again = (rl.hint(eid, show=False) for _ in range(4))
    assert len(e.levels) == 3 and "§" in first or "notebook" in first
    assert e.hint not in first and e.hint not in second and e.hint in third and third == again
    assert "Hint 1 of 3" in first and "the formula" in third
    assert rl.hint(eid, level=2, show=False) == second
    assert "has hints 1 to 3" in rl.hint(eid, level=7, show=False)
    assert "no exercise" in rl.hint("no-such-id", show=False)


def test_an_unnamed_mistake_gets_a_pointer_not_the_formula():
    v = check("01.cf", lambda u, c, s: u + s * (c - u) + 1e-2, show=False)
    e = EXERCISES["01.cf"]
    assert not v.ok and e.hints[0] in v.message and e.hint not in v.message and "rl.hint('01.cf')" in v.message


def test_the_loop_check_names_the_first_step_and_quantity_that_differ():
    e = EXERCISES["08.loop"]
    v = check("08.loop", e.mistakes[1].fn, show=False)  # eps_fn called with the step number k
    assert v.message.startswith("step 1 (t = 999): your ε̂ differs"), v.message
    v = check("08.loop", e.mistakes[2].fn, show=False)  # restarts from x_T: step 1 is right, step 2 is not
    assert v.message.startswith("step 2 (t = 888): your ε̂ differs"), v.message


def test_forcing_the_known_region_in_x_t_is_named_with_its_region():
    e = EXERCISES["08.known-region"]
    v = check("08.known-region", e.mistakes[0].fn, show=False)
    assert v.message.startswith("step 1 (t = 999): your x̂_0 differs"), v.message
    assert "only in the known region" in v.message and "forced through x̂_0, not x_t" in v.message


def test_a_loop_off_at_one_late_step_is_caught_there():
    def late(eps_fn, x_T, timesteps, ab, noises, denoised_fn=None, clip=False):
        steps = nb08.sample_loop(eps_fn, x_T, timesteps, ab, noises, denoised_fn, clip)
        eps, x0, x = steps[6]
        steps[6] = (eps, x0, x + 0.01)
        return steps
    v = check("08.loop", late, show=False)
    assert v.message.startswith("step 7 (t = 333): your x_{t-1} differs"), v.message


def test_ccf_inside_the_loop_tells_cf_from_ccf():
    v = check("08.ccf", nb08.cf_eps_fn.__wrapped__ if hasattr(nb08.cf_eps_fn, "__wrapped__") else
              (lambda model, image, keep, ref, target, s: nb08.cf_eps_fn(model, image, keep, target, s)), show=False)
    assert "that is CF (eq. 6)" in v.message and v.message.startswith("step 1")
    v = check("08.ccf", lambda *a: torch.zeros(3), show=False)
    assert not v.ok and "expected eps_fn, a function of (x_t, t)" in v.message


def test_the_training_step_compares_the_weights_after_it():
    e = EXERCISES["08.train-step"]
    v = check("08.train-step", e.mistakes[1].fn, show=False)  # no zero_grad: the loss is right, the weights are not
    assert v.message.startswith("your weight vector after the step differs") and "zero_grad" in v.message
    assert check("08.train-step", e.solution, show=False).ok


def test_yours_hands_back_the_answer_once_it_passes_else_the_solution(capsys):
    e = EXERCISES["08.diffedit"]
    assert exercises.yours("08.diffedit", e.solution) is e.solution
    assert exercises.yours("08.diffedit", _stub(e)) is e.solution
    assert "romlib's solution" in capsys.readouterr().out


def test_the_student_loop_equals_the_library_loop_on_shapesworld_sized_inputs():
    L = rl.teach.loop
    diffusion, timesteps, abar = L.schedule(8)
    image = torch.rand(1, 3, 8, 8) * 2 - 1
    keep = torch.ones(1, 1, 8, 8)
    keep[..., 2:6, 2:6] = 0
    eps_fn = nb08.ccf_eps_fn(L.stand_in_model, image, keep, "the red circle", "a blue square", 3.0)
    x_T, noises = L.loop_noise((2, 3, 8, 8), 8)
    mine = nb08.inpaint_loop(eps_fn, x_T, timesteps, abar, noises, image, keep)
    lib = L.inpaint_loop(eps_fn, x_T, diffusion, noises, image, keep)
    assert nb08.divergence(mine, lib, timesteps) is None
    assert torch.allclose(mine[-1][2] * keep, image.expand(2, -1, -1, -1) * keep, atol=1e-5)  # the known region: the image
    rp = L.repaint_loop(eps_fn, x_T, diffusion, noises, image, keep)
    assert nb08.divergence(rp, lib, timesteps).startswith("step 1 (t = 999): your x̂_0 differs")  # not forced there


def test_win_probability_takes_a_nested_list_with_a_zero_diagonal():
    e = EXERCISES["06.win-prob"]

    def as_lists(ranks):
        p = e.solution(ranks)
        return [[0.0 if i == j else float(p[i, j]) for j in range(len(p))] for i in range(len(p))]
    assert check("06.win-prob", as_lists, show=False).ok
    assert not check("06.win-prob", lambda r: [[0.0] * r.shape[-1]] * r.shape[-1], show=False).ok


def test_one_crop_box_rule_for_the_ranking_and_the_figures():
    box = (5.0, 4.0, 16.0, 15.0)  # notebook 00's case: the rounding rule gave (3, 2, 18, 17), the ranking crops this
    assert rl.masks.rank_crop(box, 32, 32) == (3, 2, 17, 16)
    x = torch.zeros(1, 3, 32, 32)
    assert rl.rank.ranking_inputs(x, "local", box=box).shape[0] == 1  # the ranking crops through rank_crop


def test_a_guided_eps_fn_that_returns_a_huge_expanded_tensor_is_refused_by_its_shape():
    huge = torch.zeros(1).expand(10 ** 6, 10 ** 6)  # a lazy view of 10^12 values: never materialised
    v = check("08.ccf", lambda *a: (lambda x_t, t: huge), show=False)
    assert not v.ok and "eps_fn returned shape (1000000, 1000000)" in v.message


def test_the_toys_clip_panel_with_the_exact_eps_goes_along_the_texts_direction():
    world = rl.toy.ToyWorld()
    x = torch.tensor([[1.2, 0.6], [0.0, 0.0]])
    # exact ε of one blob: sqrt(1 - ᾱ)(x - sqrt(ᾱ)μ)/v; zero at the blob's noised centre
    ab = float(rl.toy._alpha_bar(500))
    centre = torch.tensor([[1.2, 0.6]]) * ab ** 0.5
    assert torch.allclose(rl.toy.exact_eps(world, centre, 500, "a blue truck"), torch.zeros(1, 2), atol=1e-6)
    assert rl.toy.exact_eps(world, x, 500, "").shape == (2, 2)
    s = rl.toy.toy_sample_gradient(None, world, "a blue truck", kind="clip", scale=3.0, n=200, exact=True).mean(0)
    o = torch.tensor(list(world.classes.values())).mean(0)
    direction = torch.nn.functional.normalize(torch.tensor([1.2, 0.6]) - o, dim=0)
    along = torch.nn.functional.normalize(s - o, dim=0)
    assert float(s[0]) > 3 and float(along @ direction) > 0.99  # far past the blob, along the text's direction
