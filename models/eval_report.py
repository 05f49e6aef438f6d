"""Scoring an `models.evaluation.Evaluation` and writing its report, as the paper's Table 2.

- DINO and CLIP-I (`models.metrics`): each painted image's region (its background mask's box)
  against every reference photo of its subject (the box crops), averaged over those pairs; a
  subject's score is the mean over backgrounds, a method's the mean over subjects, in percent
  (cosine x 100), with a 95 % Student-t interval over subjects: mean ± t(0.975, n - 1) · s / √n.
- FID (`models.metrics.fid`) per method: the painted regions against every subject's reference
  crops; null, with the reason, when either set has fewer than 2 images. Few images bias FID
  upwards: compare FIDs of one bench only.

Scores are always computed from the PNG files on disk, so a resumed run scores the same pixels.
Written to OUT: report.md, report.json, per_subject.md and grid.png (one row per (subject,
background): the room, the room with its mask grey, the reference crop, then one result per method).
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from models.eval_bench import BenchSubject
from models.evaluation import Evaluation, WorkItem, png_bytes, write_atomic
from models.metric_models import ImageEmbedder, InceptionFeatures
from models.metrics import clip_i_similarity, crop_region, dino_similarity, fid

THUMB = 128  # grid cell side in pixels
GREY = (128, 128, 128)
CI_METHOD = "95 % Student-t interval over subjects: mean ± t(0.975, n-1) · s / √n (s: the sample "
CI_METHOD += "standard deviation of the per-subject means); none with one subject"
# t(0.975, df) for df = 1..30; beyond, the Cornish-Fisher expansion (error < 1e-4)
T_975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145)
T_975 += (2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048)
T_975 += (2.045, 2.042)
METRICS = (("dino", "DINO"), ("clip_i", "CLIP-I"))


@dataclass
class MetricModels:
    dino: ImageEmbedder
    clip: ImageEmbedder
    inception: InceptionFeatures


def t_quantile_975(df: int) -> float:
    if df < 1:
        raise ValueError("a t interval needs at least 2 values")
    if df <= len(T_975):
        return T_975[df - 1]
    z = 1.959963985
    return (
        z
        + (z**3 + z) / (4 * df)
        + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)
        + (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / (384 * df**3)
    )


def summarize(values: list[float]) -> dict[str, Any]:
    """Mean, 95 % t interval (None for one value) and count of per-subject scores."""
    mean = statistics.fmean(values)
    if len(values) < 2:
        return {"mean": mean, "ci95": None, "half_width": None, "n_subjects": len(values)}
    half = t_quantile_975(len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))
    return {"mean": mean, "ci95": [mean - half, mean + half], "half_width": half, "n_subjects": len(values)}


def score(evaluation: Evaluation, models: MetricModels) -> dict[str, Any]:
    """{"methods": {method: table row}, "per_subject": {method: {subject: scores}}} from the images."""
    bench = evaluation.bench
    references = {s.name: evaluation.references(s) for s in bench.subjects}  # one list per subject
    masks = {b.name: b.mask for b in bench.backgrounds}
    real = [crop for crops in references.values() for crop in crops]
    methods: dict[str, Any] = {}
    per_subject: dict[str, Any] = {}
    for method in evaluation.settings.methods:
        items = [item for item in evaluation.items() if item.method == method]
        images = [_read_image(evaluation.image_path(item)) for item in items]
        item_masks = [masks[item.background] for item in items]
        refs = [references[item.subject] for item in items]
        scores = {
            "dino": dino_similarity(models.dino, images, refs, masks=item_masks),
            "clip_i": clip_i_similarity(models.clip, images, refs, masks=item_masks),
        }
        subjects: dict[str, Any] = {}
        for index, item in enumerate(items):
            entry = subjects.setdefault(item.subject, {"backgrounds": {}})
            entry["backgrounds"][item.background] = {k: 100 * v[index] for k, v in scores.items()}
        for entry in subjects.values():
            for key, _ in METRICS:
                entry[key] = statistics.fmean(b[key] for b in entry["backgrounds"].values())
        per_subject[method] = subjects
        row = {key: summarize([s[key] for s in subjects.values()]) for key, _ in METRICS}
        regions = [crop_region(i, m) for i, m in zip(images, item_masks, strict=True)]
        row["fid"] = _fid(models.inception, real, regions)
        methods[method] = row
    return {"methods": methods, "per_subject": per_subject}


def _fid(inception: InceptionFeatures, real: list[Image.Image], generated: list[Image.Image]) -> dict:
    counts = {"real": len(real), "generated": len(generated)}
    if min(len(real), len(generated)) < 2:
        reason = f"FID needs at least 2 images per set: {len(real)} reference crops, {len(generated)} painted"
        return {"value": None, "reason": reason, **counts}
    return {"value": fid(inception, real, generated), "reason": None, **counts}


def _read_image(path: Path) -> Image.Image:
    with Image.open(path) as image:
        return image.convert("RGB")


# --- the report ----------------------------------------------------------------------------------


def write_report(
    evaluation: Evaluation, models: MetricModels, *, extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Score the painted images and write report.json, report.md, per_subject.md and grid.png to
    the evaluation's folder; returns report.json's content. `extra`: more for its "run" entry."""
    report = score(evaluation, models)
    bench = evaluation.bench
    report.update(
        confidence_interval=CI_METHOD,
        units={"dino": "percent (cosine x 100)", "clip_i": "percent (cosine x 100)", "fid": "FID"},
        settings={
            **evaluation.settings.recorded(),
            "methods": list(evaluation.settings.methods),
            "ablations": evaluation.settings.ablations(),
            "seeds": "training: stable_seed(seed, 'train', subject); painting: "
            "stable_seed(seed, 'paint', subject, background), the same in every method",
        },
        models={
            "base_model": evaluation.base.model_id,
            "base_weights_hash": evaluation.base.weights_hash,
            "baseline": "the base model as loaded (its weights hash above), no adapter, painted from "
            "the subject's reference crop",
            "dino": models.dino.name,
            "clip": models.clip.name,
            "inception": models.inception.name,
        },
        bench={
            "folder": str(bench.folder),
            "digest": bench.digest,
            "subjects": {s.name: s.photo_names for s in bench.subjects},
            "backgrounds": [b.name for b in bench.backgrounds],
            "skipped": bench.skipped,
            "reference_photo": {s.name: s.photo_names[evaluation.reference(s)[0]] for s in bench.subjects},
        },
        training=evaluation.training_summaries(),
        run=extra or {},
    )
    out = evaluation.out_dir
    write_atomic(out / "report.json", json.dumps(report, indent=2, sort_keys=True).encode())
    write_atomic(out / "report.md", report_markdown(report).encode())
    write_atomic(out / "per_subject.md", per_subject_markdown(report).encode())
    grid = make_grid(evaluation)
    grid_path = out / "grid.png"
    write_atomic(grid_path, png_bytes(grid))
    return report


