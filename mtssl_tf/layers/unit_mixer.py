"""UnitMixer: the paper's "lasso" over the block-3 units.

Doersch & Zisserman (ICCV 2017, Sec. 4.2): each task t reads a linear
combination of the N block-3 unit outputs,

    mixed_t = sum_m alpha[t, m] * unit_m,

with sum_m alpha[t, m]^2 = 1 (so the output variance is kept and the L1
penalty cannot be met by shrinking alpha and growing the head) and an L1
penalty lambda * sum_m |alpha[t, m]| that makes alpha sparse.

Implementation choices (the paper leaves them open):

* Each task row is its own variable ``alpha_<task>`` [N]; a row can be added
  later for an evaluation task ("eval lasso") without touching the others.
* The unit-norm constraint is a projection: the variable carries a Keras
  constraint that re-normalises it after every optimizer update (Keras 3
  optimizers apply variable constraints in ``apply_gradients``), and the
  forward pass also divides by the norm, so the mix is unit-norm even between
  an update and its projection. Together this is projected (Riemannian)
  gradient descent on the sphere.
* Initial alpha (our choice; the paper does not say): ``init="ramp"``
  (default) sets alpha_m proportional to m, m = 1..N shallow to deep, on the
  unit sphere: every unit contributes, deeper units more. ``"last"`` (all
  weight on the last unit, the plain network) and ``"uniform"`` (1/sqrt(N)
  everywhere) are kept as options, but the L1 term cannot move either: with
  a = w / |w| the penalty's gradient with respect to the variable w is

      d(lambda |a|_1)/dw = lambda / |w| * (I - a a^T) sign(a),

  the component of sign(a) tangent to the sphere, which is zero exactly when
  all non-zero entries of a have one magnitude. "last" (the minimum of |a|_1
  on the sphere) and "uniform" (its maximum) are both such points, so from
  them only the task losses move alpha. From "ramp" the L1 gradient is
  non-zero and pushes weight from shallow to deep units until the task
  gradients balance it (tests/test_unit_mixer.py checks this against NumPy).
* L1 weight lambda (our choice; default 1e-2): on the sphere |a|_1 ranges
  from 1 to sqrt(N), so the whole penalty range is lambda * (sqrt(N) - 1):
  at the old 1e-3 that is 0.004 of loss for N = 23 and 0.0004 for N = 2,
  small next to the task losses (about 2 for RP) and their step-to-step
  noise. At 1e-2 and demo scale the rows tilt apart by about 0.01 in 1,500
  steps, driven by their tasks; at 1e-1 they move further but together.
  docs/records/lasso_runs.md has the runs behind the choice.
* The L1 penalty of the task being run is added with ``add_loss``; the
  trainer adds ``model.losses`` to the task loss.
"""
from __future__ import annotations

import warnings
from typing import Dict, Optional, Sequence

import keras
import numpy as np
from keras import ops

INITS = ("ramp", "last", "uniform")


@keras.saving.register_keras_serializable(package="mtssl_tf")
class UnitNorm(keras.constraints.Constraint):
  """Projects a vector onto the unit L2 sphere (the mixer's constraint)."""

  def __call__(self, w):
    norm = ops.sqrt(ops.sum(ops.square(w)))
    return w / ops.maximum(norm, 1e-12)

  def get_config(self):
    return {}


