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
