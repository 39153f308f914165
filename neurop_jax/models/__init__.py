"""Flax linen modules of NeurOp-Diff: EDSR encoders, Galerkin attention, the operator, the UNet."""

from neurop_jax.models.config import model_config
from neurop_jax.models.neurop_diff import (NeurOpDiff, compute_prior, from_unit, make_model,
                                           make_operator, make_unet, to_unit)
from neurop_jax.models.operator import NeuralOperator
from neurop_jax.models.unet import UNet

__all__ = ["NeurOpDiff", "NeuralOperator", "UNet", "compute_prior", "from_unit", "make_model",
           "make_operator", "make_unet", "model_config", "to_unit"]
