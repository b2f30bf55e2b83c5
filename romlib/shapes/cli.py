"""The ShapesWorld sub-commands of ``romlib`` (wired in :mod:`romlib.cli`):
``romlib shapes-train`` (:mod:`romlib.shapes.train`) and ``romlib shapes-bench`` (:mod:`romlib.shapes.bench`)."""
from .bench import add_bench_args, bench_command
from .train import add_train_args, train_command

__all__ = ["add_train_args", "train_command", "add_bench_args", "bench_command"]
