"""The multi-task training step against a bare trunk, and the input pipeline.

    python benchmarks/train_step.py                  # BENCHMARKS.md tables
    python benchmarks/train_step.py --sizes=demo --repeats=3   # quick check

Part 1, step time (every size in ``--sizes``). A :class:`Trainer` is built
from the size's flags (``--demo_flags``, ``--paper_flags``: a flagfile plus
overrides, parsed as ``python -m mtssl_tf.train`` parses them) with its own
datasets replaced by one fixed batch per task, made by the task's data op
from a real photo. For each task the script times, on the same batch:

* the trainer's own step ``trainer.train_step(task, batch)`` (forward,
  loss, backward, all-reduce, gradient accumulation) plus the per-cycle
  ``trainer.apply_update()`` divided by the cycle length (its amortised
  share);
* the baseline: a bare trunk forward+backward in a ``tf.function`` under the
  same strategy on the same trunk images (``task.trunk_images(inputs)``):
  the sum of the last block-3 unit, its gradient with respect to the trunk
  variables, applied with an optimizer of the same kind at every step;
* for the breakdown, the task's head and loss alone (forward+backward,
  features of the trunk's output shape as input).

The calls alternate (step, baseline, head, accumulation alone) so load
from other processes hits all alike; the first ``--warmup`` rounds (tracing) are not timed; each
row is the median of ``--repeats`` rounds. A call ends when its loss is on
the host, as in ``Trainer.train``.

Part 2, input pipeline (demo size). Batches per second that
:func:`mtssl_tf.data.pipeline.training_datasets` delivers for each task
(offline sample source, the demo config's data flags), read alone after a
warm-up, and the rate of "one batch of every task" with all pipelines live;
against what the trainer consumes: one batch per step while that task trains
(1 / its step time) and one per cycle in round robin (1 / cycle time). The
same pipelines over a source with its decoded images cached in memory are
timed beside them (the fix that the numbers call for). Then the trainer's
loop (``next(iterator)``, step function, apply per cycle) runs
``--loop_cycles`` cycles on fixed batches and on each pipeline: steps/s and
the share of time blocked in ``next``.

Run from anywhere; the flagfiles' nested paths resolve from the repository
root, which the script makes its working directory. Prints Markdown tables
for BENCHMARKS.md.
"""
from __future__ import annotations

import os
import platform
import shlex
import statistics
import sys
import tempfile
import time

from absl import app
from absl import flags

flags.DEFINE_list("sizes", ["demo", "paper"], "Sizes to time: demo, paper.")
flags.DEFINE_string(
    "demo_flags", "--flagfile=configs/demo.cfg",
    "Training flags of the demo size (flagfile and overrides): the recipe "
    "that `make demo` trains.")
flags.DEFINE_string(
    "paper_flags",
    "--flagfile=configs/paper_4task_lasso.cfg --batch_size=4 --data=offline",
    "Training flags of the paper size: ResNet-101, 96 px patches; the batch "
    "is cut to 4 so that it runs on a small CPU, and the data is the offline "
    "sample set, so that no ImageNet is needed (the steps run on fixed "
    "batches in any case).")
flags.DEFINE_list("demo_tasks", [],
                  "Demo size: time only these tasks (default: all of the "
                  "config's).")
flags.DEFINE_list(
    "paper_tasks", ["relative_position", "exemplar"],
    "Paper size: time only these tasks (the two 96 px ones by default: "
    "tracing ResNet-101 steps takes minutes on a small CPU); empty = all. "
    "The apply is amortised over the config's full cycle in any case.")
flags.DEFINE_integer("repeats", 15, "Timed rounds at demo size.")
flags.DEFINE_integer("paper_repeats", 6, "Timed rounds at paper size.")
flags.DEFINE_integer("warmup", 2, "Untimed rounds first (the first traces).")
flags.DEFINE_bool("input_pipeline", True,
                  "Time the input pipeline at demo size (part 2).")
flags.DEFINE_integer("input_batches", 40,
                     "Batches per task read for the pipeline rate (the "
                     "rate is taken over the second half).")
flags.DEFINE_integer("input_warmup", 5,
                     "Batches per task read before timing (buffers fill).")
