"""Praise detection (seed 003 phrases, affirmatives, negation, look-alikes, the labelled sets'
precision and recall) and star parsing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from minetune.config import PraiseSettings
from minetune.errors import FeedbackError
from minetune.feedback import (
    DEFAULT_AFFIRMATIVES,
    DEFAULT_PRAISE_PHRASES,
    NOT_PRAISE_IDIOMS,
    PraiseDetector,
    parse_rating_command,
    parse_stars,
)

DETECTOR = PraiseDetector()
DATA = Path(__file__).parent / "data"

# Every phrase of seed 003, in the forms a user would type, with the phrase detect() reports.
SEED_PHRASES = [
    ("good one timmy", "good one"),
    ("Good one, Timmy!", "good one"),
    ("good one, timmy", "good one"),
    ("Great response", "great response"),
    ("Great response.", "great response"),
    ("Excellent response!", "excellent response"),
    ("excellent response, thanks", "excellent response"),
    ("That was great", "that was great"),
    ("That was great!", "that was great"),
    ("That was excellent", "that was excellent"),
    ("that was excellent, timmy.", "that was excellent"),
    ("That was amazing!", "that was amazing"),
    ("Wow, that was amazing!", "that was amazing"),
    ("Perfect response.", "perfect response"),
    ("perfect response mate", "perfect response"),
    ("Nice one!", "nice one"),
    ("nice one timmy", "nice one"),
    ("Well done.", "well done"),
    ("Well done, Timmy!", "well done"),
    ("Good job!", "good job"),
    ("good job buddy", "good job"),
    ("That's good", "that's good"),
    ("That\u2019s good.", "that's good"),
    ("That's great!", "that's great"),
    ("thats great", "that's great"),
    ("I like that", "i like that"),
    ("I like that!", "i like that"),
    ("That's perfect", "that's perfect"),
    ("that's perfect!!", "that's perfect"),
    ("Good one!", "good one"),
    ("haha good one", "good one"),
    ("Oh wow, well done!", "well done"),
    ("That was great, now tell me about Paris", "that was great"),
    ("Nice one! Can you do another?", "nice one"),
    ("Well-done, mate", "well done"),
    ("That was *great*", "that was great"),
    ("GOOD JOB", "good job"),
]


@pytest.mark.parametrize(("text", "phrase"), SEED_PHRASES)
def test_seed_phrases_are_praise(text: str, phrase: str) -> None:
    assert DETECTOR.detect(text) == phrase
    assert DETECTOR.is_praise(text)


def test_defaults_are_generic_and_cover_the_seed() -> None:
    # No persona name in the built-in lists: "good one, Timmy" is "good one" and a vocative.
    assert not [p for p in (*DEFAULT_PRAISE_PHRASES, *DEFAULT_AFFIRMATIVES) if "timmy" in p]
    seed = (
        "good one", "great response", "excellent response", "that was great", "that was excellent",
        "that was amazing", "perfect response", "nice one", "well done", "good job", "that's good",
        "that's great", "i like that", "that's perfect",
    )
    assert [s for s in seed if DETECTOR.detect(s) != s] == []
    assert DEFAULT_AFFIRMATIVES[:6] == ("good", "nice", "perfect", "excellent", "great", "amazing")
    # Each default phrase and affirmative is praise on its own.
    assert [p for p in DEFAULT_PRAISE_PHRASES if DETECTOR.detect(p) is None] == []
    assert [a for a in DEFAULT_AFFIRMATIVES if DETECTOR.detect(a) is None] == []


def _labelled(name: str) -> list[dict[str, object]]:
    with (DATA / name).open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


KINDS = {"seed", "praise", "emoji", "language", "negation", "idiom", "critique", "question", "sarcasm"}


@pytest.mark.parametrize("name", ["praise_labelled.jsonl", "praise_heldout.jsonl"])
def test_precision_and_recall_on_labelled_set(name: str) -> None:
    rows = _labelled(name)
    assert {str(r["kind"]) for r in rows} >= KINDS - {"seed"}
    assert all(isinstance(r["praise"], bool) and isinstance(r["text"], str) for r in rows)
    tp = fp = fn = 0
    errors = []
    for row in rows:
        found = DETECTOR.detect(str(row["text"]))
        tp += bool(row["praise"]) and found is not None
        fp += not row["praise"] and found is not None
        fn += bool(row["praise"]) and found is None
        if (found is not None) != row["praise"]:
            errors.append(f"{row['text']!r} ({row['kind']}): {found!r}")
    precision, recall = tp / (tp + fp), tp / (tp + fn)
    report = f"{name}: precision {precision:.3f}, recall {recall:.3f} ({len(rows)} messages); wrong: {errors}"
    assert precision >= 0.97 and recall >= 0.90, report


def test_labelled_set_size_and_coverage() -> None:
    rows = _labelled("praise_labelled.jsonl")
    assert len(rows) >= 300 and len({r["text"] for r in rows}) == len(rows)
    praise = [r for r in rows if r["praise"]]
    assert 0.3 < len(praise) / len(rows) < 0.7
    assert {str(r["kind"]) for r in rows} >= KINDS
    assert {r.get("lang") for r in rows} >= {"fr", "es", "de"}


# The issue's examples (#13): missed before, or counted when they should not be.
@pytest.mark.parametrize(
    ("text", "praise"),
    [
        ("awesome", True),
        ("love it", True),
        ("exactly what I needed", True),
        ("this is great, thank you", True),
        ("spot on", True),
        ("\U0001f44d", True),
        ("perfect timing", False),
        ("Perfect timing, I was just about to ask", False),
    ],
)
def test_issue_examples(text: str, praise: bool) -> None:
    assert DETECTOR.is_praise(text) is praise


def test_newline_is_a_hard_break() -> None:
    # A phrase does not run across a newline; the short rule still sees "great".
    assert DETECTOR.detect("ok   that's\n\ngreat") == "great"


@pytest.mark.parametrize("word", DEFAULT_AFFIRMATIVES)
@pytest.mark.parametrize(
    "template", ["{w}", "{W}!", "{W}.", "{w}!!!", "very {w}", "{W}, thanks", "{W}, thanks Timmy", "wow {w}!"]
)
def test_short_affirmatives(word: str, template: str) -> None:
    text = template.format(w=word, W=word.capitalize())
    assert DETECTOR.detect(text) == word


@pytest.mark.parametrize(
    "text",
    [
        "good, now do the next one",
        "Perfect, now make it shorter please",
        "great, but shorten it a lot",
        "amazing how you always forget things",
        "excellent, what else do you know",
    ],
)
def test_four_or_more_words_are_not_short_praise(text: str) -> None:
    assert len(text.split()) >= 4
    assert DETECTOR.detect(text) is None


@pytest.mark.parametrize(
    "text",
    [
        "not good",
        "Not perfect at all",
        "that's not good",
        "not great",
        "no, not good",
        "Nope, not nice",
        "never good",
        "hardly excellent",
        "nothing amazing",
        "isn't great",
        "wasn\u2019t good",
        "don't. perfect.",
        "doesnt great",
        "ain't perfect",
        "couldn't nice",
    ],
)
def test_negation_is_not_praise(text: str) -> None:
    assert DETECTOR.detect(text) is None


@pytest.mark.parametrize(
    "text",
    [
        "good grief, the server is down again",
        "Good grief!",
        "good lord",
        "Good god, no",
        "Good morning!",
        "good afternoon timmy",
        "Good evening",
        "good night",
        "Good luck!",
        "good-bye",
        "great scott!",
        "Nice try.",
        "oh good grief",
        "nice try, timmy",
        "Is it a good idea to learn Rust this year?",
        "What's a good name for a cat?",
        "That would be great if you could shorten it",
        "I like that song you mentioned yesterday",
        "That's great news about my job offer",
        "That's great news!",
        "that was great if it were true",
        "Good?",
        "That was great?",
        "Is that good",
        "was it good",
        "Great news!",
        "good to know",
        "nice one, but make it shorter",
        "That was great. However, the second half was wrong.",
        "",
        "   ",
        "\n\t",
        "!!!",
    ],
)
def test_look_alikes_are_not_praise(text: str) -> None:
    assert DETECTOR.detect(text) is None
    assert not DETECTOR.is_praise(text)


def test_idiom_tuple_is_configurable_by_code() -> None:
    assert "perfect timing" in NOT_PRAISE_IDIOMS
    assert PraiseDetector(idioms=()).detect("that's perfect timing") == "that's perfect"
    assert DETECTOR.detect("that's perfect timing") is None
    assert PraiseDetector(idioms=("good job",)).detect("Good job!") is None
    assert DETECTOR.detect("Good job!") == "good job"


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ("that is really very nice", "that is nice"),
        ("You're amazing", "you're amazing"),
        ("what a brilliant explanation!", "what a brilliant explanation"),
        ("I really love this", "i love this"),
        ("I like how you explained it", "i like how"),
        ("this is exactly what I needed, thanks", "this is exactly what i needed"),
        ("the answer was perfect", "the answer was perfect"),
        ("\U0001f525 this is great", "this is great"),  # a full match before a bare one
        ("\U0001f525\U0001f525", "\U0001f525"),
        ("Perfect, thank you \U0001f64f", "perfect"),
        ("Génial !", "genial"),
        ("danke, super", "super"),
        ("¡Perfecto!", "perfecto"),
    ],
)
def test_frames_liking_emoji_and_languages(text: str, found: str) -> None:
    assert DETECTOR.detect(text) == found


@pytest.mark.parametrize(
    "text",
    [
        "perfect \U0001f644",  # a negative emoji
        "\U0001f44d but shorter",
        "\U0001f64f",  # thanks, not praise on its own
        "great answer /s",
        "well done, you broke it",
        "perfect, now nothing works",
        "great job... not",
        "that's good, just make it shorter",
        "good enough",
        "good, I guess",
        "pretty good",
        "almost perfect",
        "nice weather today",
        "the perfect storm",
        "parfait, mais plus court",
        "perfecto, pero más corto",
        "perfekt, aber kürzer bitte",
        "c'est pas génial",
        "nicht gut",
    ],
)
def test_sarcasm_critique_hedges_and_adjectives_are_not_praise(text: str) -> None:
    assert DETECTOR.detect(text) is None


def test_phrase_with_long_tail_is_not_praise() -> None:
    assert DETECTOR.detect("good job timmy thanks") == "good job"
    assert DETECTOR.detect("good job with the new essay") is None


def test_extra_phrases_add_to_defaults() -> None:
    detector = PraiseDetector(PraiseSettings(extra_phrases=("ship it", "Good one, Timmy")))
    assert detector.detect("Ship it, Timmy!") == "ship it"
    assert detector.detect("ship it but shorter") is None
    assert detector.detect("Good one, Timmy!") == "good one timmy"  # a persona phrase, by choice
    assert detector.detect("Great response") == "great response"
    assert DETECTOR.detect("ship it") is None
    assert DETECTOR.detect("Chef\u2019s kiss, Timmy!") == "chef's kiss"


def test_extra_phrase_may_contain_a_negation() -> None:
    detector = PraiseDetector(PraiseSettings(extra_phrases=("not bad",)))
    assert detector.detect("Not bad at all!") == "not bad"
    assert DETECTOR.detect("Not bad at all!") is None


def test_empty_phrases_disable_phrase_rule() -> None:
    detector = PraiseDetector(PraiseSettings(phrases=()))
    assert detector.phrases == ()
    assert detector.detect("well done, now tell me about Paris") is None
    assert detector.detect("Nailed it!") is None
    assert detector.detect("That was great, now tell me about Paris") == "that was great"  # affirmatives
    assert DETECTOR.detect("well done, now tell me about Paris") == "well done"


def test_phrases_replace_defaults() -> None:
    detector = PraiseDetector(PraiseSettings(phrases=("Bravo, maestro",)))
    assert detector.phrases == ("bravo maestro",)
    assert detector.detect("Bravo maestro! what next") == "bravo maestro"
    assert detector.detect("well done, now tell me about Paris") is None


def test_affirmatives_override() -> None:
    detector = PraiseDetector(PraiseSettings(affirmatives=("brilliant", "spot on")))
    assert detector.detect("Brilliant!") == "brilliant"
    assert detector.detect("spot on!") == "spot on"
    assert detector.detect("Perfect!") is None
    assert detector.detect("not brilliant") is None
    assert PraiseDetector(PraiseSettings(affirmatives=())).detect("Perfect!") is None


def test_max_short_words_one() -> None:
    detector = PraiseDetector(PraiseSettings(max_short_words=1))
    assert detector.detect("Perfect!") == "perfect"
    assert detector.detect("very nice") is None
    assert detector.detect("Great, Timmy") is None
    assert detector.detect("Great, thanks") == "great"  # thanks is filler, not a word that counts
    assert detector.detect("Nice one, thanks") == "nice one"  # a noun makes it more than bare
    assert PraiseDetector(PraiseSettings(max_short_words=0)).detect("Perfect!") is None


def test_max_short_words_larger() -> None:
    detector = PraiseDetector(PraiseSettings(max_short_words=5))
    assert detector.detect("good, now do the next") == "good"
    assert DETECTOR.detect("good, now do the next") is None


@pytest.mark.parametrize(
    ("value", "stars"),
    [
        (1, 1),
        (5, 5),
        ("1", 1),
        (" 3 ", 3),
        ("5", 5),
        (4.0, 4),
        ("3/5", 3),
        ("4 / 5", 4),
        ("4*", 4),
        ("2 stars", 2),
        ("1 star", 1),
        ("\u2605\u2605\u2605\u2605", 4),
        ("\u2605\u2605\u2605\u2606\u2606", 3),
        ("\u2b50\ufe0f\u2b50\ufe0f", 2),
    ],
)
def test_parse_stars_valid(value: object, stars: int) -> None:
    assert parse_stars(value) == stars


@pytest.mark.parametrize(
    "value",
    [
        0, 6, -1, "0", "6", "", " ", "x", "four", "4.5", 4.5, "3/10", "6/5", "\u2605" * 6,
        None, True, [4], "1 2",
    ],
)
def test_parse_stars_invalid(value: object) -> None:
    with pytest.raises(FeedbackError, match="Stars must be a whole number from 1 to 5") as info:
        parse_stars(value)
    assert f"got '{value}'" in str(info.value)


@pytest.mark.parametrize(
    "value",
    ["1" * 5000, "4" + " " * 5000, 10**5000, 2**63, "9" * 4301 + "/5"],
    ids=["digits", "padded", "huge-int", "2**63", "digits/5"],
)
def test_parse_stars_refuses_huge_input_quickly(value: object) -> None:
    # A 5,000-digit string must not reach int() (ValueError past 4,300 digits), nor be echoed whole.
    with pytest.raises(FeedbackError, match="Stars must be a whole number from 1 to 5") as info:
        parse_stars(value)
    assert len(str(info.value)) < 120


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ("2 too long", (2, "too long")),
        ("5", (5, None)),
        ("  5  ", (5, None)),
        ("1 wrong name for my cat", (1, "wrong name for my cat")),
        ("3/5 meh", (3, "meh")),
        ("4 stars", (4, None)),
        ("4 stars great answer", (4, "great answer")),
        ("2: too long", (2, "too long")),
        ("2 - too long", (2, "too long")),
        ("4 out of 5", (4, None)),
        ("\u2605\u2605\u2605 ok I guess", (3, "ok I guess")),
    ],
)
def test_parse_rating_command_valid(args: str, expected: tuple[int, str | None]) -> None:
    assert parse_rating_command(args) == expected


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ("", "star rating from 1 to 5"),
        ("   ", "star rating from 1 to 5"),
        ("x", "got 'x'"),
        ("6", "got '6'"),
        ("0 nope", "got '0'"),
        ("too long 2", "got 'too'"),
    ],
)
def test_parse_rating_command_invalid(args: str, message: str) -> None:
    with pytest.raises(FeedbackError, match=message):
        parse_rating_command(args)
