"""How much of what training learns is about the product: the learning test's lead, per setting.

The measure of `tests/models/test_training.py`, which runs it after `--domain-stage 300` (the
default here, 0, is the random base of BENCHMARKS.md's earlier tables): LoRA on the tiny model
(whose VAE's scaling factor puts latents at unit std since tiny version 2) trained on 6 views of
the "checker" object; the denoising loss on 12 held-out views of it and on the same 12 scenes with
another object ("stripes"), untuned vs tuned. The lead is the product's relative gain minus the
other object's, in points. From the random base one seed is noisy (-0.2 to 0.8 points at the same
settings), so each variant runs several seeds.

    PYTHONPATH=. .venv/bin/python bench/bench_learning_lead.py --seeds 1 2 3 4          # ~1 min a run

`--variants paper` runs only the defaults (the paper's recipe); `--variants all` also runs them with
the paper's additions switched off one by one; `--variants full` trains every UNet weight instead of
LoRA (the paper's "all parameters" row), the same loop, data and steps at lr 1e-3. To measure
another commit, run this file against that commit's tree (`PYTHONPATH=/path/to/worktree`):
`--variants before` runs its defaults under another name; `--variants longer`, LoRA trained past
the paper's budget (a higher lr, more steps).

`--variants reach` asks where LoRA's product gain is capped: LoRA and every UNet weight trained on
the 12 held-out views themselves (what these weights can fit at all, not what generalises), and
LoRA reaching layers the paper's does not (the transformer blocks' feed-forward and proj_in/out;
every resnet's two 3x3 convolutions; only those of the 32-channel level, the one whose share of a
real-size adapter would still fit the 2 MB goal). Run it with `--domain-stage`. `--variants small`
tries more targets that would fit: the UNet's conv_in and conv_out, with the 32-channel level's
convolutions or alone, and the last up block's convolutions alone. `--variants fit-longer` trains
the 32-channel level's convolutions with conv_in/conv_out (the fitting targets that led furthest)
past the paper's budget, as `longer` does for the paper's targets; `--variants time` adds every
resnet's time_emb_proj (a per-channel shift at every level); `--variants time-fit`, both together
(the most that stays near 2 MB at real size). `--variants rank`
trains the same targets at ranks 16 and 64 (64: every tiny projection's full rank).

`--domain-stage STEPS` first trains every UNet weight of the random base for STEPS steps on 48
views of other random objects (`views("random", ...)`: neither checker nor stripes), so that what
is general about denoising such scenes is learnt before the variants start from that base, as they
would from a pretrained model. `--domain-views N` trains that stage on N such scenes instead of 48
(does a base that knows more leave LoRA more to learn about the product?).

`--unet-channels C1 C2` and `--unet-heads N` build the tiny model with another UNet width or number
of attention heads (`models.tiny.build_tiny_components`; the preset is 32 64 and 8 heads of 4
channels), saved and loaded as a model folder: does LoRA's lead grow in a wider UNet, or with fewer,
larger heads? `--attention-levels 0 1` gives the 64-channel level transformer blocks too (the
preset has them at the 32-channel level and in the middle block only; the real UNet at three of its
four levels and the middle).

`--timesteps T ...` measures the losses at other timesteps than the test's (50 150 300 450): the
whole schedule evenly, or only its noisy half.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import re
import statistics
import tempfile
from pathlib import Path
from typing import Any

import torch
from diffusers import UNet2DConditionModel

from models.adapter_format import read_adapter
from models.base_model import BaseModel, load_base_model
from models.full_weights_format import file_format
from models.full_weights_slot import start_from_unet_weights
from models.lora import LORA_TARGETS, inject_lora, lora_parameters
from models.pbe_config import PBE_UNET_CONFIG
from models.tiny import build_tiny_components, ensure_tiny_model
from models.training import train_subject
from models.training_loss import evaluation_loss
from models.training_pairs import TrainingPair, evaluation_pairs
from tests.models.test_training import HELD_OUT, SETTINGS, TIMESTEPS, TRAIN_VIEWS
from tests.models.training_fixtures import domain_stage, views

ATTENTION = "|".join(re.escape(t) for t in LORA_TARGETS)
ENDS = "conv_in|conv_out"  # the UNet's first and last convolutions

VARIANTS: dict[str, dict[str, dict[str, Any]]] = {
    "paper": {"paper defaults": {}},
    "before": {"before": {}},
    # every UNet weight (the paper's "all parameters" row), at a learning rate a full model takes
    "full": {"full fine-tune, lr 1e-3": {"mode": "full", "learning_rate": 1e-3}},
    # more LoRA training than the paper's budget (with --domain-stage: does the lead keep growing?)
    "longer": {
        "lr 1e-2": {"learning_rate": 1e-2},
        "300 steps": {"steps": 300},
        "lr 1e-2, 300 steps": {"learning_rate": 1e-2, "steps": 300},
    },
    # "train_on": which checker views train; "modules": a regex over the UNet's module names that
    # replaces the base's LoRA targets (a fresh base is injected for it); "real_modules": the same
    # layers named in the real-size UNet, where they differ (its size is printed, not trained)
    "reach": {
        "paper defaults": {},
        "LoRA, trained on the held-out views": {"train_on": "held-out"},
        "every weight, lr 1e-4, trained on the held-out views": {
            "train_on": "held-out",
            "mode": "full",
            "learning_rate": 1e-4,
        },
        "LoRA + feed-forward, proj_in/out": {
            "modules": rf".*\.({ATTENTION}|ff\.net\.0\.proj|ff\.net\.2|proj_in|proj_out)"
        },
        "LoRA + every resnet conv1/conv2": {"modules": rf".*\.({ATTENTION})|.*resnets\.\d+\.conv[12]"},
        "LoRA + 32-channel level's resnet convs": {
            "modules": rf".*\.({ATTENTION})|(down_blocks\.0|up_blocks\.1)\.resnets\.\d+\.conv[12]",
            # the real UNet's highest-resolution level: 320 channels, its first down and last up block
            "real_modules": rf".*\.({ATTENTION})|(down_blocks\.0|up_blocks\.3)\.resnets\.\d+\.conv[12]",
        },
    },
    # more layers whose real-size share still fits the 2 MB goal: the UNet's first and last
    # convolutions, and the highest-resolution level's resnet convolutions with them or alone
    "small": {
        "LoRA + conv_in/conv_out": {"modules": rf".*\.({ATTENTION})|{ENDS}"},
        "LoRA + 32-channel level's resnet convs + conv_in/conv_out": {
            "modules": rf".*\.({ATTENTION})|(down_blocks\.0|up_blocks\.1)\.resnets\.\d+\.conv[12]|{ENDS}",
            "real_modules": rf".*\.({ATTENTION})|{ENDS}"
            r"|(down_blocks\.0|up_blocks\.3)\.resnets\.\d+\.conv[12]",
        },
        "LoRA + the last up block's resnet convs": {
            "modules": rf".*\.({ATTENTION})|up_blocks\.1\.resnets\.\d+\.conv[12]",
            "real_modules": rf".*\.({ATTENTION})|up_blocks\.3\.resnets\.\d+\.conv[12]",
        },
    },
    # the fitting targets of "small" that led furthest, trained past the paper's budget as "longer"
    "fit-longer": {
        f"LoRA + 32-channel level's convs + conv_in/out, {label}": {
            "modules": rf".*\.({ATTENTION})|(down_blocks\.0|up_blocks\.1)\.resnets\.\d+\.conv[12]|{ENDS}",
            "real_modules": rf".*\.({ATTENTION})|{ENDS}"
            r"|(down_blocks\.0|up_blocks\.3)\.resnets\.\d+\.conv[12]",
            **budget,
        }
        for label, budget in (
            ("lr 1e-2", {"learning_rate": 1e-2}),
            ("300 steps", {"steps": 300}),
            ("lr 1e-2, 300 steps", {"learning_rate": 1e-2, "steps": 300}),
        )
    },
    # every resnet's time-embedding projection: a per-channel, per-timestep shift in every conv block
    # of every level, which weighs little at real size (1280 inputs, rank 4)
    "time": {
        f"LoRA + every resnet's time_emb_proj{label}": {
            "modules": rf".*\.({ATTENTION})|.*time_emb_proj",
            **budget,
        }
        for label, budget in (
            ("", {}),
            (", lr 1e-2", {"learning_rate": 1e-2}),
            (", 300 steps", {"steps": 300}),
        )
    },
    # both additions together, the most that stays near 2 MB at real size: the 32-channel level's
    # convolutions with conv_in/out ("small"'s furthest) and every time_emb_proj ("time"), at the
    # test's budget and at lr 1e-2
    "time-fit": {
        f"LoRA + time_emb_proj + 32-channel level's convs + conv_in/out{label}": {
            "modules": rf".*\.({ATTENTION})|.*time_emb_proj"
            rf"|(down_blocks\.0|up_blocks\.1)\.resnets\.\d+\.conv[12]|{ENDS}",
            "real_modules": rf".*\.({ATTENTION})|.*time_emb_proj|{ENDS}"
            r"|(down_blocks\.0|up_blocks\.3)\.resnets\.\d+\.conv[12]",
            **budget,
        }
        for label, budget in (("", {}), (", lr 1e-2", {"learning_rate": 1e-2}))
    },
    # "lora_rank": LoRA on the same targets at another rank; 64 is the full rank of every tiny
    # projection, as if those weights were trained whole
    "rank": {
        "paper defaults": {},
        "LoRA at rank 16": {"modules": rf".*\.({ATTENTION})", "lora_rank": 16},
        "LoRA at rank 64 (full rank)": {"modules": rf".*\.({ATTENTION})", "lora_rank": 64},
    },
    "all": {
        "paper defaults": {},
        "no reference dropout": {"reference_dropout": 0.0},
        "no LoRA dropout": {"lora_dropout": 0.0},
        "neither dropout, Kaiming init": {
            "lora_dropout": 0.0,
            "reference_dropout": 0.0,
            "lora_init": "kaiming",
        },
    },
}


def tuned_losses(
    base: BaseModel, artifact: bytes, sets: tuple[list[TrainingPair], ...], timesteps: tuple[int, ...]
) -> list[float]:
    """The held-out losses with a trained adapter or full fine-tune loaded as a painter loads it;
    the base's weights are put back afterwards."""
    if file_format(artifact) == "roomfit-unet":
        kept, kept_hash = {k: v.clone() for k, v in base.unet.state_dict().items()}, base.weights_hash
        start_from_unet_weights(base, artifact)
        losses = [evaluation_loss(base, pairs, timesteps=timesteps) for pairs in sets]
        base.unet.load_state_dict(kept)
        base.weights_hash = kept_hash
        return losses
    adapter = read_adapter(artifact)
    with torch.no_grad():  # the fp16 file
        for key, param in lora_parameters(base.unet).items():
            param.copy_(adapter.lora[key].float())
    return [evaluation_loss(base, pairs, timesteps=timesteps) for pairs in sets]


