"""GGUF files for GPT-2: llama.cpp's architecture `gpt2`, its tensor names and metadata keys.

Tensors are kept in GGUF's numpy orientation: a matrix is (rows, cols) = (ne1, ne0), and the
matrix-vector product is ``y = W @ x`` with ``x`` of length ``cols``. Hugging Face's GPT-2 stores
its Conv1D weights the other way round (in, out); `hf_state_to_tensors` transposes them exactly as
llama.cpp's converter does, so files move between the two projects unchanged.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pocketgpt.errors import PocketError, atomic_path
from pocketgpt.tokenizer import BPEVocab

ARCH = "gpt2"
GGUF_MAGIC = b"GGUF"


@dataclass(frozen=True)
class GPT2Config:
    n_vocab: int
    n_ctx: int
    n_embd: int
    n_layer: int
    n_head: int
    n_ff: int
    eps: float = 1e-5

    def n_params(self, tied: bool = True) -> int:
        e, f = self.n_embd, self.n_ff
        per_layer = 4 * e + (3 * e * e + 3 * e) + (e * e + e) + (f * e + f) + (e * f + e)
        head = 0 if tied else self.n_vocab * e
        return self.n_vocab * e + self.n_ctx * e + self.n_layer * per_layer + 2 * e + head


def tensor_names(cfg: GPT2Config, tied: bool = True) -> list[str]:
    """Every tensor of a GPT-2 model in file order (llama.cpp's names)."""
    names = ["token_embd.weight", "position_embd.weight"]
    for i in range(cfg.n_layer):
        for part in ("attn_norm", "attn_qkv", "attn_output", "ffn_norm", "ffn_up", "ffn_down"):
            names += [f"blk.{i}.{part}.weight", f"blk.{i}.{part}.bias"]
    names += ["output_norm.weight", "output_norm.bias"]
    if not tied:
        names.append("output.weight")
    return names


def expected_shapes(cfg: GPT2Config, tied: bool = True) -> dict[str, tuple[int, ...]]:
    e, f, v = cfg.n_embd, cfg.n_ff, cfg.n_vocab
    shapes: dict[str, tuple[int, ...]] = {
        "token_embd.weight": (v, e),
        "position_embd.weight": (cfg.n_ctx, e),
        "output_norm.weight": (e,),
        "output_norm.bias": (e,),
    }
    for i in range(cfg.n_layer):
        b = f"blk.{i}."
        shapes.update({
            b + "attn_norm.weight": (e,), b + "attn_norm.bias": (e,),
            b + "attn_qkv.weight": (3 * e, e), b + "attn_qkv.bias": (3 * e,),
            b + "attn_output.weight": (e, e), b + "attn_output.bias": (e,),
            b + "ffn_norm.weight": (e,), b + "ffn_norm.bias": (e,),
            b + "ffn_up.weight": (f, e), b + "ffn_up.bias": (f,),
            b + "ffn_down.weight": (e, f), b + "ffn_down.bias": (e,),
        })
    if not tied:
        shapes["output.weight"] = (v, e)
    return shapes


# Hugging Face GPT-2 parameter name -> (GGUF name, transpose?)
_HF_LAYER = {
    "ln_1.weight": ("attn_norm.weight", False), "ln_1.bias": ("attn_norm.bias", False),
    "attn.c_attn.weight": ("attn_qkv.weight", True), "attn.c_attn.bias": ("attn_qkv.bias", False),
    "attn.c_proj.weight": ("attn_output.weight", True), "attn.c_proj.bias": ("attn_output.bias", False),
    "ln_2.weight": ("ffn_norm.weight", False), "ln_2.bias": ("ffn_norm.bias", False),
    "mlp.c_fc.weight": ("ffn_up.weight", True), "mlp.c_fc.bias": ("ffn_up.bias", False),
    "mlp.c_proj.weight": ("ffn_down.weight", True), "mlp.c_proj.bias": ("ffn_down.bias", False),
}
_HF_TOP = {
    "wte.weight": "token_embd.weight",
    "wpe.weight": "position_embd.weight",
    "ln_f.weight": "output_norm.weight",
    "ln_f.bias": "output_norm.bias",
}


def hf_state_to_tensors(state: dict[str, np.ndarray], tied: bool) -> dict[str, np.ndarray]:
    """Hugging Face GPT2LMHeadModel state (float numpy) -> GGUF-named float32 tensors."""
    out: dict[str, np.ndarray] = {}
    for key, value in state.items():
        name = key.removeprefix("transformer.")
        if name.endswith((".attn.bias", ".attn.masked_bias")):
            continue  # causal-mask buffers of old checkpoints, not parameters
        arr = np.asarray(value, dtype=np.float32)
        if name in _HF_TOP:
            out[_HF_TOP[name]] = arr
        elif name.startswith("h."):
            _, idx, rest = name.split(".", 2)
            if rest not in _HF_LAYER:
                raise PocketError(f"unexpected GPT-2 parameter {key!r}: is this a GPT-2-family checkpoint?")
            gname, transpose = _HF_LAYER[rest]
            out[f"blk.{idx}.{gname}"] = np.ascontiguousarray(arr.T) if transpose else arr
        elif name == "lm_head.weight":
            if not tied:
                out["output.weight"] = arr
        else:
            raise PocketError(f"unexpected GPT-2 parameter {key!r}: is this a GPT-2-family checkpoint?")
    return out


_GGUF_TOP = {v: k for k, v in _HF_TOP.items()}
_GGUF_LAYER = {v[0]: (k, v[1]) for k, v in _HF_LAYER.items()}


def hf_name(name: str) -> tuple[str, bool]:
    """GGUF tensor name -> (Hugging Face GPT2LMHeadModel parameter name, stored transposed?)."""
    if name in _GGUF_TOP:
        return "transformer." + _GGUF_TOP[name], False
    if name == "output.weight":
        return "lm_head.weight", False
    parts = name.split(".", 2)
    if len(parts) != 3 or parts[0] != "blk" or parts[2] not in _GGUF_LAYER:
        raise PocketError(f"unexpected GPT-2 tensor {name!r}: is this a GPT-2-family model?")
    hname, transpose = _GGUF_LAYER[parts[2]]
    return f"transformer.h.{parts[1]}.{hname}", transpose


def tensors_to_hf_state(tensors: dict[str, np.ndarray], cfg: GPT2Config) -> dict[str, np.ndarray]:
    """The inverse of `hf_state_to_tensors` (float32 numpy, Hugging Face names and orientation)."""
    state: dict[str, np.ndarray] = {}
    for name, arr in tensors.items():
        hname, transpose = hf_name(name)
        state[hname] = np.ascontiguousarray(arr.T) if transpose else arr
    if "lm_head.weight" not in state:
        state["lm_head.weight"] = state["transformer.wte.weight"]
    return state


@dataclass
class StoredTensor:
    """One tensor as stored: its GGML type, numpy-order float shape and raw bytes/values."""

    name: str
    qtype: int  # gguf.GGMLQuantizationType value
    shape: tuple[int, ...]
    raw: np.ndarray  # float32/float16 values or uint8 blocks, as in the file

    @property
    def n_bytes(self) -> int:
        return int(self.raw.nbytes)

    @property
    def n_elements(self) -> int:
        return int(np.prod(self.shape))

    def to_f32(self) -> np.ndarray:
        from pocketgpt.quant.formats import dequantize

        return dequantize(self.raw, self.qtype, self.shape)


@dataclass
class ModelFile:
    """A GPT-2 GGUF file: configuration, tokenizer, tensors (as stored) and all other metadata."""

    path: Path
    cfg: GPT2Config
    vocab: BPEVocab
    tensors: dict[str, StoredTensor]
    metadata: dict[str, Any] = field(default_factory=dict)
    file_bytes: int = 0

    @property
    def tied(self) -> bool:
        return "output.weight" not in self.tensors

    def f32(self, name: str) -> np.ndarray:
        return self.tensors[name].to_f32()

    def f32_tensors(self) -> dict[str, np.ndarray]:
        return {n: t.to_f32() for n, t in self.tensors.items()}

    def n_params(self) -> int:
        return sum(t.n_elements for t in self.tensors.values())


def _file_type_for(types: Iterable[int]) -> int:
    """llama.cpp's general.file_type: the type most of the matrices use."""
    from gguf import GGMLQuantizationType as Q
    from gguf import LlamaFileType as F

    mapping = {
        Q.F32: F.ALL_F32, Q.F16: F.MOSTLY_F16, Q.Q8_0: F.MOSTLY_Q8_0, Q.Q4_0: F.MOSTLY_Q4_0,
        Q.Q4_1: F.MOSTLY_Q4_1, Q.Q5_0: F.MOSTLY_Q5_0, Q.Q5_1: F.MOSTLY_Q5_1,
        Q.Q2_K: F.MOSTLY_Q2_K, Q.Q3_K: F.MOSTLY_Q3_K_M, Q.Q4_K: F.MOSTLY_Q4_K_M,
        Q.Q5_K: F.MOSTLY_Q5_K_M, Q.Q6_K: F.MOSTLY_Q6_K, Q.IQ4_NL: F.MOSTLY_IQ4_NL,
    }
    counts: dict[int, int] = {}
    for t in types:
        counts[t] = counts.get(t, 0) + 1
    non_f32 = {t: c for t, c in counts.items() if t != Q.F32}
    if not non_f32:
        return int(F.ALL_F32)
    best = max(non_f32, key=lambda t: non_f32[t])
    return int(mapping.get(Q(best), F.GUESSED))


def write_gguf(
    path: str | os.PathLike[str],
    cfg: GPT2Config,
    vocab: BPEVocab,
    tensors: dict[str, StoredTensor],
    *,
    name: str = "pocketgpt",
    extra: dict[str, Any] | None = None,
    chat_template: str | None = None,
) -> int:
    """Write a GPT-2 GGUF atomically (temporary file, then rename). Returns the file size.

    Every file gets a chat template under `tokenizer.chat_template`: `chat_template` when given
    (callers pass their source's, so it is kept), else one in `extra`, else the project's layout
    (chat_format)."""
    import gguf

    from pocketgpt.chat_format import CHAT_TEMPLATE, TEMPLATE_KEY

    tied = "output.weight" not in tensors
    order = tensor_names(cfg, tied)
    missing = [n for n in order if n not in tensors]
    if missing:
        raise PocketError(f"cannot write {path}: tensors missing: {', '.join(missing[:3])}")
    shapes = expected_shapes(cfg, tied)
    for n in order:
        if tuple(tensors[n].shape) != shapes[n]:
            raise PocketError(f"cannot write {path}: {n} has shape {tensors[n].shape}, expected {shapes[n]}")

    with atomic_path(path) as tmp:
        w = gguf.GGUFWriter(str(tmp), arch=ARCH)
        w.add_name(name)
        w.add_context_length(cfg.n_ctx)
        w.add_embedding_length(cfg.n_embd)
        w.add_feed_forward_length(cfg.n_ff)
        w.add_block_count(cfg.n_layer)
        w.add_head_count(cfg.n_head)
        w.add_layer_norm_eps(cfg.eps)
        w.add_file_type(_file_type_for(tensors[n].qtype for n in order if len(tensors[n].shape) == 2))
        w.add_tokenizer_model("gpt2")
        w.add_tokenizer_pre("gpt-2")
        w.add_token_list(vocab.tokens)
        w.add_token_types(vocab.types())
        w.add_token_merges(vocab.merges)
        w.add_bos_token_id(vocab.bos_id)
        w.add_eos_token_id(vocab.eos_id)
        w.add_string(TEMPLATE_KEY, chat_template or (extra or {}).get(TEMPLATE_KEY) or CHAT_TEMPLATE)
        for key, value in (extra or {}).items():
            if key == TEMPLATE_KEY:
                continue
            _add_extra(w, key, value)
        for n in order:
            t = tensors[n]
            qtype = gguf.GGMLQuantizationType(t.qtype)
            if qtype in (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16):
                w.add_tensor(n, np.ascontiguousarray(t.raw))
            else:
                w.add_tensor(n, np.ascontiguousarray(t.raw), raw_dtype=qtype)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        size = tmp.stat().st_size
    return size


def _add_extra(w: Any, key: str, value: Any) -> None:
    if isinstance(value, bool):
        w.add_bool(key, value)
    elif isinstance(value, int):
        w.add_uint32(key, value) if value >= 0 else w.add_int32(key, value)
    elif isinstance(value, float):
        w.add_float32(key, value)
    elif isinstance(value, str):
        w.add_string(key, value)
    else:
        w.add_array(key, list(value))


def _fail(path: Path, what: str) -> PocketError:
    return PocketError(f"{path}: {what}")


def _field(reader: Any, key: str, path: Path, required: bool = True) -> Any:
    f = reader.fields.get(key)
    if f is None:
        if required:
            raise _fail(path, f"GGUF metadata key {key!r} missing; re-create it with 'pocketgpt convert'")
        return None
    return f.contents()


def read_gguf(path: str | os.PathLike[str]) -> ModelFile:
    """Read and validate a GPT-2 GGUF. Every problem becomes one PocketError line."""
    import gguf

    path = Path(path)
    if not path.exists():
        raise PocketError(f"{path}: no such model file; give a .gguf path or builtin:host / builtin:device")
    if path.is_dir():
        raise PocketError(f"{path}: is a folder; for a Hugging Face folder run 'pocketgpt convert {path} OUT.gguf' first")
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(8)
    if len(head) < 8 or head[:4] != GGUF_MAGIC:
        raise _fail(path, "not a GGUF file (bad magic); convert a checkpoint with 'pocketgpt convert'")
    version = struct.unpack("<I", head[4:8])[0]
    if version not in (2, 3):
        raise _fail(path, f"GGUF version {version}, this build reads 2 and 3; re-export it with 'pocketgpt convert'")
    try:
        reader = gguf.GGUFReader(str(path), "r")
    except Exception as exc:  # the gguf package raises ValueError/IndexError/struct errors on damage
        raise _fail(path, f"damaged or truncated GGUF ({type(exc).__name__}: {exc}); re-create the file") from None

    arch = _field(reader, "general.architecture", path)
    if arch != ARCH:
        raise _fail(path, f"architecture is {arch!r}, pocketgpt runs only 'gpt2' models")
    try:
        cfg = GPT2Config(
            n_vocab=0,
            n_ctx=int(_field(reader, "gpt2.context_length", path)),
            n_embd=int(_field(reader, "gpt2.embedding_length", path)),
            n_layer=int(_field(reader, "gpt2.block_count", path)),
            n_head=int(_field(reader, "gpt2.attention.head_count", path)),
            n_ff=int(_field(reader, "gpt2.feed_forward_length", path)),
            eps=float(_field(reader, "gpt2.attention.layer_norm_epsilon", path)),
        )
        tokens = list(_field(reader, "tokenizer.ggml.tokens", path))
        merges = list(_field(reader, "tokenizer.ggml.merges", path))
        types = _field(reader, "tokenizer.ggml.token_type", path, required=False)
        eos = int(_field(reader, "tokenizer.ggml.eos_token_id", path))
        bos_f = _field(reader, "tokenizer.ggml.bos_token_id", path, required=False)
    except PocketError:
        raise
    except Exception as exc:
        raise _fail(path, f"unreadable metadata ({exc}); re-create the file") from None
    if not 0 <= eos < len(tokens):
        raise _fail(path, f"eos token id {eos} outside the {len(tokens)}-token vocabulary")
    vocab = BPEVocab(tokens=tokens, merges=merges, eos_id=eos,
                     bos_id=int(bos_f) if bos_f is not None else eos,
                     token_types=[int(t) for t in types] if types is not None else [])
    cfg = GPT2Config(len(tokens), cfg.n_ctx, cfg.n_embd, cfg.n_layer, cfg.n_head, cfg.n_ff, cfg.eps)
    if cfg.n_embd % max(cfg.n_head, 1) or cfg.n_head < 1 or cfg.n_layer < 1:
        raise _fail(path, f"inconsistent shape: n_embd={cfg.n_embd}, n_head={cfg.n_head}, n_layer={cfg.n_layer}")

    tensors: dict[str, StoredTensor] = {}
    for t in reader.tensors:
        end = int(t.data_offset) + int(t.n_bytes)
        if end > size:
            raise _fail(path, f"truncated: tensor {t.name} ends at byte {end}, file has {size}; re-create the file")
        shape = tuple(int(d) for d in reversed([int(x) for x in t.shape]))
        # drop ggml's trailing unit dimensions: a vector is stored as (1, n) by some writers
        while len(shape) > 1 and shape[0] == 1:
            shape = shape[1:]
        tensors[t.name] = StoredTensor(t.name, int(t.tensor_type), shape, t.data)

    tied = "output.weight" not in tensors
    want = expected_shapes(cfg, tied)
    for name, shp in want.items():
        if name not in tensors:
            raise _fail(path, f"tensor {name} missing; the file is not a complete GPT-2 model")
        if tensors[name].shape != shp:
            raise _fail(path, f"tensor {name} has shape {tensors[name].shape}, the config implies {shp}")
    metadata = {}
    for key, f in reader.fields.items():
        if key.startswith("tokenizer.ggml.") and key not in ("tokenizer.ggml.model", "tokenizer.ggml.pre",
                                                             "tokenizer.ggml.eos_token_id",
                                                             "tokenizer.ggml.bos_token_id"):
            continue
        if key.startswith("GGUF."):
            continue
        try:
            metadata[key] = f.contents()
        except Exception:
            continue
    return ModelFile(path, cfg, vocab, tensors, metadata, size)


def store_tensors(
    tensors: dict[str, np.ndarray],
    choose: Callable[[str, np.ndarray], int],
) -> dict[str, StoredTensor]:
    """Encode float tensors with the GGML type `choose(name, array)` picks for each."""
    from pocketgpt.quant.formats import quantize

    out = {}
    for name, arr in tensors.items():
        qtype = choose(name, arr)
        out[name] = StoredTensor(name, qtype, tuple(arr.shape), quantize(arr, qtype))
    return out
