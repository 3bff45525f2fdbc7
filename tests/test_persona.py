"""Persona bootstrap: reading samples, parsing transcripts, LLM extraction with fallback, the persona
prompt, and storing everything (or nothing) on SQLite and PostgreSQL."""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from fakes import FakeOpenAI
from minetune.config import load_settings
from minetune.errors import MinetuneError, NotFoundError, StoreError
from minetune.learn.persona import (
    MAX_PROMPT_CHARS,
    PERSONA_HEADING,
    Pair,
    SampleError,
    bootstrap,
    build_persona_prompt,
    categorize,
    compose_persona_prompt,
    extract_pairs,
    parse_transcript,
    read_sample,
)
from minetune.models import ChatModel, resolve_model
from minetune.store import Store
from minetune.store.schema import Attempt, Conversation, Feedback, Turn

DATA = Path(__file__).parent / "data" / "persona"
TIMMY = DATA / "timmy.txt"
GRANDMA = DATA / "chat.md"

TIMMY_PAIRS = [
    Pair("Hi Timmy!", "yo! what's up 😎", "greeting"),
    Pair("What's the capital of France?", "paris obviously. did u skip geography class?? 😂", "question"),
    Pair(
        "Tell me a joke",
        "why did the scarecrow win an award...\nbecause he was outstanding in his field!",
        "joke",
    ),
    Pair(
        "I finished my homework early today.",
        "WOW look at u go. proud of u fr\nnow go outside lol",
        "statement",
    ),
    Pair(
        "Tell me a story about your dog",
        "ok so one time my dog Biscuit ate a whole birthday cake.\n"
        "Note: the candles too.\n"
        "he was fine. we were not.",
        "story",
    ),
]
GRANDMA_PAIRS = [
    Pair("Good morning, Grandma!", "Good morning, sweetheart. Did you sleep well?", "greeting"),
    Pair(
        "Why is the sky blue?",
        "Oh, my dear, it's the sunlight bouncing off the air.\n"
        "Your grandfather used to say the sky was simply showing off.",
        "question",
    ),
    Pair("I got a new job.", "Congratulations, darling! I always knew you would.", "statement"),
]
PDF_LINES = [
    "Ann: Hello there!",
    "Bob: hey hey :)",
    "Ann: Can you help me move on Sunday?",
    "Bob: sure, bring pizza",
]


def make_pdf(path: Path, lines: list[str]) -> Path:
    """A one-page PDF written with pypdf whose text pypdf extracts back line by line."""
    from pypdf import PdfWriter
    from pypdf.generic import ContentStream, DictionaryObject, NameObject

    writer = PdfWriter()
    page = writer.add_blank_page(612, 792)
    font = DictionaryObject({
        NameObject("/Type"): NameObject("/Font"),
        NameObject("/Subtype"): NameObject("/Type1"),
        NameObject("/BaseFont"): NameObject("/Helvetica"),
        NameObject("/Encoding"): NameObject("/WinAnsiEncoding"),
    })
    page[NameObject("/Resources")] = DictionaryObject(
        {NameObject("/Font"): DictionaryObject({NameObject("/F1"): font})}
    )
    ops = ["BT", "/F1 12 Tf", "72 720 Td"]
    for n, line in enumerate(lines):
        escaped = line.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
        ops += (["0 -16 Td"] if n else []) + [f"({escaped}) Tj"]
    content = ContentStream(None, writer)
    content.set_data("\n".join([*ops, "ET"]).encode("latin-1"))
    page.replace_contents(content)
    buffer = io.BytesIO()
    writer.write(buffer)
    path.write_bytes(buffer.getvalue())
    return path


def fake_model(fake: FakeOpenAI) -> ChatModel:
    return resolve_model(load_settings(), f"openai-compatible:fake@{fake.base_url}")


def system_of(body: dict[str, Any]) -> str:
    return str(body["messages"][0]["content"])


def extraction_json(pairs: list[Pair], name: str | None = "Timmy") -> str:
    return json.dumps(
        {"assistant_name": name, "pairs": [{"user": p.user, "assistant": p.assistant} for p in pairs]}
    )


