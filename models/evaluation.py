"""The paper's evaluation (Table 2, and Table 3's ablations): every method paints every subject of a
bench (`models.eval_bench`) into every background, with the service's own training and painting.

Methods:

- `baseline`: the base model, no adapter, painted from the subject's reference crop's embedding
  (`models.conditioning.product_embedding` over its box crops: the vector an adapter would store);
- `lora`: `models.subject_training.annotate_and_train` in LoRA mode (the given boxes, no detector),
  painted through the `Painter` from the adapter file;
- `full`: the same in full mode (every UNet weight), painted through the Painter's full fine-tune path.

Work goes to `OUT/work/` and is reused, so a killed run started again goes on where it stopped:
`artifacts/<method>/<subject>.safetensors` (LoRA training also checkpoints under `checkpoints/`),
`images/<method>/<subject>/<background>.png`; every file is written to a temporary name and
renamed. Seeds come from names (`stable_seed`): a subject trains from the same seed in every method,
and a (subject, background) pair paints from the same noise in every method. `OUT/work/run.json`
records what the images depend on (base weights, their dtype and device, settings, the bench's files);
a folder made with other ones is refused (`WorkMismatch`). Scoring and the report: `models.eval_report`.

    bench = load_bench("bench/")
    evaluation = Evaluation(base, bench, "reports/run1", EvalSettings(train=TrainSettings(steps=400)))
    evaluation.run(progress=print)        # trains and paints what is missing
    models = MetricModels(load_dino_model(), load_clip_model(), load_inception())  # models.eval_report
    report = write_report(evaluation, models)
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from models.augmentation import NO_AUGMENTATION, AugmentSettings, crop_reference
from models.base_model import BaseModel
from models.conditioning import product_embedding
from models.errors import RoomfitModelError
from models.eval_bench import Bench, BenchBackground, BenchSubject
from models.full_weights_slot import unet_weights_kept
from models.painter import Painter
from models.sampler import DEFAULT_GUIDANCE_SCALE, PaintRequest
from models.subject_training import annotate_and_train
from models.training import TrainSettings

METHODS = ("baseline", "lora", "full")
# The AugmentSettings fields each Table 3 ablation turns off (to NO_AUGMENTATION's values). The
# training crop's framing (`crop_margin`) is neither: it stays as trained for previews.
REFERENCE_AUGMENTATION = ("flip_p", "max_rotation_deg", "blur_p", "jitter", "crop_scale")
MASK_AUGMENTATION = ("mask_grow", "mask_shape_p")
LORA_CHECKPOINT_EVERY = 50  # steps; full mode keeps no checkpoint (three UNets' worth per save)
WORK_VERSION = 1


class WorkMismatch(RoomfitModelError):
    """The report folder holds the work of a run with another base, bench or settings."""

    code = "work_mismatch"


def ablated_augmentation(*, reference: bool = True, mask: bool = True) -> AugmentSettings:
    """The training augmentation with the reference part, the mask part or both switched off."""
    off = [*(() if reference else REFERENCE_AUGMENTATION), *(() if mask else MASK_AUGMENTATION)]
    return dataclasses.replace(AugmentSettings(), **{name: getattr(NO_AUGMENTATION, name) for name in off})


@dataclass(frozen=True)
class EvalSettings:
    train: TrainSettings = field(default_factory=TrainSettings)  # mode and seed are set per run
    methods: tuple[str, ...] = METHODS
    seed: int = 0  # every training and painting seed derives from it and the names
    paint_steps: int = 30
    guidance_scale: float = DEFAULT_GUIDANCE_SCALE
    scheduler: str = "ddim"
    keep_full_weights: bool = True  # False: delete a full fine-tune once its subject is painted

    def __post_init__(self) -> None:
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown or not self.methods or len(set(self.methods)) != len(self.methods):
            raise ValueError(f"methods {list(self.methods)}: choose some of {', '.join(METHODS)}, once each")

    def ablations(self) -> dict[str, bool]:
        """Table 3's switches: a part is off when all its fields are NO_AUGMENTATION's."""
        augment = self.train.augment

        def on(names: tuple[str, ...]) -> bool:
            return any(getattr(augment, name) != getattr(NO_AUGMENTATION, name) for name in names)

        return {
            "reference_augmentation": on(REFERENCE_AUGMENTATION),
            "mask_augmentation": on(MASK_AUGMENTATION),
        }

    def recorded(self) -> dict[str, Any]:
        """What the painted images depend on (methods and the deleting of files aside), as JSON."""
        train = dataclasses.asdict(self.train)
        for name in ("mode", "seed", "micro_batch_size", "checkpoint_every"):  # per run, or no effect
            train.pop(name)
        return {
            "train": train,
            "seed": self.seed,
            "paint_steps": self.paint_steps,
            "guidance_scale": self.guidance_scale,
            "scheduler": self.scheduler,
        }


@dataclass(frozen=True)
class WorkItem:
    method: str
    subject: str
    background: str


# (what happened, the item): "train" (training starts for the item's method and subject), "painted",
# "reused" (its image was there already)
ProgressCallback = Callable[[str, WorkItem], None]


def stable_seed(*parts: object) -> int:
    """A seed in [0, 2^31) from names and numbers: the same in every process and on every machine."""
    text = "\x1f".join(str(p) for p in parts)
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "big") >> 1


def write_atomic(path: Path, data: bytes) -> None:
    """`data` at `path`, whole or not at all: written beside it, then renamed over it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    staging.write_bytes(data)
    os.replace(staging, path)


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


