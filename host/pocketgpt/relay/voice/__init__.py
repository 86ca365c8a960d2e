"""Offline voice for the relay, as XiaoZhi servers do it but with nothing leaving the machine.

codec.py     Opus in (16 kHz, 20/40/60 ms, tiny silence packets) and out (24 kHz, 60 ms), libopus
vad.py       WebRTC voice activity (pocketsphinx.Vad) + start/end decisions in audio time
stt.py       pocketsphinx recognizer fed while the user speaks; a pool of warm decoders
lm.py        builds the recognizer's trigram language model (ARPA written here) from a corpus
commands.py  spoken requests expanded from templates (half of the language model's text)
evalsets.py  held-out sentences the word error rate is measured on
tts.py       espeak-ng -> 24 kHz PCM
audio.py     resampling and WAV helpers
session.py   VoiceService (shared), Listener (mic side of a session), Speaker (paced reply audio)

docs/voice.md has the pipeline, the wire format, the word error rates and the latency.
"""
