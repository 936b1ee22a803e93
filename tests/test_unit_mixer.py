"""UnitMixer (the paper's lasso): mixing, constraint, penalty, saving, Fig. 5."""
import os
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

import mtssl_tf
from mtssl_tf.layers import UnitMixer
from mtssl_tf.models import Trunk
from mtssl_tf.utils.plots import alpha_matrix, plot_alphas
import fork_server

TASKS = ["relative_position", "colorization"]


def _units(rng, n=4, shape=(2, 3, 3, 5)):
  return [tf.constant(rng.normal(size=shape), tf.float32) for _ in range(n)]


def test_mix_matches_numpy(rng):
  mixer = UnitMixer(TASKS, num_units=4, l1=0.0, init="last")
  units = _units(rng)
  raw = rng.normal(size=4).astype(np.float32)
  mixer.row("colorization").assign(raw)
  alpha = raw / np.linalg.norm(raw)
  want = sum(a * u.numpy() for a, u in zip(alpha, units))
  np.testing.assert_allclose(mixer(units, task="colorization"), want,
                             rtol=1e-5, atol=1e-5)
  # The other row is untouched: still all weight on the last unit.
  np.testing.assert_allclose(mixer(units, task="relative_position"),
                             units[-1].numpy(), rtol=0, atol=0)


def test_initial_alpha_choices(rng):
  units = _units(rng)
  ramp = UnitMixer(TASKS, 4)  # the default
  np.testing.assert_allclose(ramp.alphas()["colorization"],
                             np.arange(1, 5) / np.sqrt(30), rtol=1e-6)
  last = UnitMixer(TASKS, 4, init="last")
  np.testing.assert_array_equal(last.alphas()["colorization"], [0, 0, 0, 1])
  uniform = UnitMixer(TASKS, 4, init="uniform")
  np.testing.assert_allclose(uniform(units, task="colorization"),
                             sum(u.numpy() for u in units) / 2.0, atol=1e-5)


@pytest.mark.parametrize("optimizer", [
    lambda: keras.optimizers.SGD(learning_rate=0.5),
    lambda: keras.optimizers.RMSprop(learning_rate=0.05),
    lambda: keras.optimizers.Adam(learning_rate=0.1)])
def test_unit_norm_holds_after_real_optimizer_steps(rng, optimizer):
  mixer = UnitMixer(TASKS, num_units=4, l1=0.1, init="uniform")
  units = _units(rng)
  target = tf.constant(rng.normal(size=(2, 3, 3, 5)), tf.float32)
  opt = optimizer()
  opt.build(mixer.trainable_variables)
  start = mixer.alphas()["colorization"]
  for _ in range(20):
    with tf.GradientTape() as tape:
      out = mixer(units, task="colorization")
      loss = tf.reduce_mean((out - target) ** 2) + tf.add_n(mixer.losses)
    grads = tape.gradient(loss, mixer.trainable_variables)
    opt.apply_gradients(zip(grads, mixer.trainable_variables))
    for name in TASKS:
      stored = mixer.row(name).numpy()
      assert abs(np.sum(stored ** 2) - 1.0) < 1e-6, (name, stored)
  assert not np.allclose(mixer.alphas()["colorization"], start)
  # Rows without gradient did not move.
  np.testing.assert_allclose(mixer.alphas()["relative_position"], [0.5] * 4,
                             atol=1e-7)


def test_l1_penalty_through_add_loss(rng):
  mixer = UnitMixer(TASKS, num_units=4, l1=0.25, init="uniform")
  units = _units(rng)
  mixer(units, task="colorization")
  assert len(mixer.losses) == 1
  np.testing.assert_allclose(float(mixer.losses[0]), 0.25 * 4 * 0.5,
                             rtol=1e-6)
  # The penalty pulls alpha towards sparsity: with only the L1 loss, one
  # unit ends up dominating. (Uniform is a stationary point, the maximum of
  # L1 on the sphere, so start from a generic row.)
  mixer.row("colorization").assign([0.6, 0.5, 0.45, 0.43])
  opt = keras.optimizers.SGD(learning_rate=0.05)
  for _ in range(200):
    with tf.GradientTape() as tape:
      mixer(units, task="colorization")
      loss = tf.add_n(mixer.losses)
    grads = tape.gradient(loss, mixer.trainable_variables)
    opt.apply_gradients(zip(grads, mixer.trainable_variables))
  alpha = np.abs(mixer.alphas()["colorization"])
  assert np.sum(alpha) < 1.5 and alpha.max() > 0.9
  # l1=0 disables the penalty: the mix is computed, no loss is added.
  plain = UnitMixer(TASKS, 4, l1=0.0)
  assert plain(units, task="colorization").shape == units[0].shape
  assert plain.losses == []


