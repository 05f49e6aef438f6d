"""The image-memory budget's estimate for images whose decoder holds more than their pixels: a
progressive JPEG (libjpeg keeps every coefficient of the whole image, even in draft mode), a JPEG
whose components come in separate scans (the same buffer) and a WebP (libwebp's canvases).

The estimates are checked against what decoding really takes (the peak resident size of a fresh
process, since Pillow's allocations are C's), and a progressive JPEG that does not fit the room left
in the budget must wait and answer 503 `server_busy` like any other image, not slip in."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from api import image_budget
from api.image_budget import BUDGET, jpeg_coefficient_bytes
from api.image_checks import ImageLimits, read_header
from api.multipart import UploadedFile
from tests.api.conftest import ApiEnv
from tests.api.test_image_limits import BudgetHolder

ROOT = Path(__file__).resolve().parents[2]
LIMITS = ImageLimits(40_000_000, 12_000, 10, 160_000_000, 0)


def _picture(width: int, height: int) -> Image.Image:
    """Smooth gradients with some texture: a photograph's entropy, cheaply."""
    x = np.linspace(0, 255, width, dtype=np.float32)[None, :]
    y = np.linspace(0, 255, height, dtype=np.float32)[:, None]
    noise = np.random.default_rng(width).normal(0, 6, (height, 1, 1)).astype(np.float32)
    rgb = np.stack([x + 0 * y, y + 0 * x, (x + y) / 2], -1) + noise
    return Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8), "RGB")


def _encoded(image: Image.Image, fmt: str, **save: Any) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **save)
    return out.getvalue()


def _upload(data: bytes) -> UploadedFile:
    return UploadedFile("room", "room", io.BytesIO(data), size=len(data))


def _one_scan_per_component(jpeg: bytes) -> bytes:
    """`jpeg` with its first scan cut down to its first component, as a sequential JPEG whose
    components come in separate scans begins (only the markers matter here: it is never decoded)."""
    sos = jpeg.index(b"\xff\xda")
    length = int.from_bytes(jpeg[sos + 2 : sos + 4], "big")
    first_component = jpeg[sos + 5 : sos + 7]
    tail = jpeg[sos + 2 + length - 3 : sos + 2 + length]  # Ss, Se, Ah/Al
    return jpeg[:sos] + b"\xff\xda\x00\x08\x01" + first_component + tail + jpeg[sos + 2 + length :]


# --- the estimate, from the header -------------------------------------------------------------


