"""EDSR encoders: presets by name, shapes, and the residual structure."""

import jax
import jax.numpy as jnp
import pytest

from neurop_jax.models.edsr import make_encoder


@pytest.mark.parametrize("name,blocks,features", [("edsr-baseline", 16, 64), ("edsr", 32, 256)])
def test_presets_by_name(name, blocks, features):
  enc = make_encoder(name)
  assert (enc.num_blocks, enc.features) == (blocks, features)
  x = jnp.zeros((1, 5, 7, 3))
  params = jax.eval_shape(lambda: enc.init(jax.random.key(0), x))["params"]
  assert len([k for k in params if k.startswith("block")]) == blocks
  assert params["head"]["kernel"].shape == (3, 3, 3, features)


def test_full_edsr_scales_residuals():
  assert make_encoder("edsr").res_scale == pytest.approx(0.1)
  assert make_encoder("edsr-baseline").res_scale == 1.0


def test_unknown_encoder_names_the_choices():
  with pytest.raises(ValueError, match="edsr-baseline"):
    make_encoder("rdn-typo")


def test_shape_jit_vmap():
  enc = make_encoder("edsr-baseline", num_blocks=2)
  x = jax.random.normal(jax.random.key(0), (3, 11, 13, 3))
  params = enc.init(jax.random.key(1), x)
  y = jax.jit(enc.apply)(params, x)
  assert y.shape == (3, 11, 13, 64)
  y_v = jax.vmap(lambda xi: enc.apply(params, xi[None])[0])(x)
  assert float(jnp.max(jnp.abs(y - y_v))) <= 1e-5
