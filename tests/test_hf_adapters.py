"""The hf: backend keeps one copy of a base model and attaches LoRA adapters to it (PEFT's
multi-adapter API); a routed spec (``hf:DIR?route``) answers each message with the domain adapter
the router picks, or the plain base."""

from __future__ import annotations

import shutil
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from minetune.config import load_settings
from minetune.errors import ModelError
from minetune.loop import Session
from minetune.models import parse_spec, resolve_model
from minetune.models.local_hf import LocalHFModel, resident_base
from minetune.models.spec import DEFAULT_ROUTE_SIMILARITY, is_routed
from minetune.store import Store
from minetune.store import adapters as adapters_db
from minetune.store.schema import Adapter
from minetune.train import adapters
from minetune.train.adapters import RoutedModel, routed_model
from minetune.train.base import BaseModel
from test_adapters import WordEmbedder

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")  # peft reads a renamed transformers property

MESSAGES: list[Any] = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "What is the capital of France?"},
]


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """The tiny model runs fastest on one thread on a busy 2-CPU box."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def make_adapter(model_dir: Path, out: Path, seed: int) -> Path:
    """A LoRA adapter with random, non-zero weights (so it visibly changes what the model says)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    base = AutoModelForCausalLM.from_pretrained(str(model_dir))
    config = LoraConfig(
        r=8,
        lora_alpha=64,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
        init_lora_weights=False,
    )
    get_peft_model(base, config).save_pretrained(str(out))
    return out


