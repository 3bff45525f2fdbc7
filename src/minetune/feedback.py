"""User feedback: praise detection for automatic capture, and star ratings.

Praise detection decides whether a message praises the previous answer, so that the
exchange can be kept as a fine-tuning example. :class:`PraiseDetector` applies these rules:

1. **Normalise.** Lowercase; curly apostrophes become ``'``; a hyphen inside a word becomes
   a space ("well-done"); every other punctuation mark, dash or newline ends a clause;
   whitespace is collapsed. Words are compared without apostrophes, so "thats" matches
   "that's".
2. **Phrase rule.** A clause is praise when, after dropping leading :data:`INTERJECTIONS`
   ("wow", "oh", "haha", ...), it *starts* with a praise phrase and at most two words follow
   it (a vocative such as "timmy", "thanks", "mate"). A phrase may run across a comma or
   emphasis mark, so "good one timmy" matches "Good one, Timmy!". The clause is not praise
   when it ends with "?", or a word after the phrase is a negation or one of
   :data:`TAIL_BLOCKERS` ("that's great *news*", "that was great *if* ...").
3. **Short-affirmative rule.** The whole message has at most ``max_short_words`` words and
   contains an affirmative ("perfect", "very nice", "Great, thanks"). It is not praise when it
   is a question (has "?" or starts with a word like "is", "does", "can") or a tail blocker
   follows the affirmative ("great news", "good to know").
4. **Negation.** A word in :data:`NEGATIONS`, or any word ending in "n't", before the praise
   word in the same clause (for the short rule: anywhere in the message) means not praise:
   "not good", "that's not good", "no, not good".
5. **Idioms.** A clause starting with one of :data:`NOT_PRAISE_IDIOMS` ("good grief",
   "good luck", "nice try", ...), or a short message containing one, is not praise.
6. **Contrast.** Praise followed by "but", "however", "though", ... anywhere later in the
   message is a critique, not praise ("nice one, but make it shorter").
7. Empty or whitespace-only text is not praise.

Phrases and affirmatives come from :class:`minetune.config.PraiseSettings`; the other word
lists are module constants that code may pass to :class:`PraiseDetector` to override.
"""

from __future__ import annotations

import re
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

DEFAULT_PRAISE_PHRASES: tuple[str, ...] = (
    "good one timmy",
    "good one",
    "great response",
    "excellent response",
    "that was great",
    "that was excellent",
    "that was amazing",
    "perfect response",
    "nice one",
    "well done",
    "good job",
    "that's good",
    "that's great",
    "i like that",
    "that's perfect",
)
DEFAULT_AFFIRMATIVES: tuple[str, ...] = ("good", "nice", "perfect", "excellent", "great", "amazing")

NOT_PRAISE_IDIOMS: tuple[str, ...] = (
    "good grief",
    "good lord",
    "good god",
    "good morning",
    "good afternoon",
    "good evening",
    "good night",
    "good luck",
    "good bye",
    "great scott",
    "nice try",
)
INTERJECTIONS: tuple[str, ...] = (
    "oh", "wow", "haha", "hahaha", "ha", "lol", "ok", "okay", "yes", "yeah", "yep",
    "hey", "ah", "omg", "aw", "aww", "ooh", "whoa",
)
NEGATIONS: tuple[str, ...] = (
    "not", "no", "never", "hardly", "nothing", "nope", "cannot",
    # apostrophe-less spellings; any word ending in "n't" is a negation as well
    "isnt", "wasnt", "arent", "werent", "dont", "doesnt", "didnt", "aint", "cant", "couldnt",
    "wouldnt", "shouldnt", "wont", "havent", "hasnt", "hadnt",
)
TAIL_BLOCKERS: tuple[str, ...] = (
    "news", "idea", "ideas", "if", "to", "about", "when", "whether", "because", "but", "though",
)

# Praise followed by one of these in the same message is a critique ("nice one, but ...").
_CONTRASTS = frozenset({"but", "however", "although", "though", "except", "yet"})

# A short message starting with one of these is a question, not praise ("is that good").
_QUESTION_STARTERS = frozenset({
    "is", "are", "was", "were", "am", "do", "does", "did", "can", "could", "would", "should",
    "will", "shall", "may", "might", "isnt", "arent", "wasnt", "dont", "doesnt", "didnt",
})

