"""The style axes answers vary along, the content answers are made of, and how a style is read
back from an answer's text (by the simulated user, and by the stand-in model reading demos).

An answer is an opener (its tone), one fact (short) or four (long), as ``- `` lines (bullets) or
one paragraph (prose), and for a coding question a code block in Python or JavaScript.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

AXES: dict[str, tuple[str, str]] = {
    "length": ("short", "long"),
    "format": ("bullets", "prose"),
    "tone": ("formal", "casual"),
    "code": ("python", "javascript"),
}
Style = dict[str, str]

HOME_TASKS = [
    "cook rice",
    "bake bread",
    "water the tomatoes",
    "pack for a weekend trip",
    "clean a cast iron pan",
    "brew good coffee",
    "plant tulip bulbs",
    "fix a squeaky door",
    "store fresh herbs",
    "plan a picnic",
    "wash a wool sweater",
    "make a budget",
    "paint a small room",
    "grow basil indoors",
    "roast vegetables",
    "train a puppy to sit",
    "hang a picture",
    "sharpen a kitchen knife",
    "make pancakes",
    "start a compost",
    "iron a shirt",
    "choose a ripe melon",
    "keep bread fresh",
    "descale a kettle",
]
WORK_TASKS = [
    "reverse a list",
    "read a file line by line",
    "sort a dictionary by value",
    "parse a JSON string",
    "remove duplicates from a list",
    "format a date",
    "count words in a string",
    "retry a failed request",
    "merge two lists",
    "flatten a nested list",
    "check if a key exists",
    "split a string on commas",
    "find the largest number",
    "round a number",
    "join paths safely",
    "measure elapsed time",
    "validate an email address",
    "write a unit test",
    "convert a string to an integer",
    "sum a column",
    "make a deep copy",
    "handle a missing file",
    "pad a number with zeros",
    "group items by a key",
]
QUESTION_TEMPLATES = {
    "home": ("How do I {task}?", "What's the best way to {task}?", "Any tips to {task}?"),
    "work": ("How do I {task} in code?", "What's the best way to {task}?", "Show me how to {task}."),
}
FACTS = {
    "home": (
        "Get everything ready before you {task}.",
        "Take it one step at a time and do not rush.",
        "Check the result and adjust as you go.",
        "Clean up afterwards so next time is easier.",
    ),
    "work": (
        "Start from a small example of how to {task}.",
        "Use the standard library rather than writing it by hand.",
        "Test it on an empty input and on a large one.",
        "Keep the code in a function with a clear name.",
    ),
}
OPENERS = {"formal": "Certainly.", "casual": "Sure thing!"}
HELD_OUT_TASKS = 4  # the last tasks of each domain are never asked, only probed (retention)


@dataclass(frozen=True)
class Question:
    domain: str
    task: str
    text: str


def questions(domain: str, held_out: bool = False) -> list[Question]:
    """The questions of a domain: asked ones, or the held-out ones used as probes."""
    tasks = HOME_TASKS if domain == "home" else WORK_TASKS
    tasks = tasks[-HELD_OUT_TASKS:] if held_out else tasks[:-HELD_OUT_TASKS]
    return [Question(domain, t, q.format(task=t)) for t in tasks for q in QUESTION_TEMPLATES[domain]]


def find_question(text: str) -> Question | None:
    """The question a message asks, if it is one of the bench's (the stand-in 'knows' the facts)."""
    for domain in ("home", "work"):
        for q in questions(domain) + questions(domain, held_out=True):
            if q.text == text.strip():
                return q
    return None


def axes_of(domain: str) -> list[str]:
    return ["length", "format", "tone", "code"] if domain == "work" else ["length", "format", "tone"]


def _slug(task: str) -> str:
    return "_".join(task.split())


def _camel(task: str) -> str:
    first, *rest = task.split()
    return first + "".join(w.capitalize() for w in rest)


def render(question: Question, style: Style) -> str:
    """The answer to ``question`` in ``style`` (axes missing from ``style`` take the first value)."""
    facts = [f.format(task=question.task) for f in FACTS[question.domain]]
    facts = facts[:1] if style.get("length", "short") == "short" else facts
    opener = OPENERS[style.get("tone", "formal")]
    if style.get("format", "bullets") == "bullets":
        text = opener + "\n" + "\n".join(f"- {f}" for f in facts)
    else:
        text = opener + " " + " ".join(facts)
    if question.domain == "work":
        if style.get("code", "python") == "python":
            text += f"\n```python\nresult = {_slug(question.task)}(data)\n```"
        else:
            text += f"\n```javascript\nconst result = {_camel(question.task)}(data);\n```"
    return text


_FACT_PATTERNS = [
    re.compile("^" + re.escape(f).replace(re.escape("{task}"), r"[a-z ]+") + "$")
    for domain in FACTS
    for f in FACTS[domain]
]


