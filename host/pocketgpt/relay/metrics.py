"""The relay's counters for GET /metrics, in Prometheus' text format (no client library needed).

The gauges (sessions, generations, batch steps) are read from the relay when the page is
rendered (`http_api.HttpApi._gauges`); everything counted as it happens lives here.
"""

from __future__ import annotations

TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    """Counters for GET /metrics in Prometheus' text format (no client library needed)."""

    def __init__(self) -> None:
        self.counters: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        self.ttft = [0] * (len(TTFT_BUCKETS) + 1)
        self.ttft_sum = 0.0
        self.ttft_count = 0

    def inc(self, name: str, value: float = 1.0, **labels: str) -> None:
        key = (name, tuple(sorted(labels.items())))
        self.counters[key] = self.counters.get(key, 0.0) + value

    def observe_ttft(self, seconds: float) -> None:
        for i, edge in enumerate(TTFT_BUCKETS):
            if seconds <= edge:
                self.ttft[i] += 1
                break
        else:
            self.ttft[-1] += 1
        self.ttft_sum += seconds
        self.ttft_count += 1

    def render(self, gauges: dict[str, float]) -> str:
        help_text = {
            "pocketgpt_sessions_total": "Websocket sessions accepted.",
            "pocketgpt_refusals_total": "Requests refused, by error code.",
            "pocketgpt_generations_total": "Generations ended, by finish reason.",
            "pocketgpt_tokens_generated_total": "Tokens generated.",
            "pocketgpt_http_requests_total": "HTTP requests, by route and status.",
        }
        lines: list[str] = []
        for name, value in sorted(gauges.items()):
            lines += [f"# TYPE {name} gauge", f"{name} {value:g}"]
        seen: set[str] = set()
        for (name, labels), value in sorted(self.counters.items()):
            if name not in seen:
                seen.add(name)
                lines += [f"# HELP {name} {help_text.get(name, name)}", f"# TYPE {name} counter"]
            lab = ",".join(f'{k}="{v}"' for k, v in labels)
            lines.append(f"{name}{{{lab}}} {value:g}" if lab else f"{name} {value:g}")
        name = "pocketgpt_time_to_first_token_seconds"
        lines += [f"# HELP {name} Time from request to first generated text.", f"# TYPE {name} histogram"]
        acc = 0
        for edge, n in zip(TTFT_BUCKETS, self.ttft):
            acc += n
            lines.append(f'{name}_bucket{{le="{edge:g}"}} {acc}')
        lines.append(f'{name}_bucket{{le="+Inf"}} {self.ttft_count}')
        lines += [f"{name}_sum {self.ttft_sum:g}", f"{name}_count {self.ttft_count}"]
        return "\n".join(lines) + "\n"
