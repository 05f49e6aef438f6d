"""What the UNet is conditioned on: a reference image's Paint-by-Example embedding, made in one place.

Training (`models.training_loss.encode_pairs`, one augmented product crop per pair) and painting
(`models.sampler`, a request's reference) both call `reference_embeddings`, so an adapter is asked to
paint from exactly the kind of vector it was trained on:

- the whole reference reaches the encoder: it is resized to the encoder's square without cropping,
  as Paint-by-Example's own inference script does (`resize((224, 224))`). The image processor's
  default (shorter side to 224, then the centre square) would keep only the middle third of a 3:1
  sofa;
- a trained product is painted from ONE real crop's embedding (`product_embedding`: the crop most
  like the others), stored in its adapter file, not from an average of crops that no training pair
  ever used;
- classifier-free guidance needs the model to know the "no reference" branch, so training replaces
  a fraction of the references by the encoder's learned unconditional vector (`drop_references`), as
  Paint-by-Example was trained.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from PIL import Image

from models.base_model import BaseModel
from models.images import fit_reference


def encoder_size(base: BaseModel) -> tuple[int, int]:
    """(W, H) of the image encoder's input: the processor's crop size (224 x 224 for the real model)."""
    crop = base.feature_extractor.crop_size
    return int(crop["width"]), int(crop["height"])


def encoder_pixels(base: BaseModel, images: Sequence[Image.Image]) -> torch.Tensor:
    """[N,3,S,S]: each reference bounded (`models.images.fit_reference`), then resized whole to the
    encoder's square (no centre crop) and normalised as the encoder expects."""
    width, height = encoder_size(base)
    pixels = base.feature_extractor(
        images=[fit_reference(image) for image in images],
        do_center_crop=False,
        size={"height": height, "width": width},
        return_tensors="pt",
    ).pixel_values
    return pixels.to(device=base.device, dtype=base.dtype)


@torch.no_grad()
def reference_embeddings(base: BaseModel, images: Sequence[Image.Image]) -> torch.Tensor:
    """[N,1,D]: the Paint-by-Example embedding of each reference; the UNet's conditioning."""
    return base.image_encoder(encoder_pixels(base, images))


def drop_references(cond: torch.Tensor, uncond: torch.Tensor, drop: torch.Tensor) -> torch.Tensor:
    """[B,1,D]: `cond` with the rows where `drop` ([B] bool) is set replaced by `uncond` ([1,1,D])."""
    return torch.where(drop.to(cond.device)[:, None, None], uncond.to(cond.device, cond.dtype), cond)


def choose_reference(embeddings: torch.Tensor, areas: Sequence[float]) -> int:
    """The index of the crop whose embedding is most like the others' (highest mean cosine): a
    typical view, never an odd one (the back of the sofa, a half-hidden photo). Ties (two crops
    always tie) go to the larger crop in pixels, which carries the most detail, then the first."""
    flat = torch.nn.functional.normalize(embeddings.reshape(len(embeddings), -1).float(), dim=1)  # [N,D]
    count = len(flat)
    similarity = flat @ flat.T  # [N,N]
    typical = (similarity.sum(dim=1) - similarity.diagonal()) / max(count - 1, 1)  # [N]
    rounded = [round(float(v), 5) for v in typical]  # equal up to float noise counts as a tie
    return max(range(count), key=lambda i: (rounded[i], areas[i], -i))


def product_embedding(base: BaseModel, crops: Sequence[Image.Image]) -> tuple[int, torch.Tensor]:
    """The crop a trained product is painted from, and its embedding [1,D] (fp32, CPU): the one
    vector of the adapter file (`models.adapter_format`)."""
    if not crops:
        raise ValueError("a product needs at least one reference crop")
    embeddings = reference_embeddings(base, crops)  # [N,1,D]
    index = choose_reference(embeddings, [crop.width * crop.height for crop in crops])
    return index, embeddings[index].float().cpu()  # [1,D]