_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'", "\u00b4": "'", "`": "'"})
_INNER_HYPHEN = re.compile(r"(?<=[^\W_])-(?=[^\W_])")
# Anything but letters, digits, whitespace and apostrophes ends a clause, and so do newlines.
_SEPARATOR = re.compile(r"((?:[^\w\s']|_)+|[\r\n]+)")
_WORD = re.compile(r"[\w']+")
# Separators a phrase may run across ("Good one, Timmy", "That was *great*").
_SOFT = frozenset(',*_~"\u201c\u201d\u00ab\u00bb')


def _key(word: str) -> str:
    return word.replace("'", "")


def _words(text: str) -> list[str]:
    return [w for w in (m.strip("'") for m in _WORD.findall(text)) if w and _key(w)]


def _normalise(text: str) -> str:
    return _INNER_HYPHEN.sub(" ", text.lower().translate(_APOSTROPHES))


class _Clause(NamedTuple):
    keys: tuple[str, ...]  # words without apostrophes
    negated: tuple[bool, ...]  # per word: is it a negation?
    sep: str  # the separator characters that end this clause


class _Entry(NamedTuple):
    text: str  # what detect() returns
    keys: tuple[str, ...]


def _entries(items: Iterable[str]) -> tuple[_Entry, ...]:
    """Normalised, de-duplicated entries, longest first (so "good one timmy" wins over "good one")."""
    seen: dict[tuple[str, ...], _Entry] = {}
    for item in items:
        words = _words(_normalise(item))
        keys = tuple(_key(w) for w in words)
        if keys and keys not in seen:
            seen[keys] = _Entry(" ".join(words), keys)
    return tuple(sorted(seen.values(), key=lambda e: -len(e.keys)))


def _starts_with(keys: Sequence[str], prefix: Sequence[str]) -> bool:
    return len(keys) >= len(prefix) and tuple(keys[: len(prefix)]) == tuple(prefix)


def _find(keys: Sequence[str], seq: Sequence[str]) -> int:
    """Index of the first occurrence of ``seq`` in ``keys``, or -1."""
    n = len(seq)
    for i in range(len(keys) - n + 1):
        if tuple(keys[i : i + n]) == tuple(seq):
            return i
    return -1


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
        self._idioms = tuple(e.keys for e in _entries(idioms))
        self._interjections = frozenset(_key(w) for w in interjections)
        self._negations = frozenset(_key(w) for w in negations)
        self._blockers = frozenset(_key(w) for w in tail_blockers)
        self.max_short_words = max(0, self.settings.max_short_words)

    @property
    def phrases(self) -> tuple[str, ...]:
        """The normalised praise phrases in use, longest first."""
        return tuple(e.text for e in self._phrases)

    @property
    def affirmatives(self) -> tuple[str, ...]:
        """The normalised short affirmatives in use, longest first."""
        return tuple(e.text for e in self._affirmatives)

    def is_praise(self, text: str) -> bool:
        """True when ``text`` praises the previous answer."""
        return self.detect(text) is not None

    def detect(self, text: str) -> str | None:
        """The praise phrase or affirmative found in ``text`` (normalised), or None."""
        if not isinstance(text, str) or not text.strip():
            return None
        clauses = self._clauses(text)
        for i in range(len(clauses)):
            found = self._phrase_at(clauses, i)
            if found is not None:
                # "nice one, but make it shorter" is a critique, not praise.
                later = (k for c in clauses[i:] for k in c.keys)
                return None if any(k in _CONTRASTS for k in later) else found
        return self._short_affirmative(clauses)

    def _clauses(self, text: str) -> list[_Clause]:
        clauses: list[_Clause] = []
        words: list[str] = []
        sep = ""
        for n, piece in enumerate(_SEPARATOR.split(_normalise(text))):
            if n % 2:  # a separator
                sep += piece
                continue
            new = _words(piece)
            if new and words:
                clauses.append(self._clause(words, sep))
                words, sep = [], ""
            if new:
                words = new
                sep = ""
        if words:
            clauses.append(self._clause(words, sep))
        return clauses

    def _clause(self, words: list[str], sep: str) -> _Clause:
        keys = tuple(_key(w) for w in words)
        negated = tuple(w.endswith("n't") or k in self._negations for w, k in zip(words, keys, strict=True))
        return _Clause(keys, negated, sep)

    def _phrase_at(self, clauses: list[_Clause], i: int) -> str | None:
        clause = clauses[i]
        start = 0
        while start < len(clause.keys) and clause.keys[start] in self._interjections:
            start += 1
        if start == len(clause.keys) or any(clause.negated[:start]):
            return None
        for entry in self._phrases:
            end = self._span(clauses, i, start, entry.keys)
            if end is None:
                continue
            last, pos = end
            if any(
                _starts_with(clause.keys[start:], idiom) and not _starts_with(entry.keys, idiom)
                for idiom in self._idioms
            ):
                return None
            tail = clauses[last].keys[pos:]
            if (
                len(tail) > 2
                or "?" in clauses[last].sep
                or any(clauses[last].negated[pos:])
                or any(k in self._blockers for k in tail)
            ):
                return None
            return entry.text
        return None

    @staticmethod
    def _span(clauses: list[_Clause], i: int, pos: int, keys: tuple[str, ...]) -> tuple[int, int] | None:
        """Where ``keys`` ends when matched from clause ``i`` word ``pos``, or None if it does not."""
        for key in keys:
            while pos == len(clauses[i].keys):
                if i + 1 == len(clauses) or not set(clauses[i].sep) <= _SOFT:
                    return None
                i, pos = i + 1, 0
            if clauses[i].keys[pos] != key:
                return None
            pos += 1
        return i, pos

    def _short_affirmative(self, clauses: list[_Clause]) -> str | None:
        keys = [k for c in clauses for k in c.keys]
        negated = [n for c in clauses for n in c.negated]
        if not keys or len(keys) > self.max_short_words or keys[0] in _QUESTION_STARTERS:
            return None
        if any("?" in c.sep for c in clauses):
            return None
        if any(_find(keys, idiom) >= 0 for idiom in self._idioms):
            return None
        for entry in self._affirmatives:
            at = _find(keys, entry.keys)
            if at < 0:
                continue
            after = at + len(entry.keys)
            if any(negated[:at]) or any(negated[after:]) or any(k in self._blockers for k in keys[after:]):
                return None
            return entry.text
        return None


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
