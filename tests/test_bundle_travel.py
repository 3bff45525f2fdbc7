"""A bundle made in one home chats in another, with the source home deleted: the imported versions'
adapter paths and their model specs (``hf:BASE?adapter=DIR``) point at the adapter extracted
into the new home, never at the machine it came from."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from minetune.config import load_settings
from minetune.io.bundle import export_bundle, import_bundle
from minetune.loop import Session
from minetune.store import Store
from minetune.store import adapters as adapters_db
from minetune.train.base import BaseModel


def save_lora_adapter(base_dir: Path, target: Path) -> Path:
    """A real (untrained, random-initialised) PEFT LoRA adapter for the tiny base model."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base_dir)
    lora = get_peft_model(model, LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"]))
    lora.save_pretrained(target)
    return target


@pytest.mark.slow
def test_a_bundle_with_its_adapter_chats_in_another_home_after_the_source_is_deleted(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    source_home, target_home = tmp_path / "source-home", tmp_path / "target-home"
    source = load_settings(home=source_home, reoptimize=False)
    store = Store.open(source)
    store.create_program("p", "You are terse.", f"hf:{tiny_model_dir}")
    adapter_root = source_home / "adapters" / "local" / "p"

    def place(adapter_id: int) -> str:
        return str(save_lora_adapter(tiny_model_dir, adapter_root / str(adapter_id)))

    adapter, version = adapters_db.publish_adapter(
        store, "p", place=place, serve_spec=BaseModel(str(tiny_model_dir)).spec, method="sft",
        base_model=str(tiny_model_dir),
    )
    assert version.model_spec is not None and str(source_home) in version.model_spec
    bundle = export_bundle(store, "p", tmp_path / "p.mtb.zip", with_adapters=True, settings=source)
    store.close()
    shutil.rmtree(source_home)  # the machine it came from is gone

    target = load_settings(home=target_home, reoptimize=False)
    store = Store.open(target)
    report = import_bundle(store, bundle.path, settings=target)
    active = store.active_version("p")
    assert active.adapter is not None and Path(active.adapter).is_relative_to(target_home)
    assert active.model_spec == f"hf:{tiny_model_dir}?adapter={active.adapter}"
    records = [a for a, _ in adapters_db.list_adapters(store, "p")]
    assert [Path(a.path).is_relative_to(target_home) for a in records] == [True]
    assert report.adapter_dirs and all(d.is_dir() for d in report.adapter_dirs.values())
    with Session(store, target, "p") as chat:
        answer = chat.send("hello")
    assert answer.attempt_id is not None
    assert store.attempt(answer.attempt_id).model_spec == active.model_spec
    store.close()
