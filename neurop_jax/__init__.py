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

from neurop_jax._lazy import lazy_exports

__version__ = "0.1.0"

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
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
})
