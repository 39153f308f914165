"""Galerkin attention: the original's layer norm and residual quirks, checked against NumPy."""

import jax
import jax.numpy as jnp
import numpy as np
from scipy.special import erf

from neurop_jax.models.galerkin import GalerkinBlock, HeadLayerNorm


def _np_block(p, x, heads):
  """An independent NumPy rendering of SPEC.md, stage 1, step 4."""
  b, h, w, c = x.shape
  d = c // heads
  qkv = x @ p["qkv_proj"]["kernel"] + p["qkv_proj"]["bias"]
  qkv = qkv.reshape(b, h * w, heads, 3 * d)
  q, k, v = qkv[..., :d], qkv[..., d:2 * d], qkv[..., 2 * d:]

  def ln(t, lnp):
    std = t.std(-1, ddof=1, keepdims=True)
    return lnp["scale"] * (t - t.mean(-1, keepdims=True)) / (std + 1e-5) + lnp["shift"]

  k, v = ln(k, p["kln"]), ln(v, p["vln"])
  kv = np.einsum("bnhd,bnhe->bhde", k, v) / (h * w)
  ret = np.einsum("bnhd,bhde->bnhe", q, kv).reshape(b, h, w, c) + x
  hid = ret @ p["o_proj1"]["kernel"] + p["o_proj1"]["bias"]
  hid = 0.5 * hid * (1 + erf(hid / np.sqrt(2)))
  return hid @ p["o_proj2"]["kernel"] + p["o_proj2"]["bias"] + x


def test_block_matches_numpy_reference():
  block = GalerkinBlock(width=32, heads=4)
  x = jax.random.normal(jax.random.key(0), (2, 5, 7, 32))
  params = block.init(jax.random.key(1), x)
  # Non-trivial norm parameters, so that a wrong norm cannot pass.
  params = jax.tree_util.tree_map_with_path(
      lambda path, v: v + 0.3 * jax.random.normal(jax.random.key(len(str(path))), v.shape)
      if any(getattr(k, "key", "") in ("kln", "vln") for k in path) else v, params)
  ref = _np_block(jax.tree.map(np.asarray, params["params"]), np.asarray(x, np.float64), 4)
  np.testing.assert_allclose(block.apply(params, x), ref, atol=2e-5)


def test_layer_norm_uses_unbiased_std_plus_eps():
  x = jnp.array([[[1.0, 2.0, 3.0, 6.0]]])
  params = HeadLayerNorm().init(jax.random.key(0), x)
  y = HeadLayerNorm().apply(params, x)
  expected = (np.array([1, 2, 3, 6]) - 3.0) / (np.std([1, 2, 3, 6], ddof=1) + 1e-5)
  np.testing.assert_allclose(y[0, 0], expected, rtol=1e-6)


def test_attention_is_global_and_linear_in_q():
  """Changing one point's input changes every output (global attention)."""
  block = GalerkinBlock(width=16, heads=2)
  x = jax.random.normal(jax.random.key(0), (1, 4, 4, 16))
  params = block.init(jax.random.key(1), x)
  y = block.apply(params, x)
  y2 = block.apply(params, x.at[0, 0, 0].add(3.0))
  changed = jnp.abs(y2 - y).max(-1)[0]
  assert bool(jnp.all(changed[1:, 1:] > 1e-6))
