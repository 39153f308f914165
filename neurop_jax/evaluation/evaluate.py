"""Evaluation of a trained run: PSNR, SSIM and LPIPS against the scale, for three methods.

  python -m neurop_jax.main --mode evaluate --config configs/ucm.py --workdir runs/ucm
  python -m neurop_jax.main --mode evaluate --config configs/ucm.py --workdir runs/ucm \
      --config.evaluate.scales='(4.0, 9.0)' --config.evaluate.steps=20

Methods: 'bicubic' (PIL-exact bicubic upsampling of the LR image), 'operator' (the neural-operator
prior alone, ``inference.api.prior_only``: the SRNO baseline) and 'diffusion' (NeurOp-Diff,
``inference.api.super_resolve``; skipped with a warning when the workdir holds no stage-2
checkpoint).
Images are whole images of the chosen split, HR cropped so that HR/LR is the scale and LR made by
the PIL-exact bicubic (``data.eval_batches``), one at a time. Per image and method:

  psnr_paper, ssim_paper  protocol 'paper' (RGB, whole image), what NeurOp-Diff reports;
  psnr_rs, ssim_rs        protocol 'rs' (BT.601 luma, ``round(scale)`` border pixels cropped);
  lpips                   LPIPS (AlexNet v0.1) on the whole RGB image;

and their means per scale. Everything lands in ``<workdir>/eval/``, each file written atomically:

  results.md, results.csv   the means, one row per (scale, method);
  results.json              the settings, the means and every per-image value;
  metrics_vs_scale.png      PSNR and SSIM against the scale (both protocols), one line per method,
                            the training range (1, s_max] shaded;
  crops_x<scale>.png        centre crops, rows images, columns LR-bicubic | operator | NeurOp-Diff
                            | HR (the methods evaluated).

The settings are ``config.evaluate`` (``default_evaluate_config``); a config without that block
evaluates with the defaults.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import os
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging
from tqdm.auto import tqdm

from neurop_jax.data import build_sources, eval_batches
from neurop_jax.data.sources import Subset, evenly_spaced
from neurop_jax.diffusion.samplers import SAMPLER_NAMES, SKIPS, Sampling
from neurop_jax.errors import InputError
from neurop_jax.evaluation.config import METHODS, default_evaluate_config
from neurop_jax.evaluation.metrics import PROTOCOLS, bicubic, measure
from neurop_jax.inference.api import image_key, prior_only, super_resolve
from neurop_jax.inference.run import Run, load_run
from neurop_jax.io.atomic import atomic_path, write_text
from neurop_jax.io.images import image_grid, write_image
LABELS = {"bicubic": "Bicubic", "operator": "Operator (SRNO)", "diffusion": "NeurOp-Diff"}
METRICS = ("psnr_paper", "ssim_paper", "psnr_rs", "ssim_rs", "lpips")
HEADERS = {"psnr_paper": "PSNR paper (dB)", "ssim_paper": "SSIM paper", "psnr_rs": "PSNR rs (dB)",
           "ssim_rs": "SSIM rs", "lpips": "LPIPS"}
SPLITS = ("test", "val")


def evaluate_settings(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """``config.evaluate`` over ``default_evaluate_config()``, checked; raises ValueError if bad."""
  settings = default_evaluate_config()
  if "evaluate" in config:
    settings.update(config.evaluate.to_dict())
  scales = tuple(settings.scales)
  if not scales:
    raise InputError("config.evaluate.scales is empty: give at least one scale, e.g. (4.0,)")
  for scale in scales:
    if isinstance(scale, bool) or not isinstance(scale, (int, float)):
      raise InputError(f"config.evaluate.scales holds {scale!r}: scales must be numbers")
    if not math.isfinite(scale) or scale <= 1:
      raise InputError(f"config.evaluate.scales holds {scale}: every scale must be a finite number "
                       "> 1 (NeurOp-Diff upsamples)")
  settings.scales = tuple(float(s) for s in scales)
  unknown = [m for m in settings.methods if m not in METHODS]
  if unknown or not settings.methods:
    raise InputError(f"config.evaluate.methods={tuple(settings.methods)}: choose a non-empty "
                     f"subset of {METHODS}")
  if settings.split not in SPLITS:
    raise InputError(f"config.evaluate.split must be one of {SPLITS}, got {settings.split!r}")
  if settings.which not in ("best", "latest"):
    raise InputError(f"config.evaluate.which must be 'best' or 'latest', got {settings.which!r}")
  if settings.sampler and settings.sampler not in SAMPLER_NAMES:
    raise InputError(f"config.evaluate.sampler must be '' (the run's) or one of {SAMPLER_NAMES}, "
                     f"got {settings.sampler!r}")
  if settings.skip and settings.skip not in SKIPS:
    raise InputError(f"config.evaluate.skip must be '' or one of {tuple(SKIPS)}, got "
                     f"{settings.skip!r}")
  if settings.steps < 0 or settings.num_images < 0 or settings.crop_images < 0:
    raise InputError("config.evaluate: steps (0: the run's), num_images and crop_images must be "
                     ">= 0")
  if settings.eta < 0 and settings.eta != -1:
    raise InputError(f"config.evaluate.eta must be >= 0 (or -1: the run's), got {settings.eta}")
  strength = settings.get("strength", -1.0)
  if strength != -1 and not 0 <= strength <= 1:
    raise InputError(f"config.evaluate.strength must be in [0, 1] (or -1: the run's), got "
                     f"{strength}")
  if settings.get("consistency", -1) not in (-1, 0, 1):
    raise InputError("config.evaluate.consistency must be 1 (on), 0 (off) or -1 (the run's), got "
                     f"{settings.consistency!r}")
  if settings.crop_size < 1:
    raise InputError(f"config.evaluate.crop_size must be >= 1, got {settings.crop_size}")
  return settings


def centre_crop(image: np.ndarray, size: int) -> np.ndarray:
  """The centre ``min(size, H) x min(size, W)`` pixels of ``(H, W, 3)``."""
  h, w = min(size, image.shape[0]), min(size, image.shape[1])
  top, left = (image.shape[0] - h) // 2, (image.shape[1] - w) // 2
  return image[top:top + h, left:left + w]


def sampling_of(run: Run, settings: ml_collections.ConfigDict) -> dict:
  """The sampler options of ``settings`` for ``super_resolve`` ('' / 0 / -1 fields: None, the
  run's)."""
  return dict(sampler=settings.sampler or None, steps=settings.steps or None,
              skip=settings.skip or None, eta=None if settings.eta == -1 else settings.eta,
              strength=None if settings.get("strength", -1.0) == -1 else settings.strength,
              consistency=None if settings.get("consistency", -1) == -1 else
              bool(settings.consistency))


def _scale_tag(scale: float, s_max: float) -> str:
  return f"x{scale:g}" + (" (OOD)" if scale > s_max else "")


def results_markdown(report: dict[str, Any]) -> str:
  """``results.md``: what was evaluated and one table of means, rows scale x method."""
  s, sampling = report["settings"], report["sampling"]
  lines = [
      f"# Evaluation of {report['workdir']}",
      "",
      f"{report['num_images']} images of the {s['split']} split, checkpoint '{s['which']}'; "
      f"NeurOp-Diff: {sampling['sampler']}, {sampling['steps']} steps ({sampling['skip']}), eta "
      f"{sampling['eta']:g}, strength {sampling.get('strength', 1.0):g}"
      f"{', consistency with the input' if sampling.get('consistency') else ''}, seed {s['seed']}. "
      f"Training scales (1, {report['s_max']:g}]; OOD: out of distribution.",
      "PSNR/SSIM 'paper': RGB, whole image; 'rs': Y channel (BT.601), border crop round(scale). "
      "LPIPS: AlexNet v0.1, RGB, whole image (lower is better).",
  ]
  if report["skipped"]:
    lines.append(f"Skipped: {'; '.join(report['skipped'])}.")
  metrics = [m for m in METRICS if any(m in row for row in report["results"])]
  header = ["scale", "method"] + [HEADERS[m] for m in metrics]
  lines += ["", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  for row in report["results"]:
    cells = [_scale_tag(row["scale"], report["s_max"]), LABELS[row["method"]]]
    cells += [f"{row[m]:.4f}" if m.startswith(("ssim", "lpips")) else f"{row[m]:.2f}"
              for m in metrics]
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


def results_csv(report: dict[str, Any]) -> str:
  """``results.csv``: ``scale, method, images`` and the means of ``METRICS`` computed."""
  metrics = [m for m in METRICS if any(m in row for row in report["results"])]
  out = io.StringIO()
  writer = csv.DictWriter(out, ["scale", "method", "images"] + metrics, lineterminator="\n")
  writer.writeheader()
  for row in report["results"]:
    writer.writerow({k: row[k] for k in ["scale", "method", "images"] + metrics})
  return out.getvalue()


def plot_metrics(report: dict[str, Any], path: Path) -> None:
  """PSNR and SSIM (columns) per protocol (rows) against the scale: a PNG at ``path``, atomic."""
  from matplotlib.figure import Figure  # The Agg canvas: no pyplot, no global backend change.

  methods = list(dict.fromkeys(row["method"] for row in report["results"]))
  fig = Figure(figsize=(10, 7), layout="constrained")
  axes = fig.subplots(2, 2, sharex=True)
  for i, protocol in enumerate(PROTOCOLS):
    for j, metric in enumerate(("psnr", "ssim")):
      ax, key = axes[i, j], f"{metric}_{protocol}"
      ax.axvspan(1.0, report["s_max"], color="0.9",
                 label=f"training scales (1, {report['s_max']:g}]")
      for method in methods:
        rows = [r for r in report["results"] if r["method"] == method]
        ax.plot([r["scale"] for r in rows], [r[key] for r in rows], marker="o",
                label=LABELS[method])
      ax.set_title(f"{metric.upper()} ({protocol} protocol)")
      ax.set_ylabel(f"{metric.upper()}" + (" (dB)" if metric == "psnr" else ""))
      ax.set_xlim(1.0, max(report["settings"]["scales"]) + 0.5)
      ax.grid(alpha=0.3)
      if i == 1:
        ax.set_xlabel("scale")
  fig.legend(*axes[0, 0].get_legend_handles_labels(), loc="outside lower center",
             ncols=len(methods) + 1)
  with atomic_path(path) as tmp:
    fig.savefig(tmp, format="png", dpi=100)


def _means(per_image: dict[str, dict[str, list[float]]], scale: float) -> list[dict[str, Any]]:
  return [{"scale": scale, "method": method, "images": len(next(iter(values.values()))),
           **{k: float(np.mean(v)) for k, v in values.items()}}
          for method, values in per_image.items()]


def evaluate_image(run: Run, lr: np.ndarray, hr: np.ndarray, scale: float, rng: jax.Array, *,
                   methods: list[str], sampling: Sampling,
                   with_lpips: bool) -> tuple[dict[str, jax.Array], dict[str, dict[str, float]]]:
  """The outputs of each method on one image and their metrics.

  ``lr`` ``(1, h, w, C)`` and ``hr`` ``(1, H, W, C)`` NumPy in [0, 1]; ``methods`` among 'bicubic',
  'operator', 'diffusion' (drawn with ``rng`` and ``sampling``). Returns ``(outputs, metrics)``:
  ``{method: (1, H, W, C)}`` float32 device arrays in [0, 1], and ``{method: {metric: value}}``
  (``measure`` under every protocol). The copies are explicit: ``lr``, ``hr`` and the bicubic
  image to the device, the metrics (scalars) back; nothing else crosses (tested under
  ``jax.transfer_guard('disallow')``).
  """
  hr_hw = hr.shape[1:3]
  hr_device, bicubic_device = jax.device_put((hr, bicubic(lr, hr_hw)))
  outputs = {"bicubic": bicubic_device}
  if "operator" in methods:
    outputs["operator"] = prior_only(run, lr, out_shape=hr_hw)
  if "diffusion" in methods:
    outputs["diffusion"] = super_resolve(run, lr, out_shape=hr_hw, rng=rng,
                                         **dataclasses.asdict(sampling))
  metrics = {method: measure(outputs[method], hr_device, scale, tuple(PROTOCOLS), with_lpips)
             for method in methods}
  return outputs, metrics


def evaluate(config: ml_collections.ConfigDict, workdir: str | os.PathLike,
             run: Run | None = None) -> dict[str, Any]:
  """Evaluates the run in ``workdir`` with ``config.evaluate``; writes ``<workdir>/eval/``.

  Args:
    config: the run's config: ``data`` (images, split, ``s_max``) and ``evaluate``
      (``default_evaluate_config`` fields; the defaults if absent).
    workdir: a training workdir with at least a stage-1 checkpoint; the results go to its eval/.
    run: the run to evaluate; None reads it from ``workdir`` (``load_run(workdir,
      config.evaluate.which)``).

  Returns:
    The content of ``results.json``: ``workdir``, ``settings``, ``sampling`` (the sampler, steps,
    spacing and eta used: the run's unless the settings name them), ``s_max``, ``num_images``,
    ``names`` (the images), ``skipped`` (methods not run, with the reason), ``results`` (one dict
    per (scale, method): ``scale``, ``method``, ``images`` and the mean of each metric) and
    ``per_image`` (``{'x<scale>': {method: {metric: [value per image]}}}``).

  Raises:
    InputError: on bad settings (e.g. a scale <= 1 or not finite) or an empty split;
      ``MissingInputError`` when ``workdir`` holds no checkpoint.
  """
  settings = evaluate_settings(config)
  run = load_run(workdir, which=settings.which) if run is None else run
  methods = list(settings.methods)
  skipped = []
  if "diffusion" in methods and not run.has_unet:
    methods.remove("diffusion")
    skipped.append("NeurOp-Diff (the workdir has no stage-2 checkpoint)")
    logging.warning("evaluate: %s has no stage-2 (diffusion) checkpoint; NeurOp-Diff is skipped",
                    workdir)
  sampling = run.sampling_for(**sampling_of(run, settings))
  source = build_sources(config.data, channels=run.channels)[settings.split]
  source = Subset(source, evenly_spaced(len(source), settings.num_images))
  if not len(source):
    raise InputError(f"the {settings.split} split of config.data has no images")
  key = jax.random.key(settings.seed)
  out_dir = Path(workdir) / "eval"
  out_dir.mkdir(parents=True, exist_ok=True)

  results, per_image_all, names = [], {}, []
  bar = tqdm(total=len(settings.scales) * len(source), desc="evaluate", unit="image",
             dynamic_ncols=True)
  for scale_index, scale in enumerate(settings.scales):
    bar.set_postfix(scale=f"{scale:g}")
    per_image = {m: {} for m in methods}
    rows = []
    for index, batch in enumerate(eval_batches(source, config.data, scale, batch_size=1)):
      hr = batch["hr"]
      outputs, metrics = evaluate_image(run, batch["lr"], hr, scale, image_key(key, index),
                                        methods=methods, sampling=sampling,
                                        with_lpips=settings.lpips)
      for method in methods:
        for name, value in metrics[method].items():
          per_image[method].setdefault(name, []).append(value)
      if index < settings.crop_images:
        row = jax.device_get([outputs["bicubic"]] + [outputs[m] for m in ("operator", "diffusion")
                                                     if m in methods])
        rows.append([centre_crop(im[0], settings.crop_size) for im in row + [hr]])
      if scale_index == 0:
        names.append(str(batch["name"][0]))
      bar.update(1)
    results += _means(per_image, scale)
    per_image_all[f"x{scale:g}"] = per_image
    if rows:
      write_image(out_dir / f"crops_x{scale:g}.png", image_grid(rows))
  bar.close()

  report = {"workdir": str(Path(workdir).absolute()), "settings": settings.to_dict(),
            "sampling": dataclasses.asdict(sampling), "s_max": float(config.data.s_max),
            "num_images": len(source), "names": names, "skipped": skipped, "results": results,
            "per_image": per_image_all}
  write_text(out_dir / "results.json", json.dumps(report, indent=1) + "\n")
  write_text(out_dir / "results.csv", results_csv(report))
  markdown = results_markdown(report)
  write_text(out_dir / "results.md", markdown)
  plot_metrics(report, out_dir / "metrics_vs_scale.png")
  logging.info("evaluation written to %s\n%s", out_dir, markdown)
  return report
