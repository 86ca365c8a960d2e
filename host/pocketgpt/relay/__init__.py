"""The host relay: XiaoZhi websocket protocol, our text extension, OTA and an OpenAI-compatible API.

protocol.py    message parsing and building (sans I/O), shared test vectors in docs/
auth.py        device registry and hashed tokens under $POCKETGPT_HOME
limits.py      what a request may ask and how often: sampling checks, rate buckets, live caps
generation.py  the interface every backend implements (GenRequest in, Generation out)
scheduler.py   the engine's schedulers (batched decode; round robin for engines without it)
backends.py    the embedded engine and OpenAI-compatible servers
session.py     one device's websocket session: the protocol state machine and its turns
http_api.py    the HTTP routes: OTA, health, metrics, OpenAI API
metrics.py     the counters behind GET /metrics
server.py      the listeners' lifecycle: start, the websocket upgrade gate, graceful drain
client.py      a small client (pocketgpt devices' text extension) used by tests, bench and demo
"""
