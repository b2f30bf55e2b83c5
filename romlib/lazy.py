"""A package's names imported from its modules on first use (PEP 562's module ``__getattr__``), for the packages
whose modules sit in different layers (``romlib.guidance``, ``romlib.perf``): importing the package then imports none
of them, so a lower module can import one without pulling in the higher ones."""
from __future__ import annotations

import importlib

__all__ = ["lazy_names"]


def lazy_names(package: str, names: dict[str, str], namespace: dict):
    """``(__getattr__, __dir__)`` for ``package``: ``package.<name>`` is ``package.<names[name]>.<name>``, imported on
    first use; ``namespace`` is the package's ``globals()``.

    >>> getattr_, dir_ = lazy_names("romlib.guidance", {"RULES": "cfg"}, {})
    >>> sorted(getattr_("RULES")) == sorted(__import__("romlib.guidance.cfg", fromlist=["RULES"]).RULES)
    True
    """

    def __getattr__(name: str):
        if name in names:
            return getattr(importlib.import_module(f"{package}.{names[name]}"), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__():
        return sorted(list(namespace) + list(names))

    return __getattr__, __dir__
