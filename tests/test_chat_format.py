"""The chat layout: one template, rendered the way llama.cpp and transformers render the same key."""

import pytest

from pocketgpt import chat_format
from pocketgpt.errors import PocketError


def test_a_request_renders_as_a_question_line_then_the_reply_prompt():
    assert chat_format.render([{"role": "user", "content": "  What is love?\n"}]) == "Q: What is love?\nA:"


def test_earlier_turns_end_with_end_of_text_and_become_its_id():
    msgs = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Hello."},
            {"role": "user", "content": "Who are you?"}]
    text = chat_format.render(msgs)
    assert text == "Q: hi\nA: Hello.<|endoftext|>Q: Who are you?\nA:"
    ids = chat_format.render_ids(lambda s: [ord(c) for c in s], 7, msgs)
    assert ids.count(7) == 1 and ids[ids.index(7) - 1] == ord(".") and ids[ids.index(7) + 1] == ord("Q")


def test_transformers_renders_the_same_text_from_the_same_template():
    pytest.importorskip("transformers")
    from pocketgpt.tokenizer import gpt2_vocab

    tok = gpt2_vocab().hf_tokenizer()
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Tell me a joke."}]
    got = tok.apply_chat_template(msgs, chat_template=chat_format.CHAT_TEMPLATE, tokenize=False,
                                  add_generation_prompt=True)
    assert got == chat_format.render(msgs) == "Be brief.\nQ: Tell me a joke.\nA:"


def test_a_message_without_text_is_refused_in_one_line():
    with pytest.raises(PocketError, match="role"):
        chat_format.render([{"role": "user", "content": [{"type": "text", "text": 5}]}])


# ---- shared vectors with the device (firmware/app/chat.c reads the same file) ----

import json  # noqa: E402
from pathlib import Path  # noqa: E402

VECTORS = json.loads((Path(__file__).resolve().parents[1] / "docs" / "chat_vectors.json").read_text("utf-8"))


@pytest.mark.parametrize("vec", VECTORS["prompts"], ids=lambda v: repr(v["request"])[:30])
def test_every_shared_request_renders_to_the_vectors_prompt(vec):
    assert chat_format.render(chat_format.user_turn(vec["request"])) == vec["prompt"]


@pytest.mark.parametrize("vec", VECTORS["replies"], ids=lambda v: f"{v['finish']}:{''.join(v['pieces'])[:24]!r}")
def test_every_shared_reply_is_shown_as_the_vectors_say(vec):
    assert chat_format.shape_reply(vec["pieces"], vec["finish"]) == vec["shown"]


@pytest.mark.parametrize("vec", VECTORS["words"], ids=lambda v: repr(v["text"])[:30])
def test_a_reply_has_the_shared_number_of_words(vec):
    """One word count for the engine's guard, the device and the relay (firmware tests read the same list)."""
    assert chat_format.count_words(vec["text"]) == vec["words"]
    assert chat_format.has_word(vec["text"]) == (vec["words"] > 0)


def test_a_cut_reply_is_cut_back_only_when_three_words_are_left():
    # "<Everf Wis_Our/T>" counted as three words (runs of letters) was a two-word reply through the device
    assert chat_format.count_words("<Everf Wis_Our/T>") == 2
    assert chat_format.shape_reply([" Hi.", " There you", " go"], "length") == "Hi. There you go"
    assert chat_format.shape_reply([" Hi there you.", " Going"], "length") == "Hi there you."


def test_vectors_cover_the_cases_users_hit():
    shown = {(tuple(v["pieces"]), v["finish"]): v["shown"] for v in VECTORS["replies"]}
    assert VECTORS["stop"] == list(chat_format.STOP_STRINGS) and VECTORS["empty_reply"] == chat_format.EMPTY_REPLY
    assert any(f == "length" and s.endswith(".") and s != "".join(p).strip() for (p, f), s in shown.items())
    assert sum(s == chat_format.EMPTY_REPLY for s in shown.values()) >= 3  # empty, punctuation only, emoji only
    assert any(not v["request"].strip() for v in VECTORS["prompts"])


