"""neurop_jax: NeurOp-Diff in JAX/Flax, continuous arbitrary-scale super-resolution."""

__version__ = "0.1.0"
