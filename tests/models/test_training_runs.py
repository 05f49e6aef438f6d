"""Training mechanics on the tiny model: progress, what is trained and restored, the artifacts
(adapter readable by the painter, full weights, domain mode) and `roomfit train`."""

from __future__ import annotations

import json
import os
import random
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
import typer
from PIL import Image
from safetensors import safe_open
from typer.testing import CliRunner

from cli.train import train
from models import Painter, PaintRequest, check_compatible, read_adapter
from models.base_model import BaseModel, load_base_model
from models.domain_training import DOMAIN_LEARNING_RATE, train_domain
from models.full_weights_format import FULL_FORMAT, header_metadata
from models.lora import lora_parameters
from models.tiny import ensure_tiny_detector
from models.training import TrainProgress, TrainSettings, train_subject
from tests.models.training_fixtures import random_background, views

FAST = TrainSettings(steps=3, batch_size=2, learning_rate=1e-3, seed=3)


def test_progress_reports_every_step(own_base: BaseModel) -> None:
    seen: list[TrainProgress] = []
    result = train_subject(own_base, views("checker", range(3)), FAST, progress=seen.append)
    assert [p.step for p in seen] == [1, 2, 3] and {p.total for p in seen} == {3}
    assert all(np.isfinite(p.loss) and p.eta_s is not None and p.eta_s >= 0 for p in seen)
    assert seen[-1].eta_s == 0
    assert [p.loss for p in seen] == result.summary.losses
    summary = result.summary
    assert summary.trainable_params == sum(p.numel() for p in lora_parameters(own_base.unet).values())
    assert 0 < summary.trainable_fraction < 0.05
    assert summary.artifact_bytes == len(result.artifact)


def test_training_leaves_the_base_model_as_it_was(own_base: BaseModel) -> None:
    slots = lora_parameters(own_base.unet)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():  # as if an adapter were active in a worker's painter
        for param in slots.values():
            param.copy_(torch.randn(param.shape, generator=generator))
    before = {k: p.detach().clone() for k, p in slots.items()}
    weights_before = {k: v.clone() for k, v in own_base.unet.state_dict().items() if "lora_" not in k}
    # a painter's adapter cache holds these tensors: training must leave them in place, or its
    # swaps would stop reaching the UNet
    storage = {name: p.data.data_ptr() for name, p in own_base.unet.named_parameters()}
    torch.manual_seed(123)
    random.seed(123)
    expected_torch, expected_py = torch.rand(3), random.random()
    torch.manual_seed(123)
    random.seed(123)

    train_subject(own_base, views("checker", range(2)), FAST)

    assert torch.equal(torch.rand(3), expected_torch) and random.random() == expected_py  # RNGs given back
    assert not own_base.unet.training
    for key, param in lora_parameters(own_base.unet).items():
        assert torch.equal(param, before[key]) and not param.requires_grad and param.dtype == torch.float32
    state = own_base.unet.state_dict()
    assert all(torch.equal(state[k], v) for k, v in weights_before.items())
    assert not any(p.requires_grad for p in own_base.unet.parameters())
    assert {name: p.data.data_ptr() for name, p in own_base.unet.named_parameters()} == storage


def test_the_adapter_paints_through_the_engine(own_base: BaseModel) -> None:
    photos = views("checker", range(3))
    result = train_subject(own_base, photos, FAST, info={"subject": "sub_1"})
    adapter = read_adapter(result.artifact)
    slots = lora_parameters(own_base.unet)
    check_compatible(
        adapter,
        base_model_id=own_base.model_id,
        base_weights_hash=own_base.weights_hash,
        spec=own_base.lora,
        slot_shapes={k: tuple(p.shape) for k, p in slots.items()},
    )
    assert adapter.info["subject"] == "sub_1" and adapter.info["steps"] == 3
    assert torch.allclose(adapter.reference_embedding, result.reference_embedding)
    assert any(t.abs().max() > 0 for k, t in adapter.lora.items() if ".lora_B." in k)  # it trained

    painter = Painter(own_base, lora_rank=4, loader=lambda _: result.artifact)
    room = random_background(np.random.default_rng(1), (96, 80))
    mask = np.zeros((80, 96), bool)
    mask[20:60, 30:70] = True
    [out] = painter.paint([PaintRequest(room, mask, seed=1)], adapter_id="sofa", steps=2)
    assert out.size == room.size


