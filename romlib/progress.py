"""Progress bars: plain text, so that they survive a notebook's save and reopen.

``tqdm.auto`` draws a Jupyter widget in a notebook; its state is not saved with the notebook, so a notebook
reopened without its kernel shows "Error displaying widget: model not found" where each bar was. Every romlib
bar is tqdm's text bar instead: in a terminal on stderr as usual; in a notebook kernel on stdout (a notebook shows
stderr on a red background, as if it were an error), a line of text saved and reopened like any other output.
"""
from __future__ import annotations

import sys

from tqdm.std import tqdm as _text_tqdm

__all__ = ["tqdm"]


def _in_kernel() -> bool:
    """Whether stdout is a Jupyter kernel's stream (ipykernel's OutStream)."""
    return type(sys.stdout).__module__.startswith("ipykernel")


class tqdm(_text_tqdm):
    """:class:`tqdm.std.tqdm`, on stdout in a notebook kernel and stderr elsewhere unless ``file=`` says otherwise
    (the same arguments as tqdm's; a class, so that it can be subclassed like tqdm's own)."""

    def __init__(self, iterable=None, *args, **kwargs):
        kwargs.setdefault("file", sys.stdout if _in_kernel() else sys.stderr)
        super().__init__(iterable, *args, **kwargs)
