"""``python -m neurop_jax.upsample``: super-resolve files (the flags are ``neurop_jax.cli.upsample``'s)."""

import sys

from neurop_jax.cli.upsample import main

if __name__ == "__main__":
  sys.exit(main())
