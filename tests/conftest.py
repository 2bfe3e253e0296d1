"""Shared test fixtures.

Real data for tests lies in ``../shared/data`` beside the repository (see its README). A user's
fresh clone has no ``../shared``: tests that need it skip with a clear reason.
"""

import os
import pathlib

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# One kernel library for the whole test session: the CLI turns oneDNN on by default when it is
# the first to import TensorFlow, and subprocess runs must compute exactly what the in-process
# reference runs compute (resume and multi-worker tests compare weights bit for bit).
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

# Token caches (built implicitly by every training run) and the default corpus extraction go to a
# directory of this test session only: tests never read or fill a user's ~/.cache/t5pre.
# Subprocesses inherit it, so a test's child processes share the session's caches.
if not os.environ.get("T5PRE_TEST_KEEP_CACHE_DIR"):
    import atexit
    import shutil
    import tempfile

    _CACHE_DIR = tempfile.mkdtemp(prefix="t5pre-test-cache-")
    os.environ["T5PRE_CACHE_DIR"] = _CACHE_DIR
    atexit.register(shutil.rmtree, _CACHE_DIR, True)

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATA = pathlib.Path(os.environ.get("T5PRE_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> pathlib.Path:
    """Path to ``../shared/data``; skips the test when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real sample data not found at {SHARED_DATA} (set T5PRE_SHARED_DATA)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def repo_root() -> pathlib.Path:
    return REPO_ROOT
