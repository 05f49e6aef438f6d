"""The paper's recipe as defaults (docs/method.md): the page's values are the code's, the LoRA init
is the LoRA paper's, references are dropped for guidance, and micro-batches change no result."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
import torch
from diffusers import DDPMScheduler

from models import read_adapter
from models.base_model import BaseModel
from models.domain_training import DOMAIN_LEARNING_RATE, DOMAIN_SETTINGS
from models.lora import lora_parameters
from models.trainable_unet import init_lora
from models.training import TrainSettings, _batch_draws, train_subject, training_step
from models.training_pairs import evaluation_pairs
from tests.models.training_fixtures import views

METHOD = Path(__file__).resolve().parents[2] / "docs" / "method.md"


def documented(name: str) -> str:
    """The value docs/method.md gives as "`name` = value"."""
    found = re.findall(rf"`{name}` = ([\w.+-]+)", METHOD.read_text())
    assert len(found) == 1, f"docs/method.md should state `{name}` = ... once, found {found}"
    return found[0]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("batch_size", TrainSettings().batch_size),
        ("learning_rate", TrainSettings().learning_rate),
        ("lora_dropout", TrainSettings().lora_dropout),
        ("reference_dropout", TrainSettings().reference_dropout),
        ("lora_init", TrainSettings().lora_init),
        ("weight_decay", TrainSettings().weight_decay),
        ("loss_on", TrainSettings().loss_on),
        ("DOMAIN_LEARNING_RATE", DOMAIN_LEARNING_RATE),
        ("mode", DOMAIN_SETTINGS.mode),
    ],
)
def test_the_method_page_states_the_codes_defaults(name: str, value: object) -> None:
    assert documented(name) == str(value)


def test_the_defaults_are_the_papers() -> None:
    settings = TrainSettings()
    assert (settings.batch_size, settings.learning_rate, settings.lora_dropout) == (16, 3e-5, 0.2)
    assert (settings.lora_init, settings.reference_dropout, settings.mode) == ("gaussian", 0.2, "lora")
    assert (DOMAIN_SETTINGS.mode, DOMAIN_SETTINGS.learning_rate) == ("full", 1e-6)


def test_lora_a_starts_gaussian_and_b_at_zero() -> None:
    params = {
        "x.lora_A.weight": torch.nn.Parameter(torch.empty(8, 4096)),
        "x.lora_B.weight": torch.nn.Parameter(torch.ones(4096, 8)),
    }
    init_lora(params, seed=1)
    a = params["x.lora_A.weight"].detach()
    assert params["x.lora_B.weight"].abs().max() == 0
    assert a.std().item() == pytest.approx(1 / 8, rel=0.02) and a.mean().abs() < 0.01
    # Kaiming-uniform (peft's default) is bounded by 1/sqrt(fan_in); a Gaussian's tails are not
    assert a.abs().max() > 3 / 8
    init_lora(params, seed=1, kind="kaiming")
    assert params["x.lora_A.weight"].abs().max() <= 1 / 4096**0.5
    with pytest.raises(ValueError, match="unknown LoRA init"):
        init_lora(params, seed=1, kind="orthogonal")


def test_a_fifth_of_the_references_are_dropped() -> None:
    scheduler = DDPMScheduler(num_train_timesteps=1000)
    generator = torch.Generator().manual_seed(0)
    _, _, drop = _batch_draws(4000, torch.zeros(1, 4, 2, 2), scheduler, generator, TrainSettings())
    assert drop.float().mean().item() == pytest.approx(0.2, abs=0.02)
    _, _, none = _batch_draws(
        100, torch.zeros(1, 4, 2, 2), scheduler, generator, TrainSettings(reference_dropout=0)
    )
    assert not none.any()


@pytest.mark.parametrize("dropout", [0.0, 1.0])
def test_dropped_references_condition_on_the_unconditional_vector(
    own_base: BaseModel, monkeypatch: pytest.MonkeyPatch, dropout: float
) -> None:
    import models.training as training

    seen: list[torch.Tensor] = []
    real = training.denoising_loss

    def spy(unet, scheduler, encoded, *args, **kwargs):  # type: ignore[no-untyped-def]
        seen.append(encoded.cond.detach().clone())
        return real(unet, scheduler, encoded, *args, **kwargs)

    monkeypatch.setattr(training, "denoising_loss", spy)
    pairs = evaluation_pairs(views("checker", range(3)), resolution=own_base.resolution)
    settings = TrainSettings(reference_dropout=dropout)
    scheduler = DDPMScheduler.from_config(own_base.scheduler_config)
    training_step(
        own_base, pairs, scheduler, torch.Generator().manual_seed(0), settings, backward=lambda _: None
    )
    [cond] = seen
    uncond = own_base.image_encoder.uncond_vector.to(cond.dtype)  # [1,1,D]
    is_uncond = [torch.equal(row[None], uncond) for row in cond]
    assert is_uncond == [dropout == 1.0] * len(pairs)


def test_micro_batches_give_the_batchs_result(own_base: BaseModel) -> None:
    photos = views("checker", range(4))
    settings = TrainSettings(steps=3, batch_size=4, learning_rate=1e-3, seed=2, lora_dropout=0.0)
    whole = train_subject(own_base, photos, settings)
    parts = train_subject(own_base, photos, dataclasses.replace(settings, micro_batch_size=1))
    assert parts.summary.losses == pytest.approx(whole.summary.losses, rel=1e-4)
    a, b = read_adapter(whole.artifact).lora, read_adapter(parts.artifact).lora
    scale = max(t.float().abs().max().item() for t in a.values())
    for key in a:  # fp16 files, sums in another order: equal to well within fp16's resolution
        assert torch.allclose(a[key].float(), b[key].float(), atol=1e-3 * scale), key
    assert any(a[key].float().abs().max() > 0 for key in a if ".lora_B." in key)  # it did train
    assert lora_parameters(own_base.unet)  # the base keeps its slots
