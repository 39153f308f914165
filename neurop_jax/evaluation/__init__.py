"""Measures of super-resolution: ``metrics`` (PSNR, SSIM), ``lpips`` (LPIPS), and ``evaluate`` (the
tables of a trained run against the scale, ``--mode evaluate``) with its settings in ``config``."""
