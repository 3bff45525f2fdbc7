"""The local Hugging Face backend: transformers causal LMs, optionally with a LoRA adapter.

torch, transformers, peft and huggingface_hub are imported inside the functions that need them,
so importing :mod:`minetune.models` stays cheap.

Each base model is loaded once per process (:class:`ResidentBase`). LoRA adapters are attached to
it with PEFT's multi-adapter API (``load_adapter`` under a name of their own), so every adapter of
a base shares one copy of the base weights, and switching between adapters — or back to the
plain base, through ``disable_adapter()`` — is a flag change, not a load. Generations that need
different adapters take turns; generations with the same adapter run side by side.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Generator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from minetune.errors import ModelError
from minetune.models.base import Completion, CompletionStream, Message

# model dir -> its resident base (with its attached adapters); loads are serialised by _LOAD_LOCK.
_BASES: dict[str, ResidentBase] = {}
_LOAD_LOCK = threading.Lock()
_UNKNOWN = "\0unknown"  # ResidentBase._serving before the first generation and after an attach

_HUB_IGNORE = ["*.msgpack", "*.h5", "*.ot", "*.gguf", "*.onnx", "original/*", "*.pth"]


def _looks_local(name: str) -> bool:
    return name.startswith(("./", "../", "/", "~", ".\\", "..\\")) or name in (".", "..")


def resolve_model_dir(name: str) -> Path:
    """The local directory for ``name``: an existing directory, or a hub id downloaded (or found cached)."""
    path = Path(name).expanduser()
    if path.is_dir():
        return path.resolve()
    if _looks_local(name) or path.exists():
        raise ModelError(f"hf:{name}: no such directory — give the folder that holds config.json and the "
                         "weights (for example hf:./models/my-model)")
    return _download(name)


def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def _download(repo_id: str) -> Path:
    """Fetch a hub model (or find it in the HF cache). Reads HF_* variables now, not at library import."""
    try:
        from huggingface_hub import snapshot_download
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ModelError("hf: models need the Hugging Face extras; run pip install 'minetune[hf]'") from exc
    offline = _env_true("HF_HUB_OFFLINE") or _env_true("TRANSFORMERS_OFFLINE")
    try:
        folder = snapshot_download(
            repo_id,
            ignore_patterns=_HUB_IGNORE,
            local_files_only=offline,
            endpoint=os.environ.get("HF_ENDPOINT") or None,
            cache_dir=os.environ.get("HF_HUB_CACHE") or None,
        )
    except Exception as exc:  # offline mode, no such repo, gated, network down, invalid id, ...
        if offline:
            reason = "HF_HUB_OFFLINE is set and it is not in the local Hugging Face cache"
        elif type(exc).__name__ in ("RepositoryNotFoundError", "GatedRepoError", "HFValidationError"):
            reason = "no such model on the Hub, or it is private or gated (run `hf auth login`)"
        else:
            reason = f"{type(exc).__name__}: {' '.join(str(exc).split())[:160]}"
        raise ModelError(
            f"Could not download the model {repo_id!r} from the Hugging Face Hub ({reason}). "
            f"On a connected machine run `hf download {repo_id} --local-dir DIR`, copy DIR here and use "
            "hf:DIR — or, if this machine is online, unset HF_HUB_OFFLINE and check the model id"
        ) from None
    return Path(folder)


def _pick_device_and_dtype() -> tuple[str, Any]:
    import torch

    if torch.cuda.is_available():
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return "cuda", dtype
    return "cpu", torch.float32


class ResidentBase:
    """One loaded base model, its tokenizer and the LoRA adapters attached to it.

    ``model`` is the transformers model until the first adapter is attached, then the
    ``PeftModel`` that wraps it (the base weights are the same tensors either way). Use
    :meth:`serving` around every forward pass: it switches the model to an adapter (or to the
    base) and keeps it there until every generation that asked for the same thing is done.
    """

    def __init__(self, model_dir: Path, model: Any, tokenizer: Any, device: str) -> None:
        self.model_dir = model_dir
        self.model = model
        self.tokenizer = tokenizer
        self.device = device
        self.adapters: dict[str, str] = {}  # adapter dir -> PEFT adapter name
        self._cond = threading.Condition()
        self._users = 0
        self._serving: str | None = _UNKNOWN  # the adapter name in effect; None is the plain base
        self._base_context: Any = None  # an entered disable_adapter() while the base is served

    @property
    def is_peft(self) -> bool:
        return bool(self.adapters)

    def attach(self, adapter_dir: Path) -> str:
        """Load the adapter in ``adapter_dir`` onto this base once; returns its adapter name."""
        key = str(adapter_dir)
        with self._cond:
            while self._users and key not in self.adapters:  # adding layers must not race a forward pass
                self._cond.wait()
            if key in self.adapters:
                return self.adapters[key]
            try:
                from peft import PeftModel
            except ImportError as exc:  # pragma: no cover - depends on the install
                raise ModelError("LoRA adapters need peft; run pip install 'minetune[hf]'") from exc
            name = f"adapter{len(self.adapters) + 1}"  # PEFT names become module keys: no dots
            self._leave_base()
            self._serving = _UNKNOWN
            try:
                if self.is_peft:
                    self.model.load_adapter(str(adapter_dir), adapter_name=name)
                else:
                    self.model = PeftModel.from_pretrained(self.model, str(adapter_dir), adapter_name=name)
            except Exception as exc:  # bad config, corrupt weights, wrong shapes for this base
                _forget_base(self)  # the layers may be half attached: the next request loads afresh
                raise ModelError(f"Could not load the LoRA adapter {adapter_dir}: "
                                 f"{' '.join(str(exc).split())[:300]}") from None
            self.model.to(self.device)
            self.model.eval()
            self.adapters[key] = name
            return name

    @contextmanager
    def serving(self, adapter: str | None) -> Iterator[Any]:
        """The model switched to ``adapter`` (an attached adapter's name; None: the plain base)
        for the length of the block."""
        with self._cond:
            while self._users and self._serving != adapter:
                self._cond.wait()
            if self._serving != adapter:
                self._switch(adapter)
            self._users += 1
        try:
            yield self.model
        finally:
            with self._cond:
                self._users -= 1
                self._cond.notify_all()

    def _switch(self, adapter: str | None) -> None:
        if self.is_peft:
            if adapter is None:
                if self._base_context is None:
                    context = self.model.disable_adapter()
                    context.__enter__()
                    self._base_context = context
            else:
                self._leave_base()
                self.model.set_adapter(adapter, inference_mode=True)
        elif adapter is not None:  # pragma: no cover - names only come from attach()
            raise ModelError(f"No adapter {adapter!r} is attached to {self.model_dir}.")
        self._serving = adapter

    def _leave_base(self) -> None:
        if self._base_context is not None:
            context, self._base_context = self._base_context, None
            context.__exit__(None, None, None)


def _forget_base(base: ResidentBase) -> None:
    if _BASES.get(str(base.model_dir)) is base:
        del _BASES[str(base.model_dir)]


def resident_base(model_dir: Path) -> ResidentBase:
    """The process's resident copy of the base model in ``model_dir``, loaded on first use."""
    key = str(model_dir)
    cached = _BASES.get(key)
    if cached is not None:
        return cached
    with _LOAD_LOCK:
        cached = _BASES.get(key)
        if cached is not None:
            return cached
        try:
            from transformers import AutoModelForCausalLM, AutoTokenizer
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise ModelError("hf: models need transformers; run pip install 'minetune[hf]'") from exc
        device, dtype = _pick_device_and_dtype()
        try:
            tokenizer: Any = AutoTokenizer.from_pretrained(str(model_dir))
            model: Any = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=dtype)
        except (OSError, ValueError) as exc:
            raise ModelError(f"Could not load a causal language model from {model_dir}: "
                             f"{' '.join(str(exc).split())[:300]}") from None
        model.to(device)
        model.eval()
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        base = _BASES[key] = ResidentBase(model_dir, model, tokenizer, device)
        return base


