"""pocketgpt convert: Hugging Face checkpoint -> GGUF, or GGUF -> Hugging Face folder."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = """\
Convert between checkpoint formats.

  SRC a Hugging Face hub id (gpt2, distilgpt2; needs the network) or a local save_pretrained
      folder (never touches the network) -> OUT.gguf, architecture gpt2 with llama.cpp's names.
  SRC a .gguf file (or builtin:host) and OUT a folder -> a Hugging Face folder (safetensors and
      tokenizer) that transformers loads with from_pretrained.
"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("convert", help="HF checkpoint <-> GGUF", description=HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("src", metavar="SRC", help="hub id, HF folder, or .gguf / builtin:NAME")
    p.add_argument("out", metavar="OUT", help="OUT.gguf, or a new folder for a Hugging Face checkpoint")
    p.add_argument("--outtype", default="f32", choices=["f32", "f16", "q8_0"],
                   help="matrix type for GGUF output (vectors stay f32; default f32)")
    p.add_argument("--name", default=None, help="general.name written into the GGUF")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pocketgpt import hf, models
    from pocketgpt.cli import emit
    from pocketgpt.errors import PocketError
    from pocketgpt.gguf_io import read_gguf, store_tensors, write_gguf
    from pocketgpt.quant.formats import simple_chooser

    src_path = models.resolve(args.src) if args.src.startswith("builtin:") else Path(args.src)
    if src_path.is_file():
        if args.out.endswith(".gguf"):
            raise PocketError(f"{args.out}: GGUF to GGUF is 'pocketgpt quantize'; give a folder for a HF checkpoint")
        out = hf.save_hf(read_gguf(src_path), args.out)
        emit(args, {"out": str(out), "format": "hf"}, f"wrote Hugging Face folder {out}")
        return 0
    if not args.out.endswith(".gguf"):
        raise PocketError(f"{args.out}: output for a checkpoint must end in .gguf")
    model, vocab = hf.load_hf(args.src)
    cfg, tensors, tied = hf.hf_to_tensors(model)
    stored = store_tensors(tensors, simple_chooser(args.outtype))
    name = args.name or Path(args.src.rstrip("/")).name
    template = hf.folder_chat_template(args.src) if Path(args.src).is_dir() else None
    size = write_gguf(args.out, cfg, vocab, stored, name=name, chat_template=template)
    emit(args, {"out": args.out, "file_bytes": size, "n_params": cfg.n_params(tied)},
         f"wrote {args.out}: {size:,} bytes, {cfg.n_params(tied):,} parameters")
    return 0