def test_a_rank_other_than_the_bases_is_refused(own_base: BaseModel) -> None:
    with pytest.raises(ValueError, match="rank 8"):
        train_subject(own_base, views("checker", range(2)), TrainSettings(steps=1, rank=8))


def test_full_fine_tuning_trains_every_unet_weight(tiny_folder: Path, tmp_path: Path) -> None:
    base = load_base_model("tiny", tiny_dir=tiny_folder, device="cpu")  # full mode changes the base
    before = {k: v.clone() for k, v in base.unet.state_dict().items()}
    result = train_subject(
        base, views("checker", range(2)), TrainSettings(steps=2, batch_size=2, mode="full")
    )
    assert result.summary.trainable_fraction == 1.0
    path = tmp_path / "full.safetensors"
    path.write_bytes(result.artifact)
    with safe_open(str(path), "pt") as handle:
        assert handle.metadata()["roomfit.format"] == FULL_FORMAT
        tensors = {k: handle.get_tensor(k) for k in handle.keys()}  # noqa: SIM118 (not a dict)
    assert tensors.keys() - {"reference_embedding"} == before.keys()
    changed = sum(not torch.equal(tensors[k], before[k]) for k in before)
    assert changed > len(before) // 2
    assert all(not p.requires_grad for p in base.unet.parameters())


def scene_folder(folder: Path, count: int) -> Path:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    for i in range(count):
        random_background(rng, (90, 70)).save(folder / f"scene{i}.jpg")
    return folder


def test_domain_training_over_scene_photos(own_base: BaseModel, tmp_path: Path) -> None:
    folder = scene_folder(tmp_path / "scenes", 3)
    result = train_domain(own_base, [folder], FAST)  # a folder, or its files
    adapter = read_adapter(result.artifact)
    assert adapter.info["kind"] == "domain" and adapter.info["images"] == 3
    assert adapter.info["reference_photo"] == 0  # the first photo's embedding
    assert len(result.summary.losses) == 3


