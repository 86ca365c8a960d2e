"""pocketgpt: a GPT-2 toolchain, a portable C engine, an ESP32-S3 firmware and a host relay."""

__version__ = "0.1.0"
