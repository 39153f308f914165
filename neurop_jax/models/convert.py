"""Load original NeurOp-Diff / SRNO PyTorch checkpoints into neurop_jax parameters.

Accepted inputs:
- a checkpoint of SRNO's own repository, ``{'model': {'name': 'srno', 'args': {...}, 'sd':
  state_dict}, 'optimizer': ..., 'epoch': ...}``: its ``args`` (width, blocks = heads, encoder)
  are checked against the model config first;
- an SRNO state dict ``{'model': state_dict}`` or a bare one;
- a diffusion checkpoint ``[model_state, optimizer_state, epoch, step, ema_shadow]`` whose keys are
  ``srno.*`` and ``Unet.*``; the EMA shadow, when present, replaces the weights it holds (the frozen
  operator is usually not in it);
- a bare UNet state dict (``noise_level_mlp.*``, ``downs.*``, ... without the ``Unet.`` prefix),
  recognised by its names;
- any of these as a name -> array mapping such as an ``.npz`` file.

``.pth`` files need PyTorch (``pip install neurop_jax[torch]``); it is imported only to read them,
with ``weights_only=True``. Conversion checks every name and shape against the model config and
raises one error (one line) with the counts of missing, unexpected and mis-shaped entries and the
first few of each.
"""

from __future__ import annotations

import os
import pickle
import re
import zipfile
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import traverse_util

from neurop_jax.models.coords import make_cell, make_coord
from neurop_jax.models.neurop_diff import make_operator, make_unet

# The original's mean-shift layers exist in every SRNO state dict but are never applied.
_UNUSED = re.compile(r"^encoder\.(sub_mean|add_mean)\.")

_OPERATOR_RULES = (
    (r"^encoder\.head\.0$", "encoder_net.head"),
    (r"^encoder\.body\.(\d+)\.body\.0$", r"encoder_net.block\1.conv0"),
    (r"^encoder\.body\.(\d+)\.body\.2$", r"encoder_net.block\1.conv1"),
    (r"^encoder\.body\.(\d+)$", "encoder_net.body_conv"),
    (r"^conv00$", "lift"),
    (r"^conv(\d+)\.(\w+)$", r"galerkin_\1.\2"),
    (r"^(fc\d)$", r"\1"),
)

_UNET_RULES = (
    (r"^noise_level_mlp\.(\d)$", r"noise_level_mlp_\1"),
    (r"^(downs|ups)\.(\d+)(\.conv)?$", r"\1_\2"),
    (r"^(downs|ups|mid)\.(\d+)\.res_block\.(block\d)\.block\.0$", r"\1_\2.\3.norm"),
    (r"^(downs|ups|mid)\.(\d+)\.res_block\.(block\d)\.block\.3$", r"\1_\2.\3.conv"),
    (r"^(downs|ups|mid)\.(\d+)\.res_block\.noise_func\.noise_func\.0$", r"\1_\2.noise_func"),
    (r"^(downs|ups|mid)\.(\d+)\.res_block\.res_conv$", r"\1_\2.res_conv"),
    (r"^(downs|ups|mid)\.(\d+)\.attn\.(norm|qkv|out)$", r"\1_\2.attn.\3"),
    (r"^final_conv\.block\.0$", "final_conv.norm"),
    (r"^final_conv\.block\.3$", "final_conv.conv"),
)

_LEAF_NAMES = {"weight": ("kernel", "scale"), "bias": ("bias", "shift")}

# Top-level module names of a bare UNet state dict (the original's UNet class).
_UNET_MODULES = ("noise_level_mlp", "downs", "mid", "ups", "final_conv")
# How many names of each kind a mismatch error shows.
_SHOWN = 3


class CheckpointMismatchError(ValueError):
  """The checkpoint's names or shapes do not fit the configured model."""


def _to_numpy(value: Any) -> np.ndarray:
  if hasattr(value, "detach"):
    value = value.detach().cpu().numpy()
  return np.asarray(value)


def _strip_prefix(state: Mapping[str, Any], prefix: str = "module.") -> dict[str, np.ndarray]:
  return {(k[len(prefix):] if k.startswith(prefix) else k): _to_numpy(v) for k, v in state.items()}


def _flatten_checkpoint(obj: Any) -> dict[str, np.ndarray]:
  """One flat name -> array mapping from any of the accepted checkpoint structures."""
  if isinstance(obj, (list, tuple)):
    if not obj or not isinstance(obj[0], Mapping):
      raise CheckpointMismatchError(
          "a list checkpoint must be [model_state, optimizer_state, epoch, step, ema_shadow]")
    state = _strip_prefix(obj[0])
    if len(obj) >= 5 and isinstance(obj[4], Mapping) and obj[4]:
      state.update(_strip_prefix(obj[4]))
    return state
  if isinstance(obj, Mapping):
    if "model" in obj and isinstance(obj["model"], Mapping):
      model = obj["model"]
      return _strip_prefix(model["sd"] if isinstance(model.get("sd"), Mapping) else model)
    return _strip_prefix(obj)
  raise CheckpointMismatchError(f"unsupported checkpoint structure: {type(obj).__name__}")


