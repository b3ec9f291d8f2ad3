"""An OpenAI-compatible HTTP server over one learner directory (what ``zpd serve`` runs).

    server = LearnerServer(resolve=lambda: (2, Path("rounds/round_000002/learner")), token=None)
    url = server.start("127.0.0.1", 0)          # http://127.0.0.1:PORT/v1
    server.serve_forever()

Endpoints: ``GET /v1/models``, ``POST /v1/chat/completions``, ``POST /v1/completions`` (non-streaming;
``stream: true`` is answered 400). Request fields honoured: ``model`` (must be the served name),
``messages`` / ``prompt``, ``n``, ``temperature`` (default 1.0, as OpenAI), ``max_tokens`` or
``max_completion_tokens`` (default and upper bound: what fits in the model's positions), ``seed``,
``stop``; others (``top_p``, ``user``...) are accepted and ignored. Errors use OpenAI's
``{"error": {"message", "type", "code"}}`` shape. With a token, every request needs
``Authorization: Bearer <token>``. ``GET /health`` answers 200 once the learner is loaded.

With ``enable_lora`` (``zpd serve --enable-lora``) it also has vLLM's runtime adapter routes,
``POST /v1/load_lora_adapter`` ``{"lora_name", "lora_path"}`` and ``POST /v1/unload_lora_adapter``
``{"lora_name"}``, with vLLM's answers (200 "Success: ...", 400 for a missing field or a name already
loaded, 404 for no adapter at the path or an unknown name). A loaded PEFT adapter is merged into its
own copy of the served weights and requests naming ``lora_name`` as their model use it.

Limits (``ServeLimits``; a request past one is answered 4xx, never buffered or run): a body of at most
``max_body_bytes`` with a valid ``Content-Length``; at most ``max_prompts`` prompts; prompts x n x
max_tokens (max_tokens defaulting to what fits in the model's positions) at most ``max_work_tokens``
(413); ``connection_timeout_seconds`` per socket read, so slow clients do not hold threads;
``max_connections`` handled at once, beyond which a connection is answered 503 at once.

The stdlib ``ThreadingHTTPServer``: no new dependency, and the model is the bottleneck anyway (one
generation at a time under a lock; the embedded learner is not thread-safe). ``resolve`` is called at
most every ``refresh_seconds``; when it names another round, that learner is loaded and served (this
is how the default "current learner" follows a running daemon). Nothing is written anywhere.
The connection cap lives in ``http_server``; reading a body's sampling fields in ``openai_requests``.
"""

from __future__ import annotations

import hmac
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import torch

from .generate import sample_rows
from .hf import PreTrainedModel, PreTrainedTokenizerBase
from .http_server import server_class
from .model import load_learner
from .openai_requests import RequestError, Sampling, sampling

log = logging.getLogger("zpd.serve")
MODEL_NAME = "zpd-learner"
MAX_BODY_BYTES = 8 << 20


@dataclass(frozen=True, slots=True)
class ServeLimits:
    """What one request, and the server as a whole, may take (the README's "Operating it" lists them)."""

    max_body_bytes: int = MAX_BODY_BYTES
    max_prompts: int = 64
    """Prompts in one /v1/completions request."""
    max_work_tokens: int = 1 << 16
    """prompts x n x max_tokens of one request: the tokens it may make the model generate."""
    connection_timeout_seconds: float = 30.0
    """Each read from a client socket (the request line, headers, body) must finish within this."""
    max_connections: int = 32
    """Connections handled at once; one more is answered 503 and closed."""


