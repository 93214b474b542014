"""layers/ and the keras TV-L1 must run on any Keras backend: their tests run under
TensorFlow with the rest of the suite, and again here under JAX, in a process of their own
(Keras reads KERAS_BACKEND once, at import). One test of the parallel run, so pytest-xdist
fits it beside the others rather than after them. OpenCV's reference flows of test_tvl1.py
are computed once for both runs (test_tvl1.py: opencv)."""

import os
import subprocess
import sys

from .conftest import ROOT
from .test_tvl1 import OPENCV_FLOWS, flows_folder

FILES = ("tests/test_layers.py", "tests/test_tvl1.py")


def test_layers_and_the_keras_tvl1_pass_under_jax(tmp_path_factory):
    flows = str(flows_folder(tmp_path_factory))
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--durations=5", *FILES],
        cwd=ROOT,
        env={**os.environ, "KERAS_BACKEND": "jax", OPENCV_FLOWS: flows},
        capture_output=True,
        text=True,
        timeout=900,
    )
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-12000:]
    # the one test that needs TensorFlow says so (pyproject's -ra prints why it skipped)
    assert "tf.nn.lrn exists only on the TensorFlow backend" in run.stdout, run.stdout[-3000:]
    summary = run.stdout.strip().splitlines()[-1]
    assert " passed" in summary and "failed" not in summary and "error" not in summary, summary
