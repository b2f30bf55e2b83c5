"""A pytest plugin (``-p tests.support.workers`` in pytest.ini): the suite runs in parallel (pytest-xdist, ``-n auto
--dist loadfile``: each test file, and each notebook under nbval, runs whole in one worker). Each worker, and every
process it starts (notebook kernels, the ``romlib`` commands of the tests), uses its share of the cores, so that
the workers do not oversubscribe them; set when pytest starts, before any test module imports torch."""
import os

_workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
#: torch threads of this process and the processes it starts (at most 2, as the suite's serial run used)
THREADS = max(1, min(2, (os.cpu_count() or 1) // _workers))
if "PYTEST_XDIST_WORKER" in os.environ:
    for _k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_k, str(THREADS))
