"""Loading original checkpoints: npz and .pth structures, EMA, and one clear mismatch error."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import FIXTURE_DIRS, max_abs_diff
from neurop_jax.models.convert import CheckpointMismatchError, convert_checkpoint, read_state_dict
from neurop_jax.models import make_model, model_config
from neurop_jax.models.coords import make_cell, make_coord

MICRO = FIXTURE_DIRS["micro"]


def _states():
  return read_state_dict(MICRO / "srno_state.npz"), read_state_dict(MICRO / "unet_state.npz")


def test_srno_file_structure():
  srno, _ = _states()
  params = convert_checkpoint({"model": srno}, model_config("micro"))
  assert set(params) == {"params"} and set(params["params"]) == {"operator"}
  kernel = params["params"]["operator"]["encoder_net"]["head"]["kernel"]
  np.testing.assert_array_equal(kernel, srno["encoder.head.0.weight"].transpose(2, 3, 1, 0))


def _with_bands(state, bands, shapes):
  """``state`` with the arrays named in ``shapes`` (name -> shape function of the band count)
  replaced by random ones of that shape for ``bands`` bands."""
  rng = np.random.default_rng(0)
  return state | {name: rng.standard_normal(shape(bands)).astype(np.float32)
                  for name, shape in shapes.items()}


def test_four_band_checkpoint_converts_and_runs():
  """RGB + near-infrared weights in the original layout: the operator's input conv and output
  layer, the UNet's first conv (x_t and the prior, 2 x 4 bands) and final conv are 4-band."""
  srno, unet = _states()
  srno = _with_bands(srno, 4, {"encoder.head.0.weight": lambda c: (64, c, 3, 3),
                               "fc2.weight": lambda c: (c, 256, 1, 1), "fc2.bias": lambda c: (c,)})
  unet = _with_bands(unet, 4, {"downs.0.weight": lambda c: (8, 2 * c, 3, 3),
                               "final_conv.block.3.weight": lambda c: (c, 8, 3, 3),
                               "final_conv.block.3.bias": lambda c: (c,)})
  cfg = model_config("micro")
  cfg.channels = 4
  params = convert_checkpoint({**{f"srno.{k}": v for k, v in srno.items()},
                               **{f"Unet.{k}": v for k, v in unet.items()}}, cfg)
  model = make_model(cfg)
  lr = jnp.linspace(-1.0, 1.0, 2 * 8 * 8 * 4).reshape(2, 8, 8, 4)
  coord = jnp.broadcast_to(jnp.asarray(make_coord((16, 16))), (2, 16, 16, 2))
  cell = jnp.broadcast_to(jnp.asarray(make_cell((16, 16))), (2, 2))
  x_t, noise_level = jnp.zeros((2, 16, 16, 4)), jnp.full((2,), 0.5)
  template = jax.eval_shape(lambda: model.init(jax.random.key(0), x_t, noise_level, lr, coord, cell))
  assert (jax.tree.map(lambda a: (a.shape, a.dtype), params)
          == jax.tree.map(lambda a: (a.shape, a.dtype), template))
  operator, unet_params = params["params"]["operator"], params["params"]["unet"]
  np.testing.assert_array_equal(operator["encoder_net"]["head"]["kernel"],
                                srno["encoder.head.0.weight"].transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(operator["fc2"]["kernel"], srno["fc2.weight"][:, :, 0, 0].T)
  np.testing.assert_array_equal(unet_params["downs_0"]["kernel"],
                                unet["downs.0.weight"].transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(unet_params["final_conv"]["conv"]["bias"],
                                unet["final_conv.block.3.bias"])
  prior = jax.jit(lambda p: model.apply(p, lr, coord, cell, method=model.prior))(params)
  out = jax.jit(lambda p: model.apply(p, x_t, noise_level, prior, method=model.denoise))(params)
  for image in (prior, out):
    assert image.shape == (2, 16, 16, 4) and bool(jnp.all(jnp.isfinite(image)))


def test_diffusion_file_uses_ema_shadow():
  srno, unet = _states()
  model_state = {**{"srno." + k: v for k, v in srno.items()},
                 **{"Unet." + k: v for k, v in unet.items()}}
  shadow = {"Unet.final_conv.block.3.bias": unet["final_conv.block.3.bias"] + 1.0}
  params = convert_checkpoint([model_state, {}, 3, 100, shadow], model_config("micro"))
  bias = params["params"]["unet"]["final_conv"]["conv"]["bias"]
  np.testing.assert_allclose(bias, unet["final_conv.block.3.bias"] + 1.0)
  qkv = params["params"]["unet"]["mid_0"]["attn"]["qkv"]["kernel"]
  np.testing.assert_array_equal(qkv, unet["mid.0.attn.qkv.weight"][:, :, 0, 0].T)


def test_every_problem_listed_in_one_error():
  srno, _ = _states()
  broken = dict(srno)
  del broken["fc2.bias"]
  broken["conv0.kln.weight"] = np.zeros((3, 1, 8), np.float32)
  broken["extra.layer.weight"] = np.zeros(3, np.float32)
  with pytest.raises(CheckpointMismatchError) as err:
    convert_checkpoint(broken, model_config("micro"))
  msg = str(err.value)
  assert "\n" not in msg
  assert "missing 1 (fc2.bias)" in msg
  assert "unexpected 1 (extra.layer.weight)" in msg
  assert "mis-shaped 1 (conv0.kln.weight (3, 1, 8)" in msg


def test_mismatch_error_gives_counts_and_the_first_names():
  _, unet = _states()
  with pytest.raises(CheckpointMismatchError) as err:
    convert_checkpoint({f"Unet.{k}": v for k, v in unet.items()} | {"srno.fc1.weight": 0},
                       model_config("paper"))
  msg = str(err.value)
  assert "\n" not in msg and len(msg) < 700, msg
  assert "missing" in msg and ", ...)" in msg and "--model-preset" in msg


def _srno_repository_file(srno, **args):
  """A checkpoint as SRNO's own train.py writes it: the model spec with its state dict."""
  spec_args = {"encoder_spec": {"name": "edsr-baseline", "args": {"no_upsampling": True}},
               "width": 32, "blocks": 4, **args}
  return {"model": {"name": "srno", "args": spec_args, "sd": srno},
          "optimizer": {"name": "adam", "args": {"lr": 4e-5}, "sd": {}}, "epoch": 500}


def test_srno_repository_layout_is_read_and_its_args_checked():
  srno, _ = _states()
  params = convert_checkpoint(_srno_repository_file(srno), model_config("micro"))
  ref = convert_checkpoint({"model": srno}, model_config("micro"))
  assert max_abs_diff(params["params"]["operator"]["lift"]["kernel"],
                      ref["params"]["operator"]["lift"]["kernel"]) == 0.0
  with pytest.raises(CheckpointMismatchError,
                     match=r"trained with width 256 \(config.model.operator.width is 32\), "
                           r"heads 16 \(config.model.operator.heads is 4\)"):
    convert_checkpoint(_srno_repository_file(srno, width=256, blocks=16), model_config("micro"))
  with pytest.raises(CheckpointMismatchError, match="encoder rdn"):
    convert_checkpoint(_srno_repository_file(srno, encoder_spec={"name": "rdn"}),
                       model_config("micro"))


def test_bare_unet_state_dict_is_recognised():
  _, unet = _states()
  params = convert_checkpoint(unet, model_config("micro"))
  assert set(params) == {"params"} and set(params["params"]) == {"unet"}
  ref = convert_checkpoint({f"Unet.{k}": v for k, v in unet.items()} | {
      f"srno.{k}": v for k, v in _states()[0].items()}, model_config("micro"))
  assert max_abs_diff(params["params"]["unet"]["downs_0"]["kernel"],
                      ref["params"]["unet"]["downs_0"]["kernel"]) == 0.0


def test_wrong_config_is_a_mismatch():
  srno, _ = _states()
  with pytest.raises(CheckpointMismatchError, match="mis-shaped"):
    convert_checkpoint(srno, model_config("paper"))


def test_missing_file_is_named(tmp_path):
  with pytest.raises(FileNotFoundError, match="nope.pth"):
    read_state_dict(tmp_path / "nope.pth")


@pytest.mark.parametrize("kind", ["garbage.npz", "objects.npz", "garbage.pth", "objects.pth"])
def test_a_damaged_checkpoint_never_advises_unpickling(tmp_path, kind):
  """A damaged file or one holding objects: one ValueError that names it and says to convert or
  download it again; numpy's and torch's advice (allow_pickle=True, weights_only=False) is not
  passed on: a file of unknown origin is never unpickled."""
  path = tmp_path / kind
  if kind == "garbage.npz" or kind == "garbage.pth":
    path.write_bytes(b"not a checkpoint " * 8)
  elif kind == "objects.npz":
    np.savez(path, weights=np.array([{"a": 1}], dtype=object))
  else:
    torch = pytest.importorskip("torch")
    torch.save({"weights": object()}, path)
  if path.suffix == ".pth":
    pytest.importorskip("torch")
  with pytest.raises(ValueError, match=f"{kind} is not .*: convert or download it again") as info:
    read_state_dict(path)
  assert "allow_pickle" not in str(info.value)
  assert "weights_only" not in str(info.value)


def test_pth_round_trip(tmp_path):
  torch = pytest.importorskip("torch")
  srno, unet = _states()
  model_state = {**{"srno." + k: torch.from_numpy(v) for k, v in srno.items()},
                 **{"Unet." + k: torch.from_numpy(v) for k, v in unet.items()}}
  path = tmp_path / "diffusion.pth"
  torch.save([model_state, {"state": {}}, 10, 1000, {}], path)
  params = convert_checkpoint(path, model_config("micro"))
  ref = convert_checkpoint({**{"srno." + k: v for k, v in srno.items()},
                            **{"Unet." + k: v for k, v in unet.items()}}, model_config("micro"))
  assert max_abs_diff(params["params"]["unet"]["downs_0"]["kernel"],
                      ref["params"]["unet"]["downs_0"]["kernel"]) == 0.0


def test_import_needs_no_torch():
  import subprocess, sys
  code = "import sys, neurop_jax, neurop_jax.models.convert; print('torch' in sys.modules)"
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
  assert out.stdout.strip() == "False"
