"""nbval runs the notebooks in the environment they were stored in (tools/refresh_notebooks.py):
offline (``ROMLIB_BACKEND=offline``: each notebook's embedded backend, ShapesWorld or the world), the Agg backend (so only explicitly displayed figures exist) and no progress
bars (``ROMLIB_PROGRESS=0``: ``rl.nb.setup()`` sets ``env.progress`` from it). The kernel inherits
this process's environment, so setting it here, before any notebook starts, is enough."""
import os

for _k, _v in {"ROMLIB_BACKEND": "offline", "MPLBACKEND": "Agg", "ROMLIB_PROGRESS": "0"}.items():
    os.environ.setdefault(_k, _v)
