"""Flax linen modules of NeurOp-Diff: EDSR encoders, Galerkin attention, the operator, the UNet;
coordinates (``coords``) and the converter of original checkpoints (``convert``). Names load on
first use."""

from neurop_jax._lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "model_config": "neurop_jax.models.config",
    "NeurOpDiff": "neurop_jax.models.neurop_diff",
    "compute_prior": "neurop_jax.models.neurop_diff",
    "from_unit": "neurop_jax.models.neurop_diff",
    "make_model": "neurop_jax.models.neurop_diff",
    "make_operator": "neurop_jax.models.neurop_diff",
    "make_unet": "neurop_jax.models.neurop_diff",
    "to_unit": "neurop_jax.models.neurop_diff",
    "NeuralOperator": "neurop_jax.models.operator",
    "UNet": "neurop_jax.models.unet",
})