def _cell(summary: dict[str, Any]) -> str:
    half = summary["half_width"]
    return f"{summary['mean']:.1f}" + ("" if half is None else f" ± {half:.1f}")


def report_markdown(report: dict[str, Any]) -> str:
    settings, models, bench = report["settings"], report["models"], report["bench"]
    ablations = settings["ablations"]
    lines = [
        "# Evaluation",
        "",
        f"{len(bench['subjects'])} subjects x {len(bench['backgrounds'])} backgrounds, "
        f"bench `{bench['folder']}`.",
        "",
        "| method | DINO | CLIP-I | FID |",
        "| --- | --- | --- | --- |",
    ]
    for method, row in report["methods"].items():
        fid_value = row["fid"]["value"]
        fid_cell = "n/a" if fid_value is None else f"{fid_value:.4g}"  # 160.6, and 0.006016 (tiny)
        lines.append(f"| {method} | {_cell(row['dino'])} | {_cell(row['clip_i'])} | {fid_cell} |")
    lines += ["", f"DINO and CLIP-I in percent; ± is the {report['confidence_interval']}.", ""]
    lines += [
        f"- FID of {m}: {r['fid']['reason']}" for m, r in report["methods"].items() if r["fid"]["reason"]
    ]
    lines += [
        f"- baseline: {models['baseline']}",
        f"- base model `{models['base_model']}` (weights {models['base_weights_hash'][:12]}); "
        f"DINO `{models['dino']}`, CLIP `{models['clip']}`, Inception `{models['inception']}`",
        f"- training: {settings['train']['steps']} steps, rank {settings['train']['rank']}, batch "
        f"{settings['train']['batch_size']}, lr {settings['train']['learning_rate']}; reference "
        f"augmentation {'on' if ablations['reference_augmentation'] else 'off'}, mask augmentation "
        f"{'on' if ablations['mask_augmentation'] else 'off'}",
        f"- painting: {settings['paint_steps']} {settings['scheduler']} steps, "
        f"guidance {settings['guidance_scale']}",
        f"- seeds: {settings['seeds']} (seed {settings['seed']})",
        "- grid.png: per row, a subject in a background: the room, its mask (grey), the reference "
        f"crop, then {', '.join(report['methods'])}",
    ]
    if report["run"].get("init_unet"):
        lines.append(
            f"- every method starts from the full fine-tune `{report['run']['init_unet']}` (--init-unet)"
        )
    lines += [f"- skipped: {message}" for message in bench["skipped"]]
    return "\n".join(lines) + "\n"


def per_subject_markdown(report: dict[str, Any]) -> str:
    lines = ["# Per subject", "", "| subject | method | DINO | CLIP-I |", "| --- | --- | --- | --- |"]
    for method, subjects in report["per_subject"].items():
        for subject, entry in subjects.items():
            lines.append(f"| {subject} | {method} | {entry['dino']:.1f} | {entry['clip_i']:.1f} |")
    lines += ["", "Each is the mean over backgrounds of the painted region against every reference crop.", ""]
    return "\n".join(lines)


# --- the grid ------------------------------------------------------------------------------------


def thumbnail(image: Image.Image, side: int = THUMB) -> Image.Image:
    """The image fitted into a side x side square (aspect kept), centred on white."""
    scale = side / max(image.size)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    fitted = image.convert("RGB").resize(size, Image.Resampling.LANCZOS)
    cell = Image.new("RGB", (side, side), (255, 255, 255))
    cell.paste(fitted, ((side - fitted.width) // 2, (side - fitted.height) // 2))
    return cell


def make_grid(evaluation: Evaluation) -> Image.Image:
    """Rows (subject, background); columns room, masked room, reference crop, each method's result."""
    bench, methods = evaluation.bench, evaluation.settings.methods
    rows = [(s, b) for s in bench.subjects for b in bench.backgrounds]
    grid = Image.new("RGB", ((3 + len(methods)) * THUMB, len(rows) * THUMB), (255, 255, 255))
    for r, (subject, background) in enumerate(rows):
        masked = np.array(background.room)
        masked[background.mask] = GREY
        cells = [background.room, Image.fromarray(masked), _reference_crop(evaluation, subject)]
        cells += [
            _read_image(evaluation.image_path(WorkItem(m, subject.name, background.name))) for m in methods
        ]
        for c, image in enumerate(cells):
            grid.paste(thumbnail(image), (c * THUMB, r * THUMB))
    return grid


def _reference_crop(evaluation: Evaluation, subject: BenchSubject) -> Image.Image:
    return evaluation.references(subject)[evaluation.reference(subject)[0]]
