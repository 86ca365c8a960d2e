"""The chat layout both shipped models are trained on, stored in each GGUF as `tokenizer.chat_template`.

One turn is a request line and a reply, the reply closed by end-of-text:

    Q: <request>\\n
    A: <reply><|endoftext|>

A prompt for a new reply ends in `A:` (no trailing space: GPT-2's tokens carry their leading
space, so the reply's first token is " Word"). The template is Jinja, the language llama.cpp
(`--jinja`) and transformers (`apply_chat_template`) read from the same key, rendered here in a
sandbox as they do. The device firmware builds the same bytes in C (`firmware/app`), and a test
compares the two on shared vectors.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

TEMPLATE_KEY = "tokenizer.chat_template"
EOS_TEXT = "<|endoftext|>"

# Roles: system (a line of its own before the turns), user (Q:), assistant (A:). Contents are trimmed
# of surrounding whitespace, as the C side does.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'system' -%}"
    "{{ message['content'] | trim }}{{ '\\n' }}"
    "{%- elif message['role'] == 'user' -%}"
    "Q: {{ message['content'] | trim }}{{ '\\n' }}"
    "{%- elif message['role'] == 'assistant' -%}"
    "A: {{ message['content'] | trim }}{{ eos_token }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}A:{%- endif -%}"
)

# Where a reply ends besides end-of-text: the model starting the next request line.
STOP_STRINGS = ("\nQ:",)


def _compile(template: str) -> Any:
    from jinja2.exceptions import TemplateError
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    from pocketgpt.errors import PocketError

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    try:
        return env.from_string(template)
    except TemplateError as exc:
        raise PocketError(f"the model's {TEMPLATE_KEY} is not a valid Jinja template ({exc}); "
                          f"re-write it with 'pocketgpt convert'") from None


_CACHE: dict[str, Any] = {}


def render(messages: Sequence[dict[str, str]], template: str | None = None, *,
           add_generation_prompt: bool = True, eos_token: str = EOS_TEXT) -> str:
    """The conversation as text (end-of-text as its literal name), ready for the reply when asked."""
    from jinja2.exceptions import TemplateError

    from pocketgpt.errors import PocketError

    template = template or CHAT_TEMPLATE
    compiled = _CACHE.get(template)
    if compiled is None:
        compiled = _CACHE[template] = _compile(template)
    for m in messages:
        if not isinstance(m.get("content"), str) or m.get("role") not in ("system", "user", "assistant"):
            raise PocketError("a chat message needs a role (system, user or assistant) and text content")
    try:
        return compiled.render(messages=list(messages), add_generation_prompt=add_generation_prompt,
                               eos_token=eos_token, bos_token=eos_token)
    except TemplateError as exc:
        raise PocketError(f"the chat template failed on these messages: {exc}") from None


def render_ids(tokenize: Callable[[str], Sequence[int]], eos_id: int, messages: Sequence[dict[str, str]],
               template: str | None = None, *, add_generation_prompt: bool = True) -> list[int]:
    """`render` as token ids: the literal end-of-text becomes `eos_id`, the text between is tokenized."""
    parts = render(messages, template, add_generation_prompt=add_generation_prompt).split(EOS_TEXT)
    ids: list[int] = []
    for i, part in enumerate(parts):
        if i:
            ids.append(eos_id)
        if part:
            ids.extend(tokenize(part))
    return ids


def training_text(request: str, reply: str) -> str:
    """One training document: a request and its reply (the trainer adds end-of-text between documents)."""
    return render([{"role": "user", "content": request}, {"role": "assistant", "content": reply}],
                  add_generation_prompt=False).removesuffix(EOS_TEXT)