@keras.saving.register_keras_serializable(package="mtssl_tf")
class UnitMixer(keras.layers.Layer):
  """Per-task unit-norm, L1-penalised mixing of the block-3 unit outputs.

  Reference: Doersch & Zisserman, "Multi-task Self-Supervised Visual
  Learning", ICCV 2017, Sec. 4.2 and Fig. 5.

  Args:
    task_names: one alpha row per name.
    num_units: N, the number of block-3 units mixed.
    l1: lambda of the penalty lambda * sum |alpha_t| (0 disables it).
    init: ``"ramp"`` (alpha_m proportional to m; the L1 gradient on the
      sphere is non-zero), ``"last"`` (all weight on the last unit) or
      ``"uniform"`` (both stationary points of the L1 term; see above).

  Call:
    ``mixer(units, task=name)``: ``units`` is a list of N tensors of one
    shape; returns the mixed tensor of that shape. ``task=None`` returns a
    dict with every task's mix.

  Example:
    >>> mixer = UnitMixer(["relative_position", "colorization"], num_units=23)
    >>> mixed = mixer([trunk_out[n] for n in trunk.unit_names],
    ...               task="colorization")
  """

  def __init__(self, task_names: Sequence[str], num_units: int,
               l1: float = 1e-2, init: str = "ramp", **kwargs):
    super().__init__(**kwargs)
    task_names = list(task_names)
    if not task_names:
      raise ValueError("UnitMixer.task_names must name at least one task")
    if len(set(task_names)) != len(task_names):
      raise ValueError(f"UnitMixer.task_names has duplicates: {task_names}")
    if not isinstance(num_units, (int, np.integer)) or num_units < 1:
      raise ValueError(
          f"UnitMixer.num_units={num_units!r} must be an integer >= 1")
    if init not in INITS:
      raise ValueError(
          f"UnitMixer.init={init!r}; allowed: {', '.join(INITS)}")
    if not l1 >= 0:
      raise ValueError(f"UnitMixer.l1={l1!r} must be >= 0")
    self.num_units = int(num_units)
    self.l1 = float(l1)
    self.init = init
    self._task_names: list = []
    self._alphas: Dict[str, keras.Variable] = {}
    for name in task_names:
      self.add_task(name)

  @property
  def task_names(self):
    return list(self._task_names)

  def _initial_alpha(self, init: str) -> np.ndarray:
    if init == "ramp":
      # alpha_m proportional to m (1-based): deeper units weigh more, and no
      # two units weigh the same, so the L1 term has a non-zero gradient on
      # the sphere from the first step (see the module docstring).
      value = np.arange(1, self.num_units + 1, dtype=np.float64)
      value = (value / np.linalg.norm(value)).astype(np.float32)
    elif init == "last":
      value = np.zeros([self.num_units], np.float32)
      value[-1] = 1.0
    else:
      value = np.full([self.num_units], 1.0 / np.sqrt(self.num_units),
                      np.float32)
    return value

  def add_task(self, name: str, init: Optional[str] = None) -> keras.Variable:
    """Adds a fresh alpha row for task ``name`` (e.g. an evaluation task)."""
    if name in self._alphas:
      raise ValueError(f"UnitMixer already has a row for task {name!r}")
    init = init or self.init
    if init not in INITS:
      raise ValueError(f"init={init!r}; allowed: {', '.join(INITS)}")
    value = self._initial_alpha(init)
    # Keras locks a built layer's state; an eval-lasso row is added on
    # purpose after pre-training, so unlock for this one variable.
    locked = self.built
    if locked:
      self._tracker.unlock()
    try:
      variable = self.add_weight(
          name=f"alpha_{name}", shape=(self.num_units,),
          initializer=keras.initializers.Constant(value),
          constraint=UnitNorm(), trainable=True)
    finally:
      if locked:
        self._tracker.lock()
    self._alphas[name] = variable
    self._task_names.append(name)
    return variable

  def row(self, task: str) -> keras.Variable:
    """The variable of ``task``'s alpha row ([N], before the unit-norm
    projection of the forward pass): for optimizers, checkpoints and
    tests that set a row."""
    if task not in self._alphas:
      raise ValueError(
          f"UnitMixer has no row for task {task!r}; rows: "
          f"{', '.join(self._task_names)}")
    return self._alphas[task]

  @property
  def rows(self) -> Dict[str, keras.Variable]:
    """Task name -> its alpha row variable (a new dict, in task order)."""
    return {t: self._alphas[t] for t in self._task_names}

  def alpha(self, task: str):
    """The unit-norm alpha row of ``task`` (a tensor [N])."""
    return UnitNorm()(self.row(task))

  def alphas(self) -> Dict[str, np.ndarray]:
    """Every task's alpha row as NumPy, for plots and summaries."""
    return {t: np.asarray(ops.convert_to_numpy(self.alpha(t)))
            for t in self._task_names}

  def penalty(self, task: str):
    """lambda * sum |alpha_task|."""
    return self.l1 * ops.sum(ops.abs(self.alpha(task)))

  def build(self, input_shape):
    # Variables are made in __init__ (rows can be added at any time).
    self.built = True

  def _check_units(self, units):
    if not isinstance(units, (list, tuple)):
      raise ValueError(
          "UnitMixer expects a list of unit tensors, got "
          f"{type(units).__name__}")
    if len(units) != self.num_units:
      raise ValueError(
          f"UnitMixer was fed {len(units)} unit tensors; it mixes "
          f"num_units={self.num_units}")
    shapes = {tuple(u.shape[1:]) for u in units}
    if len(shapes) > 1:
      raise ValueError(
          "UnitMixer units must share one shape (set the trunk's "
          f"block3_last_stride=1); got {sorted(shapes, key=str)}")

  def _mix(self, units, task):
    alpha = ops.cast(self.alpha(task), units[0].dtype)
    mixed = units[0] * alpha[0]
    for m in range(1, self.num_units):
      mixed = mixed + units[m] * alpha[m]
    return mixed

  def call(self, units, task: Optional[str] = None):
    self._check_units(units)
    if task is None:
      return {t: self._mix(units, t) for t in self._task_names}
    mixed = self._mix(units, task)
    if self.l1 > 0:
      self.add_loss(self.penalty(task))
    return mixed

  # Saved weights (.weights.h5, .keras) hold one entry per row, keyed by
  # task name: the rows all have shape [N], so a file keyed by position
  # would hand a model built with the tasks in another order the wrong
  # rows without any error.
  def save_own_variables(self, store):
    for task in self._task_names:
      store[task] = self._alphas[task]

  def load_own_variables(self, store):
    keys = list(store.keys())
    missing = [t for t in self._task_names if t not in keys]
    extra = [k for k in keys if k not in self._alphas]
    if missing or extra:
      raise ValueError(
          f"UnitMixer {self.name!r}: the saved rows do not match this "
          f"mixer's tasks: missing {missing or 'none'}, unexpected "
          f"{extra or 'none'} (saved rows: {', '.join(keys)})")
    for task in self._task_names:
      self._alphas[task].assign(store[task])

  def get_config(self):
    config = super().get_config()
    config.update(task_names=self.task_names, num_units=self.num_units,
                  l1=self.l1, init=self.init)
    return config
