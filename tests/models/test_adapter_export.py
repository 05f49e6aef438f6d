"""roomfit adapters as diffusers LoRA files and back: the same UNet output on both sides.

The diffusers side is a fresh tiny UNet read from the model folder, given the file through
`load_lora_adapter(path)` with its defaults; the roomfit side is the AdapterCache's hot swap.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from diffusers import StableDiffusionPipeline, UNet2DConditionModel
from diffusers.utils import convert_state_dict_to_diffusers
from diffusers.utils.state_dict_utils import _load_sft_state_dict_metadata
from peft import LoraConfig
from peft.utils import get_peft_model_state_dict
from safetensors.torch import load as safetensors_load
from safetensors.torch import save as safetensors_save
from typer.testing import CliRunner

from models import AdapterCache, BaseModel, read_adapter
from models.adapter_export import export_diffusers, import_diffusers
from models.errors import AdapterBaseMismatch, AdapterCorrupt, AdapterRankMismatch, AdapterTargetsMismatch
from models.lora import EVERY_ATTENTION_PROJECTION, LORA_TARGETS, LoraSpec, lora_parameters
from tests.models.conftest import make_adapter_bytes

EXACT = 1e-6  # the acceptance bound: float rounding of the same arithmetic in another order


@pytest.fixture(scope="module")
def cache(own_base: BaseModel) -> AdapterCache:
    return AdapterCache(
        own_base.unet, base_model_id=own_base.model_id, base_weights_hash=own_base.weights_hash
    )


@pytest.fixture(scope="module")
def inputs(own_base: BaseModel) -> dict[str, torch.Tensor]:
    config = own_base.unet.config
    generator = torch.Generator().manual_seed(3)
    side = int(config.sample_size)
    return {
        "sample": torch.randn((2, 9, side, side), generator=generator),
        "timestep": torch.tensor([10, 600]),
        "encoder_hidden_states": torch.randn((2, 1, int(config.cross_attention_dim)), generator=generator),
    }


@pytest.fixture
def fresh_unet(tiny_folder: Path) -> Callable[[], UNet2DConditionModel]:
    return lambda: UNet2DConditionModel.from_pretrained(tiny_folder, subfolder="unet").eval()


def _output(unet: torch.nn.Module, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    with torch.no_grad():
        return unet(**inputs).sample


def _roomfit_output(cache: AdapterCache, data: bytes, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    adapter_id = f"adapter-{len(cache.cached_ids())}"  # a new id: `put` under the active one would not swap
    cache.put(adapter_id, data)
    with cache.use(adapter_id):
        return _output(cache.unet, inputs)


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max())


@pytest.mark.parametrize("alpha", [4.0, 8.0, 2.5], ids=["alpha=rank", "alpha=2rank", "alpha=2.5"])
def test_an_export_paints_in_diffusers_as_in_roomfit(  # type: ignore[no-untyped-def]
    own_base, cache, inputs, fresh_unet, tmp_path, alpha
) -> None:
    adapter = make_adapter_bytes(own_base, seed=5, spec=LoraSpec(rank=4, alpha=alpha, targets=LORA_TARGETS))
    path = tmp_path / "adapter.safetensors"
    path.write_bytes(export_diffusers(adapter))
    ours = _roomfit_output(cache, adapter, inputs)

    plain = fresh_unet()
    base_output = _output(plain, inputs)
    plain.load_lora_adapter(str(path))  # the defaults: prefix "transformer"; no metadata read for a file
    from_metadata = fresh_unet()
    from_metadata.load_lora_adapter(str(path), use_safetensors=True)  # reads lora_adapter_metadata
    diffs = [_max_diff(_output(unet, inputs), ours) for unet in (plain, from_metadata)]
    moved = _max_diff(ours, base_output)
    print(f"alpha {alpha}, rank 4: diffusers (defaults, metadata) vs roomfit max |diff| "
          f"{diffs[0]:.1e}, {diffs[1]:.1e}; the adapter moves the output by {moved:.2f}")  # fmt: skip
    assert max(diffs) <= EXACT
    assert moved > 1e-2  # the adapter matters, so equality means something
    assert _load_sft_state_dict_metadata(str(path)) == {
        "transformer.r": 4,
        "transformer.lora_alpha": 4,  # alpha / r is in B
        "transformer.target_modules": sorted(LORA_TARGETS),
    }
    ours_modules = {key.rsplit(".lora_", 1)[0] for key in lora_parameters(own_base.unet)}
    for unet in (plain, from_metadata):
        [config] = unet.peft_config.values()
        assert (config.r, config.lora_alpha) == (4, 4)
        # diffusers names the targets by its own shortest suffixes; the modules it adapted are ours
        theirs = {name.rsplit(".lora_", 1)[0] for name, _ in unet.named_parameters() if ".lora_" in name}
        assert theirs == ours_modules


def _peft_lora(
    fresh_unet: Callable[[], UNet2DConditionModel],
    *,
    rank: int = 4,
    alpha: float = 8.0,
    targets: tuple[str, ...] = LORA_TARGETS,
    fp16_exact: bool = True,
) -> UNet2DConditionModel:
    """A UNet carrying a random (non-zero) peft LoRA, as a diffusers training script leaves it."""
    unet = fresh_unet()
    unet.add_adapter(LoraConfig(r=rank, lora_alpha=alpha, target_modules=list(targets)))
    generator = torch.Generator().manual_seed(11)
    with torch.no_grad():
        for name, param in unet.named_parameters():
            if "lora_" in name:
                values = torch.randn(param.shape, generator=generator) * 0.3
                param.copy_(values.half().float() if fp16_exact else values)
    return unet


def _save_lora_adapter(unet: UNet2DConditionModel, folder: Path) -> Path:
    """diffusers' model-level save: no prefix, the whole LoraConfig as metadata."""
    unet.save_lora_adapter(folder, adapter_name="default")
    return folder / "pytorch_lora_weights.safetensors"


