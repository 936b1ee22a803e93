"""One task's training step and the update it makes.

Doersch & Zisserman (ICCV 2017, Sec. 3): "at each iteration only one head is
active, but the gradients are averaged across iterations where different heads
are active". A step of task ``t`` on one replica:

1. forward through the trunk (and ``t``'s UnitMixer row) and ``t``'s head
   under the model's Keras dtype policy; the outputs are cast to float32
   before the loss (softmax, soft-encoding, triplet distances);
2. the loss: the replica's per-example losses summed and divided by ``t``'s
   GLOBAL batch, plus the lasso and weight-decay penalties divided by the
   number of replicas (the all-reduce sums them back to one);
3. its gradients, of the loss scaled by the optimizer when that is a Keras
   ``LossScaleOptimizer`` (``mixed_float16``: float16 gradients underflow
   to zero without a scale);
4. ``update="cycle"``: the gradients are all-reduced (summed over replicas,
   so every replica holds the same values) and added to accumulators; when
   the cycle over the tasks ends their mean is applied once.
   ``update="every_step"``: they are applied at once.

The cycle's mean is applied in cross-replica context, where the optimizer
adds no all-reduce of its own. Keras applies a ``LossScaleOptimizer`` in
replica context only, where it all-reduces (sums) what each replica passes:
gradients that are already all-reduced (the cycle's mean; every step's
gradients under a loss scale) are passed as one share per replica,
``1 / replicas`` of the value, so that the sum is the value again and every
replica sees the same numbers: the loss-scale optimizer's skip decision (a non-finite gradient: no update,
the scale halves; ``dynamic_growth_steps`` good updates: it doubles) is then
the same on every replica. A cycle is applied or skipped whole.

``jit_compile``: each task's forward/loss/backward is one XLA-compiled
function, unless the task says why it cannot be
(:meth:`~mtssl_tf.tasks.Task.xla_incompatibility`); the all-reduce,
accumulation and optimizer stay outside it.
"""
from __future__ import annotations

import contextlib
from typing import Callable, Dict, List, Optional

import keras
import tensorflow as tf

from mtssl_tf.training import run_checkpoints as ckpt_lib
from mtssl_tf.training import regularization


def make_optimizer(config, mixed_precision: str = "float32",
                   loss_scale_growth_interval: int = 2000
                   ) -> keras.optimizers.Optimizer:
  """The optimizer named by an :class:`~mtssl_tf.config.OptimizerConfig`;
  under ``mixed_float16`` wrapped in Keras's dynamic
  ``LossScaleOptimizer`` (the scale doubles after
  ``loss_scale_growth_interval`` good updates)."""
  kwargs = {"learning_rate": config.learning_rate}
  if config.clipnorm:
    kwargs["clipnorm"] = config.clipnorm
  if config.name == "rmsprop":
    inner = keras.optimizers.RMSprop(rho=config.rho, momentum=config.momentum,
                                     epsilon=config.epsilon, **kwargs)
  elif config.name == "sgd":
    inner = keras.optimizers.SGD(**kwargs)
  elif config.name == "momentum":
    inner = keras.optimizers.SGD(momentum=config.momentum, **kwargs)
  else:
    inner = keras.optimizers.Adam(epsilon=min(config.epsilon, 1e-3), **kwargs)
  if mixed_precision != "mixed_float16":
    return inner
  return keras.optimizers.LossScaleOptimizer(
      inner, dynamic_growth_steps=int(loss_scale_growth_interval))


@contextlib.contextmanager
def dtype_policy(name: str):
  """Layers made inside take the Keras dtype policy ``name`` (captured at
  construction); the global policy is restored afterwards so that nothing
  else in the process changes."""
  before = keras.config.dtype_policy()
  keras.config.set_dtype_policy(name)
  try:
    yield
  finally:
    keras.config.set_dtype_policy(before)


def float32(outputs):
  """Floating outputs in float32: losses are computed in full precision
  under any dtype policy."""
  def cast(t):
    return tf.cast(t, tf.float32) if t.dtype.is_floating else t
  return tf.nest.map_structure(cast, outputs)


