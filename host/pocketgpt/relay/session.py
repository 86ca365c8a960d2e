"""One device's websocket session: the XiaoZhi protocol state machine between socket and backend.

`WsSession` reads a connection's messages (parsed by the sans-I/O `protocol` module), runs its
turns (a XiaoZhi text or voice turn, a pg.generate) through `Relay.start_generation`, and sends
the replies. The listeners, credentials checked before the upgrade, limits shared by all sessions
and the shutdown live in `server.py`.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import TYPE_CHECKING, Any

from websockets.exceptions import ConnectionClosed

from pocketgpt.relay import protocol as P
from pocketgpt.relay.backends import BackendError, Generation, GenRequest

if TYPE_CHECKING:
    from pocketgpt.relay.server import Relay

log = logging.getLogger("pocketgpt.relay")

# what a push-to-talk turn in which nothing was recognised says (a turn is never silent)
NOTHING_HEARD = "Sorry, I did not hear anything. Hold the button and speak."


class WsSession:
    """One device connection: the protocol state machine between socket and backend."""

    def __init__(self, relay: Relay, ws: Any, device_id: str, token: str | None = None) -> None:
        self.relay = relay
        self.ws = ws
        self.device_id = device_id
        self._token = token  # kept in memory only, to notice a revocation; never logged
        self.session_id = uuid.uuid4().hex
        self.hello_done = False
        self.extension = False
        self.task: asyncio.Task[None] | None = None
        self.gen: Generation | None = None
        self.request_id: str | None = None     # the running pg.generate, if any
        self.audio_refused = False
        self.audio_problem: str | None = None  # the hello's audio_params cannot be decoded (voice on)
        self.listener: Any = None              # voice.Listener, made at the first listen start
        self.speaker: Any = None               # voice.Speaker of the running turn

    async def send(self, message: str | bytes) -> bool:
        """One websocket message (text, or an audio packet): False when the device has gone."""
        try:
            await self.ws.send(message)
            return True
        except ConnectionClosed:
            return False

    async def refuse(self, code: str, message: str, request_id: str | None = None) -> None:
        self.relay.metrics.inc("pocketgpt_refusals_total", code=code)
        await self.send(P.error(code, message, request_id))

    @property
    def busy(self) -> bool:
        return self.task is not None and not self.task.done()

    async def run(self) -> None:
        cfg = self.relay.cfg
        try:
            while True:
                timeout = cfg.idle_timeout if self.hello_done else cfg.hello_timeout
                try:
                    message = await asyncio.wait_for(self.ws.recv(), timeout)
                except asyncio.TimeoutError:
                    if self.busy:
                        continue  # a reply is streaming: the device is listening, not idle
                    code = "idle_timeout" if self.hello_done else "hello_timeout"
                    await self.refuse(code, f"nothing received for {timeout:g} s; closing")
                    await self.ws.close(1000 if self.hello_done else 1008, code)
                    return
                try:
                    await self.handle(message)
                except ConnectionClosed:
                    raise
                except Exception:
                    log.exception("session %s: failed handling a message", self.session_id[:8])
                    await self.refuse("internal", "the relay failed handling that message; the session stays open")
        except ConnectionClosed:
            pass
        finally:
            if self.gen is not None:
                self.gen.abort()
            if self.speaker is not None:
                self.speaker.stop()
            if self.listener is not None:
                await self.listener.close()
            if self.task is not None:
                try:
                    await asyncio.wait_for(asyncio.shield(self.task), 5)
                except (asyncio.TimeoutError, Exception):
                    self.task.cancel()

    async def handle(self, message: str | bytes) -> None:
        if isinstance(message, (bytes, bytearray, memoryview)):
            if not self.hello_done:
                await self.refuse("hello_required", "send a hello before anything else")
            elif self.relay.voice is not None and self.audio_problem is None:
                if self.listener is not None:
                    self.listener.audio(bytes(message))
            elif self.audio_problem is not None and not self.audio_refused:
                self.audio_refused = True
                await self.refuse("bad_audio_params", self.audio_problem)
            elif not self.audio_refused:
                # once per listening phase: a device streams ~16 packets/s, one error is enough
                self.audio_refused = True
                why = self.relay.cfg.voice_off or (
                    "this relay has no voice: it needs the voice extra (pip install 'pocketgpt[voice]': opuslib, "
                    "pocketsphinx), Debian's libopus0 and espeak-ng")
                await self.refuse("audio_unsupported", f"{why}; binary audio frames are ignored until the next "
                                  "listen start; send text turns with listen detect or pg.generate")
            return
        try:
            msg = P.parse_client(message)
        except P.ProtocolError as exc:
            await self.refuse(exc.code, exc.message, exc.request_id)
            return
        if msg.type == "hello":
            self.hello_done = True
            self.extension = self.extension or msg.wants_extension
            ext = None
            if self.extension:
                ext = {"version": P.EXTENSION_VERSION, "max_tokens": self.relay.cfg.max_tokens_cap,
                       "max_prompt_chars": self.relay.cfg.max_prompt_chars, **self.relay.backend.describe()}
            await self.send(P.server_hello(self.session_id, ext))
            if self.relay.voice is not None:
                from pocketgpt.relay.voice.codec import check_client_audio

                self.audio_problem = check_client_audio(msg.audio_params)
                if self.audio_problem:
                    await self.refuse("bad_audio_params", self.audio_problem + "; audio frames are refused until "
                                      "a hello with usable audio_params, text turns still work")
            return
        if not self.hello_done:
            await self.refuse("hello_required", "send a hello before anything else")
            return
        if msg.type in ("listen", "pg.generate") and not await self._still_authorized(msg.request_id):
            return
        if msg.type == "listen":
            if msg.state == "start":
                self.audio_refused = False
                if self.relay.voice is not None and self.audio_problem is None:
                    await self._listen_start(msg.mode or "auto")
            elif msg.state == "stop":
                if self.listener is not None:
                    self.listener.stop()
            elif msg.state == "detect" and msg.text is not None:  # typed text, "" too: answered, never silence
                if msg.text.strip().lower() in self.relay.cfg.wake_words:
                    return  # a wake word fired: nothing to answer until the user speaks
                await self.start_xiaozhi_turn(msg.text)
            return
        if msg.type == "abort":
            await self.abort(msg.request_id)
            return
        if msg.type in ("mcp", "iot"):
            return  # no device tools on this relay
        if msg.type == "pg.generate":
            await self.start_pg(msg)

    async def _still_authorized(self, request_id: str | None) -> bool:
        """A token revoked while its session is open stops working at the next request."""
        if self.relay.cfg.open or self.relay.store.verify(self._token) == self.device_id:
            return True
        log.info("session %s: device %r was revoked; closing", self.session_id[:8], self.device_id)
        await self.refuse("unauthorized", "this device's token was revoked; closing the connection", request_id)
        await self.ws.close(1008, "token revoked")
        return False

    # -- turns --

    def _check_request(self, prompt: str, request_id: str | None) -> tuple[str, str] | None:
        cfg = self.relay.cfg
        if self.relay.draining:
            return "shutting_down", "the relay is shutting down; reconnect to another relay"
        if len(prompt) > cfg.max_prompt_chars:
            return "prompt_too_long", (f"prompt is {len(prompt)} characters; this relay takes at most "
                                       f"{cfg.max_prompt_chars}: shorten it")
        wait = self.relay.limiter.allow(self.device_id)
        if wait:
            return "rate_limited", f"too many requests from this device; retry in {wait:.1f} s"
        return None

    async def start_xiaozhi_turn(self, text: str) -> None:
        if self.busy:
            # the user spoke again while the reply plays: barge in, as XiaoZhi servers do
            await self.abort(None, quiet=True)
        refusal = self._check_request(text, None)
        if refusal:
            await self.refuse(*refusal)
            await self.send(P.tts("stop", self.session_id))  # the turn is over: a client waiting for it stops
            return
        req = GenRequest(prompt=text, max_tokens=self.relay.cfg.default_max_tokens, messages=(("user", text),))
        self.relay.log_request(self.device_id, "xiaozhi", text)
        self.task = asyncio.create_task(self._xiaozhi_turn(text, req))

    async def _xiaozhi_turn(self, text: str, req: GenRequest) -> None:
        sid = self.session_id
        await self.send(P.stt(text, sid))
        await self.send(P.tts("start", sid))
        splitter = P.SentenceSplitter()
        if self.relay.voice is not None:
            from pocketgpt.relay.voice.sentences import SpeechSplitter
            from pocketgpt.relay.voice.session import Speaker

            if self.relay.voice.cfg.speak_clauses:
                splitter = SpeechSplitter()  # also cuts long sentences at clauses: speech starts sooner
            self.speaker = Speaker(self.relay.voice, self.send, self.send_audio,
                                   lambda sentence: P.tts("sentence_start", sid, sentence))
        try:
            self.gen = await self.relay.start_generation(req, self.device_id)
            async for piece in self.gen:
                for sentence in splitter.feed(piece):
                    await self._sentence(sentence)
            rest = splitter.flush()
            if rest and self.gen.stats.finish_reason != "abort":
                await self._sentence(rest)
            self.gen = None
            if self.speaker is not None:
                await self.speaker.finish()  # the reply's audio, paced at real time
                if self.speaker.error and not self.speaker.stopped:
                    await self.refuse("voice_error", f"speech synthesis failed: {self.speaker.error}")
        except BackendError as exc:
            await self.refuse(exc.code, exc.message)
        finally:
            self.gen = None
            if self.speaker is not None:
                self.speaker.stop()
                self.speaker = None
            await self.send(P.tts("stop", sid))

    async def _say(self, text: str) -> None:
        """A turn of fixed words (no model): stt, tts start, the sentence (spoken when voice is on), tts stop."""
        sid = self.session_id
        await self.send(P.stt("", sid))
        await self.send(P.tts("start", sid))
        if self.relay.voice is not None:
            from pocketgpt.relay.voice.session import Speaker

            self.speaker = Speaker(self.relay.voice, self.send, self.send_audio,
                                   lambda sentence: P.tts("sentence_start", sid, sentence))
        try:
            await self._sentence(text)
            if self.speaker is not None:
                await self.speaker.finish()
        finally:
            if self.speaker is not None:
                self.speaker.stop()
                self.speaker = None
            await self.send(P.tts("stop", sid))

    async def _sentence(self, sentence: str) -> None:
        if self.speaker is not None:
            self.speaker.say(sentence)  # its sentence_start goes out right before its audio
        else:
            await self.send(P.tts("sentence_start", self.session_id, sentence))

    async def send_audio(self, packet: bytes) -> bool:
        return await self.send(packet)

    async def _listen_start(self, mode: str) -> None:
        from pocketgpt.relay.voice.session import Listener

        if self.busy and mode != "realtime" and self.request_id is None:
            await self.abort(None, quiet=True)  # talking over the reply (push-to-talk pressed again)
        if self.listener is None:
            self.listener = Listener(self.relay.voice, self._on_mic)
        self.listener.start(mode)

    async def _on_mic(self, ev: Any) -> None:
        """Events from the voice listener, in audio order."""
        if ev.kind == "error":
            await self.refuse(ev.code, ev.text)
        elif ev.kind == "speech_start":
            if self.listener is not None and self.listener.mode == "realtime" and self.busy and self.request_id is None:
                await self.abort(None, quiet=True)  # barge-in: the user talks over the reply
        elif ev.kind == "utterance":
            log.info("session %s: heard %.1f s of speech (%d words)", self.session_id[:8], ev.audio_s,
                     len(ev.text.split()))
            if ev.text:
                if await self._still_authorized(None):
                    await self.start_xiaozhi_turn(ev.text)
            elif self.listener is not None and self.listener.mode == "manual":
                # push-to-talk with nothing recognised: say so (never a silent turn), which also ends
                # the turn so the device leaves listening
                await self._say(NOTHING_HEARD)

    async def start_pg(self, msg: P.ClientMessage) -> None:
        rid = msg.request_id
        assert rid is not None and msg.prompt is not None
        cfg = self.relay.cfg
        if not self.extension:
            await self.refuse("unknown_type", "pg.generate needs \"features\": {\"pocketgpt\": 1} in the hello", rid)
            return
        if self.busy:
            await self.refuse("busy", f"request {self.request_id or '(voice turn)'} is still running; "
                              "abort it or wait for its pg.done", rid)
            return
        p = msg.params
        if p.max_tokens is not None and p.max_tokens > cfg.max_tokens_cap:
            await self.refuse("bad_message", f"max_tokens {p.max_tokens} exceeds this relay's cap of {cfg.max_tokens_cap}", rid)
            return
        refusal = self._check_request(msg.prompt, rid)
        if refusal:
            await self.refuse(*refusal, rid)
            return
        defaults = GenRequest(prompt=msg.prompt)
        req = GenRequest(
            prompt=msg.prompt, max_tokens=p.max_tokens or cfg.default_max_tokens,
            temperature=defaults.temperature if p.temperature is None else p.temperature,
            top_k=defaults.top_k if p.top_k is None else p.top_k,
            top_p=defaults.top_p if p.top_p is None else p.top_p,
            seed=p.seed, greedy=p.greedy, stop=p.stop, messages=() if p.raw else (("user", msg.prompt),),
            steer=p.steer)
        self.relay.log_request(self.device_id, "pg.generate", msg.prompt)
        self.request_id = rid
        self.task = asyncio.create_task(self._pg_turn(rid, req))

    async def _pg_turn(self, rid: str, req: GenRequest) -> None:
        try:
            self.gen = await self.relay.start_generation(req, self.device_id)
            async for piece in self.gen:
                await self.send(P.delta(rid, piece))
            st = self.gen.stats
            await self.send(P.done(rid, st.finish_reason, st.tokens, st.prompt_tokens))
        except BackendError as exc:
            await self.refuse(exc.code, exc.message, rid)
        finally:
            self.gen = None
            self.request_id = None

    async def abort(self, request_id: str | None, quiet: bool = False) -> None:
        if not self.busy:
            if not quiet and request_id is None:
                await self.send(P.tts("stop", self.session_id))  # XiaoZhi: abort is answered by tts stop
            return
        if request_id is not None and request_id != self.request_id:
            return  # an old or unknown id: nothing of that name is running
        if self.gen is not None:
            self.gen.abort()
        if self.speaker is not None:
            self.speaker.stop()  # no audio packet leaves after this point
        task = self.task
        if task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(task), 10)
            except asyncio.TimeoutError:
                task.cancel()
