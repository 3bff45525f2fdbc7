"""bench/learning_curve.py's prompt path in miniature: the stand-in model behind a real Session
learns the simulated user's taste from critiques (lessons), and the no-learning arm does not."""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))

from learning import styles  # noqa: E402
from learning.arms import Schedule, run_prompt_arm  # noqa: E402
from learning.standin import StandInModel  # noqa: E402
from learning.user import TASTES  # noqa: E402

from minetune import Session  # noqa: E402
from minetune.config import load_settings  # noqa: E402
from minetune.store import Store  # noqa: E402


def test_styles_read_back_and_critiques_are_understood() -> None:
    question = styles.questions("work")[0]
    style = {"length": "long", "format": "prose", "tone": "casual", "code": "javascript"}
    assert styles.parse_style(styles.render(question, style)) == style
    assert styles.understood("too long, keep it short; also I use Python, not JavaScript") == [
        ("length", "short"),
        ("code", "python"),
    ]


@pytest.mark.slow  # 15-30 s on the shared 2-vCPU VM: two arms, and the int8 embedder exported once
def test_critiques_teach_the_stand_in_through_the_session(tmp_path: Path) -> None:
    schedule = Schedule(before=16, after=0)
    taste = TASTES[0]
    taught = run_prompt_arm("prompt (critiques)", taste, 3, schedule, tmp_path / "taught", probes=4)
    frozen = run_prompt_arm("no learning", taste, 3, schedule, tmp_path / "frozen", probes=4)

    def late(run: object) -> float:
        return statistics.fmean(i.first_stars for i in run.interactions[8:])  # type: ignore[attr-defined]

    assert late(taught) > late(frozen)
    assert taught.probes["at end"] > frozen.probes["at end"]
    # The lessons came from the user's critiques and now stand in the rendered prompt.
    settings = load_settings(
        tmp_path / "taught", database_url=f"sqlite:///{tmp_path / 'taught' / 'store.db'}"
    )
    with Session(Store.open(settings), settings, model=StandInModel(0)) as chat:
        rules = [lesson.text for lesson in chat.store.lessons(chat.program)]
        assert rules and set(rules) <= set(styles.RULES.values())
        answer = chat.send(styles.questions("home")[0].text)
        assert "Lessons learned from your user's feedback:" in answer.messages[0]["content"]
        assert chat.store.stats()["captures"] >= 1  # praise in the next message was noticed
