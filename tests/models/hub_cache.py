"""A fake Hugging Face Hub for tests: the real repositories' file names and configs, as a local cache
(`write_cache`) or served over HTTP on 127.0.0.1 (`serve_hub`): the real layouts, no weights, no network.

The configs are those published in Fantasy-Studio/Paint-by-Example and facebook/detr-resnet-50
(`no_timm`), as docs/models.md records, but for the UNet's widths (`SMALL_UNET`, every key kept: the
real one is 3.4 GB). Weights are all-zero safetensors files at the configs' shapes, written as holes
(`write_zero_safetensors`: instant, no disk); random initialisation never gives all zeros, so a test
sees what was loaded.
"""

from __future__ import annotations

import hashlib
import json
import struct
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from models.detr_components import COCO_LABELS
from models.model_fetch import PINNED

PBE_ID = "Fantasy-Studio/Paint-by-Example"
DETR_ID = "facebook/detr-resnet-50"
PBE_COMMIT = PINNED[PBE_ID]
DETR_NO_TIMM_COMMIT = "0" * 39 + "1"  # no public source names it; any hash stands for it here

_SD_BLOCKS = {
    "down_block_types": ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
    "up_block_types": ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3,
}
UNET_CONFIG: dict[str, Any] = {
    "_class_name": "UNet2DConditionModel",
    "_diffusers_version": "0.11.0.dev0",
    "act_fn": "silu",
    "attention_head_dim": 8,
    "block_out_channels": [320, 640, 1280, 1280],
    "center_input_sample": False,
    "cross_attention_dim": 768,
    **_SD_BLOCKS,
    "downsample_padding": 1,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "in_channels": 9,
    "layers_per_block": 2,
    "mid_block_scale_factor": 1,
    "norm_eps": 1e-05,
    "norm_num_groups": 32,
    "out_channels": 4,
    "sample_size": 64,
}
SMALL_UNET = {**UNET_CONFIG, "block_out_channels": [32, 32, 64, 64]}  # every key, narrower
VAE_CONFIG: dict[str, Any] = {
    "_class_name": "AutoencoderKL",
    "_diffusers_version": "0.11.0.dev0",
    "act_fn": "silu",
    "block_out_channels": [128, 256, 512, 512],
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "in_channels": 3,
    "latent_channels": 4,
    "layers_per_block": 2,
    "norm_num_groups": 32,
    "out_channels": 3,
    "sample_size": 512,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
}
IMAGE_ENCODER_CONFIG: dict[str, Any] = {  # CLIP ViT-L/14's vision tower
    "architectures": ["PaintByExampleImageEncoder"],
    "attention_dropout": 0.0,
    "dropout": 0.0,
    "hidden_act": "quick_gelu",
    "hidden_size": 1024,
    "image_size": 224,
    "initializer_factor": 1.0,
    "initializer_range": 0.02,
    "intermediate_size": 4096,
    "layer_norm_eps": 1e-05,
    "model_type": "clip_vision_model",
    "num_attention_heads": 16,
    "num_channels": 3,
    "num_hidden_layers": 24,
    "patch_size": 14,
    "projection_dim": 768,
    "torch_dtype": "float32",
    "transformers_version": "4.26.0.dev0",
}
CLIP_PREPROCESSOR: dict[str, Any] = {
    "crop_size": 224,
    "do_center_crop": True,
    "do_convert_rgb": True,
    "do_normalize": True,
    "do_resize": True,
    "feature_extractor_type": "CLIPFeatureExtractor",
    "image_mean": [0.48145466, 0.4578275, 0.40821073],
    "image_std": [0.26862954, 0.26130258, 0.27577711],
    "resample": 3,
    "size": 224,
}
SCHEDULER_CONFIG: dict[str, Any] = {
    "_class_name": "PNDMScheduler",
    "_diffusers_version": "0.11.0.dev0",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "num_train_timesteps": 1000,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "trained_betas": None,
}
# fmt: off
_RESNET_50: dict[str, Any] = {
    "depths": [3, 4, 6, 3], "downsample_in_first_stage": False, "embedding_size": 64, "hidden_act": "relu",
    "hidden_sizes": [256, 512, 1024, 2048], "layer_type": "bottleneck", "model_type": "resnet",
    "num_channels": 3, "out_features": ["stage1", "stage2", "stage3", "stage4"], "out_indices": [1, 2, 3, 4],
    "stage_names": ["stem", "stage1", "stage2", "stage3", "stage4"],
}
# fmt: on
_LABELS = {str(i): name for i, name in enumerate(COCO_LABELS)}
DETR_CONFIG: dict[str, Any] = {  # the `no_timm` revision: transformers' own ResNet-50 backbone
    "activation_dropout": 0.0,
    "activation_function": "relu",
    "architectures": ["DetrForObjectDetection"],
    "attention_dropout": 0.0,
    "auxiliary_loss": False,
    "backbone": "resnet50",
    "backbone_config": _RESNET_50,
    "bbox_cost": 5,
    "bbox_loss_coefficient": 5,
    "class_cost": 1,
    "d_model": 256,
    "decoder_attention_heads": 8,
    "decoder_ffn_dim": 2048,
    "decoder_layerdrop": 0.0,
    "decoder_layers": 6,
    "dice_loss_coefficient": 1,
    "dilation": False,
    "dropout": 0.1,
    "encoder_attention_heads": 8,
    "encoder_ffn_dim": 2048,
    "encoder_layerdrop": 0.0,
    "encoder_layers": 6,
    "eos_coefficient": 0.1,
    "giou_cost": 2,
    "giou_loss_coefficient": 2,
    "id2label": _LABELS,  # COCO's 91 ids with their "N/A" gaps
    "init_std": 0.02,
    "init_xavier_std": 1.0,
    "is_encoder_decoder": True,
    "label2id": {name: int(i) for i, name in _LABELS.items()},  # "N/A": its last id, as JSON keeps it
    "mask_loss_coefficient": 1,
    "max_position_embeddings": 1024,
    "model_type": "detr",
    "num_channels": 3,
    "num_hidden_layers": 6,
    "num_queries": 100,
    "position_embedding_type": "sine",
    "scale_embedding": False,
    "torch_dtype": "float32",
    "use_pretrained_backbone": True,
    "use_timm_backbone": False,
}
# fmt: off
DETR_PREPROCESSOR: dict[str, Any] = {
    "do_normalize": True, "do_resize": True, "feature_extractor_type": "DetrFeatureExtractor",
    "format": "coco_detection", "image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225],
    "max_size": 1333, "size": 800,
}
# fmt: on