flags.DEFINE_integer("loop_cycles", 6,
                     "Cycles of the real loop (data wait); 0 skips it.")
flags.DEFINE_bool("step_table", True,
                  "Part 1 (and part 2, which needs it); --nostep_table runs "
                  "part 3 alone.")
flags.DEFINE_bool("scale_out", True,
                  "Part 3: float32 vs mixed_bfloat16, XLA off vs on, K=1 vs "
                  "K=cycle steps per loop, the matmul peak, every size.")
flags.DEFINE_integer("scale_out_loops", 20,
                     "Part 3, demo size: timed passes of one cycle (or one "
                     "K loop) per variant, after one untimed pass.")
flags.DEFINE_integer("paper_scale_out_loops", 3,
                     "Part 3, paper size: timed passes per variant.")
flags.DEFINE_integer("matmul_size", 2048, "Part 3: n of the n^3 matmul peak.")
FLAGS = flags.FLAGS

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _log(text):
  print(text, file=sys.stderr, flush=True)


def _config(args: str, run_dir: str):
  """A TrainConfig from training flags, as the train command parses them,
  in a FlagValues of its own so that several sizes parse independently."""
  from mtssl_tf.cli import flags as mt_flags
  values = flags.FlagValues()
  mt_flags.define_train_flags(values)
  # Held-out pretext metrics off: the steps run on fixed batches, and the
  # evaluator would read its held-out split when the Trainer is built (the
  # paper recipe's is ImageNet's validation split).
  argv = ["bench"] + shlex.split(args) + [f"--run_dir={run_dir}",
                                          "--plots=false",
                                          "--pretext_eval_every=0"]
  values(argv)
  return mt_flags.config_from_flags(values)


def _photo():
  import skimage.data
  return skimage.data.astronaut()  # 512 x 512 RGB, big enough for all tasks


def _fixed_batch(task, batch_size: int, seed: int):
  """One global batch ``(inputs, targets)`` made by the task's own data op
  from a real photo (motion segmentation: with a synthetic mask)."""
  import numpy as np
  import tensorflow as tf

  image = tf.constant(_photo())
  mask = np.zeros(image.shape[:2], np.uint8)
  mask[100:300, 150:350] = 1  # a moving square; only its shape matters here
  mask = tf.constant(mask)

  def make(i):
    example = {"image": image, "mask": mask, "id": i}
    return task.preprocess(example, tf.stack([tf.constant(seed, tf.int64), i]))

  ds = tf.data.Dataset.range(batch_size).map(make).batch(batch_size)
  batch = next(iter(ds))
  return tf.nest.map_structure(tf.identity, batch)


def _images_desc(images) -> str:
  n, h, w = images.shape[:3]
  return f"{n} x {h}x{w}"


def _time(fn):
  start = time.perf_counter()
  out = fn()
  if out is not None:
    import tensorflow as tf
    for t in tf.nest.flatten(out):
      t.numpy()  # the call ends when the loss is on the host
  return time.perf_counter() - start


