"""Super-resolution of any image size in bounded memory: the operator exactly, diffusion blended.

The operator (SRNO) is local except for the Galerkin attention, whose only global quantity is, per
block and head, the sum of ``k^T v`` over all output points. ``TiledOperator`` therefore makes
``blocks + 1`` passes over output tiles: pass ``b`` sums block ``b``'s ``k^T v`` over the tiles,
using the totals of the earlier blocks, and the last pass renders any region with all totals
known. Each tile encodes its own LR window with a halo of the encoder's receptive-field radius, so
its features are exact. The result equals the untiled operator up to float rounding, everywhere.

The diffusion UNet is convolutional with attention only at coarse levels; tiles of it are denoised
independently from one noise field (``tiles.position_noise``) and an exact prior, and blended with
raised-cosine weights that sum to one. GroupNorm and the attention see one tile, so the result is
close to, not equal to, a whole-image run; there are no seams.

The step noise of the stochastic samplers ('ddpm', DDIM with eta > 0) is read from one noise field
per step as x_T is (``fold_in(fold_in(key, 1), k)`` at step k), so overlapping tiles draw the same
noise at the same pixels and no pattern repeats at the tile stride.

Memory: tiles are processed ``tile_batch`` at a time (1 by default) by functions jitted for one
tile shape; the only full-size arrays are the input, the encoder's feature map of the input (kept
on the device while it takes at most ``FEATURE_CACHE_MIB``, so that the encoder runs once rather
than in each of the operator's passes, see ``TiledOperator``) and the output (for diffusion, a
float32 accumulator of the blended tiles, one tile row on the device and two on the host, then the
output). ``super_resolve_tiled`` and ``prior_only_tiled`` take the
arguments of ``api.super_resolve`` and ``api.prior_only`` (a ``Run``, NHWC ``(B, h, w, C)`` in
[0, 1], ``scale`` or ``out_shape``, the run's sampling defaults) plus the tile sizes;
``super_resolve_regions`` streams one ``(h, w, C)`` image region by region. The model sees
[-1, 1].
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from neurop_jax.diffusion.formulation import Formulation
from neurop_jax.diffusion.samplers import Sampling
from neurop_jax.diffusion.schedule import Schedule
from neurop_jax.inference import tiles
from neurop_jax.inference.consistency import projection, window_count, window_system
from neurop_jax.inference.api import (DenoiseFn, UNetDenoiser, check_array, check_images,
                                      check_key, check_layout, check_samples, draw_keys,
                                      map_draws, output_size, sample_image)
from neurop_jax.inference.run import Run
from neurop_jax.io.images import to_uint8
from neurop_jax.models import NeuralOperator, to_unit
from neurop_jax.models.coords import axis_centres, make_cell
from neurop_jax.models.edsr import make_encoder

PriorFn = Callable[[list[tuple[int, int]], tuple[int, int]], jax.Array]


def _encoder(operator: NeuralOperator):
  return make_encoder(operator.encoder, num_blocks=operator.encoder_blocks,
                      features=operator.encoder_features)


def encoder_radius(operator: NeuralOperator) -> int:
  """LR pixels an encoder feature depends on in each direction: one per 3x3 convolution.

  EDSR has a head convolution, two per residual block and a body convolution: ``2 * blocks + 2``.
  """
  return 2 * _encoder(operator).num_blocks + 2


def _grid(rows: jax.Array, cols: jax.Array) -> jax.Array:
  """``(1, len(rows), len(cols), 2)`` coordinates from per-axis centres, as ``make_coord``."""
  ys, xs = jnp.meshgrid(rows, cols, indexing="ij")
  return jnp.stack([ys, xs], axis=-1)[None]


@functools.partial(jax.jit, static_argnames=("operator",), donate_argnums=(2,))
def _encode_into(operator: NeuralOperator, params: dict, feature_map: jax.Array, lr_win: jax.Array,
                 start: jax.Array, owned: jax.Array) -> jax.Array:
  """``feature_map`` ``(1, h, w, F)`` with the features of ``lr_win`` ``(1, wh, ww, C)`` in [-1, 1]
  (top-left LR pixel ``start`` ``(2,)``) written where ``owned`` ``(wh, ww)`` is true."""
  feat = operator.apply(params, lr_win, method=operator.encode).astype(feature_map.dtype)
  at = (0, start[0], start[1], 0)
  old = jax.lax.dynamic_slice(feature_map, at, feat.shape)
  return jax.lax.dynamic_update_slice(feature_map, jnp.where(owned[None, ..., None], feat, old), at)


@functools.partial(jax.jit, static_argnames=("operator", "stage", "shape", "lr_hw", "out_hw"))
def _tile_pass(operator: NeuralOperator, params: dict, feature_map: jax.Array | None,
               lr_win: jax.Array, lr_origin: jax.Array, origin: jax.Array, mask: jax.Array,
               kvs: tuple[jax.Array, ...], *, stage: int, shape: tuple[int, int],
               lr_hw: tuple[int, int], out_hw: tuple[int, int]) -> jax.Array:
  """A batch of T tiles of pass ``stage``: block ``stage``'s masked kv sum, or (last stage) the
  tiles' outputs.

  Args:
    operator, params: the operator and its variables.
    feature_map: ``(1, h, w, F)`` the encoder's features of the whole input (each tile reads its
      window), or None: each tile encodes its window.
    lr_win: ``(T, 1, wh, ww, C)`` the tiles' LR windows in [-1, 1], top-left pixels ``lr_origin``
      ``(T, 2)``.
    origin: ``(T, 2)`` the tiles' top-left output pixels; ``shape`` their size (static).
    mask: ``(T, 1, th, tw)`` the points each tile counts in the kv sums (0 everywhere: a tile that
      only pads the batch).
    kvs: the kv sums of blocks ``0 .. stage - 1``.
    lr_hw, out_hw: the whole LR and output sizes (static).

  Returns:
    ``(1, heads, d, d)`` float32, the kv sum over the batch's masked points, or ``(T, th, tw, C)``
    the outputs in [-1, 1] scale.
  """
  op = operator

  def one(lr_win, lr_origin, origin, mask):
    rows = jax.lax.dynamic_slice(jnp.asarray(axis_centres(out_hw[0])), (origin[0],), (shape[0],))
    cols = jax.lax.dynamic_slice(jnp.asarray(axis_centres(out_hw[1])), (origin[1],), (shape[1],))
    coord, cell = _grid(rows, cols), jnp.asarray(make_cell(out_hw))[None]
    window = dict(full_hw=lr_hw, offset=lr_origin)
    if feature_map is None:
      feat = op.apply(params, lr_win, method=op.encode)
    else:
      feat = jax.lax.dynamic_slice(feature_map, (0, lr_origin[0], lr_origin[1], 0),
                                   (*lr_win.shape[:3], feature_map.shape[-1]))
    x = op.apply(params, feat, coord, cell, **window, method=op.lift_queries)
    for index in range(stage):
      x = op.apply(params, x, index, kvs[index], out_hw[0] * out_hw[1], method=op.block_attend)
    if stage < op.blocks:
      return op.apply(params, x, stage, mask, method=op.block_kv_sum).astype(jnp.float32)
    return op.apply(params, lr_win, x, coord, **window, method=op.project)[0]

  out = jax.vmap(one)(lr_win, lr_origin, origin, mask)
  return out.sum(axis=0) if stage < op.blocks else out


_to_unit = jax.jit(to_unit)
_zeros = jax.jit(jnp.zeros, static_argnames=("shape", "dtype"))  # made on the device, not copied

FEATURE_CACHE_MIB = 1024
"""The default bound on the encoder feature map that ``TiledOperator`` keeps (see there)."""


class TiledOperator:
  """The neural operator on one image, evaluated tile by tile with the exact global attention.

  Usage: ``kv = op.kv_sums()`` once (``blocks`` passes over the tiles), then ``op.render(origins,
  shape, kv)`` for any regions, e.g. the tiles of ``op.rows`` x ``op.cols``; ``op.regions()`` does
  both over the whole output.

  The encoder runs once: its features of the whole input, ``(1, h, w, F)`` in the model's dtype,
  are computed window by window (each with its halo, so exactly) and kept on the device for every
  pass, when they take at most ``feature_cache_mib`` (e.g. 64 features of a 2000 x 2000 input:
  977 MiB). A larger input has each tile encode its own window in each pass instead, so that
  memory stays bounded by the tiles whatever the input size.

  Args:
    operator: the ``NeuralOperator``.
    params: its variables ``{'params': ...}``.
    lr: ``(h, w, C)`` float32 in [0, 1]: an array, or any object with ``shape`` whose
      ``lr[rows, cols]`` is such an array (``neurop_jax.io.values.UnitView``: a raster kept in its
      own dtype); only windows of it are read.
    out_hw: the output size ``(H, W)``.
    tile: the output tile side in pixels (memory grows with its square).
    tile_batch: tiles per program (memory grows with it; accelerators want several).
    feature_cache_mib: the largest encoder feature map kept (0: none).
    progress: show tqdm bars.
  """

  def __init__(self, operator: NeuralOperator, params: dict, lr: np.ndarray,
               out_hw: tuple[int, int], tile: int = 256, tile_batch: int = 1,
               feature_cache_mib: float = FEATURE_CACHE_MIB, progress: bool = True):
    if tile_batch < 1:
      raise ValueError(f"tile_batch must be a positive number of tiles, got {tile_batch}")
    self.operator, self.params = operator, params
    self.lr = lr
    self.lr_hw = tuple(lr.shape[:2])
    self.out_hw = tuple(int(n) for n in out_hw)
    self.radius = encoder_radius(operator)
    self.rows = tiles.axis_tiles(self.out_hw[0], tile)
    self.cols = tiles.axis_tiles(self.out_hw[1], tile)
    self.tile_batch = min(tile_batch, len(self.rows) * len(self.cols))  # no batch of padding only
    self.progress = progress
    itemsize = jnp.dtype(operator.dtype).itemsize
    map_mib = self.lr_hw[0] * self.lr_hw[1] * _encoder(operator).features * itemsize / 2**20
    self.feature_map = self._encode() if map_mib <= feature_cache_mib else None

  def _encode(self, lr_tile: int = 256) -> jax.Array:
    """The encoder's features of the whole input, LR tile by LR tile (``lr_tile`` pixels, each
    with a halo of ``radius``): ``(1, h, w, F)``, equal to encoding the input at once."""
    axes = [tiles.axis_tiles(n, lr_tile) for n in self.lr_hw]
    window = [min(n, t.tile + 2 * self.radius) for n, t in zip(self.lr_hw, axes)]
    spec = jax.eval_shape(lambda x: self.operator.apply(self.params, x,
                                                        method=self.operator.encode),
                          jax.ShapeDtypeStruct((1, *window, self.lr.shape[-1]), jnp.float32))
    feature_map = _zeros((1, *self.lr_hw, spec.shape[-1]), spec.dtype)
    pairs = [(i, j) for i in range(len(axes[0])) for j in range(len(axes[1]))]
    for i, j in tqdm(pairs, desc="encoder", disable=not self.progress, leave=False):
      start, owned = [], []
      for axis, k in zip(range(2), (i, j)):
        lo, hi = axes[axis].owned[k]
        first = min(max(lo - self.radius, 0), self.lr_hw[axis] - window[axis])
        start.append(first)
        owned.append((np.arange(first, first + window[axis]) >= lo)
                     & (np.arange(first, first + window[axis]) < hi))
      lr_win = np.asarray(self.lr[start[0]:start[0] + window[0], start[1]:start[1] + window[1]],
                          np.float32)[None] * 2 - 1
      inputs = jax.device_put((lr_win, np.asarray(start, np.int32),
                               owned[0][:, None] & owned[1][None, :]))
      feature_map = _encode_into(self.operator, self.params, feature_map, *inputs)
    return feature_map

  def _lr_window(self, origin: tuple[int, int],
                 shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """The LR window ``(1, wh, ww, C)`` in [-1, 1] serving the output region, and its top-left
    pixel."""
    first, sizes = [], []
    for axis in range(2):
      args = (shape[axis], self.out_hw[axis], self.lr_hw[axis], self.radius)
      first.append(tiles.lr_window_start(origin[axis], *args))
      sizes.append(tiles.lr_window_size(*args))
    window = self.lr[first[0]:first[0] + sizes[0], first[1]:first[1] + sizes[1]]
    return np.asarray(window, np.float32)[None] * 2 - 1, np.asarray(first, np.int32)

  def _run(self, stage: int, origins: list[tuple[int, int]], shape: tuple[int, int],
           masks: np.ndarray, kvs: tuple[jax.Array, ...]) -> jax.Array:
    """``_tile_pass`` on the tiles at ``origins`` with ``masks`` ``(len(origins), 1, th, tw)``,
    in one batch of ``tile_batch`` tiles or more (padded with the last tile, its mask zero)."""
    pad = max(self.tile_batch - len(origins), 0)
    origins = list(origins) + [origins[-1]] * pad
    masks = np.concatenate([masks, np.zeros((pad, *masks.shape[1:]), np.float32)])
    windows = [self._lr_window(origin, shape) for origin in origins]
    inputs = jax.device_put((np.stack([w for w, _ in windows]), np.stack([o for _, o in windows]),
                             np.asarray(origins, np.int32), masks))
    return _tile_pass(self.operator, self.params, self.feature_map, *inputs, kvs, stage=stage,
                      shape=shape, lr_hw=self.lr_hw, out_hw=self.out_hw)

  def _batches(self, desc: str):
    """Lists of at most ``tile_batch`` ``(origin, (y0, y1), (x0, x1))``: every tile with its owned
    ranges, in row-major order, with a progress bar over the tiles."""
    pairs = [(i, j) for i in range(len(self.rows)) for j in range(len(self.cols))]
    bar = tqdm(total=len(pairs), desc=desc, disable=not self.progress, leave=False)
    for first in range(0, len(pairs), self.tile_batch):
      batch = pairs[first:first + self.tile_batch]
      yield [((self.rows.starts[i], self.cols.starts[j]), self.rows.owned[i], self.cols.owned[j])
             for i, j in batch]
      bar.update(len(batch))
    bar.close()

  def kv_sums(self) -> tuple[jax.Array, ...]:
    """Per Galerkin block, ``sum k^T v`` over the whole output grid: ``(1, heads, d, d)`` float32.

    One pass over the tiles per block, each tile counting only the points it owns; the sums are
    accumulated on the device in float32.
    """
    kvs: tuple[jax.Array, ...] = ()
    shape = (self.rows.tile, self.cols.tile)
    for stage in range(self.operator.blocks):
      total = None
      for batch in self._batches(f"attention {stage + 1}/{self.operator.blocks}"):
        masks = np.zeros((len(batch), 1, *shape), np.float32)
        for mask, ((oy, ox), (y0, y1), (x0, x1)) in zip(masks, batch):
          mask[0, y0 - oy:y1 - oy, x0 - ox:x1 - ox] = 1
        part = self._run(stage, [origin for origin, _, _ in batch], shape, masks, kvs)
        total = part if total is None else total + part
      kvs = kvs + (total,)
    return kvs

  def render(self, origins: list[tuple[int, int]], shape: tuple[int, int],
             kvs: tuple[jax.Array, ...]) -> jax.Array:
    """The output on the regions at ``origins`` (one program for them all) of ``shape``, given
    ``kv_sums()``: ``(len(origins), h, w, C)`` on the device, [-1, 1] scale, not clipped. One
    compile per region shape."""
    masks = np.ones((len(origins), 1, *shape), np.float32)
    return self._run(self.operator.blocks, origins, shape, masks, kvs)[:len(origins)]

  def regions(self) -> Iterator[tuple[tuple[int, int], np.ndarray]]:
    """``(origin, region)`` over the output: each tile's owned part, float32 ``(h, w, C)`` in
    [0, 1] (clipped); the regions partition the output grid."""
    kvs = self.kv_sums()
    shape = (self.rows.tile, self.cols.tile)
    for batch in self._batches("operator tiles"):
      rendered = jax.device_get(_to_unit(self.render([o for o, _, _ in batch], shape, kvs)))
      for tile, ((oy, ox), (y0, y1), (x0, x1)) in zip(rendered, batch):
        yield (y0, x0), tile[y0 - oy:y1 - oy, x0 - ox:x1 - ox]


@functools.partial(jax.jit, static_argnames=("denoise", "sampler", "timesteps", "formulation",
                                             "strength"))
def _sample_tiles(denoise: DenoiseFn, params: Any, priors: jax.Array, origins: jax.Array,
                  rngs: jax.Array, schedule: Schedule, eta: jax.Array,
                  systems: tuple[jax.Array, ...] | None, *, sampler: str,
                  timesteps: tuple[int, ...], formulation: Formulation,
                  strength: float) -> jax.Array:
  """``api.sample_image`` on T tiles at ``origins`` ``(T, 2)``, once per key of ``rngs`` ``(K,)``
  (``api.map_draws``, ``SAMPLE_GROUP`` at a time): ``priors`` ``(T, th, tw, C)`` [-1, 1] ->
  ``(T, K, th, tw, C)`` in [0, 1]. ``systems``: the tiles' consistency constraints, each part
  stacked ``(T, ...)`` (``_tile_system``), or None."""
  def tile(prior, origin, system):
    project = None if system is None else projection(*system)
    draw = lambda rng: sample_image(denoise, params, prior[None], rng, eta, schedule,
                                    sampler=sampler, timesteps=timesteps,
                                    formulation=formulation, strength=strength,
                                    project=project, origin=origin)[0]
    return map_draws(draw, rngs)
  return jax.vmap(tile)(priors, origins, systems)


@functools.partial(jax.jit, donate_argnums=(0,))
def _blend_into(row: jax.Array, results: jax.Array, weights: jax.Array,
                lefts: jax.Array) -> jax.Array:
  """``row`` ``(K, th, W, C)`` plus each of ``results`` ``(T, K, th, tw, C)`` times its
  ``weights`` ``(T, th, tw)`` at its column ``lefts`` ``(T,)``."""
  for result, weight, left in zip(results, weights, lefts):
    at = (0, 0, left, 0)
    old = jax.lax.dynamic_slice(row, at, result.shape)
    row = jax.lax.dynamic_update_slice(row, old + weight[None, ..., None] * result, at)
  return row


def _tile_system(lr: Any, out_hw: tuple[int, int], origin: tuple[int, int],
                 shape: tuple[int, int]) -> tuple[np.ndarray, ...]:
  """The consistency constraint of the output tile at ``origin`` of ``shape``: the LR pixels of
  ``lr`` (``(h, w, C)`` in [0, 1], an array or a ``UnitView``) whose bicubic support lies inside
  the tile, ``(1, n, m, C)`` in [-1, 1], with the tile's restricted weights (see
  ``consistency.window_system``)."""
  systems = [window_system(big, small, start, length, window_count(big, small, length))
             for big, small, start, length in zip(out_hw, lr.shape[:2], origin, shape)]
  (rows, a, a_pinv), (cols, b, b_pinv) = systems
  lo, hi = (int(rows.min()), int(cols.min())), (int(rows.max()) + 1, int(cols.max()) + 1)
  window = np.asarray(lr[lo[0]:hi[0], lo[1]:hi[1]], np.float32)
  pixels = window[(rows - lo[0])[:, None], (cols - lo[1])[None, :]]
  return pixels[None] * 2 - 1, a, a_pinv, b, b_pinv


def sample_strips(denoise: DenoiseFn, params: Any, prior: PriorFn, out_hw: tuple[int, int], *,
                  keys: jax.Array, schedule: Schedule, sampling: Sampling = Sampling(),
                  formulation: Formulation = Formulation(), tile: int = 256, overlap: int = 32,
                  tile_batch: int = 1, lr: Any = None,
                  progress: bool = True) -> Iterator[tuple[int, np.ndarray]]:
  """Diffusion sampling tile by tile, blended, as finished row strips ``(y0, strip)``.

  Each tile of ``tile`` pixels (every ``tile - overlap``) runs the whole sampler on its window of
  the noise fields (x_T and each step's noise, see ``_sample_tiles``) conditioned on its part of
  the prior, ``tile_batch`` tiles of a tile row per program; the results are blended with
  ``tiles.blend_weights`` (sum one) into the tile row's accumulator on the device, which comes to
  the host once per tile row. A strip is yielded once no later tile row reaches it, so only about
  two tile rows of the output are held: ``strip`` is float32 ``(K, rows, W, C)`` in [0, 1], one
  draw per key of ``keys`` made in one program (``api.map_draws``); the strips cover the output
  rows in order.

  Args:
    denoise: ``(params, x_t (1, h, w, C), g (1,), prior (1, h, w, C)) -> output`` (what
      ``formulation.target`` names), hashable (static under jit), e.g. ``UNetDenoiser(model)``.
    params: its parameters.
    prior: ``(origins, shape) -> (len(origins), h, w, C)`` the prior on the regions at the
      ``(row, col)`` ``origins`` (at most ``tile_batch``), [-1, 1] scale.
    out_hw: the output size ``(H, W)``.
    keys: ``(K,)`` the keys of the draws (``api.draw_keys``).
    schedule: the noise schedule.
    sampling: the sampler, steps, spacing, eta, strength and consistency (the paper's by
      default).
    formulation: what ``denoise`` predicts and where it diffuses (the paper's by default).
    tile, overlap: the tile side and the overlap of neighbouring tiles, in output pixels.
    tile_batch: tiles per program (memory grows with it; accelerators want several).
    lr: the input ``(h, w, C)`` in [0, 1] (an array or a ``UnitView``), needed with
      ``sampling.consistency``: each tile is made consistent with the LR pixels inside it (see
      ``inference.consistency``).
    progress: show a tqdm bar.
  """
  if sampling.consistency and lr is None:
    raise ValueError("consistency needs the input: pass lr")
  rows = tiles.axis_tiles(out_hw[0], tile, overlap)
  cols = tiles.axis_tiles(out_hw[1], tile, overlap)
  shape = (rows.tile, cols.tile)
  row_w, col_w = tiles.blend_weights(rows, overlap), tiles.blend_weights(cols, overlap)
  tile_batch = min(tile_batch, len(cols))  # a batch holds tiles of one tile row
  timesteps = sampling.timesteps(schedule)
  options = dict(sampler=sampling.solver, timesteps=timesteps, formulation=formulation,
                 strength=float(sampling.strength))
  eta = jax.device_put(np.float32(sampling.eta))
  bar = tqdm(total=len(rows) * len(cols), desc="diffusion tiles", disable=not progress,
             leave=False)
  done, strip, row = 0, None, None
  for i, top in enumerate(rows.starts):
    for first in range(0, len(cols), tile_batch):
      js = list(range(first, min(first + tile_batch, len(cols))))
      origins = [(top, cols.starts[j]) for j in js]
      weights = np.stack([row_w[i][:, None] * col_w[j][None, :] for j in js])
      pad = tile_batch - len(js)
      padded = origins + [origins[-1]] * pad
      systems = None
      if sampling.consistency:
        parts = [_tile_system(lr, out_hw, origin, shape) for origin in padded]
        systems = tuple(np.stack(part) for part in zip(*parts))
      inputs = jax.device_put((np.asarray(padded, np.int32), systems,
                               np.concatenate([weights, np.zeros((pad, *shape), np.float32)]),
                               np.asarray(padded, np.int32)[:, 1]))
      priors = prior(padded, shape)
      results = _sample_tiles(denoise, params, priors, inputs[0], keys, schedule, eta, inputs[1],
                              **options)
      if row is None:
        row = _zeros((results.shape[1], shape[0], out_hw[1], results.shape[-1]), jnp.float32)
      row = _blend_into(row, results, *inputs[2:])
      bar.update(len(js))
    blended, row = jax.device_get(row), None
    if strip is None:
      strip = np.zeros((blended.shape[0], 0, out_hw[1], blended.shape[-1]), np.float32)
    if strip.shape[1] < top + shape[0] - done:
      grow = top + shape[0] - done - strip.shape[1]
      strip = np.concatenate([strip, np.zeros((*strip.shape[:1], grow, *strip.shape[2:]),
                                              np.float32)], axis=1)
    strip[:, top - done:top - done + shape[0]] += blended
    end = rows.starts[i + 1] if i + 1 < len(rows) else out_hw[0]
    yield done, np.clip(strip[:, :end - done], 0, 1)
    strip, done = strip[:, end - done:], end
  bar.close()


def super_resolve_regions(run: Run, image: np.ndarray, out_hw: tuple[int, int], *,
                          prior_only: bool = False, rng: jax.Array | None = None, index: int = 0,
                          sampler: str | None = None, steps: int | None = None,
                          skip: str | None = None, eta: float | None = None,
                          strength: float | None = None, consistency: bool | None = None,
                          samples: int | None = None, tile: int = 256, overlap: int = 32,
                          tile_batch: int = 1, feature_cache_mib: float = FEATURE_CACHE_MIB,
                          params: dict | None = None,
                          progress: bool = True) -> Iterator[tuple[tuple[int, int], np.ndarray, np.ndarray | None]]:
  """Super-resolves one image of any size in bounded memory, region by region.

  Yields ``(origin, mean, std)`` over regions that partition the output: ``mean`` float32
  ``(h, w, C)`` in [0, 1] is the operator's prior (``prior_only``, exact) or the mean of the
  diffusion draws (blended tiles; one draw when ``samples`` is None), and ``std`` their per-pixel
  standard deviation (``(h, w, C)``, ddof 0: zeros for ``samples=1``), or None with
  ``prior_only`` or ``samples`` None.
  What is held at a time: the input (``image`` ``(h, w, C)`` in [0, 1], or a ``UnitView``, see
  ``TiledOperator``), one tile row of the output (``samples`` draws of it) and one tile's
  activations. ``out_hw`` is the output ``(H, W)``; ``index`` the image's index in its batch (its
  draws use ``api.draw_keys(rng, samples, index)``); other arguments as ``super_resolve_tiled``.
  """
  if len(getattr(image, "shape", ())) != 3:
    check_array(image, run.channels, "image")
    raise ValueError(f"image has shape {tuple(image.shape)}: super_resolve_regions takes one "
                     f"(h, w, {run.channels}) image (image b of a batch: lr[b])")
  if isinstance(image, (np.ndarray, jax.Array)):
    check_images(image[None], run.channels)
  else:
    check_layout((1, *image.shape), image.dtype, run.channels)
  out_hw = output_size((1, *image.shape), out_shape=out_hw)
  params = run.params if params is None else params
  sampling = None if prior_only else _tiled_sampling(run, rng, sampler, steps, skip, eta,
                                                     strength, consistency, samples)
  operator = TiledOperator(run.model.operator, {"params": params["params"]["operator"]}, image,
                           out_hw, tile, tile_batch, feature_cache_mib, progress)
  if prior_only:
    for origin, region in operator.regions():
      yield origin, region, None
    return
  kvs = operator.kv_sums()
  render = lambda origins, shape: operator.render(origins, shape, kvs)
  keys = draw_keys(rng, samples, index)
  for y0, strip in sample_strips(UNetDenoiser(run.model, sampling.network), params, render,
                                 out_hw, keys=keys, schedule=run.schedule, sampling=sampling,
                                 formulation=run.formulation, tile=tile, overlap=overlap,
                                 tile_batch=tile_batch, lr=image, progress=progress):
    yield (y0, 0), strip.mean(axis=0), None if samples is None else strip.std(axis=0)


def _tiled_sampling(run: Run, rng: jax.Array | None, sampler: str | None, steps: int | None,
                    skip: str | None, eta: float | None, strength: float | None,
                    consistency: bool | None, samples: int | None) -> Sampling:
  """The sampling of a tiled diffusion call (the run's defaults under the caller's), checked."""
  sampling = run.checked_sampling(sampler, steps, skip, eta, strength, consistency)
  check_key(rng)
  check_samples(samples)
  return sampling


def _gather(run: Run, lr: np.ndarray, scale: float | None, out_shape: tuple[int, int] | None,
            dtype: np.dtype, regions) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
  """``regions(image, out_hw)`` of every image of ``lr`` ``(B, h, w, C)`` gathered into arrays."""
  check_array(lr, run.channels)
  check_layout(lr.shape, lr.dtype, run.channels)
  out_hw = output_size(lr.shape, scale=scale, out_shape=out_shape)
  out = np.empty((lr.shape[0], *out_hw, lr.shape[-1]), dtype)
  spread = None
  for b in range(lr.shape[0]):
    for (y0, x0), mean, std in regions(lr[b], out_hw, b):
      window = np.s_[b, y0:y0 + mean.shape[0], x0:x0 + mean.shape[1]]
      out[window] = to_uint8(mean) if dtype == np.uint8 else mean
      if std is not None:
        spread = np.zeros(out.shape, np.float32) if spread is None else spread
        spread[window] = std
  return out if spread is None else (out, spread)


def super_resolve_tiled(run: Run, lr: np.ndarray, *, scale: float | None = None,
                        out_shape: tuple[int, int] | None = None, rng: jax.Array,
                        sampler: str | None = None, steps: int | None = None,
                        skip: str | None = None, eta: float | None = None,
                        strength: float | None = None, consistency: bool | None = None,
                        samples: int | None = None, tile: int = 256, overlap: int = 32,
                        tile_batch: int = 1, feature_cache_mib: float = FEATURE_CACHE_MIB,
                        dtype: np.dtype = np.float32, params: dict | None = None,
                        progress: bool = True) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
  """``api.super_resolve`` for outputs of any size, in bounded memory (diffusion tiles blended).

  Args:
    run, scale, out_shape, sampler, steps, skip, eta, strength, consistency, samples, params: as
      ``super_resolve`` (the run's defaults unless given); consistency is tile-local (see
      ``inference.consistency``).
    lr: ``(B, h, w, C)`` float in [0, 1]; the images are super-resolved one after the other.
    rng: a PRNG key; image ``b`` of the batch draws with ``api.draw_keys(rng, samples, b)``, as
      ``super_resolve`` does.
    tile, overlap: tile side and diffusion-tile overlap, in output pixels.
    tile_batch: tiles per program (memory grows with it; accelerators want several).
    feature_cache_mib: the largest encoder feature map kept on the device (``TiledOperator``).
    dtype: np.float32 ([0, 1]) or np.uint8 output (of the mean; the std stays float32).
    progress: show tqdm bars.

  Returns:
    ``(B, H, W, C)`` of ``dtype``; with ``samples``, ``(mean, std)``, std float32.

  Raises:
    ValueError: as ``super_resolve``, but for the size bound.
  """
  _tiled_sampling(run, rng, sampler, steps, skip, eta, strength, consistency,
                  samples)  # fail before any work
  regions = lambda image, out_hw, b: super_resolve_regions(
      run, image, out_hw, rng=rng, index=b, sampler=sampler, steps=steps, skip=skip, eta=eta,
      strength=strength, consistency=consistency, samples=samples, tile=tile, overlap=overlap,
      tile_batch=tile_batch, feature_cache_mib=feature_cache_mib, params=params,
      progress=progress)
  return _gather(run, lr, scale, out_shape, dtype, regions)


def prior_only_tiled(run: Run, lr: np.ndarray, *, scale: float | None = None,
                     out_shape: tuple[int, int] | None = None, tile: int = 256,
                     tile_batch: int = 1, feature_cache_mib: float = FEATURE_CACHE_MIB,
                     dtype: np.dtype = np.float32, params: dict | None = None,
                     progress: bool = True) -> np.ndarray:
  """``api.prior_only`` for outputs of any size: the operator exactly, tile by tile.

  Arguments as ``super_resolve_tiled``; returns ``(B, H, W, C)`` of ``dtype``.
  """
  regions = lambda image, out_hw, b: super_resolve_regions(
      run, image, out_hw, prior_only=True, tile=tile, tile_batch=tile_batch,
      feature_cache_mib=feature_cache_mib, params=params, progress=progress)
  return _gather(run, lr, scale, out_shape, dtype, regions)