STYLE_JSON = json.dumps({
    "voice": "Cheeky teenager; lowercase, texting slang, teasing but warm.",
    "categories": {"greeting": "Answers hellos with a quick 'yo'.", "joke": "Loves groan-worthy puns."},
})


def scripted(extract: str | Callable[[dict[str, Any]], str], style: str = STYLE_JSON) -> Callable[..., str]:
    """A responder that answers extraction requests with ``extract`` and voice requests with ``style``."""

    def respond(body: dict[str, Any]) -> str:
        if "extract conversation pairs" in system_of(body):
            return extract(body) if callable(extract) else extract
        return style

    return respond


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    s = Store.open(load_settings(database_url=database_url))
    yield s
    s.close()


# -- reading samples ----------------------------------------------------------------------------------


def test_read_sample_text_markdown_and_pdf(tmp_path: Path) -> None:
    assert read_sample(TIMMY).startswith("Me: Hi Timmy!\nTimmy: yo!")
    assert read_sample(GRANDMA).startswith("# Chat with Grandma Rose")
    crlf = tmp_path / "crlf.txt"
    crlf.write_bytes("\ufeffA: hi\r\nB: yo\r\n".encode())
    assert read_sample(crlf) == "A: hi\nB: yo\n"  # BOM dropped, line ends normalised
    pdf = make_pdf(tmp_path / "sample.pdf", PDF_LINES)
    assert read_sample(pdf).split("\n") == PDF_LINES
    assert parse_transcript(read_sample(pdf)) == [
        Pair("Hello there!", "hey hey :)", "greeting"),
        Pair("Can you help me move on Sunday?", "sure, bring pizza", "question"),
    ]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("fake.pdf", None, "fake.pdf is not a PDF file"),
        ("broken.pdf", b"%PDF-1.4\nnot really a pdf\n%%EOF\n", "broken.pdf is not a readable PDF"),
        ("blank.pdf", "blank", "blank.pdf contains no extractable text"),
        ("empty.txt", None, "empty.txt is empty"),
        ("spaces.md", b"  \n\t\n \n", "spaces.md is empty"),
        ("latin1.txt", "Me: café\n".encode("latin-1"), "latin1.txt is not UTF-8 text"),
        ("notes.docx", b"PK\x03\x04", "'.docx' files are not supported"),
        ("missing.txt", "missing", "missing.txt does not exist"),
    ],
)
def test_read_sample_rejects_bad_files(tmp_path: Path, name: str, content: Any, message: str) -> None:
    path = DATA / name if content is None else tmp_path / name
    if content == "blank":
        make_pdf(path, [])
    elif isinstance(content, bytes):
        path.write_bytes(content)
    with pytest.raises(MinetuneError) as info:
        read_sample(path)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


# -- parsing transcripts ------------------------------------------------------------------------------


def test_parse_plain_transcript_exactly() -> None:
    """Continuation lines, blank lines, merged consecutive lines and a stray "Note:" label."""
    assert parse_transcript(read_sample(TIMMY)) == TIMMY_PAIRS


def test_parse_markdown_transcript_exactly() -> None:
    """"**Name:**" and "**Name**:" labels; the heading and the horizontal rule are skipped."""
    assert parse_transcript(read_sample(GRANDMA)) == GRANDMA_PAIRS


def test_parse_transcript_speakers_and_assistant_name() -> None:
    text = "\n".join(
        ["Timmy: hey", "me: Hi Timmy!", "TIMMY: sup", "- [10:32] Me: What time is it?", "- timmy: 10:32 duh",
         "Me: bye"]
    )
    # Timmy speaks first, so without a name the persona is "Me"; names compare case-insensitively.
    assert parse_transcript(text) == [
        Pair("hey", "Hi Timmy!", "greeting"),
        Pair("sup", "What time is it?", "greeting"),
        Pair("10:32 duh", "bye", "statement"),
    ]
    assert parse_transcript(text, assistant_name="timmy") == [
        Pair("Hi Timmy!", "sup", "greeting"),
        Pair("What time is it?", "10:32 duh", "question"),
    ]
    with pytest.raises(SampleError, match="No message in the transcript is labelled 'Rose'"):
        parse_transcript(text, assistant_name="Rose")
    assert parse_transcript("Timmy: just me talking\nTimmy: still me") == []
    assert parse_transcript("no labels here at all\nhttp://example.com") == []


