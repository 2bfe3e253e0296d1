"""T5/t5x Adafactor (t5pre.training.adafactor): its update against the paper's formulas written
out in numpy, its state size (factored statistics only), the JAX backend, and training."""

import math
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from t5pre.training.optimizer_state import is_factored, state_elements


def reference(w, grads, lr, *, decay_rate=0.8, eps1=1e-30, eps2=1e-3, clip=1.0,
              param_scale=True, beta_1=None, factored=False):
    """Shazeer & Stern (2018), Algorithms 4/5 with T5's choices, for a 1-D or 2-D ``w``."""
    w = w.astype(np.float64).copy()
    r = c = v = m = None
    for t, g in enumerate(grads, start=1):
        g = g.astype(np.float64)
        beta2 = 1.0 - t ** (-decay_rate)
        g2 = g * g + eps1
        if factored:
            r = g2.mean(axis=1) if r is None else beta2 * r + (1 - beta2) * g2.mean(axis=1)
            c = g2.mean(axis=0) if c is None else beta2 * c + (1 - beta2) * g2.mean(axis=0)
            v_hat = np.outer(r, c) / r.mean()
        else:
            v = g2 if v is None else beta2 * v + (1 - beta2) * g2
            v_hat = v
        u = g / np.sqrt(v_hat)
        if clip is not None:
            u = u / max(1.0, np.sqrt(np.mean(u * u)) / clip)
        alpha = lr * max(eps2, np.sqrt(np.mean(w * w))) if param_scale else lr
        step = alpha * u
        if beta_1:
            m = (1 - beta_1) * step if m is None else beta_1 * m + (1 - beta_1) * step
            step = m
        w = w - step
    return w


def _problem(shape, seed=0, grad_scale=1.0):
    rng = np.random.default_rng(seed)
    w = rng.normal(size=shape).astype("float32") * 0.5
    grads = [(rng.normal(size=shape) * grad_scale).astype("float32") for _ in range(4)]
    return w, grads


def _run_keras(w, grads, lr, **kwargs):
    import keras

    from t5pre.training.adafactor import Adafactor

    var = keras.Variable(w)
    opt = Adafactor(learning_rate=lr, **kwargs)
    opt.build([var])
    for g in grads:
        opt.apply([g], [var])
    return keras.ops.convert_to_numpy(var), opt