def real_size_mb(modules: str, rank: int = 4) -> float:
    """MB (fp16) of LoRA at `rank` on the real-size UNet's modules that `modules` matches, counted on
    `models.pbe_config`'s UNet built on the meta device (no memory, no weights)."""
    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(PBE_UNET_CONFIG)
    count = 0
    for name, module in unet.named_modules():
        if not re.fullmatch(modules, name):
            continue
        if isinstance(module, torch.nn.Linear):
            count += rank * (module.in_features + module.out_features)
        elif isinstance(module, torch.nn.Conv2d):  # peft: A is the conv at rank width, B a 1x1
            count += rank * module.in_channels * math.prod(module.kernel_size) + module.out_channels * rank
    return 2 * count / 1e6


def model_folder(
    folder: Path,
    unet_channels: tuple[int, int] | None,
    unet_heads: int | None,
    attention_levels: tuple[int, ...] | None = None,
) -> Path:
    """The tiny preset, or a tiny model of another UNet width, head count or levels with attention,
    as a model folder."""
    sizes = {"unet_channels": unet_channels, "unet_heads": unet_heads, "attention_levels": attention_levels}
    if all(value is None for value in sizes.values()):
        return ensure_tiny_model(folder)
    components = build_tiny_components(**{k: v for k, v in sizes.items() if v is not None})
    for name, component in components.items():
        component.save_pretrained(folder / name)  # type: ignore[attr-defined]
    return folder


