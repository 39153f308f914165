"""neurop_jax: NeurOp-Diff in JAX/Flax, continuous arbitrary-scale super-resolution.

The public API, importable from here (each name is loaded on first use, so that ``import
neurop_jax.models`` or loading a config does not start the whole stack)::

  import neurop_jax as nj
  run = nj.load_run("runs/ucm")                      # or nj.Run(model, params): the paper's defaults
  hr = nj.super_resolve(run, lr, scale=4, rng=jax.random.key(0))

Packages: ``models`` (Flax modules, coordinates, the converter of original checkpoints),
``diffusion`` (schedule, formulation, samplers), ``data`` (sources and grain pipelines), ``io``
(images, rasters, checkpoints, atomic writes), ``inference`` (``Run``, the untiled and tiled
calls), ``training``, ``evaluation`` and ``cli`` (the commands).
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "Run": "neurop_jax.inference.run",
    "load_run": "neurop_jax.inference.run",
    "run_from_checkpoint": "neurop_jax.inference.run",
    "super_resolve": "neurop_jax.inference.api",
    "prior_only": "neurop_jax.inference.api",
    "make_super_resolver": "neurop_jax.inference.api",
    "super_resolve_tiled": "neurop_jax.inference.tiled",
    "prior_only_tiled": "neurop_jax.inference.tiled",
    "Sampling": "neurop_jax.diffusion.samplers",
    "Formulation": "neurop_jax.diffusion.formulation",
    "make_model": "neurop_jax.models",
    "model_config": "neurop_jax.models",
    "convert_checkpoint": "neurop_jax.models.convert",
    "train_and_evaluate": "neurop_jax.training.loop",
    "evaluate": "neurop_jax.evaluation.evaluate",
    "upsample": "neurop_jax.cli.upsampling",
    "InputError": "neurop_jax.errors",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
  if name not in _EXPORTS:
    raise AttributeError(f"module 'neurop_jax' has no attribute {name!r}")
  value = getattr(importlib.import_module(_EXPORTS[name]), name)
  globals()[name] = value
  return value


def __dir__() -> list[str]:
  return sorted(list(globals()) + __all__)