CASES = {
    # name: (shape, optimizer kwargs, reference kwargs)
    "factored_matrix": ((5, 7), dict(min_dim_size_to_factor=2), dict(factored=True)),
    "matrix_below_min_dim": ((5, 7), dict(min_dim_size_to_factor=6), dict(factored=False)),
    "vector": ((9,), dict(min_dim_size_to_factor=2), dict(factored=False)),
    "no_param_scale": ((5, 7), dict(min_dim_size_to_factor=2, multiply_by_parameter_scale=False),
                       dict(factored=True, param_scale=False)),
    "clipping_active": ((5, 7), dict(min_dim_size_to_factor=2, clipping_threshold=0.3),
                        dict(factored=True, clip=0.3)),
    "no_clipping": ((6,), dict(clipping_threshold=None), dict(clip=None)),
    "momentum": ((5, 7), dict(min_dim_size_to_factor=2, beta_1=0.9),
                 dict(factored=True, beta_1=0.9)),
    "decay_0_5": ((9,), dict(decay_rate=0.5), dict(decay_rate=0.5)),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_update_matches_the_paper_formulas(name):
    shape, kwargs, ref_kwargs = CASES[name]
    w, grads = _problem(shape, seed=len(name))
    got, opt = _run_keras(w, grads, 0.05, **kwargs)
    want = reference(w, grads, 0.05, **ref_kwargs)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert not np.allclose(got, w)  # it moved
    n_state = sum(math.prod(v.shape) for v in opt.variables) - 2  # minus iterations, lr
    assert n_state == (sum(shape) if ref_kwargs.get("factored") else math.prod(shape)) \
        + (math.prod(shape) if kwargs.get("beta_1") else 0)


def test_clipping_case_really_clips_and_factoring_really_differs():
    """The cases above would pass vacuously if clipping never bound or factoring changed nothing."""
    w, grads = _problem((5, 7), seed=len("clipping_active"))
    clipped = reference(w, grads, 0.05, factored=True, clip=0.3)
    assert not np.allclose(clipped, reference(w, grads, 0.05, factored=True, clip=None))
    assert not np.allclose(reference(w, grads, 0.05, factored=True),
                           reference(w, grads, 0.05, factored=False))


def test_config_round_trip_and_bad_arguments():
    from t5pre.training.adafactor import Adafactor

    opt = Adafactor(learning_rate=0.1, beta_1=0.5, min_dim_size_to_factor=64)
    again = Adafactor.from_config(opt.get_config())
    assert (again.beta_1, again.min_dim_size_to_factor, again.decay_rate) == (0.5, 64, 0.8)
    for bad in (dict(decay_rate=0.0), dict(beta_1=1.5), dict(clipping_threshold=-1.0),
                dict(min_dim_size_to_factor=0)):
        with pytest.raises(ValueError, match="Adafactor"):
            Adafactor(**bad)


# -- state size -------------------------------------------------------------------------------


def _tiny_config():
    from t5pre.models.config import T5Config

    return T5Config.from_name("tiny").resolve_vocab_size(4100)


def test_state_of_a_built_model_is_what_the_shape_count_says():
    """Build the real optimizers on the tiny model: the variable count equals the shape-only count
    used by `t5pre model info` and the benchmark, and the model's shapes are info's shapes."""
    import keras

    from t5pre.models.info import all_parameter_shapes
    from t5pre.models.t5 import T5Model
    from t5pre.training.adafactor import Adafactor

    config = _tiny_config()
    model = T5Model(config)
    shapes = [tuple(v.shape) for v in model.trainable_variables]
    assert sorted(shapes) == sorted(all_parameter_shapes(config))
    params = sum(math.prod(s) for s in shapes)
    for name, opt in [("adafactor", Adafactor()), ("keras_adafactor", keras.optimizers.Adafactor()),
                      ("adamw", keras.optimizers.AdamW())]:
        opt.build(model.trainable_variables)
        built = sum(math.prod(v.shape) for v in opt.variables) - 2  # iterations, learning rate
        assert built == state_elements(name, shapes), name
    assert state_elements("adafactor", shapes) < 0.1 * params
    assert state_elements("keras_adafactor", shapes) > params  # the problem this module fixes


@pytest.mark.parametrize("size", ["small", "base"])
def test_state_is_under_a_tenth_of_the_parameters(size):
    from t5pre.models.config import T5Config
    from t5pre.models.info import all_parameter_shapes

    shapes = all_parameter_shapes(T5Config.from_name(size))
    params = sum(math.prod(s) for s in shapes)
    assert state_elements("adafactor", shapes) <= 0.1 * params
    assert sum(is_factored(s) for s in shapes) > 0.4 * len(shapes)  # every matrix


# -- JAX backend --------------------------------------------------------------------------------

JAX_SCRIPT = textwrap.dedent(
    """
    import sys
    import numpy as np, keras
    assert keras.backend.backend() == "jax", keras.backend.backend()
    from t5pre.training.adafactor import Adafactor
    from t5pre.training.schedules import InverseSquareRootSchedule
    data = np.load(sys.argv[1])
    w, b, grads = data["w"], data["b"], data["grads"]
    vw, vb = keras.Variable(w), keras.Variable(b)
    opt = Adafactor(learning_rate=InverseSquareRootSchedule(0.1, 2), min_dim_size_to_factor=2)
    opt.build([vw, vb])
    import jax
    step = jax.jit(opt.stateless_apply)
    state, params = [v.value for v in opt.variables], [vw.value, vb.value]
    for g in grads:
        params, state = step(state, [g, g[0, :b.shape[0]]], params)
    np.savez(sys.argv[2], w=np.asarray(params[0]), b=np.asarray(params[1]))
    """
)


@pytest.mark.slow
def test_jax_stateless_apply_gives_the_tensorflow_update(tmp_path, repo_root):
    try:
        import jax  # noqa: F401
    except ImportError:
        pytest.skip("jax is not installed (it is in the test extra)")
    import keras

    from t5pre.training.adafactor import Adafactor
    from t5pre.training.schedules import InverseSquareRootSchedule

    w, grads = _problem((4, 6), seed=1)
    b = np.ones(3, "float32")
    np.savez(tmp_path / "in.npz", w=w, b=b, grads=np.stack(grads))
    vw, vb = keras.Variable(w), keras.Variable(b)
    opt = Adafactor(learning_rate=InverseSquareRootSchedule(0.1, 2), min_dim_size_to_factor=2)
    opt.build([vw, vb])
    for g in grads:
        opt.apply([g, g[0, :3]], [vw, vb])
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu",
           "PYTHONPATH": str(repo_root) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    result = subprocess.run([sys.executable, "-c", JAX_SCRIPT, str(tmp_path / "in.npz"),
                             str(tmp_path / "out.npz")], env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    out = np.load(tmp_path / "out.npz")
    np.testing.assert_allclose(out["w"], keras.ops.convert_to_numpy(vw), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out["b"], keras.ops.convert_to_numpy(vb), rtol=1e-5, atol=1e-6)
    # and the schedule was followed: lr 0.1/sqrt(2) for steps 0-2, then 0.1/sqrt(3)
    want = reference(w, grads, 0.1 / math.sqrt(2), factored=True)
    assert np.abs(out["w"] - want).max() > 0  # the 4th step used a smaller rate
    partial = reference(w, grads[:3], 0.1 / math.sqrt(2), factored=True)
    assert np.abs(out["w"] - partial).max() < np.abs(want - partial).max()


# -- training -----------------------------------------------------------------------------------


def _train(make_optimizer, steps=40):
    import keras
    import tensorflow as tf

    from t5pre.models.losses import seq2seq_loss
    from tests.test_model import features, micro_model

    model = micro_model(d_model=64, d_ff=128, vocab_size=128)
    f = features(batch=8, inputs=12, targets=8, seed=5)
    f["decoder_target_ids"] = np.roll(f["decoder_token_ids"], -1, axis=1)
    f["decoder_loss_weights"] = np.ones_like(f["decoder_target_ids"], "float32")
    opt = make_optimizer()
    opt.build(model.trainable_variables)

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            loss, _ = seq2seq_loss(f["decoder_target_ids"], model(f, training=True),
                                   f["decoder_loss_weights"])
        opt.apply(tape.gradient(loss, model.trainable_variables), model.trainable_variables)
        return loss

    losses = [float(step()) for _ in range(steps)]
    keras.backend.clear_session()
    return losses


@pytest.mark.slow
def test_trains_as_well_as_keras_adafactor():
    import keras

    from t5pre.training.adafactor import Adafactor

    # min_dim 32 so the micro model's matrices are factored as small/base's are at 128
    ours = _train(lambda: Adafactor(learning_rate=0.01, min_dim_size_to_factor=32))
    theirs = _train(lambda: keras.optimizers.Adafactor(learning_rate=0.01, relative_step=False))
    assert ours[0] == pytest.approx(theirs[0])  # same model, same batch
    assert ours[-1] < 0.5 * ours[0]
    assert ours[-1] < theirs[-1] * 1.1
