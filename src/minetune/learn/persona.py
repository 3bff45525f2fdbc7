"""Persona bootstrap: turn sample conversations into stored 5-star examples and a persona prompt.

The user hands over a few transcripts of the persona talking (``.txt``, ``.md`` or ``.pdf``).
:func:`bootstrap` then

1. reads every file (:func:`read_sample`) — all of them are checked before anything is written;
2. finds the (user message, persona reply) pairs in each: a model is asked for them as JSON
   (:func:`extract_pairs`); when there is no model, the call fails, or the reply is not valid,
   the plain ``Name: text`` parser (:func:`parse_transcript`) is used instead;
3. labels each pair greeting / question / statement / joke / story by plain rules (:func:`categorize`);
4. stores each file as a conversation with ``source="bootstrap"``: one turn per pair whose single
   attempt is the persona's real reply, rated 5 stars with feedback kind ``imported`` — so the
   samples become demo candidates like any other well-rated answer;
5. writes a new active program version whose instructions carry a "Persona" section
   (:func:`build_persona_prompt`): a description of the voice (written by the model, or derived
   from simple counts when there is none) and one short example per kind of message.

Nothing is stored when any step before the new version fails: the conversations written in step 4
are deleted again, so the store's row counts are what they were.
"""

from __future__ import annotations

import json
import re
import statistics
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from minetune.errors import MinetuneError, ModelError
from minetune.models.base import ChatModel, Message

if TYPE_CHECKING:
    from minetune.store import Store

CATEGORIES = ("greeting", "question", "statement", "joke", "story")
CATEGORY_LABELS = {
    "greeting": "Greetings",
    "question": "Questions",
    "statement": "Statements",
    "joke": "Jokes",
    "story": "Stories",
}
TEXT_SUFFIXES = (".txt", ".md", ".markdown")
SUPPORTED_SUFFIXES = (*TEXT_SUFFIXES, ".pdf")

PERSONA_HEADING = "## Persona (bootstrapped from samples)"
MAX_PROMPT_CHARS = 2500  # target size of the whole system prompt
MIN_PERSONA_CHARS = 1200  # the persona section may use at least this much, however long the instructions
LLM_CHUNK_CHARS = 12_000  # transcript characters sent to the model in one extraction request
STYLE_SAMPLE_CHARS = 6_000  # sample characters sent to the model when describing the voice
EXAMPLE_CHARS = 160  # longest example message quoted in the prompt

Method = Literal["llm", "parser"]


class SampleError(MinetuneError):
    """A sample file cannot be used for a persona bootstrap."""


@dataclass(frozen=True)
class Pair:
    """One exchange from a sample: what the other person said and the persona's reply."""

    user: str
    assistant: str
    category: str


@dataclass
class ExtractResult:
    """Pairs found in one sample, how they were found (``llm`` or ``parser``) and what went wrong."""

    pairs: list[Pair]
    method: Method
    assistant_name: str | None = None
    warnings: list[str] = field(default_factory=list)


@dataclass
class PersonaPrompt:
    """An enhanced system prompt and whether its style notes came from the model or the template."""

    text: str
    method: Literal["llm", "template"]
    warnings: list[str] = field(default_factory=list)


@dataclass
class BootstrapReport:
    """What :func:`bootstrap` stored."""

    program: str
    version: int
    files: list[str]
    pairs: int
    categories: dict[str, int]
    method: str  # "llm", "parser" or "mixed" (files differed)
    prompt_method: str  # "llm" or "template"
    assistant_name: str | None
    conversation_ids: list[int]
    instructions: str
    warnings: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------------
# Reading files
# ---------------------------------------------------------------------------------------------------