def _srno_spec(obj: Any) -> Mapping[str, Any] | None:
  """The ``{'name', 'args', 'sd'}`` model spec of an SRNO-repository checkpoint, else None."""
  model = obj.get("model") if isinstance(obj, Mapping) else None
  return model if isinstance(model, Mapping) and isinstance(model.get("sd"), Mapping) else None


def check_srno_args(obj: Any, cfg: ml_collections.ConfigDict) -> None:
  """Raises ``CheckpointMismatchError`` when an SRNO-repository checkpoint's ``args`` (width,
  blocks = attention heads, encoder) differ from the model config ``cfg``; other inputs pass."""
  spec = _srno_spec(obj)
  if spec is None:
    return
  if spec.get("name", "srno") != "srno":
    raise CheckpointMismatchError(f"the checkpoint holds a {spec.get('name')!r} model, not SRNO")
  args = spec.get("args") or {}
  encoder = (args.get("encoder_spec") or {}).get("name")
  found = {"width": args.get("width"), "heads": args.get("blocks"), "encoder": encoder}
  wrong = [f"{field} {value} (config.model.operator.{field} is {cfg.operator[field]})"
           for field, value in found.items() if value is not None and value != cfg.operator[field]]
  if wrong:
    raise CheckpointMismatchError(
        "the SRNO checkpoint was trained with " + ", ".join(wrong) + ": use the matching model "
        "preset or set those config.model.operator fields")


def _load(source: str | os.PathLike | Mapping[str, Any] | list) -> Any:
  """The checkpoint object of a file (``.pth``/``.pt`` or ``.npz``), or ``source`` itself."""
  if isinstance(source, (Mapping, list, tuple)):
    return source
  path = os.fspath(source)
  if not os.path.exists(path):
    raise FileNotFoundError(f"checkpoint not found: {path}")
  if path.endswith(".npz"):
    if not zipfile.is_zipfile(path):
      raise ValueError(f"{path} is not an .npz archive (damaged, truncated or another format): "
                       "convert or download it again")
    try:
      with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}
    except (ValueError, OSError, zipfile.BadZipFile) as err:
      raise ValueError(f"{path} is not an archive of numeric arrays ({type(err).__name__}; "
                       "object arrays are never unpickled): convert or download it again") from None
  try:
    import torch  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    raise ImportError(f"reading {path} needs PyTorch: pip install 'neurop_jax[torch]'") from e
  try:
    return torch.load(path, map_location="cpu", weights_only=True)
  except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile) as err:
    # torch's own message advises weights_only=False: never unpickle a file of unknown origin.
    raise ValueError(f"{path} is not a PyTorch checkpoint of tensors ({type(err).__name__}: "
                     "damaged, truncated or holding other objects): convert or download it "
                     "again") from None


def read_state_dict(source: str | os.PathLike | Mapping[str, Any] | list
                    ) -> dict[str, np.ndarray]:
  """A flat name -> NumPy array mapping from a ``.pth``/``.pt`` or ``.npz`` file, or from an
  already loaded checkpoint object (a mapping, or the diffusion checkpoint's list)."""
  return _flatten_checkpoint(_load(source))


def _some(items: list[str]) -> str:
  """``count: first, second, ...`` with at most ``_SHOWN`` names."""
  shown = ", ".join(items[:_SHOWN]) + (", ..." if len(items) > _SHOWN else "")
  return f"{len(items)} ({shown})"


def _target_name(key: str, rules) -> str | None:
  module, _, leaf = key.rpartition(".")
  for pattern, repl in rules:
    if re.match(pattern, module):
      return re.sub(pattern, repl, module) + "." + leaf
  return None


def _fit(value: np.ndarray, shape: tuple[int, ...]) -> np.ndarray | None:
  """``value`` in the Flax layout of ``shape``, or None when it cannot fit.

  Conv OIHW -> HWIO; Linear (out, in) and 1x1 conv (out, in, 1, 1) -> Dense (in, out); the
  Galerkin layer-norm (heads, 1, dim) -> (heads, dim).
  """
  if len(shape) == 4 and value.ndim == 4:
    value = value.transpose(2, 3, 1, 0)
  elif len(shape) == 2 and value.ndim in (2, 4) and value.size == np.prod(shape):
    value = value.reshape(value.shape[0], -1).T
  elif len(shape) == 2 and value.ndim == 3:
    value = value.reshape(value.shape[0], -1)
  return value if value.shape == tuple(shape) else None


