"""The command lines: ``main`` (``python -m neurop_jax.main``: train or evaluate) and ``upsample``
(``python -m neurop_jax.upsample``, the work in ``upsampling``). Flags only; the work is in the
packages below."""
