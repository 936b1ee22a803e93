"""Plots: the paper's Figure 5 (lasso weights) and loss curves.

matplotlib is imported inside the functions (Agg backend), so importing this
module is cheap and works without a display.
"""
from __future__ import annotations

import os
from typing import Dict, Mapping, Optional, Sequence, Union

import numpy as np


def _pyplot():
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  return plt


def alpha_matrix(alphas: Union[Mapping[str, Sequence[float]], "object"]):
  """(task names, |alpha| matrix [tasks, units]) from a dict or a UnitMixer."""
  if hasattr(alphas, "alphas"):
    alphas = alphas.alphas()
  names = list(alphas)
  if not names:
    raise ValueError("no alpha rows to plot")
  rows = [np.abs(np.asarray(alphas[n], np.float64)).ravel() for n in names]
  lengths = {len(r) for r in rows}
  if len(lengths) != 1:
    raise ValueError(f"alpha rows differ in length: {sorted(lengths)}")
  return names, np.stack(rows)


def plot_alphas(alphas, path: str, *, evaluation_tasks: Sequence[str] = (),
                gamma: float = 0.5, title: Optional[str] = None) -> str:
  """Draws |alpha| as the paper's Figure 5 and writes a PNG.

  Rows are tasks (self-supervised tasks on top, then ``evaluation_tasks``),
  columns the block-3 units, shallowest on the left. As in the paper, whiter
  is larger and the colour scale is nonlinear (|alpha|**gamma) so that small
  non-zero weights stay visible.

  Args:
    alphas: a :class:`~mtssl_tf.layers.UnitMixer` or a dict task -> [N].
    path: the PNG to write (folders are created).
    evaluation_tasks: names drawn below a separating line.
    gamma: exponent of the colour scale.
    title: optional title.

  Returns:
    ``path``.
  """
  names, matrix = alpha_matrix(alphas)
  order = ([n for n in names if n not in evaluation_tasks]
           + [n for n in names if n in evaluation_tasks])
  matrix = matrix[[names.index(n) for n in order]]
  plt = _pyplot()
  num_tasks, num_units = matrix.shape
  fig, ax = plt.subplots(figsize=(max(5.5, 0.35 * num_units + 3.0),
                                  0.45 * num_tasks + 1.6))
  image = ax.imshow(matrix ** gamma, cmap="gray", vmin=0.0, vmax=1.0,
                    aspect="equal", interpolation="nearest")
  ax.set_yticks(range(num_tasks), order)
  ax.set_xticks(range(num_units), [str(k) for k in range(1, num_units + 1)],
                fontsize=7)
  ax.set_xlabel("block-3 unit (shallow -> deep)")
  n_self = num_tasks - sum(n in evaluation_tasks for n in order)
  if 0 < n_self < num_tasks:
    ax.axhline(n_self - 0.5, color="red", linewidth=1.5)
  bar = fig.colorbar(image, ax=ax, fraction=0.03)
  bar.set_label(f"|alpha|^{gamma:g}")
  ax.set_title(title or "UnitMixer |alpha|\n(Doersch & Zisserman 2017, Fig. 5)",
               fontsize=9)
  fig.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.savefig(path, dpi=120)
  plt.close(fig)
  return path


def plot_loss_curves(history: Dict[str, Sequence[tuple]], folder: str,
                     smoothing: int = 10) -> list:
  """Writes one PNG per task of (step, loss) pairs; returns the paths."""
  plt = _pyplot()
  os.makedirs(folder, exist_ok=True)
  paths = []
  for task, points in history.items():
    if not points:
      continue
    steps, losses = (np.asarray(v, np.float64) for v in zip(*points))
    fig, ax = plt.subplots(figsize=(5, 3))
    ax.plot(steps, losses, alpha=0.35, label="loss")
    if len(losses) >= smoothing:
      kernel = np.ones(smoothing) / smoothing
      ax.plot(steps[smoothing - 1:], np.convolve(losses, kernel, "valid"),
              label=f"mean of {smoothing}")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(task)
    ax.legend()
    fig.tight_layout()
    path = os.path.join(folder, f"loss_{task}.png")
    fig.savefig(path, dpi=100)
    plt.close(fig)
    paths.append(path)
  return paths
