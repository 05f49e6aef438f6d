"""The browser tests' world: the real service (`roomfit up`, tiny models) in a temporary folder,
started once per test session, a headless Chromium (Debian's, through Playwright), and what the tests
draw with: generated photos, the mask and room the widget sent, screenshots."""

from __future__ import annotations

import base64
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path(os.environ.get("ROOMFIT_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
READY_TIMEOUT = 180.0
WORKERS = 3  # train, preview, webhooks
TRAIN_STEPS = "4"  # enough for a loss curve; the suite waits for the training once
# Screenshots go to docs/screenshots/ when ROOMFIT_SCREENSHOTS=1 (the README shows them), else to
# the test's own folder: a plain test run leaves the tracked files alone.
SCREENSHOTS = ROOT / "docs" / "screenshots"


@dataclass
class Server:
    base: str  # the demo shop's origin, http://127.0.0.1:PORT
    api: str  # the same service as the demo's widget reaches it, http://localhost:PORT
    port: int
    folder: Path
    log: Path
    env: dict[str, str]
    publishable_key: str
    extra: dict[str, Any] = field(default_factory=dict)

    def cli(self, *args: str) -> dict[str, Any]:
        """`roomfit ...` against this server's state folder, its JSON answer."""
        done = subprocess.run(
            [sys.executable, "-m", "cli.main", *args],
            cwd=self.folder,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        return json.loads(done.stdout)  # type: ignore[no-any-return]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as resp:
            return resp.status == 200
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """`roomfit up` on a free port in a fresh folder (as tests/test_embedded_up.py starts it); one for
    every browser module (the widget's and the ops console's), as starting and stopping it costs
    about 30 s. Each module makes its own subjects and compares against the API, never a count of
    everything there is."""
    folder = tmp_path_factory.mktemp("up")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROOMFIT_")}
    env.update(PYTHONUNBUFFERED="1", PYTHONPATH=str(ROOT), ROOMFIT_TRAIN_STEPS=TRAIN_STEPS)
    log_path = folder / "up.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "cli.main", "up", "--port", str(port)],
            cwd=folder,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline and proc.poll() is None:
            if _ready(port) and log_path.read_text(errors="replace").count("ready.") >= WORKERS:
                break
            time.sleep(0.5)
        else:
            raise AssertionError(
                "roomfit up never became ready:\n" + log_path.read_text(errors="replace")[-4000:]
            )
        key = (folder / "var" / "dev-publishable-key.txt").read_text().strip()
        yield Server(
            base=f"http://127.0.0.1:{port}",
            api=f"http://localhost:{port}",
            port=port,
            folder=folder,
            log=log_path,
            env=env,
            publishable_key=key,
        )
    finally:
        proc.send_signal(signal.SIGINT)  # what Ctrl-C sends: every child is stopped
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    sync_api = pytest.importorskip("playwright.sync_api")
    if not CHROMIUM.exists():
        pytest.skip(f"no Chromium at {CHROMIUM} (Debian: apt-get install chromium)")
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def screenshot_folder(otherwise: Path) -> Path:
    """docs/screenshots/ with ROOMFIT_SCREENSHOTS=1, else `otherwise`."""
    if os.environ.get("ROOMFIT_SCREENSHOTS") == "1":
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        return SCREENSHOTS
    return otherwise


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    """Where this test's screenshots go."""
    return screenshot_folder(tmp_path)


# --- pictures -----------------------------------------------------------------------------------
def room_picture(width: int, height: int) -> Image.Image:
    """A plain drawn room (wall, window, floor, skirting): smooth, so files and screenshots stay
    small. Drawn at most 1600 pixels wide, then scaled: a 13000-pixel room costs no gigabytes."""
    w, h = min(width, 1600), max(1, round(height * min(width, 1600) / width))
    y = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None] * np.ones((1, w), np.float32)
    x = np.linspace(0.0, 1.0, w, dtype=np.float32)[None, :] * np.ones((h, 1), np.float32)
    wall = np.stack([232 - 30 * y + 8 * x, 226 - 26 * y, 214 - 30 * y], axis=-1)
    grain = np.sin(40 * x)
    wood = np.stack([150 + 20 * grain, 108 + 12 * grain, 72 + 0 * grain], axis=-1)
    pixels = np.where((y > 0.68)[..., None], wood, wall)
    pixels[(x > 0.62) & (x < 0.86) & (y > 0.12) & (y < 0.5)] = (182, 210, 238)  # a window
    pixels[(y > 0.66) & (y < 0.69)] = (245, 245, 240)  # the skirting board
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")
    return image if (w, h) == (width, height) else image.resize((width, height), Image.BILINEAR)


def product_photo(seed: int, size: int = 256) -> Image.Image:
    """A product on its own: a coloured block with a little texture (the tiny detector is not used)."""
    rng = np.random.default_rng(seed)
    base = np.array([[[70 + 60 * seed, 110, 160 - 40 * seed]]], dtype=np.float32)
    pixels = base + rng.normal(0, 12, (size, size, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")


def save(image: Image.Image, path: Path, **options: Any) -> Path:
    image.save(path, **options)
    return path


# --- what the widget sent -----------------------------------------------------------------------
# Request bodies of file uploads are not visible to Playwright, so the page keeps the widget's own
# `roomfit:submit` event: the exact room and mask blobs it put in the form.
CAPTURE = """(widget) => {
  window.roomfitSent = [];
  const encode = async (blob) => {
    const bytes = new Uint8Array(await blob.arrayBuffer());
    let text = "";
    for (let i = 0; i < bytes.length; i += 0x8000) {
      text += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
    }
    return btoa(text);
  };
  widget.addEventListener("roomfit:submit", async (e) => {
    const {seed, width, height} = e.detail;
    const entry = {seed, width, height, type: e.detail.room.type};
    entry.room = await encode(e.detail.room);
    entry.mask = await encode(e.detail.mask);
    window.roomfitSent.push(entry);
  });
}"""


def sent_requests(page: Any, count: int, timeout: float = 30.0) -> list[dict[str, Any]]:
    """The first `count` requests the widget sent, with `room` and `mask` as bytes."""
    deadline = time.monotonic() + timeout
    while True:
        found = page.evaluate("() => (window.roomfitSent || []).filter((e) => e.mask)")
        if len(found) >= count or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert len(found) >= count, f"the widget sent {len(found)} requests, expected {count}"
    for entry in found:
        entry["room"] = base64.b64decode(entry["room"])
        entry["mask"] = base64.b64decode(entry["mask"])
    return found  # type: ignore[no-any-return]


# What the shopper drew on the widget's mask canvas (any alpha), as one byte a pixel in base64.
DRAWN = """(canvas) => {
  const {width, height} = canvas;
  const rgba = canvas.getContext("2d").getImageData(0, 0, width, height).data;
  const drawn = new Uint8Array(width * height);
  for (let i = 0; i < drawn.length; i++) drawn[i] = rgba[4 * i + 3] ? 1 : 0;
  let text = "";
  for (let i = 0; i < drawn.length; i += 0x8000) {
    text += String.fromCharCode.apply(null, drawn.subarray(i, i + 0x8000));
  }
  return {width, height, data: btoa(text)};
}"""


def drawn_on(canvas: Any) -> np.ndarray:
    """[H,W] bool: the pixels of the widget's mask canvas (a Playwright locator) the shopper drew."""
    found = canvas.evaluate(DRAWN)
    drawn = np.frombuffer(base64.b64decode(found["data"]), np.uint8)
    return drawn.reshape(found["height"], found["width"]).astype(bool)


def api_paints(mask_png: bytes) -> np.ndarray:
    """[H,W] bool: what the API paints of this mask, by the mask rule (docs/api.md, "Masks: which
    pixels paint"): `api.image_checks.check_mask`, the reading every upload gets."""
    from api.image_checks import check_mask
    from api.multipart import UploadedFile

    width, height = Image.open(io.BytesIO(mask_png)).size
    upload = UploadedFile(field="mask", filename="mask.png", file=io.BytesIO(mask_png), size=len(mask_png))
    return np.asarray(check_mask(upload, size=(width, height), max_pixels=width * height)) > 0


def check_painted_only_inside(result_png: bytes, room: bytes, mask_png: bytes) -> np.ndarray:
    """The result has the room's size, and every pixel where the mask is 0 equals the room's."""
    mask_image = Image.open(io.BytesIO(mask_png))
    assert mask_image.format == "PNG" and mask_image.mode == "L", "a grey PNG without alpha"
    mask = np.asarray(mask_image)
    assert set(np.unique(mask).tolist()) <= {0, 255} and mask.any()
    assert np.array_equal(api_paints(mask_png), mask == 255), "by the mask rule it paints other pixels"
    before = np.asarray(Image.open(io.BytesIO(room)).convert("RGB"))
    after = np.asarray(Image.open(io.BytesIO(result_png)).convert("RGB"))
    assert after.shape == before.shape, f"result {after.shape[:2]} is not the room's {before.shape[:2]}"
    assert mask.shape == before.shape[:2]
    keep = mask == 0
    assert np.array_equal(after[keep], before[keep]), "a pixel outside the mask changed"
    assert not np.array_equal(after[~keep], before[~keep]), "nothing was painted inside the mask"
    return mask


@contextmanager
def stand_in_page(
    browser: Any, origin: str, handle: Callable[[Any, Any], None], path: str, height: int = 900
) -> Iterator[Any]:
    """A desktop page at `origin + path` whose every request to `origin` `handle(route, request)`
    answers (the test decides what the service says, and when). On leaving, the page must have raised
    no error and refused nothing under its Content-Security-Policy."""
    context = browser.new_context(viewport={"width": 1280, "height": height})
    page = context.new_page()
    complaints: list[str] = []
    page.on("pageerror", lambda error: complaints.append(f"page error: {error}"))
    page.on("console", lambda m: complaints.append(m.text) if "Content Security Policy" in m.text else None)
    page.route(f"{origin}/**", handle)
    try:
        page.goto(f"{origin}{path}")
        yield page
    finally:
        context.close()
    assert complaints == [], complaints
