"""pocketgpt chat: talk to a model on this machine; the reply streams as it is generated."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from pocketgpt.engine import Engine
    from pocketgpt.relay.torch_engine import TorchEngine

HELP = """\
Chat with MODEL (default builtin:host). Each line you type is a request; the model answers it with
a quote-like reply. The request goes through the model's chat template (tokenizer.chat_template in
the GGUF; "Q: <request>\nA:" for a file without one). The reply is steered to name what you ask
about (the last content word of your line: "Tell me about love" -> love), because the shipped
models do not do it on their own (docs/chat.md); --no-steer turns that off, --raw continues your
line as text instead (never steered).

  pocketgpt chat                         interactive on a terminal (Ctrl-D or /quit to leave)
  echo "Tell me about love" | pocketgpt chat   one reply per input line, for scripts
  pocketgpt chat --demo                  a short scripted conversation, then interactive on a terminal
"""

DEMO_PROMPTS = [
    "What is the secret of life?",
    "Tell me something about computers.",
    "Give me some advice about love.",
]


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("chat", help="chat with a model (streams the reply)", description=HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", metavar="MODEL", nargs="?", default="builtin:host")
    p.add_argument("--demo", action="store_true", help="run a short scripted conversation first")
    p.add_argument("-n", "--max-tokens", type=int, default=80, help="longest reply in tokens (default 80)")
    p.add_argument("--temperature", type=float, default=0.8)
    p.add_argument("--top-k", type=int, default=40)
    p.add_argument("--top-p", type=float, default=0.95)
    p.add_argument("--repeat-penalty", type=float, default=1.1)
    p.add_argument("--seed", type=int, default=None, help="fixed seed for repeatable replies")
    p.add_argument("--greedy", action="store_true", help="always take the most likely token (no sampling, no penalty)")
    p.add_argument("--raw", action="store_true", help="continue each line as text instead of answering it")
    p.add_argument("--no-steer", action="store_true",
                   help="no subject steering: the reply is the model's alone, which rarely names what was asked")
    p.add_argument("--backend", choices=["auto", "engine", "torch"], default="auto")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--draft", default="auto", metavar="MODEL",
                   help="speculative decoding with this draft model (the replies keep the model's distribution); "
                        "'auto' (default): a shipped pair measured to pay (none today, docs/speed.md); 'none': off")
    p.set_defaults(func=run)


def _reply(engine: Engine | TorchEngine, prompt: str, args: argparse.Namespace, out: TextIO) -> None:
    from pocketgpt.generate import stream_reply

    out.write("bot> ")
    out.flush()
    for piece in stream_reply(engine, prompt, args.max_tokens, raw=args.raw, steer=not args.no_steer,
                              temperature=args.temperature,
                              top_k=args.top_k, top_p=args.top_p, repeat_penalty=args.repeat_penalty, seed=args.seed,
                              greedy=args.greedy,
                              **({"draft": args.draft_obj} if getattr(args, "draft_obj", None) else {})):
        out.write(piece)
        out.flush()
    out.write("\n")
    out.flush()


def run(args: argparse.Namespace) -> int:
    from pocketgpt.generate import open_engine

    engine = open_engine(args.model, args.backend, args.threads)
    if args.draft != "none" and hasattr(engine, "step"):  # the C engine; the torch reference has no drafts
        from pocketgpt.speculative import open_draft

        args.draft_obj = open_draft(engine, args.model, args.draft)
    out = sys.stdout
    interactive = sys.stdin.isatty()
    if args.demo:
        runtime = "C engine" if type(engine).__name__ == "Engine" else "transformers"
        print(f"pocketgpt chat: {args.model} on this machine ({runtime})")
        for prompt in DEMO_PROMPTS:
            print(f"you> {prompt}")
            _reply(engine, prompt, args, out)
        if not interactive:
            return 0
    if interactive:
        print("Type the start of a quote; Ctrl-D or /quit leaves." if args.raw
              else "Ask for something (advice, a joke, a thought about a subject); Ctrl-D or /quit leaves.")
    while True:
        if interactive:
            try:
                line = input("you> ")
            except EOFError:
                print()
                return 0
        else:
            line = sys.stdin.readline()
            if not line:
                return 0
            line = line.rstrip("\n")
            print(f"you> {line}")
        line = line.strip()
        if not line:
            print("(an empty line: type a request, or /quit to leave)")
            continue
        if line in ("/quit", "/exit"):
            return 0
        _reply(engine, line, args, out)
