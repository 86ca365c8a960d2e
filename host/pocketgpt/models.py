"""Model specs: a file path, a Hugging Face folder, or a model shipped in the package."""

from __future__ import annotations

import os

from pocketgpt.errors import PocketError

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (with re and enum, ~0.7 MiB)
if TYPE_CHECKING:
    from pathlib import Path

    from pocketgpt.gguf_io import ModelFile

# pathlib (with urllib.parse and ipaddress behind it) and importlib.resources (tempfile, shutil,
# random, bz2, lzma) cost ~1.1 MiB of a process that only wants `pocketgpt.engine` on a model
# path: they are imported where a function needs them. The package is always unpacked on disk
# (the engine mmaps its models), so the shipped files sit beside this module.
_MODELS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "models")

BUILTINS = {
    "host": "host.gguf",      # the relay's default: the quotes GPT-2 (see docs/models.md)
    "device": "device.gguf",  # the firmware's default: the shrunk device model
}


def builtin_path(name: str) -> Path:
    if name not in BUILTINS:
        raise PocketError(f"unknown built-in model builtin:{name}; built-ins: "
                          + ", ".join(f"builtin:{n}" for n in BUILTINS))
    from pathlib import Path

    path = Path(_MODELS_DIR, BUILTINS[name])
    if not path.exists():
        raise PocketError(f"built-in model builtin:{name} is not shipped in this build ({path}); "
                          "pass a .gguf path instead")
    return path


def resolve(spec: str) -> Path:
    """`builtin:NAME` -> the shipped file; anything else -> the path as given."""
    from pathlib import Path

    if spec.startswith("builtin:"):
        return builtin_path(spec.split(":", 1)[1])
    return Path(spec).expanduser()


def load(spec: str) -> ModelFile:
    """A GGUF model file (path or builtin); a Hugging Face folder is converted in memory."""
    from pocketgpt.gguf_io import read_gguf

    path = resolve(spec)
    if path.is_dir():
        return from_hf_folder(str(path))
    return read_gguf(path)


def from_hf_folder(src: str) -> ModelFile:
    """A Hugging Face checkpoint as an in-memory F32 ModelFile (same tensors `convert` writes)."""
    from pathlib import Path

    from pocketgpt import hf
    from pocketgpt.gguf_io import ModelFile, store_tensors
    from pocketgpt.quant.formats import F32

    model, vocab = hf.load_hf(src)
    cfg, tensors, _ = hf.hf_to_tensors(model)
    stored = store_tensors(tensors, lambda n, a: F32)
    from pocketgpt.chat_format import TEMPLATE_KEY

    meta = {"general.architecture": "gpt2"}
    template = hf.folder_chat_template(src)
    if template:
        meta[TEMPLATE_KEY] = template
    return ModelFile(Path(src), cfg, vocab, stored, meta, 0)
