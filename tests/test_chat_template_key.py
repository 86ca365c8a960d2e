"""Every GGUF pocketgpt writes carries `tokenizer.chat_template` (the key llama.cpp and
transformers read): convert, quantize and shrink keep the template their input has, and write the
project's layout (chat_format.CHAT_TEMPLATE) when the input has none."""

from __future__ import annotations

import json
from pathlib import Path

import gguf
import numpy as np
import pytest

from pocketgpt import hf
from pocketgpt.chat_format import CHAT_TEMPLATE, TEMPLATE_KEY
from pocketgpt.gguf_io import store_tensors, write_gguf
from pocketgpt.quant.formats import F32
from support import make_hf_model, pocketgpt_json

# A different layout a user might bring: the files must keep it, not replace it with ours.
CUSTOM = ("{%- for m in messages -%}<{{ m['role'] }}>{{ m['content'] }}{{ '\\n' }}{%- endfor -%}"
          "{%- if add_generation_prompt -%}<assistant>{%- endif -%}")


def _key(path: Path) -> str:
    return gguf.GGUFReader(str(path)).fields[TEMPLATE_KEY].contents()


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("tmpl")
    model, vocab = make_hf_model(n_embd=64, n_layer=2, n_head=4, n_ctx=64, seed=5)
    folder = d / "plain"
    model.save_pretrained(folder)
    vocab.hf_tokenizer().save_pretrained(folder)
    (folder / "chat_template.jinja").unlink(missing_ok=True)
    cfg, tensors, _ = hf.hf_to_tensors(model)
    custom = d / "custom.gguf"
    write_gguf(custom, cfg, vocab, store_tensors(tensors, lambda n, a: F32), chat_template=CUSTOM)
    return {"plain": folder, "custom": custom, "dir": d}


@pytest.mark.slow
def test_converting_a_folder_without_a_template_writes_the_projects_layout(models):
    out = models["dir"] / "plain.gguf"
    pocketgpt_json("convert", str(models["plain"]), str(out))
    assert _key(out) == CHAT_TEMPLATE


def test_quantize_keeps_the_inputs_template(models, tmp_path):
    out = tmp_path / "q8.gguf"
    pocketgpt_json("quantize", str(models["custom"]), str(out), "--type", "q8")
    assert _key(out) == CUSTOM


@pytest.mark.slow
def test_the_template_survives_a_round_trip_through_a_hugging_face_folder(models, tmp_path):
    from transformers import AutoTokenizer

    folder = tmp_path / "hf"
    pocketgpt_json("convert", str(models["custom"]), str(folder))
    assert json.loads((folder / "tokenizer_config.json").read_text())["chat_template"] == CUSTOM
    tok = AutoTokenizer.from_pretrained(folder)
    text = tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    assert text == "<user>hi\n<assistant>"
    back = tmp_path / "back.gguf"
    pocketgpt_json("convert", str(folder), str(back))
    assert _key(back) == CUSTOM


def test_shrink_keeps_the_teachers_template(models, tmp_path):
    rng = np.random.default_rng(0)
    words = "the cat sat on a mat while dogs barked loudly at strange people in the old town square".split()
    quotes = [" ".join(rng.choice(words, size=int(rng.integers(5, 30)))).capitalize() + "." for _ in range(120)]
    corpus = tmp_path / "quotes"
    corpus.write_text("\n%\n".join(quotes) + "\n", encoding="utf-8")
    out = tmp_path / "small.gguf"
    pocketgpt_json("shrink", str(models["custom"]), str(out), "--vocab", "300", "--layers", "1", "--width", "32",
                   "--ff", "64", "--ctx", "64", "--distill-steps", "2", "--batch", "2", "--corpus", str(corpus),
                   "--alpha", "0")
    assert _key(out) == CUSTOM
