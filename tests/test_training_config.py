"""Run configs (validation messages, overrides, resolution), schedules and optimizers."""

import math

import pytest

from t5pre.errors import ConfigError
from t5pre.training import config as C


def write(tmp_path, text, name="run.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_unknown_key_names_file_line_and_suggests(tmp_path):
    path = write(tmp_path, "data:\n  task: x\ntraining:\n  steps: 10\n  batch_sise: 4\n")
    with pytest.raises(ConfigError) as e:
        C.load_config(path)
    msg = str(e.value)
    assert f"{path}:5" in msg and "training.batch_sise" in msg and "did you mean 'batch_size'" in msg


def test_unknown_section_suggests(tmp_path):
    path = write(tmp_path, "data:\n  task: x\noptimiser:\n  name: adamw\n")
    with pytest.raises(ConfigError, match=r"run.yaml:3: unknown key 'optimiser'.*'optimizer'"):
        C.load_config(path)


@pytest.mark.parametrize("override, fragment", [
    ("training.batch_size=abc", "training.batch_size must be an integer, got 'abc'"),
    ("training.steps=-3", "training.steps = -3 is out of range (must be >= 0)"),
    ("training.precision=fp16", "training.precision = 'fp16' is not one of float32"),
    ("optimizer.name=adam", "did you mean 'adamw'"),
    ("training.clip_norm=0", "training.clip_norm = 0.0 is out of range (must be > 0.0)"),
    ("optimizer.beta_2=1.5", "optimizer.beta_2 = 1.5 is out of range (must be <= 1.0)"),
    ("training.deterministic=maybe", "training.deterministic must be true or false"),
    ("training.grad_accum_steps=3", "must be divisible by training.grad_accum_steps"),
])
def test_bad_values_name_the_flag_key_and_value(override, fragment):
    with pytest.raises(ConfigError) as e:
        C.load_config(None, ["data.task=x", "training.batch_size=8", override])
    assert fragment in str(e.value)
    if "divisible" not in fragment:
        assert str(e.value).startswith(f"--set {override}:")


def test_task_or_mixture_exactly_one():
    with pytest.raises(ConfigError, match="exactly one of data.task or data.mixture"):
        C.load_config(None, [])
    with pytest.raises(ConfigError, match="exactly one"):
        C.load_config(None, ["data.task=a", "data.mixture=b"])
    assert C.load_config(None, ["data.mixture=m"]).task_name == "m"


def test_invalid_yaml_names_line(tmp_path):
    path = write(tmp_path, "data:\n  task: x\ntraining: [1,\n")
    with pytest.raises(ConfigError, match=r"run.yaml:\d+: invalid YAML"):
        C.load_config(path)
    with pytest.raises(ConfigError, match="config file not found"):
        C.load_config(str(tmp_path / "missing.yaml"))


def test_override_parsing_and_precedence(tmp_path):
    path = write(tmp_path, "data:\n  task: x\ntraining:\n  steps: 10\n  z_loss: 1e-4\n")
    cfg = C.load_config(path, ["training.steps=25", "data.sequence_length.inputs=64",
                               "training.clip_norm=null", "model.overrides={dropout_rate: 0.1}"])
    assert cfg.training.steps == 25 and cfg.data.sequence_length.inputs == 64
    assert cfg.training.clip_norm is None and cfg.training.z_loss == pytest.approx(1e-4)
    assert cfg.model.overrides == {"dropout_rate": 0.1}
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        C.load_config(path, ["training.steps"])


def test_defaults_are_never_modified():
    defaults = {"data": {"task": "x"}, "model": {"overrides": {"d_model": 8}}}
    C.load_config(None, ["model.overrides.d_model=16", "data.task=y"], defaults=defaults)
    assert defaults == {"data": {"task": "x"}, "model": {"overrides": {"d_model": 8}}}


def test_unknown_model_override_field_is_caught():
    with pytest.raises(ConfigError, match="model.overrides.d_modle.*did you mean 'd_model'"):
        C.load_config(None, ["data.task=x", "model.overrides={d_modle: 8}"])


def test_resolution_and_round_trip(tmp_path):
    cfg = C.load_config(None, ["data.task=x", "training.steps=500"])
    assert cfg.optimizer.schedule == "rsqrt" and cfg.optimizer.learning_rate == 1.0
    assert cfg.data.seed == cfg.training.seed
    cfg = C.load_config(None, ["data.task=x", "optimizer.name=adamw", "training.steps=30000"])
    assert cfg.optimizer.schedule == "cosine" and cfg.optimizer.decay_steps == 30000
    out = tmp_path / "config.yaml"
    C.save_config(cfg, str(out))
    assert C.load_config(str(out)) == cfg


def test_continued_run_stretches_a_derived_decay_and_keeps_an_explicit_one(tmp_path):
    from t5pre.training.schedules import make_schedule

    base = ["data.task=x", "optimizer.name=adamw", "optimizer.warmup_steps=10",
            "optimizer.final_learning_rate=1e-5"]
    first = C.load_config(None, base + ["training.steps=100"])
    C.save_config(first, str(tmp_path / "config.yaml"))
    notes = []
    same = C.load_config(None, base + ["training.steps=100"], model_dir=str(tmp_path),
                         log=notes.append)
    assert same == first and notes == []  # an unchanged run resumes exactly
    more = C.load_config(None, base + ["training.steps=300"], model_dir=str(tmp_path),
                         log=notes.append)
    assert more.training.steps == 300 and more.optimizer.decay_steps == 300
    assert len(notes) == 1 and "ends at step 300" in notes[0] \
        and "optimizer.decay_steps=100" in notes[0]
    # after the old end the rate is no longer at its floor
    lr_old = float(make_schedule(first.optimizer)(150))
    lr_new = float(make_schedule(more.optimizer)(150))
    assert lr_old == pytest.approx(1e-5, rel=1e-4) and lr_new > 10 * lr_old
    # a re-run from the saved config.yaml (no --config) stretches the same way
    saved = str(tmp_path / "config.yaml")
    rerun = C.load_config(saved, ["training.steps=300"], model_dir=str(tmp_path), log=notes.append)
    assert rerun.optimizer.decay_steps == 300 and len(notes) == 2
    assert C.load_config(saved, [], model_dir=str(tmp_path)) == first
    explicit = C.load_config(None, base + ["training.steps=300", "optimizer.decay_steps=100"],
                             model_dir=str(tmp_path))
    assert explicit.optimizer.decay_steps == 100
    # a decay end the run set itself is kept, with one line saying how to change it
    C.save_config(explicit, str(tmp_path / "config.yaml"))
    notes.clear()
    kept = C.load_config(None, base + ["training.steps=500"], model_dir=str(tmp_path),
                         log=notes.append)
    assert kept.optimizer.decay_steps == 100 and "optimizer.decay_steps=500" in notes[0]


def test_packaged_configs_are_valid():
    for name in ("default", "t5_1_1_base", "ul2_small"):
        cfg = C.load_config(C.packaged_config_path(name))
        assert cfg.task_name
    with pytest.raises(ConfigError, match="no packaged pretrain config"):
        C.packaged_config_path("nope")


def test_t5_recipe_config():
    cfg = C.load_config(C.packaged_config_path("t5_1_1_base"))
    assert (cfg.model.name, cfg.optimizer.name, cfg.optimizer.schedule) == ("base", "adafactor",
                                                                            "rsqrt")
    assert (cfg.data.sequence_length.inputs, cfg.data.sequence_length.targets) == (512, 114)
    assert cfg.training.batch_size == 128 and cfg.data.pack and cfg.training.z_loss == 1e-4


# -------------------------------------------------------------------------------- schedules


def test_inverse_square_root_schedule_values():
    from t5pre.training.schedules import InverseSquareRootSchedule

    s = InverseSquareRootSchedule(1.0, 10000)
    for step, want in [(0, 0.01), (5000, 0.01), (10000, 0.01), (40000, 0.005), (250000, 0.002)]:
        assert float(s(step)) == pytest.approx(want, rel=1e-6)
    assert float(InverseSquareRootSchedule(2.0, 100)(400)) == pytest.approx(0.1)


def test_warmup_cosine_schedule_values():
    from t5pre.training.schedules import WarmupCosineSchedule

    s = WarmupCosineSchedule(peak=1e-2, warmup_steps=10, decay_steps=110, final_learning_rate=1e-5)
    assert float(s(0)) == pytest.approx(1e-3)  # (0+1)/10 of the peak: the first update moves
    assert float(s(9)) == pytest.approx(1e-2)
    assert float(s(10)) == pytest.approx(1e-2)
    mid = 1e-5 + (1e-2 - 1e-5) * 0.5 * (1 + math.cos(math.pi * 0.5))
    assert float(s(60)) == pytest.approx(mid, rel=1e-5)
    assert float(s(110)) == pytest.approx(1e-5) and float(s(10_000)) == pytest.approx(1e-5)


def test_linear_and_constant_schedules():
    from t5pre.training.schedules import WarmupConstantSchedule, WarmupLinearSchedule

    lin = WarmupLinearSchedule(peak=1.0, warmup_steps=0, decay_steps=100, final_learning_rate=0.0)
    assert [round(float(lin(s)), 5) for s in (0, 50, 100, 200)] == [1.0, 0.5, 0.0, 0.0]
    const = WarmupConstantSchedule(peak=1e-3, warmup_steps=4)
    assert [float(const(s)) for s in (0, 3, 1000)] == pytest.approx([2.5e-4, 1e-3, 1e-3])


def test_make_optimizer_from_config():
    import keras

    from t5pre.training.adafactor import Adafactor
    from t5pre.training.optimizers import current_learning_rate, make_optimizer
    from t5pre.training.schedules import InverseSquareRootSchedule

    cfg = C.load_config(None, ["data.task=x"])
    opt = make_optimizer(cfg.optimizer)
    assert isinstance(opt, Adafactor)  # T5's (factored, no momentum), not Keras'
    assert (opt.decay_rate, opt.clipping_threshold, opt.beta_1) == (0.8, 1.0, None)
    assert isinstance(opt._learning_rate, InverseSquareRootSchedule)
    assert current_learning_rate(opt) == pytest.approx(0.01)
    cfg = C.load_config(None, ["data.task=x", "optimizer.momentum=0.9"])
    assert make_optimizer(cfg.optimizer).beta_1 == 0.9
    cfg = C.load_config(None, ["data.task=x", "optimizer.name=keras_adafactor"])
    assert cfg.optimizer.schedule == "rsqrt"
    assert isinstance(make_optimizer(cfg.optimizer), keras.optimizers.Adafactor)
    cfg = C.load_config(None, ["data.task=x", "optimizer.name=adamw", "optimizer.weight_decay=0.01",
                               "training.precision=mixed_float16"])
    opt = make_optimizer(cfg.optimizer, cfg.training.precision)
    assert isinstance(opt, keras.optimizers.LossScaleOptimizer)
    assert isinstance(opt.inner_optimizer, keras.optimizers.AdamW)


@pytest.mark.parametrize("override, section", [("nosuch.key=1", "nosuch"),
                                               ("data.sequence_length={inputz: 8}", "inputz")])
def test_unknown_key_in_an_override_names_the_flag_not_the_file(tmp_path, override, section):
    path = write(tmp_path, "data:\n  task: x\ntraining:\n  steps: 10\n")
    with pytest.raises(ConfigError) as e:
        C.load_config(path, [override])
    msg = str(e.value)
    assert msg.startswith(f"--set {override}:") and section in msg and path not in msg
