"""Scoring held-out data under a model: answer log-probabilities, losses and preference margins,
before and after training (what the gate of :mod:`minetune.train.gate` decides on)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from minetune.train.base import check_adapter_dir, load_base, quiet
from minetune.train.rows import encode, prompt_messages, target_text


class Scorer:
    """Log-probabilities of answers under a (PEFT) causal LM, for evaluation and the gate.

    ``logps`` gives (sum of answer-token log-probs, answer tokens) per (prompt, answer);
    ``loss`` the token-weighted mean negative log-likelihood; ``margins`` log p(chosen) −
    log p(rejected) per pair (sums over the answer's tokens, as DPO's implicit reward).
    """

    def __init__(self, model: Any, tokenizer: Any, max_length: int = 1024, batch_size: int = 8) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.batch_size = batch_size

    def logps(self, items: Sequence[tuple[Sequence[dict[str, str]], str]]) -> list[tuple[float, int]]:
        import torch

        if not items:
            return []
        encoded = [encode(self.tokenizer, p, c, self.max_length) for p, c in items]
        pad = self.tokenizer.pad_token_id
        pad = pad if pad is not None else (self.tokenizer.eos_token_id or 0)
        device = next(self.model.parameters()).device
        was_training = self.model.training
        self.model.eval()
        out: list[tuple[float, int]] = []
        try:
            with torch.no_grad():
                for start in range(0, len(encoded), self.batch_size):
                    batch = encoded[start : start + self.batch_size]
                    width = max(len(ids) for ids, _ in batch)
                    ids = torch.full((len(batch), width), pad, dtype=torch.long)
                    mask = torch.zeros((len(batch), width), dtype=torch.long)
                    for i, (row, _) in enumerate(batch):
                        ids[i, : len(row)] = torch.tensor(row)
                        mask[i, : len(row)] = 1
                    logits = self.model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
                    for i, (row, begin) in enumerate(batch):
                        targets = torch.tensor(row[begin:], device=device)
                        scores = logits[i, begin - 1 : len(row) - 1].float().log_softmax(-1)
                        picked = scores.gather(-1, targets[:, None]).squeeze(-1)
                        out.append((float(picked.sum()), int(targets.numel())))
        finally:
            if was_training:
                self.model.train()
        return out

    def loss(self, items: Sequence[tuple[Sequence[dict[str, str]], str]]) -> float | None:
        scored = self.logps(items)
        tokens = sum(n for _, n in scored)
        return -sum(s for s, _ in scored) / tokens if tokens else None

    def margins(self, pairs: Sequence[Any]) -> list[float]:
        items: list[tuple[Sequence[dict[str, str]], str]] = []
        for ex in pairs:
            items += [(prompt_messages(ex), ex.chosen), (prompt_messages(ex), ex.rejected)]
        scored = self.logps(items)
        return [scored[i][0] - scored[i + 1][0] for i in range(0, len(scored), 2)]


@dataclass
class EvalSets:
    """Held-out data scored before and after training: preference ``pairs`` (margin), ``targets``
    (answers whose loss should fall) and ``retain`` (older answers whose loss should not rise)."""

    pairs: list[Any] = field(default_factory=list)
    targets: list[Any] = field(default_factory=list)
    retain: list[Any] = field(default_factory=list)

    def empty(self) -> bool:
        return not (self.pairs or self.targets or self.retain)


def answer_texts(examples: Sequence[Any]) -> list[tuple[Sequence[dict[str, str]], str]]:
    out: list[tuple[Sequence[dict[str, str]], str]] = []
    for ex in examples:
        text = target_text(ex)
        if text is not None:
            out.append((prompt_messages(ex), text))
    return out


def score(scorer: Scorer, sets: EvalSets) -> dict[str, Any]:
    """Margin per held-out pair (``margins``, mean ``margin``), the mean token loss per held-out
    answer (``target_losses``) and over all of them (``valid_loss``), and the loss on the retained
    examples (``retain_loss``)."""
    result: dict[str, Any] = {}
    if sets.pairs:
        margins = scorer.margins(sets.pairs)
        result["margins"] = margins
        result["margin"] = sum(margins) / len(margins)
    if sets.targets:
        scored = [(s, n) for s, n in scorer.logps(answer_texts(sets.targets)) if n]
        tokens = sum(n for _, n in scored)
        result["target_losses"] = [-s / n for s, n in scored]
        result["valid_loss"] = -sum(s for s, _ in scored) / tokens if tokens else None
    if sets.retain:
        result["retain_loss"] = scorer.loss(answer_texts(sets.retain))
    return result


def evaluate_adapter(
    base_dir: str | Path,
    adapter: str | Path | None,
    examples: Sequence[Any] = (),
    pairs: Sequence[Any] = (),
    max_length: int = 1024,
) -> dict[str, Any]:
    """Loss on the examples' good answers and the margin on preference pairs, under ``base_dir``
    with ``adapter`` (None: the base model alone)."""
    with quiet():
        model, tokenizer = load_base(Path(base_dir), "fp32")
        if adapter is not None:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, str(check_adapter_dir(adapter)))
        sets = EvalSets(pairs=list(pairs), targets=list(examples))
        result = score(Scorer(model, tokenizer, max_length), sets)
    return {"loss": result.get("valid_loss"), "margin": result.get("margin")}