def bench_step(size: str, args: str, run_dir: str):
  """Part 1 for one size; returns (rows, trainer, step medians)."""
  import tensorflow as tf

  from mtssl_tf.training.trainer import Trainer, make_optimizer

  config = _config(args, run_dir)
  only = FLAGS.demo_tasks if size == "demo" else FLAGS.paper_tasks
  tasks = [t for t in config.tasks if not only or t in only]
  missing = [t for t in only if t not in config.tasks]
  if missing:
    raise app.UsageError(f"--{size}_tasks {missing} not in the {size} "
                         f"config's tasks {list(config.tasks)}")
  repeats = FLAGS.repeats if size == "demo" else FLAGS.paper_repeats
  _log(f"[{size}] building: ResNet-{config.trunk.depth} width "
       f"{config.trunk.width}, batch {config.batch_size}, lasso "
       f"{config.lasso}, tasks {', '.join(config.tasks)}")
  from mtssl_tf import tasks as tasks_lib
  batches = {}
  for name in config.tasks:
    task = tasks_lib.get_task(name, **config.task_kwargs(name))
    batches[name] = _fixed_batch(task, config.task_batch_size(name),
                                 config.seed)
  datasets = {n: tf.data.Dataset.from_tensors(b).repeat()
              for n, b in batches.items()}
  trainer = Trainer(config, datasets=datasets, log=_log)
  model, strategy = trainer.model, trainer.strategy
  trunk = model.trunk
  last_unit = trunk.unit_names[-1]
  trunk_vars = list(trunk.trainable_variables)
  with strategy.scope():
    base_opt = make_optimizer(config.optimizer)
    base_opt.build(trunk_vars)

  def base_replica(images):
    with tf.GradientTape() as tape:
      out = trunk(images, training=True)[last_unit]
      loss = tf.reduce_sum(out) / tf.cast(tf.shape(out)[0], tf.float32)
    grads = tape.gradient(loss, trunk_vars)
    base_opt.apply_gradients(zip(grads, trunk_vars))
    return loss

  @tf.function
  def baseline(images):
    loss = strategy.run(base_replica, args=(images,))
    return strategy.reduce(tf.distribute.ReduceOp.SUM, loss, axis=None)

  # The baseline's optimizer update alone, to split its time into trunk
  # forward+backward and the per-step apply that the cycle update replaces.
  tiny_grads = [tf.fill(v.shape, 1e-6) for v in trunk_vars]

  def base_apply_replica():
    base_opt.apply_gradients(zip(tiny_grads, trunk_vars))
    return tf.constant(0.0)

  @tf.function
  def base_apply():
    out = strategy.run(base_apply_replica)
    return strategy.reduce(tf.distribute.ReduceOp.SUM, out, axis=None)

  def make_head_fn(name):
    task = model.task_objects[name]
    head = model.heads[name]
    head_vars = list(head.trainable_variables)

    def replica(features, targets):
      with tf.GradientTape() as tape:
        tape.watch(features)
        loss = tf.reduce_sum(task.loss(
            targets, head(features, training=True))) / (
                config.task_batch_size(name))
      grads = tape.gradient(loss, head_vars + [features])
      # Only the gradients' cost counts here; they are not applied.
      return loss + 0.0 * tf.add_n([tf.reduce_sum(g) for g in grads])

    @tf.function
    def head_fn(features, targets):
      loss = strategy.run(replica, args=(features, targets))
      return strategy.reduce(tf.distribute.ReduceOp.SUM, loss, axis=None)

    return head_fn

  def make_accumulate_fn(name):
    # The step function's gradient accumulation alone (tiny gradients).
    accumulators = trainer.accumulators_of(name)
    grads = [tf.fill(a.shape, 1e-9) for a in accumulators]

    def replica():
      for a, g in zip(accumulators, grads):
        a.assign_add(g)
      return tf.constant(0.0)

    @tf.function
    def accumulate_fn():
      out = strategy.run(replica)
      return strategy.reduce(tf.distribute.ReduceOp.SUM, out, axis=None)

    return accumulate_fn if trainer.accumulators else (lambda: None)

  images = {n: model.task_objects[n].trunk_images(batches[n][0])
            for n in tasks}
  accumulate_fns = {n: make_accumulate_fn(n) for n in tasks}
  features, head_fns = {}, {}
  for name in tasks:
    shape = trunk(images[name][:1], training=False)[last_unit].shape
    features[name] = tf.random.stateless_normal(
        [images[name].shape[0]] + list(shape[1:]), [config.seed, 1])
    head_fns[name] = make_head_fn(name)

  times = {n: {"step": [], "base": [], "head": [], "accumulate": []}
           for n in tasks}
  apply_times, base_apply_times = [], []
  rounds = FLAGS.warmup + repeats
  for r in range(rounds):
    start = time.perf_counter()
    for name in tasks:
      t_step = _time(lambda: trainer.train_step(name, batches[name]))
      t_base = _time(lambda: baseline(images[name]))
      t_head = _time(lambda: head_fns[name](features[name],
                                            batches[name][1]))
      t_acc = _time(accumulate_fns[name])
      if r >= FLAGS.warmup:
        times[name]["accumulate"].append(t_acc)
        times[name]["step"].append(t_step)
        times[name]["base"].append(t_base)
        times[name]["head"].append(t_head)
    if trainer.accumulators:
      t_apply = _time(trainer.apply_update)
      if r >= FLAGS.warmup:
        apply_times.append(t_apply)
    t_base_apply = _time(base_apply)
    if r >= FLAGS.warmup:
      base_apply_times.append(t_base_apply)
    _log(f"[{size}] round {r + 1}/{rounds} "
         f"({'warm-up' if r < FLAGS.warmup else 'timed'}): "
         f"{time.perf_counter() - start:.1f}s")

  cycle = config.cycle_length
  if not apply_times:  # update=every_step: the step function applies
    apply_times = [0.0] * repeats
  apply_med = statistics.median(apply_times)
  # Each round's step carries that round's apply share; ratios are taken
  # per round (step and baseline ran back to back) and then the median, which
  # keeps slow drifts of the machine's load out of the ratio.
  steps = {n: [s + a / cycle for s, a in zip(times[n]["step"], apply_times)]
           for n in tasks}
  rows, step_med = [], {}
  med = statistics.median
  span = lambda v: f"{1e3 * min(v):.0f} - {1e3 * max(v):.0f}"
  for name in tasks:
    base = times[name]["base"]
    step_med[name] = med(steps[name])
    rows.append((size, name, _images_desc(images[name]),
                 1e3 * step_med[name], span(steps[name]), 1e3 * med(base),
                 span(base),
                 med([s / b for s, b in zip(steps[name], base)]),
                 min(steps[name]) / min(base),
                 1e3 * med(times[name]["head"]),
                 1e3 * med(times[name]["accumulate"]),
                 1e3 * apply_med / cycle))
  if len(tasks) > 1:
    n = len(tasks)
    step_sum = [sum(v) for v in zip(*(steps[t] for t in tasks))]
    base_sum = [sum(v) for v in zip(*(times[t]["base"] for t in tasks))]
    part = lambda k: 1e3 * med(
        [sum(v) for v in zip(*(times[t][k] for t in tasks))]) / n
    rows.append((size, f"mean over the {n} tasks", "",
                 1e3 * med(step_sum) / n, "", 1e3 * med(base_sum) / n, "",
                 med([s / b for s, b in zip(step_sum, base_sum)]),
                 min(step_sum) / min(base_sum), part("head"), part("accumulate"), 1e3 * apply_med / cycle))
  info = dict(config=config, apply_ms=1e3 * apply_med, repeats=repeats,
              base_apply_ms=1e3 * statistics.median(base_apply_times),
              params=_param_counts(model, tasks))
  return rows, trainer, step_med, info


