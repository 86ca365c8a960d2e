"""Chat pairs from quotes: subjects are content words, the replies are the given quotes only,
training and evaluation phrasings never meet, and the on-topic test and BM25 behave as the bench needs."""

from __future__ import annotations

from pocketgpt import chatdata
from pocketgpt.chat_format import render

QUOTES = [
    "Money is the root of all evil.\n\t\t-- Paul of Tarsus",
    "A dog is a man's best friend, and money cannot buy one.",
    "Cats sleep all day and dogs bark all night.\n\t\t-- Anonymous",
    "Love conquers all things; let us too surrender to love.\n\t\t-- Virgil, \"Eclogues\"",
    "Q:\tWhat do you call a fish with no eyes?\nA:\tA fsh.",
    "Computers are useless. They can only give you answers.\n\t\t-- Pablo Picasso",
    "The computer is a moron.\n\t\t-- Peter Drucker",
    "Every dog has its day, and every cat its night.",
]


def test_a_quote_splits_into_body_and_author():
    q = chatdata.parse_quote(QUOTES[3])
    assert q.body == "Love conquers all things; let us too surrender to love."
    assert q.author == "Virgil"
    assert q.text == QUOTES[3]
    assert chatdata.parse_quote(QUOTES[1]).author is None


def test_subjects_are_content_words_never_stop_words():
    words = chatdata.content_words("What is the meaning of all this money, and why do dogs bark?")
    assert "money" in words and "dogs" in words and "meaning" in words
    for stop in ("what", "the", "all", "this", "and", "why"):
        assert stop not in words
    picker = chatdata.SubjectPicker(QUOTES)
    subs = picker.subjects(chatdata.parse_quote(QUOTES[0]).body)
    assert subs and all(s not in chatdata.STOP_WORDS for s in subs)
    assert "money" in subs  # in two quotes: a subject, not a one-off


def test_pairs_reply_with_the_given_quotes_only_and_ask_about_their_words():
    train, held = QUOTES[:6], QUOTES[6:]
    pairs = chatdata.make_pairs(train, 300, seed=1)
    assert len(pairs) == 300
    replies = {p.reply for p in pairs}
    assert replies <= set(train)
    assert not replies & set(held)
    assert QUOTES[4] not in replies  # a quote with its own Q:/A: lines would read as chat turns
    for p in pairs:
        if p.subject is not None:
            assert p.subject in p.request
            assert chatdata.on_topic(p.reply, p.subject), p
    kinds = {p.kind for p in pairs}
    assert {"opinion", "funny", "advice", "joke", "author", "small_talk"} <= kinds
    assert any(p.kind == "author" and "Pablo Picasso" in p.request for p in pairs)
    assert chatdata.make_pairs(train, 50, seed=1) == pairs[:50]  # seeded


def test_training_and_evaluation_phrasings_are_disjoint():
    train = {p for ps in chatdata.TRAIN.values() for p in ps} | set(chatdata.SMALL_TALK_TRAIN)
    evals = {p for ps in chatdata.EVAL.values() for p in ps} | set(chatdata.SMALL_TALK_EVAL)
    assert not train & evals
    requests = {p.request for p in chatdata.make_pairs(QUOTES, 200, seed=2)}
    asked = {p.request for p in chatdata.eval_requests(QUOTES, 200, seed=2)}
    assert not requests & asked


def test_chat_documents_use_the_shipped_layout():
    doc = chatdata.chat_documents(QUOTES[:2], 1, seed=3)[0]
    assert doc.startswith("Q: ") and "\nA: " in doc
    request = doc.split("\n", 1)[0][3:]
    assert render([{"role": "user", "content": request}]) + " " + doc.split("\nA: ", 1)[1] == doc


def test_on_topic_accepts_the_same_stem_and_rejects_other_words():
    assert chatdata.on_topic("Dogs bark all night.", "dog")
    assert chatdata.on_topic("She was loving it.", "love")
    assert chatdata.on_topic("Computers are useless.", "computer")
    assert not chatdata.on_topic("Cats sleep all day.", "dog")
    assert not chatdata.on_topic("", "dog")


def test_bm25_finds_the_quote_about_the_request():
    bm = chatdata.BM25(QUOTES)
    assert bm.best("What do you think about computers?") in (QUOTES[5], QUOTES[6])  # computer = computers
    assert bm.best("Tell me about love") == QUOTES[3]
    assert bm.best("zebra xylophone") is None