def read_sample(path: str | Path) -> str:
    """The text of a sample file: ``.txt``/``.md`` as UTF-8, ``.pdf`` through pypdf's text extraction.

    Raises :class:`SampleError` naming the file when it is missing, of another type, not UTF-8,
    not a readable PDF, or has no text.
    """
    path = Path(path)
    name = path.name or str(path)
    suffix = path.suffix.lower()
    if not path.exists():
        raise SampleError(f"Sample file {path} does not exist.")
    if not path.is_file():
        raise SampleError(f"Sample {path} is not a file.")
    if suffix not in SUPPORTED_SUFFIXES:
        kind = f"'{path.suffix}' files" if path.suffix else "files without an extension"
        raise SampleError(f"Cannot read {name}: {kind} are not supported; use .txt, .md or .pdf.")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SampleError(f"Cannot read {name}: {exc.strerror or exc}.") from None
    if suffix == ".pdf":
        text = _pdf_text(name, data)
        if not text.strip():
            raise SampleError(
                f"{name} contains no extractable text (a scanned PDF needs OCR first, or paste its text "
                "into a .txt file)."
            )
    else:
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise SampleError(f"{name} is not UTF-8 text; save it as UTF-8 and try again.") from None
        if not text.strip():
            raise SampleError(f"{name} is empty.")
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _pdf_text(name: str, data: bytes) -> str:
    # PDF readers accept the header anywhere in the first 1024 bytes.
    if b"%PDF-" not in data[:1024]:
        raise SampleError(f"{name} is not a PDF file (it has no PDF header); rename it if it is text.")
    try:
        from pypdf import PdfReader
    except ImportError:
        raise SampleError(
            f"Reading {name} needs pypdf: pip install 'minetune[learn]' (or pip install pypdf)."
        ) from None
    try:
        reader = PdfReader(BytesIO(data))
        if reader.is_encrypted and not reader.decrypt(""):
            raise SampleError(f"{name} is password-protected; save an unprotected copy and try again.")
        pages = [page.extract_text() or "" for page in reader.pages]
    except SampleError:
        raise
    except Exception as exc:  # pypdf raises many kinds of errors on damaged files
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SampleError(f"{name} is not a readable PDF ({reason[:120]}).") from None
    return "\n".join(pages)


# ---------------------------------------------------------------------------------------------------
# Parsing "Name: text" transcripts
# ---------------------------------------------------------------------------------------------------

# A speaker line: an optional "[timestamp]", list bullet or ">" quote, optional emphasis around the
# name (and around the colon, as in "**Name:**"), a name of at most four words starting with a letter,
# a colon, then the text (a colon followed by a non-space, as in "10:30" or "http://", is no label).
_NAME_CHAR = r"(?:[^\W_]|[.'’-])"
_SPEAKER_LINE = re.compile(
    rf"""^\s*(?:[-+]\s+|>\s*|\[[^\]]{{1,40}}\]\s*){{0,3}}
        (?P<open>\*\*|__|\*|_)?
        (?P<name>[^\W\d_]{_NAME_CHAR}*(?:\ {_NAME_CHAR}+){{0,3}})
        (?P<close1>\*\*|__|\*|_)?
        :
        (?P<close2>\*\*|__|\*|_)?
        (?:\s+(?P<text>.*)|$)""",
    re.VERBOSE,
)
_HEADING = re.compile(r"^\s*#{1,6}\s")
_RULE = re.compile(r"^\s*(?:-{3,}|\*{3,}|_{3,})\s*$")


def _speaker(line: str) -> tuple[str, str] | None:
    """(name, text) when the line starts with a speaker label, else None."""
    match = _SPEAKER_LINE.match(line)
    if match is None:
        return None
    opened = match["open"] or ""
    closed = (match["close1"] or "") + (match["close2"] or "")
    if opened != closed:  # "**Name:** text", "**Name**: text" and "Name: text" — not "**Name: text"
        return None
    return " ".join(match["name"].split()), (match["text"] or "").strip()


def _key(name: str) -> str:
    return " ".join(name.split()).casefold()


@dataclass(frozen=True)
class _Roles:
    speakers: frozenset[str]  # name keys of the two speakers (one when only the persona speaks)
    persona: str  # name key of the persona
    persona_name: str  # the persona's name as first written


def _roles(lines: list[str], assistant_name: str | None) -> _Roles | None:
    """Who speaks and who is the persona (see :func:`parse_transcript`); None if fewer than two speakers."""
    shown: dict[str, str] = {}  # key -> name as first written, in order of first appearance
    counts: Counter[str] = Counter()
    for line in lines:
        found = _speaker(line)
        if found is not None:
            shown.setdefault(_key(found[0]), found[0])
            counts[_key(found[0])] += 1
    order = list(shown)
    ranked = sorted(counts, key=lambda k: (-counts[k], order.index(k)))
    if assistant_name is not None and assistant_name.strip():
        persona = _key(assistant_name)
        if persona not in counts:
            found_names = ", ".join(shown[k] for k in ranked[:4]) or "none"
            raise SampleError(
                f"No message in the transcript is labelled {assistant_name.strip()!r} "
                f"(speakers found: {found_names})."
            )
        others = [k for k in ranked if k != persona]
        return _Roles(frozenset({persona, *others[:1]}), persona, shown[persona])
    if len(ranked) < 2:
        return None
    persona = max(ranked[:2], key=order.index)  # the one who does not speak first
    return _Roles(frozenset(ranked[:2]), persona, shown[persona])


