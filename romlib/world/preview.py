"""A look at the world: scenes with a referring expression and the referred object's outline, the
removal's ground truth (the room without the object and its shadow) and a paired training source.

``python -m romlib.world.preview [seed] [path]`` writes the figure (default ``world_preview.png``).
"""
from __future__ import annotations

import logging
import sys

import numpy as np

from .data import counterfactual, object_hole
from .language import ATTRS, describe, needs_context, sample_expression
from .render import render, render_all
from .scene import make_scene

__all__ = ["figure"]

log = logging.getLogger(__name__)


def _outline(ax, mask: np.ndarray, colour: str) -> None:
    ax.contour(mask.astype(float), levels=[0.5], colors=[colour], linewidths=1.2)


def figure(seed: int = 0, n: int = 12):
    """A matplotlib figure of ``n`` scenes (two per row), each as three panels: the scene with a referring
    expression (look-alikes when the scene has them) and the referred object's visible mask outlined; the
    scene with that object removed (its shadow too: the ground truth of an empty target); and a paired
    source for a target naming some of its attributes (the source differs in those, keeps the rest),
    with the training hole outlined."""
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(seed)
    rows = (n + 1) // 2
    fig, axes = plt.subplots(rows, 6, figsize=(13.5, 2.45 * rows))
    for k in range(n):
        scene = make_scene(rng, lookalike=0.8)
        i = int(rng.integers(len(scene.objects)))
        text = sample_expression(rng, scene, i, p_context=0.8) or "(no expression)"
        img, vis, _ = render_all(scene)
        hole = object_hole(rng, scene, i, vis)
        named = tuple(a for a in ATTRS if rng.random() < 0.5) or ("colour",)
        target = describe(scene.objects[i], named)
        source = np.where(hole[..., None], render(counterfactual(rng, scene, i, target, p_change=1.0)),
                          img).astype(np.uint8)
        ax = axes[k // 2, 3 * (k % 2):3 * (k % 2) + 3]
        ax[0].imshow(img.round().astype(np.uint8))
        _outline(ax[0], vis[i] > 0.5, "white")
        ax[0].set_title(("◆ " if needs_context(scene, text) else "") + text, fontsize=7.5)
        ax[1].imshow(render(scene.without(i)))
        ax[1].set_title("removed (shadow too)", fontsize=7.5)
        ax[2].imshow(source)
        _outline(ax[2], hole, "yellow")
        ax[2].set_title(f"source for '{target}'", fontsize=7.5)
    for a in axes.flat:
        a.set_xticks([]), a.set_yticks([])
    fig.suptitle(f"the embedded world (seed {seed}): ◆ = a look-alike needs the relation", fontsize=10)
    fig.tight_layout()
    return fig


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    seed = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    path = sys.argv[2] if len(sys.argv) > 2 else "world_preview.png"
    figure(seed).savefig(path, dpi=110)
    log.info("wrote %s", path)
