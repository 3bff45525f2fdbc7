"""ServerState.model: plain specs are built once; routed specs need their program and follow its
active version."""

from __future__ import annotations

from pathlib import Path

import pytest

from minetune.config import load_settings
from minetune.errors import ModelError
from minetune.server.state import ServerState


def test_routed_specs_are_built_per_program_version(tiny_model_dir: Path) -> None:
    from minetune.train.adapters import RoutedModel

    settings = load_settings()
    state = ServerState.open(settings, auth_required=False)
    try:
        store = state.store("local")
        spec = f"hf:{tiny_model_dir}?route"
        with pytest.raises(ModelError, match="needs the program"):
            state.model(spec)
        routed = state.model(spec, store, "default")
        assert isinstance(routed, RoutedModel)
        assert state.model(spec, store, "default") is routed  # cached while the version is active
        store.add_version("default", note="a new version", activate=True)
        assert state.model(spec, store, "default") is not routed
        plain = state.model(f"hf:{tiny_model_dir}")
        assert not isinstance(plain, RoutedModel) and state.model(f"hf:{tiny_model_dir}") is plain
    finally:
        state.close()
