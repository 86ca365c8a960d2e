"""Voice on the device: the simulator's microphone (a WAV) streamed as Opus, the reply played to a WAV.

The simulator runs the firmware's own voice code (firmware/app/audio.c and the turn loop in
app_voice.c) with the POSIX port (WAV microphone, WAV speaker, the host's libopus). The other end
is a small XiaoZhi-protocol server in this file that records what the device sends, decodes it
with opuslib, and answers with Opus it encodes itself: so these tests check the device's side of
the wire format (16 kHz mono 60 ms packets up, 24 kHz down, listen start/stop, abort) without the
relay's speech recognition. `make -C firmware/ports/posix test-audio` runs the C unit tests of the
push-to-talk state machine, the messages and the playback queue under ASan + UBSan.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import shutil
import subprocess
import threading
import wave
from array import array
from pathlib import Path
from typing import Any

import pytest

from support import RelayThread, need_opuslib

ROOT = Path(__file__).resolve().parents[1]
POSIX = ROOT / "firmware" / "ports" / "posix"

opuslib = need_opuslib()
pytestmark = [
    pytest.mark.c,
    pytest.mark.voice,
    pytest.mark.skipif(shutil.which("cc") is None, reason="needs a C compiler"),
    pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng (apt install espeak-ng)"),
]

SENTENCE = "Here is a tone."
DOWN_RATE, DOWN_FRAME = 24000, 1440  # 60 ms at 24 kHz


def rms(samples: array) -> float:
    return math.sqrt(sum(x * x for x in samples) / max(1, len(samples)))


def read_wav(path: Path) -> tuple[int, array]:
    with wave.open(str(path), "rb") as w:
        assert w.getsampwidth() == 2 and w.getnchannels() == 1
        pcm = array("h", w.readframes(w.getnframes()))
        return w.getframerate(), pcm


def speech(path: Path, text: str) -> Path:
    """espeak-ng's en-us+f2 voice at 150 words/min (22.05 kHz: the simulator resamples to 16 kHz)."""
    subprocess.run(["espeak-ng", "-v", "en-us+f2", "-s", "150", "-w", str(path), text], check=True,
                   capture_output=True, timeout=60)
    return path


def tone_packets(n: int) -> tuple[list[bytes], array]:
    """n Opus packets (24 kHz, 60 ms) of a 440 Hz tone at a steady level, and the PCM they carry."""
    enc = opuslib.Encoder(DOWN_RATE, 1, "audio")
    pcm = array("h", (int(8000 * math.sin(2 * math.pi * 440 * i / DOWN_RATE)) for i in range(n * DOWN_FRAME)))
    return [enc.encode(pcm[i * DOWN_FRAME:(i + 1) * DOWN_FRAME].tobytes(), DOWN_FRAME) for i in range(n)], pcm


