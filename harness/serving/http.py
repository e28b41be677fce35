"""`harness serve MODEL_DIR`: a prediction service (FastAPI on uvicorn) with an upload page.

``POST /predict`` (multipart ``file``, optional ``location``, ``top_k``, ``explain``) answers the top k
``label``, ``label_id`` and ``probability`` with the model's name and version, and with
``explain=true`` the Grad-CAM overlay of the top class as a base64 PNG; ``GET /model``, ``GET /health``,
OpenAPI at ``/docs`` and ``/openapi.json``; ``GET /`` is an upload page without external assets.
Bad input gets a JSON error with a 4xx code, never a 500. The model is loaded once, in safe mode,
on Keras or on onnxruntime (``--runtime``; an ONNX folder serves without TensorFlow and answers
``explain=true`` with a 422); the service binds to 127.0.0.1 unless told otherwise.
"""

# No `from __future__ import annotations`: FastAPI reads the endpoints' annotations, which name
# classes imported inside the functions that add them (FastAPI is an optional extra).
import base64
import io
import logging
import socket
import threading

from harness.errors import HarnessError
from harness.serving.model_folder import ExportedModel

#: Decoding a larger picture could take gigabytes, whatever its file size (a "decompression bomb").
MAX_PIXELS = 40_000_000
MAX_TOP_K = 1000
#: The answers ``explain`` takes, yes and no (a checked checkbox without a value sends "on").
EXPLAIN_YES = frozenset({"true", "1", "on", "yes"})
EXPLAIN_NO = frozenset({"false", "0", "off", "no", ""})

log = logging.getLogger("harness.serving.http")


class Refused(Exception):
    """A request the service answers with a JSON error and a 4xx status."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


class PredictionService:
    """What the routes share: the model, the limits, and the lock that lets one inference run at a
    time (decoding runs in parallel)."""

    def __init__(self, model: ExportedModel, max_upload_bytes: int, max_pixels: int):
        self.model = model
        self.max_upload_bytes = max_upload_bytes
        self.max_pixels = max_pixels
        self.lock = threading.Lock()
        self._explainer = None  # prepared on the first explain=true request, under the lock

    def too_large(self) -> str:
        return f"upload too large: at most {self.max_upload_bytes / (1024 * 1024):g} MB"

    def describe(self) -> dict:
        """The model's name, version, classes and inputs (``GET /model``)."""
        model, info = self.model, self.model.info
        return {
            "name": info["name"], "version": info.get("version"), "kind": info.get("kind"), "runtime": model.runtime,
            "classes": model.classes,
            "inputs": {"image": {"size": list(model.image_size), "resize": model.resize},
                       **{n: {"values": v} for n, v in model.extra_inputs.items()}},
            "estimate": info.get("estimate"),
        }

    def check_upload(self, data: bytes, filename: str, top_k: str) -> None:
        """Refuse an empty or oversized upload, a bad ``top_k``, a file that is no image or one too
        large to decode, before any decoding."""
        from PIL import Image

        if not data:
            raise Refused(400, "empty upload: send an image file in the form field 'file'")
        if len(data) > self.max_upload_bytes:
            raise Refused(413, self.too_large())
        if not top_k.strip().isdigit() or not 1 <= int(top_k) <= MAX_TOP_K:
            raise Refused(422, f"top_k must be a whole number from 1 to {MAX_TOP_K}, got {top_k!r}")
        try:
            width, height = Image.open(io.BytesIO(data)).size
        except Exception:
            raise Refused(415, f"{filename}: not an image Pillow can read") from None
        if width * height > self.max_pixels:
            raise Refused(413, f"image too large: {width}×{height} pixels, at most {self.max_pixels:,}")

    def predict(self, data: bytes, filename: str, location: str | None, top_k: str, explain: str = "false") -> dict:
        """The top ``top_k`` classes of an uploaded image (``POST /predict``), and its heat map with
        ``explain=true``."""
        model = self.model
        explaining = explain.strip().lower()
        if explaining not in EXPLAIN_YES | EXPLAIN_NO:
            raise Refused(422, f"explain must be true or false, got {explain!r}")
        self.check_upload(data, filename, top_k)
        extra = {"location": location} if location not in (None, "") else {}
        unknown = sorted(set(extra) - set(model.extra_inputs))
        if unknown:
            raise Refused(422, f"this model takes no {', '.join(unknown)}; send the image alone")
        try:
            model.encode_extra(extra, 1)
        except HarnessError as exc:
            raise Refused(422, str(exc)) from None
        try:
            pixels = model.decode(data, filename)
        except HarnessError as exc:
            raise Refused(415, str(exc)) from None
        with self.lock:
            probabilities = model.probabilities(pixels[None], extra)
            top = model.top(probabilities, int(top_k))[0]
            explanation = self.explain(pixels, extra, top) if explaining in EXPLAIN_YES else None
        answer = {"model": model.info["name"], "version": model.info.get("version"), "predictions": top.as_json()}
        if explanation is not None:
            answer["explanation"] = explanation
        return answer

    def explain(self, pixels, extra: dict, top) -> dict:
        """The Grad-CAM overlay of ``top``'s first class; call it holding the lock."""
        from harness.serving.explain import Explainer, png

        try:
            if self._explainer is None:
                self._explainer = Explainer(self.model)
            image = self._explainer.overlays(pixels[None], extra, [top.label_ids[0]])[0]
        except HarnessError as exc:
            raise Refused(422, f"this model cannot be explained: {exc}") from None
        return {"class": top.labels[0], "png_base64": base64.b64encode(png(image)).decode("ascii"),
                "method": self._explainer.method}