def test_a_reply_streams_by_sentence_and_a_cut_reply_ends_at_its_last_sentence():
    sh = chat_format.ReplyShaper()
    assert sh.feed(" Love is blind") == ""
    assert sh.feed(". Hate") == "Love is blind."  # released once the next character shows the sentence ended
    assert sh.feed(" sees all") == ""
    assert sh.finish("length") == ""  # the unfinished second sentence is dropped
    sh = chat_format.ReplyShaper()
    sh.feed(" Hate sees all")
    assert sh.finish("stop") == "Hate sees all"  # ended by the model: kept whole


def test_an_empty_reply_is_said_in_words_unless_the_user_aborted():
    assert chat_format.shape_reply([], "stop") == chat_format.EMPTY_REPLY
    assert chat_format.shape_reply([" ..."], "length") == chat_format.EMPTY_REPLY
    assert chat_format.shape_reply([], "abort") == ""


def test_the_prompt_uses_the_template_stored_in_the_model_file(tmp_path):
    from pocketgpt import hf
    from pocketgpt.engine import Engine
    from pocketgpt.gguf_io import store_tensors, write_gguf
    from pocketgpt.quant.formats import F32
    from support import make_hf_model

    model, vocab = make_hf_model(n_embd=32, n_layer=1, n_head=2, n_ctx=64, seed=3)
    cfg, tensors, _ = hf.hf_to_tensors(model)
    mine = "{% for m in messages %}Request: {{ m['content'] | trim }}\n{% endfor %}Reply:"
    write_gguf(tmp_path / "t.gguf", cfg, vocab, store_tensors(tensors, lambda n, a: F32),
               extra={chat_format.TEMPLATE_KEY: mine})
    write_gguf(tmp_path / "plain.gguf", cfg, vocab, store_tensors(tensors, lambda n, a: F32))
    eng, plain = Engine(tmp_path / "t.gguf", threads=1), Engine(tmp_path / "plain.gguf", threads=1)
    assert eng.chat_template == mine and plain.chat_template == chat_format.CHAT_TEMPLATE
    msgs = chat_format.user_turn(" hi <|endoftext|>there ")
    assert chat_format.prompt_ids(eng, msgs) == [eng.eos_id] + eng.tokenize("Request: hi there\nReply:")
    # a file written without a template of its own gets the layout the shipped models are trained on
    assert chat_format.prompt_ids(plain, msgs) == [plain.eos_id] + plain.tokenize("Q: hi there\nA:")


# ---- the subject a reply is steered to (firmware/app/chat.c's pg_chat_subject reads the same vectors) ----

@pytest.mark.parametrize("vec", VECTORS["subjects"], ids=lambda v: repr(v["request"])[:30])
def test_every_shared_request_has_the_vectors_subject(vec):
    assert chat_format.subject_of(vec["request"]) == vec["subject"]


def test_the_subject_is_what_a_training_request_asks_about_and_small_talk_has_none():
    from pocketgpt import chatdata

    for phrasings in chatdata.TRAIN.values():
        for p in phrasings:
            if "{x}" in p:
                assert chat_format.subject_of(p.replace("{x}", "bicycles").replace("{a}", "Mark Twain")) == "bicycles", p
    assert all(chat_format.subject_of(p) is None for p in chatdata.SMALL_TALK_TRAIN)


def test_the_device_stop_list_is_the_python_one():
    import re

    src = (Path(__file__).resolve().parents[1] / "firmware" / "app" / "chat.c").read_text("utf-8")
    body = src[src.index("s_subject_stop[] = {"):]
    body = body[:body.index("};")]
    words = re.findall(r'"([^"]*)"', body)
    assert words == sorted(words)  # the C side looks words up by binary search
    assert set(words) == chat_format.SUBJECT_STOP