class LearnerServer:
    def __init__(self, resolve: Callable[[], tuple[int, Path]], token: str | None, *, device: str = "cpu",
                 refresh_seconds: float = 2.0, model_name: str = MODEL_NAME, enable_lora: bool = False,
                 limits: ServeLimits = ServeLimits()) -> None:
        self.resolve, self.token, self.device, self.limits = resolve, token, device, limits
        self.refresh_seconds, self.model_name, self.enable_lora = refresh_seconds, model_name, enable_lora
        self.adapters: dict[str, tuple[PreTrainedModel, str]] = {}
        """lora_name -> (the served weights with the adapter merged in, its path)."""
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        # the first learner is loaded here (a resolve error propagates: there is nothing to serve yet)
        self._checked = time.monotonic()
        self.round, self.path = resolve()
        self.model, self.tokenizer = self._load(self.path)
        self.created = int(time.time())
        log.info("serving round %s (%s)", self.round, self.path)

    # -- the model -------------------------------------------------------------------------------
    def _load(self, path: Path) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
        return load_learner(path, self.device)

    def _refresh(self) -> None:
        """Load the learner ``resolve`` names when it changed. Call with the lock held."""
        now = time.monotonic()
        if now - self._checked < self.refresh_seconds:
            return
        self._checked = now
        try:
            round_n, path = self.resolve()
        except Exception as exc:  # the store is being written: keep serving what we have
            log.warning("cannot resolve the learner; serving round %s: %s", self.round, exc)
            return
        if round_n != self.round:
            self.model, self.tokenizer = self._load(path)
            self.round, self.created, self.path = round_n, int(time.time()), path
            log.info("serving round %s (%s)", round_n, path)

    def complete(self, prompt_ids: list[int], params: Sampling,
                 model: str | None = None) -> tuple[list[tuple[str, str, int]], int]:
        """``n`` samples for one prompt: [(text, finish_reason, completion tokens)], and the prompt's
        tokens."""
        with self._lock:
            self._refresh()
            weights = self.adapters[model][0] if model in self.adapters else self.model
            room = int(self.model.config.max_position_embeddings) - len(prompt_ids)
            if room < 1:
                raise RequestError(400, f"the prompt has {len(prompt_ids)} tokens; this model takes at most "
                                        f"{self.model.config.max_position_embeddings - 1}",
                                   "context_length_exceeded")
            budget = room if params.max_tokens is None else min(params.max_tokens, room)
            seed = params.seed if params.seed is not None else int.from_bytes(uuid.uuid4().bytes[:6], "big")
            generator = torch.Generator().manual_seed(seed)
            rows = sample_rows(weights, self.tokenizer, [prompt_ids] * params.n,
                               temperature=params.temperature, max_tokens=budget, generator=generator,
                               stop=params.stop)
        return [(r.text, r.finish_reason, len(r.completion_ids)) for r in rows], len(prompt_ids)

    def check_work(self, num_prompts: int, n: int, max_tokens: int | None) -> None:
        """Refuse (413) a request that could make the model generate more than ``max_work_tokens``."""
        positions = int(self.model.config.max_position_embeddings)
        per_prompt = min(max_tokens or positions, positions)
        work = num_prompts * n * per_prompt
        if num_prompts > self.limits.max_prompts:
            raise RequestError(413, f"{num_prompts} prompts in one request; "
                                    f"the limit is {self.limits.max_prompts}")
        if work > self.limits.max_work_tokens:
            raise RequestError(413, f"the request may generate {work} tokens (prompts x n x max_tokens = "
                                    f"{num_prompts} x {n} x {per_prompt}); the limit "
                                    f"is {self.limits.max_work_tokens} per request: lower n or max_tokens, "
                                    "or split it")

    # -- LoRA adapters at run time (vLLM's API) --------------------------------------------------
    def load_adapter(self, name: Any, path: Any) -> str:
        if not name or not path or not isinstance(name, str) or not isinstance(path, str):
            raise RequestError(400, "Both 'lora_name' and 'lora_path' must be provided.", "InvalidUserInput")
        if name in self.adapters or name == self.model_name:
            raise RequestError(400, f"The lora adapter '{name}' has already been loaded.", "InvalidUserInput")
        if not (Path(path) / "adapter_config.json").is_file():
            raise RequestError(404, f"No adapter found for {path}", "NotFoundError")
        from peft import PeftModel  # only here: serving plain learners needs no peft

        with self._lock:
            self._refresh()
            base, _ = self._load(self.path)
            merged = PeftModel.from_pretrained(base, path).merge_and_unload().eval()
            self.adapters[name] = (merged, path)
        log.info("loaded LoRA adapter %s from %s", name, path)
        return f"Success: LoRA adapter '{name}' added successfully."

    def unload_adapter(self, name: Any) -> str:
        if not name:
            raise RequestError(400, "either 'lora_name' and 'lora_int_id' needs to be provided.",
                               "InvalidUserInput")
        with self._lock:
            if self.adapters.pop(name, None) is None:
                raise RequestError(404, f"The lora adapter '{name}' cannot be found.", "NotFoundError")
        return f"Success: LoRA adapter '{name}' removed successfully."

    def encode_chat(self, messages: list[dict[str, Any]]) -> list[int]:
        convo: list[dict[str, str]] = []
        for m in messages:
            content = m.get("content")
            if isinstance(content, list):  # [{"type": "text", "text": ...}, ...]
                parts = [p.get("text", "") for p in content if isinstance(p, dict)]
                if not all(isinstance(p, str) for p in parts):
                    raise RequestError(400, "each content part's 'text' must be a string")
                content = "".join(parts)
            if not isinstance(m.get("role"), str) or not isinstance(content, str):
                raise RequestError(400, "each message needs a string 'role' and text 'content'")
            convo.append({"role": m["role"], "content": content})
        with self._lock:
            self._refresh()
            text = self.tokenizer.apply_chat_template(convo, tokenize=False, add_generation_prompt=True)
            ids: list[int] = self.tokenizer(text, add_special_tokens=False)["input_ids"]
            return ids

    def encode_text(self, text: str) -> list[int]:
        with self._lock:
            self._refresh()
            ids: list[int] = self.tokenizer(text, add_special_tokens=False)["input_ids"]
            return ids

    # -- HTTP ----------------------------------------------------------------------------------
    def start(self, host: str, port: int) -> str:
        self._httpd = server_class(host, self.limits.max_connections)((host, port), _handler(self))
        shown = f"[{host}]" if ":" in host else host
        return f"http://{shown}:{self._httpd.server_address[1]}/v1"

    def serve_forever(self) -> None:
        assert self._httpd is not None
        self._httpd.serve_forever(poll_interval=0.2)

    def shutdown(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()


class _Handler(BaseHTTPRequestHandler):
    """One connection's requests; ``_handler`` makes the subclass that names its server."""

    served: LearnerServer
    """The learner server the requests go to (``self.server`` is the socket server)."""
    expected: bytes | None
    """The whole ``Authorization`` header a request must send; None: no token."""
    server_version = "zpd-serve"
    sys_version = ""
    protocol_version = "HTTP/1.1"

    def _send(self, status: int, payload: dict[str, Any] | str) -> None:
        text = isinstance(payload, str)  # vLLM answers the adapter routes with plain text
        body = payload.encode() if isinstance(payload, str) else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8" if text else "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _error(self, status: int, message: str, code: str) -> None:
        kind = "authentication_error" if status == 401 else "invalid_request_error"
        self._send(status, {"error": {"message": message, "type": kind, "param": None, "code": code}})

    def _authorized(self) -> bool:
        given = self.headers.get("Authorization", "").encode()
        if self.expected is None or hmac.compare_digest(given, self.expected):
            return True
        self._error(401, "missing or wrong bearer token", "invalid_api_key")
        return False

    def do_GET(self) -> None:  # noqa: N802
        if not self._authorized():
            return
        path = self.path.split("?", 1)[0].rstrip("/")
        if path == "/v1/models":
            served = self.served
            cards = [_model_card(served)] + [
                {"id": name, "object": "model", "created": served.created, "owned_by": "zpd", "root": p,
                 "parent": served.model_name} for name, (_, p) in list(served.adapters.items())]
            self._send(200, {"object": "list", "data": cards})
        elif path == f"/v1/models/{self.served.model_name}":
            self._send(200, _model_card(self.served))
        elif path in ("/health", "/healthz"):
            self._send(200, {"status": "ok", "round": self.served.round})
        else:
            self._error(404, f"no route GET {path}", "not_found")

    def do_POST(self) -> None:  # noqa: N802
        if not self._authorized():
            return
        path = self.path.split("?", 1)[0].rstrip("/")
        try:
            body = self._body()
            if not isinstance(body, dict):
                raise RequestError(400, "the request body must be a JSON object")
            if path == "/v1/chat/completions":
                self._send(200, _chat(self.served, body))
            elif path == "/v1/completions":
                self._send(200, _text(self.served, body))
            elif path == "/v1/load_lora_adapter" and self.served.enable_lora:
                self._send(200, self.served.load_adapter(body.get("lora_name"), body.get("lora_path")))
            elif path == "/v1/unload_lora_adapter" and self.served.enable_lora:
                self._send(200, self.served.unload_adapter(body.get("lora_name")))
            else:
                raise RequestError(404, f"no route POST {path}", "not_found")
        except RequestError as exc:
            if exc.status >= 400 and exc.code == "invalid_body":
                self.close_connection = True  # the unread body must not be parsed as the next request
            self._error(exc.status, str(exc), exc.code)
        except TimeoutError:
            self.close_connection = True  # a client too slow to send its body: let the thread go
        except Exception as exc:  # a bug must not kill the server thread silently
            log.exception("request failed")
            self._error(500, f"internal error: {type(exc).__name__}", "internal_error")

    def _body(self) -> Any:
        """The JSON body, read only when its ``Content-Length`` is a number within the cap."""
        if self.headers.get("Transfer-Encoding"):
            raise RequestError(411, "send the body with a Content-Length, not chunked", "invalid_body")
        raw = (self.headers.get("Content-Length") or "0").strip()
        if not raw.isdigit():
            raise RequestError(400, f"Content-Length {raw[:20]!r} is not a byte count", "invalid_body")
        length = int(raw)
        cap = self.served.limits.max_body_bytes
        if length > cap:
            raise RequestError(413, f"request body of {length} bytes is over the {cap}-byte limit",
                               "invalid_body")
        try:
            return json.loads(self.rfile.read(length) or b"{}")
        except RecursionError:
            raise RequestError(400, "the request body is nested too deeply") from None
        except ValueError:  # not JSON, not UTF-8, or an integer of more than 4300 digits
            raise RequestError(400, "the request body is not JSON") from None

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        log.debug("%s %s", self.address_string(), format % args)


def _handler(server: LearnerServer) -> type[BaseHTTPRequestHandler]:
    expected = f"Bearer {server.token}".encode() if server.token else None
    # timeout: per socket read, so slow clients let go of their thread
    return type("Handler", (_Handler,), {"served": server, "expected": expected,
                                         "timeout": server.limits.connection_timeout_seconds})


def _model_card(server: LearnerServer) -> dict[str, Any]:
    return {"id": server.model_name, "object": "model", "created": server.created, "owned_by": "zpd",
            "zpd_round": server.round}


def _check_common(server: LearnerServer, body: dict[str, Any]) -> None:
    if body.get("stream"):
        raise RequestError(400, "stream is not supported by zpd serve; send stream=false")
    model = body.get("model")
    if model != server.model_name and model not in server.adapters:
        raise RequestError(404, f"model {model!r} is not served here; use {server.model_name!r}",
                           "model_not_found")


def _usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def _chat(server: LearnerServer, body: dict[str, Any]) -> dict[str, Any]:
    _check_common(server, body)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
        raise RequestError(400, "'messages' must be a non-empty list of objects")
    params = sampling(body)
    server.check_work(1, params.n, params.max_tokens)
    samples, prompt_tokens = server.complete(server.encode_chat(messages), params, model=body["model"])
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()),
        "model": server.model_name,
        "choices": [{"index": i, "message": {"role": "assistant", "content": text}, "finish_reason": reason,
                     "logprobs": None} for i, (text, reason, _) in enumerate(samples)],
        "usage": _usage(prompt_tokens, sum(k for _, _, k in samples)),
    }


def _text(server: LearnerServer, body: dict[str, Any]) -> dict[str, Any]:
    _check_common(server, body)
    prompt = body.get("prompt")
    prompts = [prompt] if isinstance(prompt, str) else prompt
    if not isinstance(prompts, list) or not prompts or not all(isinstance(p, str) for p in prompts):
        raise RequestError(400, "'prompt' must be a string or a non-empty list of strings")
    params = sampling(body)
    server.check_work(len(prompts), params.n, params.max_tokens)
    choices: list[dict[str, Any]] = []
    total_prompt, total_completion = 0, 0
    for p in prompts:
        samples, prompt_tokens = server.complete(server.encode_text(p), params, model=body["model"])
        total_prompt += prompt_tokens
        for text, reason, k in samples:
            choices.append({"index": len(choices), "text": text, "finish_reason": reason, "logprobs": None})
            total_completion += k
    return {"id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion", "created": int(time.time()),
            "model": server.model_name, "choices": choices, "usage": _usage(total_prompt, total_completion)}
