"""A torch.compile'd UNet (`ROOMFIT_COMPILE`): adapter swaps and adapter-bank fills never recompile it.

The test compiles with backend="eager": dynamo traces and guards exactly as with inductor (which
graph runs, and when it recompiles, is decided before the backend), but the backend then runs the
captured graph as it is instead of generating C++ kernels, which would take minutes on two CPU
cores. Production uses the default backend (inductor), `models.base_model.compile_unet`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch._dynamo.utils import counters

from models import AdapterCache, Painter, PaintRequest, load_base_model, write_adapter
from models.base_model import compile_unet
from models.lora import ADAPTER_NAME, inject_lora, lora_parameters, lora_spec_of
from tests.models.conftest import make_adapter_bytes, random_room

STEPS = 2


def _request(seed: int) -> PaintRequest:
    room = random_room(96, 80, seed=seed)
    mask = np.zeros((80, 96), bool)
    mask[15:65, 20:70] = True
    return PaintRequest(room=room, mask=mask, seed=seed)


def _graphs() -> int:
    return int(counters["stats"]["unique_graphs"])


def _diff(a: Image.Image, b: Image.Image) -> int:
    return int(np.abs(np.asarray(a, np.int16) - np.asarray(b, np.int16)).max())


@pytest.fixture(scope="module")
def compiled_painter(tiny_folder: Path) -> Painter:
    base = load_base_model("tiny", tiny_dir=tiny_folder, device="cpu")
    store: dict[str, bytes] = {}
    painter = Painter(base, lora_rank=4, loader=store.__getitem__, adapter_slots=2)
    store.update({name: make_adapter_bytes(base, seed) for seed, name in enumerate("ABC")})
    torch._dynamo.reset()
    counters.clear()
    compile_unet(base.unet, backend="eager")
    return painter


@pytest.mark.slow  # two UNet traces
def test_swaps_and_bank_fills_never_recompile(compiled_painter: Painter) -> None:
    painter = compiled_painter
    # both paths paint batches of two: one graph each (a new batch size would add one, dynamic)
    one, two = [_request(0), _request(3)], [_request(1), _request(2)]

    def paint(requests: list[PaintRequest], adapter: str) -> list[Image.Image]:
        return painter.paint(requests, adapter_id=adapter, steps=STEPS)

    def mixed(ids: list[str]) -> list:  # type: ignore[type-arg]
        return painter.paint_mixed(two, ids, steps=STEPS)

    # warm-up: a graph through peft's layers (one adapter for the batch), and one through the
    # adapter bank's per-row hooks (peft's path switched off: a guard dynamo checks)
    paint(one, "A")
    mixed(["A", "B"])
    warm = _graphs()
    fills = painter.bank.fills
    print(f"after warm-up: {warm} graphs, {painter.bank.fills} bank fills")

    with torch.compiler.set_stance("fail_on_recompile"):  # raises at the first recompile
        results = {
            "B": paint(one, "B"),
            "A": paint(one, "A"),
            "C+A": mixed(["C", "A"]),  # C fills the least recently used slot (B's)
            "B+C": mixed(["B", "C"]),  # and B another: both slots refilled
            "A again": paint(one, "A"),
        }
    assert _graphs() == warm, f"recompiled: {_graphs() - warm} new graphs"
    assert painter.bank.fills == fills + 2 and painter.adapters.stats.swaps >= 5
    print(f"A, B, A swaps and 2 bank refills: {_graphs() - warm} new graphs")

    # the compiled graphs paint what the eager UNet paints, for every adapter and slot content
    with torch.compiler.set_stance("force_eager"):
        eager = {
            "B": paint(one, "B"),
            "A": paint(one, "A"),
            "C+A": mixed(["C", "A"]),
            "B+C": mixed(["B", "C"]),
            "A again": paint(one, "A"),
        }
    diffs = {key: max(_diff(a, b) for a, b in zip(results[key], eager[key], strict=True)) for key in results}
    print(f"compiled vs eager, max pixel difference: {diffs}")
    assert max(diffs.values()) == 0
    assert _diff(results["A"][0], results["B"][0]) > 10  # the adapters differ, so equality means something


class _Attention(torch.nn.Module):
    """One LoRA-able projection: traced in milliseconds, guarded as the UNet's layers are."""

    def __init__(self) -> None:
        super().__init__()
        self.to_q = torch.nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.to_q(x)


def test_the_recompile_check_can_fail() -> None:
    """What the UNet test counts does see a recompile: changing what dynamo guards on (a LoRA layer's
    scaling, as peft's `set_scale` or an alpha-changing swap through peft would) makes a new graph,
    where the AdapterCache's in-place swap makes none."""
    module = _Attention().eval()
    inject_lora(module, rank=2, targets=("to_q",))
    cache = AdapterCache(module, base_model_id="toy", base_weights_hash="0" * 64)
    for seed in (1, 2):
        generator = torch.Generator().manual_seed(seed)
        lora = {key: torch.randn(p.shape, generator=generator) for key, p in lora_parameters(module).items()}
        data = write_adapter(lora, reference_embedding=torch.zeros(1, 8), base_model_id="toy",
                             base_weights_hash="0" * 64, spec=lora_spec_of(module))  # fmt: skip
        cache.put(f"toy-{seed}", data)
    torch._dynamo.reset()
    counters.clear()
    compile_unet(module, backend="eager")
    x = torch.randn(3, 8)
    with torch.no_grad():
        outputs = []
        for adapter_id in ("toy-1", "toy-2", "toy-1"):
            cache.activate(adapter_id)
            outputs.append(module(x))
        assert _graphs() == 1  # three swaps, one graph
        assert torch.equal(outputs[0], outputs[2]) and not torch.equal(outputs[0], outputs[1])
        module.to_q.scaling[ADAPTER_NAME] = 2.0
        module(x)
    assert _graphs() == 2


def test_training_calls_stay_eager(compiled_painter: Painter) -> None:
    unet = compiled_painter.base.unet
    config = unet.config
    inputs = {
        "sample": torch.zeros((1, 9, config.sample_size, config.sample_size)),
        "timestep": torch.tensor([1]),
        "encoder_hidden_states": torch.zeros((1, 1, config.cross_attention_dim)),
    }
    before = _graphs()
    with torch.enable_grad():
        unet(**inputs)  # grad on: the eager forward, no trace
    unet.train()
    try:
        with torch.no_grad():
            unet(**inputs)  # training mode: eager too
    finally:
        unet.eval()
    assert _graphs() == before


def test_the_setting_reaches_the_loader(tiny_folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from core.settings import Settings

    monkeypatch.setenv("ROOMFIT_COMPILE", "1")
    assert Settings().compile is True
    monkeypatch.delenv("ROOMFIT_COMPILE")
    assert Settings().compile is False
    base = load_base_model("tiny", tiny_dir=tiny_folder, device="cpu", compile=True)  # compiles lazily
    assert base.compiled and getattr(base.unet, "roomfit_compiled", False)