def _param_counts(model, tasks):
  import numpy as np
  count = lambda vs: int(sum(np.prod(v.shape) for v in vs))
  out = {"trunk": count(model.trunk.trainable_variables)}
  for name in tasks:
    out[name] = count(model.heads[name].trainable_variables)
  return out


def _rate(iterators, batches: int) -> float:
  """Rounds per second in which ``next`` of every iterator delivers one
  batch, over the second half of ``batches`` rounds: the first reads may
  come from prefetch buffers that filled while nobody read."""
  stamps = []
  for _ in range(batches):
    for it in iterators:
      next(it)
    stamps.append(time.perf_counter())
  half = batches // 2
  return (batches - 1 - half) / (stamps[-1] - stamps[half])


def _cached_datasets(config, tasks, datasets):
  """The same per-task pipelines over a source whose decoded, size-limited
  examples are cached in memory (the fix measured in part 2): only the
  tasks' own data ops run per batch."""
  from mtssl_tf.data import pipeline

  out = {}
  for name, source in datasets.sources.items():
    out[name] = pipeline.task_dataset(
        tasks[name], source.dataset.cache(),
        batch_size=config.task_batch_size(name),
        seed=config.seed, deterministic=config.data.deterministic,
        shuffle_buffer=min(config.data.shuffle_buffer, 10_000))
  return out


