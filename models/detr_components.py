"""What the DETR detector and its `tiny` preset share: COCO's label names and the image processor class."""

from __future__ import annotations

# COCO's 91 category ids as DETR numbers them (gaps are "N/A"), so `tiny` names labels like the real one.
COCO_LABELS: tuple[str, ...] = (
    "N/A", "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "N/A", "stop sign", "parking meter", "bench", "bird", "cat", "dog",
    "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "N/A", "backpack", "umbrella", "N/A",
    "N/A", "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite",
    "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle", "N/A",
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange",
    "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch", "potted plant", "bed",
    "N/A", "dining table", "N/A", "N/A", "toilet", "N/A", "tv", "laptop", "mouse", "remote", "keyboard",
    "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "N/A", "book", "clock", "vase",
    "scissors", "teddy bear", "hair drier", "toothbrush",
)  # fmt: skip


def detr_processor_class() -> type:
    """DETR's image processor class (imported when asked: transformers is slow to import)."""
    try:  # transformers >= 5: the PIL backend by name (the default one wants torchvision)
        from transformers import DetrImageProcessorPil

        return DetrImageProcessorPil
    except ImportError:  # transformers 4.x
        from transformers import DetrImageProcessor

        return DetrImageProcessor
