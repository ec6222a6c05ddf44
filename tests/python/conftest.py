"""Shared fixtures of the Python test suite.

- ``gpu``: a fixture (and the ``gpu`` marker, declared in pyproject.toml) for tests that need a CUDA GPU;
  both skip cleanly when ``magmasr.cuda_available()`` is False (a CPU-only build, or no GPU / driver).
- ``shared_dir``: the ``shared`` folder next to the repository (``$MAGMASR_SHARED`` overrides it); the
  test is skipped when it does not exist.
- ``rng``: a NumPy generator with a fixed seed, so that every failure can be replayed.
- Hypothesis profiles: ``ci`` (the default: no deadline, ~25 examples per test, so the whole suite stays
  fast on a 2-core machine), ``dev`` (more examples) and ``debug``; select one with
  ``HYPOTHESIS_PROFILE=dev``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

# Passive OpenMP waiting, unless the caller chose otherwise. It changes no result, only how idle OpenMP
# threads wait: with the default spinning, every small parallel region of the CPU kernels costs a whole
# scheduler time slice as soon as another process competes for the cores, and the suite runs ~4x slower
# on a shared 2-core machine. It must be set before magmasr (and libgomp) is loaded.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import magmasr  # noqa: E402

try:
    from hypothesis import HealthCheck, Verbosity, settings

    _common = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    settings.register_profile("ci", max_examples=25, derandomize=True, print_blob=True, **_common)
    settings.register_profile("dev", max_examples=200, print_blob=True, **_common)
    settings.register_profile("debug", max_examples=10, verbosity=Verbosity.verbose, **_common)
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
except ImportError:  # hypothesis is a test extra; the modules that use it import it themselves
    pass

REPO_ROOT = Path(__file__).resolve().parents[2]


def _shared_path() -> Path:
    env = os.environ.get("MAGMASR_SHARED")
    return Path(env) if env else REPO_ROOT.parent / "shared"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The shared data folder (``../shared`` next to the repository, or ``$MAGMASR_SHARED``)."""
    path = _shared_path()
    if not path.is_dir():
        pytest.skip(f"shared folder not found at {path} (set MAGMASR_SHARED)")
    return path


@pytest.fixture(scope="session")
def gpu() -> magmasr.Device:
    """The first CUDA device; skips the test when no GPU is usable."""
    if not magmasr.cuda_available():
        pytest.skip("no usable CUDA GPU (magmasr.cuda_available() is False)")
    return magmasr.Device("cuda:0")


def pytest_collection_modifyitems(config, items):
    # A test that requests the `gpu` fixture is a `gpu` test (so `-m gpu` selects every one of them), and tests
    # marked `gpu` skip without a GPU even when they do not request the fixture.
    for item in items:
        if "gpu" in getattr(item, "fixturenames", ()) and item.get_closest_marker("gpu") is None:
            item.add_marker(pytest.mark.gpu)
    if magmasr.cuda_available():
        return
    skip = pytest.mark.skip(reason="no usable CUDA GPU (magmasr.cuda_available() is False)")
    for item in items:
        if item.get_closest_marker("gpu") is not None:
            item.add_marker(skip)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20240611)


@pytest.fixture
def make_clip():
    """A function that writes a synthetic test clip with ffmpeg (skips the test without imageio-ffmpeg):
    ``make_clip(path, size="48x32", rate=10, seconds=1, audio=False)``, ffmpeg's test pattern, in H.264 4:2:0
    (with a 440 Hz tone in AAC when `audio`), or lossless FFV1 for a ``.mkv`` path."""
    imageio_ffmpeg = pytest.importorskip("imageio_ffmpeg")
    import subprocess

    def make(path, size: str = "48x32", rate: int = 10, seconds: float = 1, audio: bool = False) -> Path:
        cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-loglevel", "error", "-f", "lavfi", "-i",
               f"testsrc=size={size}:rate={rate}"]
        if audio:
            cmd += ["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=22050"]
        cmd += ["-t", str(seconds)]
        cmd += ["-c:v", "ffv1"] if str(path).endswith(".mkv") else ["-c:v", "libx264", "-pix_fmt", "yuv420p"]
        if audio:
            cmd += ["-c:a", "aac", "-shortest"]
        subprocess.run(cmd + [str(path)], check=True)
        return Path(path)

    return make
