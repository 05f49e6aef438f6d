"""LoRA vs full fine-tuning: trainable parameters, their fraction of the UNet, peak memory, step time.

Two UNet sizes: `tiny` (models.tiny, 64 px crops) and `pbe` (Paint-by-Example's real UNet config,
models.pbe_config, ~860M parameters, random weights since nothing is downloaded; with tiny's VAE
and a tiny 768-d image encoder, whose frozen forward passes are negligible next to the UNet's, at
128 px crops = 32x32 latents). Each configuration runs `models.training.train_subject` in a fresh
subprocess, so its peak RSS (`ru_maxrss`) is its own; torch's allocations are invisible to tracemalloc.

    PYTHONPATH=. .venv/bin/python bench/bench_training.py --json /tmp/training.json   # ~10 min, ~17 GB RAM

Prints a Markdown table (for BENCHMARKS.md) and, with --json, writes the raw numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = [("tiny", "lora"), ("tiny", "full"), ("pbe", "lora"), ("pbe", "full")]
FULL_PBE_NEEDS_GIB = 17.0  # fp32 weights + grads + 2 AdamW moments of 860M params, plus activations


def build_base(size: str) -> Any:
    import torch
    from diffusers import UNet2DConditionModel

    from models.base_model import BaseModel, base_weights_hash, load_base_model
    from models.pbe_config import PBE_UNET_CONFIG
    from models.tiny import build_tiny_components, ensure_tiny_model

    if size == "tiny":
        return load_base_model("tiny", tiny_dir=ensure_tiny_model(), device="cpu")
    parts = build_tiny_components(embed_dim=PBE_UNET_CONFIG["cross_attention_dim"])
    torch.manual_seed(0)
    unet = UNet2DConditionModel(**PBE_UNET_CONFIG).eval().requires_grad_(False)
    for module in (parts["vae"], parts["image_encoder"]):
        module.eval().requires_grad_(False)  # type: ignore[attr-defined]
    return BaseModel(
        model_id="pbe-random",
        folder=Path("."),
        unet=unet,
        vae=parts["vae"],  # type: ignore[arg-type]
        image_encoder=parts["image_encoder"],  # type: ignore[arg-type]
        feature_extractor=parts["feature_extractor"],  # type: ignore[arg-type]
        scheduler_config=dict(parts["scheduler"].config),  # type: ignore[attr-defined]
        weights_hash=base_weights_hash(unet, parts["image_encoder"]),  # type: ignore[arg-type]
        device=torch.device("cpu"),
        dtype=torch.float32,
    )


def photos(count: int = 4) -> list[Any]:
    import numpy as np
    from PIL import Image

    from models.training_pairs import SubjectPhoto

    rng = np.random.default_rng(0)
    return [
        SubjectPhoto(Image.fromarray(rng.integers(0, 256, (160, 200, 3), dtype=np.uint8)), (40, 30, 150, 130))
        for _ in range(count)
    ]


def max_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # KiB on Linux


def run_one(size: str, mode: str, steps: int, batch_size: int) -> dict[str, Any]:
    """One configuration, in this (fresh) process."""
    import torch

    from models.training import TrainProgress, TrainSettings, train_subject

    base = build_base(size)
    rss_model = max_rss_gib()
    stamps: list[float] = []
    rss_training: list[float] = []

    def progress(p: TrainProgress) -> None:
        stamps.append(time.perf_counter())
        rss_training.append(max_rss_gib())  # before the artifact is written

    settings = TrainSettings(
        steps=steps,
        batch_size=batch_size,
        mode=mode,
        resolution=None if size == "tiny" else 128,  # type: ignore[arg-type]
    )
    started = time.perf_counter()
    result = train_subject(base, photos(), settings, progress=progress)
    step_times = [b - a for a, b in zip([started, *stamps[:-1]], stamps, strict=True)]
    summary = result.summary
    return {
        "size": size,
        "mode": mode,
        "steps": steps,
        "batch_size": batch_size,
        "latent": (settings.resolution or base.resolution) // base.vae_scale_factor,
        "trainable_params": summary.trainable_params,
        "unet_params": summary.unet_params,
        "trainable_fraction": summary.trainable_fraction,
        "artifact_bytes": summary.artifact_bytes,
        # the first step pays one-off costs (allocator warm-up, optimizer state creation)
        "step_s_median": statistics.median(step_times[1:] or step_times),
        "first_step_s": step_times[0],
        "rss_model_gib": rss_model,
        "rss_training_gib": rss_training[-1],
        "rss_peak_gib": max_rss_gib(),
        "threads": torch.get_num_threads(),
    }


def available_gib() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 1024**2
    return float("inf")


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| UNet | mode | trainable params | of the UNet | artifact | step (median) | peak RSS training "
        "| peak RSS with the artifact written | RSS of the model alone |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        if "skipped" in r:
            lines.append(f"| {r['size']} | {r['mode']} | skipped: {r['skipped']} | | | | | | |")
            continue
        lines.append(
            f"| {r['size']} ({r['unet_params'] / 1e6:.1f}M, {r['latent']}x{r['latent']} latents, batch "
            f"{r['batch_size']}) | {r['mode']} | {r['trainable_params']:,} | {r['trainable_fraction']:.3%} | "
            f"{r['artifact_bytes'] / 1e6:.2f} MB | {r['step_s_median']:.3f} s | "
            f"{r['rss_training_gib']:.2f} GiB | {r['rss_peak_gib']:.2f} GiB | {r['rss_model_gib']:.2f} GiB |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--json", type=Path, help="write the raw numbers here")
    parser.add_argument("--tiny-steps", type=int, default=10)
    parser.add_argument("--pbe-steps", type=int, default=3)
    parser.add_argument("--only", nargs=2, metavar=("SIZE", "MODE"), help="run one configuration (internal)")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=1)
    args = parser.parse_args()

    if args.only:
        print(json.dumps(run_one(args.only[0], args.only[1], args.steps, args.batch_size)))
        return

    rows = []
    for size, mode in CONFIGS:
        steps, batch = (args.tiny_steps, 4) if size == "tiny" else (args.pbe_steps, 1)
        if size == "pbe" and mode == "full" and available_gib() < FULL_PBE_NEEDS_GIB:
            rows.append({"size": size, "mode": mode, "skipped": f"{available_gib():.1f} GiB free"})
            continue
        command = [
            sys.executable,
            __file__,
            "--only",
            size,
            mode,
            "--steps",
            str(steps),
            "--batch-size",
            str(batch),
        ]
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        }
        done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            rows.append({"size": size, "mode": mode, "skipped": f"failed ({done.stderr.strip()[-300:]})"})
        else:
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    print(table(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
