"""Hugging Face checkpoints in and out (needs the `toolchain` extra: torch and transformers).

A local `save_pretrained` folder loads with no network at all; a hub id (``gpt2``,
``distilgpt2``) is the only thing that may reach the network, and only when online.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from pocketgpt.errors import PocketError
from pocketgpt.gguf_io import GPT2Config, ModelFile, hf_state_to_tensors, tensors_to_hf_state
from pocketgpt.tokenizer import EOT, BPEVocab, gpt2_vocab

if TYPE_CHECKING:
    import torch
    from transformers import GPT2Config as HFConfig
    from transformers import GPT2LMHeadModel


def require_toolchain() -> None:
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError:
        raise PocketError(
            "this command needs the toolchain extra (torch, transformers): "
            "pip install torch==2.13.0 'pocketgpt[toolchain]'"
        ) from None


def hf_config(cfg: GPT2Config, vocab: BPEVocab, tied: bool = True, dropout: float = 0.0) -> HFConfig:
    from transformers import GPT2Config as HFConfig

    return HFConfig(
        vocab_size=cfg.n_vocab, n_positions=cfg.n_ctx, n_embd=cfg.n_embd, n_layer=cfg.n_layer,
        n_head=cfg.n_head, n_inner=cfg.n_ff, layer_norm_epsilon=cfg.eps,
        activation_function="gelu_new", resid_pdrop=dropout, embd_pdrop=dropout, attn_pdrop=dropout,
        bos_token_id=vocab.bos_id, eos_token_id=vocab.eos_id, tie_word_embeddings=tied,
    )


def config_from_hf(hf_cfg: HFConfig) -> GPT2Config:
    if getattr(hf_cfg, "model_type", "gpt2") != "gpt2":
        raise PocketError(f"model type is {hf_cfg.model_type!r}; pocketgpt converts GPT-2-family checkpoints only")
    if getattr(hf_cfg, "activation_function", "gelu_new") not in ("gelu_new", "gelu_pytorch_tanh"):
        raise PocketError(f"activation {hf_cfg.activation_function!r} is not GPT-2's tanh GELU; cannot convert")
    n_ff = hf_cfg.n_inner if hf_cfg.n_inner is not None else 4 * hf_cfg.n_embd
    return GPT2Config(hf_cfg.vocab_size, hf_cfg.n_positions, hf_cfg.n_embd, hf_cfg.n_layer,
                      hf_cfg.n_head, n_ff, float(hf_cfg.layer_norm_epsilon))


def _vocab_from_folder(folder: Path, n_vocab: int) -> BPEVocab:
    """The folder's own tokenizer when it has one, else GPT-2's if the sizes agree."""
    vj, mt, tj = folder / "vocab.json", folder / "merges.txt", folder / "tokenizer.json"
    enc: dict[str, int] | None = None
    merges: list[str] = []
    if vj.exists() and mt.exists():
        enc = json.loads(vj.read_text(encoding="utf-8"))
        merges = [l for l in mt.read_text(encoding="utf-8").split("\n") if l and not l.startswith("#version")]
    elif tj.exists():
        model = json.loads(tj.read_text(encoding="utf-8")).get("model", {})
        if model.get("type") == "BPE":
            enc = model["vocab"]
            merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    if enc is None:
        base = gpt2_vocab()
        if base.n_vocab != n_vocab:
            raise PocketError(f"{folder}: no tokenizer files and vocabulary size {n_vocab} is not GPT-2's; "
                              "save the tokenizer into the folder too")
        return base
    tokens = [""] * len(enc)
    for t, i in enc.items():
        tokens[i] = t
    eos = enc.get(EOT, len(tokens) - 1)
    vocab = BPEVocab(tokens=tokens, merges=merges, eos_id=eos, bos_id=eos)
    if vocab.n_vocab != n_vocab:
        # GPT-2 pads nothing, but some checkpoints round the embedding up: pad with unused tokens
        if vocab.n_vocab > n_vocab:
            raise PocketError(f"{folder}: tokenizer has {vocab.n_vocab} tokens, the model only {n_vocab}")
        pad = [f"<|pad{i}|>" for i in range(n_vocab - vocab.n_vocab)]
        vocab = BPEVocab(tokens + pad, merges, eos, eos, vocab.types() + [3] * len(pad))
    return vocab


def load_hf(src: str) -> tuple[GPT2LMHeadModel, BPEVocab]:
    """A GPT-2-family checkpoint (local folder or hub id) as (GPT2LMHeadModel, vocabulary)."""
    require_toolchain()
    from transformers import GPT2LMHeadModel

    path = Path(src)
    local = path.exists()
    if local and not path.is_dir():
        raise PocketError(f"{src}: is a file, not a Hugging Face folder; for a GGUF use it directly")
    if not local and (src.startswith((".", "/", "~")) or src.count("/") > 1):
        raise PocketError(f"{src}: no such folder (and not a hub id)")
    try:
        model = GPT2LMHeadModel.from_pretrained(src, local_files_only=local, dtype="float32")
    except PocketError:
        raise
    except (OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if local:
            raise PocketError(f"{src}: not a loadable GPT-2 checkpoint folder ({first})") from None
        raise PocketError(f"could not load hub id {src!r} (offline, or no such model?): {first[:160]}; "
                          "download it once on a connected machine and pass the folder") from None
    model.eval()
    if local:
        vocab = _vocab_from_folder(path, model.config.vocab_size)
    else:
        vocab = _vocab_from_hub(src, model.config.vocab_size)
    config_from_hf(model.config)  # validates the family
    return model, vocab


def _vocab_from_hub(src: str, n_vocab: int) -> BPEVocab:
    from huggingface_hub import snapshot_download

    try:
        folder = snapshot_download(src, allow_patterns=["vocab.json", "merges.txt", "tokenizer.json"])
    except Exception:
        folder = None
    if folder:
        return _vocab_from_folder(Path(folder), n_vocab)
    return _vocab_from_folder(Path("/nonexistent"), n_vocab)


def hf_to_tensors(model: GPT2LMHeadModel) -> tuple[GPT2Config, dict[str, np.ndarray], bool]:
    cfg = config_from_hf(model.config)
    state = {k: v.detach().to("cpu").float().numpy() for k, v in model.state_dict().items()}
    tied = bool(getattr(model.config, "tie_word_embeddings", True))
    if not tied and "lm_head.weight" in state and np.array_equal(state["lm_head.weight"], state["transformer.wte.weight"]):
        tied = True
    return cfg, hf_state_to_tensors(state, tied), tied


def torch_model(mf: ModelFile, dtype: torch.dtype | None = None) -> GPT2LMHeadModel:
    """A transformers GPT2LMHeadModel holding the file's weights (dequantized to float32)."""
    require_toolchain()
    import torch
    from transformers import GPT2LMHeadModel

    hcfg = hf_config(mf.cfg, mf.vocab, tied=mf.tied)
    with torch.device("meta"):
        model = GPT2LMHeadModel(hcfg)
    state = tensors_to_hf_state(mf.f32_tensors(), mf.cfg)
    tensors = {k: torch.from_numpy(np.array(v, dtype=np.float32, copy=True)) for k, v in state.items()}
    model.load_state_dict(tensors, strict=False, assign=True)
    if mf.tied:
        model.tie_weights()
    model.eval()
    return model