@pytest.mark.parametrize(("subsampling", "blocks_per_mcu", "mcu"), [(2, 6, 16), (0, 3, 8)])
def test_a_progressive_jpeg_reserves_every_coefficient_even_in_draft_mode(
    subsampling: int, blocks_per_mcu: int, mcu: int
) -> None:
    image = _picture(1000, 750)
    data = _encoded(image, "JPEG", progressive=True, subsampling=subsampling)
    progressive = read_header(_upload(data), what="room", limits=LIMITS)
    assert progressive.jpeg_as_sent  # decoded in draft mode at 1/8 scale, yet...
    # ...libjpeg holds 64 coefficients of 2 bytes per 8x8 block of each component, in whole MCUs.
    coefficients = -(-1000 // mcu) * -(-750 // mcu) * blocks_per_mcu * 64 * 2
    assert progressive.coefficient_bytes == coefficients
    assert progressive.peak_bytes() >= coefficients + progressive.upload.size

    baseline = read_header(
        _upload(_encoded(image, "JPEG", subsampling=subsampling)), what="room", limits=LIMITS
    )
    assert baseline.coefficient_bytes == 0  # one scan: decoded a few rows at a time
    assert baseline.peak_bytes() < coefficients // 10


def test_a_jpeg_with_its_components_in_separate_scans_counts_as_several_scans() -> None:
    baseline = _encoded(_picture(800, 600), "JPEG", subsampling=0)
    header = read_header(_upload(_one_scan_per_component(baseline)), what="room", limits=LIMITS)
    assert "progressive" not in Image.open(io.BytesIO(baseline)).info
    assert header.coefficient_bytes == jpeg_coefficient_bytes((800, 600), [(1, 1)] * 3)


def test_a_full_decode_of_a_progressive_jpeg_reserves_coefficients_and_pixels_together() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # turned: decoded at full size, then turned and stored as PNG
    data = _encoded(_picture(1000, 750), "JPEG", progressive=True, subsampling=0, exif=exif.tobytes())
    header = read_header(_upload(data), what="room", limits=LIMITS)
    assert not header.jpeg_as_sent
    # While the pixels are decoded, the coefficients (4:4:4) and the image (4 bytes a pixel) at once.
    coefficients = jpeg_coefficient_bytes((1000, 750), [(1, 1)] * 3)
    assert header.coefficient_bytes == coefficients
    assert header.peak_bytes() >= coefficients + 1000 * 750 * 4 + len(data)


# --- the estimate, against what decoding takes -------------------------------------------------

MEASURE = textwrap.dedent(
    """
    import io, json, sys
    from api.image_checks import ImageLimits, decode_image, read_header
    from api.multipart import UploadedFile

    def status(field):
        for line in open("/proc/self/status"):
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024

    data = open(sys.argv[1], "rb").read()
    upload = UploadedFile("room", "room", io.BytesIO(data), size=len(data))
    header = read_header(upload, what="room", limits=ImageLimits(40_000_000, 12_000, 10, 160_000_000, 0))
    with open("/proc/self/clear_refs", "w") as refs:  # forget the peak so far (Linux)
        refs.write("5")
    before = status("VmRSS")
    decode_image(header)
    print(json.dumps({"reserved": header.peak_bytes(), "grew": status("VmHWM") - before}))
    """
)


def _measured(tmp_path: Path, data: bytes) -> dict[str, int]:
    """Reserved and the peak resident growth of `decode_image` on `data`, in a fresh process."""
    if not Path("/proc/self/clear_refs").exists():
        pytest.skip("needs Linux's /proc/self/clear_refs to reset the peak resident size")
    path = tmp_path / "image"
    path.write_bytes(data)
    done = subprocess.run(
        [sys.executable, "-c", MEASURE, str(path)], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    if done.returncode != 0 and "clear_refs" in done.stderr:
        pytest.skip("cannot reset the peak resident size here")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("fmt", "save"),
    [
        ("JPEG", {"progressive": True, "subsampling": 0}),
        ("JPEG", {"progressive": True, "subsampling": 2}),
        ("WEBP", {"quality": 80, "method": 0}),
    ],
    ids=["progressive-444", "progressive-420", "webp"],
)
def test_the_reservation_covers_the_measured_decoding_peak(
    tmp_path: Path, fmt: str, save: dict[str, Any]
) -> None:
    # 2400x1800: 4.3 MP, large enough that the decoder's buffers dwarf the process's noise.
    got = _measured(tmp_path, _encoded(_picture(2400, 1800), fmt, **save))
    assert got["grew"] > 10 * 2**20  # the decoder really holds a full-size buffer
    assert got["reserved"] >= got["grew"], got
    assert got["reserved"] <= 1.5 * got["grew"] + 2**20, got  # an upper bound, not a wild one


# --- at the API --------------------------------------------------------------------------------


@pytest.fixture
def short_wait(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(image_budget, "WAIT_SECONDS", 0.2)
    yield
    assert BUDGET.in_use == 0


def _subject(env: ApiEnv, photo: bytes) -> Any:
    return env.client.post(
        "/v1/subjects",
        headers=env.a.auth(),
        data={"name": "sofa"},
        files=[("photos", ("p.jpg", photo, "image/jpeg"))],
    )


def test_a_progressive_jpeg_that_does_not_fit_the_room_left_waits_and_answers_503(
    sqlite_env: ApiEnv, short_wait: None
) -> None:
    env = sqlite_env
    capacity = env.settings.api_memory_budget_bytes
    image = _picture(2400, 1800)
    progressive = _encoded(image, "JPEG", progressive=True, subsampling=0)
    baseline = _encoded(image, "JPEG", subsampling=0)
    # Room for the baseline JPEG (file and a 1/8 draft) but not for the progressive one's 26 MB of
    # coefficients, which libjpeg holds however small the draft.
    room = 4 * 2**20
    assert read_header(_upload(baseline), what="p", limits=LIMITS).peak_bytes() < room
    with BudgetHolder(capacity, capacity - room):
        response = _subject(env, progressive)
        assert response.status_code == 503, response.text
        assert response.headers["content-type"].startswith("application/problem+json")
        assert response.json()["code"] == "server_busy"
        assert response.headers["Retry-After"].isdigit()
        assert _subject(env, baseline).status_code == 202
    assert _subject(env, progressive).status_code == 202  # once there is room