def _split_lines(text: str) -> list[str]:
    return text.replace("\r\n", "\n").replace("\r", "\n").split("\n")


def parse_transcript(text: str, assistant_name: str | None = None) -> list[Pair]:
    """Pairs from a plain transcript where each message starts with ``Name:``.

    Accepted speaker labels: ``Name: text``, ``**Name:** text``, ``**Name**: text`` (also with
    ``__``, ``*`` or ``_``), optionally after a ``- `` bullet, a ``>`` quote or a ``[timestamp]``.
    A line without a label continues the previous message; blank lines inside a message are kept
    as paragraph breaks. Markdown headings and horizontal rules, and anything before the first
    label, are skipped.

    Speakers are the two names that label the most lines (the earlier one wins a tie); a label with
    any other name (say "Note: ...") is ordinary text of the current message. Names compare
    case-insensitively.

    Which speaker is the persona: ``assistant_name`` when given (a :class:`SampleError` if no line
    has that label); otherwise the speaker who does *not* speak first — transcripts usually start
    with the other person opening the conversation and the persona answering.

    Consecutive messages by the same speaker are merged (joined by a newline). Each message by the
    other person followed by a persona message makes a :class:`Pair`; a persona message with
    nothing before it, and a trailing unanswered message, are dropped. Returns ``[]`` when fewer
    than two speakers are found.
    """
    lines = _split_lines(text)
    roles = _roles(lines, assistant_name)
    if roles is None:
        return []

    # Split into messages: (speaker key, lines).
    messages: list[tuple[str, list[str]]] = []
    for line in lines:
        found = _speaker(line)
        if found is not None and _key(found[0]) in roles.speakers:
            messages.append((_key(found[0]), [found[1]] if found[1] else []))
        elif not messages or _HEADING.match(line) or _RULE.match(line):
            continue
        else:
            messages[-1][1].append(line.rstrip())

    # Merge consecutive messages by the same speaker, then pair them.
    merged: list[tuple[str, str]] = []
    for speaker, body in messages:
        content = _tidy("\n".join(body))
        if not content:
            continue
        if merged and merged[-1][0] == speaker:
            merged[-1] = (speaker, merged[-1][1] + "\n" + content)
        else:
            merged.append((speaker, content))
    return [
        Pair(user=said, assistant=reply, category=categorize(said))
        for (who, said), (next_who, reply) in zip(merged, merged[1:], strict=False)
        if who != roles.persona and next_who == roles.persona
    ]


def _tidy(text: str) -> str:
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def _transcript_persona(text: str, assistant_name: str | None) -> str | None:
    """The persona's name as written in the transcript, by :func:`parse_transcript`'s rules."""
    roles = _roles(_split_lines(text), assistant_name)
    return roles.persona_name if roles else None


# ---------------------------------------------------------------------------------------------------
# Categories
# ---------------------------------------------------------------------------------------------------

_GREETINGS = (
    "hi", "hello", "hey", "heya", "hiya", "howdy", "yo", "sup", "hola", "greetings", "morning",
    "good morning", "good afternoon", "good evening", "good night", "what's up", "whats up", "wassup",
)
_JOKE = re.compile(r"\b(jokes?|joking|funny|puns?|make me laugh|knock[ ,-]*knock|riddles?)\b")
_STORY = re.compile(
    r"\b(story|stories|tale|once upon|tell me about (a|the) time|remember when|what happened)\b"
)
_QUESTION_WORDS = (
    "who", "what", "when", "where", "why", "how", "which", "whose", "whom", "is", "are", "am", "do",
    "does", "did", "can", "could", "would", "will", "should", "shall", "may", "might", "have", "has",
    "was", "were", "what's", "whats", "how's", "where's", "who's", "tell me", "explain", "describe",
)
GREETING_MAX_WORDS = 5