def load_model(model_dir: Path, adapter: Path | None = None) -> tuple[Any, Any]:
    """The resident model (a ``PeftModel`` once any adapter is attached) and tokenizer of
    ``model_dir``, with ``adapter`` attached. Which adapter is in effect is decided per
    generation (:meth:`ResidentBase.serving`), so use the model through it."""
    base = resident_base(model_dir)
    if adapter is not None:
        base.attach(adapter)
    return base.model, base.tokenizer


class LocalHFModel:
    """A :class:`~minetune.models.base.ChatModel` running a transformers model in this process.

    The directory (or hub download) is resolved when constructed, so a bad spec fails early; the
    weights load on first use (or on :meth:`load`) and are shared by every instance in the process.
    """

    def __init__(
        self,
        model: str,
        *,
        adapter: str | None = None,
        spec: str | None = None,
        temperature: float = 0.7,
        max_tokens: int | None = 1024,
    ) -> None:
        self.model = model
        self.spec = spec or (f"hf:{model}" + (f"?adapter={adapter}" if adapter else ""))
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.model_dir = resolve_model_dir(model)
        self.adapter_dir: Path | None = None
        if adapter:
            adapter_path = Path(adapter).expanduser()
            if not adapter_path.is_dir():
                raise ModelError(f"{self.spec}: no such adapter directory {adapter!r} — give the folder "
                                 "that holds adapter_config.json")
            self.adapter_dir = adapter_path.resolve()

    def __repr__(self) -> str:
        return f"LocalHFModel(spec={self.spec!r}, model_dir={str(self.model_dir)!r})"

    def load(self) -> tuple[Any, Any]:
        """Load the weights now (otherwise they load on the first request); returns (model, tokenizer).

        The model is shared by every spec on the same base; generate through :meth:`complete`
        or :meth:`stream`, which switch it to this spec's adapter (or the plain base) first."""
        return load_model(self.model_dir, self.adapter_dir)

    def _resident(self) -> tuple[ResidentBase, str | None]:
        base = resident_base(self.model_dir)
        return base, base.attach(self.adapter_dir) if self.adapter_dir is not None else None

    def complete(
        self, messages: list[Message], *, temperature: float | None = None, max_tokens: int | None = None
    ) -> Completion:
        """Generate one fresh sample for ``messages`` with the tokenizer's chat template."""
        return self.stream(messages, temperature=temperature, max_tokens=max_tokens).collect()

    def stream(
        self, messages: list[Message], *, temperature: float | None = None, max_tokens: int | None = None
    ) -> CompletionStream:
        """Like :meth:`complete`, yielding decoded text deltas from a generation thread."""
        base, adapter = self._resident()
        inputs = self._encode(base.tokenizer, messages)
        kwargs = self._generate_kwargs(base.tokenizer, inputs, temperature, max_tokens)
        return CompletionStream(self._run(base, adapter, inputs, kwargs))

    # -- internals --------------------------------------------------------------------------------

    def _encode(self, tokenizer: Any, messages: list[Message]) -> Any:
        chat = [{"role": m["role"], "content": m["content"]} for m in messages]
        if getattr(tokenizer, "chat_template", None):
            encoded = tokenizer.apply_chat_template(
                chat, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
            )
        else:  # base models without a template: a plain transcript
            prompt = "".join(f"{m['role'].capitalize()}: {m['content']}\n" for m in chat) + "Assistant:"
            encoded = tokenizer(prompt, return_tensors="pt")
        return encoded

    def _generate_kwargs(
        self, tokenizer: Any, inputs: Any, temperature: float | None, max_tokens: int | None
    ) -> dict[str, Any]:
        temp = self.temperature if temperature is None else temperature
        limit = self.max_tokens if max_tokens is None else max_tokens
        kwargs: dict[str, Any] = {
            "max_new_tokens": limit or 1024,
            "pad_token_id": tokenizer.pad_token_id,
        }
        if temp and temp > 0:
            kwargs.update(do_sample=True, temperature=float(temp))
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        return kwargs

    def _run(
        self, base: ResidentBase, adapter: str | None, inputs: Any, kwargs: dict[str, Any]
    ) -> Generator[str, None, Completion]:
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

        tokenizer = base.tokenizer
        inputs = inputs.to(base.device)
        prompt_len = int(inputs["input_ids"].shape[-1])
        streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
        abandoned = threading.Event()
        result: dict[str, Any] = {}

        class StopWhenAbandoned(StoppingCriteria):
            """Ends generation early when the consumer stops iterating (e.g. a client disconnects)."""

            def __call__(self, input_ids: Any, scores: Any, **_: Any) -> Any:
                return torch.full((input_ids.shape[0],), abandoned.is_set(), dtype=torch.bool,
                                  device=input_ids.device)

        def work() -> None:
            try:
                with base.serving(adapter) as model, torch.inference_mode():
                    result["ids"] = model.generate(**inputs, **kwargs, streamer=streamer,
                                                   stopping_criteria=StoppingCriteriaList([StopWhenAbandoned()]))
            except Exception as exc:  # surfaced to the consumer below
                result["error"] = exc
                streamer.end()

        thread = threading.Thread(target=work, name="minetune-hf-generate", daemon=True)
        thread.start()
        parts: list[str] = []
        try:
            for piece in streamer:
                if piece:
                    parts.append(piece)
                    yield piece
        finally:
            abandoned.set()  # no-op when generation already finished
        thread.join()
        if "error" in result:
            exc = result["error"]
            raise ModelError(f"{self.spec}: generation failed ({type(exc).__name__}: "
                             f"{' '.join(str(exc).split())[:300]})") from exc
        new_ids = result["ids"][0][prompt_len:].tolist()  # one sequence, so no padding to strip
        finish = "stop" if new_ids and new_ids[-1] in _eos_ids(base.model, tokenizer) else "length"
        return Completion(
            text="".join(parts),
            model=self.spec,
            prompt_tokens=prompt_len,
            completion_tokens=len(new_ids),
            finish_reason=finish,
        )


def _eos_ids(model: Any, tokenizer: Any) -> set[int]:
    ids: set[int] = set()
    config = getattr(model, "generation_config", None)
    for value in (getattr(config, "eos_token_id", None), tokenizer.eos_token_id):
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, list | tuple):
            ids.update(v for v in value if isinstance(v, int))
    return ids