def _training_script_save(unet: UNet2DConditionModel, folder: Path) -> Path:
    """What train_text_to_image_lora.py writes: `unet.` prefix, lora.down / lora.up, no alpha."""
    layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(unet))
    StableDiffusionPipeline.save_lora_weights(folder, unet_lora_layers=layers, safe_serialization=True)
    return folder / "pytorch_lora_weights.safetensors"


@pytest.mark.parametrize(
    ("save", "prefix", "alpha", "fp16_exact", "targets"),
    [
        (_save_lora_adapter, None, 8.0, True, LORA_TARGETS),
        (_training_script_save, "unet", 4.0, True, LORA_TARGETS),  # no alpha in the file: r is taken
        (_save_lora_adapter, None, 8.0, False, LORA_TARGETS),  # fp32 weights: roomfit's file rounds them
        # what diffusers' training scripts target: q/k of cross-attention too, dropped on import
        (_training_script_save, "unet", 4.0, True, EVERY_ATTENTION_PROJECTION),
    ],
    ids=["save_lora_adapter", "training-script", "fp32-weights", "every-projection"],
)
def test_an_imported_lora_paints_as_in_diffusers(  # type: ignore[no-untyped-def]
    own_base, cache, inputs, fresh_unet, tmp_path, save, prefix, alpha, fp16_exact, targets
) -> None:
    peft_unet = _peft_lora(fresh_unet, alpha=alpha, fp16_exact=fp16_exact, targets=targets)
    path = save(peft_unet, tmp_path)
    unet = fresh_unet()
    unet.load_lora_adapter(str(path), prefix=prefix, use_safetensors=True)  # as pipelines: metadata read
    theirs = _output(unet, inputs)

    embedding = torch.randn((1, int(own_base.unet.config.cross_attention_dim)))
    imported = import_diffusers(
        path.read_bytes(),
        unet=own_base.unet,
        base_model_id=own_base.model_id,
        base_weights_hash=own_base.weights_hash,
        reference_embedding=embedding,
    )
    assert imported.spec.alpha == alpha and imported.layers == len(read_adapter(imported.data).lora) // 2
    assert read_adapter(imported.data).lora.keys() == lora_parameters(own_base.unet).keys()
    assert torch.equal(read_adapter(imported.data).reference_embedding, embedding)
    diff = _max_diff(theirs, _roomfit_output(cache, imported.data, inputs))
    print(f"{save.__name__} (fp16-exact {fp16_exact}): roomfit vs diffusers max |diff| {diff:.2e}, "
          f"weights rounded by {imported.fp16_rounding:.1e} ({imported.alpha_from})")  # fmt: skip
    if fp16_exact:
        assert diff <= EXACT and imported.fp16_rounding == 0.0
    else:
        assert 0.0 < imported.fp16_rounding < 1e-3 and diff < 1e-2  # fp16 storage, as roomfit's own files


def test_export_then_import_gives_the_same_adapter(own_base) -> None:  # type: ignore[no-untyped-def]
    original = make_adapter_bytes(own_base, seed=8, spec=LoraSpec(rank=4, alpha=6.0, targets=LORA_TARGETS))
    back = import_diffusers(
        export_diffusers(original),
        unet=own_base.unet,
        base_model_id=own_base.model_id,
        base_weights_hash=own_base.weights_hash,
    )  # no reference embedding given: the export carried it
    a, b = read_adapter(original), read_adapter(back.data)
    assert a.lora.keys() == b.lora.keys() and all(torch.equal(a.lora[k], b.lora[k]) for k in a.lora)
    assert torch.equal(a.reference_embedding, b.reference_embedding)
    assert (b.spec.rank, b.spec.alpha, b.info["seed"]) == (4, 6.0, 8)