def categorize(user_text: str) -> str:
    """The kind of message the other person sent, by these rules (first match wins):

    ============  ==================================================================================
    greeting      starts with a greeting ("hi", "hey", "good morning", "what's up", ...) and has at
                  most 5 words: "Hi Timmy!", "hey, how are you?"
    joke          mentions a joke: "joke", "funny", "pun", "riddle", "make me laugh", "knock knock"
    story         asks for a story: "story", "tale", "once upon", "tell me about a time",
                  "remember when", "what happened"
    question      contains "?", or starts with a question word or request ("what", "how", "is",
                  "can", "tell me", "explain", ...)
    statement     anything else
    ============  ==================================================================================
    """
    text = " ".join(user_text.replace("’", "'").casefold().split())
    words = re.findall(r"[\w']+", text)
    if not words:
        return "statement"
    opening = " ".join(words[:2])
    if len(words) <= GREETING_MAX_WORDS and (words[0] in _GREETINGS or opening in _GREETINGS):
        return "greeting"
    if _JOKE.search(text):
        return "joke"
    if _STORY.search(text):
        return "story"
    if "?" in text or words[0] in _QUESTION_WORDS or opening in _QUESTION_WORDS:
        return "question"
    return "statement"


# ---------------------------------------------------------------------------------------------------
# LLM-assisted extraction
# ---------------------------------------------------------------------------------------------------

EXTRACT_SYSTEM = (
    "You extract conversation pairs from a transcript so that a chatbot can learn one speaker's voice. "
    "The transcript is a conversation between two people; one of them is the persona (the 'assistant'). "
    "Reply with only a JSON object, no prose: "
    '{"assistant_name": "<the persona\'s name as written>", '
    '"pairs": [{"user": "<what the other person said>", "assistant": "<the persona\'s reply>"}]}. '
    "Copy both messages verbatim without the speaker names; merge consecutive messages by the same "
    "speaker; keep the transcript's order; skip anything that is not part of the conversation."
)


def extract_pairs(
    text: str,
    model: ChatModel | None,
    assistant_name: str | None = None,
    *,
    source: str = "the sample",
) -> ExtractResult:
    """Pairs found in ``text``: asked of ``model`` as JSON, else by :func:`parse_transcript`.

    The model's reply must be a JSON object with a non-empty ``pairs`` list whose items all have
    non-empty string ``user`` and ``assistant`` fields; a pair with a line that is not in the
    transcript (the model made it up) is dropped with a warning. When the model is None, fails
    (:class:`ModelError`) or gives nothing valid, the parser is used (``method="parser"``, with a
    warning saying why). Long transcripts are sent in pieces of about ``LLM_CHUNK_CHARS`` characters.
    ``source`` names the sample in warnings and errors.
    """
    warnings: list[str] = []
    if model is not None:
        try:
            result = _extract_with_model(text, model, assistant_name, source)
        except ModelError as exc:
            warnings.append(f"{source}: the model could not extract pairs ({exc}); {_FALLBACK}")
        except _BadReply as exc:
            warnings.append(f"{source}: the model's reply was not usable ({exc}); {_FALLBACK}")
        else:
            return result
    try:
        pairs = parse_transcript(text, assistant_name)
    except SampleError as exc:
        raise SampleError(f"{source}: {exc}") from None
    if not pairs:
        raise SampleError(
            f"No conversation pairs found in {source}: write it as 'Name: message' lines with two speakers "
            "(for example 'Me: hi' then 'Timmy: hey!')."
        )
    return ExtractResult(pairs, "parser", _transcript_persona(text, assistant_name), warnings)


_FALLBACK = "used the transcript parser."


class _BadReply(Exception):
    """The model answered, but not with usable pairs."""


