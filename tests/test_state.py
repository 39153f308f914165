"""The train state: SRNO's warm-up, the original's step schedule, the EMA and the optimizer."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from neurop_jax.training.config import PAPER_DIFFUSION_LRS
from neurop_jax.training.state import (apply_gradients, create_train_state, ema_update,
                                    make_optimizer, step_schedule, warmup_schedule)


def test_srno_warmup_then_cosine():
  # GradualWarmupScheduler(multiplier=10, total_epoch=50): base * ((10 - 1) * e / 50 + 1), then
  # CosineAnnealingLR from the peak to 0 over the remaining 450.
  schedule = warmup_schedule(4e-5, 10.0, 50, 500, "cosine")
  for step, expected in [(0, 4e-5), (25, 4e-5 * 5.5), (50, 4e-4), (275, 2e-4), (500, 0.0)]:
    np.testing.assert_allclose(float(schedule(step)), expected, rtol=1e-5, atol=1e-12)


def test_warmup_variants_and_bad_decay():
  constant = warmup_schedule(1e-3, 2.0, 10, 100, "constant")
  np.testing.assert_allclose([float(constant(s)) for s in (0, 5, 10, 99)],
                             [1e-3, 1.5e-3, 2e-3, 2e-3], rtol=1e-6)
  np.testing.assert_allclose(float(warmup_schedule(1e-3, 1.0, 0, 100, "cosine")(0)), 1e-3)
  with pytest.raises(ValueError, match="cosin"):
    warmup_schedule(1e-3, 1.0, 0, 100, "cosin")


def test_original_step_schedule():
  schedule = jax.jit(step_schedule(PAPER_DIFFUSION_LRS, 100_000))
  steps = jnp.array([0, 99_999, 100_000, 250_000, 999_999, 5_000_000], jnp.int32)
  np.testing.assert_allclose(schedule(steps), [1e-4, 1e-4, 8e-5, 6e-5, 2e-6, 2e-6], rtol=1e-6)


def test_ema_update():
  ema, params = {"w": jnp.zeros(3)}, {"w": jnp.ones(3)}
  np.testing.assert_allclose(ema_update(ema, params, 0.9)["w"], 0.1, rtol=1e-6)
  np.testing.assert_array_equal(ema_update(ema, params, 0.0)["w"], params["w"])


def test_apply_gradients_steps_params_and_ema():
  tx = optax.sgd(0.5)
  state = jax.jit(lambda p: create_train_state(p, tx))({"w": jnp.ones(2)})
  state = apply_gradients(state, {"w": jnp.array([1.0, -1.0])}, tx, ema_decay=0.75)
  assert int(state.step) == 1
  np.testing.assert_allclose(state.params["w"], [0.5, 1.5])
  np.testing.assert_allclose(state.ema_params["w"], [0.875, 1.125])


def _loop_cfg(grad_clip: float) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(grad_clip=grad_clip, adam_b1=0.9, adam_b2=0.999,
                                        adam_eps=1e-8))


@pytest.mark.parametrize("grad_clip, norm", [(0.0, 10.0), (1.0, 1.0)])
def test_optimizer_clips_the_global_norm(grad_clip, norm):
  tx = make_optimizer(_loop_cfg(grad_clip), optax.constant_schedule(1e-3))
  params = {"w": jnp.zeros(2)}
  grads = {"w": jnp.array([6.0, 8.0])}
  _, opt_state = tx.update(grads, tx.init(params), params)
  mu = optax.tree_utils.tree_get(opt_state, "mu")
  np.testing.assert_allclose(mu["w"], 0.1 * grads["w"] * norm / 10.0, rtol=1e-6)
