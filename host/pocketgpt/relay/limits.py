"""What one request may ask of the relay, checked before any generation starts.

One device must never be able to hurt another: a value the engine cannot take (a `top_k` that
overflows the C sampler, a stop string longer than the text matcher holds or one that is not
encodable UTF-8) is refused here with a one-line reason, over the websocket and the HTTP API
alike, instead of failing inside a batched decode step shared with every other device.

`RateLimiter` bounds how often a device (or, for OTA calls, a source address) may ask;
`LiveCaps` bounds how much runs at once: generations in the whole relay (each holds a KV
cache), and sessions and concurrent requests per device.
"""

from __future__ import annotations

import math
import time
from typing import Any

MAX_STOPS = 4
MAX_STOP_BYTES = 255          # the engine's stop-string matcher holds at most this many bytes each
MAX_TOP_K_UNKNOWN_VOCAB = 1 << 20  # an OpenAI backend's vocabulary is unknown: a sane bound still
SEED_RANGE = (-(1 << 63), 1 << 64)


def check_sampling(top_k: Any, stop: Any, seed: Any, n_vocab: int | None) -> str | None:
    """None when the settings can run, else what is wrong (one line, with the value)."""
    limit = n_vocab if n_vocab else MAX_TOP_K_UNKNOWN_VOCAB
    if isinstance(top_k, bool) or not isinstance(top_k, int) or not (0 <= top_k <= limit):
        return f"top_k must be an integer in [0, {limit}] (0: no top-k cut), got {_short(top_k)}"
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)
                             or not (SEED_RANGE[0] <= seed < SEED_RANGE[1])):
        return f"seed must be an integer in [-2^63, 2^64), got {_short(seed)}"
    return check_stops(stop)


def check_stops(stop: Any) -> str | None:
    """Stop strings: up to 4, each 1 to 255 bytes of valid UTF-8 (no lone surrogates)."""
    if not isinstance(stop, (list, tuple)) or len(stop) > MAX_STOPS:
        return f"stop must be a string or up to {MAX_STOPS} strings"
    for s in stop:
        if not isinstance(s, str) or not s:
            return "each stop string must be a non-empty string"
        try:
            n = len(s.encode("utf-8"))
        except UnicodeEncodeError:
            return f"stop string {_short(s)} is not valid Unicode text (a lone surrogate?)"
        if n > MAX_STOP_BYTES:
            return f"stop string is {n} bytes in UTF-8; at most {MAX_STOP_BYTES} are allowed"
    return None


def check_number(value: Any, name: str, lo: float, hi: float) -> str | None:
    """A finite number in [lo, hi] (JSON lets through 1e300, Infinity and NaN)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or (isinstance(value, float) and not math.isfinite(value)) or not (lo <= value <= hi):
        return f"{name} must be a number in [{lo:g}, {hi:g}], got {_short(value)}"
    return None


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


class LiveCaps:
    """How many generations run at once: in the whole relay (each holds a KV cache: 429/503 when
    full, never an unbounded queue) and per device (one token cannot take every slot).

    Used from the event loop only, so plain counters suffice.
    """

    def __init__(self, max_generations: int, per_device: int) -> None:
        self.max_generations = max(1, max_generations)
        self.per_device = max(1, per_device)
        self.total = 0
        self._by_device: dict[str, int] = {}

    def acquire(self, device: str | None) -> tuple[str, str, int] | None:
        """None when a slot was taken, else (error code, message, HTTP status). `device` None:
        an unauthenticated caller (open mode), held to the global cap only."""
        if self.total >= self.max_generations:
            return ("overloaded", f"the relay is running its limit of {self.max_generations} generations; "
                    "retry in a few seconds", 503)
        if device is None:
            self.total += 1
            return None
        if self._by_device.get(device, 0) >= self.per_device:
            return ("busy", f"this device already runs {self.per_device} generations at once; wait for one "
                    "to finish", 429)
        self.total += 1
        self._by_device[device] = self._by_device.get(device, 0) + 1
        return None

    def release(self, device: str | None) -> None:
        if device is None:
            self.total = max(0, self.total - 1)
            return
        n = self._by_device.get(device, 0)
        if n <= 0:
            return
        self.total -= 1
        if n == 1:
            del self._by_device[device]
        else:
            self._by_device[device] = n - 1


class RateLimiter:
    """A token bucket per device: `burst` requests at once, refilled at `per_minute`."""

    def __init__(self, per_minute: float, burst: int) -> None:
        self.rate = per_minute / 60.0
        self.burst = float(max(1, burst))
        self._buckets: dict[str, tuple[float, float]] = {}

    def allow(self, key: str) -> float:
        """0.0 if allowed (and counted), else the seconds to wait."""
        now = time.monotonic()
        if len(self._buckets) > 10000:  # forget refilled buckets so made-up device ids cannot grow memory
            self._buckets = {k: (lv, t) for k, (lv, t) in self._buckets.items()
                             if lv + (now - t) * self.rate < self.burst}
        level, last = self._buckets.get(key, (self.burst, now))
        level = min(self.burst, level + (now - last) * self.rate)
        if level >= 1.0:
            self._buckets[key] = (level - 1.0, now)
            return 0.0
        self._buckets[key] = (level, now)
        return (1.0 - level) / self.rate if self.rate > 0 else 3600.0
