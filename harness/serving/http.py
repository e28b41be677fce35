"""`harness serve MODEL_DIR`: a prediction service (FastAPI on uvicorn) with an upload page.

``POST /predict`` (multipart ``file``, optional ``location``, ``top_k``) answers the top k ``label``,
``label_id`` and ``probability`` with the model's name and version; ``GET /model``, ``GET /health``,
OpenAPI at ``/docs`` and ``/openapi.json``; ``GET /`` is an upload page without external assets.
Bad input gets a JSON error with a 4xx code, never a 500. The model is loaded once, in safe mode;
the service binds to 127.0.0.1 unless told otherwise.
"""

# No `from __future__ import annotations`: FastAPI reads the endpoints' annotations, which name
# classes imported inside create_app (FastAPI is an optional extra).
import html
import io
import json
import logging
import socket
import threading

from harness.errors import HarnessError
from harness.serving.model_folder import ExportedModel

#: Decoding a larger picture could take gigabytes, whatever its file size (a "decompression bomb").
MAX_PIXELS = 40_000_000
MAX_TOP_K = 1000

log = logging.getLogger("harness.serving.http")


def create_app(model: ExportedModel, max_upload_bytes: int = 10 * 1024 * 1024, max_pixels: int = MAX_PIXELS):
    """The FastAPI application serving ``model``."""
    from fastapi import FastAPI, File, Form, Request, UploadFile
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import HTMLResponse, JSONResponse
    from PIL import Image
    from starlette.exceptions import HTTPException as StarletteHTTPException

    app = FastAPI(title=f"harness: {model.info['name']}", version=str(model.info.get("version")),
                  description="Image classification with a model exported by harness.")
    lock = threading.Lock()  # one inference at a time; decoding runs in parallel

    class Refused(Exception):
        def __init__(self, status: int, message: str):
            self.status, self.message = status, message

    @app.exception_handler(Refused)
    async def refused(request: Request, exc: Refused):
        log.info("%s %s refused (%d): %s", request.method, request.url.path, exc.status, exc.message)
        return JSONResponse({"error": exc.message}, status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        problems = "; ".join(f"{'.'.join(str(p) for p in e.get('loc', [])[1:]) or 'request'}: {e.get('msg')}"
                             for e in exc.errors())
        return JSONResponse({"error": problems or "invalid request"}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code)

    @app.middleware("http")
    async def limit_upload(request: Request, call_next):
        length = request.headers.get("content-length")
        if request.method == "POST" and length and length.isdigit() and int(length) > max_upload_bytes + 64 * 1024:
            # Read (and drop) a moderately large body so the client, still sending, gets this answer
            # rather than a reset connection; anything far larger is cut off.
            if int(length) <= 8 * max_upload_bytes:
                async for _ in request.stream():
                    pass
            return JSONResponse({"error": f"upload too large: at most {max_upload_bytes / (1024 * 1024):g} MB"},
                                status_code=413)
        return await call_next(request)

    def describe() -> dict:
        info = model.info
        return {
            "name": info["name"], "version": info.get("version"), "kind": info.get("kind"),
            "classes": model.classes,
            "inputs": {"image": {"size": list(model.image_size), "resize": model.resize},
                       **{n: {"values": v} for n, v in model.extra_inputs.items()}},
            "estimate": info.get("estimate"),
        }

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok", "model": model.info["name"]}

    @app.get("/model")
    def model_info() -> dict:
        return describe()

    @app.post("/predict")
    def predict(file: UploadFile = File(..., description="an image (JPEG, PNG, GIF, BMP, TIFF, WebP)"),
                location: str | None = Form(None, description="the region, for a model that takes one"),
                top_k: str = Form("5", description="how many classes to return")) -> dict:
        data = file.file.read(max_upload_bytes + 1)
        if not data:
            raise Refused(400, "empty upload: send an image file in the form field 'file'")
        if len(data) > max_upload_bytes:
            raise Refused(413, f"upload too large: at most {max_upload_bytes / (1024 * 1024):g} MB")
        if not top_k.strip().isdigit() or not 1 <= int(top_k) <= MAX_TOP_K:
            raise Refused(422, f"top_k must be a whole number from 1 to {MAX_TOP_K}, got {top_k!r}")
        try:
            width, height = Image.open(io.BytesIO(data)).size
        except Exception:
            raise Refused(415, f"{file.filename or 'upload'}: not an image Pillow can read") from None
        if width * height > max_pixels:
            raise Refused(413, f"image too large: {width}×{height} pixels, at most {max_pixels:,}")
        extra = {"location": location} if location not in (None, "") else {}
        unknown = sorted(set(extra) - set(model.extra_inputs))
        if unknown:
            raise Refused(422, f"this model takes no {', '.join(unknown)}; send the image alone")
        try:
            model.encode_extra(extra, 1)
        except HarnessError as exc:
            raise Refused(422, str(exc)) from None
        try:
            pixels = model.decode(data, file.filename or "upload")
        except HarnessError as exc:
            raise Refused(415, str(exc)) from None
        with lock:
            probabilities = model.probabilities(pixels[None], extra)
        top = model.top(probabilities, int(top_k))[0]
        return {"model": model.info["name"], "version": model.info.get("version"), "predictions": top.as_json()}

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon():
        from fastapi.responses import Response

        return Response(ICON, media_type="image/svg+xml")

    @app.get("/", response_class=HTMLResponse)
    def page() -> str:
        return upload_page(describe())

    return app


def upload_page(info: dict) -> str:
    """The upload page: plain HTML, CSS and JavaScript, no external asset."""
    locations = next((v["values"] for n, v in info["inputs"].items() if n == "location"), None)
    select = ""
    if locations:
        options = "".join(f'<option value="{html.escape(v)}">{html.escape(v)}</option>' for v in locations)
        select = f'<label>Region <select id="location" name="location">{options}</select></label>'
    estimate = info.get("estimate") or {}
    shown = (f"Cross-validated {html.escape(str(estimate.get('objective')))}: {estimate['mean']:.3f}"
             if estimate.get("mean") is not None else "")
    return PAGE.replace("{{NAME}}", html.escape(info["name"])).replace("{{ESTIMATE}}", shown) \
        .replace("{{LOCATION}}", select).replace("{{CLASSES}}", str(len(info["classes"]))) \
        .replace("{{MODEL_JSON}}", html.escape(json.dumps(info["name"])))


ICON = (b'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 16 16"><rect width="16" height="16" rx="3" '
        b'fill="#4a7bd0"/><rect x="3" y="9" width="2" height="4" fill="#fff"/><rect x="7" y="5" width="2" '
        b'height="8" fill="#fff"/><rect x="11" y="3" width="2" height="10" fill="#fff"/></svg>')

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{{NAME}}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{font-family:system-ui,sans-serif;max-width:42rem;margin:2rem auto;padding:0 1rem;color:#222}
form{display:flex;flex-wrap:wrap;gap:.8rem;align-items:center;margin:1rem 0}
.bar{background:#e8eef7;border-radius:3px;margin:.25rem 0;position:relative;height:1.6rem}
.fill{background:#4a7bd0;height:100%;border-radius:3px}
.label{position:absolute;left:.5rem;top:.2rem;color:#000}
.error{color:#b00020}
img{max-width:12rem;max-height:12rem;display:block;margin:.5rem 0}
small{color:#666}
</style></head><body>
<h1>{{NAME}}</h1>
<p><small>{{CLASSES}} classes. {{ESTIMATE}}</small></p>
<form id="form">
<input type="file" id="file" name="file" accept="image/*" required>
{{LOCATION}}
<label>Top <input type="number" id="top_k" name="top_k" value="5" min="1" max="1000" style="width:4rem"></label>
<button type="submit" id="submit">Classify</button>
</form>
<img id="preview" alt="" hidden>
<div id="result" aria-live="polite"></div>
<script>
const form = document.getElementById("form"), result = document.getElementById("result");
document.getElementById("file").addEventListener("change", e => {
  const f = e.target.files[0], img = document.getElementById("preview");
  if (f) { img.src = URL.createObjectURL(f); img.hidden = false; }
});
form.addEventListener("submit", async e => {
  e.preventDefault();
  result.textContent = "classifying…";
  const body = new FormData(form);
  try {
    const response = await fetch("predict", {method: "POST", body});
    const data = await response.json();
    result.replaceChildren();
    if (!response.ok) {
      const p = document.createElement("p"); p.className = "error"; p.id = "error";
      p.textContent = data.error || ("error " + response.status); result.append(p); return;
    }
    for (const item of data.predictions) {
      const bar = document.createElement("div"); bar.className = "bar prediction";
      const fill = document.createElement("div"); fill.className = "fill";
      fill.style.width = (100 * item.probability).toFixed(1) + "%";
      const label = document.createElement("span"); label.className = "label";
      label.textContent = item.label + " " + (100 * item.probability).toFixed(1) + "%";
      bar.append(fill, label); result.append(bar);
    }
  } catch (err) { result.textContent = "the service did not answer: " + err; }
});
</script>
</body></html>
"""


def serve_command(args, err) -> int:
    """Load the model once and serve it until interrupted."""
    try:
        import uvicorn
    except ImportError:
        raise HarnessError("harness serve needs FastAPI and uvicorn: pip install -e \".[serve]\"") from None
    if not 0 < args.port < 65536:
        raise HarnessError(f"--port {args.port}: give a port from 1 to 65535.")
    if args.max_upload_mb <= 0:
        raise HarnessError("--max-upload-mb must be positive.")
    with socket.socket(socket.AF_INET6 if ":" in args.host else socket.AF_INET) as probe:
        try:
            probe.bind((args.host, args.port))
        except OSError as exc:
            raise HarnessError(f"cannot listen on {args.host}:{args.port} ({exc.strerror}): choose another --port "
                               "or stop what uses it.") from None
    model = ExportedModel(args.model_dir)
    app = create_app(model, int(args.max_upload_mb * 1024 * 1024))
    err.print(f"serving {model.info['name']} on http://{args.host}:{args.port}/ (API docs at /docs); Ctrl-C stops")
    uvicorn.run(app, host=args.host, port=args.port, log_level="info")
    return 0