@pytest.mark.parametrize(
    ("text", "category"),
    [
        ("hi", "greeting"),
        ("Hey Timmy, how are you?", "greeting"),
        ("Good morning!", "greeting"),
        ("what's up", "greeting"),
        ("Hey, what is the capital of France?", "question"),
        ("Tell me a joke", "joke"),
        ("Know any good puns?", "joke"),
        ("Knock knock", "joke"),
        ("Tell me a story about pirates", "story"),
        ("Remember when we went camping", "story"),
        ("What's the time?", "question"),
        ("how do magnets work", "question"),
        ("Explain recursion simply", "question"),
        ("I think it will rain", "statement"),
        ("My cat is called Winston.", "statement"),
        ("", "statement"),
    ],
)
def test_categorize(text: str, category: str) -> None:
    assert categorize(text) == category


# -- LLM-assisted extraction ----------------------------------------------------------------------------


def test_extract_pairs_uses_a_valid_model_reply(fake_llm: FakeOpenAI) -> None:
    transcript = read_sample(TIMMY)
    # The model tidies formatting; every line of each message still occurs in the transcript.
    reply = extraction_json(TIMMY_PAIRS[:2]) + "\n"
    fake_llm.queue(f"Here you go:\n```json\n{reply}```")
    result = extract_pairs(transcript, fake_model(fake_llm))
    assert (result.method, result.assistant_name, result.warnings) == ("llm", "Timmy", [])
    assert result.pairs == TIMMY_PAIRS[:2]
    sent = fake_llm.requests[0]["messages"]
    assert sent[0]["role"] == "system" and "JSON" in sent[0]["content"]
    assert transcript.strip() in sent[1]["content"]


def test_extract_pairs_names_the_persona_for_the_model(fake_llm: FakeOpenAI) -> None:
    fake_llm.queue(extraction_json(TIMMY_PAIRS, name="Timmy"))
    extract_pairs(read_sample(TIMMY), fake_model(fake_llm), assistant_name="Timmy")
    assert "The persona is the speaker named 'Timmy'" in system_of(fake_llm.last)


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        ("Sure! Timmy is the persona and he is funny.", "no JSON object"),
        ('{"assistant_name": "Timmy", "pairs": [{"user": "hi"', "no JSON object"),
        ('{"pairs": [{"user": "hi", "assistant": "yo"} oops]}', "invalid JSON"),
        ('{"assistant_name": "Timmy", "pairs": []}', "it returned no pairs"),
        ('{"assistant_name": "Timmy"}', "no 'pairs' list"),
        ('{"pairs": [{"user": "Hi Timmy!", "assistant": ""}]}', "pair 1 lacks"),
        ('{"pairs": [{"user": "Hi Timmy!", "reply": "yo"}]}', "pair 1 lacks"),
        ('{"pairs": ["Hi Timmy!"]}', "pair 1 is not an object"),
        ('{"assistant_name": 7, "pairs": [{"user": "Hi Timmy!", "assistant": "yo"}]}', "not a string"),
        ('{"pairs": [{"user": "Hi Timmy!", "assistant": "Greetings, human."}]}', "none of its pairs appear"),
    ],
)
def test_extract_pairs_falls_back_to_the_parser(fake_llm: FakeOpenAI, reply: str, reason: str) -> None:
    fake_llm.queue(reply)
    result = extract_pairs(read_sample(TIMMY), fake_model(fake_llm), source="timmy.txt")
    assert result.method == "parser" and result.assistant_name == "Timmy"
    assert result.pairs == TIMMY_PAIRS
    assert len(result.warnings) == 1
    assert result.warnings[0].startswith("timmy.txt: the model's reply was not usable")
    assert reason in result.warnings[0] and "used the transcript parser" in result.warnings[0]