def _numpy_l1_sphere_gradient(raw, lam):
  """d/dw of lam * |w / |w||_1: the tangent part of sign(a), over |w|."""
  norm = np.linalg.norm(raw)
  a = raw / norm
  s = np.sign(a)
  return lam / norm * (s - np.dot(s, a) * a)


@pytest.mark.parametrize("num_units", [2, 6, 23])
def test_l1_gradient_on_the_sphere_is_nonzero_from_the_default_init(
    rng, num_units):
  # With init "last" or "uniform" the L1 term has exactly zero gradient on
  # the sphere (both are stationary points of |a|_1 there), so it could not
  # move alpha; the default init must not be such a point.
  mixer = UnitMixer(TASKS, num_units=num_units)
  assert mixer.init == "ramp" and mixer.l1 == 1e-2
  units = _units(rng, n=num_units, shape=(1, 2, 2, 3))
  variable = mixer.row("colorization")
  with tf.GradientTape() as tape:
    mixer(units, task="colorization")
    penalty = tf.add_n(mixer.losses)
  grad = tape.gradient(penalty, variable).numpy()
  want = _numpy_l1_sphere_gradient(variable.numpy().astype(np.float64),
                                   mixer.l1)
  np.testing.assert_allclose(grad, want, rtol=1e-4, atol=1e-9)
  # Non-zero, and a descent step moves weight from shallow to deep units.
  assert np.linalg.norm(want) > 0.05 * mixer.l1
  assert grad[0] > 0 > grad[-1]
  for init in ("last", "uniform"):
    other = UnitMixer(TASKS, num_units=num_units, init=init)
    with tf.GradientTape() as tape:
      other(units, task="colorization")
      penalty = tf.add_n(other.losses)
    grad = tape.gradient(penalty, other.row("colorization")).numpy()
    np.testing.assert_allclose(grad, 0.0, atol=1e-7)


def test_eval_lasso_row_can_be_added(rng):
  mixer = UnitMixer(TASKS, num_units=4)
  units = _units(rng)
  mixer(units, task="colorization")
  row = mixer.add_task("linear_probe", init="uniform")
  assert row.trainable and mixer.task_names[-1] == "linear_probe"
  np.testing.assert_allclose(mixer(units, task="linear_probe"),
                             sum(u.numpy() for u in units) / 2.0, atol=1e-5)
  with pytest.raises(ValueError, match="already has a row"):
    mixer.add_task("linear_probe")
  all_mixes = mixer(units)
  assert sorted(all_mixes) == sorted(TASKS + ["linear_probe"])


@pytest.mark.parametrize("kwargs,words", [
    (dict(task_names=[], num_units=3), "at least one task"),
    (dict(task_names=["a", "a"], num_units=3), "duplicates"),
    (dict(task_names=["a"], num_units=0), "num_units=0"),
    (dict(task_names=["a"], num_units=3, init="zeros"),
     "allowed: ramp, last, uniform"),
    (dict(task_names=["a"], num_units=3, l1=-1.0), "l1=-1.0"),
])
def test_bad_mixer_arguments(kwargs, words):
  with pytest.raises(ValueError, match=words):
    UnitMixer(**kwargs)


def test_wrong_number_of_units_and_unknown_task(rng):
  mixer = UnitMixer(TASKS, num_units=4)
  with pytest.raises(ValueError, match=r"fed 3 unit tensors.*num_units=4"):
    mixer(_units(rng, n=3), task="colorization")
  with pytest.raises(ValueError, match="no row for task 'exemplar'"):
    mixer(_units(rng), task="exemplar")
  mixed_shapes = _units(rng, n=3) + [tf.zeros([2, 6, 6, 5])]
  with pytest.raises(ValueError, match="share one shape"):
    mixer(mixed_shapes, task="colorization")


def _trunk_and_mixer_model():
  trunk = Trunk(depth=38, width=0.25)
  mixer = UnitMixer(TASKS, num_units=3, l1=1e-3, init="uniform",
                    name="unit_mixer")
  images = keras.Input((None, None, 3), name="images")
  feats = trunk(images)
  units = [feats[n] for n in trunk.unit_names]
  outputs = {t: mixer(units, task=t) for t in TASKS}
  return keras.Model(images, outputs, name="trunk_and_mixer")


