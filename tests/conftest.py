import os
import signal

import pytest
import torch

from tests.support.workers import THREADS
from tests.support.reference import reference_dir, reference_tokenizer

torch.set_num_threads(min(THREADS, torch.get_num_threads()))  # the root conftest: a worker's share of the cores


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: real weights or long runs; opt in with RUN_SLOW=1")


def pytest_collection_modifyitems(config, items):
    if os.environ.get("RUN_SLOW") == "1":
        return
    skip = pytest.mark.skip(reason="slow test: set RUN_SLOW=1 (needs real weights / a GPU)")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module's tests: on a shared 2-core machine two threads spin against each other
    (docs/world_training.md)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def untrained_world(tmp_path_factory):
    """The world backend's pipeline on untrained weights of the shipped sizes, one torch thread (a module's tests)."""
    from romlib.pipeline import ROMPipeline
    from romlib.world import backend as world_backend
    from romlib.world.train import write_untrained

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    folder = tmp_path_factory.mktemp("world_weights")
    write_untrained(folder)
    yield ROMPipeline(world_backend.load_backend(weights=folder))
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def ref():
    d = reference_dir()
    if d is None:
        pytest.skip("../shared/reference is not available")
    return d


@pytest.fixture(scope="session")
def gpt2_tokenizer(ref):
    return reference_tokenizer()


@pytest.fixture(autouse=True)
def _signal_handlers_restored():
    """Each test starts with the SIGINT/SIGTERM handlers the session had and leaves them so: ``romlib``'s ``main``
    run with the process's own arguments ignores both on its way out (the program ends), which would leak into
    every later test of the same process (a worker runs many files)."""
    old = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    yield
    for s, handler in old.items():
        if handler is not None and signal.getsignal(s) != handler:
            signal.signal(s, handler)


@pytest.fixture
def python_signal_handlers():
    """Python's own handlers for the test (SIGINT raises KeyboardInterrupt, SIGTERM ends the process), whatever a
    library loaded earlier in this worker installed (the autouse fixture above puts the earlier ones back)."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