def parse_style(text: str) -> Style:
    """The style an answer shows on each axis it shows clearly (an unclear axis is left out)."""
    style: Style = {}
    body, _, code = text.strip().partition("```")
    if code.startswith("python\n"):
        style["code"] = "python"
    elif code.startswith("javascript\n"):
        style["code"] = "javascript"
    body = body.strip()
    for tone, opener in OPENERS.items():
        if body.startswith(opener):
            style["tone"] = tone
            body = body[len(opener) :].strip()
    lines = [line.strip() for line in body.splitlines() if line.strip()]
    if lines and all(line.startswith("- ") for line in lines):
        style["format"], facts = "bullets", [line[2:] for line in lines]
    elif len(lines) == 1:
        style["format"], facts = "prose", re.findall(r"[^.!?]+[.!?]", lines[0])
    else:
        facts = []
    facts = [f.strip() for f in facts]
    if facts and all(any(p.match(f) for p in _FACT_PATTERNS) for f in facts):
        if len(facts) == 1:
            style["length"] = "short"
        elif len(facts) >= 3:
            style["length"] = "long"
    return style


def mismatches(text: str, question: Question, taste: Style) -> list[str]:
    """The axes (applicable to the question) on which the answer misses the taste, unclear ones included."""
    shown = parse_style(text)
    return [axis for axis in axes_of(question.domain) if shown.get(axis) != taste[axis]]


# -- words: critiques a user writes, the rules a reflection writes, and how both are understood --------

CRITIQUES: dict[tuple[str, str], tuple[str, ...]] = {
    ("length", "short"): (
        "too long, keep it short",
        "way too wordy, just give me the gist",
        "shorter please, one line is enough",
    ),
    ("length", "long"): ("too short, give me more detail", "that's too brief, walk me through all the steps"),
    ("format", "bullets"): ("use bullet points please", "hard to scan, put it in a list"),
    ("format", "prose"): (
        "no bullet points, write it as a paragraph",
        "less listy, just talk me through it in prose",
    ),
    ("tone", "formal"): ("too casual, keep it professional", "please be more formal"),
    ("tone", "casual"): ("too stiff, be casual", "relax, talk to me like a friend"),
    ("code", "python"): ("I use Python, not JavaScript", "show it in Python please"),
    ("code", "javascript"): ("I work in JavaScript, not Python", "show it in JavaScript please"),
}
RULES: dict[tuple[str, str], str] = {
    ("length", "short"): "Keep answers short: one sentence.",
    ("length", "long"): "Give detailed answers that cover every step.",
    ("format", "bullets"): "Format answers as bullet points.",
    ("format", "prose"): "Write in prose paragraphs, not bullet points.",
    ("tone", "formal"): "Use a formal, professional tone.",
    ("tone", "casual"): "Use a casual, friendly tone.",
    ("code", "python"): "Write code examples in Python.",
    ("code", "javascript"): "Write code examples in JavaScript.",
}
# Keyword cues in priority order (the first cue of an axis found in a text decides that axis).
_CUES: list[tuple[str, str, str]] = [
    ("too short", "length", "long"),
    ("too brief", "length", "long"),
    ("more detail", "length", "long"),
    ("detailed", "length", "long"),
    ("every step", "length", "long"),
    ("all the steps", "length", "long"),
    ("longer", "length", "long"),
    ("too long", "length", "short"),
    ("wordy", "length", "short"),
    ("short", "length", "short"),
    ("gist", "length", "short"),
    ("one line", "length", "short"),
    ("concise", "length", "short"),
    ("brief", "length", "short"),
    ("no bullet", "format", "prose"),
    ("not bullet", "format", "prose"),
    ("paragraph", "format", "prose"),
    ("prose", "format", "prose"),
    ("listy", "format", "prose"),
    ("bullet", "format", "bullets"),
    ("list", "format", "bullets"),
    ("too casual", "tone", "formal"),
    ("too stiff", "tone", "casual"),
    ("formal", "tone", "formal"),
    ("professional", "tone", "formal"),
    ("casual", "tone", "casual"),
    ("friend", "tone", "casual"),
    ("relax", "tone", "casual"),
    ("not javascript", "code", "python"),
    ("not python", "code", "javascript"),
    ("javascript", "code", "javascript"),
    ("python", "code", "python"),
]


def understood(text: str) -> list[tuple[str, str]]:
    """The (axis, value) wishes a critique or rule expresses, in the order they appear."""
    lowered = text.casefold()
    found: dict[str, tuple[int, str]] = {}
    for cue, axis, value in _CUES:
        at = lowered.find(cue)
        if at >= 0 and axis not in found:
            found[axis] = (at, value)
    return [(axis, value) for axis, (_, value) in sorted(found.items(), key=lambda kv: kv[1][0])]