def save_hf(mf: ModelFile, out_dir: str | os.PathLike[str]) -> Path:
    """Write the model as a Hugging Face folder (safetensors + tokenizer), atomically."""
    require_toolchain()
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise PocketError(f"{out}: folder exists and is not empty; choose a new output folder")
    parent = out.parent if str(out.parent) else Path(".")
    parent.mkdir(parents=True, exist_ok=True)
    model = torch_model(mf)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=parent))
    try:
        model.save_pretrained(tmp)
        from pocketgpt.chat_format import TEMPLATE_KEY

        template = mf.metadata.get(TEMPLATE_KEY)
        save_vocab(mf.vocab, tmp, template if isinstance(template, str) else None)
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def save_vocab(vocab: BPEVocab, folder: Path, chat_template: str | None = None) -> None:
    """vocab.json + merges.txt + tokenizer config, readable by GPT2TokenizerFast.from_pretrained,
    with the chat template (`chat_template`, else the project's layout) in tokenizer_config.json,
    where transformers' apply_chat_template finds it."""
    from pocketgpt.chat_format import CHAT_TEMPLATE

    folder = Path(folder)
    vocab.hf_tokenizer().save_pretrained(folder)
    (folder / "chat_template.jinja").unlink(missing_ok=True)
    cfg_path = folder / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text(encoding="utf-8")) if cfg_path.exists() else {}
    cfg["chat_template"] = chat_template or CHAT_TEMPLATE
    cfg_path.write_text(json.dumps(cfg, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def folder_chat_template(folder: str | os.PathLike[str]) -> str | None:
    """The chat template a Hugging Face folder carries (tokenizer_config.json or
    chat_template.jinja), None when it has none (or is a hub id)."""
    path = Path(folder)
    jinja = path / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text(encoding="utf-8")
    cfg_path = path / "tokenizer_config.json"
    if cfg_path.is_file():
        try:
            value = json.loads(cfg_path.read_text(encoding="utf-8")).get("chat_template")
        except (ValueError, AttributeError):
            return None
        return value if isinstance(value, str) and value else None
    return None