def scaled(optimizer, loss):
  """``loss`` times the optimizer's loss scale (itself without one)."""
  if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
    return optimizer.scale_loss(loss)
  return loss


def apply_reduced(optimizer, grads, variables) -> None:
  """Applies gradients that every replica holds already all-reduced
  (replica context): each replica passes its share so that the optimizer's
  own all-reduce sums them back to ``grads``."""
  replicas = tf.distribute.get_replica_context().num_replicas_in_sync
  if replicas > 1:
    grads = [g / replicas for g in grads]
  optimizer.apply(grads, variables)


class TaskUpdates:
  """Every task's replica step and the cycle's apply, over one model.

  Args:
    model: a :class:`~mtssl_tf.models.multitask.MultiTaskModel` built in
      the strategy's scope.
    optimizers: task -> optimizer (one object shared by every task unless
      ``config.optimizer.per_task``); built here, inside the scope.
    config: the run's :class:`~mtssl_tf.config.TrainConfig`.
    strategy: the ``tf.distribute`` strategy (its scope is entered here).
  """

  def __init__(self, model, optimizers: Dict[str, keras.optimizers.Optimizer],
               config, strategy):
    self.model, self.optimizers, self.config = model, optimizers, config
    self.strategy = strategy
    self.num_replicas = strategy.num_replicas_in_sync
    # The traced steps run through AutoGraph only for a task that needs it
    # (Task.autograph); otherwise tracing runs the Python as written.
    self.autograph = any(getattr(model.task_objects[t], "autograph", True)
                         for t in config.tasks)
    with strategy.scope():
      # Sorted by checkpoint name, not by construction (task) order: the
      # optimizer's slots and the accumulators follow this list.
      self.variables = ckpt_lib.canonical_order(model,
                                                model.trainable_variables)
      self._index = {id(v): i for i, v in enumerate(self.variables)}
      for opt in self.distinct_optimizers():
        # Slots must exist inside the scope before the first (traced) step.
        opt.build(self.variables)
      self.accumulators = []
      if config.update == "cycle":
        # Gradients are all-reduced before they are added, so every replica
        # holds the same value: keep the first replica's.
        self.accumulators = [
            tf.Variable(tf.zeros_like(v), trainable=False,
                        aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA,
                        name=f"accum_{i}")
            for i, v in enumerate(self.variables)]
    # task -> its replica step; looked up when a loop is traced.
    self.replica_steps: Dict[str, Callable] = {
        t: self._make_replica_step(t) for t in config.tasks}

  def distinct_optimizers(self) -> List[keras.optimizers.Optimizer]:
    """Each optimizer once, in task order."""
    return list({id(o): o for o in self.optimizers.values()}.values())

  def variables_of(self, task: str) -> List[tf.Variable]:
    """The trainable variables that ``task``'s loss depends on: the trunk,
    the task's head and (with the lasso) its mixer alphas."""
    variables = list(self.model.trunk.trainable_variables)
    variables += list(self.model.heads[task].trainable_variables)
    if self.model.mixer is not None:
      variables.append(self.model.mixer.row(task))
    return variables

  def accumulators_of(self, task: str) -> List[tf.Variable]:
    """The gradient accumulators of :meth:`variables_of` ``(task)``, in the
    same order (empty for ``update=every_step``)."""
    if not self.accumulators:
      return []
    return [self.accumulators[self._index[id(v)]]
            for v in self.variables_of(task)]

  def xla_incompatibility(self, task: str) -> Optional[str]:
    """Why ``task``'s step runs uncompiled here (the task says), or None."""
    return self.model.task_objects[task].xla_incompatibility(
        self.num_replicas)

  def compiled(self, task: str) -> bool:
    """Whether ``task``'s forward/loss/backward is XLA-compiled."""
    return (self.config.jit_compile
            and self.xla_incompatibility(task) is None)

  def _gradient_fn(self, task_name: str):
    """``(inputs, targets) -> (loss, penalty, scaled gradients)`` of one
    replica's batch of ``task_name``."""
    model, optimizer = self.model, self.optimizers[task_name]
    task = model.task_objects[task_name]
    variables = self.variables_of(task_name)
    # The task's own global batch (--task_batch_size): the loss is the mean
    # over THIS task's examples, whatever the other tasks' batches are.
    global_batch = self.config.task_batch_size(task_name)
    replicas, decay = self.num_replicas, self.config.weight_decay

    def compute(inputs, targets):
      with tf.GradientTape() as tape:
        outputs = float32(model(inputs, task=task_name, training=True))
        per_example = tf.cast(task.loss(targets, outputs), tf.float32)
        # Each replica sums its own examples and divides by the GLOBAL batch;
        # the all-reduce (a sum over replicas) then yields the global mean,
        # the same value one replica computes on the whole batch.
        loss = tf.reduce_sum(per_example) / global_batch
        # Every replica adds the identical lasso and weight-decay penalties;
        # dividing by the number of replicas makes their sum count once.
        penalty = (tf.cast(tf.add_n(model.losses), tf.float32)
                   if model.losses else tf.constant(0.0))
        penalty = (penalty + regularization.l2_penalty(variables, decay)
                   ) / replicas
        total = scaled(optimizer, loss + penalty)
      grads = tape.gradient(total, variables)
      grads = [tf.zeros_like(v) if g is None else tf.cast(g, v.dtype)
               for g, v in zip(grads, variables)]
      return loss, penalty, grads

    if self.compiled(task_name):
      return tf.function(compute, jit_compile=True, autograph=self.autograph)
    return compute

  def _make_replica_step(self, task_name: str):
    """The per-replica step of one task: loss, gradients, then their
    accumulation (``update=cycle``) or application (``every_step``)."""
    compute = self._gradient_fn(task_name)
    optimizer = self.optimizers[task_name]
    variables = self.variables_of(task_name)
    accumulators = self.accumulators_of(task_name)
    loss_scaled = isinstance(optimizer, keras.optimizers.LossScaleOptimizer)

    def replica_step(inputs, targets):
      loss, penalty, grads = compute(inputs, targets)
      if accumulators or loss_scaled:
        ctx = tf.distribute.get_replica_context()
        grads = ctx.all_reduce(tf.distribute.ReduceOp.SUM, grads)
      if accumulators:
        for a, g in zip(accumulators, grads):
          a.assign_add(g)
      elif loss_scaled:
        apply_reduced(optimizer, grads, variables)
      else:
        # The optimizer all-reduces (sums) the per-replica gradients.
        optimizer.apply(grads, variables)
      return loss, penalty

    return replica_step

  def run_replicas(self, task: str, inputs, targets):
    """One step of ``task`` on per-replica values (cross-replica context);
    returns the global ``(loss, penalty)``."""
    loss, penalty = self.strategy.run(self.replica_steps[task],
                                      args=(inputs, targets))
    reduce = self.strategy.reduce
    return (reduce(tf.distribute.ReduceOp.SUM, loss, axis=None),
            reduce(tf.distribute.ReduceOp.SUM, penalty, axis=None))

  def apply_cycle(self) -> None:
    """Applies the mean of the accumulated gradients and clears them
    (cross-replica context; ``update=cycle`` only)."""
    optimizer = self.distinct_optimizers()[0]
    cycle = float(self.config.cycle_length)

    # Each step's gradient is already the mean over its task's own global
    # batch, so every task weighs the same in the cycle's mean whatever its
    # --task_batch_size (the paper averages over heads, not examples).
    mean = lambda: [a.read_value() / cycle for a in self.accumulators]
    if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
      # Keras applies a loss-scale optimizer in replica context only.
      self.strategy.run(
          lambda: apply_reduced(optimizer, mean(), self.variables))
    else:
      # Cross-replica context: the accumulators hold all-reduced sums, so
      # the optimizer applies the same mean gradient on every replica.
      optimizer.apply(mean(), self.variables)
    for a in self.accumulators:
      a.assign(tf.zeros_like(a))
