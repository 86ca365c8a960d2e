"""A small relay client speaking what a pocketgpt device speaks (hello + the text extension).

Used by the demo, the load benchmark and the tests; it is also the reference for the firmware's
relay client (firmware/app/): connect with the token, hello with features.pocketgpt, send
pg.generate, read pg.delta until pg.done or an error with the same id.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from pocketgpt.relay import protocol as P


@dataclass
class Reply:
    text: str = ""
    reason: str | None = None
    tokens: int = 0
    prompt_tokens: int = 0
    error: dict[str, Any] | None = None
    first_piece_s: float | None = None
    pieces: list[str] = field(default_factory=list)


class RelayClient:
    def __init__(self, url: str, token: str | None = None, device_id: str | None = None,
                 ssl: Any = None, extension: bool = True) -> None:
        self.url = url
        self.token = token
        self.device_id = device_id
        self.ssl = ssl
        self.extension = extension
        self.ws: Any = None
        self.hello: dict[str, Any] = {}
        self._n = 0

    async def __aenter__(self) -> RelayClient:
        from websockets.asyncio.client import connect

        headers = {"Protocol-Version": str(P.PROTOCOL_VERSION)}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        if self.device_id:
            headers["Device-Id"] = self.device_id
        kwargs: dict[str, Any] = {"additional_headers": headers, "compression": None, "max_size": 2**20}
        if self.ssl is not None:
            kwargs["ssl"] = self.ssl
        self.ws = await connect(self.url, **kwargs)
        features: dict[str, Any] = {"mcp": False}
        if self.extension:
            features["pocketgpt"] = P.EXTENSION_VERSION
        await self.ws.send(json.dumps({"type": "hello", "version": P.PROTOCOL_VERSION, "transport": "websocket",
                                       "features": features,
                                       "audio_params": {"format": "opus", "sample_rate": 16000, "channels": 1,
                                                        "frame_duration": 60}}))
        self.hello = json.loads(await self.ws.recv())
        if self.hello.get("type") != "hello":
            raise RuntimeError(f"relay answered the hello with {self.hello}")
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.ws.close()

    async def recv(self) -> dict[str, Any]:
        return json.loads(await self.ws.recv())

    async def stream(self, prompt: str, **params: Any) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        """Send one pg.generate; yield ("delta", msg) ... then ("done", msg) or ("error", msg)."""
        self._n += 1
        rid = params.pop("id", f"r{self._n}")
        await self.ws.send(json.dumps({"type": "pg.generate", "id": rid, "prompt": prompt, **params}))
        while True:
            msg = await self.recv()
            if msg.get("id") != rid:
                continue
            if msg["type"] == "pg.delta":
                yield "delta", msg
            elif msg["type"] == "pg.done":
                yield "done", msg
                return
            elif msg["type"] == "error":
                yield "error", msg
                return

    async def generate(self, prompt: str, **params: Any) -> Reply:
        reply = Reply()
        t0 = time.perf_counter()
        async for kind, msg in self.stream(prompt, **params):
            if kind == "delta":
                if reply.first_piece_s is None:
                    reply.first_piece_s = time.perf_counter() - t0
                reply.pieces.append(msg["text"])
            elif kind == "done":
                reply.reason, reply.tokens, reply.prompt_tokens = msg["reason"], msg["tokens"], msg["prompt_tokens"]
            else:
                reply.error = msg
        reply.text = "".join(reply.pieces)
        return reply

    async def text_turn(self, text: str) -> list[dict[str, Any]]:
        """A XiaoZhi typed-text turn (listen detect): every message up to and including tts stop."""
        await self.ws.send(json.dumps({"type": "listen", "state": "detect", "text": text,
                                       "session_id": self.hello.get("session_id", "")}))
        out = []
        while True:
            msg = await self.recv()
            out.append(msg)
            if msg.get("type") == "tts" and msg.get("state") == "stop":
                return out