class Evaluation:
    """One bench, one base model, one report folder: trains and paints what the folder lacks."""

    def __init__(self, base: BaseModel, bench: Bench, out_dir: Path | str, settings: EvalSettings) -> None:
        self.base = base
        self.bench = bench
        self.out_dir = Path(out_dir)
        self.work_dir = self.out_dir / "work"
        self.settings = settings
        rank = settings.train.rank
        self.painter = Painter(
            base,
            lora_rank=rank if rank is not None else _injected_rank(base),
            loader=lambda path: Path(path).read_bytes(),
            scheduler=settings.scheduler,
        )
        self._references: dict[str, tuple[int, torch.Tensor]] = {}

    # --- where things are ----------------------------------------------------------------------

    def artifact_path(self, method: str, subject: str) -> Path:
        return self.work_dir / "artifacts" / method / f"{subject}.safetensors"

    def image_path(self, item: WorkItem) -> Path:
        return self.work_dir / "images" / item.method / item.subject / f"{item.background}.png"

    def items(self) -> Iterator[WorkItem]:
        for method in self.settings.methods:
            for subject in self.bench.subjects:
                for background in self.bench.backgrounds:
                    yield WorkItem(method, subject.name, background.name)

    def references(self, subject: BenchSubject) -> list[Image.Image]:
        """The subject's reference photos: its box crops (what the metrics compare against)."""
        return [crop_reference(p.image, p.box) for p in subject.photos]

    def reference(self, subject: BenchSubject) -> tuple[int, torch.Tensor]:
        """(index of the crop a trained subject paints from, its embedding [1, D])."""
        if subject.name not in self._references:
            self._references[subject.name] = product_embedding(self.base, self.references(subject))
        return self._references[subject.name]

    def training_summaries(self) -> dict[str, dict[str, Any]]:
        """By "method/subject": the training run's summary (loss, time, sizes), for those trained."""
        found = {}
        for method in self.settings.methods:
            for subject in self.bench.subjects:
                path = self.artifact_path(method, subject.name).with_suffix(".json")
                if path.is_file():
                    found[f"{method}/{subject.name}"] = json.loads(path.read_text())
        return found

    def fingerprint(self) -> dict[str, Any]:
        return {
            "version": WORK_VERSION,
            "base_model_id": self.base.model_id,
            "base_weights_hash": self.base.weights_hash,  # of the fp32 weights: the same in every dtype
            "dtype": str(self.base.dtype).removeprefix("torch."),  # ROOMFIT_DTYPE: other pixels
            "device": self.base.device.type,  # as the training checkpoints' fingerprint
            "bench_digest": self.bench.digest,
            **self.settings.recorded(),
        }

    # --- the run -------------------------------------------------------------------------------

    def run(self, progress: ProgressCallback | None = None) -> None:
        """Train and paint whatever `OUT/work` lacks; WorkMismatch for another run's folder."""
        self._claim_work_dir()
        report = progress or (lambda event, item: None)
        for method in self.settings.methods:
            for subject in self.bench.subjects:
                items = [(WorkItem(method, subject.name, b.name), b) for b in self.bench.backgrounds]
                done = [item for item, _ in items if self.image_path(item).is_file()]
                missing = [(item, b) for item, b in items if item not in done]
                for item in done:
                    report("reused", item)
                if missing:
                    artifact = None
                    if method != "baseline":
                        if not self.artifact_path(method, subject.name).is_file():
                            report("train", missing[0][0])
                        artifact = self._train(method, subject)
                    for item, background in missing:
                        self._paint(item, subject, background, artifact)
                        report("painted", item)
                if method == "full" and not self.settings.keep_full_weights:
                    # also when every image was there already: a run killed between its subject's last
                    # image and this line left the fine-tune (3.4 GB at real size) for nothing to delete
                    self.artifact_path(method, subject.name).unlink(missing_ok=True)

    def _claim_work_dir(self) -> None:
        path = self.work_dir / "run.json"
        mine = json.loads(json.dumps(self.fingerprint()))  # tuples as JSON gives them back: lists
        if path.is_file():
            theirs = json.loads(path.read_text())
            if theirs != mine:
                differ = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
                raise WorkMismatch(
                    f"{self.work_dir} holds a run with other {', '.join(differ)}: choose another --out, "
                    "or delete its work/ folder to start over"
                )
            return
        write_atomic(path, json.dumps(mine, indent=2, sort_keys=True).encode())

    def _train(self, method: str, subject: BenchSubject) -> Path:
        """The subject's artifact for `method`, trained unless it is there already."""
        path = self.artifact_path(method, subject.name)
        if path.is_file():
            return path
        settings = dataclasses.replace(
            self.settings.train,
            mode=method,
            seed=stable_seed(self.settings.seed, "train", subject.name),  # the same in lora and full
            checkpoint_every=LORA_CHECKPOINT_EVERY if method == "lora" else 0,
        )
        checkpoints = self.work_dir / "checkpoints" / method / subject.name
        with ExitStack() as held:
            held.enter_context(self.painter.adapters.use(None))  # LoRA slots zeroed, as trained
            if method == "full":  # trained in place: the base's own weights come back afterwards
                held.enter_context(unet_weights_kept(self.base.unet))
            outcome = annotate_and_train(
                self.base,
                [p.image for p in subject.photos],
                settings,
                boxes=[p.box for p in subject.photos],
                names=subject.photo_names,
                checkpoint_dir=checkpoints if settings.checkpoint_every else None,
                info={"evaluation": subject.name},
            )
        write_atomic(path, outcome.result.artifact)
        summary = outcome.result.summary.as_dict()
        summary.pop("losses")
        summary["micro_batch_size"] = outcome.micro_batch_size
        write_atomic(path.with_suffix(".json"), json.dumps(summary, indent=2).encode())
        shutil.rmtree(checkpoints, ignore_errors=True)
        return path

    def _paint(
        self, item: WorkItem, subject: BenchSubject, background: BenchBackground, artifact: Path | None
    ) -> None:
        request = PaintRequest(
            background.room,
            background.mask,
            seed=stable_seed(self.settings.seed, "paint", item.subject, item.background),
            # the baseline paints from the crop an adapter would store; a trained one from its file
            reference_embedding=self.reference(subject)[1] if artifact is None else None,
        )
        [image] = self.painter.paint(
            [request],
            adapter_id=None if artifact is None else str(artifact),
            steps=self.settings.paint_steps,
            guidance_scale=self.settings.guidance_scale,
        )
        write_atomic(self.image_path(item), png_bytes(image))


def _injected_rank(base: BaseModel) -> int:
    from models.lora import DEFAULT_RANK, lora_spec_of

    return lora_spec_of(base.unet).rank if getattr(base.unet, "roomfit_lora", None) else DEFAULT_RANK
