"""Adapter swap on a UNet of Paint-by-Example's real size, side by side in one run:

  roomfit    AdapterCache.activate(): validated adapters held in memory, one copy_ per tensor into
             slots resolved once
  peft       peft.utils.hotswap.hotswap_adapter_from_state_dict with the same tensors
  raw copy   a bare loop of copy_ of the same tensors into the same parameters (the floor)
  bank fill  AdapterBank.place() of a one-slot bank: the same copies into a slot of the bank that
             mixed-adapter batches paint from (models.adapter_bank)
  full load  a whole fine-tuned UNet (every weight materialised) from a safetensors folder:
             what a per-product full model costs: `from_pretrained` + a copy of every weight out
             of the file mapping, and `load_state_dict` into the existing UNet. The file is in the
             page cache (it was just written): the best case, no disk read.
  roomfit miss  for reference: reading, verifying (sha256) and preparing an adapter file from
             bytes, the cost of a memory-cache miss before its swap

Random weights, CPU, fp32 UNet. Each repetition alternates adapters A and B so every swap moves data.
Prints a markdown table (medians) for BENCHMARKS.md.

    PYTHONPATH=. .venv/bin/python bench/bench_adapter_swap.py              # real size, minutes
    PYTHONPATH=. .venv/bin/python bench/bench_adapter_swap.py --size tiny  # smoke test, seconds
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from diffusers import UNet2DConditionModel
from peft import LoraConfig
from peft.utils.hotswap import hotswap_adapter_from_state_dict
from safetensors.torch import load_file

from models import AdapterCache, base_weights_hash, write_adapter
from models.adapter_bank import AdapterBank
from models.lora import ADAPTER_NAME, LORA_TARGETS, inject_lora, lora_parameters, lora_spec_of
from models.pbe_config import PBE_UNET_CONFIG
from models.tiny import build_tiny_components


def build_unet(size: str) -> UNet2DConditionModel:
    torch.manual_seed(0)
    unet = UNet2DConditionModel(**PBE_UNET_CONFIG) if size == "real" else build_tiny_components()["unet"]
    return unet.eval().requires_grad_(False)  # type: ignore[union-attr]


def random_adapter(unet: torch.nn.Module, seed: int, weights_hash: str) -> bytes:
    generator = torch.Generator().manual_seed(seed)
    lora = {
        k: torch.randn(tuple(p.shape), generator=generator) * 0.01 for k, p in lora_parameters(unet).items()
    }
    return write_adapter(
        lora,
        reference_embedding=torch.randn(1, unet.config.cross_attention_dim, generator=generator),
        base_model_id="bench",
        base_weights_hash=weights_hash,
        spec=lora_spec_of(unet),
    )


def timed(fn: Callable[[int], object], reps: int, cleanup: Callable[[], object] | None = None) -> list[float]:
    """Seconds of each call fn(i), i = 0..reps-1, after a warm-up call fn(-1); `cleanup` runs untimed."""
    fn(-1)  # warm-up; -1 % 2 == 1, so the first timed call (0) really swaps
    times = []
    for i in range(reps):
        if cleanup is not None:
            cleanup()
        started = time.perf_counter()
        fn(i)
        times.append(time.perf_counter() - started)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", choices=["real", "tiny"], default="real")
    parser.add_argument("--rank", type=int, default=4)
    parser.add_argument("--reps", type=int, default=30, help="swaps per method (full load: --load-reps)")
    parser.add_argument("--load-reps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    started = time.perf_counter()
    unet = build_unet(args.size)
    n_params = sum(p.numel() for p in unet.parameters())
    print(f"built {args.size} UNet: {n_params / 1e6:.1f}M parameters in {time.perf_counter() - started:.1f}s")
    workdir = Path(tempfile.mkdtemp(prefix="roomfit-bench-"))
    # The "fine-tuned full model" of (c): the same architecture saved as a model folder.
    unet.save_pretrained(workdir / "finetuned-unet")
    weights_hash = base_weights_hash(unet)

    inject_lora(unet, rank=args.rank)
    slots = lora_parameters(unet)
    adapters = {name: random_adapter(unet, seed, weights_hash) for seed, name in enumerate("AB")}
    cache = AdapterCache(unet, base_model_id="bench", base_weights_hash=weights_hash, memory_bytes=1 << 30)
    for name, data in adapters.items():
        cache.put(name, data)

    # The same prepared tensors for every method (slot dtype and device).
    prepared = {name: cache.peek(name).tensors for name in "AB"}  # type: ignore[union-attr]
    slot_tensors = [p.data for p in slots.values()]
    peft_state = {
        name: {
            key.replace(".lora_A.", f".lora_A.{ADAPTER_NAME}.").replace(
                ".lora_B.", f".lora_B.{ADAPTER_NAME}."
            ): t
            for key, t in zip(slots, prepared[name], strict=True)
        }
        for name in "AB"
    }
    peft_config = LoraConfig(
        r=args.rank, lora_alpha=args.rank, target_modules=list(lora_spec_of(unet).targets)
    )

    def roomfit_swap(i: int) -> None:
        cache.activate("AB"[i % 2])

    def raw_copy(i: int) -> None:
        with torch.no_grad():
            for slot, tensor in zip(slot_tensors, prepared["AB"[i % 2]], strict=True):
                slot.copy_(tensor)

    bank = AdapterBank(unet, cache, slots=1)  # one slot: every place() of the other adapter refills it

    def bank_fill(i: int) -> None:
        bank.place(["AB"[i % 2]])

    def peft_swap(i: int) -> None:
        hotswap_adapter_from_state_dict(unet, peft_state["AB"[i % 2]], ADAPTER_NAME, peft_config)

    results: dict[str, list[float]] = {}
    results["roomfit"] = timed(roomfit_swap, args.reps)
    results["raw_copy"] = timed(raw_copy, args.reps)
    results["bank_fill"] = timed(bank_fill, args.reps)
    results["peft_hotswap"] = timed(peft_swap, args.reps)
    # correctness: after the loops every method leaves the same tensors in place
    cache.activate("A")
    assert all(torch.equal(s, t) for s, t in zip(slot_tensors, prepared["A"], strict=True))

    def full_from_pretrained(_: int) -> None:
        model = UNet2DConditionModel.from_pretrained(workdir / "finetuned-unet")
        # safetensors maps the file: without this the weights would be views of the page cache,
        # not a model in memory. A GPU worker would pay a host->device copy here instead.
        for param in model.parameters():
            param.data = param.data.clone()

    weights_file = next((workdir / "finetuned-unet").glob("*.safetensors"))
    target = build_unet(args.size)

    def full_load_state_dict(_: int) -> None:
        target.load_state_dict(load_file(weights_file))

    def roomfit_miss(i: int) -> None:
        cache.put(f"miss-{i}", adapters["AB"[i % 2]])
        cache.evict(f"miss-{i}")

    results["roomfit_miss_prepare"] = timed(roomfit_miss, args.reps)
    results["full_from_pretrained"] = timed(full_from_pretrained, args.load_reps, gc.collect)
    results["full_load_state_dict"] = timed(full_load_state_dict, args.load_reps, gc.collect)

    shutil.rmtree(workdir, ignore_errors=True)
    medians = {name: statistics.median(times) for name, times in results.items()}
    floor = medians["raw_copy"]
    adapter_bytes = len(adapters["A"])
    lora_params = sum(p.numel() for p in slots.values())
    cpu = platform.processor() or platform.machine()
    print()
    print(
        f"UNet: {args.size}, {n_params / 1e6:.0f}M parameters, fp32, CPU ({cpu}, "
        f"{args.threads} threads); LoRA r={args.rank} on {'/'.join(LORA_TARGETS)}: {len(slots)} tensors, "
        f"{lora_params:,} parameters; adapter file {adapter_bytes:,} bytes ({adapter_bytes / 2**20:.2f} MiB)"
    )
    print()
    print("| method | median | best | vs raw copy (medians) | vs roomfit (medians) | reps |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for name, value in medians.items():
        print(
            f"| {name} | {value * 1e3:.3f} ms | {min(results[name]) * 1e3:.3f} ms | {value / floor:.1f}x "
            f"| {value / medians['roomfit']:.1f}x | {len(results[name])} |"
        )
    print()
    print(
        f"roomfit / raw copy = {medians['roomfit'] / floor:.2f}x (goal <= 3x); "
        f"bank fill / raw copy = {medians['bank_fill'] / floor:.2f}x; "
        f"peft / roomfit = {medians['peft_hotswap'] / medians['roomfit']:.1f}x (goal >= 10x); "
        f"adapter file {adapter_bytes / 1e6:.2f} MB (goal <= 2 MB)"
    )
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "size": args.size,
                    "rank": args.rank,
                    "params": n_params,
                    "adapter_bytes": adapter_bytes,
                    "medians_s": medians,
                    "times_s": results,
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
