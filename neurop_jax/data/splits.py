"""Train/val/test splits of a list of image names, recorded as JSON.

A split is ``{'train': [...], 'val': [...], 'test': [...]}`` of names (relative POSIX paths for
folders, ``<label>/<filename>`` for tfds records), each list sorted and the three disjoint.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

import numpy as np

from neurop_jax.io.atomic import write_text

SPLITS = ("train", "val", "test")


def fraction_split(names: Sequence[str], train_fraction: float, val_fraction: float,
                   seed: int) -> dict[str, list[str]]:
  """Deterministic split by name: the sorted names permuted by ``seed``, then cut in three.

  ``round(n * train_fraction)`` names go to train, ``round(n * val_fraction)`` to val, the rest to
  test. The result depends only on the set of names, the fractions and the seed.
  """
  if not (0 <= train_fraction <= 1 and 0 <= val_fraction <= 1 - train_fraction):
    raise ValueError(f"bad split fractions: train {train_fraction}, val {val_fraction}")
  ordered = sorted(set(names))
  order = np.random.default_rng(seed).permutation(len(ordered))
  shuffled = [ordered[i] for i in order]
  n_train = int(round(len(ordered) * train_fraction))
  n_val = min(int(round(len(ordered) * val_fraction)), len(ordered) - n_train)
  parts = (shuffled[:n_train], shuffled[n_train:n_train + n_val], shuffled[n_train + n_val:])
  return {split: sorted(part) for split, part in zip(SPLITS, parts)}


def folder_split(names: Sequence[str]) -> dict[str, list[str]]:
  """Split by top folder: ``train/``, ``val/`` and ``test/``; a missing val or test is the other.

  Names under other top folders are ignored. Raises ``ValueError`` without train and test or val.
  """
  by_top = {split: sorted(n for n in names if n.split("/", 1)[0] == split) for split in SPLITS}
  if not by_top["val"]:
    by_top["val"] = by_top["test"]
  if not by_top["test"]:
    by_top["test"] = by_top["val"]
  if not by_top["train"] or not by_top["test"]:
    raise ValueError("split 'folders' needs train/ and val/ or test/ folders with images")
  return by_top


def read_split(path: str | os.PathLike, known: Sequence[str]) -> dict[str, list[str]]:
  """A split from a JSON file of name lists (keys train, val, test; a missing key is empty).

  Every name must be in ``known`` and train must not share names with val or test.
  """
  with open(path) as f:
    raw = json.load(f)
  unknown_keys = set(raw) - set(SPLITS)
  if unknown_keys:
    raise ValueError(f"split file {path}: unknown keys {sorted(unknown_keys)}")
  split = {name: sorted(raw.get(name, [])) for name in SPLITS}
  missing = sorted(set().union(*split.values()) - set(known))
  if missing:
    raise ValueError(f"split file {path}: {len(missing)} names not in the data, e.g. {missing[:3]}")
  overlap = set(split["train"]) & (set(split["val"]) | set(split["test"]))
  if overlap:
    raise ValueError(f"split file {path}: train overlaps val/test in {sorted(overlap)[:3]}")
  return split


def write_split(path: str | os.PathLike, split: dict[str, list[str]]) -> None:
  """Writes ``split`` as indented JSON (atomically), so that a run records the split it used."""
  write_text(path, json.dumps({name: list(split[name]) for name in SPLITS}, indent=1) + "\n")
