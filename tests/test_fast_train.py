"""The resident fast trainer: the same loss as transformers, it learns, it continues a parent
adapter, and what it saves is a standard PEFT adapter that changes generation."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from minetune.train.fast import FastTrainError, ResidentLoRA, Row, _batches  # noqa: E402


def _rows(count: int, seed: int, vocab: int = 500, length: int = 24, loss_from: int = 0) -> list[Row]:
    rng = random.Random(seed)
    pattern = [rng.randrange(3, vocab) for _ in range(6)]
    # A repeating pattern is learnable; lengths vary so some batches need padding.
    return [Row((pattern * 8)[: length - (i % 3)], loss_from) for i in range(count)]


@pytest.fixture
def trainer(tiny_model_dir: Path) -> ResidentLoRA:
    torch.manual_seed(0)
    return ResidentLoRA.load(tiny_model_dir, device="cpu")


def test_loss_matches_transformers(trainer: ResidentLoRA) -> None:
    rows = _rows(4, seed=1, loss_from=5)
    (batch,) = _batches(rows, 4, trainer.pad_id, trainer.device)
    assert batch.mask is not None  # lengths differ, so this batch is padded
    labels = batch.ids.clone()
    for j, row in enumerate(sorted(rows, key=lambda r: len(r.ids))):
        labels[j, : row.loss_from] = -100
        labels[j, len(row.ids) :] = -100
    with torch.no_grad():
        ours = trainer._loss(batch)
        reference = trainer.model(input_ids=batch.ids, attention_mask=batch.mask, labels=labels).loss
    assert torch.allclose(ours, reference, atol=1e-5), (float(ours), float(reference))


def test_update_learns_continues_and_saves(trainer: ResidentLoRA, tmp_path: Path) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    rows = _rows(16, seed=2)
    first = trainer.update(rows, out_dir=tmp_path / "a", epochs=4, batch_size=4, learning_rate=5e-3)
    assert first.steps == 16 and first.tokens == sum(len(r.ids) for r in rows) * 4
    assert first.losses[-1] < first.losses[0] * 0.8, first.losses
    assert (tmp_path / "a" / "adapter_model.safetensors").is_file()

    # Continuing the parent starts where it ended; a fresh update starts from the beginning again.
    continued = trainer.update(rows, parent=tmp_path / "a", epochs=1, batch_size=4, learning_rate=5e-3)
    fresh = trainer.update(rows, parent=None, epochs=1, batch_size=4, learning_rate=5e-3)
    assert continued.losses[0] < fresh.losses[0] * 0.9

    # The saved directory is a plain PEFT adapter that changes what the model predicts.
    base = AutoModelForCausalLM.from_pretrained(str(trainer_dir(trainer)))
    ids = torch.tensor([list(rows[0].ids)])
    with torch.no_grad():
        plain = base(input_ids=ids).logits
        adapted = PeftModel.from_pretrained(base, str(tmp_path / "a"))(input_ids=ids).logits
    assert not torch.allclose(plain, adapted)


def trainer_dir(trainer: ResidentLoRA) -> str:
    return str(trainer.model.get_base_model().config._name_or_path)


def test_bad_input(trainer: ResidentLoRA, tmp_path: Path) -> None:
    with pytest.raises(FastTrainError, match="no rows"):
        trainer.update([])
    with pytest.raises(FastTrainError, match="No adapter_model.safetensors"):
        trainer.update(_rows(2, seed=3), parent=tmp_path)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "adapter_model.safetensors").write_bytes(b"not a tensor file")
    with pytest.raises(FastTrainError, match="unreadable"):
        trainer.update(_rows(2, seed=3), parent=tmp_path / "bad")
    with pytest.raises(FastTrainError, match="Could not load the base model"):
        ResidentLoRA.load(tmp_path)
    trainer.update(_rows(2, seed=3), out_dir=tmp_path / "rank16", batch_size=2)
    other_rank = ResidentLoRA.load(trainer_dir(trainer), device="cpu", rank=4)
    with pytest.raises(FastTrainError, match="does not fit this model"):
        other_rank.update(_rows(2, seed=3), parent=tmp_path / "rank16")


def test_fit_uses_the_resident_engine(tiny_model_dir: Path, tmp_path: Path) -> None:
    """``engines.fit`` with ``engine="resident"``: the same FitResult contract as the TRL path."""
    import threading

    from minetune.train.config import TrainConfig, TrainingError
    from minetune.train.datasets import SFTExample
    from minetune.train.engines import fit
    from minetune.train.scoring import EvalSets

    examples = [
        SFTExample(
            [{"role": "user", "content": f"say the word {i}"}],
            "banana banana banana",
            turn_id=i,
            attempt_ids=(i,),
            stars=5,
            praised=False,
        )
        for i in range(8)
    ]
    config = TrainConfig(engine="resident", epochs=3, batch_size=4, learning_rate=5e-3, dropout=0.0)
    phases: list[str] = []
    result = fit(
        tiny_model_dir,
        "sft",
        examples,
        config,
        tmp_path / "run",
        eval_sets=EvalSets(targets=examples[:2]),
        on_progress=lambda p: phases.append(p.phase),
    )
    assert result.adapter_dir == tmp_path / "run" / "adapter"
    assert (result.adapter_dir / "adapter_config.json").is_file()
    assert result.steps == result.total_steps == 6 and not result.cancelled
    assert result.after["valid_loss"] < result.before["valid_loss"]
    assert phases[0] == "loading" and "training" in phases and phases[-1] == "done"
    assert result.log["engine"] == "resident"

    # Continuing the saved adapter starts from its loss, not the base model's.
    again = fit(
        tiny_model_dir,
        "sft",
        examples,
        config,
        tmp_path / "run2",
        parent_adapter=result.adapter_dir,
        eval_sets=EvalSets(targets=examples[:2]),
    )
    assert again.before["valid_loss"] == pytest.approx(result.after["valid_loss"], rel=1e-4)

    cancel = threading.Event()
    cancel.set()
    stopped = fit(tiny_model_dir, "sft", examples, config, tmp_path / "run3", cancel=cancel)
    assert stopped.cancelled and stopped.adapter_dir is None and stopped.steps == 1

    with pytest.raises(TrainingError, match="resident engine does not support method DPO"):
        fit(tiny_model_dir, "dpo", examples, config, tmp_path / "run4")
