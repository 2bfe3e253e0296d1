"""On the JAX backend TensorFlow only feeds tf.data: the JaxBackend hides every GPU/TPU from it
before TensorFlow's runtime starts (a TensorFlow that sees a GPU reserves most of its memory on
its first op). Checked in a JAX training subprocess: the call is made, before the runtime has
started, and TensorFlow sees no GPU afterwards. (This machine has no GPU: the test checks the
order and the call, which is what decides the outcome on a GPU host.)"""

import os
import subprocess
import sys

import pytest

pytest.importorskip("jax")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SCRIPT = r"""
import json, sys
import tensorflow as tf
from tensorflow.python.eager import context

calls = []
real = tf.config.set_visible_devices
real_list = tf.config.list_physical_devices

def recording(devices, kind=None):
    calls.append({"devices": list(devices), "kind": kind,
                  "runtime_started": context.context()._context_handle is not None})
    return real(devices, kind)

def pretend_gpu(kind=None):  # the call site asks which accelerators exist: pretend one GPU
    if kind == "GPU":
        return [tf.config.PhysicalDevice(name="/physical_device:GPU:0", device_type="GPU")]
    return real_list(kind)

tf.config.set_visible_devices = recording
tf.config.list_physical_devices = pretend_gpu
from t5pre.training import testing
testing._main(["--model-dir", sys.argv[1], "--set", "training.steps=2",
               "--set", "training.checkpoint_every=2"])
print("RESULT " + json.dumps({"calls": calls,
                              "visible_gpus": len(tf.config.get_visible_devices("GPU"))}))
"""


def test_jax_training_hides_gpus_from_tensorflow_before_its_first_op(tmp_path):
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu",
           "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": ROOT}
    result = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path / "run")], env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    import json

    line = [x for x in result.stdout.splitlines() if x.startswith("RESULT ")][-1]
    out = json.loads(line[len("RESULT "):])
    gpu_calls = [c for c in out["calls"] if c["kind"] == "GPU"]
    assert gpu_calls == [{"devices": [], "kind": "GPU", "runtime_started": False}]
    assert out["visible_gpus"] == 0
