"""grain pipelines: stage-1 (operator) and stage-2 (diffusion) training batches, evaluation batches.

Training pipelines shuffle the source with the seed (a new order every epoch), repeat it forever,
apply the random transforms (grain random maps: the generator of element ``i`` depends only on the
seed and ``i``) and batch with ``drop_remainder=True``. The returned ``grain.DatasetIterator`` has
``get_state()`` / ``set_state()``: a restored state continues with exactly the batches that would
have come next. Unreadable images (with ``skip_bad_images``) are dropped before batching.

Batches (float32, images in [0, 1]):
  operator: lr (B, p, p, 3), coord (B, p, p, 2), cell (B, 2), gt (B, p, p, 3), scale (B,)
  diffusion: hr (B, C, C, 3), lr (B, h, h, 3) with h from ``transforms.lr_sides``, scale (B,) = C/h
  eval: hr (B, H, W, 3), lr (B, h, w, 3), name (B,) str (``degrade.eval_pair``)
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import grain
import ml_collections
from absl import flags
import numpy as np

from neurop_jax.data import degrade, transforms


def _read_options(config: ml_collections.ConfigDict) -> grain.ReadOptions:
  return grain.ReadOptions(num_threads=config.read_threads, prefetch_buffer_size=config.prefetch)


def _maybe_workers(ds: grain.IterDataset, config: ml_collections.ConfigDict) -> grain.IterDataset:
  if config.workers > 0:
    if not flags.FLAGS.is_parsed():  # grain's workers read its absl flags (their defaults here)
      flags.FLAGS.mark_as_parsed()
    return ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=config.workers))
  return ds


def _on_image(element: dict[str, Any], rng: np.random.Generator,
              fn: Callable[[np.ndarray, np.random.Generator], Any]) -> Any:
  """``fn`` of the ``image`` of a source element (a picklable grain random map via partial)."""
  return fn(element["image"], rng)


def _training_dataset(source, config: ml_collections.ConfigDict, seed: int, element_fn,
                      batch_size: int) -> grain.IterDataset:
  ds = grain.MapDataset.source(source).shuffle(seed=seed).repeat()
  ds = ds.random_map(functools.partial(_on_image, fn=element_fn), seed=seed + 1)
  return ds.to_iter_dataset(_read_options(config)).batch(batch_size, drop_remainder=True)


def operator_dataset(source, config: ml_collections.ConfigDict,
                     seed: int | None = None) -> grain.IterDataset:
  """Endless stage-1 batches of ``config.operator_batch_size`` (see ``operator_pipeline``)."""
  seed = config.seed if seed is None else seed
  element_fn = functools.partial(transforms.operator_example, patch_size=config.patch_size,
                                 s_max=config.s_max, augment=config.augment)
  ds = _training_dataset(source, config, seed, element_fn, config.operator_batch_size)
  return _maybe_workers(ds, config)


def operator_pipeline(source, config: ml_collections.ConfigDict,
                      seed: int | None = None) -> grain.DatasetIterator:
  """Iterator of stage-1 batches: a scale per sample, fixed shapes whatever the scales.

  Each sample is ``transforms.operator_example`` of one image: lr ``(B, p, p, 3)``, coord
  ``(B, p, p, 2)``, cell ``(B, 2)``, gt ``(B, p, p, 3)``, scale ``(B,)``; ``p =
  config.patch_size``. ``seed`` defaults to ``config.seed``.
  """
  return iter(operator_dataset(source, config, seed))


def diffusion_dataset(source, config: ml_collections.ConfigDict,
                      seed: int | None = None) -> grain.IterDataset:
  """Endless stage-2 batches of ``config.diffusion_batch_size`` (see ``diffusion_pipeline``)."""
  seed = config.seed if seed is None else seed
  element_fn = functools.partial(transforms.diffusion_crop, crop_size=config.crop_size,
                                 augment=config.augment)
  ds = _training_dataset(source, config, seed, element_fn, config.diffusion_batch_size)
  batch_fn = functools.partial(transforms.diffusion_batch, s_max=config.s_max,
                               buckets=config.lr_buckets)
  ds = ds.random_map(batch_fn, seed=seed + 2)
  return _maybe_workers(ds, config)


def diffusion_pipeline(source, config: ml_collections.ConfigDict,
                       seed: int | None = None) -> grain.DatasetIterator:
  """Iterator of stage-2 batches: ``config.crop_size`` HR crops, one LR size per batch.

  hr ``(B, C, C, 3)``, lr ``(B, h, h, 3)``, scale ``(B,)`` = ``C / h``; the LR side ``h`` is one of
  ``transforms.lr_sides(C, s_max, lr_buckets)``. ``seed`` defaults to ``config.seed``.
  """
  return iter(diffusion_dataset(source, config, seed))


def _eval_example(element: dict[str, Any], scale: float) -> dict[str, Any]:
  hr, lr = degrade.eval_pair(element["image"], scale)
  return {"hr": hr, "lr": np.clip(lr, 0.0, 1.0), "name": element["name"]}


def eval_batches(source, config: ml_collections.ConfigDict, scale: float | None = None,
                 batch_size: int | None = None) -> grain.DatasetIterator:
  """One pass over ``source`` in order: whole images at a fixed scale, as the paper evaluates.

  Each HR image is cropped (top-left) to ``round(h * s)`` per side, ``h = round(H / s)``, and
  degraded to ``h`` (``degrade.eval_pair``). Batches: hr ``(B, H', W', 3)``, lr ``(B, h, w, 3)``,
  name ``(B,)``; the last batch may be smaller. ``scale`` defaults to ``config.eval_scale`` and
  ``batch_size`` to ``config.eval_batch_size`` (above 1 only for images of one size).
  """
  scale = config.eval_scale if scale is None else scale
  batch_size = config.eval_batch_size if batch_size is None else batch_size
  ds = grain.MapDataset.source(source).map(functools.partial(_eval_example, scale=scale))
  return iter(ds.to_iter_dataset(_read_options(config)).batch(batch_size))