class FakeXiaozhi:
    """A XiaoZhi-protocol server that records one device's messages and answers each utterance with
    stt, tts start, one sentence, `reply_packets` Opus packets paced at real time (5 pre-buffered),
    and tts stop. abort stops the reply at once (answered by tts stop)."""

    def __init__(self, reply_packets: list[int], garbage: int = 0) -> None:
        self.reply_packets = reply_packets
        self.garbage = garbage
        self.events: list[Any] = []    # JSON messages, and ("audio", n_bytes) per binary frame
        self.utterances: list[list[bytes]] = []
        self.headers: dict[str, str] = {}
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        assert self.ready.wait(10)

    def _run(self) -> None:
        from websockets.asyncio.server import serve

        async def main() -> None:
            self.stop_event = asyncio.Event()
            async with serve(self.handler, "127.0.0.1", 0, max_size=2**20) as server:
                self.port = server.sockets[0].getsockname()[1]
                self.ready.set()
                await self.stop_event.wait()

        self.loop.run_until_complete(main())

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/xiaozhi/v1/"

    async def handler(self, ws: Any) -> None:
        self.headers = dict(ws.request.headers)
        current: list[bytes] | None = None
        speaking: asyncio.Task | None = None
        turn = 0
        async for msg in ws:
            if isinstance(msg, bytes):
                self.events.append(("audio", len(msg)))
                if current is not None:
                    current.append(msg)
                continue
            m = json.loads(msg)
            self.events.append(m)
            if m.get("type") == "hello":
                await ws.send(json.dumps({"type": "hello", "transport": "websocket", "session_id": "sess-1",
                                          "audio_params": {"format": "opus", "sample_rate": DOWN_RATE, "channels": 1,
                                                           "frame_duration": 60}}))
            elif m.get("type") == "listen" and m.get("state") == "start":
                current = []
                self.utterances.append(current)
            elif m.get("type") == "listen" and m.get("state") == "stop":
                n = self.reply_packets[min(turn, len(self.reply_packets) - 1)]
                turn += 1
                speaking = asyncio.ensure_future(self.reply(ws, len(current or []), n))
                current = None
            elif m.get("type") == "abort":
                if speaking is not None and not speaking.done():
                    speaking.cancel()
                    await ws.send(json.dumps({"type": "tts", "state": "stop", "session_id": "sess-1"}))

    async def reply(self, ws: Any, heard: int, n: int) -> None:
        from websockets.exceptions import ConnectionClosed

        try:
            await self._reply(ws, heard, n)
        except ConnectionClosed:
            pass  # the device went away mid-reply (its run ended): nothing to answer

    async def _reply(self, ws: Any, heard: int, n: int) -> None:
        await ws.send(json.dumps({"type": "stt", "text": f"{heard} packets", "session_id": "sess-1"}))
        await ws.send(json.dumps({"type": "tts", "state": "start", "session_id": "sess-1"}))
        await ws.send(json.dumps({"type": "tts", "state": "sentence_start", "text": SENTENCE, "session_id": "sess-1"}))
        packets, _ = tone_packets(n)
        for i in range(self.garbage):  # malformed Opus: the device must survive them
            packets.insert(2 + i, b"\xff" * (3 + i))
        for i, p in enumerate(packets):
            await ws.send(p)
            if i >= 5:
                await asyncio.sleep(0.06)
        await ws.send(json.dumps({"type": "tts", "state": "stop", "session_id": "sess-1"}))

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.stop_event.set)
        self.thread.join(10)


@pytest.fixture(scope="module")
def voice_sim(sim_exe: Path) -> Path:
    """The simulator exactly as `pocketgpt device` builds it (conftest's sim_exe), with libopus found."""
    from pocketgpt.commands import device

    if not device.opus_flags()[0]:
        pytest.skip("the simulator's voice needs libopus headers (Debian: apt-get install libopus-dev)")
    return sim_exe


