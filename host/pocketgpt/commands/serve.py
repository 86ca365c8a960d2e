"""pocketgpt serve: the relay (XiaoZhi websocket protocol, OTA, OpenAI-compatible API)."""

from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pocketgpt.relay.backends import Backend

HELP = """\
Serve a model to devices and clients.

  websocket  ws://HOST:PORT/xiaozhi/v1/   the XiaoZhi protocol (stock devices and clients work
                                          unchanged) plus pocketgpt's text-streaming extension
  HTTP       http://HOST:HTTP_PORT        POST /xiaozhi/ota/ (device configuration: websocket URL
                                          and token), GET /healthz, GET /metrics (Prometheus),
                                          /v1/models, /v1/completions, /v1/chat/completions

Every device needs a token; connections without a valid one are refused with HTTP 401 before
any work. An unknown device's OTA call gets a six-digit pairing code (it shows and speaks it);
'pocketgpt token pair CODE' registers it and its next OTA call gets its token, once.
'pocketgpt token add DEVICE_ID' pre-registers a device instead (scripted set-ups); --no-pairing
refuses unknown devices (HTTP 403). --open turns tokens off for a trusted LAN.
SIGTERM drains: no new sessions, running generations get --drain-timeout seconds to finish;
a second SIGTERM or Ctrl-C stops at once, without waiting for the drain.
See docs/relay.md (set-up, TLS, load balancing) and docs/protocol.md (messages).
"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="run the relay (XiaoZhi websocket protocol, OTA, OpenAI API)",
                       description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1; 0.0.0.0 for the LAN)")
    p.add_argument("--port", type=int, default=8000, help="websocket port (default 8000; 0 picks a free one)")
    p.add_argument("--http-port", type=int, default=8003, help="HTTP port (default 8003; 0 picks a free one)")
    p.add_argument("--model", default="builtin:host",
                   help="model file or builtin:NAME (engine backends); the remote model name (openai backend)")
    p.add_argument("--backend", choices=["engine", "torch", "openai"], default="engine",
                   help="engine: the embedded C engine (default); torch: the PyTorch reference engine "
                        "(needs the toolchain extra); openai: forward to an OpenAI-compatible server")
    p.add_argument("--url", help="base URL of the OpenAI-compatible server, e.g. http://127.0.0.1:8080/v1")
    p.add_argument("--api-key", default=os.environ.get("POCKETGPT_BACKEND_API_KEY"),
                   help="API key for the OpenAI-compatible server (default $POCKETGPT_BACKEND_API_KEY)")
    p.add_argument("--threads", type=int, default=None, help="engine threads per token step (default: engine's choice)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 2,
                   help="torch backend: generations advanced in parallel (default: one per core); the C engine "
                        "batches every live generation into one decode step instead")
    p.add_argument("--kv", choices=["f16", "q8_0", "f32"], default="f16",
                   help="engine backend: KV cache type per session (default f16; q8_0 needs about 0.6x its "
                        "memory, e.g. 22 MiB instead of 39 for GPT-2 124M at 1,024 positions)")
    p.add_argument("--max-batch", type=int, default=32,
                   help="engine backend: most generations decoded together per step (default 32)")
    p.add_argument("--draft", default="auto", metavar="MODEL",
                   help="engine backend: speculative decoding with this draft model for a generation that runs "
                        "alone (replies keep the model's distribution); 'auto' (default): a shipped pair measured "
                        "to pay (none today, docs/speed.md); 'none': off")
    p.add_argument("--home", default=None, help="token store folder (default $POCKETGPT_HOME or ~/.local/share/pocketgpt)")
    p.add_argument("--open", action="store_true", help="accept every connection without a token (trusted LAN only)")
    p.add_argument("--cert", help="TLS certificate (PEM): serve wss:// and https://")
    p.add_argument("--key", help="TLS private key (PEM)")
    p.add_argument("--public-url", help="websocket URL the OTA call hands out (default: the request's own host; set "
                   "it whenever the relay listens beyond this machine)")
    p.add_argument("--no-pairing", action="store_true",
                   help="no pairing codes: an unregistered device's OTA call gets HTTP 403 (pre-registration only)")
    p.add_argument("--ota-rate", type=float, default=60.0,
                   help="OTA calls per minute per source address and per device id (default 60, bursts of 20)")
    p.add_argument("--max-sessions", type=int, default=64, help="concurrent websocket sessions (default 64)")
    p.add_argument("--max-sessions-per-device", type=int, default=4,
                   help="websocket sessions one device may hold (default 4)")
    p.add_argument("--max-generations", type=int, default=64,
                   help="generations running at once in the relay, each with its KV cache; more are refused "
                        "with 503 / error overloaded (default 64)")
    p.add_argument("--max-requests-per-device", type=int, default=4,
                   help="generations one device may run at once, websocket and HTTP together (default 4)")
    p.add_argument("--http-max-connections", type=int, default=256,
                   help="open connections on the HTTP port; more are closed at once (default 256)")
    p.add_argument("--http-timeout", type=float, default=10.0,
                   help="seconds an HTTP client has to send a request's head, and again its body (default 10)")
    p.add_argument("--max-message-bytes", type=int, default=64 * 1024, help="largest frame or body (default 65536)")
    p.add_argument("--rate", type=float, default=60.0, help="generation requests per device per minute (default 60)")
    p.add_argument("--burst", type=int, default=10, help="requests a device may make at once (default 10)")
    p.add_argument("--max-prompt-chars", type=int, default=8000, help="longest prompt in characters (default 8000)")
    p.add_argument("--max-tokens", type=int, default=512, help="cap on generated tokens per request (default 512)")
    p.add_argument("--default-max-tokens", type=int, default=64, help="tokens per reply when the client names none (default 64)")
    p.add_argument("--idle-timeout", type=float, default=120.0, help="close a silent session after this many seconds (default 120)")
    p.add_argument("--hello-timeout", type=float, default=10.0, help="seconds a client has to send its hello (default 10)")
    p.add_argument("--drain-timeout", type=float, default=10.0, help="seconds running generations get on SIGTERM (default 10)")
    voice = p.add_mutually_exclusive_group()
    voice.add_argument("--voice", action="store_true",
                       help="require offline voice (docs/voice.md: Opus in, voice activity detection, pocketsphinx, "
                            "espeak-ng, Opus out) and fail when its packages are missing. Without --voice or "
                            "--no-voice, voice is on when the voice extra, libopus0 and espeak-ng are installed")
    voice.add_argument("--no-voice", action="store_true", help="turn voice off (text turns only)")
    p.add_argument("--no-steer", action="store_true",
                   help="no subject steering of chat replies (on by default: a reply is pushed to name what the "
                        "request asks about; pg.generate's 'steer' field turns it off per request)")
    p.add_argument("--log-prompts", action="store_true", help="log prompt text (off by default: prompts are private)")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.set_defaults(func=run)


def build_backend(args: argparse.Namespace) -> Backend:
    import logging
    from pathlib import Path

    from pocketgpt import models
    from pocketgpt.errors import PocketError
    from pocketgpt.relay.backends import EngineBackend, OpenAIBackend, load_engine

    if args.backend == "openai":
        if not args.url:
            raise PocketError("--backend openai needs --url (the server's base URL, e.g. http://127.0.0.1:8080/v1)")
        name = args.model if args.model != "builtin:host" else "default"
        logging.getLogger("pocketgpt.relay").info("backend: OpenAI-compatible server at %s, model %s", args.url, name)
        return OpenAIBackend(args.url, name, api_key=args.api_key)
    if args.url:
        raise PocketError("--url is for --backend openai")
    path = models.resolve(args.model)
    if not path.is_file():
        raise PocketError(f"model {args.model}: no such file {path}; pass a .gguf path or builtin:host")
    engine = load_engine(str(path), args.threads, reference=args.backend == "torch", kv=args.kv)
    model_id = args.model if args.model.startswith("builtin:") else Path(args.model).stem
    draft = None
    if args.backend == "engine":
        from pocketgpt.speculative import open_draft

        draft = open_draft(engine, args.model, args.draft)
    elif args.draft not in ("auto", "none"):
        raise PocketError("--draft needs --backend engine")
    return EngineBackend(engine, model_id, workers=max(1, args.workers), max_batch=max(1, args.max_batch),
                         draft=draft, steer=not args.no_steer)


def voice_choice(args: argparse.Namespace) -> dict:
    """Voice on when asked (--voice) or when its packages are here; the reason it is off otherwise.
    Says which at start-up (stderr: stdout's first line is the ready line scripts read)."""
    import sys

    if args.no_voice:
        print("pocketgpt serve: voice off (--no-voice); text turns only", file=sys.stderr, flush=True)
        return {"voice": False, "voice_off": "voice is turned off on this relay (--no-voice)"}
    if args.voice:
        return {"voice": True}  # Relay.start fails in one line when a package is missing
    from pocketgpt.relay.voice.session import VoiceService

    problem = VoiceService.missing()
    if problem is None:
        print("pocketgpt serve: voice on (offline speech recognition and synthesis; --no-voice turns it off)",
              file=sys.stderr, flush=True)
        return {"voice": True}
    print(f"pocketgpt serve: voice off: {problem}. Voice needs the voice extra (pip install "
          f"'pocketgpt[voice]': opuslib, pocketsphinx), Debian's libopus0 and espeak-ng", file=sys.stderr, flush=True)
    return {"voice": False, "voice_off": f"this relay has no voice: {problem}"}


def run(args: argparse.Namespace) -> int:
    import asyncio
    import logging
    import signal
    import sys
    from pathlib import Path

    from pocketgpt.errors import PocketError
    from pocketgpt.relay.server import Relay, RelayConfig

    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("websockets", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if args.open:
        print("pocketgpt serve: WARNING: --open is ON: no device tokens are checked, anyone who can reach "
              "this relay can use it. Use it only on a trusted LAN.", file=sys.stderr, flush=True)
    if args.open and args.host not in ("127.0.0.1", "::1", "localhost"):
        print(f"pocketgpt serve: WARNING: --open on {args.host}: every machine on that network gets in.",
              file=sys.stderr, flush=True)
    for flag in ("max_sessions", "max_message_bytes", "max_prompt_chars", "max_tokens", "default_max_tokens", "burst",
                 "max_sessions_per_device", "max_generations", "max_requests_per_device", "http_max_connections"):
        if getattr(args, flag) < 1:
            raise PocketError(f"--{flag.replace('_', '-')} must be at least 1, got {getattr(args, flag)}")
    cfg = RelayConfig(
        host=args.host, port=args.port, http_port=args.http_port, open=args.open,
        home=Path(args.home) if args.home else None, cert=args.cert, key=args.key, public_url=args.public_url,
        max_message_bytes=args.max_message_bytes, max_sessions=args.max_sessions, rate_per_minute=args.rate,
        rate_burst=args.burst, max_prompt_chars=args.max_prompt_chars, max_tokens_cap=args.max_tokens,
        default_max_tokens=min(args.default_max_tokens, args.max_tokens), idle_timeout=args.idle_timeout,
        hello_timeout=args.hello_timeout, drain_timeout=args.drain_timeout, log_prompts=args.log_prompts,
        pairing=not args.no_pairing, ota_per_minute=args.ota_rate,
        max_sessions_per_device=args.max_sessions_per_device, max_generations=args.max_generations,
        max_requests_per_device=args.max_requests_per_device, http_max_connections=args.http_max_connections,
        http_header_timeout=args.http_timeout, http_body_timeout=args.http_timeout,
        **voice_choice(args))
    backend = build_backend(args)

    async def main() -> None:
        relay = Relay(cfg, backend)
        await relay.start()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, relay.request_drain)
        ws, http = relay.scheme
        print(f"pocketgpt relay ready: {ws}://{cfg.host}:{relay.ws_port}/xiaozhi/v1/ "
              f"{http}://{cfg.host}:{relay.http_port}/ ws_port={relay.ws_port} http_port={relay.http_port} "
              f"backend={backend.name} model={backend.model_id}", flush=True)
        await relay.wait_stopped()

    asyncio.run(main())
    return 0
