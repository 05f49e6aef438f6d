"""An adapter whose tensor has another shape than its LoRA slot is refused before any copy, even when
the shape would broadcast into the slot (models/adapter_format.py, `check_compatible`)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from models import Painter, read_adapter
from models.errors import AdapterRankMismatch
from models.lora import lora_parameters


def test_a_tensor_that_would_broadcast_into_its_slot_is_refused_and_the_active_adapter_stays(
    painter: Painter, adapter_bytes: Callable[..., bytes]
) -> None:
    good = read_adapter(adapter_bytes(1))
    key = next(k for k in sorted(good.lora) if ".lora_A." in k)
    lora = dict(good.lora)
    lora[key] = lora[key][:, :1].contiguous()  # [r, 1]: copy_ would spread it over [r, in] silently
    store = {"A": adapter_bytes(1), "narrow": adapter_bytes(2, lora=lora)}
    painter.adapters.loader = store.__getitem__
    painter.adapters.activate("A")
    before = {k: v.detach().clone() for k, v in lora_parameters(painter.base.unet).items()}

    with pytest.raises(AdapterRankMismatch, match="shape"):
        painter.adapters.activate("narrow")

    assert painter.adapters.active is not None and painter.adapters.active.adapter_id == "A"
    after = lora_parameters(painter.base.unet)
    assert all(torch.equal(after[k], v) for k, v in before.items())
    assert "narrow" not in painter.adapters.cached_ids()
