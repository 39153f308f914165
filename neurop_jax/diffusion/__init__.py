"""The diffusion stage's maths: the noise schedule (``schedule``), what the UNet predicts and where
it diffuses (``formulation``), the reverse-diffusion samplers (``samplers``) and the config fields
(``config``)."""