@pytest.fixture
def cli_app(tiny_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[typer.Typer]:
    from core.settings import get_settings

    monkeypatch.setenv("ROOMFIT_BASE_MODEL", str(tiny_folder))
    monkeypatch.setenv("ROOMFIT_DETECTOR", str(ensure_tiny_detector(tmp_path / "detr")))
    monkeypatch.setenv("ROOMFIT_DEVICE", "cpu")
    get_settings.cache_clear()
    application = typer.Typer()
    application.command()(train)  # as cli/main.py registers it
    application.command("noop", hidden=True)(lambda: None)
    yield application
    get_settings.cache_clear()


def test_roomfit_train(cli_app: typer.Typer, tmp_path: Path) -> None:
    paths = []
    for i, photo in enumerate(views("checker", range(2))):
        paths.append(tmp_path / f"p{i}.png")
        photo.image.save(paths[-1])
    boxes = json.dumps([[10, 10, 60, 60], None])  # the second photo goes through the tiny DETR
    out = tmp_path / "sofa.safetensors"
    args = ["train", *map(str, paths), "--out", str(out), "--steps", "2", "--boxes", boxes]
    result = CliRunner().invoke(cli_app, [*args, "--batch-size", "2", "--label", "couch", "--seed", "1"])
    assert result.exit_code == 0, result.output
    assert read_adapter(out.read_bytes()).info["steps"] == 2
    for words in ("p0.png: given box", "trainable parameters", "of the UNet", "adapter", "bytes", "time"):
        assert words in result.output

    bad = CliRunner().invoke(cli_app, ["train", str(paths[0]), "--out", str(out), "--boxes", "[[1,2,3]]"])
    assert bad.exit_code != 0 and "boxes" in bad.output
    nothing = CliRunner().invoke(
        cli_app, ["train", str(paths[0]), "--out", str(out), "--steps", "1", "--threshold", "1.0"]
    )
    assert nothing.exit_code == 2 and "no_object_found" in nothing.output and "p0.png" in nothing.output


def test_roomfit_train_steps_follow_the_base_model_trained(
    cli_app: typer.Typer, tiny_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ROOMFIT_BASE_MODEL is a folder (a real model's default: 400 steps), `--base-model tiny`: the
    run trains tiny's default steps, not the setting's model's."""
    from core.settings import get_settings

    monkeypatch.delenv("ROOMFIT_TRAIN_STEPS", raising=False)
    monkeypatch.setenv("ROOMFIT_MODELS_DIR", str(tiny_folder.parent))  # tiny is tiny_folder, built once
    get_settings.cache_clear()
    settings = get_settings()
    assert settings.base_model == str(tiny_folder) and settings.default_train_steps == 400
    photo = tmp_path / "p.png"
    views("checker", [0])[0].image.save(photo)
    out = tmp_path / "sofa.safetensors"
    args = ["train", str(photo), "--out", str(out), "--boxes", "[[10, 10, 60, 60]]", "--base-model", "tiny"]
    result = CliRunner().invoke(cli_app, [*args, "--batch-size", "1"])
    assert result.exit_code == 0, result.output
    tiny_steps = settings.train_steps_for("tiny")
    assert tiny_steps != 400 and f"{tiny_steps} steps" in result.output
    assert read_adapter(out.read_bytes()).info["steps"] == tiny_steps


def test_roomfit_train_domain_defaults_to_the_papers_stage(cli_app: typer.Typer, tmp_path: Path) -> None:
    folder = scene_folder(tmp_path / "scenes", 2)
    out = tmp_path / "domain.safetensors"
    args = ["train", str(folder), "--out", str(out), "--domain", "--steps", "1", "--batch-size", "2"]
    result = CliRunner().invoke(cli_app, args)
    assert result.exit_code == 0, result.output
    assert "domain training on 2 photos" in result.output and "mode full" in result.output
    info = json.loads(header_metadata(out.read_bytes())["roomfit.info"])
    assert info["learning_rate"] == DOMAIN_LEARNING_RATE and info["kind"] == "domain"


def test_a_product_trains_and_paints_on_top_of_the_domain_stage(cli_app: typer.Typer, tmp_path: Path) -> None:
    """The paper's chain: scene pretraining (every weight), then a product's adapter on that UNet,
    painted with the same --init-unet; the plain base refuses the chained adapter."""
    from cli.engine import paint

    cli_app.command()(paint)
    domain = tmp_path / "domain.safetensors"
    scenes = ["train", str(scene_folder(tmp_path / "scenes", 2)), "--out", str(domain), "--domain"]
    assert CliRunner().invoke(cli_app, [*scenes, "--steps", "1", "--batch-size", "1"]).exit_code == 0
    photo = views("checker", [0])[0]
    photo.image.save(tmp_path / "p.png")
    adapter = tmp_path / "sofa.safetensors"
    product = [
        "train",
        str(tmp_path / "p.png"),
        "--out",
        str(adapter),
        "--boxes",
        json.dumps([list(photo.box)]),
    ]
    trained = CliRunner().invoke(
        cli_app, [*product, "--steps", "1", "--batch-size", "1", "--init-unet", str(domain)]
    )
    assert trained.exit_code == 0, trained.output
    plain_hash = load_base_model(os.environ["ROOMFIT_BASE_MODEL"], device="cpu").weights_hash
    assert read_adapter(adapter.read_bytes()).base_weights_hash != plain_hash

    mask = np.zeros((photo.image.height, photo.image.width), np.uint8)
    mask[20:60, 20:60] = 255
    Image.fromarray(mask).save(tmp_path / "mask.png")
    scene = [
        "paint",
        "--room",
        str(tmp_path / "p.png"),
        "--mask",
        str(tmp_path / "mask.png"),
        "--adapter",
        str(adapter),
    ]
    chained = CliRunner().invoke(
        cli_app, [*scene, "--out", str(tmp_path / "a.png"), "--init-unet", str(domain)]
    )
    assert chained.exit_code == 0, chained.output
    plain = CliRunner().invoke(cli_app, [*scene, "--out", str(tmp_path / "b.png")])
    assert plain.exit_code == 2 and "adapter_base_mismatch" in plain.output


def test_roomfit_train_help_states_the_defaults(cli_app: typer.Typer) -> None:
    """The training options default to None (importing TrainSettings would load torch for every
    `roomfit` command); their help states the values the run then takes from the settings."""
    command = typer.main.get_command(cli_app).commands["train"]  # type: ignore[attr-defined]
    helps = {param.name: " ".join(param.help.split()) for param in command.params if param.help}
    paper = TrainSettings()
    for option, value in [
        ("batch_size", paper.batch_size),
        ("dropout", paper.lora_dropout),
        ("reference_dropout", paper.reference_dropout),
        ("lr", paper.learning_rate),
        ("lr", DOMAIN_LEARNING_RATE),
    ]:
        numbers = [float(n) for n in re.findall(r"\d+(?:\.\d+)?(?:e-?\d+)?", helps[option])]
        assert value in numbers, (option, helps[option])
    assert f"default: {paper.lora_init}" in helps["lora_init"]