def _convert(state: Mapping[str, np.ndarray], template: Mapping[str, Any], rules,
             what: str) -> dict:
  """Fill the flat ``template`` (path tuple -> ShapeDtypeStruct) from ``state`` by ``rules``."""
  flat_target = {".".join(k): v for k, v in traverse_util.flatten_dict(template).items()}
  filled, matched, unexpected, misshaped = {}, set(), [], []
  for key, value in sorted(state.items()):
    name = _target_name(key, rules)
    if name is None:
      unexpected.append(key)
      continue
    module, _, leaf = name.rpartition(".")
    candidates = [f"{module}.{n}" for n in _LEAF_NAMES.get(leaf, (leaf,))]
    target = next((c for c in candidates if c in flat_target), None)
    if target is None:
      unexpected.append(key)
      continue
    matched.add(target)
    fitted = _fit(value, flat_target[target].shape)
    if fitted is None:
      misshaped.append(f"{key} {tuple(value.shape)} -> {target} {tuple(flat_target[target].shape)}")
      continue
    filled[target] = jnp.asarray(fitted, dtype=flat_target[target].dtype)
  missing = sorted(set(flat_target) - matched)
  if missing or unexpected or misshaped:
    parts = [f"{title} {_some(items)}" for title, items in (
        ("missing", missing), ("unexpected", unexpected), ("mis-shaped", misshaped)) if items]
    raise CheckpointMismatchError(
        f"the {what} checkpoint does not fit the configured model: " + "; ".join(parts)
        + ". Check that the model config (--model-preset; encoder, width, heads, UNet channels) "
        "matches the checkpoint")
  return traverse_util.unflatten_dict({tuple(k.split(".")): v for k, v in filled.items()})


def _operator_template(cfg: ml_collections.ConfigDict):
  """The operator's parameter shapes, for ``cfg.channels`` input and output bands."""
  lr = jnp.zeros((1, 4, 4, cfg.get("channels", 3)))
  coord, cell = jnp.asarray(make_coord((8, 8)))[None], jnp.asarray(make_cell((8, 8)))[None]
  return jax.eval_shape(lambda: make_operator(cfg).init(jax.random.key(0), lr, coord, cell))


def _unet_template(cfg: ml_collections.ConfigDict):
  """The UNet's parameter shapes; its input is x_t and the prior concatenated, 2 * channels."""
  size = 2 ** (len(cfg.unet.channel_mults) - 1)
  x, g = jnp.zeros((1, size, size, 2 * cfg.get("channels", 3))), jnp.ones((1,))
  return jax.eval_shape(lambda: make_unet(cfg).init(jax.random.key(0), x, g))


def convert_operator(state: Mapping[str, np.ndarray], cfg: ml_collections.ConfigDict) -> dict:
  """Operator parameters (``{'params': ...}``) from an SRNO state dict, for model config ``cfg``."""
  state = {k: v for k, v in state.items() if not _UNUSED.match(k)}
  template = _operator_template(cfg)["params"]
  return {"params": _convert(state, template, _OPERATOR_RULES, "operator (SRNO)")}


def convert_unet(state: Mapping[str, np.ndarray], cfg: ml_collections.ConfigDict) -> dict:
  """UNet parameters (``{'params': ...}``) from an SR3 UNet state dict, for model config ``cfg``."""
  return {"params": _convert(state, _unet_template(cfg)["params"], _UNET_RULES, "UNet")}


def convert_checkpoint(source: str | os.PathLike | Mapping[str, Any] | list,
                       cfg: ml_collections.ConfigDict) -> dict:
  """Parameters from an original checkpoint, usable as they are: ``{'params': {'operator': ...,
  'unet': ...}}`` (``Run(make_model(cfg), params)``, ``model.apply(params, ...)``).

  'unet' is absent for an SRNO-only checkpoint and 'operator' for a bare UNet state dict.
  ``source`` is a file path or a mapping; see the module docstring for the structures accepted.
  """
  obj = _load(source)
  check_srno_args(obj, cfg)
  state = _flatten_checkpoint(obj)
  if not any(k.startswith(("srno.", "Unet.")) for k in state):
    unet_keys = sum(k.split(".", 1)[0] in _UNET_MODULES for k in state)
    if unet_keys > len(state) / 2:
      return {"params": {"unet": convert_unet(state, cfg)["params"]}}
    return {"params": {"operator": convert_operator(state, cfg)["params"]}}
  parts = {"srno.": {}, "Unet.": {}}
  stray = []
  for key, value in state.items():
    prefix = next((p for p in parts if key.startswith(p)), None)
    if prefix is None:
      stray.append(key)
    else:
      parts[prefix][key[len(prefix):]] = value
  if stray:
    raise CheckpointMismatchError(
        "a diffusion checkpoint holds only srno.* and Unet.* names; unexpected "
        + _some(sorted(stray)))
  return {"params": {"operator": convert_operator(parts["srno."], cfg)["params"],
                     "unet": convert_unet(parts["Unet."], cfg)["params"]}}
