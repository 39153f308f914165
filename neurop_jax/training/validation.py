"""Validation during training: PSNR, SSIM (and LPIPS) at a fixed scale, and a PNG grid of samples.

Images come from ``data.eval_batches`` (whole images, HR cropped so that HR/LR is the scale, LR by
the PIL-exact bicubic); numbers follow the paper's protocol (RGB, no border crop) and bicubic
upsampling of the same LR images is measured beside them, once per run. LPIPS (AlexNet, needs the
``lpips`` extra) is measured when asked, for every output and bicubic: stage 2 asks, so that
TensorBoard shows whether diffusion beats its own prior on SSIM and LPIPS. Grid rows are images,
columns LR-bicubic | each output | HR.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from neurop_jax.data import eval_batches
from neurop_jax.data.sources import Subset, evenly_spaced
from neurop_jax.evaluation.metrics import bicubic, measure
from neurop_jax.io.images import image_grid

# (lr (1, h, w, 3), hr (1, H, W, 3), image index) -> {label: (1, H, W, 3)} in [0, 1]; the label ''
# is the stage's result (its metrics are 'psnr', 'ssim'), others give '<label>_psnr', ...
OutputsFn = Callable[[np.ndarray, np.ndarray, int], dict[str, Any]]


def metric_names(label: str, with_lpips: bool) -> tuple[str, ...]:
  """The names validation gives the metrics of output ``label`` ('': the stage's own)."""
  prefix = f"{label}_" if label else ""
  return (f"{prefix}psnr", f"{prefix}ssim") + ((f"{prefix}lpips",) if with_lpips else ())


class Validator:
  """Validation of one stage on ``num_images`` images of ``source`` at ``scale``.

  ``scale`` None is ``data_cfg.eval_scale``; ``with_lpips`` adds LPIPS (the ``lpips`` extra).
  ``names`` are the metrics of the stage's own output ('psnr', 'ssim', and 'lpips' if measured).
  """

  def __init__(self, source, data_cfg, num_images: int, sample_images: int,
               protocol: str = "paper", scale: float | None = None, with_lpips: bool = False):
    self.source = Subset(source, evenly_spaced(len(source), num_images))
    self.data_cfg = data_cfg
    self.scale = float(data_cfg.eval_scale if scale is None else scale)
    self.sample_images = sample_images
    self.protocol = protocol
    self.with_lpips = with_lpips
    self.names = metric_names("", with_lpips)
    self._bicubic_metrics: dict[str, float] | None = None

  def _batches(self):
    return eval_batches(self.source, self.data_cfg, self.scale, batch_size=1)

  def _measure(self, sr: Any, hr: np.ndarray) -> tuple[float, ...]:
    m = measure(np.asarray(sr, np.float32), hr, self.scale, (self.protocol,), self.with_lpips)
    return tuple(m[name] for name in (f"psnr_{self.protocol}", f"ssim_{self.protocol}", "lpips")
                 if name in m)

  def __call__(self, outputs_fn: OutputsFn) -> tuple[dict[str, float], np.ndarray]:
    """Mean metrics over the images (bicubic's too) and the sample grid ``(H, W, 3)``."""
    sums: dict[str, float] = {}
    rows = []
    first_pass = self._bicubic_metrics is None
    count = 0
    for index, batch in enumerate(self._batches()):
      lr, hr = batch["lr"], batch["hr"]
      outputs = outputs_fn(lr, hr, index)
      for label, sr in outputs.items():
        for name, value in zip(metric_names(label, self.with_lpips), self._measure(sr, hr)):
          sums[name] = sums.get(name, 0.0) + value
      need_bicubic = first_pass or index < self.sample_images
      upsampled = bicubic(lr[0], hr.shape[1:3]) if need_bicubic else None
      if first_pass:
        for name, value in zip(metric_names("bicubic", self.with_lpips),
                               self._measure(upsampled[None], hr)):
          sums[name] = sums.get(name, 0.0) + value
      if index < self.sample_images:
        rows.append([upsampled] + [np.asarray(sr)[0] for sr in outputs.values()] + [hr[0]])
      count += 1
    metrics = {name: total / count for name, total in sums.items()}
    if first_pass:
      self._bicubic_metrics = {k: v for k, v in metrics.items() if k.startswith("bicubic_")}
    metrics.update(self._bicubic_metrics)
    return metrics, image_grid(rows)
