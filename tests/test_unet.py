"""The SR3 UNet: the noise embedding against the original, any input size, attention by level."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import load_fixture, max_abs_diff
from neurop_jax.models import make_unet, model_config
from neurop_jax.models.unet import noise_level_encoding


def test_noise_embedding_matches_original(fixture):
  unet = make_unet(fixture.cfg)
  g = jnp.asarray(fixture.io["noise_level"][:, 0])

  def embed(module, g):
    enc = noise_level_encoding(g, module.inner_channel)
    p = module.variables["params"]
    hid = enc @ p["noise_level_mlp_1"]["kernel"] + p["noise_level_mlp_1"]["bias"]
    hid = jax.nn.swish(hid)
    return hid @ p["noise_level_mlp_3"]["kernel"] + p["noise_level_mlp_3"]["bias"]

  temb = unet.apply(fixture.unet_params, g, method=embed)
  assert max_abs_diff(temb, fixture.io["unet_temb"][:, 0]) <= 1e-5


def test_encoding_is_sin_then_cos():
  enc = noise_level_encoding(jnp.array([0.5]), 8)
  k = np.arange(4) / 4
  e = 0.5 * np.exp(-np.log(1e4) * k)
  np.testing.assert_allclose(enc[0], np.concatenate([np.sin(e), np.cos(e)]), rtol=1e-6)


@pytest.mark.slow  # compiles the UNet at two odd sizes: about 20 s
@pytest.mark.parametrize("hw", [(37, 53), (3, 5)])
def test_any_size_pads_and_crops_back(hw):
  cfg = model_config("micro")
  unet = make_unet(cfg)
  x = jax.random.normal(jax.random.key(0), (2, *hw, 6))
  g = jnp.array([0.3, 0.9])
  params = load_fixture("micro").unet_params
  y = jax.jit(unet.apply)(params, x, g)
  assert y.shape == (2, *hw, 3)
  assert bool(jnp.all(jnp.isfinite(y)))


def test_paper_unet_takes_240():
  """The original crashes at 240x240 (not divisible by 32); the port pads and crops."""
  cfg = model_config("tiny")
  unet = make_unet(cfg)
  x = jnp.zeros((1, 240, 240, 6))
  out = jax.eval_shape(lambda: unet.apply(unet.init(jax.random.key(0), x, jnp.ones(1)), x,
                                          jnp.ones(1)))
  assert out.shape == (1, 240, 240, 3)


def test_attention_placed_by_level_not_input_size():
  """image_size 64, attn_res 16 -> attention at level 2 only (and in the middle), any input."""
  unet = make_unet(model_config("tiny"))
  for size in (64, 96):
    x = jnp.zeros((1, size, size, 6))
    params = jax.eval_shape(lambda: unet.init(jax.random.key(0), x, jnp.ones(1)))["params"]
    with_attn = sorted(k for k, v in params.items() if isinstance(v, dict) and "attn" in v)
    # downs: 0 conv, 1 res L0, 2 down, 3 res L1, 4 down, 5 res L2 (16x16 at 64).
    # ups: levels 5, 4, 3 take 3 entries each (2 res blocks, 1 upsample), so level 2 is ups_9, 10.
    assert with_attn == ["downs_5", "mid_0", "ups_10", "ups_9"]


def test_dropout_only_in_training():
  cfg = model_config("micro")
  cfg.unet.dropout = 0.5
  unet = make_unet(cfg)
  x = jax.random.normal(jax.random.key(0), (1, 16, 16, 6))
  g = jnp.ones(1) * 0.5
  params = load_fixture("micro").unet_params  # the same parameters at any dropout rate
  apply = jax.jit(unet.apply, static_argnums=3)
  eval1, eval2 = apply(params, x, g, False), apply(params, x, g, False)
  np.testing.assert_array_equal(eval1, eval2)
  train = apply(params, x, g, True, rngs={"dropout": jax.random.key(2)})
  assert max_abs_diff(train, eval1) > 1e-4


def test_vmap_matches_batch():
  unet = make_unet(model_config("micro"))
  x = jax.random.normal(jax.random.key(0), (3, 20, 12, 6))
  g = jnp.array([0.1, 0.5, 0.99])
  params = load_fixture("micro").unet_params
  batched = jax.jit(unet.apply)(params, x, g)
  mapped = jax.jit(jax.vmap(lambda xi, gi: unet.apply(params, xi[None], gi[None])[0]))(x, g)
  assert max_abs_diff(batched, mapped) <= 1e-5