def _import(base: BaseModel, data: bytes) -> bytes:
    return import_diffusers(
        data,
        unet=base.unet,
        base_model_id=base.model_id,
        base_weights_hash=base.weights_hash,
        reference_embedding=torch.zeros((1, int(base.unet.config.cross_attention_dim))),
    ).data


def test_another_rank_is_refused(own_base, fresh_unet, tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = _save_lora_adapter(_peft_lora(fresh_unet, rank=8), tmp_path)
    with pytest.raises(AdapterRankMismatch, match="adapter rank 8, base model's LoRA rank 4"):
        _import(own_base, path.read_bytes())


def test_other_targets_are_refused(own_base, fresh_unet, tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = _save_lora_adapter(_peft_lora(fresh_unet, targets=("to_q", "to_v")), tmp_path)
    # attn2.to_q is left out on import (inert over one token): what is left misses attn1.to_k, ...
    with pytest.raises(
        AdapterTargetsMismatch, match=r"adapter targets \['attn1.to_q', 'attn1.to_v', 'attn2.to_v'\]"
    ):
        _import(own_base, path.read_bytes())


def test_what_is_not_a_lora_is_refused(own_base, tiny_folder: Path) -> None:  # type: ignore[no-untyped-def]
    unet_weights = next((tiny_folder / "unet").glob("*.safetensors")).read_bytes()
    with pytest.raises(AdapterCorrupt, match="not a LoRA file"):
        _import(own_base, unet_weights)
    with pytest.raises(AdapterCorrupt, match="not a readable safetensors file"):
        _import(own_base, b"\x00" * 64)
    half = {k: v for k, v in safetensors_load(export_diffusers(make_adapter_bytes(own_base, 1))).items()
            if ".lora_B." not in k}  # fmt: skip
    with pytest.raises(AdapterCorrupt, match="without their other half"):
        _import(own_base, safetensors_save(half))
    with pytest.raises(AdapterCorrupt, match="already a roomfit file"):
        _import(own_base, make_adapter_bytes(own_base, 1))


def test_an_export_from_another_base_is_refused(own_base) -> None:  # type: ignore[no-untyped-def]
    other = make_adapter_bytes(own_base, 2, base_model_id="other", base_weights_hash="f" * 64)
    with pytest.raises(AdapterBaseMismatch, match="trained on base 'other'"):
        _import(own_base, export_diffusers(other))


# --- the command line ------------------------------------------------------------------------------
@pytest.fixture
def cli(tiny_folder: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., tuple[int, str, str]]]:
    from cli.adapters import app
    from core.settings import get_settings

    monkeypatch.setenv("ROOMFIT_BASE_MODEL", str(tiny_folder))
    monkeypatch.setenv("ROOMFIT_DEVICE", "cpu")
    get_settings.cache_clear()

    def run(*args: str) -> tuple[int, str, str]:
        result = CliRunner().invoke(app, list(args))
        return result.exit_code, result.stdout, result.stderr

    yield run
    get_settings.cache_clear()


def test_the_commands(cli, own_base, fresh_unet, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    adapter = tmp_path / "roomfit.safetensors"
    adapter.write_bytes(make_adapter_bytes(own_base, 4))
    code, out, err = cli("export", str(adapter), "--out", str(tmp_path / "lora.safetensors"))
    assert code == 0, err
    assert json.loads(out)["rank"] == 4
    code, out, err = cli(
        "import", str(tmp_path / "lora.safetensors"), "--out", str(tmp_path / "back.safetensors")
    )
    assert code == 0, err
    assert (
        read_adapter((tmp_path / "back.safetensors").read_bytes()).lora.keys()
        == read_adapter(adapter.read_bytes()).lora.keys()
    )
    # a diffusers LoRA of another rank: one JSON line on stderr, exit code 2, nothing written
    wrong = _save_lora_adapter(_peft_lora(fresh_unet, rank=8), tmp_path / "wrong")
    code, out, err = cli(
        "import", str(wrong), "--subject", str(adapter), "--out", str(tmp_path / "x.safetensors")
    )
    assert code == 2 and not (tmp_path / "x.safetensors").exists()
    assert json.loads(err.strip().splitlines()[-1])["error"] == "adapter_rank_mismatch"
    code, out, err = cli("export", str(tmp_path / "missing.safetensors"), "--out", str(tmp_path / "y"))
    assert code == 2 and "no adapter file" in err