def _loop(trainer, iterators, tasks, cycles: int):
  """``Trainer.train``'s loop body over ``iterators``: seconds in total and
  seconds blocked in ``next(iterator)``."""
  wait = 0.0
  start = time.perf_counter()
  for _ in range(cycles):
    for t in tasks:
      t0 = time.perf_counter()
      batch = next(iterators[t])
      wait += time.perf_counter() - t0
      loss, _ = trainer.train_step(t, batch)
      float(loss)
    trainer.apply_update()
  return time.perf_counter() - start, wait


def bench_input(config, trainer, step_med):
  """Part 2: the offline pipelines' batches/s against the trainer's
  consumption; then the trainer's loop on fixed batches and on the
  pipelines."""
  from mtssl_tf.data import pipeline

  tasks = list(config.tasks)
  missing = [t for t in tasks if t not in step_med]
  if missing:
    raise app.UsageError(f"the input pipeline part needs the step time of "
                         f"every task; {missing} were left out (--demo_tasks)")
  cycle_s = sum(step_med[t] for t in tasks)
  variants = {"as is": pipeline.training_datasets(config, trainer.model.tasks,
                                                  log=_log)}
  variants["decoded source cached"] = _cached_datasets(
      config, trainer.model.tasks, variants["as is"])
  rates, together = {}, {}
  for variant, datasets in variants.items():
    iters = {t: iter(datasets[t]) for t in tasks}
    for t in tasks:
      for _ in range(FLAGS.input_warmup):  # shuffle buffers fill
        next(iters[t])
      rates[variant, t] = _rate([iters[t]], FLAGS.input_batches)
      _log(f"[input] {variant}: {t}: {rates[variant, t]:.1f} batches/s")
    # One batch of every task per cycle, all pipelines live, as the
    # round-robin trainer reads them.
    together[variant] = _rate([iters[t] for t in tasks], FLAGS.input_batches)
    del iters
    _log(f"[input] {variant}: all tasks: {together[variant]:.1f} cycles/s")
  rows = []
  for t in tasks:
    per_step, per_cycle = 1.0 / step_med[t], 1.0 / cycle_s
    rows.append((t, [rates[v, t] for v in variants], per_step, per_cycle))
  rows.append(("one batch of each task (cycles/s)",
               [together[v] for v in variants], None, per_cycle))

  loop = None
  if FLAGS.loop_cycles:
    loop = {}
    sources = {"fixed batches (no input work)": trainer.datasets}
    for variant, datasets in variants.items():
      sources[f"pipeline, {variant}"] = datasets
    for name, datasets in sources.items():
      # Iterators made here and dropped after, so that no other pipeline
      # prefetches in the background.
      iters = {t: iter(datasets[t]) for t in tasks}
      _loop(trainer, iters, tasks, 1)  # buffers fill; a new spec traces
      loop[name] = _loop(trainer, iters, tasks, FLAGS.loop_cycles)
      del iters
      _log(f"[loop] {name}: {loop[name][0]:.1f}s")
  return list(variants), rows, loop


# -- part 3: scale-out options ------------------------------------------------
SCALE_OUT_VARIANTS = (
    ("float32, XLA off, K=1", ()),
    ("mixed_bfloat16", ("--mixed_precision=mixed_bfloat16",)),
    ("XLA on", ("--jit_compile",)),
    ("K=cycle", ("--steps_per_loop=CYCLE",)),
)


_MATMUL = {}


def matmul_peak(n: int, repeats: int = 5) -> float:
  """float32 FLOP/s of an n^3 matmul on this machine (best of repeats)."""
  import tensorflow as tf
  a = tf.random.stateless_normal([n, n], [0, 1])
  b = tf.random.stateless_normal([n, n], [0, 2])
  mm = _MATMUL.setdefault(n, tf.function(
      lambda x, y: tf.reduce_sum(tf.matmul(x, y)), autograph=False))
  mm(a, b).numpy()
  best = min(_time(lambda: mm(a, b)) for _ in range(repeats))
  return 2.0 * n ** 3 / best


