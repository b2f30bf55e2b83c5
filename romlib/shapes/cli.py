"""The ShapesWorld sub-commands of ``romlib`` (wired in :mod:`romlib.cli`; their arguments are defined in
:mod:`romlib.arguments`): ``romlib shapes-train`` (:mod:`romlib.shapes.train`) and ``romlib shapes-bench``
(:mod:`romlib.shapes.bench`)."""
from .bench import bench_command
from .train import train_command

__all__ = ["train_command", "bench_command"]
