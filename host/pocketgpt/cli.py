"""`pocketgpt <verb>`: the one command line. Each verb lives in pocketgpt/commands/<verb>.py."""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path
from typing import Any

from pocketgpt import __version__
from pocketgpt.errors import PocketError

VERBS = ["train", "convert", "inspect", "eval", "chat", "quantize", "serve", "token", "run", "shrink", "device", "export-c"]

EPILOG = """\
models: a .gguf path, a Hugging Face folder where it makes sense, or a shipped model:
  builtin:host    the relay's default (quotes GPT-2, see docs/models.md)
  builtin:device  the firmware's default (the shrunk device model)

Every verb has --help; verbs that report results take --json (one JSON object on stdout)."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pocketgpt",
        description="Train, shrink, quantize and run GPT-2 models for an ESP32-S3 and a host relay.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"pocketgpt {__version__}")
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    for verb in VERBS:
        importlib.import_module(f"pocketgpt.commands.{verb.replace('-', '_')}").add_parser(sub)
    return parser


def emit(args: argparse.Namespace, result: dict[str, Any], text: str | None = None) -> None:
    """Print `result` as one JSON object with --json, else the human text (if any)."""
    if getattr(args, "json", False):
        print(json.dumps(result, ensure_ascii=False))
    elif text:
        print(text)


def gguf_output(path: str) -> Path:
    """The output path of a command that writes a model: it must end in .gguf."""
    out = Path(path)
    if out.suffix != ".gguf":
        raise PocketError(f"{out}: output must end in .gguf")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except PocketError as exc:
        print(f"pocketgpt {args.verb}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"pocketgpt {args.verb}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