def test_extract_pairs_drops_made_up_pairs_and_survives_model_failure(fake_llm: FakeOpenAI) -> None:
    made_up = Pair("Hi Timmy!", "Salutations, I am a language model.", "greeting")
    fake_llm.queue(extraction_json([TIMMY_PAIRS[0], made_up]))
    result = extract_pairs(read_sample(TIMMY), fake_model(fake_llm), source="timmy.txt")
    assert result.method == "llm" and result.pairs == [TIMMY_PAIRS[0]]
    assert result.warnings == [
        "timmy.txt: dropped 1 pair(s) from the model that do not appear in the transcript."
    ]

    fake_llm.fail_next(500, "overloaded")
    result = extract_pairs(read_sample(TIMMY), fake_model(fake_llm))
    assert result.method == "parser" and result.pairs == TIMMY_PAIRS
    assert "the model could not extract pairs" in result.warnings[0]

    result = extract_pairs(read_sample(GRANDMA), None)
    assert (result.method, result.assistant_name, result.pairs, result.warnings) == (
        "parser", "Rose", GRANDMA_PAIRS, []
    )


def test_extract_pairs_without_any_pair_is_a_clear_error(fake_llm: FakeOpenAI) -> None:
    fake_llm.queue("no idea")
    with pytest.raises(SampleError, match=r"^timmy.txt: No message in the transcript is labelled 'Rose'"):
        extract_pairs(read_sample(TIMMY), None, assistant_name="Rose", source="timmy.txt")
    prose = "Just some prose about my day.\nNothing else."
    with pytest.raises(SampleError, match=r"No conversation pairs found in notes.txt: write it as 'Name: "):
        extract_pairs(prose, fake_model(fake_llm), source="notes.txt")


def test_long_transcripts_go_to_the_model_in_pieces(fake_llm: FakeOpenAI) -> None:
    lines = [f"Me: question number {n}?\nTimmy: answer number {n}!" for n in range(400)]
    transcript = "\n".join(lines)

    def respond(body: dict[str, Any]) -> str:
        chunk = body["messages"][1]["content"]
        found = parse_transcript(chunk, "Timmy")
        return extraction_json(found, name="Timmy")

    fake_llm.responder = respond
    result = extract_pairs(transcript, fake_model(fake_llm))
    assert len(fake_llm.requests) > 1
    assert all(len(r["messages"][1]["content"]) < 18_100 for r in fake_llm.requests)
    assert result.method == "llm" and len(result.pairs) == 400
    assert result.pairs[-1] == Pair("question number 399?", "answer number 399!", "question")


# -- the persona prompt ----------------------------------------------------------------------------------


def test_template_persona_prompt_is_deterministic_and_bounded() -> None:
    prompt = build_persona_prompt("You are Little Timmy.", TIMMY_PAIRS, None, persona_name="Timmy")
    assert prompt == build_persona_prompt("You are Little Timmy.", TIMMY_PAIRS, None, persona_name="Timmy")
    assert prompt.startswith(f"You are Little Timmy.\n\n{PERSONA_HEADING}\nSpeak as Timmy.")
    assert len(prompt) <= MAX_PROMPT_CHARS
    assert "Replies are short: typically about 13 words" in prompt
    assert "Emoji or emoticons in 40% of replies (most used: 😎 😂)" in prompt
    assert "Often starts in lowercase (80% of replies)" in prompt
    for label in ("Greetings (1)", "Questions (1)", "Statements (1)", "Jokes (1)", "Stories (1)"):
        assert label in prompt
    assert 'Example: them: "Hi Timmy!" / Timmy: "yo! what\'s up 😎"' in prompt

    # Re-bootstrapping replaces the earlier section instead of stacking another one.
    again = build_persona_prompt(prompt, GRANDMA_PAIRS, None, persona_name="Rose")
    assert again.count(PERSONA_HEADING) == 1 and again.startswith("You are Little Timmy.\n\n")
    assert "Speak as Rose." in again and "Timmy:" not in again

    many = [Pair(f"question {n} " + "why " * 40, "because " * 60 + str(n), "question") for n in range(50)]
    long_prompt = build_persona_prompt("Be kind.", many + TIMMY_PAIRS, None)
    assert len(long_prompt) <= MAX_PROMPT_CHARS and PERSONA_HEADING in long_prompt
    with pytest.raises(MinetuneError, match="at least one sample"):
        build_persona_prompt("Be kind.", [], None)


