"""The one place that imports from diffusers' deprecated Paint-by-Example package (and picks the
CLIP image processor class).

diffusers moved `PaintByExamplePipeline` and its image encoder under `pipelines.deprecated`; roomfit
needs only the encoder class (the real checkpoint's `image_encoder/` subfolder is one), so when it
moves again only this module changes.
"""

from __future__ import annotations

import warnings

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    try:
        from diffusers.pipelines.deprecated.paint_by_example.image_encoder import (
            PaintByExampleImageEncoder,
        )
    except ImportError:  # older diffusers (< 0.34) kept it outside `deprecated`
        from diffusers.pipelines.paint_by_example.image_encoder import (  # type: ignore[no-redef]
            PaintByExampleImageEncoder,
        )

try:  # transformers >= 5 names the PIL backend; the default one wants torchvision, unusable here
    from transformers import CLIPImageProcessorPil as ClipImageProcessor
except ImportError:  # transformers 4.x: CLIPImageProcessor is the PIL one
    from transformers import CLIPImageProcessor as ClipImageProcessor  # type: ignore[assignment]

__all__ = ["ClipImageProcessor", "PaintByExampleImageEncoder"]
