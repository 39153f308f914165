"""The diffusion settings of a config (``config.diffusion``), with the paper's values.

Plain ml_collections, no JAX: loading a config does not start the stack.
"""

from __future__ import annotations

import ml_collections


def default_diffusion_config() -> ml_collections.ConfigDict:
  """The diffusion settings of the paper, every field documented.

  Fields:
    target: what the UNet predicts: 'eps' (the noise, the paper), 'x0' (the clean sample) or 'v'
      (Salimans and Ho 2022); see ``neurop_jax.diffusion.formulation``.
    space: what is diffused: 'image' (the HR image, the paper) or 'residual' (HR - prior, times
      ``residual_scale``; the sample is prior + residual / residual_scale).
    residual_scale: the factor of the residual in 'residual' space (1 = unscaled).
    schedule: 'linear' (the original), 'quad' or 'cosine' (Nichol & Dhariwal).
    num_timesteps: ``T``, the number of discrete steps (2000).
    beta_start, beta_end: the beta range of 'linear' and 'quad' (1e-6, 0.01); unused by 'cosine'.
    loss: 'l1' (the original: mean |target - prediction|) or 'l2' (mean squared error).
    per_sample_t: False draws one step t per batch, as the original; True one per sample.
    sampler: 'ddim' (the original), 'ddpm' (ancestral) or 'dpm_solver_pp' (DPM-Solver++(2M)).
    steps: the number of timesteps S of the sampling sequence (50 in the paper).
    eta: DDIM stochasticity, 0 = deterministic (the paper); used by 'ddim' only.
    skip: the timestep spacing, 'uniform' (range(0, T, T // S), the paper), 'quad' (quadratic)
      or 'logsnr' (even in log SNR; use it with 'dpm_solver_pp', which reaches DDIM-50 quality in
      10 to 20 steps with it).
  """
  return ml_collections.ConfigDict(dict(
      target="eps", space="image", residual_scale=1.0, schedule="linear", num_timesteps=2000, beta_start=1e-6, beta_end=0.01, loss="l1",
      per_sample_t=False, sampler="ddim", steps=50, eta=0.0, skip="uniform"))