Content = bytes | Callable[[Path], None]  # a file's bytes, or a writer of the file at a path


@dataclass
class FakeRepo:
    """One repository at one commit: path -> content, and the refs (branches) pointing at it."""

    repo_id: str
    commit: str
    files: dict[str, Content]
    refs: tuple[str, ...] = ("main",)
    requests: list[str] = field(default_factory=list)  # what the server was asked, "GET path"

    def without(self, *prefixes: str) -> FakeRepo:
        kept = {p: c for p, c in self.files.items() if not p.startswith(prefixes)}
        return FakeRepo(self.repo_id, self.commit, kept, self.refs)

    def plus(self, files: dict[str, Content]) -> FakeRepo:
        return FakeRepo(self.repo_id, self.commit, {**self.files, **files}, self.refs)

    def body(self, path: str) -> bytes:
        content = self.files[path]
        if isinstance(content, bytes):
            return content
        raise ValueError(f"{path} is written in place, not served")


def as_json(config: dict[str, Any]) -> bytes:
    return json.dumps(config, indent=2).encode()


_DTYPES = {"torch.float32": ("F32", 4), "torch.float16": ("F16", 2), "torch.int64": ("I64", 8)}


def write_zero_safetensors(path: Path, tensors: dict[str, tuple[str, tuple[int, ...]]]) -> None:
    """A valid safetensors file of all-zero tensors (name -> (torch dtype name, shape)), as a sparse
    file: the header is written, the data is a hole (no disk, instant at any size)."""
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, (dtype, shape) in tensors.items():
        code, size = _DTYPES[dtype]
        count = 1
        for side in shape:
            count *= side
        header[name] = {"dtype": code, "shape": list(shape), "data_offsets": [offset, offset + count * size]}
        offset += count * size
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as out:
        out.write(struct.pack("<Q", len(text)) + text)
        out.truncate(8 + len(text) + offset)


def zero_weights(build: Callable[[], Any]) -> Callable[[Path], None]:
    """A writer of zero weights at the shapes of the module `build()` makes on the meta device."""
    import torch

    def write(path: Path) -> None:
        with torch.device("meta"):
            module = build()
        shapes = {k: (str(v.dtype), tuple(v.shape)) for k, v in module.state_dict().items()}
        write_zero_safetensors(path, shapes)

    return write


def _unet() -> Any:
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel.from_config(SMALL_UNET)


def _vae() -> Any:
    from diffusers import AutoencoderKL

    return AutoencoderKL.from_config(VAE_CONFIG)


def _image_encoder() -> Any:
    from transformers import CLIPVisionConfig

    from models.pbe_components import PaintByExampleImageEncoder

    return PaintByExampleImageEncoder(CLIPVisionConfig(**IMAGE_ENCODER_CONFIG))


def _detr() -> Any:
    from transformers import DetrConfig, DetrForObjectDetection

    return DetrForObjectDetection(DetrConfig(**DETR_CONFIG))


