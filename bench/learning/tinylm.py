"""The weight path's model: a small Llama pretrained here on CPU on a synthetic chat corpus.

Every corpus example is a prompt rendered by minetune's own :func:`minetune.program.render_messages`
(so the model sees at serving time what it saw in training) and an answer from
:func:`styles.render`, in a style drawn uniformly at random per axis — the pretrained model has no
taste of its own — except where the prompt asks for one:

* 55% plain: the default instructions and a question;
* 25% with one to three lesson rules (:data:`styles.RULES`) in the system prompt, which the
  answer obeys on those axes;
* 20% retries: an earlier answer, its rating and (two times in three) a critique in the user's
  words (:data:`styles.CRITIQUES`); the answer obeys the critique's axes and differs from the
  earlier answer on at least one axis.

No demos are shown in the corpus (they would triple its length), so the weight arms run with
``k = 0`` demos. The tokenizer is a byte-level BPE trained on the corpus; the model is a
``LlamaForCausalLM`` (hidden 128, 4 layers, 4 heads, about 0.9M
parameters), trained with plain torch on the answer
tokens only (AdamW, cosine decay). The result is cached under ``cache_dir`` keyed by every
setting above, so the pretraining runs once per machine.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from learning import styles
from minetune.models.base import Message
from minetune.program import PriorAttempt, render_messages
from minetune.store.repo import DEFAULT_INSTRUCTIONS

CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'assistant' -%}"
    "{{ '<|im_start|>assistant\n' }}"
    "{% generation %}{{ message['content'] + '<|im_end|>' }}{% endgeneration %}"
    "{{ '\n' }}"
    "{%- else -%}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\n' }}{%- endif -%}"
)
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|pad|>"]
SHAPE = {"hidden_size": 128, "num_hidden_layers": 4, "num_attention_heads": 4, "intermediate_size": 256}
PRETRAIN = {"examples": 16000, "steps": 700, "batch": 24, "lr": 3e-3, "vocab": 1024, "seed": 0}


def _version(lessons: list[str]) -> Any:
    return SimpleNamespace(
        number=1,
        instructions=DEFAULT_INSTRUCTIONS,
        lessons=lessons,
        demo_policy={},
        model_spec=None,
        adapter=None,
    )


def _random_style(rng: random.Random, question: styles.Question, fixed: styles.Style) -> styles.Style:
    return {a: fixed.get(a) or rng.choice(styles.AXES[a]) for a in styles.axes_of(question.domain)}


def corpus_example(rng: random.Random) -> tuple[list[Message], str]:
    """One (prompt messages, answer) pair of the pretraining corpus (see the module docstring)."""
    domain = rng.choice(("home", "work"))
    question = rng.choice(styles.questions(domain) + styles.questions(domain, held_out=True))
    axes = styles.axes_of(domain)
    kind = rng.random()
    if kind < 0.55:
        return render_messages(_version([]), question.text), styles.render(
            question, _random_style(rng, question, {})
        )
    if kind < 0.80:
        ruled = rng.sample(axes, rng.randint(1, 3))
        fixed = {a: rng.choice(styles.AXES[a]) for a in ruled}
        rules = [styles.RULES[(a, v)] for a, v in fixed.items()]
        return render_messages(_version(rules), question.text), styles.render(
            question, _random_style(rng, question, fixed)
        )
    before = _random_style(rng, question, {})
    fixed = {}
    critique = None
    if rng.random() < 2 / 3:
        named = rng.sample(axes, rng.randint(1, 2))
        fixed = {a: next(v for v in styles.AXES[a] if v != before[a]) for a in named}
        critique = "; also ".join(rng.choice(styles.CRITIQUES[(a, v)]) for a, v in fixed.items())
    stars = max(1, 5 - 2 * max(1, len(fixed)))
    prior = PriorAttempt(styles.render(question, before), stars, critique)
    while True:
        style = _random_style(rng, question, fixed)
        if style != before:
            break
    return render_messages(_version([]), question.text, prior_attempts=[prior]), styles.render(
        question, style
    )


def _key() -> str:
    words = [sorted(styles.RULES.items()), sorted(styles.CRITIQUES.items())]
    blob = json.dumps(
        [
            SHAPE,
            PRETRAIN,
            styles.FACTS,
            styles.HOME_TASKS,
            styles.WORK_TASKS,
            words,
            styles.OPENERS,
            CHAT_TEMPLATE,
            2,
        ],
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def pretrained(cache_dir: Path, log: Any = print) -> Path:
    """The pretrained model's folder (``hf:`` loads it), training it first when not cached."""
    out = cache_dir / f"tinylm-{_key()}"
    if (out / "config.json").exists():
        return out
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    rng = random.Random(PRETRAIN["seed"])
    pairs = [corpus_example(rng) for _ in range(PRETRAIN["examples"])]
    raw = Tokenizer(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=PRETRAIN["vocab"],
        special_tokens=SPECIAL,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    raw.train_from_iterator(
        (m["content"] for p, a in pairs[:4000] for m in [*p, {"content": a}]), trainer=trainer
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=raw,
        bos_token="<|endoftext|>",
        eos_token="<|im_end|>",
        pad_token="<|pad|>",
        unk_token=None,
        additional_special_tokens=["<|im_start|>"],
    )
    tokenizer.chat_template = CHAT_TEMPLATE

    rows = []
    for prompt, answer in pairs:
        head = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False)
        head_ids = tokenizer(head, add_special_tokens=False)["input_ids"]
        answer_ids = tokenizer(answer + "<|im_end|>", add_special_tokens=False)["input_ids"]
        rows.append((head_ids, answer_ids))
    longest = max(len(h) + len(a) for h, a in rows)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        max_position_embeddings=max(512, longest + 64),
        num_key_value_heads=SHAPE["num_attention_heads"],
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **SHAPE,
    )
    torch.manual_seed(PRETRAIN["seed"])
    model = LlamaForCausalLM(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=PRETRAIN["lr"], weight_decay=0.01)
    steps = PRETRAIN["steps"]
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, PRETRAIN["lr"], total_steps=steps, pct_start=0.05
    )
    # Batches of similar length (little padding), in shuffled order.
    by_length = sorted(range(len(rows)), key=lambda i: len(rows[i][0]) + len(rows[i][1]))
    size = PRETRAIN["batch"]
    batches = [by_length[i : i + size] for i in range(0, len(by_length), size)]
    rng.shuffle(batches)
    started = time.perf_counter()
    model.train()
    for step in range(steps):
        batch = [rows[i] for i in batches[step % len(batches)]]
        width = max(len(h) + len(a) for h, a in batch)
        ids = torch.full((len(batch), width), tokenizer.pad_token_id)
        labels = torch.full((len(batch), width), -100)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for i, (h, a) in enumerate(batch):
            ids[i, : len(h) + len(a)] = torch.tensor(h + a)
            labels[i, len(h) : len(h) + len(a)] = torch.tensor(a)
            mask[i, : len(h) + len(a)] = 1
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad()
        if step % 100 == 0 or step == steps - 1:
            log(
                f"pretrain step {step}/{steps} loss {loss.item():.3f} ({time.perf_counter() - started:.0f} s)"
            )
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    partial = out.with_name(out.name + ".partial")
    model.save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    partial.rename(out)
    return out
