"""The vLLM backend: one base model on a vLLM server, many users' LoRA adapters loaded at runtime.

Spec: ``vllm:<base model>@<http(s)://host:port/v1>[?adapter=<dir>]``. Chat goes through vLLM's
OpenAI-compatible API like :mod:`~minetune.models.openai_compat`; with an adapter, the adapter is
first registered through ``POST /v1/load_lora_adapter`` (``{"lora_name", "lora_path"}``) under a
name derived from its directory, and requests then name it as their ``model``. When the server
has forgotten the adapter (it restarted), it is loaded again and the request retried once.

The server must run with ``--enable-lora`` (and ``--max-lora-rank`` at least the adapter's rank)
and ``VLLM_ALLOW_RUNTIME_LORA_UPDATING=True``; the adapter directory must be readable by the
server at the same path.
"""

from __future__ import annotations

import hashlib
import re
import threading
from pathlib import Path
from typing import Any

import httpx

from minetune.errors import ModelError
from minetune.models.base import UpstreamError
from minetune.models.openai_compat import DEFAULT_MAX_RETRIES, OpenAICompatModel, _server_message

LOAD_PATH = "/load_lora_adapter"
UNLOAD_PATH = "/unload_lora_adapter"
RUNTIME_LORA_HELP = (
    "start vLLM with --enable-lora and the environment variable VLLM_ALLOW_RUNTIME_LORA_UPDATING=True"
)


def v1_url(base_url: str) -> str:
    """``base_url`` ending in ``/v1`` (vLLM serves its OpenAI API and the LoRA endpoints there)."""
    url = base_url.rstrip("/")
    return url if url.endswith("/v1") else url + "/v1"


def lora_name(adapter: str | Path) -> str:
    """A stable name for an adapter directory on a vLLM server shared by many users: its last three
    path parts (``<user>-<program>-<id>`` for minetune's ``adapters/<user>/<program>/<id>``) and a
    digest of the absolute path, so two users' adapters never share a name."""
    path = Path(adapter).expanduser().resolve()
    readable = [re.sub(r"[^A-Za-z0-9_.-]+", "-", part).strip("-") for part in path.parts[-3:]]
    digest = hashlib.sha256(str(path).encode()).hexdigest()[:10]
    return "-".join(p for p in ("minetune", *readable, digest) if p)


class VLLMModel(OpenAICompatModel):
    """A :class:`~minetune.models.base.ChatModel` on a vLLM server, optionally through a LoRA adapter."""

    def __init__(
        self,
        model: str,
        base_url: str,
        *,
        adapter: str | None = None,
        api_key: str | None = None,
        spec: str | None = None,
        temperature: float = 0.7,
        max_tokens: int | None = 1024,
        timeout: float = 120.0,
        max_retries: int = DEFAULT_MAX_RETRIES,
        auth_help: str = "set the key scoped to this vLLM server (see `minetune key`)",
    ) -> None:
        url = v1_url(base_url)
        self.base_model = model
        self.adapter = str(Path(adapter).expanduser().resolve()) if adapter else None
        self.lora_name = lora_name(self.adapter) if self.adapter else None
        default_spec = f"vllm:{model}@{url}" + (f"?adapter={adapter}" if adapter else "")
        super().__init__(
            self.lora_name or model,
            url,
            api_key=api_key,
            spec=spec or default_spec,
            temperature=temperature,
            max_tokens=max_tokens,
            timeout=timeout,
            max_retries=max_retries,
            auth_help=auth_help,
        )
        self._loaded = False
        self._load_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"VLLMModel(spec={self.spec!r}, lora_name={self.lora_name!r})"

    # -- adapters ---------------------------------------------------------------------------------

    def _post(self, path: str, body: dict[str, Any]) -> httpx.Response:
        try:
            return self._http().post(self.base_url + path, json=body, headers=self._headers())
        except httpx.HTTPError as exc:
            raise self._unreachable(exc) from None

    def load_adapter(self, *, force: bool = False) -> bool:
        """Register the adapter with the server (once per process unless ``force``). Returns True
        when this call loaded it, False when it was already loaded (or there is no adapter)."""
        if self.adapter is None or self.lora_name is None:
            return False
        with self._load_lock:
            if self._loaded and not force:
                return False
            response = self._post(LOAD_PATH, {"lora_name": self.lora_name, "lora_path": self.adapter})
            detail = _server_message(response)
            if response.status_code == 200:
                self._loaded = True
                return True
            if response.status_code == 400 and "already" in detail.lower():
                self._loaded = True
                return False
            if _no_route(response.status_code, detail):
                raise ModelError(
                    self._scrub(
                        f"{self.base_url} has no runtime LoRA loading ({LOAD_PATH} answered HTTP "
                        f"{response.status_code}); {RUNTIME_LORA_HELP}"
                    )
                )
            if response.status_code in (401, 403):
                raise ModelError(
                    self._scrub(
                        f"{self.base_url} rejected the API key (HTTP {response.status_code}); "
                        f"{self._auth_help}"
                    )
                )
            raise ModelError(
                self._scrub(
                    f"{self.base_url} could not load the LoRA adapter {self.adapter} (HTTP "
                    f"{response.status_code}): {detail or 'no reason given'} — the directory must be "
                    "readable by the vLLM server at that path, and its rank within --max-lora-rank"
                )
            )

    def unload_adapter(self) -> bool:
        """Remove the adapter from the server. Returns False when the server did not have it."""
        if self.lora_name is None:
            return False
        with self._load_lock:
            response = self._post(UNLOAD_PATH, {"lora_name": self.lora_name})
            self._loaded = False
            if response.status_code == 200:
                return True
            detail = _server_message(response)
            if _no_route(response.status_code, detail):
                raise ModelError(
                    self._scrub(
                        f"{self.base_url} has no runtime LoRA unloading ({UNLOAD_PATH} answered HTTP "
                        f"{response.status_code}); {RUNTIME_LORA_HELP}"
                    )
                )
            if response.status_code in (400, 404):
                return False
            raise ModelError(
                self._scrub(
                    f"{self.base_url} could not unload {self.lora_name} "
                    f"(HTTP {response.status_code}): {detail}"
                )
            )

    # -- requests ---------------------------------------------------------------------------------

    def _create(self, body: dict[str, Any]) -> Any:
        self.load_adapter()
        try:
            return super()._create(body)
        except UpstreamError as exc:
            if self.adapter is None or exc.status != 404:
                raise
        # The server no longer knows the adapter (e.g. it restarted): load it again, retry once.
        self.load_adapter(force=True)
        return super()._create(body)


def _no_route(status: int, detail: str) -> bool:
    """True when the server has no such endpoint (as opposed to refusing this adapter)."""
    return status == 405 or (status == 404 and detail.strip().lower() in ("", "not found", '"not found"'))