def test_persona_prompt_from_the_model(fake_llm: FakeOpenAI) -> None:
    fake_llm.queue(STYLE_JSON)
    model = fake_model(fake_llm)
    result = compose_persona_prompt("You are Little Timmy.", TIMMY_PAIRS, model, persona_name="Timmy")
    assert result.method == "llm" and result.warnings == []
    assert "Voice: Cheeky teenager; lowercase, texting slang, teasing but warm." in result.text
    assert "- Greetings (1): Answers hellos with a quick 'yo'. Example:" in result.text
    assert "- Questions (1): replies of about 8 words. Example:" in result.text  # no note from the model
    assert len(result.text) <= MAX_PROMPT_CHARS
    request = fake_llm.last["messages"][1]["content"]
    assert "The persona is Timmy" in request and "Timmy: yo! what's up 😎" in request

    fake_llm.queue("I'd say he's cheeky.")
    fallback = compose_persona_prompt("You are Little Timmy.", TIMMY_PAIRS, model, persona_name="Timmy")
    assert fallback.method == "template" and "not usable" in fallback.warnings[0]
    template = build_persona_prompt("You are Little Timmy.", TIMMY_PAIRS, None, persona_name="Timmy")
    assert fallback.text == template


# -- bootstrap ------------------------------------------------------------------------------------------


def stored_samples(store: Store, conversation_id: int) -> list[tuple[Any, ...]]:
    with store.db.transaction() as s:
        rows = s.execute(
            select(Turn.user_message, Attempt.response, Attempt.model_spec, Attempt.messages,
                   Feedback.kind, Feedback.stars, Turn.attempts_to_5)
            .join(Attempt, Attempt.turn_id == Turn.id)
            .join(Feedback, Feedback.attempt_id == Attempt.id)
            .where(Turn.conversation_id == conversation_id)
            .order_by(Turn.index)
        ).all()
    return [tuple(r) for r in rows]


def test_bootstrap_end_to_end_with_a_model(store: Store, fake_llm: FakeOpenAI, tmp_path: Path) -> None:
    store.create_program("timmy", "You are Little Timmy.")
    pdf = make_pdf(tmp_path / "more.pdf", PDF_LINES)
    # The model extracts Timmy's file; it garbles the PDF's answer, so the parser takes that one.
    def extract(body: dict[str, Any]) -> str:
        return extraction_json(TIMMY_PAIRS) if "Hi Timmy!" in body["messages"][1]["content"] else "?"

    fake_llm.responder = scripted(extract)
    report = bootstrap(store, "timmy", [TIMMY, pdf], fake_model(fake_llm))

    assert report.version == 2 and report.files == ["timmy.txt", "more.pdf"]
    assert (report.pairs, report.method, report.prompt_method) == (7, "mixed", "llm")
    assert report.categories == {"greeting": 2, "question": 2, "statement": 1, "joke": 1, "story": 1}
    assert report.assistant_name == "Timmy"
    assert len(report.warnings) == 1
    assert report.warnings[0].startswith("more.pdf: the model's reply was not usable")

    active = store.active_version("timmy")
    assert active.number == 2 and active.note == "bootstrap from 2 file(s)"
    assert active.instructions == report.instructions
    assert active.instructions.startswith(f"You are Little Timmy.\n\n{PERSONA_HEADING}\nSpeak as Timmy.")
    assert "Voice: Cheeky teenager" in active.instructions
    assert len(active.instructions) <= MAX_PROMPT_CHARS
    assert active.sources["bootstrap_files"] == ["timmy.txt", "more.pdf"]
    assert (active.sources["pairs"], active.sources["method"]) == (7, "mixed")
    assert active.sources["files"] == [
        {"name": "timmy.txt", "pairs": 5, "method": "llm"},
        {"name": "more.pdf", "pairs": 2, "method": "parser"},
    ]
    assert active.sources["conversation_ids"] == report.conversation_ids

    first, second = report.conversation_ids
    with store.db.transaction() as s:
        convs = s.scalars(select(Conversation).order_by(Conversation.id)).all()
        assert [(c.id, c.source, c.title) for c in convs] == [
            (first, "bootstrap", "Bootstrap: timmy.txt"),
            (second, "bootstrap", "Bootstrap: more.pdf"),
        ]
    assert stored_samples(store, first) == [
        (p.user, p.assistant, "bootstrap:timmy.txt", [{"role": "user", "content": p.user}],
         "imported", 5, 1)
        for p in TIMMY_PAIRS
    ]
    assert [row[:3] for row in stored_samples(store, second)] == [
        ("Hello there!", "hey hey :)", "bootstrap:more.pdf"),
        ("Can you help me move on Sunday?", "sure, bring pizza", "bootstrap:more.pdf"),
    ]
    stats = store.stats("timmy")
    assert (stats["feedback"]["imported"], stats["ratings"]["5"], stats["turns_reaching_5"]) == (7, 7, 7)