def create_app(model: ExportedModel, max_upload_bytes: int = 10 * 1024 * 1024, max_pixels: int = MAX_PIXELS):
    """The FastAPI application serving ``model``."""
    from fastapi import FastAPI

    app = FastAPI(title=f"harness: {model.info['name']}", version=str(model.info.get("version")),
                  description="Image classification with a model exported by harness.")
    service = PredictionService(model, max_upload_bytes, max_pixels)
    _add_error_handlers(app)
    _add_upload_limit(app, service)
    _add_routes(app, service)
    return app


def _add_error_handlers(app) -> None:
    """Every error a JSON ``{"error": ...}`` with its 4xx code."""
    from fastapi import Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException as StarletteHTTPException

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


def _add_upload_limit(app, service: PredictionService) -> None:
    """Refuse a body announced as too large before reading it into memory."""
    from fastapi import Request
    from fastapi.responses import JSONResponse

    limit = service.max_upload_bytes

    @app.middleware("http")
    async def limit_upload(request: Request, call_next):
        length = request.headers.get("content-length")
        if request.method == "POST" and length and length.isdigit() and int(length) > limit + 64 * 1024:
            # Read (and drop) a moderately large body so the client, still sending, gets this answer
            # rather than a reset connection; anything far larger is cut off.
            if int(length) <= 8 * limit:
                async for _ in request.stream():
                    pass
            return JSONResponse({"error": service.too_large()}, status_code=413)
        return await call_next(request)


def _add_routes(app, service: PredictionService) -> None:
    from fastapi import File, Form, UploadFile
    from fastapi.responses import HTMLResponse, Response

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok", "model": service.model.info["name"]}

    @app.get("/model")
    def model_info() -> dict:
        return service.describe()

    @app.post("/predict")
    def predict(file: UploadFile = File(..., description="an image (JPEG, PNG, GIF, BMP, TIFF, WebP)"),
                location: str | None = Form(None, description="the region, for a model that takes one"),
                top_k: str = Form("5", description="how many classes to return"),
                explain: str = Form("false", description="true: also the Grad-CAM heat map of the top class, "
                                    "blended on the image as the model sees it (a base64 PNG)")) -> dict:
        data = file.file.read(service.max_upload_bytes + 1)
        return service.predict(data, file.filename or "upload", location, top_k, explain)

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon():
        return Response(ICON, media_type="image/svg+xml")

    @app.get("/", response_class=HTMLResponse)
    def page() -> str:
        return upload_page(service.describe())


def upload_page(info: dict) -> str:
    """The upload page: plain HTML, CSS and JavaScript, no external asset."""
    import jinja2

    templates = jinja2.Environment(loader=jinja2.PackageLoader("harness.serving", "templates"), autoescape=True,
                                   undefined=jinja2.StrictUndefined)
    estimate = info.get("estimate") or {}
    return templates.get_template("upload.html.j2").render(
        name=info["name"], classes=len(info["classes"]),
        locations=next((v["values"] for n, v in info["inputs"].items() if n == "location"), None),
        objective=str(estimate.get("objective")), estimate=estimate.get("mean"),
        explainable=info.get("runtime") == "keras",  # Grad-CAM needs the Keras model
    )


ICON = (b'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 16 16"><rect width="16" height="16" rx="3" '
        b'fill="#4a7bd0"/><rect x="3" y="9" width="2" height="4" fill="#fff"/><rect x="7" y="5" width="2" '
        b'height="8" fill="#fff"/><rect x="11" y="3" width="2" height="10" fill="#fff"/></svg>')


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
    model = ExportedModel(args.model_dir, getattr(args, "runtime", None))
    app = create_app(model, int(args.max_upload_mb * 1024 * 1024))
    err.print(f"serving {model.info['name']} ({model.runtime}) on http://{args.host}:{args.port}/ (API docs at /docs); "
              "Ctrl-C stops")
    uvicorn.run(app, host=args.host, port=args.port, log_level="info")
    return 0
