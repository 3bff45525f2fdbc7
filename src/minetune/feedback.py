"""User feedback: praise detection for automatic capture, and star ratings.

Praise detection decides whether a message praises the previous answer, so that the
exchange can be kept as a fine-tuning example. :class:`PraiseDetector` applies these rules
(measured on ``tests/data/praise_labelled.jsonl``; ``bench/praise.py`` prints the table):

1. **Normalise.** Case-fold; accents are dropped ("génial" = "genial"); curly apostrophes
   become ``'``; emphasis marks vanish ("*great*"); a hyphen inside a word becomes a space
   ("well-done"); every other punctuation mark or newline ends a clause. Each praise emoji
   (👍 🔥 🙌 ❤️ 👌 💯 👏 😍 …) is a clause of its own. Words compare without apostrophes.
2. **A praise clause** starts (after leading :data:`INTERJECTIONS` such as "wow", "ok",
   "haha") with one of:

   - a *phrase* ("well done", "nailed it", "exactly what I needed", "spot on", …), optionally
     after a frame and intensifiers ("this is exactly what I needed");
   - an *affirmative* in a frame: ``[frame] [intensifiers] AFFIRMATIVE [noun]`` — "that was
     great", "you're amazing", "what a brilliant explanation", "really good stuff",
     "c'est parfait", "das ist perfekt";
   - *liking it*: ``[I] [intensifiers] like|love|adore it|this|that|the …`` — "I love it";
   - a praise emoji.

   At most two words may follow in the clause (a vocative: "Timmy", "mate"), none of them a
   negation or one of :data:`TAIL_BLOCKERS` ("great *news*", "great *if* …"), and the clause
   must not be a question ("?"). An affirmative used as an adjective ("perfect timing",
   "good luck", "nice weather", "the perfect storm") is not praise: a *bare* affirmative
   (no frame, no noun) may be followed only by filler — thanks, a generic vocative, an
   interjection, an emoji.
3. **A bare affirmative** ("perfect", "very nice", "Great, thanks!") counts only in a short
   message: at most ``max_short_words`` words that are not filler (thanks, vocatives,
   interjections), and no negation anywhere ("don't. perfect.").
4. **Not praise**, whatever matched: a leading negation ("not good", "this isn't great");
   an idiom at the clause start (:data:`NOT_PRAISE_IDIOMS`: "good grief", "nice try", …);
   a contrast after the praise ("nice one, *but* shorter"; "mais", "pero", "aber"); a request
   to change the answer after it ("…, just make it *shorter*", "try again"); a complaint
   anywhere ("great, another *wrong* answer", "well done, you *broke* it"); a later clause
   that says it failed ("perfect, now nothing works", "… not."); a hedge ("good *enough*",
   "good, I *guess*"); a negative emoji (👎 🙄 😒 🤦 …); a trailing ``/s``.
5. Empty or whitespace-only text is not praise.

English is covered best; common French, Spanish and German praise ("parfait", "genial",
"perfekt", "danke, super"), negations ("pas", "no", "nicht") and contrasts are supported.
Phrases and affirmatives come from :class:`minetune.config.PraiseSettings` (defaults:
:data:`DEFAULT_PRAISE_PHRASES`, :data:`DEFAULT_AFFIRMATIVES`); the other word lists are
module constants that code may pass to :class:`PraiseDetector` to override.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence
from typing import NamedTuple

from minetune.config import PraiseSettings
from minetune.errors import FeedbackError

__all__ = [
    "DEFAULT_AFFIRMATIVES",
    "DEFAULT_PRAISE_PHRASES",
    "INTERJECTIONS",
    "NEGATIONS",
    "NOT_PRAISE_IDIOMS",
    "TAIL_BLOCKERS",
    "PraiseDetector",
    "parse_rating_command",
    "parse_stars",
]

# Fixed praise expressions. Adjective praise ("that was great", "good one", "perfect response")
# comes from DEFAULT_AFFIRMATIVES with the frames and nouns below.
DEFAULT_PRAISE_PHRASES: tuple[str, ...] = (
    "well done", "nicely done", "beautifully done", "well written", "nicely written",
    "beautifully written", "well explained", "nicely explained", "beautifully explained",
    "well put", "nicely put", "well said", "nailed it", "nailed that", "nailed this",
    "nailed that one", "nailed this one", "exactly", "precisely", "exactly right", "that's exactly it",
    "that's it exactly", "did the trick", "does the trick", "exactly what i needed", "exactly what i wanted",
    "exactly what i meant", "exactly what i was looking for", "exactly what i asked for",
    "just what i needed", "just what i wanted", "just what i was looking for", "what i needed",
    "what i wanted", "what i was looking for", "you rock", "you're a genius", "you're a star",
    "you're a lifesaver", "lifesaver", "life saver", "chef's kiss", "10/10", "10 out of 10",
    "ten out of ten",
    "five stars", "bravo", "kudos", "hats off", "couldn't be better",
    "couldn't have said it better", "i couldn't have said it better", "no notes",
    "works perfectly", "worked perfectly", "works like a charm", "worked like a charm",
    "helps a lot", "helped a lot",
    # French, Spanish, German
    "j'adore", "tres bien", "bien joue", "me encanta", "muy bien", "muy bueno", "bien hecho",
    "sehr gut", "gut gemacht",
)
# The seed's short affirmatives first, then more English, French, Spanish and German ones.
DEFAULT_AFFIRMATIVES: tuple[str, ...] = (
    "good", "nice", "perfect", "excellent", "great", "amazing",
    "awesome", "brilliant", "fantastic", "wonderful", "superb", "outstanding", "terrific",
    "fabulous", "incredible", "impressive", "stellar", "phenomenal", "flawless", "lovely",
    "beautiful", "splendid", "marvelous", "marvellous", "exceptional", "helpful", "useful",
    "best", "super", "spot on", "top notch", "first class", "ace", "sublime", "fab", "magnificent",
    "stunning", "epic", "top",
    "parfait", "parfaite", "genial", "magnifique", "formidable", "incroyable",
    "perfecto", "perfecta", "excelente", "increible", "fantastico", "estupendo", "buenisimo",
    "maravilloso", "perfekt", "toll", "klasse", "wunderbar", "ausgezeichnet", "hervorragend",
    "spitze", "fantastisch", "grossartig", "prima",
)

NOT_PRAISE_IDIOMS: tuple[str, ...] = (
    "good grief", "good lord", "good god", "good heavens", "good morning", "good afternoon",
    "good evening", "good night", "good luck", "good bye", "good riddance", "good for you",
    "great scott", "nice try", "nice to meet", "perfect timing", "perfect storm",
    "best regards", "best wishes", "thanks for nothing",
)
INTERJECTIONS: tuple[str, ...] = (
    "oh", "wow", "haha", "hahaha", "ha", "lol", "ok", "okay", "yes", "yeah", "yep", "yay",
    "hey", "ah", "omg", "aw", "aww", "ooh", "whoa", "well", "honestly", "oui", "si", "ja",
)
NEGATIONS: tuple[str, ...] = (
    "not", "no", "never", "hardly", "nothing", "nope", "nah", "cannot",
    # apostrophe-less spellings; any word ending in "n't" is a negation as well
    "isnt", "wasnt", "arent", "werent", "dont", "doesnt", "didnt", "aint", "cant", "couldnt",
    "wouldnt", "shouldnt", "wont", "havent", "hasnt", "hadnt",
    # French, Spanish, German
    "pas", "jamais", "nunca", "nada", "nicht", "kein", "keine", "nie",
)
TAIL_BLOCKERS: tuple[str, ...] = (
    "news", "idea", "ideas", "if", "to", "about", "when", "whether", "because", "but", "though",
    "how",
)

# "[frame] [intensifiers] AFFIRMATIVE [noun]"; a frame ending in an article needs the noun.
_FRAME_NOUNS = ("answer", "response", "reply", "explanation", "summary", "one", "result")
_FRAMES = (
    *(f"{det} {noun} {verb}" for det in ("the", "this", "that", "your") for noun in _FRAME_NOUNS
      for verb in ("is", "was")),
    "that's", "that is", "this is", "it's", "it is", "that was", "this was", "it was",
    "that looks", "this looks", "it looks", "looks", "that sounds", "sounds", "you're",
    "you are", "you were", "you did", "what a", "what an", "such a", "such an", "a", "an", "the",
    "that's a", "that's an", "that is a", "this is a", "it's a", "that was a", "this was a",
    "it was a", "that's the", "this is the", "that was the", "it's the", "you're the",
    "you are the", "you did a", "c'est", "c'etait", "es", "esta", "eso es", "que", "das ist",
    "das war", "ist", "war",
)
_ARTICLES = frozenset({"a", "an", "the"})
# Subjects a phrase may have besides the frames: "this works perfectly", "you nailed it".
_PHRASE_SUBJECTS = ("this", "that", "it", "you", "this one", "that one")
_INTENSIFIERS = frozenset({
    "really", "very", "so", "absolutely", "truly", "just", "simply", "totally", "super",
    "incredibly", "extremely", "amazingly", "insanely", "utterly", "damn", "bloody", "freaking",
    "most", "exactly", "precisely", "tres", "vraiment", "trop", "absolument", "muy", "realmente",
    "sehr", "echt", "wirklich", "total", "einfach", "ganz", "wahnsinnig", "richtig",
})
_NOUNS = frozenset({
    "answer", "answers", "response", "responses", "reply", "one", "job", "work", "stuff",
    "explanation", "summary", "result", "results", "solution", "suggestion", "suggestions",
    "writing", "code", "example", "examples", "list", "choice", "pick", "draft", "version",
    "advice", "breakdown", "overview", "rundown", "reponse", "travail", "respuesta", "trabajo",
    "antwort", "arbeit",
})
# "[I] [intensifiers] love it": subject, verb, object (objects after which a longer tail may follow).
_LIKE_SUBJECTS = frozenset({"i", "we"})
_LIKE_VERBS = frozenset({"like", "liked", "love", "loved", "adore", "adored", "enjoyed"})
_OBJECTS = ("it", "this", "that", "these", "those", "them", "the", "your", "this one", "that one")
_LONG_OBJECTS = ("how", "the way")
# Words that may surround a bare affirmative without making it an adjective or a longer message.
_FILLER = frozenset({
    "thanks", "thank", "thankyou", "thx", "ty", "tysm", "cheers", "you", "so", "much", "very",
    "a", "lot", "lots", "million", "ton", "again", "merci", "beaucoup", "gracias", "muchas",
    "mil", "danke", "schon", "vielen", "dank", "many", "mate", "buddy", "man", "dude", "friend",
    "pal", "bro", "sir", "boss", "chief", "indeed",
})
# Praise is void when one of these follows it.
_CONTRASTS = frozenset({
    "but", "however", "although", "though", "except", "apart", "mais", "sauf", "pero",
    "excepto", "salvo", "aber", "ausser", "sondern",
})
_EDITS = frozenset({
    "shorter", "longer", "shorten", "lengthen", "simpler", "simplify", "fix", "change",
    "rewrite", "redo", "rephrase", "remove", "delete", "add", "instead", "tweak", "adjust",
    "edit", "revise", "improve", "formal", "informal", "concise", "detail", "details", "too",
    "typo", "typos", "mistake", "mistakes", "missing", "forgot", "needs", "bit", "long", "wordy",
    "verbose", "vague", "unclear", "confusing", "repetitive", "court", "corto", "kurzer",
})
_EDIT_PAIRS = frozenset({
    ("make", "it"), ("try", "again"), ("could", "be"), ("should", "be"), ("would", "be"),
})
# Praise is void when one of these appears anywhere outside the matched phrase.
_COMPLAINTS = frozenset({
    "wrong", "worse", "worst", "broke", "broken", "break", "breaks", "breaking", "crash",
    "crashed", "crashes", "crashing", "error", "errors", "bug", "bugs", "buggy", "fail", "fails",
    "failed", "failing", "failure", "useless", "pointless", "terrible", "awful", "horrible",
    "incorrect", "inaccurate", "misleading", "nonsense", "garbage", "rubbish", "ugh", "sigh",
    "bad", "whatever", "waste", "wasted", "deleted", "ruined", "hate", "hated", "mess", "messed",
    "hallucinated",
})
_HEDGES = frozenset({
    "guess", "suppose", "ish", "enough", "kinda", "sorta", "somewhat", "fairly", "mostly",
    "almost", "nearly", "reasonably", "meh",
})
# A negation followed by one of these in a later clause says the answer failed ("nothing works").
_FAILS = frozenset({
    "work", "works", "working", "worked", "compile", "compiles", "compiling", "run", "runs",
    "running", "help", "helps", "helped", "load", "loads", "what", "right", "correct", "true",
    "sense", "quite", "exactly", "accurate", "match", "matches", "answer", "answered",
})
# A short message starting with one of these is a question, not praise ("is that good").
_QUESTION_STARTERS = frozenset({
    "is", "are", "was", "were", "am", "do", "does", "did", "can", "could", "would", "should",
    "will", "shall", "may", "might", "isnt", "arent", "wasnt", "dont", "doesnt", "didnt",
})

PRAISE_EMOJI = frozenset("👍👌👏🙌🔥💯❤♥😍🥰🤩🌟🏆🎯💪🤌💖💕😻🥇")
NEGATIVE_EMOJI = frozenset("👎🙄😒🤦😕😞😡😠🤨😤💩❌😬😑🥱😩😫😖🤮🤢😐🤔")
_GRATITUDE_EMOJI = "🙏"  # filler: thanks, not praise on its own
_EMOJI_CLASS = "".join(sorted(PRAISE_EMOJI)) + _GRATITUDE_EMOJI
# Variation selectors, zero-width joiners, skin tones and gender signs carry no meaning here.
_EMOJI_NOISE = re.compile("[\ufe0e\ufe0f\u200d\u2640\u2642\U0001f3fb-\U0001f3ff]")
_EMOJI = re.compile(f"([{_EMOJI_CLASS}])")
_SARCASM_TAG = re.compile(r"(?:^|\s)/s\s*$")
_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'", "\u00b4": "'", "`": "'"})
_EMPHASIS = str.maketrans(dict.fromkeys('*_~"\u201c\u201d\u00ab\u00bb'))
_INNER_HYPHEN = re.compile(r"(?<=[^\W_])-(?=[^\W_])")
# Anything but letters, digits, whitespace, apostrophes and emoji ends a clause, and so do newlines.
_SEPARATOR = re.compile(f"((?:[^\\w\\s'{_EMOJI_CLASS}]|_)+|[\\r\\n]+)")
_WORD = re.compile(f"[\\w']+|[{_EMOJI_CLASS}]")
# Separators a phrase may run across ("Good one, Timmy" for a phrase "good one timmy"; "10/10").
_SOFT = frozenset(",/ \t")


def _key(word: str) -> str:
    return word.replace("'", "")


def _words(text: str) -> list[str]:
    return [w for w in (m.strip("'") for m in _WORD.findall(text)) if w and _key(w)]


def _normalise(text: str) -> str:
    text = _EMOJI_NOISE.sub("", text.casefold().translate(_APOSTROPHES).translate(_EMPHASIS))
    text = "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))
    return _EMOJI.sub(r",\1,", _INNER_HYPHEN.sub(" ", text))


class _Entry(NamedTuple):
    text: str  # what detect() returns
    keys: tuple[str, ...]


def _entries(items: Iterable[str]) -> tuple[_Entry, ...]:
    """Normalised, de-duplicated entries, longest first (so "exactly what i needed" wins over "exactly")."""
    seen: dict[tuple[str, ...], _Entry] = {}
    for item in items:
        words = _words(_normalise(item))
        keys = tuple(_key(w) for w in words)
        if keys and keys not in seen:
            seen[keys] = _Entry(" ".join(words), keys)
    return tuple(sorted(seen.values(), key=lambda e: -len(e.keys)))


def _by_first(entries: Iterable[_Entry]) -> dict[str, tuple[_Entry, ...]]:
    """Entries grouped by their first word, each group longest first."""
    index: dict[str, list[_Entry]] = {}
    for entry in entries:
        index.setdefault(entry.keys[0], []).append(entry)
    return {first: tuple(group) for first, group in index.items()}


class _Tok(NamedTuple):
    key: str  # the word without apostrophes
    clause: int
    negation: bool
    soft_before: bool  # a soft separator (or nothing) comes between this and the previous token


class _Clause(NamedTuple):
    start: int  # index of its first token
    end: int  # index after its last token
    question: bool  # ends with "?"


class _Match(NamedTuple):
    start: int  # first matched token (after interjections)
    end: int  # index after the last matched token
    text: str
    bare: bool  # a lone affirmative or emoji, without frame or noun


class PraiseDetector:
    """Detects praise in user messages; see the module docstring for the rules."""

    def __init__(
        self,
        settings: PraiseSettings | None = None,
        *,
        idioms: Iterable[str] = NOT_PRAISE_IDIOMS,
        interjections: Iterable[str] = INTERJECTIONS,
        negations: Iterable[str] = NEGATIONS,
        tail_blockers: Iterable[str] = TAIL_BLOCKERS,
    ) -> None:
        self.settings = settings if settings is not None else PraiseSettings()
        base = self.settings.phrases if self.settings.phrases is not None else DEFAULT_PRAISE_PHRASES
        affirmatives = (
            self.settings.affirmatives if self.settings.affirmatives is not None else DEFAULT_AFFIRMATIVES
        )
        self._phrases = _entries((*base, *self.settings.extra_phrases))
        self._affirmatives = _entries(affirmatives)
        self._phrase_index = _by_first(self._phrases)
        self._affirmative_index = _by_first(self._affirmatives)
        self._frames = _by_first(_entries(_FRAMES))
        self._subjects = _by_first(_entries(_PHRASE_SUBJECTS))
        self._objects = _entries(_OBJECTS)
        self._long_objects = _entries(_LONG_OBJECTS)
        self._idioms = _by_first(_entries(idioms))
        self._interjections = frozenset(_key(w) for w in interjections)
        self._negations = frozenset(_key(w) for w in negations)
        self._blockers = frozenset(_key(w) for w in tail_blockers)
        self._filler = _FILLER | self._interjections | PRAISE_EMOJI | {_GRATITUDE_EMOJI}
        self.max_short_words = max(0, self.settings.max_short_words)

    @property
    def phrases(self) -> tuple[str, ...]:
        """The normalised praise phrases in use, longest first."""
        return tuple(e.text for e in self._phrases)

    @property
    def affirmatives(self) -> tuple[str, ...]:
        """The normalised affirmatives in use, longest first."""
        return tuple(e.text for e in self._affirmatives)

    def is_praise(self, text: str) -> bool:
        """True when ``text`` praises the previous answer."""
        return self.detect(text) is not None

    def detect(self, text: str) -> str | None:
        """The praise found in ``text`` (normalised, intensifiers left out), or None."""
        if not isinstance(text, str) or not text.strip() or _SARCASM_TAG.search(text):
            return None
        if any(c in NEGATIVE_EMOJI for c in text):
            return None
        toks, clauses = self._tokens(text)
        bare: _Match | None = None
        for clause in clauses:
            found = self._clause_match(toks, clauses, clause)
            if found is not None and not found.bare:
                return found.text if self._stands(toks, clauses, found) else None
            bare = bare or found
        if bare is None or not self._short(toks):
            return None
        return bare.text if self._stands(toks, clauses, bare) else None

    def _tokens(self, text: str) -> tuple[list[_Tok], list[_Clause]]:
        toks: list[_Tok] = []
        clauses: list[_Clause] = []
        sep, start = "", 0
        for n, piece in enumerate(_SEPARATOR.split(_normalise(text))):
            if n % 2:  # a separator
                sep += piece
                continue
            words = _words(piece)
            if not words:
                sep += piece
                continue
            if toks:  # the words after a separator start a new clause
                clauses.append(_Clause(start, len(toks), "?" in sep))
                start = len(toks)
            soft = set(sep) <= _SOFT
            for i, word in enumerate(words):
                key = _key(word)
                negation = word.endswith("n't") or key in self._negations
                toks.append(_Tok(key, len(clauses), negation, soft or i > 0))
            sep = ""
        if toks:
            clauses.append(_Clause(start, len(toks), "?" in sep))
        return toks, clauses

    @staticmethod
    def _seq(toks: Sequence[_Tok], pos: int, keys: tuple[str, ...], stop: int | None = None) -> int | None:
        """Where ``keys`` ends when matched at ``pos``, or None. Within ``toks[:stop]`` when ``stop``
        is given; otherwise the match may run across soft separators ("Bravo, maestro")."""
        end = pos + len(keys)
        if end > (len(toks) if stop is None else stop):
            return None
        if any(toks[pos + k].key != key for k, key in enumerate(keys)):
            return None
        if stop is None and any(not toks[j].soft_before for j in range(pos + 1, end)):
            return None
        return end

    def _clause_match(
        self, toks: Sequence[_Tok], clauses: Sequence[_Clause], clause: _Clause
    ) -> _Match | None:
        """The praise at the start of ``clause``, trying again after each leading interjection."""
        start = clause.start
        while True:
            found = self._match_at(toks, clauses, clause, start)
            if found is not None:
                return found
            if start < clause.end and toks[start].key in self._interjections:
                start += 1
                continue
            return None

    def _match_at(
        self, toks: Sequence[_Tok], clauses: Sequence[_Clause], clause: _Clause, start: int
    ) -> _Match | None:
        """The best praise match starting at ``start``: a full one before a bare one, longer first."""
        if start >= clause.end or self._idiom_at(toks, start):
            return None
        candidates: list[_Match] = []
        stop = clause.end
        # (position after the frame, its text, ends in an article, only a phrase may follow)
        frames: list[tuple[int, str, bool, bool]] = [(start, "", False, False)]
        for index, phrase_only in ((self._frames, False), (self._subjects, True)):
            for frame in index.get(toks[start].key, ()):
                end = self._seq(toks, start, frame.keys, stop)
                if end is not None:
                    frames.append((end, frame.text + " ", frame.keys[-1] in _ARTICLES, phrase_only))
        for after_frame, frame_text, article, phrase_only in frames:
            for pos in self._intensified(toks, after_frame, stop):
                if pos >= stop or self._idiom_at(toks, pos):
                    continue
                for entry in self._phrase_index.get(toks[pos].key, ()):
                    end = self._seq(toks, pos, entry.keys)
                    if end is not None:
                        candidates.append(_Match(start, end, frame_text + entry.text, False))
                for entry in () if phrase_only else self._affirmative_index.get(toks[pos].key, ()):
                    end = self._seq(toks, pos, entry.keys, stop)
                    if end is None:
                        continue
                    if end < stop and toks[end].key in _NOUNS:
                        text = f"{frame_text}{entry.text} {toks[end].key}"
                        candidates.append(_Match(start, end + 1, text, False))
                    elif frame_text and not article:
                        candidates.append(_Match(start, end, frame_text + entry.text, False))
                    else:  # an affirmative that may be an adjective: only filler may follow
                        if all(t.key in self._filler for t in toks[end:stop]):
                            candidates.append(_Match(start, end, frame_text + entry.text, not frame_text))
        candidates.extend(self._liking(toks, start, stop))
        if toks[start].key in PRAISE_EMOJI:
            candidates.append(_Match(start, start + 1, toks[start].key, True))
        good = [m for m in candidates if self._tail_ok(toks, clauses, m)]
        if not good:
            return None
        return min(good, key=lambda m: (m.bare, -m.end))

    def _intensified(self, toks: Sequence[_Tok], pos: int, stop: int) -> list[int]:
        """``pos`` and each position after one more intensifier ("really very good")."""
        out = [pos]
        while pos < stop and toks[pos].key in _INTENSIFIERS:
            pos += 1
            out.append(pos)
        return out

    def _liking(self, toks: Sequence[_Tok], start: int, stop: int) -> list[_Match]:
        """ "I (really) love it", "love this answer", "I like how you put it"."""
        after, subject = start, ""
        if after < stop and toks[after].key in _LIKE_SUBJECTS:
            subject, after = toks[after].key + " ", after + 1
        for pos in self._intensified(toks, after, stop)[::-1]:
            if pos < stop and toks[pos].key in _LIKE_VERBS:
                verb = toks[pos].key
                out = []
                for entries, long in ((self._objects, False), (self._long_objects, True)):
                    for entry in entries:
                        end = self._seq(toks, pos + 1, entry.keys, stop)
                        if end is not None and (not long or stop - end <= 4):
                            text = f"{subject}{verb} {entry.text}"
                            out.append(_Match(start, stop if long else end, text, False))
                return out
        return []

    def _idiom_at(self, toks: Sequence[_Tok], pos: int) -> bool:
        idioms = self._idioms.get(toks[pos].key, ())
        return any(self._seq(toks, pos, idiom.keys) is not None for idiom in idioms)

    def _tail_ok(self, toks: Sequence[_Tok], clauses: Sequence[_Clause], match: _Match) -> bool:
        """At most two words follow in the clause, none a negation or blocker; not a question."""
        first, last = clauses[toks[match.start].clause], clauses[toks[match.end - 1].clause]
        if last.question or any(t.negation for t in toks[first.start : match.start]):
            return False
        tail = toks[match.end : last.end]
        return (
            len(tail) <= 2
            and not any(t.negation for t in tail)
            and not any(t.key in self._blockers for t in tail)
        )

    def _short(self, toks: Sequence[_Tok]) -> bool:
        """A message short enough for a bare affirmative: few non-filler words, no negation."""
        if toks[0].key in _QUESTION_STARTERS or any(t.negation for t in toks):
            return False
        # Intensifiers count ("very nice" is two words), although "thank you so much" is filler.
        words = sum(t.key not in self._filler or t.key in _INTENSIFIERS for t in toks)
        return words <= self.max_short_words

    def _stands(self, toks: Sequence[_Tok], clauses: Sequence[_Clause], match: _Match) -> bool:
        """No contrast, change request, complaint, hedge or failure voids the praise."""
        outside = [t for i, t in enumerate(toks) if not match.start <= i < match.end]
        if any(t.key in _COMPLAINTS or t.key in _HEDGES for t in outside):
            return False
        after = toks[match.end :]
        if any(t.key in _CONTRASTS or t.key in _EDITS for t in after):
            return False
        if any((a.key, b.key) in _EDIT_PAIRS for a, b in zip(after, after[1:], strict=False)):
            return False
        for clause in clauses[toks[match.start].clause + 1 :]:
            words = toks[clause.start : clause.end]
            if words[0].key == "yet" or all(t.negation for t in words):
                return False  # "…, yet it is wrong"; "great job… not"
            negated = [i for i, t in enumerate(words) if t.negation]
            if negated and any(t.key in _FAILS for t in words[negated[0] :]):
                return False  # "perfect, now nothing works"
        return True


_STAR_NUMBER = re.compile(r"([0-9]+)\s*(?:/\s*5|\*|\u2605|\u2b50|stars?)?")
_STAR_RUN = re.compile(r"([\u2605\u2b50*]+)\u2606*")
_MAX_STARS_CHARS = 40  # longer is never a rating (and a huge digit string must not reach int())
_STAR_WORD = re.compile(r"(?:stars?\b|/\s*5\b|out\s+of\s+5\b)[:,;.]?", re.IGNORECASE)


def _stars_or_none(value: object) -> int | None:
    number: int | None = None
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        number = value
    elif isinstance(value, float) and value.is_integer():
        number = int(value)
    elif isinstance(value, str) and len(value) <= _MAX_STARS_CHARS:
        text = value.strip().lower().replace("\ufe0f", "")
        if match := _STAR_NUMBER.fullmatch(text):
            number = int(match.group(1))
        elif match := _STAR_RUN.fullmatch(text):
            number = len(match.group(1))
    return number if number is not None and 1 <= number <= 5 else None


def parse_stars(value: object) -> int:
    """Stars from 1 to 5, from an int or a string such as "4", "4/5", "4*" or "★★★★".

    Raises :class:`FeedbackError` for anything else.
    """
    stars = _stars_or_none(value)
    if stars is None:
        try:
            shown = str(value)
        except ValueError:  # an int too long to print
            shown = "a number with too many digits"
        shown = shown if len(shown) <= _MAX_STARS_CHARS else shown[:_MAX_STARS_CHARS] + "..."
        raise FeedbackError(f"Stars must be a whole number from 1 to 5, got '{shown}'")
    return stars


def accepts_answer(stars: int | None, *, praised: bool, rated: bool, threshold: int) -> bool:
    """THE definition of an *accepted answer*, used by every count, demo and training row: its
    effective stars reach ``threshold`` (the core passes ``[continual] stars``), or it was praised
    and never rated explicitly (an explicit rating always wins over praise). ``rated`` says
    whether the answer has an explicit star rating."""
    if stars is not None and stars >= threshold:
        return True
    return praised and not rated


def describe_accepted(count: int, threshold: int) -> str:
    """The one wording of an accepted-answer count: "N accepted answers (rated ≥ T★ or praised)"."""
    noun = "answer" if count == 1 else "answers"
    return f"{count} accepted {noun} (rated \u2265 {threshold}\u2605 or praised)"


def parse_rating_command(args: str) -> tuple[int, str | None]:
    """Split rating arguments such as "2 too long" into ``(2, "too long")``; "5" gives ``(5, None)``.

    Raises :class:`FeedbackError` when the stars are missing or not 1-5.
    """
    text = (args or "").strip()
    if not text:
        raise FeedbackError(
            "Give a star rating from 1 to 5, optionally followed by a comment, e.g. '2 too long'"
        )
    head, _, rest = text.partition(" ")
    if len(head) > 1:
        head = head.rstrip(":,;.-")
    rest = rest.strip()
    if head.isdigit() and (word := _STAR_WORD.match(rest)):
        rest = rest[word.end() :]
    stars = parse_stars(head)
    comment = rest.strip().lstrip(":,;-\u2013\u2014").strip()
    return stars, comment or None
