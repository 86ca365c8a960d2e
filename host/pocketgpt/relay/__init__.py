"""The host relay: XiaoZhi websocket protocol, our text extension, OTA and an OpenAI-compatible API.

protocol.py  message parsing and building (sans I/O), shared test vectors in docs/
auth.py      device registry and hashed tokens under $POCKETGPT_HOME
backends.py  the embedded engine (fair token scheduler) and OpenAI-compatible servers
server.py    the websocket and HTTP listeners, limits, metrics, graceful drain
client.py    a small client (pocketgpt devices' text extension) used by tests, bench and demo
"""