def _retargeted(folder: Path, domain_artifact: bytes | None, modules: str, rank: int = 4) -> BaseModel:
    """The same base (after the same domain stage) with LoRA on every module whose name matches."""
    base = load_base_model(str(folder), device="cpu")
    targets = tuple(name for name, _ in base.unet.named_modules() if re.fullmatch(modules, name))
    base.lora = inject_lora(base.unet, rank=rank, targets=targets)
    if domain_artifact is not None:
        start_from_unet_weights(base, domain_artifact)
    return base


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4])
    parser.add_argument("--variants", choices=sorted(VARIANTS), default="all")
    parser.add_argument("--domain-stage", type=int, default=0, metavar="STEPS")
    parser.add_argument("--domain-views", type=int, default=48, metavar="N")
    parser.add_argument("--unet-channels", type=int, nargs=2, metavar=("C1", "C2"))
    parser.add_argument("--unet-heads", type=int)
    parser.add_argument("--attention-levels", type=int, nargs="+", choices=(0, 1), metavar="LEVEL")
    parser.add_argument("--timesteps", type=int, nargs="+", default=list(TIMESTEPS), metavar="T")
    args = parser.parse_args()
    timesteps = tuple(args.timesteps)

    channels = tuple(args.unet_channels) if args.unet_channels else None
    levels = tuple(args.attention_levels) if args.attention_levels else None
    folder = model_folder(Path(tempfile.mkdtemp()) / "tiny", channels, args.unet_heads, levels)
    base = load_base_model(str(folder), device="cpu")
    base.lora = inject_lora(base.unet, rank=4)
    held = evaluation_pairs(views("checker", HELD_OUT), resolution=base.resolution)
    other = evaluation_pairs(views("stripes", HELD_OUT), resolution=base.resolution)
    before = [evaluation_loss(base, pairs, timesteps=timesteps) for pairs in (held, other)]
    domain_artifact = domain_stage(base, args.domain_stage, args.domain_views) if args.domain_stage else None
    if domain_artifact is not None:
        random_base = before
        before = [evaluation_loss(base, pairs, timesteps=timesteps) for pairs in (held, other)]
        print(
            f"held-out loss, product / other: random base {random_base[0]:.4f} / {random_base[1]:.4f}, "
            f"after the domain stage {before[0]:.4f} / {before[1]:.4f}\n"
        )

    print(
        "| settings | seed | product gain | other gain | lead (points) |\n| --- | ---: | ---: | ---: | ---: |"
    )
    summary = []
    for name, variant in VARIANTS[args.variants].items():
        overrides = dict(variant)
        photos = views("checker", HELD_OUT if overrides.pop("train_on", None) == "held-out" else TRAIN_VIEWS)
        modules = overrides.pop("modules", None)
        real_modules = overrides.pop("real_modules", modules or rf".*\.({ATTENTION})")
        rank = overrides.pop("lora_rank", 4)
        tuned = base if modules is None else _retargeted(folder, domain_artifact, modules, rank)
        leads = []
        for seed in args.seeds:
            settings = dataclasses.replace(SETTINGS, seed=seed, **overrides)
            artifact = train_subject(tuned, photos, settings).artifact
            after = tuned_losses(tuned, artifact, (held, other), timesteps)
            gain, other_gain = ((b - a) / b for b, a in zip(before, after, strict=True))
            leads.append(100 * (gain - other_gain))
            print(f"| {name} | {seed} | {gain:.2%} | {other_gain:.2%} | {leads[-1]:.2f} |", flush=True)
        size = "–" if overrides.get("mode") == "full" else f"{real_size_mb(real_modules, rank):.2f} MB"
        summary.append((name, statistics.mean(leads), min(leads), max(leads), size))
    print(
        "\n| settings | mean lead | min | max | real-size LoRA at its rank, fp16 |"
        "\n| --- | ---: | ---: | ---: | ---: |"
    )
    for name, mean, low, high, size in summary:
        print(f"| {name} | {mean:.2f} | {low:.2f} | {high:.2f} | {size} |")


if __name__ == "__main__":
    main()