def trunk_flops(trunk, images) -> float:
  """FLOPs of one trunk forward on ``images``: 2 * MACs of every Conv2D and
  MatMul in the traced graph (element-wise ops left out). A training step
  is taken as 3 forwards (backward = 2 forwards: input and weight
  gradients)."""
  import numpy as np
  import tensorflow as tf
  fn = tf.function(lambda x: trunk(x, training=True))
  graph = fn.get_concrete_function(
      tf.TensorSpec(images.shape, images.dtype)).graph
  total = 0.0

  def walk(g):
    nonlocal total
    for op in g.get_operations():
      if op.type == "Conv2D":
        out = op.outputs[0].shape
        kernel = op.inputs[1].shape
        total += 2.0 * np.prod(out.as_list()) * np.prod(kernel.as_list()[:3])
      elif op.type == "MatMul":
        a, b = op.inputs[0].shape, op.inputs[1].shape
        total += 2.0 * a[0] * a[1] * b[1]
    for f in getattr(g, "_functions", {}).values():
      walk(f.graph) if hasattr(f, "graph") else None

  walk(graph)
  return total


def bench_scale_out(size: str, args: str, run_dir: str, only):
  """Part 3 for one size: one Trainer per variant on fixed batches; each
  runs ``--scale_out_loops`` cycles through ``Trainer.run_loop`` (the train
  loop's body) after one untimed cycle (tracing). Returns rows."""
  import tensorflow as tf

  from mtssl_tf import tasks as tasks_lib
  from mtssl_tf.training.trainer import Trainer

  rows = []
  base = _config(args, run_dir)
  tasks = [t for t in base.tasks if not only or t in only]
  cycle = len(tasks)
  # Synchronised BN cannot be compiled; one replica here, so it changes no
  # number: every variant runs without it, alike.
  common = f" --nosync_bn --tasks={','.join(tasks)} --checkpoint_every=100000"
  batches = {}
  for name in tasks:
    task = tasks_lib.get_task(name, **base.task_kwargs(name))
    batches[name] = _fixed_batch(task, base.task_batch_size(name), base.seed)
  for label, extra in SCALE_OUT_VARIANTS:
    extra = " ".join(extra).replace("CYCLE", str(max(cycle, 2)))
    config = _config(args + common + " " + extra,
                     os.path.join(run_dir, label.replace(" ", "_")))
    datasets = {n: tf.data.Dataset.from_tensors(b).repeat()
                for n, b in batches.items()}
    trainer = Trainer(config, datasets=datasets, log=_log)
    k = config.steps_per_loop
    per_pass = max(cycle, k)  # steps of one pass: a cycle or one K loop
    step = 0
    start = time.perf_counter()
    while step < per_pass:  # traces every plan of a pass
      plan = trainer.run_loop(step)[0]
      step += len(plan)
    _log(f"[{size}] {label}: warm-up {time.perf_counter() - start:.0f}s")
    trainer.device_seconds = 0.0
    calls = 0
    start = time.perf_counter()
    loops = (FLAGS.scale_out_loops if size == "demo"
             else FLAGS.paper_scale_out_loops)
    for _ in range(loops):
      done = 0
      while done < per_pass:
        plan = trainer.run_loop(step)[0]
        step += len(plan)
        done += len(plan)
        calls += 1
    wall = time.perf_counter() - start
    steps = loops * per_pass
    rows.append((size, label, k, steps / wall, 1e3 * wall / steps,
                 1e3 * (wall - trainer.device_seconds) / steps, calls))
    _log(f"[{size}] {label}: {steps / wall:.2f} steps/s")
    del trainer
  return rows, tasks, batches


def bench_peak(size, args, run_dir, only, batches, step_rows):
  """The bare trunk's forward+backward at this size against the matmul
  peak measured now."""
  import tensorflow as tf

  from mtssl_tf.models.build import build_model

  config = _config(args + " --nosync_bn", run_dir)
  model = build_model(config)
  task = [t for t in config.tasks if not only or t in only][0]
  images = model.task_objects[task].trunk_images(batches[task][0])
  trunk = model.trunk
  variables = trunk.trainable_variables
  last = trunk.unit_names[-1]

  @tf.function
  def step(x):
    with tf.GradientTape() as tape:
      loss = tf.reduce_sum(trunk(x, training=True)[last])
    return tf.add_n([tf.reduce_sum(g) for g in tape.gradient(loss,
                                                              variables)])

  step(images).numpy()
  # Alternated, best of each: load from other processes hits both alike
  # (a lone matmul measurement read 58 and 110 GFLOP/s minutes apart here).
  best, peak = float("inf"), 0.0
  for _ in range(4):
    best = min(best, _time(lambda: step(images)))
    peak = max(peak, matmul_peak(FLAGS.matmul_size, repeats=3))
  flops = 3.0 * trunk_flops(trunk, images)
  return dict(size=size, task=task, images=_images_desc(images),
              step_ms=1e3 * best, gflop=flops / 1e9, peak=peak / 1e9,
              achieved=flops / best / 1e9, fraction=flops / best / peak,
              params=int(sum(int(tf.size(v)) for v in variables)))