def test_voice_c_unit_tests_under_sanitizers(tmp_path: Path) -> None:
    """Push-to-talk transitions (press, release, barge-in, abort, stale packets, the three modes),
    the listen/abort messages byte for byte, the playback queue, the hello's audio_params."""
    res = subprocess.run(["make", "-s", "-C", str(POSIX), "test-audio", f"OUT={tmp_path}"], capture_output=True,
                         text=True, timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "voice: " in res.stdout and " checks, 0 failures" in res.stdout


def run_sim(exe: Path, model: Path, script: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([str(exe), "--model", str(model), "--device-id", "02:00:00:00:00:2b",
                           "--set", "relay.timeout_ms=15000", *args], input=script, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "HOME": str(model.parent)})


def voice_lines(out: str) -> list[str]:
    return [ln for ln in out.splitlines() if ln.startswith("(voice: ")]


def decode_up(packets: list[bytes]) -> array:
    dec = opuslib.Decoder(16000, 1)
    pcm = array("h")
    for p in packets:
        pcm.frombytes(dec.decode(p, 960))
    return pcm


def test_push_to_talk_streams_opus_and_plays_the_reply(tmp_path: Path, voice_sim: Path, device_gguf: Path) -> None:
    wav = speech(tmp_path / "kitchen.wav", "turn on the kitchen light")
    rate, said = read_wav(wav)
    server = FakeXiaozhi(reply_packets=[20])
    try:
        out = run_sim(voice_sim, device_gguf, "/talk\n", "--relay", server.url, "--mic", str(wav),
                      "--speaker", str(tmp_path / "heard.wav"))
    finally:
        server.stop()
    assert out.returncode == 0, out.stderr
    # the client hello announces 16 kHz mono 60 ms Opus; the listen messages carry the session
    hello = next(e for e in server.events if isinstance(e, dict) and e.get("type") == "hello")
    assert hello["audio_params"] == {"format": "opus", "sample_rate": 16000, "channels": 1, "frame_duration": 60}
    assert server.headers.get("protocol-version") == "1"
    listen = [e for e in server.events if isinstance(e, dict) and e.get("type") == "listen"]
    assert listen == [{"session_id": "sess-1", "type": "listen", "state": "start", "mode": "manual"},
                      {"session_id": "sess-1", "type": "listen", "state": "stop"}]
    kinds = ["audio" if isinstance(e, tuple) else e["type"] + e.get("state", "") for e in server.events]
    first, last = kinds.index("audio"), len(kinds) - 1 - kinds[::-1].index("audio")
    assert kinds[first - 1] == "listenstart" and kinds[last + 1] == "listenstop"  # audio only while listening
    # what went up decodes back to the same speech: as long (to one 60 ms frame) and as loud
    up = decode_up(server.utterances[0])
    said_s = len(said) / rate
    assert said_s <= len(up) / 16000 < said_s + 0.061, (len(up), said_s)
    assert 0.7 < rms(up) / rms(said) < 1.3, (rms(up), rms(said))
    # the reply: a valid 24 kHz WAV of the 20 packets, at the level sent
    heard_rate, heard = read_wav(tmp_path / "heard.wav")
    _, tone = tone_packets(20)
    assert heard_rate == DOWN_RATE and len(heard) == len(tone)
    assert 0.8 < rms(heard) / rms(tone) < 1.2
    assert f"[you] {len(server.utterances[0])} packets" in out.stdout
    assert f"[relay] {SENTENCE}" in out.stdout
    line = voice_lines(out.stdout)[0]
    assert "manual mode" in line and "reply 1.20 s in 20 packets" in line and "first reply audio" in line, line


def test_barge_in_aborts_the_reply_and_starts_listening(tmp_path: Path, voice_sim: Path, device_gguf: Path) -> None:
    folder = tmp_path / "mic"
    folder.mkdir()
    speech(folder / "1.wav", "tell me a long story")
    speech(folder / "2.wav", "stop")
    server = FakeXiaozhi(reply_packets=[80, 5])  # 4.8 s, interrupted; then a short one
    try:
        out = run_sim(voice_sim, device_gguf, "/talk\n", "--relay", server.url, "--mic", str(folder),
                      "--speaker", str(tmp_path / "heard.wav"), "--barge-in", "1200")
    finally:
        server.stop()
    assert out.returncode == 0, out.stderr
    msgs = [(e["type"], e.get("state"), e.get("reason")) for e in server.events if isinstance(e, dict)]
    assert msgs[1:] == [("listen", "start", None), ("listen", "stop", None), ("abort", None, "wake_word_detected"),
                        ("listen", "start", None), ("listen", "stop", None)], msgs
    assert len(server.utterances) == 2 and server.utterances[1]
    _, heard = read_wav(tmp_path / "heard.wav")
    # the first reply stops where the finger came down (1.2 s after release, plus the speaker's
    # 120 ms buffer at most), the second plays whole: far less than the 4.8 s that was sent
    assert 5 * DOWN_FRAME < len(heard) < int(2.0 * DOWN_RATE) + 5 * DOWN_FRAME, len(heard) / DOWN_RATE
    assert "1 abort" in voice_lines(out.stdout)[0]


def test_malformed_packets_are_skipped_and_the_turn_finishes(tmp_path: Path, voice_sim: Path, device_gguf: Path) -> None:
    wav = speech(tmp_path / "hi.wav", "hello")
    server = FakeXiaozhi(reply_packets=[6], garbage=2)
    try:
        out = run_sim(voice_sim, device_gguf, "/talk\n/talk\n", "--relay", server.url, "--mic", str(wav),
                      "--speaker", str(tmp_path / "heard.wav"))
    finally:
        server.stop()
    assert out.returncode == 0, out.stderr
    lines = voice_lines(out.stdout)
    assert len(lines) == 2 and all("reply 0.36 s in 8 packets; first reply audio" in ln for ln in lines), lines
    assert all("2 bad packets" in ln for ln in lines)
    _, heard = read_wav(tmp_path / "heard.wav")
    assert len(heard) == 2 * 6 * DOWN_FRAME


def test_microphone_folder_and_bad_input(tmp_path: Path, voice_sim: Path, device_gguf: Path) -> None:
    folder = tmp_path / "mic"
    folder.mkdir()
    speech(folder / "a.wav", "one")
    (tmp_path / "notwav.wav").write_bytes(b"this is not audio at all")
    server = FakeXiaozhi(reply_packets=[3])
    try:
        out = run_sim(voice_sim, device_gguf, f"/talk\n/talk\n/talk {tmp_path / 'notwav.wav'}\n/status\n",
                      "--relay", server.url, "--mic", str(folder))
    finally:
        server.stop()
    assert out.returncode == 0, out.stderr
    assert len(voice_lines(out.stdout)) == 1
    assert "[voice] the microphone folder" in out.stdout and "has no more files (1 played)" in out.stdout
    assert "notwav.wav is not a WAV file (RIFF/WAVE); convert it with: sox" in out.stdout
    assert "relay: ws://127.0.0.1" in out.stdout  # the session went on
    # no microphone given; then no relay to talk to
    server = FakeXiaozhi(reply_packets=[3])
    try:
        out = run_sim(voice_sim, device_gguf, "/talk\n", "--relay", server.url)
    finally:
        server.stop()
    assert "[voice] no microphone: start the simulator with --mic FILE.wav|FOLDER" in out.stdout, out.stdout
    out = run_sim(voice_sim, device_gguf, "/talk\n", "--relay", "ws://127.0.0.1:1/", "--mic", str(folder))
    assert "[voice] the relay is unreachable (cannot connect to 127.0.0.1:1); voice needs the relay" in out.stdout
    # bad command lines: one line, exit 2, nothing written
    for args, msg in ((["--mic", str(tmp_path / "missing")], "--mic " + str(tmp_path / "missing")),
                      (["--mic", str(tmp_path / "empty")], "the folder has no .wav files"),
                      (["--listen-mode", "loud"], "--listen-mode loud: use manual, auto or realtime"),
                      (["--speaker", str(tmp_path / "no" / "dir.wav")], "--speaker")):
        if "empty" in args[-1]:
            (tmp_path / "empty").mkdir()
        bad = run_sim(voice_sim, device_gguf, "", *args)
        assert bad.returncode == 2 and msg in bad.stderr and len(bad.stderr.strip().splitlines()) == 1, bad.stderr
        assert "Traceback" not in bad.stderr
    assert not list(tmp_path.glob("*.tmp"))


# ---- against the real relay (voice on: VAD, pocketsphinx, espeak-ng, Opus; the tiny GPT-2) ----

def voice_missing() -> str | None:
    try:
        from pocketgpt.relay.voice.session import VoiceService
    except ImportError as exc:
        return f"the relay's voice package is unavailable ({exc})"
    return VoiceService.missing()


@pytest.fixture(scope="module")
def voice_relay(engine: Any) -> Any:
    missing = voice_missing()
    if missing:
        pytest.skip(f"voice on the relay cannot run here: {missing}")
    from pocketgpt.relay.backends import EngineBackend

    rt = RelayThread(EngineBackend(engine, "tiny", workers=1), open=True, voice=True, default_max_tokens=12)
    yield rt
    rt.stop()


@pytest.mark.relay
@pytest.mark.parametrize("mode", ["manual", "auto"])
def test_the_relay_hears_the_simulator_and_answers_aloud(tmp_path: Path, voice_sim: Path, device_gguf: Path,
                                                         voice_relay: Any, mode: str) -> None:
    """Push-to-talk (manual) and VAD-ended (auto) turns: the relay's transcript comes back, its reply
    sentences are shown as their audio starts, and the reply plays into a valid 24 kHz WAV."""
    from pocketgpt.relay.voice.stt import word_errors

    said = "Tell me something about the moon."
    wav = speech(tmp_path / "moon.wav", said)
    out = run_sim(voice_sim, device_gguf, "/talk\n", "--relay", voice_relay.ws_url, "--mic", str(wav),
                  "--speaker", str(tmp_path / "heard.wav"), "--listen-mode", mode)
    assert out.returncode == 0, out.stderr
    heard = [ln[len("[you] "):] for ln in out.stdout.splitlines() if ln.startswith("[you] ")]
    assert len(heard) == 1, out.stdout
    errors, words = word_errors(said, heard[0])
    assert errors / words <= 0.5, (said, heard[0])  # the relay's recognizer, through the device's Opus
    assert any(ln.startswith("[relay] ") for ln in out.stdout.splitlines()), out.stdout
    line = voice_lines(out.stdout)[0]
    assert f"{mode} mode" in line and "first reply audio" in line, line
    rate, reply = read_wav(tmp_path / "heard.wav")
    reported = float(line.split("; reply ")[1].split(" s in ")[0])
    assert rate == DOWN_RATE and len(reply) > DOWN_RATE // 2 and abs(len(reply) / rate - reported) < 0.01


def test_pocketgpt_device_passes_the_voice_options(tmp_path: Path, device_gguf: Path, voice_sim: Path,
                                                  sim_cache: Path) -> None:
    """`pocketgpt device` builds the simulator with libopus and hands it --mic / --listen-mode."""
    import sys

    env = {**os.environ, "POCKETGPT_HOME": str(tmp_path),
           "POCKETGPT_CACHE": str(sim_cache)}
    base = [sys.executable, "-m", "pocketgpt", "device", "--model", str(device_gguf), "--settings",
            str(tmp_path / "dev.conf")]
    out = subprocess.run(base + ["--mic", str(tmp_path / "nowhere.wav")], capture_output=True, text=True,
                         timeout=300, env=env, stdin=subprocess.DEVNULL)
    assert out.returncode == 2 and f"--mic {tmp_path / 'nowhere.wav'}: No such file" in out.stderr, out.stderr
    wav = speech(tmp_path / "x.wav", "hello")
    out = subprocess.run(base + ["--mic", str(wav), "--listen-mode", "auto"], input="/talk\n", capture_output=True,
                         text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr
    assert "[voice] the relay is unreachable (no relay configured" in out.stdout  # got past the options


@pytest.mark.relay
def test_barge_in_against_the_relay(tmp_path: Path, voice_sim: Path, device_gguf: Path, voice_relay: Any) -> None:
    """A press over the relay's reply: the device aborts it (the relay owes one tts stop for it), the
    second utterance is heard and answered in the same turn."""
    folder = tmp_path / "mic"
    folder.mkdir()
    speech(folder / "1.wav", "Please tell me a story about a king and a dragon.")
    speech(folder / "2.wav", "Say something funny.")
    out = run_sim(voice_sim, device_gguf, "/talk\n", "--relay", voice_relay.ws_url, "--mic", str(folder),
                  "--speaker", str(tmp_path / "heard.wav"), "--barge-in", "2500")
    assert out.returncode == 0, out.stderr
    heard = [ln for ln in out.stdout.splitlines() if ln.startswith("[you] ")]
    assert len(heard) == 2, out.stdout
    line = voice_lines(out.stdout)[0]
    assert "1 abort" in line and "first reply audio" in line, line