def _extract_with_model(
    text: str, model: ChatModel, assistant_name: str | None, source: str
) -> ExtractResult:
    pairs: list[Pair] = []
    warnings: list[str] = []
    name = assistant_name.strip() if assistant_name and assistant_name.strip() else None
    given = name is not None
    haystack = _normalise(text)
    dropped = 0
    for chunk in _chunks(text, LLM_CHUNK_CHARS, assistant_name):
        system = EXTRACT_SYSTEM + (f" The persona is the speaker named {name!r}." if name else "")
        messages: list[Message] = [
            {"role": "system", "content": system},
            {"role": "user", "content": "Transcript:\n\n" + chunk},
        ]
        completion = model.complete(messages, temperature=0.0, max_tokens=len(chunk) // 3 + 512)
        reply_name, raw_pairs = _parse_reply(completion.text)
        if not given and reply_name and name is None:
            name = reply_name  # later pieces are told who the persona is
        for user, assistant in raw_pairs:
            if _grounded(assistant, haystack) and _grounded(user, haystack):
                pairs.append(Pair(user=user, assistant=assistant, category=categorize(user)))
            else:
                dropped += 1
    if dropped:
        warnings.append(
            f"{source}: dropped {dropped} pair(s) from the model that do not appear in the transcript."
        )
    if not pairs:
        raise _BadReply("none of its pairs appear in the transcript" if dropped else "it returned no pairs")
    return ExtractResult(pairs, "llm", name, warnings)


def _chunks(text: str, limit: int, assistant_name: str | None = None) -> list[str]:
    """``text`` cut at line ends into pieces of about ``limit`` characters.

    A piece ends only before a message by the other person (so an exchange is never split) when the
    speakers can be told apart by :func:`parse_transcript`'s rules, else after a blank line; a piece
    with no such place is cut at any line end once it is half again over ``limit``.
    """
    lines = text.strip().split("\n")
    try:
        roles = _roles(lines, assistant_name)
    except SampleError:
        roles = None

    def opens_exchange(n: int) -> bool:
        if roles is None:
            return n > 0 and not lines[n - 1].strip()
        found = _speaker(lines[n])
        return found is not None and _key(found[0]) in roles.speakers and _key(found[0]) != roles.persona

    pieces: list[str] = []
    current: list[str] = []
    size = 0
    for n, line in enumerate(lines):
        over = size + len(line) + 1 > limit
        if current and over and (opens_exchange(n) or size + len(line) + 1 > limit * 3 // 2):
            pieces.append("\n".join(current))
            current, size = [], 0
        current.append(line)
        size += len(line) + 1
    if current:
        pieces.append("\n".join(current))
    return pieces


def _json_object(reply: str) -> dict[str, Any]:
    """The JSON object in a model's reply (inside a ``` fence or between the outer braces)."""
    body = reply.strip()
    fenced = re.search(r"```(?:json)?\s*\n?(.*?)```", body, re.DOTALL)
    if fenced:
        body = fenced.group(1).strip()
    start, end = body.find("{"), body.rfind("}")
    if start < 0 or end <= start:
        raise _BadReply("no JSON object in it")
    try:
        data = json.loads(body[start : end + 1])
    except ValueError:
        raise _BadReply("invalid JSON") from None
    if not isinstance(data, dict):
        raise _BadReply("not a JSON object")
    return data


def _parse_reply(reply: str) -> tuple[str | None, list[tuple[str, str]]]:
    """(assistant name, [(user, assistant), ...]) from the model's JSON reply, or :class:`_BadReply`."""
    data = _json_object(reply)
    name = data.get("assistant_name")
    if name is not None and not isinstance(name, str):
        raise _BadReply("assistant_name is not a string")
    items = data.get("pairs")
    if not isinstance(items, list):
        raise _BadReply("no 'pairs' list")
    pairs: list[tuple[str, str]] = []
    for n, item in enumerate(items, 1):
        if not isinstance(item, dict):
            raise _BadReply(f"pair {n} is not an object")
        user, assistant = item.get("user"), item.get("assistant")
        if not (isinstance(user, str) and isinstance(assistant, str) and user.strip() and assistant.strip()):
            raise _BadReply(f"pair {n} lacks a non-empty 'user' or 'assistant' string")
        pairs.append((_tidy(user), _tidy(assistant)))
    return (name.strip() or None) if isinstance(name, str) else None, pairs


def _normalise(text: str) -> str:
    """Lowercase words separated by single spaces: formatting and punctuation do not matter."""
    return " " + " ".join(re.findall(r"\w+", text.replace("’", "'").casefold())) + " "


def _grounded(message: str, haystack: str) -> bool:
    """Whether every line of ``message`` occurs in the (normalised) transcript."""
    lines = [_normalise(line) for line in message.split("\n")]
    return all(line.strip() == "" or line in haystack for line in lines)


# ---------------------------------------------------------------------------------------------------
# The persona prompt
# ---------------------------------------------------------------------------------------------------

STYLE_SYSTEM = (
    "You describe how a person writes so that another model can imitate their voice. You get sample "
    "exchanges; 'Them' is the other person, the persona's replies are labelled with the persona's name. "
    "Reply with only a JSON object: "
    '{"voice": "<2-4 sentences: tone, attitude, vocabulary, length, punctuation, emoji>", '
    '"categories": {"<kind>": "<one sentence on how the persona answers this kind of message>"}} '
    "where <kind> is one of the kinds listed in the request. Describe style, not facts from the samples."
)
MAX_VOICE_CHARS = 600
MAX_NOTE_CHARS = 200

_EMOJI = re.compile(
    "[\U0001f300-\U0001faff\U0001f000-\U0001f2ff\u2600-\u27bf\u2b50\u2b55\u203c\u2049]\ufe0f?"
)
_EMOTICON = re.compile(r"(?<!\w)(?::-?[)(DPp/]|;-?\)|<3|xD|XD)(?!\w)")


def build_persona_prompt(
    base_instructions: str,
    pairs: Sequence[Pair],
    model: ChatModel | None,
    *,
    persona_name: str | None = None,
) -> str:
    """``base_instructions`` plus a "Persona" section learned from ``pairs``.

    See :func:`compose_persona_prompt`, which also says how the section was made.
    """
    return compose_persona_prompt(base_instructions, pairs, model, persona_name=persona_name).text


def compose_persona_prompt(
    base_instructions: str,
    pairs: Sequence[Pair],
    model: ChatModel | None,
    *,
    persona_name: str | None = None,
) -> PersonaPrompt:
    """An enhanced system prompt: the instructions, then a "Persona" section.

    The section has the voice (described by ``model`` from a bounded selection of the samples; from
    counts — reply length, "!" and "?" habits, emoji, lowercase starts, openers — when there is no
    model or its reply is unusable), a note per kind of message and one short example of each.
    An earlier bootstrapped Persona section in ``base_instructions`` is replaced, not repeated. The
    whole prompt is kept under ``MAX_PROMPT_CHARS`` characters where the instructions leave room
    (the section gets at least ``MIN_PERSONA_CHARS``).
    """
    if not pairs:
        raise MinetuneError("A persona prompt needs at least one sample exchange.")
    base = _strip_persona_section(base_instructions)
    name = (persona_name or "").strip() or None
    facts = _style_facts(pairs)
    voice = None
    notes: dict[str, str] = {}
    method: Literal["llm", "template"] = "template"
    warnings: list[str] = []
    if model is not None:
        try:
            voice, notes = _describe_with_model(pairs, model, name)
            method = "llm"
        except ModelError as exc:
            warnings.append(f"The model could not describe the persona's voice ({exc}); used the template.")
        except _BadReply as exc:
            warnings.append(f"The model's voice description was not usable ({exc}); used the template.")
    budget = max(MIN_PERSONA_CHARS, MAX_PROMPT_CHARS - len(base) - 2)
    section = _fit_section(name, len(pairs), voice, facts, notes, pairs, budget)
    text = f"{base}\n\n{section}" if base else section
    return PersonaPrompt(text=text, method=method, warnings=warnings)


def _strip_persona_section(instructions: str) -> str:
    head, _, _ = instructions.partition(PERSONA_HEADING)
    return head.strip()


def _describe_with_model(
    pairs: Sequence[Pair], model: ChatModel, name: str | None
) -> tuple[str, dict[str, str]]:
    who = name or "Persona"
    present = [c for c in CATEGORIES if any(p.category == c for p in pairs)]
    lines: list[str] = []
    size = 0
    for pair in _round_robin(pairs):
        block = f"[{pair.category}]\nThem: {_clip(pair.user, 300)}\n{who}: {_clip(pair.assistant, 400)}\n"
        if size + len(block) > STYLE_SAMPLE_CHARS:
            break
        lines.append(block)
        size += len(block)
    request = (
        f"The persona is {who}. Kinds of message present: {', '.join(present)}.\n\n"
        "Samples:\n\n" + "\n".join(lines)
    )
    messages: list[Message] = [
        {"role": "system", "content": STYLE_SYSTEM},
        {"role": "user", "content": request},
    ]
    data = _json_object(model.complete(messages, temperature=0.2, max_tokens=600).text)
    voice = data.get("voice")
    if not isinstance(voice, str) or not voice.strip():
        raise _BadReply("no 'voice' text")
    raw = data.get("categories") or {}
    if not isinstance(raw, dict):
        raise _BadReply("'categories' is not an object")
    notes = {
        k: _clip(v, MAX_NOTE_CHARS)
        for k, v in raw.items()
        if k in present and isinstance(v, str) and v.strip()
    }
    return _clip(voice, MAX_VOICE_CHARS), notes


def _round_robin(pairs: Sequence[Pair]) -> Iterable[Pair]:
    """Pairs alternating between categories, so a size limit keeps every kind represented."""
    queues = {c: [p for p in pairs if p.category == c] for c in CATEGORIES}
    while any(queues.values()):
        for c in CATEGORIES:
            if queues[c]:
                yield queues[c].pop(0)


def _clip(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _words(text: str) -> int:
    return len(text.split())


def _share(count: int, total: int) -> str:
    return f"{round(100 * count / total)}%"


_LENGTHS = ((6, "very short"), (20, "short"), (60, "medium-length"), (float("inf"), "long"))


def _style_facts(pairs: Sequence[Pair]) -> list[str]:
    """Plain observations about the persona's replies, each one line."""
    replies = [p.assistant for p in pairs]
    n = len(replies)
    lengths = [_words(r) for r in replies]
    median = round(statistics.median(lengths))
    sentences = statistics.median(max(1, len(re.findall(r"[.!?…]+(?:\s|$)", r))) for r in replies)
    size = next(label for limit, label in _LENGTHS if median <= limit)
    facts = [f"Replies are {size}: typically about {median} words ({round(sentences)} sentence(s))."]
    exclaim = sum("!" in r for r in replies)
    asks = sum("?" in r for r in replies)
    habits = []
    if exclaim:
        habits.append(f'uses "!" in {_share(exclaim, n)} of replies')
    if asks:
        habits.append(f"asks something back in {_share(asks, n)}")
    ellipsis = sum("..." in r or "…" in r for r in replies)
    if ellipsis:
        habits.append(f'trails off with "..." in {_share(ellipsis, n)}')
    if habits:
        facts.append("Punctuation: " + "; ".join(habits) + ".")
    else:
        facts.append('Punctuation: plain; no "!" or "?" in replies.')
    marks = [m for r in replies for m in _EMOJI.findall(r) + _EMOTICON.findall(r)]
    with_marks = sum(bool(_EMOJI.search(r) or _EMOTICON.search(r)) for r in replies)
    if with_marks:
        common = " ".join(m for m, _ in Counter(marks).most_common(3))
        facts.append(f"Emoji or emoticons in {_share(with_marks, n)} of replies (most used: {common}).")
    else:
        facts.append("No emoji.")
    lower = sum(r.lstrip()[:1].islower() for r in replies)
    if lower * 2 >= n:
        facts.append(f"Often starts in lowercase ({_share(lower, n)} of replies).")
    caps = sum(bool(re.search(r"\b[A-Z]{3,}\b", r)) for r in replies)
    if caps * 4 >= n and caps >= 2:
        facts.append(f"Shouts words in CAPITALS in {_share(caps, n)} of replies.")
    openers = Counter(
        m.group(0).casefold() for r in replies if (m := re.match(r"[\w']+", r.strip()))
    ).most_common(1)
    if openers and openers[0][1] >= 2 and openers[0][1] * 4 >= n:
        word, count = openers[0]
        facts.append(f'Often opens with "{word}" ({count} of {n} replies).')
    return facts


def _example(pairs: Sequence[Pair]) -> Pair:
    """The pair with the shortest reply of at least two words (else the shortest), for quoting."""
    candidates = [p for p in pairs if _words(p.assistant) >= 2] or list(pairs)
    return min(candidates, key=lambda p: (len(p.assistant) + len(p.user), pairs.index(p)))


def _fit_section(
    name: str | None,
    count: int,
    voice: str | None,
    facts: list[str],
    notes: dict[str, str],
    pairs: Sequence[Pair],
    budget: int,
) -> str:
    """The Persona section, shortened (examples, then notes, then facts) until it fits ``budget``."""
    by_category = {c: [p for p in pairs if p.category == c] for c in CATEGORIES}
    present = [c for c in CATEGORIES if by_category[c]]
    who = name or "the persona"
    label = name or "Persona"
    for example_chars, keep_examples, keep_notes, keep_facts in (
        (EXAMPLE_CHARS, 5, True, len(facts)),
        (100, 5, True, len(facts)),
        (100, 3, True, 3),
        (80, 2, False, 3),
        (60, 0, False, 2),
        (60, 0, False, 1),
    ):
        lines = [
            PERSONA_HEADING,
            f"Speak as {who}. The notes below come from {count} real exchange(s); match their voice, "
            "not their content.",
        ]
        if voice:
            lines += ["", "Voice: " + voice]
        lines += ["", "Style:"] + [f"- {f}" for f in facts[:keep_facts]]
        lines += ["", "By kind of message:"]
        for rank, category in enumerate(present):
            group = by_category[category]
            typical = round(statistics.median(_words(p.assistant) for p in group))
            note = notes.get(category) if keep_notes else None
            note = note or f"replies of about {typical} words."
            line = f"- {CATEGORY_LABELS[category]} ({len(group)}): {note}"
            if rank < keep_examples:
                ex = _example(group)
                line += (
                    f' Example: them: "{_clip(ex.user, example_chars)}" / '
                    f'{label}: "{_clip(ex.assistant, example_chars)}"'
                )
            lines.append(line)
        section = "\n".join(lines)
        if len(section) <= budget:
            return section
    return _clip_lines(section, budget)


def _clip_lines(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    return cut[: cut.rfind("\n")] if "\n" in cut else cut + "…"


# ---------------------------------------------------------------------------------------------------
# Bootstrap
# ---------------------------------------------------------------------------------------------------


def bootstrap(
    store: Store,
    program: str,
    paths: Sequence[str | Path],
    model: ChatModel | None,
    assistant_name: str | None = None,
    *,
    texts: Sequence[tuple[str, str]] = (),
) -> BootstrapReport:
    """Learn a persona from sample conversations: store them as 5-star examples, write a new version.

    Each file becomes a conversation (``source="bootstrap"``, titled after the file) with one turn
    per pair; the turn's single attempt is the persona's real reply (``model_spec`` is
    ``bootstrap:<file name>``, no version) rated 5 stars as ``imported`` feedback. Then a new active
    version gets the persona prompt as its instructions and records the files, the pair count and
    the extraction method in ``sources``.

    Every file is read and every pair found before anything is written; if any step fails before
    the new version exists, the conversations already written are deleted and the error is raised.
    ``assistant_name`` picks the persona speaker (see :func:`parse_transcript` for the default).
    ``texts`` are more samples already read, as (name, transcript) — screenshots transcribed by a
    vision model, website pages (see :mod:`minetune.app.persona_sources`); they follow the files.
    """
    if not paths and not texts:
        raise SampleError("Give at least one sample file (.txt, .md or .pdf).")
    # every file is checked before anything else happens
    samples = [(Path(p).name, read_sample(p)) for p in paths] + [(n, t) for n, t in texts]
    names_in_order = [name for name, _ in samples]
    base = store.active_version(program)  # unknown program → NotFoundError, still nothing written

    results = [extract_pairs(text, model, assistant_name, source=name) for name, text in samples]
    pairs = [p for r in results for p in r.pairs]
    warnings = [w for r in results for w in r.warnings]
    names = Counter(r.assistant_name for r in results if r.assistant_name)
    persona = assistant_name.strip() if assistant_name and assistant_name.strip() else None
    persona = persona or (names.most_common(1)[0][0] if names else None)
    prompt = compose_persona_prompt(base.instructions, pairs, model, persona_name=persona)
    warnings += prompt.warnings
    methods = {r.method for r in results}
    method = methods.pop() if len(methods) == 1 else "mixed"

    conversation_ids: list[int] = []
    try:
        for sample_name, result in zip(names_in_order, results, strict=True):
            conv = store.start_conversation(program, title=f"Bootstrap: {sample_name}", source="bootstrap")
            conversation_ids.append(conv.id)
            for pair in result.pairs:
                turn = store.add_turn(conv.id, pair.user)
                attempt = store.add_attempt(
                    turn.id,
                    version_id=None,
                    model_spec=f"bootstrap:{sample_name}",
                    messages=[{"role": "user", "content": pair.user}],
                    response=pair.assistant,
                    critique_used=None,
                    latency_ms=0.0,
                    prompt_tokens=None,
                    completion_tokens=None,
                )
                store.add_feedback(attempt.id, "imported", 5)
        sources = {
            "bootstrap_files": names_in_order,
            "pairs": len(pairs),
            "method": method,
            "prompt_method": prompt.method,
            "assistant_name": persona,
            "conversation_ids": conversation_ids,
            "files": [
                {"name": n, "pairs": len(r.pairs), "method": r.method}
                for n, r in zip(names_in_order, results, strict=True)
            ],
        }
        version = store.add_version(
            program,
            note=f"bootstrap from {len(samples)} file(s)",
            activate=True,
            instructions=prompt.text,
            sources=sources,
        )
    except BaseException as exc:
        for conversation_id in conversation_ids:
            try:
                store.delete_conversation(conversation_id)
            except Exception as cleanup:  # keep the original error; say what is left behind
                exc.add_note(f"Could not remove bootstrap conversation {conversation_id}: {cleanup}")
        raise

    counts = Counter(p.category for p in pairs)
    return BootstrapReport(
        program=program,
        version=version.number,
        files=names_in_order,
        pairs=len(pairs),
        categories={c: counts.get(c, 0) for c in CATEGORIES},
        method=method,
        prompt_method=prompt.method,
        assistant_name=persona,
        conversation_ids=conversation_ids,
        instructions=prompt.text,
        warnings=warnings,
    )

