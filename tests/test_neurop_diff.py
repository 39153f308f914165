"""The composed model: the noise prediction and L1 loss equal the original's."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import max_abs_diff
from neurop_jax.models import make_model, model_config


def test_model_output_and_loss_match_original(fixture):
  model = make_model(fixture.cfg)
  eps_hat = jax.jit(model.apply)(
      fixture.params, fixture.image("x_t"), jnp.asarray(fixture.io["noise_level"][:, 0]),
      fixture.image("lr"), fixture.io["coord"], fixture.io["cell"])
  assert max_abs_diff(eps_hat, fixture.image("model_out")) <= 1e-4
  loss = jnp.mean(jnp.abs(fixture.image("eps") - eps_hat))
  assert abs(float(loss) - float(fixture.io["loss_l1"])) <= 1e-4


def test_prior_then_denoise_equals_the_whole_call(fixture):
  model = make_model(fixture.cfg)
  lr, coord, cell = fixture.image("lr"), fixture.io["coord"], fixture.io["cell"]
  prior = jax.jit(lambda p: model.apply(p, lr, coord, cell, method=model.prior))(fixture.params)
  eps_hat = jax.jit(lambda p, x, g, pr: model.apply(p, x, g, pr, method=model.denoise))(
      fixture.params, fixture.image("x_t"), jnp.asarray(fixture.io["noise_level"][:, 0]), prior)
  assert max_abs_diff(eps_hat, fixture.image("model_out")) <= 1e-4


def test_paper_parameter_counts():
  """The paper configuration has the original's parameter counts."""
  model = make_model(model_config("paper"))
  from neurop_jax.models.coords import make_cell, make_coord
  coord = jnp.asarray(make_coord((64, 64)))[None]
  cell = jnp.asarray(make_cell((64, 64)))[None]
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 64, 64, 3)),
                                             jnp.ones(1), jnp.zeros((1, 16, 16, 3)), coord, cell))
  count = lambda t: sum(int(np.prod(x.shape)) for x in jax.tree.leaves(t))
  assert count(shapes["params"]["operator"]) == 2_015_299
  assert count(shapes["params"]["unet"]) == 47_478_595


def test_bfloat16_compute_stays_close():
  cfg = model_config("micro")
  cfg.dtype = "bfloat16"
  model = make_model(cfg)
  from conftest import load_fixture
  fx = load_fixture("micro")
  eps_hat = jax.jit(model.apply)(fx.params, fx.image("x_t"), jnp.asarray(fx.io["noise_level"][:, 0]),
                        fx.image("lr"), fx.io["coord"], fx.io["cell"])
  assert eps_hat.dtype == jnp.float32
  err = max_abs_diff(eps_hat, fx.image("model_out"))
  assert 1e-4 < err < 0.15  # really bf16, and still the same function


def test_plain_conv_model_supports_forward_mode_ad_with_the_same_values():
  """``model.conv = 'plain'``: the same parameters give the same output and gradients as the fast
  convolutions, and ``jax.jvp`` goes through the whole model (prior and UNet), which the fast
  convolutions' ``custom_vjp`` refuses; the tangent equals a central finite difference."""
  from conftest import load_fixture
  fx = load_fixture("micro")
  fast = make_model(fx.cfg)
  plain_cfg = fx.cfg.copy_and_resolve_references()
  plain_cfg.conv = "plain"
  plain = make_model(plain_cfg)
  args = (fx.image("x_t"), jnp.asarray(fx.io["noise_level"][:, 0]), fx.image("lr"),
          fx.io["coord"], fx.io["cell"])
  f = lambda m: (lambda lr: m.apply(fx.params, *args[:2], lr, *args[3:]))
  f_plain = jax.jit(f(plain))
  assert max_abs_diff(f_plain(args[2]), jax.jit(f(fast))(args[2])) <= 1e-5
  grad = lambda m: jax.jit(jax.grad(lambda p: jnp.mean(m.apply(p, *args) ** 2)))(fx.params)
  g_plain, g_fast = grad(plain), grad(fast)
  assert max(jax.tree.leaves(jax.tree.map(max_abs_diff, g_plain, g_fast))) <= 1e-5

  tangent = jnp.asarray(np.random.default_rng(0).standard_normal(args[2].shape, np.float32))
  out, jvp = jax.jit(lambda lr, t: jax.jvp(f(plain), (lr,), (t,)))(args[2], tangent)
  step = 1e-2
  diff = (f_plain(args[2] + step * tangent) - f_plain(args[2] - step * tangent)) / (2 * step)
  assert float(jnp.max(jnp.abs(jvp))) > 1e-2
  assert max_abs_diff(jvp, diff) <= 2e-2 * float(jnp.max(jnp.abs(diff)))
  with pytest.raises(TypeError, match="custom_vjp"):
    jax.jvp(f(fast), (args[2],), (tangent,))
