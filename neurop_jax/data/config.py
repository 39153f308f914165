"""The data config: every field the data package reads, with its default and meaning."""

from __future__ import annotations

import ml_collections


def default_data_config() -> ml_collections.ConfigDict:
  """Defaults for ``config.data``: the bundled sample, stage-1 patches 32, stage-2 crops 256.

  Images:
    source: 'sample' (the bundled ucm-mini), 'folder' (a tree of PNG/JPEG/TIFF under ``path``:
      UCMerced_LandUse/Images, AID, RSSCN7, ...) or 'tfds' (a prepared array_record dataset).
    path: root folder of the 'folder' source.
    tfds_name: tfds dataset name of the 'tfds' source ('uc_merced').
    tfds_split: the tfds split read before our own split ('train', uc_merced's only split).
    tfds_data_dir: tfds data folder; '' for tfds' default (~/tensorflow_datasets).
    skip_bad_images: False raises ValueError naming an unreadable image; True warns, counts it
      (``source.bad_images``) and drops it from the batches.
    allow_convert: convert grayscale/palette/alpha/CMYK/16-bit/float images to RGB with a warning;
      False makes them errors.
    value_mapping: a value mapping 'LOW:HIGH' (or one per band, ``neurop_jax.io.values``), e.g.
      '0:10000' for surface reflectance scaled by 10000: set, the 'folder' source reads its TIFFs with
      rasterio, any band count and dtype, mapped to [0, 1] (nodata pixels filled as for
      super-resolution, ``neurop_jax.io.nodata``). Saved with the checkpoints, so ``upsample
      --workdir`` maps its inputs the same way. '' reads 8-bit images as RGB (the paper).
    bands: the 1-based bands read from those TIFFs, e.g. '4,3,2'; '' for all (their number must
      be ``model.channels``). Saved with the checkpoints too.
  Split into train/val/test (``build_sources``):
    split: 'auto' ('file' if ``split_file`` is set, else 'folders' when the root has train/, val/
      or test/ folders, else 'fractions'), 'fractions', 'folders' (top folders train/val/test; a
      missing val or test is the other one) or 'file'.
    train_fraction, val_fraction: fractions of the sorted names, permuted by ``split_seed``, that
      go to train and val (the rest is test), for split 'fractions'.
    split_seed: seed of that permutation.
    split_file: JSON {'train': [...], 'val': [...], 'test': [...]} of relative paths (tfds:
      '<label>/<filename>'), for split 'file'.
  Stage 1 (operator, SRNO recipe):
    patch_size: LR patch side p; the HR crop is round(p*s) square and p*p HR pixels are queried.
    operator_batch_size: samples per stage-1 batch (paper: 64).
  Stage 2 (diffusion):
    crop_size: HR crop side (256: a whole UC Merced image).
    lr_buckets: number of LR sizes: scales snap to 1 + (s_max-1)*k/lr_buckets, k = 1..lr_buckets
      (14: the half-integer scales 1.5, 2, ..., 8); 0 for every integer LR side
      round(crop/s_max)..crop-1.
    diffusion_batch_size: images per stage-2 batch (paper: 10).
  Both stages:
    s_max: largest training scale; scales are uniform on (1, s_max].
    augment: random horizontal flip, vertical flip and transpose, p = 0.5 each.
  Evaluation:
    eval_scale: the fixed scale of ``eval_batches``.
    eval_batch_size: images per evaluation batch (1: image sizes differ).
  Reading:
    seed: seed of shuffling and of every random transform.
    workers: grain worker processes, where stage 2's degradation runs too (0: in this
      process, the default: on a 2-core CPU 2 workers gave 137 stage-2 images/s of the paper's
      batch against 155 in process, experiments/bench_input.py; a GPU host needs about 8, see
      bench_input's projection). Batches are deterministic for a fixed number of workers but
      differ between worker counts, so a resumed run must keep the count.
    read_threads: grain threads reading elements in each process.
    prefetch: elements each process reads ahead.
  """
  config = ml_collections.ConfigDict()
  config.source = "sample"
  config.path = ""
  config.tfds_name = "uc_merced"
  config.tfds_split = "train"
  config.tfds_data_dir = ""
  config.skip_bad_images = False
  config.allow_convert = True
  config.value_mapping = ""
  config.bands = ""

  config.split = "auto"
  config.train_fraction = 0.8
  config.val_fraction = 0.1
  config.split_seed = 0
  config.split_file = ""

  config.patch_size = 32
  config.operator_batch_size = 64

  config.crop_size = 256
  config.lr_buckets = 14
  config.diffusion_batch_size = 10

  config.s_max = 8.0
  config.augment = True

  config.eval_scale = 4.0
  config.eval_batch_size = 1

  config.seed = 0
  config.workers = 0
  config.read_threads = 4
  config.prefetch = 16
  return config