def test_keras_file_reloads_in_fresh_process(tmp_path):
  model = _trunk_and_mixer_model()
  mixer = model.get_layer("unit_mixer")
  mixer.row("colorization").assign([0.2, -0.3, 0.9])
  x = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("f4")
  want = {k: v.numpy() for k, v in model(x).items()}
  path = str(tmp_path / "model.keras")
  model.save(path)
  np.save(tmp_path / "x.npy", x)
  script = textwrap.dedent(f"""
      import numpy as np, keras
      import mtssl_tf
      model = keras.models.load_model({path!r})
      out = model(np.load({str(tmp_path / 'x.npy')!r}))
      for k, v in out.items():
        np.save({str(tmp_path)!r} + '/out_' + k + '.npy', np.asarray(v))
  """)
  done = fork_server.run(["-c", script],
                         env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
  assert done.returncode == 0, done.stderr[-2000:]
  for k, v in want.items():
    np.testing.assert_allclose(np.load(tmp_path / f"out_{k}.npy"), v,
                               rtol=1e-5, atol=1e-5, err_msg=k)


def test_figure5_png(tmp_path):
  mixer = UnitMixer(["relative_position", "colorization", "exemplar"], 5)
  mixer.row("exemplar").assign([0.0, 0.6, 0.0, 0.8, 0.0])
  mixer.add_task("imagenet", init="uniform")
  names, matrix = alpha_matrix(mixer)
  assert names == ["relative_position", "colorization", "exemplar", "imagenet"]
  np.testing.assert_allclose(matrix[2], [0, 0.6, 0, 0.8, 0], atol=1e-6)
  path = plot_alphas(mixer, str(tmp_path / "fig5" / "alphas.png"),
                     evaluation_tasks=["imagenet"])
  png = tf.io.decode_png(tf.io.read_file(path)).numpy()
  assert png.ndim == 3 and png.shape[0] > 50 and png.shape[1] > 100
  assert png.std() > 10  # not a blank image
  with pytest.raises(ValueError, match="differ in length"):
    plot_alphas({"a": [1.0], "b": [0.5, 0.5]}, str(tmp_path / "x.png"))


def test_rows_are_public_and_follow_the_task_order():
  mixer = UnitMixer(TASKS, num_units=3)
  assert list(mixer.rows) == TASKS
  assert mixer.rows["colorization"] is mixer.row("colorization")
  assert [v.name for v in mixer.rows.values()] == [
      "alpha_relative_position", "alpha_colorization"]
  with pytest.raises(ValueError, match="no row for task 'exemplar'.*rows: "
                                       "relative_position, colorization"):
    mixer.row("exemplar")


def _wrapped(task_names):
  """A one-layer model holding a mixer (what .weights.h5 files store)."""
  inputs = [keras.Input((2,)) for _ in range(3)]
  mixer = UnitMixer(task_names, num_units=3, name="unit_mixer")
  outputs = mixer(inputs, task=task_names[0])
  return keras.Model(inputs, outputs), mixer


def test_weights_file_keys_rows_by_task_name(tmp_path):
  """Rows have one shape: a file keyed by position would give a model built
  with the tasks in another order the wrong rows without an error."""
  import h5py
  model, mixer = _wrapped(TASKS)
  values = {"relative_position": [0.6, 0.0, 0.8],
            "colorization": [0.0, 0.8, 0.6]}
  for task, value in values.items():
    mixer.row(task).assign(value)
  path = str(tmp_path / "m.weights.h5")
  model.save_weights(path)
  with h5py.File(path, "r") as f:
    assert sorted(f["layers/unit_mixer/vars"].keys()) == sorted(TASKS)
  other, other_mixer = _wrapped(TASKS[::-1])
  other.load_weights(path)
  for task, value in values.items():
    np.testing.assert_allclose(other_mixer.row(task).numpy(), value)
  # A file without one of the mixer's tasks is refused by name.
  third, _ = _wrapped(["relative_position", "exemplar"])
  with pytest.raises(ValueError, match=r"missing \['exemplar'\], "
                                       r"unexpected \['colorization'\]"):
    third.load_weights(path)


def test_positional_weights_file_is_refused(tmp_path):
  """A file whose rows are keyed by position (vars/0, vars/1, Keras'
  default layout) is refused like any file without the mixer's tasks."""
  import h5py
  model, _ = _wrapped(TASKS)
  path = str(tmp_path / "positional.weights.h5")
  model.save_weights(path)
  with h5py.File(path, "r+") as f:
    group = f["layers/unit_mixer/vars"]
    for i, task in enumerate(TASKS):
      group.move(task, str(i))
  fresh, _ = _wrapped(TASKS)
  with pytest.raises(ValueError, match=r"unexpected \['0', '1'\]"):
    fresh.load_weights(path)
