/*!
 * roomfit storefront widget, v1.
 *
 *   <script src="https://roomfit.example/widget/v1.js" defer></script>
 *   <roomfit-preview subject="sub_…" key="pk_…"></roomfit-preview>
 *
 * A shopper picks, drops or takes a photo of their room, paints where the product should go, and
 * gets the shop's product painted into the photo. Attributes: `subject` (a ready subject's id),
 * `key` (a publishable key that lists this page's origin) and `api` (the service's origin; by
 * default the origin this script was loaded from). Events on the element: `roomfit:submit` (detail:
 * the room and the mask it sends), `roomfit:result` (the preview and the picture shown: a WebP or
 * JPEG rendition sized for the screen; Download saves the exact PNG), `roomfit:deleted` (detail:
 * how many previews "Delete my photos" deleted: each held a copy of the room photo),
 * `roomfit:error` (the problem code and the message shown).
 *
 * Progress is pushed: GET /v1/previews/{id}/events (Server-Sent Events, read with fetch because
 * EventSource cannot send the key), resumed with Last-Event-ID; a service without it is polled.
 *
 * No framework, no build step, nothing fetched but the API: this file is served as it is.
 */
(() => {
  "use strict";
  const TAG = "roomfit-preview";
  if (!window.customElements || customElements.get(TAG)) return;

  const SCRIPT_ORIGIN = originOf(document.currentScript && document.currentScript.src) || location.origin;

  // The service's default limits (docs/api.md, SECURITY.md). A photo past them is scaled down here,
  // with its mask, before it is sent; a service set to lower ones still answers with a clear code.
  const LIMITS = { side: 12000, pixels: 40000000, bytes: 20 * 1024 * 1024, aspect: 10 };
  const SENT_AS_IS = ["image/jpeg", "image/png", "image/webp"];
  const PAINT = "rgb(255, 40, 120)"; // how the mask looks; its opacity is in the CSS
  // Answers that come with Retry-After: wait that long and send again, a few times.
  const RETRYABLE = new Set(["rate_limited", "too_many_jobs", "server_busy", "service_unavailable"]);
  // A preview's final statuses: the name of the event stream's last event, too.
  const TERMINAL = new Set(["succeeded", "failed", "cancelled"]);
  const MAX_RETRIES = 3;
  // Problems that sending the same request again cannot fix: no "Try again" button for them.
  const FINAL = new Set([
    "config", "mask_empty", "image_too_large", "image_shape_not_allowed", "request_too_large", "payload_too_large",
    "unsupported_media_type", "image_unreadable", "origin_not_allowed", "unauthorized", "forbidden", "not_found",
  ]);
  // Polling GET /v1/previews/{id}, where the event stream is missing (an older service): gentle, and growing.
  const POLL = { first: 500, factor: 1.5, max: 4000, offlineMax: 15000, patience: 15 * 60 * 1000 };
  // The event stream: a stream that ends before the preview does is opened again at once (a proxy's
  // idle timeout, a restart), later each time if they keep ending within `long` ms; one that cannot
  // be opened, after a growing wait. Three failed opens in a row and the widget polls instead: that
  // is also what a network that breaks long responses needs.
  const STREAM = { reopen: 250, long: 30000, first: 1000, max: 15000, failures: 3 };
  // The result is shown from a rendition the size of the screen: longest side on screen × the
  // device's pixel ratio, rounded up to a step so that every view near that size asks for the same
  // rendition (the service makes each once and keeps it), and capped: past 2048 px a phone or
  // laptop shows no more. The exact PNG is fetched only when the shopper downloads it.
  const RENDITION = { step: 256, cap: 2048 };
  // A 1x1 lossy WebP: whether this browser decodes WebP (else the rendition is a JPEG).
  const WEBP_1PX = "UklGRiIAAABXRUJQVlA4IBYAAAAwAQCdASoBAAEADsD+JaQAA3AAAAAA";

  // What the shopper reads for each problem code of the API (and a few of the widget's own).
  const MESSAGES = {
    rate_limited: "Too many requests from this page just now.",
    too_many_jobs: "Many previews are being painted right now.",
    server_busy: "The preview service is busy.",
    service_unavailable: "The preview service is briefly unavailable.",
    subject_not_ready: "This product is not ready for previews yet. Please try again later.",
    image_too_large: "This photo is too large. Please use one under 20 MB and 40 megapixels.",
    image_shape_not_allowed:
      "This photo is too long and narrow. Please use one at most 10 times as wide as it is tall " +
      "(or as tall as it is wide).",
    request_too_large: "This photo is too large to send. Please use a smaller one.",
    payload_too_large: "This photo is too large to send. Please use a smaller one.",
    unsupported_media_type: "This kind of file can't be used. Please choose a JPEG, PNG or WebP photo.",
    image_unreadable: "This photo could not be read. Please try another one.",
    mask_empty: "Paint over the spot where the product should go first.",
    mask_size_mismatch: "The painted area does not match the photo. Please choose the photo again.",
    origin_not_allowed: "Previews are not enabled for this website: the shop's key does not list this site.",
    unauthorized: "Previews are not set up correctly here: the shop's key is missing, unknown or revoked.",
    forbidden: "Previews are not set up correctly here: this key may not make previews.",
    validation_error: "The preview request was not accepted.",
    not_found: "This product could not be found. It may have been removed.",
    preview_gone: "This preview could not be found any more. Please try again.",
    preview_failed: "The preview could not be painted. Please try again.",
    preview_cancelled: "This preview was stopped by the service. Please try again.",
    network: "Cannot reach the preview service. Please check your connection and try again.",
    blocked:
      "The preview service refused this page, or the connection dropped. " +
      "If it keeps happening, previews are not enabled for this website.",
    too_slow: "This is taking much longer than usual.",
    config: "This preview is not set up: the page must give a product (subject) and a key.",
    photo_unreadable: "Your browser could not open this photo. Please try a JPEG or PNG photo.",
    photo_not_prepared: "Your browser could not prepare this photo to send. Please try a smaller one.",
    not_an_image: "That file is not a photo. Please choose an image file.",
    generic: "Something went wrong. Please try again.",
  };

  const CSS = `
    :host { display: block; font: inherit; color: inherit; --accent: var(--roomfit-accent, #1f5fd1);
      --radius: var(--roomfit-radius, 8px); max-width: 100%; }
    [hidden] { display: none !important; }
    * { box-sizing: border-box; }
    .root { display: grid; gap: 12px; }
    .vh { position: absolute; width: 1px; height: 1px; overflow: hidden; clip: rect(0 0 0 0);
      clip-path: inset(50%); white-space: nowrap; }
    .btn, button { font: inherit; min-height: 44px; padding: 8px 14px; border-radius: var(--radius);
      border: 1px solid #8a8f98; background: #fff; color: #1b1d21; cursor: pointer; display: inline-flex;
      align-items: center; justify-content: center; gap: 6px; text-decoration: none; }
    .btn:hover, button:hover { border-color: #1b1d21; }
    .primary { background: var(--accent); border-color: var(--accent); color: #fff; }
    .primary:hover { filter: brightness(1.1); border-color: var(--accent); }
    button:disabled, .btn.disabled { opacity: .45; cursor: not-allowed; filter: none; }
    button[aria-pressed="true"] { background: #1b1d21; border-color: #1b1d21; color: #fff; }
    button:focus-visible, .btn:focus-within, .btn:focus-visible, input:focus-visible, canvas:focus-visible {
      outline: 3px solid var(--accent); outline-offset: 2px; }
    .pick { border: 2px dashed #8a8f98; border-radius: var(--radius); padding: 20px 16px; text-align: center;
      display: grid; gap: 12px; justify-items: center; }
    .pick.over { border-color: var(--accent); background: #eef3fd; }
    .pick p { margin: 0; }
    .lead { font-weight: 600; font-size: 1.1em; }
    .row { display: flex; flex-wrap: wrap; gap: 8px; align-items: center; }
    .tools { display: flex; gap: 4px; }
    .size { display: inline-flex; align-items: center; gap: 6px; min-height: 44px; }
    .size input { width: 110px; }
    @media (max-width: 420px) { .btn, button { padding: 8px 11px; } .size input { width: 84px; } }
    .stage { position: relative; margin: 0 auto; width: 100%; background: #e9ebee; line-height: 0;
      border-radius: var(--radius); overflow: hidden; user-select: none; -webkit-user-select: none; }
    .photo, .after { display: block; width: 100%; height: auto; }
    .mask { position: absolute; inset: 0; width: 100%; height: 100%; opacity: .5; cursor: crosshair;
      touch-action: none; }
    .after { position: absolute; inset: 0; height: 100%; }
    .band { position: absolute; border: 2px dashed #fff; outline: 1px solid #000; pointer-events: none; }
    .cursor { position: absolute; width: 18px; height: 18px; margin: -9px 0 0 -9px; border: 2px solid #fff;
      outline: 1px solid #000; border-radius: 50%; pointer-events: none; }
    .divider { position: absolute; top: 0; bottom: 0; width: 2px; margin-left: -1px; background: #fff;
      box-shadow: 0 0 0 1px rgba(0,0,0,.4); pointer-events: none; }
    .tag { position: absolute; top: 8px; padding: 2px 8px; border-radius: 4px; background: rgba(0,0,0,.6);
      color: #fff; font-size: 12px; line-height: 18px; pointer-events: none; }
    .tag.before { left: 8px; } .tag.after-tag { right: 8px; }
    .compare { display: flex; align-items: center; gap: 8px; }
    .compare input { flex: 1; min-width: 0; min-height: 44px; }
    .wait { display: grid; gap: 6px; }
    .wait progress { width: 100%; height: 12px; }
    .hint, .status { margin: 0; font-size: .92em; color: #454a52; }
    .error { border: 1px solid #c62828; background: #fdecea; color: #7f1010; border-radius: var(--radius);
      padding: 10px 12px; display: grid; gap: 8px; }
    .error p { margin: 0; }
    .error .detail { font-size: .85em; }
  `;

  // --- small helpers --------------------------------------------------------------------------
  function originOf(url) {
    try {
      return url ? new URL(url, location.href).origin : "";
    } catch {
      return "";
    }
  }

  /** An element with properties (`hidden`, `disabled`, `onclick`…) or attributes, and children. */
  function h(tag, props, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(props || {})) {
      if (name === "class") node.className = value;
      else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
      else if (typeof value === "boolean") node[name] = value;
      else node.setAttribute(name, value);
    }
    node.append(...children.filter((c) => c !== null && c !== undefined));
    return node;
  }

  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
  const jitter = (ms) => Math.round(ms * (0.8 + Math.random() * 0.4));
  const canvasBlob = (canvas, type, quality) =>
    new Promise((resolve, reject) =>
      canvas.toBlob((b) => (b ? resolve(b) : reject(new Error("encode failed"))), type, quality),
    );

  function randomSeed() {
    return crypto.getRandomValues(new Uint32Array(1))[0];
  }

  function newKey() {
    if (crypto.randomUUID) return crypto.randomUUID();
    return Array.from(crypto.getRandomValues(new Uint8Array(16)), (b) => b.toString(16).padStart(2, "0")).join("");
  }

  /** The size a photo must be sent at: within the side and pixel limits, never larger than it is. */
  function fitWithinLimits(width, height) {
    const scale = Math.min(1, LIMITS.side / Math.max(width, height), Math.sqrt(LIMITS.pixels / (width * height)));
    return {
      width: Math.max(1, Math.floor(width * scale)),
      height: Math.max(1, Math.floor(height * scale)),
      scaled: scale < 1,
    };
  }

  // --- Server-Sent Events over fetch ------------------------------------------------------------
  /**
   * Read a `text/event-stream` body (a ReadableStream of bytes) to its end, calling `dispatch({event,
   * data, id})` for each event, as the HTML standard's EventSource parses it: lines end in CRLF, LF
   * or CR (a CR at a chunk's end waits for the next chunk); `:` starts a comment (heartbeats);
   * `field: value` (one space after the colon dropped) for `event`, `data` (several are joined with
   * newlines), `id` (kept for Last-Event-ID, also by events without data) and `retry` (ignored: the
   * widget keeps its own backoff); a blank line ends an event (`data` null when it had none). An event
   * cut off by the end of the stream is dropped: its id was not seen, so a reconnect asks for it again.
   */
  async function readEvents(body, dispatch) {
    const reader = body.getReader();
    const decoder = new TextDecoder(); // UTF-8; a character split across chunks waits for its rest
    let buffer = "";
    let event = "";
    let data = [];
    let id = null;
    const line = (text) => {
      if (text === "") {
        // Every event's id counts (Last-Event-ID), also one without data, which is not an event.
        dispatch({ event: event || "message", data: data.length ? data.join("\n") : null, id });
        event = "";
        data = [];
        return;
      }
      if (text.startsWith(":")) return;
      const colon = text.indexOf(":");
      const field = colon < 0 ? text : text.slice(0, colon);
      let value = colon < 0 ? "" : text.slice(colon + 1);
      if (value.startsWith(" ")) value = value.slice(1);
      if (field === "event") event = value;
      else if (field === "data") data.push(value);
      else if (field === "id" && !value.includes("\0")) id = value;
    };
    try {
      for (;;) {
        const { value, done } = await reader.read();
        buffer += done ? decoder.decode() : decoder.decode(value, { stream: true });
        const ends = /\r\n|\r|\n/g;
        let start = 0;
        for (let match; (match = ends.exec(buffer)); ) {
          if (!done && match[0] === "\r" && match.index === buffer.length - 1) break; // CR, maybe CRLF
          line(buffer.slice(start, match.index));
          start = ends.lastIndex;
        }
        buffer = buffer.slice(start);
        if (done) return;
      }
    } finally {
      reader.releaseLock();
    }
  }

  /** Whether this browser decodes WebP: a 1x1 one decoded once (createImageBitmap: no page CSP involved). */
  let webp = null;
  function decodesWebp() {
    if (webp === null) {
      const bytes = Uint8Array.from(atob(WEBP_1PX), (c) => c.charCodeAt(0));
      webp = createImageBitmap(new Blob([bytes], { type: "image/webp" })).then(
        (bitmap) => (bitmap.close(), true),
        () => false,
      );
    }
    return webp;
  }

  /** The rendition's longest side for a picture shown `box` big (CSS pixels) on this screen. */
  function renditionSide(box) {
    const shown = Math.max(box.width, box.height) * (window.devicePixelRatio || 1) || RENDITION.cap;
    return Math.min(RENDITION.cap, Math.max(RENDITION.step, Math.ceil(shown / RENDITION.step) * RENDITION.step));
  }

  // --- the mask as a PNG: 8-bit grey, 255 = paint, 0 = keep, no alpha ---------------------------
  // Written here rather than by canvas.toBlob: by the mask rule (docs/api.md, "Masks: which pixels
  // paint") a PNG with transparency paints only where alpha >= 128, so a stroke's faint edges would
  // be lost; a fully opaque grey PNG paints every pixel that is not 0, which is every pixel drawn.
  const CRC_TABLE = (() => {
    const table = new Uint32Array(256);
    for (let n = 0; n < 256; n++) {
      let c = n;
      for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
      table[n] = c >>> 0;
    }
    return table;
  })();

  function pngChunk(type, data) {
    const out = new Uint8Array(12 + data.length);
    const view = new DataView(out.buffer);
    view.setUint32(0, data.length);
    for (let i = 0; i < 4; i++) out[4 + i] = type.charCodeAt(i);
    out.set(data, 8);
    let crc = 0xffffffff;
    for (let i = 4; i < 8 + data.length; i++) crc = CRC_TABLE[(crc ^ out[i]) & 0xff] ^ (crc >>> 8);
    view.setUint32(8 + data.length, (crc ^ 0xffffffff) >>> 0);
    return out;
  }

  /** zlib data of `chunks` (CompressionStream), or stored (uncompressed) blocks where it is missing. */
  async function zlib(chunks) {
    if (window.CompressionStream) {
      const stream = new CompressionStream("deflate"); // "deflate" is the zlib format PNG wants
      const collected = new Response(stream.readable).arrayBuffer();
      const writer = stream.writable.getWriter();
      for (const chunk of chunks()) await writer.write(chunk);
      await writer.close();
      return new Uint8Array(await collected);
    }
    // Stored (uncompressed) deflate blocks: larger, but any browser can make them.
    const data = new Uint8Array(await new Blob(Array.from(chunks())).arrayBuffer());
    const parts = [new Uint8Array([0x78, 0x01])];
    for (let at = 0; at === 0 || at < data.length; at += 65535) {
      const piece = data.subarray(at, at + 65535);
      const n = piece.length;
      const last = at + 65535 >= data.length ? 1 : 0;
      parts.push(new Uint8Array([last, n & 255, n >> 8, ~n & 255, (~n >> 8) & 255]), piece);
    }
    let a = 1;
    let b = 0;
    for (const byte of data) {
      a = (a + byte) % 65521;
      b = (b + a) % 65521;
    }
    const adler = new Uint8Array(4);
    new DataView(adler.buffer).setUint32(0, ((b << 16) | a) >>> 0);
    parts.push(adler);
    return new Uint8Array(await new Blob(parts).arrayBuffer());
  }

  /** The mask canvas (painted = any alpha) as a grey PNG; `painted` says whether any pixel paints. */
  async function maskPng(canvas) {
    const { width, height } = canvas;
    const g = canvas.getContext("2d");
    const rowsPerBand = Math.max(1, Math.floor(4000000 / width)); // ~16 MB of RGBA read at a time
    let painted = false;
    function* scanlines() {
      for (let y = 0; y < height; y += rowsPerBand) {
        const rows = Math.min(rowsPerBand, height - y);
        const rgba = g.getImageData(0, y, width, rows).data;
        const out = new Uint8Array(rows * (width + 1)); // each row: filter byte 0, then its pixels
        for (let r = 0, i = 3; r < rows; r++) {
          const row = r * (width + 1) + 1;
          for (let x = 0; x < width; x++, i += 4) {
            if (rgba[i] !== 0) {
              out[row + x] = 255;
              painted = true;
            }
          }
        }
        yield out;
      }
    }
    const idat = await zlib(scanlines);
    const ihdr = new Uint8Array(13);
    const view = new DataView(ihdr.buffer);
    view.setUint32(0, width);
    view.setUint32(4, height);
    ihdr.set([8, 0, 0, 0, 0], 8); // 8 bits, greyscale, deflate, no filter method, no interlace
    const signature = new Uint8Array([137, 80, 78, 71, 13, 10, 26, 10]);
    const chunks = [pngChunk("IHDR", ihdr), pngChunk("IDAT", idat), pngChunk("IEND", new Uint8Array())];
    const blob = new Blob([signature, ...chunks], { type: "image/png" });
    return { blob, painted };
  }

  // --- drawing: one operation of the mask's history, replayed for undo and redo ------------------
  function paintOp(g, op) {
    g.save();
    g.globalCompositeOperation = op.tool === "eraser" ? "destination-out" : "source-over";
    g.fillStyle = g.strokeStyle = PAINT;
    g.lineCap = g.lineJoin = "round";
    g.lineWidth = op.size;
    if (op.tool === "clear") {
      g.clearRect(0, 0, g.canvas.width, g.canvas.height);
    } else if (op.tool === "rect") {
      g.fillRect(Math.min(op.x0, op.x1), Math.min(op.y0, op.y1), Math.abs(op.x1 - op.x0), Math.abs(op.y1 - op.y0));
    } else if (op.points.length === 1) {
      g.beginPath();
      g.arc(op.points[0][0], op.points[0][1], op.size / 2, 0, 2 * Math.PI);
      g.fill();
    } else {
      g.beginPath();
      g.moveTo(op.points[0][0], op.points[0][1]);
      for (const [x, y] of op.points.slice(1)) g.lineTo(x, y);
      g.stroke();
    }
    g.restore();
  }

  class RoomfitPreview extends HTMLElement {
    static get observedAttributes() {
      return ["subject", "key", "api"];
    }

    constructor() {
      super();
      this.attachShadow({ mode: "open" });
      this.tool = "brush";
      this.ops = []; // the mask's history since the photo was chosen
      this.undone = [];
      this.room = null; // {file | null, width, height}: what is sent, at the size it is sent
      this.version = 0; // bumped by every change of the photo or the mask
      this.sent = null; // {room, mask, version} of the last request, reused while nothing changed
      this.run = 0; // bumped to abandon whatever is waiting (cancel, new photo, removed element)
      this.closeStream = null; // closes the event stream being read, if one is open
      this.shown = null; // {id, png}: the preview on screen, and its exact PNG once downloaded
      this.made = []; // ids of the previews this element made: what "Delete my photos" deletes
      this.busy = false;
      this.deleting = 0; // the run of "Delete my photos", while it waits
      this.urls = [];
      this.drag = null;
      this.keyCursor = null; // keyboard drawing: [x, y] in photo pixels
      this.keyAnchor = null; // keyboard box: its first corner
      this.build();
      this.show("pick");
    }

    /** Abandon whatever is waiting (cancel, new photo, removed element): a new run, no open stream. */
    nextRun() {
      if (this.closeStream) this.closeStream();
      this.closeStream = null;
      return ++this.run;
    }

    get api() {
      return (this.getAttribute("api") || SCRIPT_ORIGIN).replace(/\/+$/, "");
    }

    attributeChangedCallback(name, before, after) {
      if (before === after || !this.ui) return;
      if (this.ui.error.dataset.code === "config" && this.getAttribute("subject") && this.getAttribute("key")) {
        this.clearError();
      }
      if (name === "subject" && this.view === "wait" && this.deleting !== this.run) {
        // What is being painted is the last product: dropped, the shopper asks for this one.
        this.nextRun();
        this.busy = false;
        this.say("");
        this.show("edit");
      }
      if (name === "subject" && this.view === "result") this.show("edit");
    }

    connectedCallback() {
      // Attributes may come just after the element (frameworks): look once they had their chance.
      queueMicrotask(() => {
        if (!this.getAttribute("subject") || !this.getAttribute("key")) this.fail("config");
      });
      if (originOf(this.api) === location.origin) {
        console.warn(
          "roomfit-preview: the API is on this page's own origin. Browsers send no Origin header on " +
            "same-origin GETs, so a publishable key's polls are refused: serve the API from another origin.",
        );
      }
    }

    disconnectedCallback() {
      // Stop watching (the stream is closed): nobody is looking any more. Put back in a page, it works again.
      if (this.busy) this.cancel();
      else this.nextRun();
    }

    // --- the interface ------------------------------------------------------------------------
    build() {
      const ui = (this.ui = {});
      if ("adoptedStyleSheets" in ShadowRoot.prototype && "replaceSync" in CSSStyleSheet.prototype) {
        // A constructed sheet is no inline <style>: a shop's strict CSP (no 'unsafe-inline') allows it.
        const css = new CSSStyleSheet();
        css.replaceSync(CSS);
        this.shadowRoot.adoptedStyleSheets = [css];
      } else {
        this.shadowRoot.append(h("style", {}, CSS));
      }
      const fileInput = (extra) =>
        h("input", {
          type: "file",
          accept: "image/*",
          class: "vh",
          onchange: (e) => this.picked(e.target),
          ...extra,
        });
      ui.choose = fileInput({});
      ui.camera = fileInput({ capture: "environment" });
      ui.cameraLabel = h("label", { class: "btn" }, "Take a photo", ui.camera);
      ui.cameraLabel.hidden = !matchMedia("(pointer: coarse)").matches;
      ui.pick = h(
        "div",
        { class: "pick", part: "pick" },
        h("p", { class: "lead" }, "See it in your room"),
        h(
          "div",
          { class: "row" },
          h("label", { class: "btn primary" }, "Choose a room photo", ui.choose),
          ui.cameraLabel,
        ),
        h("p", { class: "hint" }, "…or drop a photo here. Then paint where the product should go."),
      );
      for (const type of ["dragenter", "dragover"]) {
        this.addEventListener(type, (e) => {
          e.preventDefault(); // always: a file dropped on a page that did not cancel this is opened
          ui.pick.classList.toggle("over", !this.busy);
        });
      }
      this.addEventListener("dragleave", () => ui.pick.classList.remove("over"));
      this.addEventListener("drop", (e) => {
        e.preventDefault();
        ui.pick.classList.remove("over");
        const file = e.dataTransfer && e.dataTransfer.files[0];
        if (file && !this.busy) this.loadPhoto(file);
      });

      const tool = (name, label) => {
        const button = h("button", { type: "button", onclick: () => this.setTool(name) }, label);
        button.dataset.tool = name;
        return button;
      };
      ui.tools = [tool("brush", "Brush"), tool("eraser", "Eraser"), tool("rect", "Box")];
      ui.size = h("input", { type: "range", min: "4", max: "160", value: "40" });
      // Arrows, named for everyone else: the toolbar fits two rows at 360 px.
      const arrow = (label, keys, action, glyph) =>
        h("button", { type: "button", "aria-label": label, title: `${label} (${keys})`, onclick: action }, glyph);
      ui.undo = arrow("Undo", "Ctrl+Z", () => this.undo(), "↶");
      ui.redo = arrow("Redo", "Ctrl+Shift+Z", () => this.redo(), "↷");
      ui.clear = h("button", { type: "button", onclick: () => this.clearMask() }, "Clear");
      ui.toolbar = h(
        "div",
        { class: "row", role: "group", "aria-label": "Mask tools" },
        h("div", { class: "tools", role: "group", "aria-label": "Tool" }, ...ui.tools),
        h("label", { class: "size" }, "Size", ui.size),
        ui.undo,
        ui.redo,
        ui.clear,
      );

      ui.photo = h("canvas", { class: "photo", "aria-hidden": "true" });
      ui.mask = h("canvas", {
        class: "mask",
        tabindex: "0",
        role: "application",
        "aria-label":
          "Your photo. Paint where the product should go: drag with a finger or the mouse; or move " +
          "with the arrow keys and press Space to paint (with Box: Space at two corners).",
      });
      ui.band = h("div", { class: "band", hidden: true });
      ui.cursor = h("div", { class: "cursor", hidden: true });
      ui.after = h("img", { class: "after", alt: "The product painted into your room", hidden: true });
      ui.divider = h("div", { class: "divider", hidden: true });
      ui.tags = [h("span", { class: "tag before" }, "Before"), h("span", { class: "tag after-tag" }, "After")];
      ui.tags.forEach((t) => (t.hidden = true));
      const layers = [ui.photo, ui.after, ui.divider, ui.mask, ui.band, ui.cursor, ...ui.tags];
      ui.stage = h("div", { class: "stage", part: "stage" }, ...layers);
      this.bindDrawing();

      ui.preview = h("button", { type: "button", class: "primary", onclick: () => this.submit() }, "Preview");
      ui.change = h("button", { type: "button", onclick: () => this.startOver() }, "Change photo");
      ui.hint = h("p", { class: "hint" }, "Paint over the spot where the product should go, then press Preview.");
      ui.edit = h("div", { class: "row" }, ui.preview, ui.change);

      ui.progress = h("progress", { max: "1", "aria-label": "Preview progress" });
      ui.phase = h("p", { class: "status", role: "status", "aria-live": "polite" });
      ui.cancel = h("button", { type: "button", onclick: () => this.cancel() }, "Cancel");
      const row = (...children) => h("div", { class: "row" }, ...children);
      ui.wait = h("div", { class: "wait" }, ui.progress, row(ui.phase), row(ui.cancel));

      ui.slider = h("input", {
        type: "range",
        min: "0",
        max: "100",
        value: "50",
        "aria-label": "Before and after",
        oninput: () => this.compare(),
      });
      ui.download = h(
        "a",
        { class: "btn primary", download: "roomfit-preview.png", href: "#", onclick: (e) => this.download(e) },
        "Download",
      );
      ui.again = h("button", { type: "button", onclick: () => this.submit() }, "Try another");
      ui.back = h("button", { type: "button", onclick: () => this.show("edit") }, "Edit mask");
      ui.restart = h("button", { type: "button", onclick: () => this.startOver() }, "New photo");
      ui.forget = h("button", { type: "button", onclick: () => this.forget() }, "Delete my photos");
      ui.result = h(
        "div",
        { class: "wait" },
        h(
          "div",
          { class: "compare" },
          h("span", { "aria-hidden": "true" }, "Before"),
          ui.slider,
          h("span", { "aria-hidden": "true" }, "After"),
        ),
        row(ui.download, ui.again, ui.back, ui.restart),
        row(ui.forget),
      );

      ui.status = h("p", { class: "status", role: "status", "aria-live": "polite" });
      ui.errorText = h("p", {});
      ui.errorDetail = h("p", { class: "detail" });
      ui.retry = h("button", { type: "button", onclick: () => this.retryAction && this.retryAction() }, "Try again");
      ui.error = h("div", { class: "error", role: "alert", part: "error" }, ui.errorText, ui.errorDetail);
      ui.error.append(row(ui.retry));
      ui.error.hidden = true;
      ui.work = h("div", { class: "root" }, ui.toolbar, ui.stage, ui.hint, ui.edit, ui.wait, ui.result);
      this.shadowRoot.append(h("div", { class: "root", part: "root" }, ui.pick, ui.work, ui.error, ui.status));
      this.addEventListener("keydown", (e) => this.shortcut(e));
    }

    /** Which step is on screen: pick, edit, wait or result. */
    show(view) {
      const ui = this.ui;
      this.view = view;
      ui.pick.hidden = view !== "pick";
      ui.work.hidden = view === "pick";
      ui.toolbar.hidden = ui.hint.hidden = ui.edit.hidden = view !== "edit";
      ui.wait.hidden = view !== "wait";
      ui.result.hidden = view !== "result";
      ui.status.hidden = view === "wait"; // the wait panel says it there
      ui.mask.hidden = view === "result";
      for (const node of [ui.after, ui.divider, ...ui.tags]) node.hidden = view !== "result";
      if (view !== "edit") ui.band.hidden = ui.cursor.hidden = true;
      if (view === "result") this.compare();
      this.sync();
    }

    /** Enable what may be used now: nothing but Cancel while busy, so a click never does twice. */
    sync() {
      const ui = this.ui;
      const busy = this.busy;
      const controls = [...ui.tools, ui.size, ui.clear, ui.change, ui.again, ui.back, ui.restart, ui.forget];
      for (const node of [...controls, ui.slider, ui.choose, ui.camera]) node.disabled = busy;
      ui.tools.forEach((b) => b.setAttribute("aria-pressed", String(b.dataset.tool === this.tool)));
      ui.undo.disabled = busy || this.ops.length === 0;
      ui.redo.disabled = busy || this.undone.length === 0;
      ui.preview.disabled = busy || !this.hasPaint();
      ui.cancel.disabled = !busy;
      ui.retry.disabled = busy;
      ui.download.classList.toggle("disabled", busy);
    }

    say(text) {
      this.ui.status.textContent = text;
    }

    /** Show a problem; `retry` (if given) is what "Try again" does. Controls are usable again. */
    fail(code, { detail = "", retry = null, message = null } = {}) {
      const text = message || MESSAGES[code] || MESSAGES.generic;
      this.busy = false;
      this.retryAction = retry;
      this.ui.errorText.textContent = text;
      this.ui.errorDetail.textContent = detail;
      this.ui.errorDetail.hidden = !detail;
      this.ui.retry.hidden = !retry;
      this.ui.error.hidden = false;
      this.ui.error.dataset.code = code;
      this.say("");
      if (this.view === "wait") this.show("edit");
      this.sync();
      this.dispatchEvent(new CustomEvent("roomfit:error", { detail: { code, message: text } }));
    }

    clearError() {
      this.ui.error.hidden = true;
      delete this.ui.error.dataset.code;
      this.retryAction = null;
    }

    // --- step 1: the photo ----------------------------------------------------------------------
    picked(input) {
      const file = input.files && input.files[0];
      input.value = ""; // choosing the same file again must fire `change` again
      if (file) this.loadPhoto(file);
    }

    async loadPhoto(file) {
      this.clearError();
      if (file.type && !file.type.startsWith("image/")) return this.fail("not_an_image");
      const run = this.nextRun();
      this.busy = true;
      this.sync();
      this.say("Opening the photo…");
      let bitmap;
      try {
        // The photo as it is meant to be seen (EXIF orientation applied), which is how the API
        // measures it: the mask is drawn at exactly this size.
        bitmap = await createImageBitmap(file, { imageOrientation: "from-image" });
      } catch {
        return this.fail("photo_unreadable");
      }
      if (run !== this.run) return bitmap.close();
      const { width, height } = bitmap;
      if (Math.max(width, height) / Math.min(width, height) > LIMITS.aspect) {
        bitmap.close();
        return this.fail("image_shape_not_allowed");
      }
      const size = fitWithinLimits(width, height);
      const photo = this.ui.photo;
      photo.width = this.ui.mask.width = size.width;
      photo.height = this.ui.mask.height = size.height;
      const g = photo.getContext("2d");
      g.fillStyle = "#fff"; // transparent photos are flattened on white, as the API does
      g.fillRect(0, 0, size.width, size.height);
      g.imageSmoothingQuality = "high";
      g.drawImage(bitmap, 0, 0, size.width, size.height);
      bitmap.close();
      // Sent as it is when the API takes it as it is; otherwise this canvas is encoded (see roomBlob).
      const asIs = !size.scaled && SENT_AS_IS.includes(file.type) && file.size <= LIMITS.bytes;
      this.room = { file: asIs ? file : null, width: size.width, height: size.height, scaled: size.scaled };
      this.ops = [];
      this.undone = [];
      this.version++;
      this.keyCursor = [size.width / 2, size.height / 2];
      this.redraw();
      // Tall photos must not push the buttons off the screen.
      this.ui.stage.style.maxWidth = `min(100%, calc(60vh * ${size.width / size.height}))`;
      this.busy = false;
      const scaled = `The photo was scaled down to ${size.width}×${size.height} to fit the service's limits.`;
      this.say(size.scaled ? scaled : "");
      this.show("edit");
    }

    startOver() {
      this.nextRun();
      this.busy = false;
      this.clearError();
      this.say("");
      this.show("pick");
    }

    // --- step 2: the mask -------------------------------------------------------------------------
    setTool(name) {
      this.tool = name;
      this.keyAnchor = null;
      this.ui.band.hidden = true;
      this.sync();
    }

    hasPaint() {
      // Whether the history leaves anything painted is only known from the pixels; this is the cheap
      // guess that keeps Preview disabled on an untouched photo. The encoder has the last word.
      const lastClear = this.ops.map((op) => op.tool).lastIndexOf("clear");
      return this.ops.slice(lastClear + 1).some((op) => op.tool !== "eraser");
    }

    /** Photo pixels under a pointer event (the canvases are at the photo's size, scaled by CSS). */
    toPhoto(e) {
      const box = this.ui.mask.getBoundingClientRect();
      const x = ((e.clientX - box.left) / box.width) * this.ui.mask.width;
      const y = ((e.clientY - box.top) / box.height) * this.ui.mask.height;
      return [Math.max(0, Math.min(this.ui.mask.width, x)), Math.max(0, Math.min(this.ui.mask.height, y))];
    }

    /** The brush's width in photo pixels: the slider is in screen pixels, whatever the photo's size. */
    brushWidth() {
      const box = this.ui.mask.getBoundingClientRect();
      return Number(this.ui.size.value) * (this.ui.mask.width / (box.width || this.ui.mask.width));
    }

    bindDrawing() {
      const mask = this.ui.mask;
      mask.addEventListener("pointerdown", (e) => {
        if (this.busy || this.view !== "edit" || this.drag || (e.pointerType === "mouse" && e.button !== 0)) return;
        e.preventDefault();
        this.ui.cursor.hidden = true;
        try {
          mask.setPointerCapture(e.pointerId);
        } catch {
          // a synthetic pointer has nothing to capture; its events still come to this canvas
        }
        const at = this.toPhoto(e);
        this.drag =
          this.tool === "rect"
            ? { id: e.pointerId, op: { tool: "rect", x0: at[0], y0: at[1], x1: at[0], y1: at[1] } }
            : { id: e.pointerId, op: { tool: this.tool, size: this.brushWidth(), points: [at] } };
        mask.focus({ preventScroll: true }); // after `drag` is set: no keyboard cursor for a pointer
        if (this.tool === "rect") this.showBand(this.drag.op);
        else paintOp(mask.getContext("2d"), this.drag.op);
      });
      mask.addEventListener("pointermove", (e) => {
        if (!this.drag || e.pointerId !== this.drag.id) return;
        e.preventDefault();
        const op = this.drag.op;
        const events = e.getCoalescedEvents ? e.getCoalescedEvents() : [];
        for (const one of events.length ? events : [e]) {
          const at = this.toPhoto(one);
          if (op.tool === "rect") {
            [op.x1, op.y1] = at;
          } else {
            // Only the new segment is drawn now; the whole stroke is replayed on undo and redo.
            paintOp(mask.getContext("2d"), { ...op, points: [op.points[op.points.length - 1], at] });
            op.points.push(at);
          }
        }
        if (op.tool === "rect") this.showBand(op);
      });
      const finish = (e) => {
        if (!this.drag || e.pointerId !== this.drag.id) return;
        const op = this.drag.op;
        this.drag = null;
        this.ui.band.hidden = true;
        if (op.tool === "rect" && (Math.abs(op.x1 - op.x0) < 1 || Math.abs(op.y1 - op.y0) < 1)) return;
        this.commit(op);
      };
      mask.addEventListener("pointerup", finish);
      mask.addEventListener("pointercancel", finish);
      mask.addEventListener("keydown", (e) => this.keyDraw(e));
      // The keyboard's cursor, for focus from the keyboard only (not a click or a touch).
      mask.addEventListener("focus", () => !this.drag && mask.matches(":focus-visible") && this.showCursor());
      mask.addEventListener("blur", () => (this.ui.cursor.hidden = true));
    }

    /** A finished operation joins the history (drawn already, except a box, drawn here). */
    commit(op) {
      if (op.tool === "rect" || op.tool === "clear") paintOp(this.ui.mask.getContext("2d"), op);
      this.ops.push(op);
      this.undone = [];
      this.version++;
      this.sync();
    }

    redraw() {
      const g = this.ui.mask.getContext("2d");
      g.clearRect(0, 0, this.ui.mask.width, this.ui.mask.height);
      for (const op of this.ops) paintOp(g, op);
      this.version++;
      this.sync();
    }

    undo() {
      if (this.busy || !this.ops.length) return;
      this.undone.push(this.ops.pop());
      this.redraw();
    }

    redo() {
      if (this.busy || !this.undone.length) return;
      this.ops.push(this.undone.pop());
      this.redraw();
    }

    clearMask() {
      if (!this.busy && this.ops.length) this.commit({ tool: "clear" });
    }

    showBand(op) {
      const { width, height } = this.ui.mask;
      const band = this.ui.band.style;
      band.left = `${(Math.min(op.x0, op.x1) / width) * 100}%`;
      band.top = `${(Math.min(op.y0, op.y1) / height) * 100}%`;
      band.width = `${(Math.abs(op.x1 - op.x0) / width) * 100}%`;
      band.height = `${(Math.abs(op.y1 - op.y0) / height) * 100}%`;
      this.ui.band.hidden = false;
    }

    showCursor() {
      if (this.view !== "edit" || !this.keyCursor) return;
      const [x, y] = this.keyCursor;
      this.ui.cursor.style.left = `${(x / this.ui.mask.width) * 100}%`;
      this.ui.cursor.style.top = `${(y / this.ui.mask.height) * 100}%`;
      this.ui.cursor.hidden = false;
      if (this.keyAnchor) this.showBand({ x0: this.keyAnchor[0], y0: this.keyAnchor[1], x1: x, y1: y });
    }

    /** Drawing without a pointer: arrows move a cursor, Space or Enter paints (or sets a box corner). */
    keyDraw(e) {
      if (this.busy || this.view !== "edit" || !this.keyCursor) return;
      const { width, height } = this.ui.mask;
      const step = (Math.max(width, height) / 50) * (e.shiftKey ? 5 : 1);
      const moves = { ArrowLeft: [-step, 0], ArrowRight: [step, 0], ArrowUp: [0, -step], ArrowDown: [0, step] };
      if (moves[e.key]) {
        const [dx, dy] = moves[e.key];
        const [x, y] = this.keyCursor;
        this.keyCursor = [Math.max(0, Math.min(width, x + dx)), Math.max(0, Math.min(height, y + dy))];
      } else if (e.key === " " || e.key === "Enter") {
        const [x, y] = this.keyCursor;
        if (this.tool !== "rect") {
          const op = { tool: this.tool, size: this.brushWidth(), points: [[x, y]] };
          paintOp(this.ui.mask.getContext("2d"), op);
          this.commit(op);
        } else if (!this.keyAnchor) {
          this.keyAnchor = [x, y];
          this.say("First corner set: move to the opposite corner and press Space.");
        } else {
          const [x0, y0] = this.keyAnchor;
          this.keyAnchor = null;
          this.ui.band.hidden = true;
          if (Math.abs(x - x0) >= 1 && Math.abs(y - y0) >= 1) this.commit({ tool: "rect", x0, y0, x1: x, y1: y });
        }
      } else if (e.key === "Escape" && this.keyAnchor) {
        this.keyAnchor = null;
        this.ui.band.hidden = true;
      } else {
        return;
      }
      e.preventDefault();
      this.showCursor();
    }

    shortcut(e) {
      if (this.view !== "edit" || !(e.ctrlKey || e.metaKey)) return;
      const key = e.key.toLowerCase();
      if (key === "z" && !e.shiftKey) this.undo();
      else if (key === "y" || (key === "z" && e.shiftKey)) this.redo();
      else return;
      e.preventDefault();
    }

    // --- step 3: the request ------------------------------------------------------------------------
    /** The room as sent: the file itself, or the photo canvas as a JPEG within the size limit. */
    async roomBlob() {
      if (this.room.file) return this.room.file;
      for (const quality of [0.92, 0.85, 0.75, 0.6]) {
        const blob = await canvasBlob(this.ui.photo, "image/jpeg", quality);
        if (blob.size <= LIMITS.bytes) return blob;
      }
      return null;
    }

    sentSize() {
      return { width: this.room.width, height: this.room.height };
    }

    /** Ask for a preview, with a new seed each time ("Try another" sends the same room and mask). */
    async submit() {
      if (this.busy) return;
      const subject = this.getAttribute("subject");
      const key = this.getAttribute("key");
      if (!subject || !key) return this.fail("config");
      this.clearError();
      const run = this.nextRun();
      this.busy = true;
      this.show("wait");
      this.progress(null, "Preparing your photo…");
      let upload = this.sent;
      if (!upload || upload.version !== this.version) {
        let room, mask;
        try {
          [room, mask] = await Promise.all([this.roomBlob(), maskPng(this.ui.mask)]);
        } catch {
          // a canvas past this browser's memory or size limits (Safari's: 16.7 MP) cannot be read back
          if (run === this.run) this.fail("photo_not_prepared");
          return;
        }
        if (run !== this.run) return;
        if (!room) return this.fail("image_too_large");
        if (!mask.painted) return this.fail("mask_empty");
        upload = { room, mask: mask.blob, version: this.version };
        this.sent = upload;
      }
      const seed = randomSeed();
      this.dispatchEvent(
        new CustomEvent("roomfit:submit", {
          detail: { subject, seed, room: upload.room, mask: upload.mask, ...this.sentSize() },
        }),
      );
      const form = new FormData();
      form.append("subject_id", subject);
      const extension = { "image/png": "png", "image/webp": "webp" }[upload.room.type] || "jpg";
      form.append("room", upload.room, `room.${extension}`);
      form.append("mask", upload.mask, "mask.png");
      form.append("seed", String(seed));
      const retry = () => this.submit();
      const answer = await this.send(run, form, retry);
      if (!answer || run !== this.run) return;
      if (!answer.ok) {
        if (answer.code === "mask_size_mismatch" && this.room.file) {
          // The service turned the photo differently than this browser did: send what is on
          // screen (the canvas, already upright) instead, once.
          this.room.file = null;
          this.version++;
          this.busy = false;
          return this.submit();
        }
        const detail = answer.code === "validation_error" ? answer.detail : "";
        return this.fail(answer.code, { detail, retry: FINAL.has(answer.code) ? null : retry });
      }
      this.watch(run, answer.data.id);
    }

    /** Delete every preview this element made (each holds a copy of the room photo, its mask and
     * result) and start over. One already gone (404) counts as deleted; on any other problem the
     * rest stay listed and "Try again" carries on. */
    async forget() {
      if (this.busy || this.made.length === 0) return;
      const run = this.nextRun();
      this.clearError();
      this.busy = true;
      this.deleting = run; // what the wait is for (a change of product does not stop it)
      this.show("wait"); // only Cancel usable, as while a preview is made: a DELETE may never answer
      this.progress(null, "Deleting your photos from the service…");
      const count = this.made.length;
      while (this.made.length) {
        let answer;
        try {
          answer = await this.call("DELETE", `/v1/previews/${encodeURIComponent(this.made[0])}`);
        } catch {
          answer = { ok: false, status: 0, code: "network" };
        }
        if (run !== this.run) return;
        if (!answer.ok && answer.status !== 404) return this.fail(answer.code, { retry: () => this.forget() });
        this.made.shift();
      }
      this.shown = null;
      this.startOver();
      this.say("Your photos were deleted from the service.");
      this.dispatchEvent(new CustomEvent("roomfit:deleted", { detail: { previews: count } }));
    }

    /** One API call; a problem's `code`, `detail` and Retry-After are read from its answer. */
    async call(method, path, body, headers = {}) {
      const response = await this.request(method, path, { body, headers });
      if (response.ok && /\/result(\?|$)/.test(path)) return { ok: true, blob: await response.blob() };
      return this.answerOf(response);
    }

    /** The API's answer itself (fetch's Response), with the key; for an event stream, `signal` ends it. */
    request(method, path, { body = undefined, headers = {}, signal = undefined } = {}) {
      return fetch(this.api + path, {
        method,
        body,
        signal,
        mode: "cors",
        credentials: "omit",
        cache: "no-store",
        headers: { Authorization: `Bearer ${this.getAttribute("key")}`, ...headers },
      });
    }

    /** What an answer says: its JSON (a body or a problem), the problem's code, Retry-After. */
    async answerOf(response) {
      let data = null;
      try {
        data = await response.json();
      } catch {
        // not JSON (a proxy's error page): the status says enough
      }
      const wait = Number(response.headers.get("Retry-After"));
      return {
        ok: response.ok,
        status: response.status,
        data,
        code: (data && data.code) || (response.status >= 500 ? "service_unavailable" : "generic"),
        detail: (data && data.detail) || "",
        retryAfter: Number.isFinite(wait) && wait > 0 ? Math.min(wait, 120) : 0,
      };
    }

    /** POST /v1/previews, sent again after Retry-After for the codes that ask for it. The same
     * Idempotency-Key for every attempt: an answer lost on the way never makes two previews. */
    async send(run, form, retry) {
      const headers = { "Idempotency-Key": newKey() };
      for (let attempt = 0; ; attempt++) {
        let answer;
        try {
          this.progress(null, attempt ? "Sending again…" : "Sending your photo…");
          answer = await this.call("POST", "/v1/previews", form, headers);
          // Made, even if the shopper cancelled meanwhile: it holds a copy of the room photo.
          const made = answer.ok && answer.data && answer.data.id;
          if (made && !this.made.includes(made)) this.made.push(made);
        } catch {
          if (run !== this.run) return null;
          if (attempt < 2) {
            await this.countdown(run, 1 + attempt * 2, "Cannot reach the preview service.");
            if (run !== this.run) return null;
            continue;
          }
          // A refused CORS request looks like a network error. If the service answers a plain
          // (no-cors) request, it is there: what failed is most likely this page's origin.
          const reachable = await fetch(`${this.api}/healthz`, { mode: "no-cors", cache: "no-store" }).then(
            () => true,
            () => false,
          );
          if (run === this.run) this.fail(reachable ? "blocked" : "network", { retry });
          return null;
        }
        if (run !== this.run) return null;
        if (answer.ok || !RETRYABLE.has(answer.code) || attempt >= MAX_RETRIES) return answer;
        await this.countdown(run, answer.retryAfter || 2, MESSAGES[answer.code]);
        if (run !== this.run) return null;
      }
    }

    /** Wait, saying so every second: "<why> Trying again in 3 s…". */
    async countdown(run, seconds, why) {
      for (let left = Math.ceil(seconds); left > 0 && run === this.run; left--) {
        this.progress(null, `${why} Trying again in ${left} s…`);
        await sleep(1000);
      }
    }

    progress(value, text) {
      if (value === null) this.ui.progress.removeAttribute("value");
      else this.ui.progress.value = value;
      this.ui.phase.textContent = text;
    }

    /** Follow a preview to its end as the service pushes it: GET /v1/previews/{id}/events (see
     * readEvents), opened again from the last event's id when it ends early; polling (`poll`) where
     * the service has no event stream (404: an older one) or it cannot be opened (STREAM). */
    async watch(run, id, since = Date.now()) {
      const path = `/v1/previews/${encodeURIComponent(id)}/events`;
      let lastId = null;
      let failures = 0; // opens in a row that failed, or streams that ended without an event
      let early = 0; // streams in a row that ended early, each within STREAM.long of its open
      this.progress(0, "Queued: waiting for a painter…");
      while (run === this.run) {
        const controller = new AbortController();
        this.closeStream = () => controller.abort();
        // A stream of a preview that never ends is closed when patience runs out (below: too_slow).
        const patience = setTimeout(() => controller.abort(), Math.max(0, since + POLL.patience - Date.now()));
        const opened = Date.now();
        let heard = false;
        let end = null; // the terminal event's preview
        let answer = null; // a problem instead of a stream
        try {
          const headers = { Accept: "text/event-stream" };
          if (lastId !== null) headers["Last-Event-ID"] = lastId;
          const response = await this.request("GET", path, { headers, signal: controller.signal });
          const type = response.headers.get("Content-Type") || "";
          if (response.ok && type.startsWith("text/event-stream")) {
            if (failures) this.ui.phase.textContent = "Connected again.";
            await readEvents(response.body, (e) => {
              if (e.id !== null) lastId = e.id;
              if (e.data === null || end) return;
              heard = true;
              if (TERMINAL.has(e.event)) {
                end = { status: e.event, ...JSON.parse(e.data) };
                controller.abort(); // the service closes the stream now; nothing more to wait for
              } else if (e.event === "status" || e.event === "progress") {
                this.showStatus(JSON.parse(e.data));
              }
            });
          } else if (response.ok || response.status === 404 || response.status === 405) {
            clearTimeout(patience);
            return this.poll(run, id, since); // no event stream here; if the preview is gone, polling says so
          } else {
            answer = await this.answerOf(response);
          }
        } catch {
          // The network or the service went away, the stream broke, or it was closed on purpose.
        }
        clearTimeout(patience);
        controller.abort(); // a stream left unread (a bad event) is closed, not left open
        if (run !== this.run) return;
        if (end) return this.finished(run, id, end);
        if (Date.now() - since > POLL.patience) return this.fail("too_slow", { retry: () => this.resume(id) });
        if (answer) {
          // Too many streams open on the service: polling asks far less of it.
          if (answer.code === "server_busy") return this.poll(run, id, since);
          if (!RETRYABLE.has(answer.code)) {
            return this.fail(answer.code === "not_found" ? "preview_gone" : answer.code, {
              retry: () => this.resume(id),
            });
          }
          if (answer.status < 500) {
            await this.countdown(run, answer.retryAfter || 2, MESSAGES[answer.code]);
            continue;
          }
          // A 5xx (a proxy's 502, a service restarting) is a failed open, as a lost connection is.
          if (++failures >= STREAM.failures) return this.poll(run, id, since);
          const wait = answer.retryAfter * 1000 || jitter(Math.min(STREAM.max, STREAM.first * 2 ** (failures - 1)));
          await this.countdown(run, wait / 1000, MESSAGES[answer.code]);
          continue;
        }
        if (heard) {
          // It worked, then ended early (a proxy's idle timeout, a restart): open it again at once;
          // if that keeps happening quickly, wait longer each time rather than ask many times a second.
          failures = 0;
          early = Date.now() - opened > STREAM.long ? 1 : early + 1;
          await sleep(Math.min(STREAM.max, STREAM.reopen * 2 ** (early - 1)));
          continue;
        }
        if (++failures >= STREAM.failures) return this.poll(run, id, since);
        const wait = Math.min(STREAM.max, STREAM.first * 2 ** (failures - 1));
        await this.countdown(run, jitter(wait) / 1000, "Connection lost.");
      }
    }

    /** A preview's status and progress (a GET's body, or a `status` or `progress` event's data). */
    showStatus(preview) {
      const percent = Math.round((preview.progress || 0) * 100);
      const phase = preview.status === "queued" ? "Queued: waiting for a painter…" : `Painting… ${percent}%`;
      this.progress(preview.progress || 0, phase);
    }

    /** A preview that ended (a GET's body, or the terminal event's): its result, or why there is none. */
    finished(run, id, preview) {
      if (preview.status === "succeeded") return this.fetchResult(run, id, preview);
      const detail = preview.error ? preview.error.message : "";
      const code = preview.status === "cancelled" ? "preview_cancelled" : "preview_failed";
      return this.fail(code, { detail, retry: () => this.submit() });
    }

    /** GET /v1/previews/{id} until it is done: backoff while it waits, longer while offline. */
    async poll(run, id, since = Date.now()) {
      let delay = POLL.first;
      let offline = 0;
      this.progress(0, "Queued: waiting for a painter…");
      while (run === this.run) {
        await sleep(offline ? 0 : delay);
        if (run !== this.run) return;
        if (Date.now() - since > POLL.patience) {
          return this.fail("too_slow", { retry: () => this.resume(id) });
        }
        let answer;
        try {
          answer = await this.call("GET", `/v1/previews/${encodeURIComponent(id)}`);
        } catch {
          // The network or the service went away: wait longer each time, and keep trying.
          offline++;
          const wait = Math.min(POLL.offlineMax, 1000 * 2 ** (offline - 1));
          await this.countdown(run, jitter(wait) / 1000, "Connection lost.");
          continue;
        }
        if (run !== this.run) return;
        if (offline) {
          offline = 0;
          this.ui.phase.textContent = "Connected again.";
        }
        if (!answer.ok) {
          if (RETRYABLE.has(answer.code)) {
            await this.countdown(run, answer.retryAfter || 2, MESSAGES[answer.code]);
            continue;
          }
          const code = answer.code === "not_found" ? "preview_gone" : answer.code;
          return this.fail(code, { retry: () => this.resume(id) });
        }
        const preview = answer.data;
        if (TERMINAL.has(preview.status)) return this.finished(run, id, preview);
        this.showStatus(preview);
        delay = Math.min(POLL.max, delay * POLL.factor);
      }
    }

    /** Wait for a preview again after an error (the same preview; nothing is sent again). */
    resume(id) {
      this.clearError();
      const run = this.nextRun();
      this.busy = true;
      this.show("wait");
      this.watch(run, id);
    }

    /** The result to show: a rendition the size of the stage on this screen (RENDITION). */
    async fetchResult(run, id, preview) {
      this.progress(1, "Fetching your preview…");
      const format = (await decodesWebp()) ? "webp" : "jpeg";
      const side = renditionSide(this.ui.stage.getBoundingClientRect());
      const path = `/v1/previews/${encodeURIComponent(id)}/result?format=${format}&max_side=${side}`;
      for (let attempt = 0; run === this.run; attempt++) {
        let answer;
        try {
          answer = await this.call("GET", path);
        } catch {
          answer = null;
        }
        if (run !== this.run) return;
        if (answer && answer.ok) return this.showResult(id, preview, answer.blob);
        if (attempt >= 4 || (answer && !RETRYABLE.has(answer.code))) {
          return this.fail(answer ? answer.code : "network", { retry: () => this.resume(id) });
        }
        await this.countdown(run, (answer && answer.retryAfter) || 2 ** attempt, "Could not fetch the preview.");
      }
    }

    showResult(id, preview, blob) {
      for (const url of this.urls) URL.revokeObjectURL(url);
      const url = URL.createObjectURL(blob);
      this.urls = [url];
      this.shown = { id, png: null, fetching: false };
      this.ui.after.src = url;
      this.ui.download.href = "#"; // the exact PNG, fetched by the first click (download)
      this.ui.download.download = `roomfit-${id}.png`;
      this.busy = false;
      this.say("Your preview is ready. Slide to compare before and after.");
      this.show("result");
      this.dispatchEvent(new CustomEvent("roomfit:result", { detail: { preview, blob, url } }));
    }

    /** Download: the exact PNG at the photo's size, fetched on the first click (the screen shows a
     * lighter rendition), then saved by the link itself. */
    async download(e) {
      const shown = this.shown;
      if (!shown || shown.png) return; // the link is the PNG already: the browser saves it
      e.preventDefault();
      if (this.busy || shown.fetching) return;
      const run = this.run;
      shown.fetching = true;
      this.clearError();
      this.say("Preparing the download…");
      let answer;
      try {
        answer = await this.call("GET", `/v1/previews/${encodeURIComponent(shown.id)}/result`);
      } catch {
        answer = null;
      }
      shown.fetching = false;
      if (run !== this.run || shown !== this.shown) return; // another preview since
      if (!answer || !answer.ok) {
        const code = !answer ? "network" : answer.code === "not_found" ? "preview_gone" : answer.code;
        return this.fail(code, { retry: () => this.ui.download.click() });
      }
      shown.png = URL.createObjectURL(answer.blob);
      this.urls.push(shown.png);
      this.ui.download.href = shown.png;
      this.say("Your preview is ready. Slide to compare before and after.");
      this.ui.download.click();
    }

    /** The before/after slider: the painted photo shows right of the line. */
    compare() {
      const at = Number(this.ui.slider.value);
      this.ui.after.style.clipPath = `inset(0 0 0 ${at}%)`;
      this.ui.divider.style.left = `${at}%`;
      this.ui.slider.setAttribute("aria-valuetext", `${100 - at}% after`);
    }

    cancel() {
      if (!this.busy) return;
      this.nextRun();
      this.busy = false;
      this.say("Cancelled.");
      this.show("edit");
    }
  }

  customElements.define(TAG, RoomfitPreview);
})();