@pytest.fixture(scope="module")
def two_adapters(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("two-adapters")
    return make_adapter(tiny_model_dir, root / "a", 1), make_adapter(tiny_model_dir, root / "b", 2)


def plain_greedy(model_dir: Path, max_new_tokens: int = 8) -> str:
    """Greedy text from a separately loaded plain transformers model (no minetune, no PEFT)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer: Any = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(model_dir)).eval()
    inputs: Any = tokenizer.apply_chat_template(
        MESSAGES, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
    )
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    with torch.inference_mode():
        ids = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=pad)
    return str(tokenizer.decode(ids[0][inputs["input_ids"].shape[-1] :], skip_special_tokens=True))


def greedy(model: Any) -> str:
    return str(model.complete(MESSAGES, temperature=0, max_tokens=8).text)


def test_adapters_share_one_base_and_switch_instantly(
    tiny_model_dir: Path, two_adapters: tuple[Path, Path], tmp_path: Path
) -> None:
    a_dir, b_dir = two_adapters
    tiny_model_dir = Path(shutil.copytree(tiny_model_dir, tmp_path / "base"))  # a base no test has touched
    settings = load_settings()
    base = resolve_model(settings, f"hf:{tiny_model_dir}")
    plain_model, _ = base.load()  # type: ignore[attr-defined]
    weight_ptrs = {name: p.data_ptr() for name, p in plain_model.named_parameters()}
    a = resolve_model(settings, f"hf:{tiny_model_dir}?adapter={a_dir}")
    b = resolve_model(settings, f"hf:{tiny_model_dir}?adapter={b_dir}")
    assert isinstance(a, LocalHFModel) and isinstance(b, LocalHFModel)

    out_a, out_b, out_base = greedy(a), greedy(b), greedy(base)
    # One resident base: both adapters sit on the same PeftModel, over the same weight tensors.
    resident = resident_base(Path(tiny_model_dir).resolve())
    model_a, _ = a.load()
    model_b, _ = b.load()
    assert model_a is model_b is resident.model
    assert type(model_a).__name__.startswith("Peft")
    assert set(resident.adapters) >= {str(a_dir.resolve()), str(b_dir.resolve())}
    inner = model_a.get_base_model()
    base_weights = {_plain_name(n): p.numel() for n, p in inner.named_parameters() if "lora_" not in n}
    plain = {name: p.numel() for name, p in _plain_model(tiny_model_dir).named_parameters()}
    assert base_weights == plain  # every base weight exactly once, however many adapters
    assert inner is plain_model  # PEFT wrapped the base in place...
    # ...and its weights are the very tensors loaded before any adapter.
    ptrs = {_plain_name(n): p.data_ptr() for n, p in inner.named_parameters() if "lora_" not in n}
    assert ptrs == weight_ptrs
    lora_a = [n for n, _ in inner.named_parameters() if ".lora_A." in n]
    assert {n.split(".lora_A.")[1].split(".")[0] for n in lora_a} >= {
        resident.adapters[str(a_dir.resolve())],
        resident.adapters[str(b_dir.resolve())],
    }

    # Switching changes generation; the base fallback is exactly the plain base model.
    assert out_a != out_b
    assert out_base == plain_greedy(tiny_model_dir)
    assert out_a != out_base and out_b != out_base
    # Switching back and forth gives the same answers again (nothing leaks between adapters).
    assert [greedy(m) for m in (b, base, a, a, base, b)] == [out_b, out_base, out_a, out_a, out_base, out_b]


def test_concurrent_generations_with_different_adapters(
    tiny_model_dir: Path, two_adapters: tuple[Path, Path]
) -> None:
    settings = load_settings()
    specs = [f"hf:{tiny_model_dir}", *(f"hf:{tiny_model_dir}?adapter={d}" for d in two_adapters)]
    models = [resolve_model(settings, spec) for spec in specs]
    expected = [greedy(m) for m in models]
    results: dict[int, str] = {}
    errors: list[BaseException] = []

    def ask(i: int) -> None:
        try:
            results[i] = greedy(models[i % 3])
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(9)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors
    assert [results[i] for i in range(9)] == [expected[i % 3] for i in range(9)]


def test_a_broken_adapter_leaves_the_base_usable(
    tiny_model_dir: Path, two_adapters: tuple[Path, Path], tmp_path: Path
) -> None:
    settings = load_settings()
    base = resolve_model(settings, f"hf:{tiny_model_dir}")
    expected = plain_greedy(tiny_model_dir)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "adapter_config.json").write_text("{not json")
    with pytest.raises(ModelError, match="Could not load the LoRA adapter"):
        greedy(resolve_model(settings, f"hf:{tiny_model_dir}?adapter={broken}"))
    assert greedy(base) == expected
    assert greedy(resolve_model(settings, f"hf:{tiny_model_dir}?adapter={two_adapters[0]}")) != expected


def _plain_name(name: str) -> str:
    """A parameter's name in the plain model (PEFT moves a wrapped layer's weight under base_layer)."""
    return name.replace(".base_layer.", ".")


def _plain_model(model_dir: Path) -> Any:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(model_dir))


# -- routed specs ----------------------------------------------------------------------------------------

SYSTEM = "You are terse."
WORK = ("quarterly sales report", "sales meeting agenda", "report for the board")
HOME = ("recipe for pasta dinner", "pasta sauce recipe", "dinner for kids")


def domain_program(store: Store, model_dir: Path, adapter_dirs: tuple[Path, Path]) -> tuple[Adapter, Adapter]:
    """Program ``p`` on the tiny base with a ``work`` and a ``home`` adapter, each trained (as far as
    the lineage says) on three rated turns of its domain; the adapters' files are the random ones."""
    store.create_program("p", SYSTEM, f"hf:{model_dir}")
    conv = store.start_conversation("p").id
    made = []
    for domain, questions, folder in (("work", WORK, adapter_dirs[0]), ("home", HOME, adapter_dirs[1])):
        attempt_ids = []
        for question in questions:
            turn = store.add_turn(conv, question)
            messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}]
            attempt = store.add_attempt(
                turn.id, model_spec="hf:x", messages=messages, response="ok", latency_ms=1.0
            )
            store.add_feedback(attempt.id, "explicit", 5)
            attempt_ids.append(attempt.id)
        adapter, _ = adapters_db.publish_adapter(
            store,
            "p",
            place=_placed_at(folder),
            serve_spec=BaseModel(str(model_dir)).spec,
            method="sft",
            base_model=str(model_dir),
            domain=domain,
            example_attempt_ids=attempt_ids,
        )
        made.append(adapter)
    return made[0], made[1]


def _placed_at(folder: Path) -> Callable[[int], str]:
    return lambda _adapter_id: str(folder)


def ask(model: Any, text: str) -> str:
    return str(model.complete([{"role": "user", "content": text}], temperature=0, max_tokens=8).text)