def pbe_repo(weights: bool = True) -> FakeRepo:
    """Fantasy-Studio/Paint-by-Example as roomfit fetches it (configs + safetensors weights); with
    `weights=False` the weights are empty placeholders (for tests that stop before loading)."""

    def weight(build: Callable[[], Any]) -> Content:
        return zero_weights(build) if weights else b""

    return FakeRepo(
        PBE_ID,
        PBE_COMMIT,
        {
            "unet/config.json": as_json(SMALL_UNET),
            "unet/diffusion_pytorch_model.safetensors": weight(_unet),
            "vae/config.json": as_json(VAE_CONFIG),
            "vae/diffusion_pytorch_model.safetensors": weight(_vae),
            "image_encoder/config.json": as_json(IMAGE_ENCODER_CONFIG),
            "image_encoder/model.safetensors": weight(_image_encoder),
            "feature_extractor/preprocessor_config.json": as_json(CLIP_PREPROCESSOR),
            "scheduler/scheduler_config.json": as_json(SCHEDULER_CONFIG),
        },
    )


# What the real repository holds besides what roomfit reads: a fetch must leave these out.
# fmt: off
PBE_UNREAD = (
    ".gitattributes", "README.md", "model.ckpt", "model_index.json", "safety_checker/config.json",
    "safety_checker/pytorch_model.bin", "safety_checker/model.safetensors", "image_encoder/pytorch_model.bin",
    "unet/diffusion_pytorch_model.bin", "vae/diffusion_pytorch_model.bin",
)
# fmt: on


def detr_repo(weights: bool = True) -> FakeRepo:
    """facebook/detr-resnet-50 at its `no_timm` revision, as roomfit fetches it."""
    return FakeRepo(
        DETR_ID,
        DETR_NO_TIMM_COMMIT,
        {
            "config.json": as_json(DETR_CONFIG),
            "preprocessor_config.json": as_json(DETR_PREPROCESSOR),
            "model.safetensors": zero_weights(_detr) if weights else b"",
        },
        refs=("no_timm",),
    )


def write_cache(hub: Path, *repos: FakeRepo) -> Path:
    """Write `repos` into `hub` in huggingface_hub's cache layout: models--ORG--NAME/snapshots/COMMIT/
    and refs/REF holding the commit. Returns `hub`."""
    for repo in repos:
        storage = hub / f"models--{repo.repo_id.replace('/', '--')}"
        snapshot = storage / "snapshots" / repo.commit
        for path, content in repo.files.items():
            target = snapshot / path
            target.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, bytes):
                target.write_bytes(content)
            else:
                content(target)
        for ref in repo.refs:
            (storage / "refs").mkdir(parents=True, exist_ok=True)
            (storage / "refs" / ref).write_text(repo.commit)
    return hub


def _oid(body: bytes) -> str:
    """A git blob id, as the Hub gives a file's `oid` and ETag."""
    return hashlib.sha1(b"blob %d\0" % len(body) + body).hexdigest()


@contextmanager
def serve_hub(*repos: FakeRepo) -> Iterator[str]:
    """The Hub's API for `repos` (model info, file tree, file downloads) on 127.0.0.1; yields its URL.
    An unknown repository or revision answers 404 with the Hub's error code header."""
    by_id = {repo.repo_id: repo for repo in repos}

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:  # the test's output stays readable
            pass

        def do_HEAD(self) -> None:
            self._answer(send_body=False)

        def do_GET(self) -> None:
            self._answer(send_body=True)

        def _answer(self, send_body: bool) -> None:
            path = self.path.split("?")[0]
            api = path.startswith("/api/models/")
            parts = path.removeprefix("/api/models/" if api else "/").split("/")
            repo = by_id.get("/".join(parts[:2]))
            if repo is None:
                return self._missing("RepoNotFound")
            repo.requests.append(f"{self.command} {path}")
            kind, revision, rest = parts[2], parts[3] if len(parts) > 3 else "", "/".join(parts[4:])
            if revision not in (repo.commit, *repo.refs):
                return self._missing("RevisionNotFound")
            if api and kind == "revision":
                siblings = [{"rfilename": p} for p in sorted(repo.files)]
                return self._send(as_json({"id": repo.repo_id, "sha": repo.commit, "siblings": siblings}))
            if api and kind == "tree":
                tree = [{"type": "file", "path": p, "size": len(repo.body(p)), "oid": _oid(repo.body(p))}
                        for p in sorted(repo.files)]  # fmt: skip
                return self._send(json.dumps(tree).encode())
            if kind == "resolve" and rest in repo.files:
                body = repo.body(rest)
                return self._send(body, send_body, {"X-Repo-Commit": repo.commit, "ETag": f'"{_oid(body)}"'})
            return self._missing("EntryNotFound")

        def _send(self, body: bytes, send_body: bool = True, headers: dict[str, str] | None = None) -> None:
            self.send_response(200)
            for key, value in {"Content-Length": str(len(body)), **(headers or {})}.items():
                self.send_header(key, value)
            self.end_headers()
            if send_body:
                self.wfile.write(body)

        def _missing(self, code: str) -> None:
            self.send_response(404)
            self.send_header("X-Error-Code", code)
            self.send_header("Content-Length", "0")
            self.end_headers()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
