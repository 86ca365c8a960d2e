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

from collections.abc import Callable, Sequence
from typing import Any

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

# A reply cannot end (end-of-text or a stop string) before it has this many words: the engine masks
# those tokens until then (Session.generate's need_word; PG_CHAT_MIN_WORDS on the device).
MIN_WORDS = 3


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


# What a chat path says when a reply still comes out without a word (the sampler's guard makes this
# rare: a reply cut by max_tokens before its first word, or a backend that returned nothing).
EMPTY_REPLY = "Sorry, I have no answer to that."


def template_of(engine: Any) -> str:
    """The chat template stored in the engine's model file, or this module's for a file without one."""
    return getattr(engine, "chat_template", None) or CHAT_TEMPLATE


def prompt_ids(engine: Any, messages: Sequence[dict[str, str]]) -> list[int]:
    """A chat prompt as token ids for `engine`: end-of-text (the models' document start), then the
    model's template rendered with a generation prompt. A literal end-of-text typed by a user is
    dropped from the content, so only the template places that token."""
    clean = [{**m, "content": m["content"].replace(EOS_TEXT, "")} if isinstance(m.get("content"), str) else m
             for m in messages]
    return [engine.eos_id] + render_ids(engine.tokenize, engine.eos_id, clean, template_of(engine))


