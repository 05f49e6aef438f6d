"""Batching: 4 preview requests painted one after another, as one batch for one adapter, and as one
mixed batch of 4 different adapters (`Painter.paint_mixed`: per-row LoRA from the AdapterBank).

  tiny   the tiny Paint-by-Example model (64 px crops, 16x16 latents), 4 steps
  real   a UNet of Paint-by-Example's real size (860M parameters, random weights) at its real
         latent size 64x64, with the tiny VAE (factor 4, so 256 px crops) and a tiny CLIP tower
         projecting to the real 768-d embedding; 1 step by default. Only the UNet's cost matters here.

Classifier-free guidance is on (guidance 5), so a batch of 4 is a UNet batch of 8. Each repetition
runs the three variants back to back, so they share the machine's noise. Prints a markdown table
for BENCHMARKS.md.

    PYTHONPATH=. .venv/bin/python bench/bench_batching.py                 # tiny and real, ~5 min on 2 cores
    PYTHONPATH=. .venv/bin/python bench/bench_batching.py --sizes tiny    # seconds
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from diffusers import UNet2DConditionModel
from PIL import Image

from models import BaseModel, Painter, PaintRequest, base_weights_hash, load_base_model, write_adapter
from models.lora import lora_parameters, lora_spec_of
from models.pbe_config import PBE_UNET_CONFIG
from models.tiny import build_tiny_components

N_REQUESTS = 4


def real_size_base(workdir: Path) -> BaseModel:
    parts = build_tiny_components(embed_dim=PBE_UNET_CONFIG["cross_attention_dim"])
    torch.manual_seed(0)
    unet = UNet2DConditionModel(**PBE_UNET_CONFIG).eval().requires_grad_(False)
    vae, encoder = parts["vae"].eval(), parts["image_encoder"].eval()  # type: ignore[attr-defined]
    return BaseModel(
        model_id="bench-real-unet",
        folder=workdir,
        unet=unet,
        vae=vae,  # type: ignore[arg-type]
        image_encoder=encoder,  # type: ignore[arg-type]
        feature_extractor=parts["feature_extractor"],  # type: ignore[arg-type]
        scheduler_config=dict(parts["scheduler"].config),  # type: ignore[attr-defined]
        weights_hash=base_weights_hash(unet, encoder),
        device=torch.device("cpu"),
        dtype=torch.float32,
    )


def requests(seed: int) -> list[PaintRequest]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(N_REQUESTS):
        width, height = 640 + 16 * i, 480
        room = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
        mask = np.zeros((height, width), bool)
        mask[100 + 10 * i : 300, 150 : 400 + 20 * i] = True
        out.append(PaintRequest(room, mask, seed=seed * 10 + i))
    return out


def _adapter(painter: Painter, seed: int) -> bytes:
    generator = torch.Generator().manual_seed(seed)
    lora = {
        k: torch.randn(tuple(p.shape), generator=generator) * 0.01
        for k, p in lora_parameters(painter.base.unet).items()
    }
    return write_adapter(
        lora,
        reference_embedding=torch.randn(1, painter.base.image_encoder.proj_size, generator=generator),
        base_model_id=painter.base.model_id,
        base_weights_hash=painter.base.weights_hash,
        spec=lora_spec_of(painter.base.unet),
    )


def bench(painter: Painter, steps: int, reps: int) -> dict[str, object]:
    products = [f"product-{i}" for i in range(N_REQUESTS)]
    for i, product in enumerate(products):
        painter.adapters.put(product, _adapter(painter, i))
    batch = requests(1)

    def sequential() -> list[Image.Image]:
        return [painter.paint([r], adapter_id=products[0], steps=steps)[0] for r in batch]

    def batched() -> list[Image.Image]:
        return painter.paint(batch, adapter_id=products[0], steps=steps)

    def mixed() -> list[Image.Image]:
        return painter.paint_mixed(batch, products, steps=steps)  # type: ignore[return-value]

    variants = {"sequential": sequential, "batched": batched, "mixed": mixed}
    for fn in variants.values():  # warm-up: first-call allocations, adapter activation, bank fills
        fn()
    times: dict[str, list[float]] = {name: [] for name in variants}
    outputs: dict[str, list[Image.Image]] = {}
    for _ in range(reps):
        for name, fn in variants.items():
            started = time.perf_counter()
            outputs[name] = fn()
            times[name].append(time.perf_counter() - started)
    alone = [painter.paint([r], adapter_id=p, steps=steps)[0] for r, p in zip(batch, products, strict=True)]

    def max_diff(a: list[Image.Image], b: list[Image.Image]) -> int:
        return max(
            int(np.abs(np.asarray(x, int) - np.asarray(y, int)).max()) for x, y in zip(a, b, strict=True)
        )

    medians = {name: statistics.median(t) for name, t in times.items()}
    best = {name: min(t) for name, t in times.items()}
    return {
        "best_s": best,
        "best_ratio": best["sequential"] / best["batched"],
        "steps": steps,
        "reps": reps,
        "median_s": medians,
        "throughput_per_s": {name: N_REQUESTS / m for name, m in medians.items()},
        "ratio": medians["sequential"] / medians["batched"],
        "mixed_vs_batched_throughput": medians["batched"] / medians["mixed"],
        "mixed_vs_batched_best": best["batched"] / best["mixed"],
        "max_pixel_diff_batched_vs_sequential": max_diff(outputs["sequential"], outputs["batched"]),
        "max_pixel_diff_mixed_vs_each_alone": max_diff(outputs["mixed"], alone),
        "times_s": times,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", nargs="+", choices=["tiny", "real"], default=["tiny", "real"])
    parser.add_argument("--tiny-steps", type=int, default=4)
    parser.add_argument("--tiny-reps", type=int, default=7)
    parser.add_argument("--real-steps", type=int, default=1)
    parser.add_argument("--real-reps", type=int, default=2)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    workdir = Path(tempfile.mkdtemp(prefix="roomfit-bench-"))

    results = {}
    for size in args.sizes:
        started = time.perf_counter()
        if size == "tiny":
            base = load_base_model("tiny", tiny_dir=workdir / "tiny", device="cpu")
            steps, reps = args.tiny_steps, args.tiny_reps
        else:
            base = real_size_base(workdir)
            steps, reps = args.real_steps, args.real_reps
        print(f"{size}: base ready in {time.perf_counter() - started:.1f}s; painting...", flush=True)
        results[size] = bench(Painter(base), steps, reps)
        del base

    reps = ", ".join(f"{size}: {r['reps']}" for size, r in results.items())
    print()
    print(
        f"{N_REQUESTS} requests, guidance 5 (UNet batch {2 * N_REQUESTS} when batched), CPU fp32, "
        f"{args.threads} threads; medians over reps ({reps})"
    )
    print()
    print(
        "| model | steps | sequential | batch, 1 adapter | mixed batch, 4 adapters | batch vs sequential "
        "| mixed vs 1-adapter batch (throughput) | same, best times |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for size, r in results.items():
        med = r["median_s"]
        cells = [size, str(r["steps"]), *(f"{med[k]:.3f} s" for k in ("sequential", "batched", "mixed"))]
        cells += [f"{r['ratio']:.2f}x", f"{r['mixed_vs_batched_throughput']:.3f}x"]
        cells += [f"{r['mixed_vs_batched_best']:.3f}x"]
        print("| " + " | ".join(cells) + " |")
    for size, r in results.items():
        seq_diff = r["max_pixel_diff_batched_vs_sequential"]
        mixed_diff = r["max_pixel_diff_mixed_vs_each_alone"]
        print(
            f"{size}: largest pixel difference batched vs sequential {seq_diff}, "
            f"mixed vs each alone {mixed_diff}"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