def _fmt(v, digits=1):
  if v is None or v == "":
    return ""
  if isinstance(v, str):
    return v
  return f"{v:.{digits}f}"


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  for size in FLAGS.sizes:
    if size not in ("demo", "paper"):
      raise app.UsageError(f"--sizes: unknown size {size!r}; known: demo, "
                           "paper")
  if FLAGS.input_batches < 4:
    raise app.UsageError("--input_batches must be >= 4")
  if min(FLAGS.repeats, FLAGS.paper_repeats, FLAGS.warmup) < 1:
    raise app.UsageError("--repeats, --paper_repeats and --warmup must be "
                         ">= 1 (the first call traces)")
  os.chdir(REPO)
  import tensorflow as tf

  total_start = time.perf_counter()
  load = os.getloadavg()
  all_rows, infos = [], {}
  input_rows = None
  scale_rows, peaks = [], []
  with tempfile.TemporaryDirectory(prefix="mtssl_bench_") as tmp:
    for size in (FLAGS.sizes if FLAGS.step_table else []):
      args = FLAGS.demo_flags if size == "demo" else FLAGS.paper_flags
      rows, trainer, step_med, info = bench_step(
          size, args, os.path.join(tmp, size))
      all_rows += rows
      infos[size] = info
      if size == "demo" and FLAGS.input_pipeline:
        input_rows = bench_input(info["config"], trainer, step_med)
      del trainer
    for size in (FLAGS.sizes if FLAGS.scale_out else []):
      args = FLAGS.demo_flags if size == "demo" else FLAGS.paper_flags
      only = FLAGS.demo_tasks if size == "demo" else FLAGS.paper_tasks
      rows, tasks, batches = bench_scale_out(
          size, args, os.path.join(tmp, f"{size}_scale"), only)
      scale_rows += rows
      peaks.append(bench_peak(size, args, os.path.join(tmp, f"{size}_peak"),
                              only, batches, rows))
  load_after = os.getloadavg()

  cpu = platform.processor() or platform.machine()
  print(f"Machine: {os.cpu_count()} CPU cores ({cpu}), "
        f"{len(tf.config.list_physical_devices('GPU'))} GPU; TensorFlow "
        f"{tf.__version__}. Load average (1 min) {load[0]:.2f} before, "
        f"{load_after[0]:.2f} after; whole run "
        f"{time.perf_counter() - total_start:.0f}s.")
  print()
  for size, info in infos.items():
    c = info["config"]
    heads = ", ".join(f"{t} {n / 1e6:.2f}M" for t, n in info["params"].items()
                      if t != "trunk")
    args = FLAGS.demo_flags if size == "demo" else FLAGS.paper_flags
    print(f"- {size} (`{args}`): ResNet-{c.trunk.depth} v2 width "
          f"{c.trunk.width} (trunk {info['params']['trunk'] / 1e6:.2f}M "
          f"parameters; heads {heads}), global batch {c.batch_size}, lasso "
          f"{'on' if c.lasso else 'off'}, {c.optimizer.name}, update "
          f"{c.update} over {c.cycle_length} tasks; median of "
          f"{info['repeats']} rounds after {FLAGS.warmup} warm-up. Per-cycle "
          f"apply (all variables) {info['apply_ms']:.0f} ms; the bare "
          f"trunk's per-step apply alone {info['base_apply_ms']:.0f} ms.")
  print()
  if all_rows:
    print("ms per step. multi-task step = the trainer's step function + the "
          "per-cycle apply / cycle length (the last column). ratio = median "
          "over rounds of (multi-task step / bare trunk), both timed back to "
          "back; ratio of minima = fastest step / fastest bare trunk (the "
          "least disturbed by other processes).")
    print()
    print("| size | task | trunk images | multi-task step | min - max | "
          "bare trunk | min - max | ratio | ratio of minima | "
          "head + loss alone | accumulate alone | apply share |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for row in all_rows:
      (size, name, imgs, step, srange, base, brange, ratio, ratio_min, head,
       acc, apply) = row
      print(f"| {size} | {name} | {imgs} | {_fmt(step)} | {srange} | "
            f"{_fmt(base)} | {brange} | {_fmt(ratio, 2)} | "
            f"{_fmt(ratio_min, 2)} | {_fmt(head)} | {_fmt(acc)} | "
            f"{_fmt(apply)} |")
  if input_rows:
    variants, rows, loop = input_rows
    print()
    print(f"Input pipeline at demo size (`training_datasets`, offline "
          f"source), each rate over the last {FLAGS.input_batches // 2} of "
          f"{FLAGS.input_batches} batches after {FLAGS.input_warmup} "
          f"warm-up batches. The trainer's demand for a task: one batch per "
          f"step while that task trains (step demand), one batch per cycle "
          f"in round robin (cycle demand); x = pipeline / demand.")
    print()
    head = " | ".join(f"{v}: batches/s | x step | x cycle" for v in variants)
    print(f"| task | {head} | step demand | cycle demand |")
    print("|---|" + "---:|---:|---:|" * len(variants) + "---:|---:|")
    for name, rates, per_step, per_cycle in rows:
      cells = " | ".join(
          f"{r:.1f} | {'' if per_step is None else f'{r / per_step:.1f}'} | "
          f"{r / per_cycle:.1f}" for r in rates)
      print(f"| {name} | {cells} | "
            f"{'' if per_step is None else f'{per_step:.1f}'} | "
            f"{per_cycle:.2f} |")
    if loop:
      print()
      print(f"The trainer's loop, {FLAGS.loop_cycles} cycles after one "
            f"untimed:")
      print()
      print("| batches from | steps/s | blocked in next() |")
      print("|---|---:|---:|")
      steps = FLAGS.loop_cycles * len(infos["demo"]["config"].tasks)
      for name, (total, wait) in loop.items():
        print(f"| {name} | {steps / total:.2f} | "
              f"{100 * wait / total:.1f}% |")
  if scale_rows:
    print()
    print(f"Scale-out options (part 3): one Trainer per variant on fixed "
          f"batches (no input work), synchronised BN off in every variant "
          f"(XLA cannot compile it; one replica, so no number changes), "
          f"{FLAGS.scale_out_loops} (demo) or {FLAGS.paper_scale_out_loops} "
          f"(paper) passes of one cycle (or one K loop) "
          f"through `Trainer.run_loop` after one untimed pass. host ms/step "
          f"= wall time outside the loop function's call and host read, per "
          f"step. Ratios against the first row of the same size.")
    print()
    print("| size | variant | K | steps/s | ms/step | x float32 K=1 | "
          "host ms/step | host reads |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    base = {}
    for size, label, k, rate, ms, host, calls in scale_rows:
      base.setdefault(size, rate)
      print(f"| {size} | {label} | {k} | {rate:.2f} | {ms:.0f} | "
            f"{rate / base[size]:.2f} | {host:.2f} | {calls} |")
  for p in peaks:
    print()
    print(f"Peak fraction, {p['size']} size: bare trunk forward+backward "
          f"({p['params'] / 1e6:.2f}M parameters) on the {p['task']} trunk "
          f"images ({p['images']}): {p['step_ms']:.0f} ms for "
          f"{p['gflop']:.2f} GFLOP (3 x the Conv2D/MatMul FLOPs of a "
          f"forward) = {p['achieved']:.1f} GFLOP/s; float32 "
          f"{FLAGS.matmul_size}^3 matmul in the same run: {p['peak']:.1f} "
          f"GFLOP/s; fraction {100 * p['fraction']:.1f}%.")
  return 0


if __name__ == "__main__":
  app.run(main)
