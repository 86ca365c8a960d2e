"""The relay's websocket messages, sans I/O: parse what a client sends, build what the relay sends.

Two dialects share one socket (docs/protocol.md has every shape and docs/protocol_vectors.json
the test vectors the firmware checks too):

- the XiaoZhi protocol that stock devices speak (hello, listen, abort, mcp, stt, tts ...), and
- our text-streaming extension for pocketgpt devices (``pg.generate`` -> ``pg.delta``* ->
  ``pg.done``), switched on by ``"features": {"pocketgpt": 1}`` in the client hello.

Nothing here touches a socket, so the same functions serve the server, the tests and the
benchmark client, and a parse error is a value (`ProtocolError` with a machine-readable code)
the server turns into an error message instead of a dropped connection.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

PROTOCOL_VERSION = 1       # XiaoZhi websocket protocol version (raw Opus per binary message)
EXTENSION_VERSION = 1      # our text-streaming extension ("features": {"pocketgpt": 1})
WS_PATH = "/xiaozhi/v1/"

# Server audio parameters announced in the hello (XiaoZhi's defaults: 24 kHz Opus, 60 ms frames).
SERVER_AUDIO = {"format": "opus", "sample_rate": 24000, "channels": 1, "frame_duration": 60}

# Error codes: stable strings devices can switch on. Keep docs/protocol.md in step.
ERROR_CODES = {
    "bad_json": "the text frame is not a JSON object",
    "bad_message": "a field is missing or has the wrong type or range",
    "unknown_type": "the message type is not one the relay knows",
    "hello_required": "the first message must be a hello",
    "hello_timeout": "no hello arrived in time; the connection closes",
    "idle_timeout": "nothing arrived for too long; the connection closes",
    "busy": "a generation is already running on this session",
    "rate_limited": "too many requests from this device; retry later",
    "prompt_too_long": "the prompt exceeds the relay's limit",
    "audio_unsupported": "this relay has no voice pipeline; send text turns",
    "bad_audio": "a binary frame is not one valid Opus packet of at most 60 ms",
    "bad_audio_params": "the hello's audio_params are not ones the relay can decode",
    "voice_error": "speech recognition or synthesis failed for this turn (the session stays usable)",
    "backend_error": "the model backend failed while generating",
    "backend_unavailable": "the model backend cannot be reached",
    "shutting_down": "the relay is draining for shutdown",
    "overloaded": "the relay runs as many generations as it allows; retry in a few seconds",
    "unauthorized": "the device's token was revoked while connected; the connection closes",
    "internal": "the relay hit an unexpected error (the session stays usable)",
}

FINISH_REASONS = ("stop", "length", "abort")
LISTEN_MODES = ("auto", "manual", "realtime")  # relay ends the utterance / listen stop ends it / barge-in


class ProtocolError(Exception):
    """A client message the relay refuses: `code` is one of ERROR_CODES, `message` says why."""

    def __init__(self, code: str, message: str, request_id: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.request_id = request_id


@dataclass(frozen=True)
class GenerateParams:
    """Sampling options of a `pg.generate` request; None means "the relay's default"."""

    max_tokens: int | None = None
    temperature: float | None = None
    top_k: int | None = None
    top_p: float | None = None
    seed: int | None = None
    greedy: bool = False
    stop: tuple[str, ...] = ()
    raw: bool = False  # continue the prompt as text instead of answering it as a chat request
    steer: bool = True  # chat mode: subject-steered decoding (the reply names what was asked about)


@dataclass(frozen=True)
class ClientMessage:
    """One parsed client message. `type` is the wire type; the other fields depend on it."""

    type: str
    session_id: str | None = None
    # hello
    version: int | None = None
    features: dict[str, Any] = field(default_factory=dict)
    audio_params: dict[str, Any] = field(default_factory=dict)
    # listen
    state: str | None = None
    mode: str | None = None
    text: str | None = None
    # abort / pg.generate
    request_id: str | None = None
    reason: str | None = None
    prompt: str | None = None
    params: GenerateParams = GenerateParams()
    payload: Any = None

    @property
    def wants_extension(self) -> bool:
        return self.type == "hello" and bool(self.features.get("pocketgpt"))


def _dumps(obj: dict[str, Any]) -> str:
    # compact and UTF-8 (no \\u escapes): the firmware's vectors compare these strings byte for byte
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def _opt(obj: dict[str, Any], key: str, kind: type | tuple[type, ...], what: str, rid: str | None = None) -> Any:
    value = obj.get(key)
    if value is None:
        return None
    if kind in (int, float) or kind == (int, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ProtocolError("bad_message", f"{what}: '{key}' must be a number, got {value!r}", rid)
        if kind is int and not float(value).is_integer():
            raise ProtocolError("bad_message", f"{what}: '{key}' must be an integer, got {value!r}", rid)
        return int(value) if kind is int else float(value)
    if not isinstance(value, kind):
        raise ProtocolError("bad_message", f"{what}: '{key}' has the wrong type ({type(value).__name__})", rid)
    return value


def parse_client(text: str | bytes) -> ClientMessage:
    """Parse one text frame from a client; raise ProtocolError with a code for anything wrong."""
    if isinstance(text, (bytes, bytearray)):
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError:
            raise ProtocolError("bad_json", "text frame is not valid UTF-8") from None
    try:
        obj = json.loads(text)
    except (ValueError, RecursionError):
        raise ProtocolError("bad_json", "text frame is not valid JSON") from None
    if not isinstance(obj, dict):
        raise ProtocolError("bad_json", f"expected a JSON object, got {type(obj).__name__}")
    kind = obj.get("type")
    if not isinstance(kind, str):
        raise ProtocolError("bad_message", "message has no string 'type'")
    sid = obj.get("session_id")
    sid = sid if isinstance(sid, str) else None

    if kind == "hello":
        version = _opt(obj, "version", int, "hello")
        features = _opt(obj, "features", dict, "hello") or {}
        audio = _opt(obj, "audio_params", dict, "hello") or {}
        return ClientMessage("hello", sid, version=version, features=features, audio_params=audio)
    if kind == "listen":
        state = obj.get("state")
        if state not in ("start", "stop", "detect"):
            raise ProtocolError("bad_message", f"listen: 'state' must be start, stop or detect, got {state!r}")
        mode = _opt(obj, "mode", str, "listen")
        if state == "start" and mode is not None and mode not in LISTEN_MODES:
            raise ProtocolError("bad_message", f"listen: 'mode' must be auto, manual or realtime, got {mode!r}")
        text_field = _opt(obj, "text", str, "listen")
        return ClientMessage("listen", sid, state=state, mode=mode, text=text_field)
    if kind == "abort":
        rid = _opt(obj, "id", str, "abort")
        return ClientMessage("abort", sid, request_id=rid, reason=_opt(obj, "reason", str, "abort", rid))
    if kind in ("mcp", "iot"):  # device tools (iot: the older firmware's descriptors and states)
        return ClientMessage(kind, sid, payload=obj.get("payload"))
    if kind == "pg.generate":
        return _parse_generate(obj, sid)
    raise ProtocolError("unknown_type", f"unknown message type {kind!r}")


def _parse_generate(obj: dict[str, Any], sid: str | None) -> ClientMessage:
    rid = obj.get("id")
    if not isinstance(rid, str) or not (1 <= len(rid) <= 64):
        raise ProtocolError("bad_message", "pg.generate: 'id' must be a string of 1 to 64 characters")
    prompt = obj.get("prompt")
    if not isinstance(prompt, str) or not prompt:
        raise ProtocolError("bad_message", "pg.generate: 'prompt' must be a non-empty string", rid)
    what = "pg.generate"
    max_tokens = _opt(obj, "max_tokens", int, what, rid)
    if max_tokens is not None and max_tokens < 1:
        raise ProtocolError("bad_message", f"{what}: 'max_tokens' must be at least 1, got {max_tokens}", rid)
    temperature = _opt(obj, "temperature", (int, float), what, rid)
    if temperature is not None and not (0.0 <= temperature <= 5.0):
        raise ProtocolError("bad_message", f"{what}: 'temperature' must be in [0, 5], got {temperature}", rid)
    top_k = _opt(obj, "top_k", int, what, rid)
    if top_k is not None and top_k < 0:
        raise ProtocolError("bad_message", f"{what}: 'top_k' must be >= 0, got {top_k}", rid)
    top_p = _opt(obj, "top_p", (int, float), what, rid)
    if top_p is not None and not (0.0 < top_p <= 1.0):
        raise ProtocolError("bad_message", f"{what}: 'top_p' must be in (0, 1], got {top_p}", rid)
    seed = _opt(obj, "seed", int, what, rid)
    greedy = obj.get("greedy", False)
    if not isinstance(greedy, bool):
        raise ProtocolError("bad_message", f"{what}: 'greedy' must be true or false", rid)
    stop = obj.get("stop", [])
    if isinstance(stop, str):
        stop = [stop]
    if not isinstance(stop, list) or len(stop) > 4 or not all(isinstance(s, str) and s for s in stop):
        raise ProtocolError("bad_message", f"{what}: 'stop' must be up to 4 non-empty strings", rid)
    raw = obj.get("raw", False)
    if not isinstance(raw, bool):
        raise ProtocolError("bad_message", f"{what}: 'raw' must be true or false", rid)
    steer = obj.get("steer", True)
    if not isinstance(steer, bool):
        raise ProtocolError("bad_message", f"{what}: 'steer' must be true or false", rid)
    params = GenerateParams(max_tokens, temperature, top_k, top_p, seed, greedy, tuple(stop), raw, steer)
    return ClientMessage("pg.generate", sid, request_id=rid, prompt=prompt, params=params)


# ---- server -> client -------------------------------------------------------------------------

def server_hello(session_id: str, extension: dict[str, Any] | None = None) -> str:
    """The reply to a client hello. `transport` must be exactly "websocket" (stock firmware
    can crash without it) and session_id/audio_params must be present (some clients need them)."""
    msg: dict[str, Any] = {"type": "hello", "transport": "websocket", "session_id": session_id,
                           "audio_params": dict(SERVER_AUDIO)}
    if extension is not None:
        msg["features"] = {"pocketgpt": EXTENSION_VERSION}
        msg["pocketgpt"] = extension
    return _dumps(msg)


def stt(text: str, session_id: str) -> str:
    return _dumps({"type": "stt", "text": text, "session_id": session_id})


def tts(state: str, session_id: str, text: str | None = None) -> str:
    """tts start / sentence_start (carrying one sentence of the reply) / stop."""
    msg: dict[str, Any] = {"type": "tts", "state": state, "session_id": session_id}
    if text is not None:
        msg["text"] = text
    return _dumps(msg)


def delta(request_id: str, text: str) -> str:
    return _dumps({"type": "pg.delta", "id": request_id, "text": text})


def done(request_id: str, reason: str, tokens: int, prompt_tokens: int) -> str:
    if reason not in FINISH_REASONS:
        raise ValueError(f"finish reason {reason!r} not in {FINISH_REASONS}")
    return _dumps({"type": "pg.done", "id": request_id, "reason": reason, "tokens": tokens,
                   "prompt_tokens": prompt_tokens})


def error(code: str, message: str, request_id: str | None = None) -> str:
    if code not in ERROR_CODES:
        raise ValueError(f"error code {code!r} is not documented in ERROR_CODES")
    msg: dict[str, Any] = {"type": "error", "code": code, "message": message}
    if request_id is not None:
        msg["id"] = request_id
    return _dumps(msg)


# ---- sentences for tts sentence_start ---------------------------------------------------------

_SENTENCE_END = re.compile(r"[。！？；…]+[」』）\"']*|[.!?;]+[\"')\]]*(?=\s)|\n+")


class SentenceSplitter:
    """Cut streamed text into sentences as soon as each one is complete.

    A sentence ends at Western terminal punctuation followed by whitespace (so "3.14" stays
    whole), right after CJK full-width punctuation (Chinese puts no space after it), or at a
    line break. Whitespace between sentences is dropped; empty sentences never come out.
    """

    def __init__(self) -> None:
        self._buf = ""

    def feed(self, text: str) -> list[str]:
        self._buf += text
        out: list[str] = []
        while True:
            m = _SENTENCE_END.search(self._buf)
            if not m:
                break
            sentence = self._buf[: m.end()].strip()
            self._buf = self._buf[m.end():]
            if sentence:
                out.append(sentence)
        return out

    def flush(self) -> str | None:
        rest, self._buf = self._buf.strip(), ""
        return rest or None
