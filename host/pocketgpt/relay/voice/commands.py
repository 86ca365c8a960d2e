"""Spoken requests to a pocket chatbot, expanded from templates: half of the language model's text.

The fortunes corpus teaches the language model how quotes go; it has few questions and
requests ("tell me ...", "what is ..."), which is most of what people say to a device. These
templates supply them. They are written for coverage of request *shapes* with a broad topic
list, not from the evaluation sentences (evalsets.py), which the builder removes anyway.
"""

from __future__ import annotations

import itertools

TOPICS = (
    "love", "life", "work", "money", "time", "computers", "the computer", "programming", "linux", "science",
    "music", "food", "cats", "dogs", "a cat", "a dog", "the moon", "the sun", "the stars", "space", "the sea",
    "friendship", "family", "school", "children", "death", "happiness", "wisdom", "politics", "history",
    "the weather", "the future", "the past", "books", "a book", "war", "peace", "art", "sports", "football",
    "a king", "a queen", "a dragon", "a wizard", "a robot", "a princess", "a knight", "a horse", "a bird",
    "the ocean", "the city", "the forest", "mountains", "a mountain", "coffee", "tea", "beer", "wine",
    "marriage", "women", "men", "people", "god", "religion", "philosophy", "the internet", "a mouse",
    "the law", "lawyers", "doctors", "medicine", "success", "failure", "fear", "hope", "dreams", "sleep",
    "travel", "a train", "a car", "a ship", "pirates", "ghosts", "magic", "the night", "winter", "summer",
    "my job", "my boss", "my friend", "my cat", "my dog", "the world", "truth", "beauty", "freedom",
    "the universe", "mathematics", "physics", "a teacher", "a student", "a farmer", "an old man",
    "a little girl", "a little boy", "the government", "taxes", "the president", "a frog", "a fox",
)
ADJECTIVES = ("short", "funny", "long", "sad", "happy", "scary", "silly", "little", "good", "nice", "strange",
              "new", "old", "famous", "clever", "wise", "true", "bedtime", "random", "different")
THINGS = ("joke", "story", "quote", "poem", "fact", "song", "riddle", "fortune", "saying", "proverb", "tale")
OPENERS = ("tell me", "give me", "say", "read me", "share", "i want", "i would like", "let me hear",
           "can you tell me", "could you tell me", "can you give me", "please tell me", "please give me",
           "will you tell me", "would you tell me")
QUESTIONS = (
    "what is {t}", "what are {t}", "what do you know about {t}", "what do you think about {t}",
    "what do you think of {t}", "how do you feel about {t}", "why is {t} important",
    "do you like {t}", "do you know anything about {t}", "who invented {t}", "where does {t} come from",
    "what is the meaning of {t}", "what is the best thing about {t}", "what is the worst thing about {t}",
    "is {t} good or bad", "how does {t} work", "can you explain {t}", "explain {t} to me",
    "talk to me about {t}", "tell me something about {t}", "tell me more about {t}",
    "tell me everything about {t}", "teach me about {t}", "i want to learn about {t}",
    "what did people say about {t}", "who said something about {t}", "say something about {t}",
)
CHAT = (
    "hello", "hi", "hi there", "hey", "good morning", "good evening", "good night", "hello pocket",
    "hi pocket", "hey pocket", "how are you", "how are you doing", "how is it going", "what is your name",
    "who are you", "what are you", "who made you", "what can you do", "what do you do", "are you there",
    "are you a robot", "are you alive", "do you have feelings", "do you dream", "thank you", "thanks",
    "thank you very much", "that was funny", "that was not funny", "that is not true", "you are right",
    "you are wrong", "i do not understand", "i don't understand", "what do you mean", "say that again",
    "repeat that", "please repeat", "one more", "another one", "tell me another one", "again", "stop",
    "stop talking", "be quiet", "never mind", "go on", "continue", "keep going", "that is enough", "yes",
    "no", "maybe", "okay", "all right", "sure", "of course", "goodbye", "bye", "see you later",
    "i am bored", "i am tired", "i am sad", "i am happy", "i feel lonely", "i love you", "i like you",
    "what time is it", "what day is it", "what is the date today", "what is the weather like",
    "what should i do", "what should i do today", "give me some advice", "cheer me up",
    "make me laugh", "make me smile", "surprise me", "say something nice", "say something smart",
    "say something wise", "say something funny", "say something strange", "what is new",
    "what is up", "what is going on", "who is the smartest person in the world", "what is your favorite color",
    "what is your favorite food", "what is your favorite song", "what is your favorite movie",
    "do you have a favorite quote", "who is your favorite writer", "what makes you happy",
    "what is the answer", "what is the question", "how old are you", "where are you from",
    "where do you live", "can you hear me", "can you help me", "help me", "help",
)
WHO = ("who said {q}", "who wrote {q}", "did someone say {q}", "is it true that {q}", "why do people say {q}")
SAYINGS = ("time is money", "knowledge is power", "love is blind", "life is short", "the truth is out there",
           "less is more", "money talks", "crime does not pay", "honesty is the best policy",
           "practice makes perfect", "all you need is love", "the end is near", "hope springs eternal")


def request_sentences() -> list[str]:
    """Every expanded request, lower case, one per item (duplicates removed, order fixed)."""
    out: list[str] = []
    for opener, adj, thing in itertools.product(OPENERS, ("a", "a short", "a funny", "another", "some"), THINGS):
        out.append(f"{opener} {adj} {thing}")
    for opener, thing, topic in itertools.product(("tell me", "give me", "can you tell me", "please tell me",
                                                   "i want", "say"), THINGS, TOPICS):
        out.append(f"{opener} a {thing} about {topic}")
    for adj, thing, topic in itertools.product(ADJECTIVES, ("joke", "story", "poem", "tale"), TOPICS[::3]):
        out.append(f"tell me a {adj} {thing} about {topic}")
    for q, topic in itertools.product(QUESTIONS, TOPICS):
        out.append(q.format(t=topic))
    for opener, topic in itertools.product(("give me some advice about", "any advice about",
                                            "what is your advice about", "do you have advice about",
                                            "give me a tip about", "what is your opinion of"), TOPICS):
        out.append(f"{opener} {topic}")
    for w, q in itertools.product(WHO, SAYINGS):
        out.append(w.format(q=q))
    out.extend(CHAT)
    seen: set[str] = set()
    unique = []
    for s in out:
        if s not in seen:
            seen.add(s)
            unique.append(s)
    return unique
