"""Float16 zoo weights files: the rule that decides which
float32 arrays may be stored as float16 (checked against NumPy's own
rounding), and a tiny model's file: half the data bytes in Keras's layout,
loading back float32 variables equal to the float32 originals rounded
through float16 (exactly equal for the arrays kept float32), features
close to the float32 model's. The build and import paths that write such
files are tested in test_model_zoo.py and test_zoo_from_run.py."""
import os

import keras
import numpy as np
import pytest

import mtssl_tf  # noqa: F401  (registers the Keras classes)
from mtssl_tf import model_zoo
from tools import zoo as zoo_tools
from tools.zoo import float16

from harness import assert_features_close, h5_named_arrays


def _rounded(a):
  """The NumPy reference: float32 -> float16 -> float32."""
  return np.asarray(a, np.float32).astype(np.float16).astype(np.float32)


def test_float16_rule():
  rng = np.random.default_rng(0)
  weights = rng.normal(0, 0.05, 1000).astype(np.float32)
  assert float16.float16_refusal(weights) is None
  # What the rule promises for what it accepts: three significant digits
  # on every value of at least 1% of the largest magnitude.
  big = np.abs(weights) >= 0.01 * np.abs(weights).max()
  assert np.max(np.abs(_rounded(weights) - weights)[big]
                / np.abs(weights[big])) <= 1e-3
  assert float16.float16_refusal(np.zeros(4, np.float32)) is None
  # A stem's batch-norm moving variance of 1.2e4 (as in a trained run) fits;
  # one value over 6e4 does not (float16 overflows above 65504).
  variance = np.full(8, 1.2e4, np.float32)
  assert float16.float16_refusal(variance) is None
  variance[3] = 7e4
  with np.errstate(over="ignore"):
    assert np.isinf(np.float16(7e4))
  assert "max |x| 7e+04 > 60000" in float16.float16_refusal(variance)
  # An array living in float16's subnormal range loses its digits (here
  # values of 1e-8 would flush to zero) and stays float32 ...
  tiny = rng.normal(0, 1e-8, 16).astype(np.float32)
  assert np.all(_rounded(tiny) == 0)
  assert "subnormal" in float16.float16_refusal(tiny)
  # ... but values that small beside values of order 1 do not matter.
  mixed = np.concatenate([weights, tiny])
  assert float16.float16_refusal(mixed) is None
  assert "non-finite" in float16.float16_refusal(
      np.array([1.0, np.nan], np.float32))
  assert "not float32" in float16.float16_refusal(np.ones(3, np.int64))


@pytest.fixture(scope="module")
def tiny_files(tmp_path_factory):
  """A tiny four-task lasso model (random mixer rows) with a moving variance
  over 6e4 and a subnormal-scale beta injected, written as float16 and as
  float32."""
  keras.utils.set_random_seed(3)
  model = model_zoo.build_preset_model("rp_col_ex_ms_lasso", tiny=True)
  rng = np.random.default_rng(1)
  for alpha in model.mixer.rows.values():
    alpha.assign(rng.normal(size=alpha.shape).astype(np.float32))
  variance = next(v for v in model.weights if "moving_variance" in v.path)
  beta = next(v for v in model.weights if v.path.endswith("beta"))
  variance.assign(_with(variance.shape, 3.0, 7e4))
  beta.assign(rng.normal(0, 1e-8, beta.shape).astype(np.float32))
  folder = tmp_path_factory.mktemp("f16")
  p16, p32 = str(folder / "m16.weights.h5"), str(folder / "m32.weights.h5")
  record16 = float16.write_weights(model, p16)
  record32 = float16.write_weights(model, p32, "float32")
  return model, (variance, beta), p16, p32, record16, record32


def _with(shape, fill, first):
  a = np.full(shape, fill, np.float32)
  a.flat[0] = first
  return a


def test_float16_file_is_half_the_data_bytes_in_kerass_layout(tiny_files):
  model, injected, p16, p32, record16, record32 = tiny_files
  a16, a32 = h5_named_arrays(p16), h5_named_arrays(p32)
  assert sorted(a16) == sorted(a32)  # the same paths: Keras's layout
  n = model.count_params()
  kept = record16["weights_storage"]["kept_float32"]
  n32 = sum(k["values"] for k in kept)
  assert record16["weights_dtype"] == "mixed"
  assert record16["weights_storage"]["values"] == {"float16": n - n32,
                                                   "float32": n32}
  assert record32 == {"weights_dtype": "float32", "weights_storage": {
      "requested": "float32", "values": {"float32": n}, "kept_float32": []}}
  # Exactly the two injected arrays were kept, and each file's arrays are
  # the float32 file's, rounded through float16 where stored as float16.
  assert len(kept) == 2 and n32 == sum(int(v.numpy().size) for v in injected)
  for name, array in a16.items():
    assert array.dtype in (np.float16, np.float32), name
    if array.dtype == np.float16:
      np.testing.assert_array_equal(array.astype(np.float32),
                                    _rounded(a32[name]), err_msg=name)
    else:
      assert name in {k["name"] for k in kept}
      np.testing.assert_array_equal(array, a32[name], err_msg=name)
  assert all(a.dtype == np.float32 for a in a32.values())
  # Same HDF5 bookkeeping, 2 bytes a value less where float16.
  s16, s32 = os.path.getsize(p16), os.path.getsize(p32)
  assert abs((s16 - 2 * (n - n32) - 4 * n32) - (s32 - 4 * n)) < 4096


def test_float16_file_loads_float32_weights_rounded(tiny_files):
  model, injected, p16, p32, _, _ = tiny_files
  loaded = model_zoo.build_preset_model("rp_col_ex_ms_lasso", tiny=True)
  loaded.load_weights(p16)
  exact = {id(v) for v in injected}
  assert len(loaded.weights) == len(model.weights)
  for original, got in zip(model.weights, loaded.weights):
    # Both models are built alike, so their weights pair up in order (the
    # file itself is read by layer path); the model stays float32.
    assert got.shape == original.shape and got.dtype == "float32"
    want = original.numpy()
    if id(original) not in exact:
      want = _rounded(want)
    np.testing.assert_array_equal(got.numpy(), want, err_msg=got.path)
  # Features within 1% of their largest magnitude: each weight moves by at
  # most 2**-11 = 4.9e-4 of itself, and to first order the relative errors
  # of the ~15 layers on the way add up to at most ~7e-3 (measured: 4.7e-4
  # on the study-scale four-task network, 2.1e-3 on a trained depth-26 run,
  # BENCHMARKS.md "Float16 zoo weights files").
  assert_features_close(model, loaded, seed=2)
  # The float32 file loads exactly.
  again = model_zoo.build_preset_model("rp_col_ex_ms_lasso", tiny=True)
  again.load_weights(p32)
  for original, got in zip(model.weights, again.weights):
    np.testing.assert_array_equal(got.numpy(), original.numpy())


def test_bad_weights_dtype_is_refused(tmp_path):
  model = model_zoo.build_preset_model("rp", tiny=True)
  with pytest.raises(ValueError, match="weights_dtype='bfloat16'"):
    float16.write_weights(model, str(tmp_path / "x.weights.h5"), "bfloat16")
  with pytest.raises(ValueError, match="expected one of float16, float32"):
    zoo_tools.build_preset("rp", tiny=True, weights_dtype="half",
                           weights_dir=str(tmp_path))
