"""The simulated user: a hidden taste per phase, noisy stars, critiques in natural words, praise.

* **stars**: 5 − 2 × (axes the answer misses, unclear ones included), at least 1; with probability
  ``noise`` (0.15) the given rating is one star off (up or down, kept within 1..5);
* **critique** (when critiquing and the rating is under 5): names up to two missed axes with
  phrases from :data:`styles.CRITIQUES` ("too long, keep it short; also use bullet points please");
  a noisy 4 on an answer that misses nothing gets no critique;
* **praise**: a 5★ answer is, with probability ``praise`` (0.4), not rated but praised in the next
  message ("perfect, thanks!") — minetune's praise detector has to notice it;
* **retries** until 5★ or the retry limit.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from learning import styles

PRAISE = ("perfect, thanks!", "exactly what I needed", "nailed it, thank you", "great, thanks")


@dataclass(frozen=True)
class Taste:
    """A user's hidden taste before and after the change (``work``: the new domain's taste)."""

    name: str
    before: styles.Style
    after: styles.Style
    work: styles.Style


# Each change flips two of the three shared axes.
TASTES = (
    Taste(
        "ana",
        {"length": "short", "format": "bullets", "tone": "casual"},
        {"length": "long", "format": "prose", "tone": "casual"},
        {"length": "short", "format": "prose", "tone": "formal", "code": "python"},
    ),
    Taste(
        "ben",
        {"length": "long", "format": "prose", "tone": "formal"},
        {"length": "short", "format": "prose", "tone": "casual"},
        {"length": "long", "format": "bullets", "tone": "formal", "code": "javascript"},
    ),
    Taste(
        "cai",
        {"length": "short", "format": "prose", "tone": "formal"},
        {"length": "long", "format": "bullets", "tone": "formal"},
        {"length": "short", "format": "bullets", "tone": "casual", "code": "javascript"},
    ),
    Taste(
        "dee",
        {"length": "long", "format": "bullets", "tone": "casual"},
        {"length": "short", "format": "bullets", "tone": "formal"},
        {"length": "long", "format": "prose", "tone": "casual", "code": "python"},
    ),
)


def true_stars(missed: int) -> int:
    return max(1, 5 - 2 * missed)


class SimulatedUser:
    def __init__(self, seed: int, critiques: bool, noise: float = 0.15, praise: float = 0.4) -> None:
        self.rng = random.Random(seed)
        self.critiques = critiques
        self.noise = noise
        self.praise_rate = praise

    def judge(self, answer: str, question: styles.Question, taste: styles.Style) -> tuple[int, str | None]:
        """The stars given and the critique (None when not critiquing or nothing to say)."""
        missed = styles.mismatches(answer, question, taste)
        stars = true_stars(len(missed))
        if self.rng.random() < self.noise:
            stars = min(5, max(1, stars + self.rng.choice((-1, 1))))
        if stars == 5 or not self.critiques or not missed:
            return stars, None
        named = self.rng.sample(missed, min(2, len(missed)))
        return stars, "; also ".join(self.rng.choice(styles.CRITIQUES[(a, taste[a])]) for a in named)

    def praises(self) -> str | None:
        """Praise to send as the next message instead of rating a 5★ answer (or None: rate it)."""
        return self.rng.choice(PRAISE) if self.rng.random() < self.praise_rate else None