def test_a_routed_spec_answers_with_the_closest_domain_adapter_or_the_base(
    tiny_model_dir: Path, two_adapters: tuple[Path, Path]
) -> None:
    settings = load_settings()
    store = Store.open(settings)
    try:
        work, home = domain_program(store, tiny_model_dir, two_adapters)
        spec = f"hf:{tiny_model_dir}?route"
        with pytest.raises(ModelError, match="answered through its program"):
            resolve_model(settings, spec)  # a routed spec needs its program
        routed = routed_model(store, settings, "p", spec, embedder=WordEmbedder())
        assert isinstance(routed, RoutedModel) and routed.spec == spec
        direct = {
            "work": resolve_model(settings, f"hf:{tiny_model_dir}?adapter={work.path}"),
            "home": resolve_model(settings, f"hf:{tiny_model_dir}?adapter={home.path}"),
            None: resolve_model(settings, f"hf:{tiny_model_dir}"),
        }
        for message, domain in (
            ("agenda for the sales meeting", "work"),
            ("pasta for dinner", "home"),
            ("xylophone zebra", None),
        ):
            expected = {d: ask(m, message) for d, m in direct.items()}
            assert len(set(expected.values())) == 3  # the three answers can be told apart
            assert ask(routed, message) == expected[domain], message
            assert routed.last_route is not None and routed.last_route.domain == domain
        # A stricter threshold in the spec sends even a close message to the base model.
        strict = routed_model(
            store, settings, "p", f"hf:{tiny_model_dir}?route=0.99", embedder=WordEmbedder()
        )
        assert ask(strict, "agenda for the sales meeting") == ask(
            direct[None], "agenda for the sales meeting"
        )
        assert strict.last_route is not None and strict.last_route.adapter is None
    finally:
        store.close()


def test_switching_a_program_to_routing_and_chatting_through_it(
    tiny_model_dir: Path, two_adapters: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    from minetune.learn import embed

    monkeypatch.setitem(embed._CACHE, "words", WordEmbedder())  # the process's embedder cache
    settings = load_settings(embedder="words", reoptimize=False, max_tokens=8, temperature=0.0)
    store = Store.open(settings)
    work, _ = domain_program(store, tiny_model_dir, two_adapters)
    version = adapters.switch(store, settings, "p", "route")
    assert version.model_spec == f"hf:{tiny_model_dir}?route" and version.adapter is None
    assert "route between home, work" in version.note
    with Session(store, settings, "p") as chat:
        assert isinstance(chat.model(), RoutedModel)
        answer = chat.send("the quarterly sales report")
        assert answer.model == version.model_spec
        assert chat.model().last_route.domain == "work"  # type: ignore[attr-defined]
        direct = resolve_model(settings, f"hf:{tiny_model_dir}?adapter={work.path}")
        base = resolve_model(settings, f"hf:{tiny_model_dir}")
        expected = direct.complete(answer.messages, temperature=0, max_tokens=8).text
        assert answer.text == expected != base.complete(answer.messages, temperature=0, max_tokens=8).text
    # Switching to one adapter (or the base) ends routing.
    store = Store.open(settings)
    assert (
        adapters.switch(store, settings, "p", "work").model_spec == f"hf:{tiny_model_dir}?adapter={work.path}"
    )
    store.close()


def test_route_specs_parse() -> None:
    assert parse_spec("hf:/m?route").route == DEFAULT_ROUTE_SIMILARITY
    assert parse_spec("hf:/m?route=1").raw == "hf:/m?route"
    assert parse_spec("hf:/m?route=0.5").raw == "hf:/m?route=0.5"
    assert parse_spec("hf:/m?route=0.5").model == "/m"
    vllm = parse_spec("vllm:base@http://127.0.0.1:8000/v1?route")
    assert (vllm.model, vllm.base_url, vllm.route) == (
        "base",
        "http://127.0.0.1:8000/v1",
        DEFAULT_ROUTE_SIMILARITY,
    )
    assert parse_spec("hf:/m").route is None and parse_spec("hf:/m?adapter=/a").route is None
    assert not is_routed("hf:/m?adapter=/a") and is_routed("hf:/m?route")
    for bad, message in (
        ("hf:/m?route=2", "minimum similarity from 0"),
        ("hf:/m?route=high", "minimum similarity from 0"),
        ("hf:/m?adapter=/a?route", "drop \\?adapter="),
    ):
        with pytest.raises(ModelError, match=message):
            parse_spec(bad)
    assert parse_spec("ollama:m?route").model == "m?route"  # only hf: and vllm: route
