"""The sentences the recognizer is scored on; the language model builder never sees them.

Two sets, spoken by espeak-ng (`en-us+f2`, 150 words/min) in the tests and the WER table:

- REQUESTS: things a person says to a pocket chatbot. Written by hand for this table; none of
  them is in the language model's corpus (`lm.build_corpus` drops any corpus sentence equal to
  one, and tests/test_voice_lm.py checks it). The request templates (`commands.py`) were written
  by the same hand, so this set measures in-domain recognition: the figure a user of this relay
  sees when they talk to it the way it expects.
- QUOTES: eight short fortunes picked at random from Debian's fortune files; the builder drops
  the whole quote each comes from, so they are held-out text of the corpus's own kind.
"""

from __future__ import annotations

REQUESTS = (
    "Tell me a joke about computers.",
    "What is the meaning of life?",
    "Give me a quote about love.",
    "Tell me a short story about a cat.",
    "Who said that time is money?",
    "What do you think about the future?",
    "Say something funny.",
    "How are you today?",
    "Tell me something about the moon.",
    "Can you give me some advice about work?",
    "What is your favorite book?",
    "Please tell me a story about a king and a dragon.",
)

QUOTES = (
    "Integrity has no need for rules.",
    "Marriage is the sole cause of divorce.",
    "Genius is the talent of a person who is dead.",
    "Do unto others before they undo you.",
    "Anything cut to length will be too short.",
    "The trouble with being poor is that it takes up all your time.",
    "History repeats itself only if one does not listen the first time.",
    "True happiness will be found only in true love.",
)
