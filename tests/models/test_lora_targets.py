"""LoRA's targets leave out cross-attention's query and key (`models.lora.INERT_MODULES`): why that is
exact, and that what was written with them (adapter files, training checkpoints) still works."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
from diffusers import UNet2DConditionModel
from PIL import Image

from models import AdapterCache, BaseModel, export_adapter, load_base_model, read_adapter
from models.conditioning import reference_embeddings
from models.full_weights_format import header_metadata
from models.lora import EVERY_ATTENTION_PROJECTION, INERT_MODULES, LORA_TARGETS, inject_lora, lora_parameters
from models.training import train_subject
from tests.models.training_fixtures import RESUME_PHOTOS, resume_settings, views


def _inputs(base: BaseModel, reference: Image.Image) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(5)
    side = int(base.unet.config.sample_size)
    hidden = reference_embeddings(base, [reference, reference.rotate(90)]).float()  # [2,1,D]
    return {
        "sample": torch.randn((2, 9, side, side), generator=generator),
        "timestep": torch.tensor([20, 700]),
        "encoder_hidden_states": hidden,
    }


def _output(unet: torch.nn.Module, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    with torch.no_grad():
        return unet(**inputs).sample


def test_cross_attention_query_and_key_never_change_the_output(
    base: BaseModel, tiny_folder: Path, reference: Image.Image
) -> None:
    """The premise: the reference reaches the UNet as one token, so attn2's softmax is over one key."""
    inputs = _inputs(base, reference)
    assert inputs["encoder_hidden_states"].shape[1] == 1
    unet = UNet2DConditionModel.from_pretrained(tiny_folder, subfolder="unet").eval()
    before = _output(unet, inputs)
    generator = torch.Generator().manual_seed(9)

    def scramble(modules: tuple[str, ...]) -> None:
        with torch.no_grad():
            for name, module in unet.named_modules():
                if any(name.endswith(f".{m}") for m in modules):
                    module.weight.copy_(torch.randn(module.weight.shape, generator=generator) * 3)

    scramble(INERT_MODULES)
    assert torch.equal(_output(unet, inputs), before)
    scramble(("attn2.to_v",))  # the comparison can tell: the value projection does matter
    assert float((_output(unet, inputs) - before).abs().max()) > 1e-2


def test_an_adapter_written_with_every_projection_paints_as_it_did(
    own_base: BaseModel, tiny_folder: Path, reference: Image.Image
) -> None:
    old = load_base_model("tiny", tiny_dir=tiny_folder, device="cpu")
    old.lora = inject_lora(old.unet, rank=4, targets=EVERY_ATTENTION_PROJECTION)
    generator = torch.Generator().manual_seed(2)
    with torch.no_grad():  # non-zero everywhere, inert B included; fp16-exact, as the file stores them
        for param in lora_parameters(old.unet).values():
            param.copy_((torch.randn(param.shape, generator=generator) * 0.3).half().float())
    data = export_adapter(
        old.unet,
        reference_embedding=torch.zeros(1, int(old.unet.config.cross_attention_dim)),
        base_model_id=old.model_id,
        base_weights_hash=old.weights_hash,
    )
    assert json.loads(header_metadata(data)["roomfit.targets"]) == list(EVERY_ATTENTION_PROJECTION)

    adapter = read_adapter(data)
    assert adapter.spec.targets == LORA_TARGETS
    assert adapter.lora.keys() == lora_parameters(own_base.unet).keys()
    assert len(lora_parameters(old.unet)) == len(adapter.lora) * 4 // 3  # a quarter was inert

    inputs = _inputs(own_base, reference)
    cache = AdapterCache(
        own_base.unet, base_model_id=own_base.model_id, base_weights_hash=own_base.weights_hash
    )
    plain = _output(own_base.unet, inputs)
    cache.put("old", data)
    with cache.use("old"):
        ours = _output(own_base.unet, inputs)
    assert torch.equal(ours, _output(old.unet, inputs))
    assert float((ours - plain).abs().max()) > 1e-2  # the adapter matters, so equality means something


def test_a_checkpoint_of_the_old_layout_starts_over(
    tiny_folder: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A training checkpointed by a roomfit whose LoRA had every projection (a rolling upgrade) and
    picked up by this one starts again rather than failing on the optimizer state."""
    photos = views("checker", RESUME_PHOTOS)
    old = load_base_model("tiny", tiny_dir=tiny_folder, device="cpu")
    old.lora = inject_lora(old.unet, rank=4, targets=EVERY_ATTENTION_PROJECTION)
    train_subject(old, photos, resume_settings(steps=2, checkpoint_every=1), checkpoint_dir=tmp_path)

    new = load_base_model("tiny", tiny_dir=tiny_folder, device="cpu")
    with caplog.at_level(logging.WARNING, logger="models.training"):
        resumed = train_subject(
            new, photos, resume_settings(steps=3, checkpoint_every=1), checkpoint_dir=tmp_path
        )
    assert "another LoRA layout: starting over" in caplog.text
    fresh = train_subject(new, photos, resume_settings(steps=3, checkpoint_every=0))
    a, b = read_adapter(resumed.artifact).lora, read_adapter(fresh.artifact).lora
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
