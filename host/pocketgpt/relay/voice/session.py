"""The voice side of one websocket session: the microphone in, the speaker out.

`VoiceService` is relay-wide (a thread pool for the blocking work, warm recognizers, settings).
Each session gets a `Listener` (Opus packets -> voice activity -> recognizer -> utterances) and,
for each reply, a `Speaker` (sentences -> espeak-ng -> 24 kHz Opus -> packets paced at real time).

Everything blocking (Opus, WebRTC VAD, pocketsphinx, espeak-ng) runs in the service's worker
threads; the event loop only moves bytes and JSON. Control messages (listen start/stop) and
audio packets go through one queue per session, so they are handled in the order they arrived.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pocketgpt.relay.voice import tts as tts_mod
from pocketgpt.relay.voice.codec import AudioError, OpusDecoder, OpusEncoder
from pocketgpt.relay.voice.stt import Recognizer, RecognizerPool
from pocketgpt.relay.voice.vad import SAMPLE_RATE, Segmenter, VadSettings

log = logging.getLogger("pocketgpt.relay.voice")

MODES = ("auto", "manual", "realtime")


@dataclass(frozen=True)
class VoiceConfig:
    lm: str | None = None                 # None: the shipped LM; "default": pocketsphinx's; or a path
    tts_voice: str = tts_mod.DEFAULT_VOICE
    tts_wpm: int = tts_mod.DEFAULT_WPM
    out_rate: int = 24000                  # what the server hello announces
    out_frame_ms: int = 60
    prebuffer_packets: int = 5             # sent at once before pacing starts (XiaoZhi servers: about 5)
    speak_clauses: bool = True             # cut long sentences at clauses (sentences.SpeechSplitter)
    vad: VadSettings = field(default_factory=VadSettings)
    workers: int = 2                       # threads for Opus, VAD, recognition and synthesis


class VoiceService:
    """What all sessions share. `start()` checks the dependencies and warms one recognizer."""

    def __init__(self, cfg: VoiceConfig | None = None) -> None:
        self.cfg = cfg or VoiceConfig()
        self.pool = RecognizerPool(self.cfg.lm)
        self._executor = ThreadPoolExecutor(max_workers=max(1, self.cfg.workers), thread_name_prefix="pocketgpt-voice")

    @staticmethod
    def missing() -> str | None:
        """Why voice cannot run here (None: it can)."""
        try:
            OpusDecoder(16000)
        except AudioError as exc:
            return str(exc)
        try:
            import pocketsphinx  # noqa: F401
        except ImportError as exc:
            return f"pocketsphinx is unavailable ({exc}); install the voice extra (pip install 'pocketgpt[voice]')"
        if tts_mod.espeak_path() is None:
            return "espeak-ng is not installed (Debian: apt-get install espeak-ng)"
        return None

    async def start(self) -> None:
        problem = await self.run(self.missing)  # imports pocketsphinx, loads libopus: not on the loop
        if problem:
            raise AudioError(problem)
        await self.run(self.pool.warm)

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await self.submit(fn, *args)

    def submit(self, fn: Callable[..., Any], *args: Any) -> asyncio.Future[Any]:
        """Start fn(*args) in a voice thread now; await the future later (synthesis runs ahead)."""
        return asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


# ---- microphone -------------------------------------------------------------------------------

@dataclass
class MicEvent:
    kind: str            # "speech_start" | "utterance" | "error"
    text: str = ""        # the words heard, or the error message
    code: str = "voice_error"  # for errors: the protocol error code
    audio_s: float = 0.0  # utterance length (for the log)


class _MicState:
    """Touched only from worker threads, one call at a time (the Listener awaits each call)."""

    def __init__(self, service: VoiceService) -> None:
        self.service = service
        self.decoder = OpusDecoder(SAMPLE_RATE)
        self.segmenter = Segmenter(service.cfg.vad)
        self.rec: Recognizer | None = None
        self.mode: str | None = None
        self.listening = False
        self.error_sent = False

    def _take(self) -> Recognizer:
        if self.rec is None:
            self.rec = self.service.pool.take()
        return self.rec

    def _finish(self) -> MicEvent:
        rec, self.rec = self.rec, None
        if rec is None:
            return MicEvent("utterance", "")
        seconds = rec.samples / SAMPLE_RATE
        try:
            text = rec.finish()
        finally:
            self.service.pool.give(rec)
        return MicEvent("utterance", text, audio_s=seconds)

    def start(self, mode: str) -> list[MicEvent]:
        out = self.stop(emit=False)
        self.mode = mode
        self.listening = True
        self.error_sent = False
        self.segmenter.reset()
        if mode == "manual":
            self._take().start()  # push-to-talk: everything until listen stop is the utterance
        return out

    def stop(self, emit: bool = True) -> list[MicEvent]:
        """listen stop: a manual utterance ends here; an auto one in progress ends too."""
        out: list[MicEvent] = []
        if self.rec is not None:
            ev = self._finish()
            if emit:
                out.append(ev)
        self.listening = False
        return out

    def packets(self, packets: list[bytes]) -> list[MicEvent]:
        out: list[MicEvent] = []
        pcm_parts = []
        for pkt in packets:
            try:
                pcm_parts.append(self.decoder.decode(pkt))
            except AudioError as exc:
                if not self.error_sent:
                    self.error_sent = True  # once per listening phase: a broken encoder sends ~16/s
                    out.append(MicEvent("error", str(exc), code="bad_audio"))
                self.decoder = OpusDecoder(SAMPLE_RATE)  # a fresh state after garbage
        if not self.listening or not pcm_parts:
            return out
        pcm = np.concatenate(pcm_parts)
        if self.mode == "manual":
            self._take().feed(pcm)
            return out
        for ev in self.segmenter.feed(pcm):
            if ev.kind == "start":
                rec = self._take()
                rec.start()
                rec.feed(ev.pcm)
                out.append(MicEvent("speech_start"))
            elif ev.kind == "speech" and self.rec is not None:
                self.rec.feed(ev.pcm)
            elif ev.kind == "end":
                heard = self._finish()
                out.append(heard)
                if self.mode == "auto" and heard.text:
                    self.listening = False  # the device sends listen start again after the reply
                    break
                # nothing recognised (a cough, a door): keep listening, the device is still waiting
        return out

    def close(self) -> None:
        if self.rec is not None:
            self.service.pool.give(self.rec)
            self.rec = None


class Listener:
    """Per session: queue audio and listen control in order; report utterances to the session.

    At most `MAX_BACKLOG` packets wait (a minute of 60 ms audio): a client streaming much faster
    than the recognizer keeps up loses the excess, with one error, instead of growing memory.
    """

    MAX_BACKLOG = 1000

    def __init__(self, service: VoiceService, on_event: Callable[[MicEvent], Awaitable[None]]) -> None:
        self.service = service
        self.on_event = on_event
        self.mode: str | None = None
        self._items: collections.deque[tuple[str, Any]] = collections.deque()
        self._wake = asyncio.Event()
        self._backlog = 0
        self._dropped = False
        self._state: _MicState | None = None
        self._task = asyncio.create_task(self._run())

    def _put(self, kind: str, value: Any) -> None:
        self._items.append((kind, value))
        self._wake.set()

    def audio(self, packet: bytes) -> None:
        if self._backlog >= self.MAX_BACKLOG:
            if not self._dropped:
                self._dropped = True
                self._put("dropped", None)
            return
        self._backlog += 1
        self._put("audio", packet)

    def start(self, mode: str) -> None:
        self.mode = mode
        self._put("start", mode)

    def stop(self) -> None:
        self._put("stop", None)

    async def _run(self) -> None:
        svc = self.service
        while True:
            if not self._items:
                self._wake.clear()
                await self._wake.wait()
                continue
            kind, value = self._items.popleft()
            try:
                if self._state is None:
                    self._state = await svc.run(_MicState, svc)
                if kind == "audio":
                    batch = [value]
                    while self._items and self._items[0][0] == "audio" and len(batch) < 50:
                        batch.append(self._items.popleft()[1])
                    self._backlog -= len(batch)
                    events = await svc.run(self._state.packets, batch)
                elif kind == "start":
                    self._dropped = False
                    events = await svc.run(self._state.start, value)
                elif kind == "stop":
                    events = await svc.run(self._state.stop)
                else:
                    events = [MicEvent("error", f"audio arrives faster than the relay can listen; more than "
                                                f"{self.MAX_BACKLOG} packets were waiting and later ones were "
                                                "dropped: stream at real time")]
            except Exception as exc:  # a failure costs this utterance, never the session
                log.exception("voice listener failed")
                if self._state is not None:
                    await svc.run(self._state.close)
                self._state = None
                events = [MicEvent("error", f"the relay's voice input failed ({exc.__class__.__name__}: {exc}); "
                                            "send listen start to try again")]
            for ev in events:
                await self.on_event(ev)

    async def close(self) -> None:
        self._task.cancel()
        try:
            await self._task
        except (asyncio.CancelledError, Exception):
            pass
        if self._state is not None:
            try:
                await self.service.run(self._state.close)
            except RuntimeError:  # the voice threads are already gone (relay stopping)
                self._state.close()


# ---- speaker ----------------------------------------------------------------------------------

class Speaker:
    """One reply's audio: `say(sentence)` as sentences stream in, `finish()`, or `stop()` at once.

    Synthesis of each sentence starts the moment it arrives (in a worker thread), so the next
    sentence is ready while the current one plays. The sender sends `sentence_start` and then the
    sentence's packets; the first `prebuffer_packets` of the reply go out at once, every later
    packet when the device's buffer would drop below that (a play clock in wall time), so the
    device always holds about 5 packets and an abort silences it within about 300 ms.
    """

    def __init__(self, service: VoiceService, send_text: Callable[[str], Awaitable[bool]],
                 send_audio: Callable[[bytes], Awaitable[bool]], sentence_msg: Callable[[str], str]) -> None:
        self.service = service
        cfg = service.cfg
        self._send_text = send_text
        self._send_audio = send_audio
        self._sentence_msg = sentence_msg
        self._frame_s = cfg.out_frame_ms / 1000
        self._lead_s = cfg.prebuffer_packets * self._frame_s
        self._queue: asyncio.Queue[tuple[str, asyncio.Future[np.ndarray]] | None] = asyncio.Queue()
        self._encoder: OpusEncoder | None = None
        self._play_end = 0.0  # wall time at which the device will have played everything sent
        self.packets_sent = 0
        self.first_packet_at: float | None = None
        self.error: str | None = None
        self.stopped = False
        self._task = asyncio.create_task(self._send_all())

    def say(self, sentence: str) -> None:
        if self.stopped:
            return
        cfg = self.service.cfg
        fut = self.service.submit(tts_mod.synthesize, sentence, cfg.out_rate, cfg.tts_voice, cfg.tts_wpm)
        self._queue.put_nowait((sentence, fut))

    async def finish(self) -> None:
        """Wait until every sentence said so far has been paced out (or the speaker was stopped)."""
        self._queue.put_nowait(None)
        await asyncio.wait({self._task})
        if not self._task.cancelled() and self._task.exception() is not None:
            exc = self._task.exception()
            log.error("speaker failed: %s: %s", exc.__class__.__name__, exc)
            self.error = self.error or f"{exc.__class__.__name__}: {exc}"

    def stop(self) -> None:
        """Abort: no packet leaves after this call returns."""
        self.stopped = True
        self._task.cancel()

    async def _send_all(self) -> None:
        cfg = self.service.cfg
        loop = asyncio.get_running_loop()
        try:
            self._encoder = await self.service.run(OpusEncoder, cfg.out_rate, cfg.out_frame_ms)
            while True:
                item = await self._queue.get()
                if item is None:
                    break
                sentence, fut = item
                try:
                    pcm = await fut
                    packets = await self.service.run(self._encoder.encode, pcm)
                except AudioError as exc:
                    self.error = str(exc)
                    packets = []
                if not await self._send_text(self._sentence_msg(sentence)):
                    return
                for pkt in packets:
                    now = loop.time()
                    wait = self._play_end - self._lead_s - now
                    if wait > 0:
                        await asyncio.sleep(wait)
                        now = loop.time()
                    if self.stopped or not await self._send_audio(pkt):
                        return
                    if self.first_packet_at is None:
                        self.first_packet_at = time.perf_counter()
                    self.packets_sent += 1
                    self._play_end = max(self._play_end, now) + self._frame_s
            # tts stop once the device has played the last packet: some firmware drops what is
            # still queued for playback when it leaves the speaking state
            rest = self._play_end - loop.time()
            if rest > 0:
                await asyncio.sleep(rest)
        finally:
            while not self._queue.empty():
                item = self._queue.get_nowait()
                if item is not None:
                    item[1].cancel()