def user_turn(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


_CLOSERS = "\"')]}\u201d\u2019"


def _sentence_ends(text: str) -> list[int]:
    """Offsets just after each sentence end in text: . ! or ? (and any closing quotes or brackets),
    followed by whitespace or by the end of text."""
    ends = []
    i, n = 0, len(text)
    while i < n:
        if text[i] in ".!?":
            j = i + 1
            while j < n and text[j] in ".!?":
                j += 1
            while j < n and text[j] in _CLOSERS:
                j += 1
            if j == n or text[j].isspace():
                ends.append(j)
            i = j
        else:
            i += 1
    return ends


def _is_word_char(c: str) -> bool:
    import unicodedata

    return c.isalnum() or unicodedata.category(c)[0] in "LN"


def count_words(text: str) -> int:
    """A reply's words: its whitespace-separated runs (str.split) that hold a letter or a number
    (Unicode L* or N*). One definition for the C engine's reply guard (pg_textout, need_word),
    the device's reply shaping (pg_unicode_count_words) and what bench/chat.py calls answered:
    "<Everf Wis_Our/T>" is two words, "a - b" two. Tested on docs/chat_vectors.json's "words"."""
    return sum(1 for w in text.split() if has_word(w))


def has_word(text: str) -> bool:
    """A letter or a number (Unicode L* or N*, as the C engine's pg_unicode_is_word)."""
    return any(map(_is_word_char, text))


class ReplyShaper:
    """Turns a streamed chat reply into what a user is shown: text goes out up to its last complete
    sentence as it arrives; at the end a reply cut by max_tokens ('length') is cut back to its last
    sentence end when it has one and the cut-back keeps at least MIN_WORDS words, and a reply
    without a word becomes EMPTY_REPLY, never silence.
    The device does the same in C (firmware/app/chat.c) and both are tested on docs/chat_vectors.json.
    """

    def __init__(self) -> None:
        self.sent = ""      # text already released
        self.pending = ""   # text after the last sentence end, held back
        self.spoke = False  # something with a word was released

    def feed(self, piece: str) -> str:
        """Text to release now (whole sentences, with the whitespace before them)."""
        self.pending += piece
        ends = _sentence_ends(self.pending)
        # a sentence end at the very end of pending is not certain yet ("3." may become "3.5")
        ends = [e for e in ends if e < len(self.pending)]
        if not ends:
            return ""
        if not self.spoke and not has_word(self.pending[:ends[-1]]):
            return ""  # nothing with a word yet: hold it (it may still become the empty-reply words)
        out, self.pending = self.pending[:ends[-1]], self.pending[ends[-1]:]
        if not self.sent:
            out = out.lstrip()
        self.sent += out
        self.spoke = self.spoke or has_word(out)
        return out

    def finish(self, finish_reason: str) -> str:
        """The rest of the reply once the generation ended with `finish_reason`."""
        rest, self.pending = self.pending, ""
        cut = finish_reason == "length" and self.spoke and not _sentence_ends(rest)
        if cut and count_words(self.sent) >= MIN_WORDS:
            rest = ""  # cut mid-sentence after whole sentences of MIN_WORDS words: drop the fragment
        if not self.sent:
            rest = rest.lstrip()
        rest = rest.rstrip()
        if not self.spoke and not has_word(rest):
            return (" " if self.sent else "") + EMPTY_REPLY if finish_reason != "abort" else rest
        self.sent += rest
        self.spoke = self.spoke or has_word(rest)
        return rest


def shape_reply(pieces: Sequence[str], finish_reason: str) -> str:
    """The whole shown reply for a finished generation's pieces (ReplyShaper fed at once)."""
    shaper = ReplyShaper()
    return "".join(shaper.feed(p) for p in pieces) + shaper.finish(finish_reason)


# ---- the subject of a request (what subject steering makes a reply name) ----

# General English function and filler words, and the words people use to ask a chat bot for
# something (tell, joke, advice, quote, ...): none of them is what a request is about. The device
# holds the same list (firmware/app/chat.c, tested equal). Made from general English and the
# training request phrasings (chatdata.TRAIN), never from the held-out evaluation phrasings.
SUBJECT_STOP = frozenset("""
a about above across after again against all almost alone along already also although always am
among an and another any anybody anyone anything anywhere are aren't around as at away back be
became because become becomes been before being below between both but by came can can't cannot
come could couldn't did didn't do does doesn't doing don't done down during each either else enough
even ever every everybody everyone everything few for from further get gets getting give given gives
go goes going gone got had hadn't has hasn't have haven't having he he'd he'll he's her here here's
hers herself him himself his how how's however i i'd i'll i'm i've if in into is isn't it it's its
itself just keep know knows last least less let let's like likely made make makes many may maybe me
might mine more most much must mustn't my myself near need never new next no nobody none nor not
nothing now of off often oh ok okay on once one ones only onto or other others otherwise ought our
ours ourselves out over own per perhaps put quite rather really said same say says see seem seemed
seems several shall shan't she she'd she'll she's should shouldn't since so some somebody someone
something sometimes still such take than that that's the their theirs them themselves then there
there's therefore these they they'd they'll they're they've thing things think this those though
through thus to too took toward towards two under unless until up upon us use used very want wants
was wasn't way we we'd we'll we're we've well went were weren't what what's whatever when when's
where where's whether which while who who's whom whose why why's will with within without won't
would wouldn't yes yet you you'd you'll you're you've your yours yourself yourselves three four five
six seven eight nine ten first second yeah hey hmm gee wow hello hi hiya howdy bye goodbye thanks
thank please sorry good great nice bad little big lot lots sure able whole
tell telling told ask asked asking call find look mean means feel feeling felt try show talk talking
speak share hear heard learn teach explain describe help gave
thought thoughts opinion opinions view views idea ideas deal word words
quote quotes quotation quotations saying sayings joke jokes joking funny fun laugh laughs humor
humour humorous witty wit advice advise tip tips story stories fact facts info information
name robot bot bored cheer surprise morning afternoon evening tonight today
""".split())

SUBJECT_MAX_LETTERS = 31  # longer words are not steered to (firmware: PG_TOPIC_MAX_WORD - 1)

def _request_words(request: str) -> list[str]:
    """Runs of letters and numbers (Unicode L*, N*), an apostrophe between two of them included."""
    out, cur = [], ""
    for i, c in enumerate(request):
        if _is_word_char(c) or (c == "'" and cur and i + 1 < len(request) and _is_word_char(request[i + 1])):
            cur += c
        elif cur:
            out.append(cur)
            cur = ""
    return out + [cur] if cur else out


def subject_of(request: str) -> str | None:
    """What a request asks about: the last word of 3 to 31 ASCII letters that is not in
    SUBJECT_STOP (lower case, a trailing 's dropped; words with other characters, digits or
    letters outside ASCII, are skipped), or None (small talk: "Who are you?", "hello").
    firmware/app/chat.c's pg_chat_subject is the same, tested on docs/chat_vectors.json."""
    best = None
    for w in _request_words(request):
        w = w.lower()
        if w.endswith("'s"):
            w = w[:-2]
        if not (3 <= len(w) <= SUBJECT_MAX_LETTERS and w.isascii() and w.isalpha()) or w in SUBJECT_STOP:
            continue
        best = w
    return best


def reply_subject(messages: Sequence[dict[str, str]], steer: bool = True) -> str | None:
    """What a chat reply to `messages` is steered to name: subject_of the last user message (None:
    steering off, no user message, or small talk). Every chat path asks this one function."""
    users = [m["content"] for m in messages if m.get("role") == "user"]
    return subject_of(users[-1]) if steer and users else None