def test_bootstrap_without_a_model_uses_parser_and_template(store: Store) -> None:
    before = store.active_version()
    report = bootstrap(store, "default", [GRANDMA], None)
    assert (report.method, report.prompt_method, report.warnings) == ("parser", "template", [])
    assert report.assistant_name == "Rose" and report.version == before.number + 1
    active = store.active_version()
    assert active.instructions.startswith(f"{before.instructions}\n\n{PERSONA_HEADING}\nSpeak as Rose.")
    assert 'Example: them: "I got a new job." / Rose: "Congratulations, darling!' in active.instructions
    assert active.sources["method"] == "parser" and active.sources["pairs"] == 3


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ("fake.pdf", "fake.pdf is not a PDF file"),
        ("empty.txt", "empty.txt is empty"),
        ("missing.md", "missing.md does not exist"),
        ("prose.txt", "No conversation pairs found in prose.txt"),
    ],
)
def test_bootstrap_with_a_bad_file_stores_nothing(
    store: Store, fake_llm: FakeOpenAI, tmp_path: Path, bad: str, message: str
) -> None:
    (tmp_path / "prose.txt").write_text("Dear diary, today was fine.\n")
    path = tmp_path / bad if bad in ("prose.txt", "missing.md") else DATA / bad
    store.create_program("timmy", "You are Little Timmy.")
    counts, active = store.row_counts(), store.active_version("timmy")
    fake_llm.responder = scripted(extraction_json(TIMMY_PAIRS))
    with pytest.raises(MinetuneError, match=message):
        bootstrap(store, "timmy", [TIMMY, path], fake_model(fake_llm))
    assert store.row_counts() == counts
    assert store.active_version("timmy").id == active.id
    # Files are checked before the model is asked anything.
    assert fake_llm.requests == [] or bad == "prose.txt"


def test_bootstrap_removes_what_it_wrote_when_the_version_fails(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.create_program("timmy", "You are Little Timmy.")
    counts, active = store.row_counts(), store.active_version("timmy")

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise StoreError("The database is read-only.")

    monkeypatch.setattr(store, "add_version", refuse)
    with pytest.raises(StoreError, match="read-only"):
        bootstrap(store, "timmy", [TIMMY, GRANDMA], None)
    assert store.row_counts() == counts
    assert store.active_version("timmy").id == active.id


def test_bootstrap_refuses_unknown_programs_and_no_files(store: Store) -> None:
    counts = store.row_counts()
    with pytest.raises(NotFoundError, match="No program named 'ghost'"):
        bootstrap(store, "ghost", [TIMMY], None)
    with pytest.raises(SampleError, match="at least one sample file"):
        bootstrap(store, "default", [], None)
    assert store.row_counts() == counts
