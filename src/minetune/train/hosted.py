"""Hosted fine-tuning through an OpenAI-compatible fine-tuning API (files + fine_tuning/jobs).

**OpenAI closes fine-tuning to new jobs on 6 January 2027.** Local LoRA training on your own
machine (``minetune train``) is minetune's default path for weight-level learning; this module is
for people who want a provider to train a hosted model. The base URL is configurable, so any
provider that speaks the same API (``/v1/files``, ``/v1/fine_tuning/jobs``) can take over.

The flow: check eligibility (:mod:`minetune.train.datasets`), estimate the cost, upload the
training and validation files (``POST /files``, multipart, ``purpose=fine-tune``), create a job
with ``method: {"type": "supervised"|"dpo", ...}``, follow its status and events, cancel or list
jobs, and when a job succeeds register the fine-tuned model as a new program version
(``openai:<model>``, or ``openai-compatible:<model>@<base URL>`` for other providers), activated
only on request. Every job is recorded in ``training_jobs`` (kind ``hosted``) with the ids of the
attempts its examples came from.

Configuration (environment over ``[finetune]`` in ``$MINETUNE_HOME/config.toml``):

* ``MINETUNE_FINETUNE_BASE_URL`` / ``base_url`` — default ``https://api.openai.com/v1``;
  a bare ``http://host:port`` gets ``/v1`` appended.
* The key scoped to that base URL (:mod:`minetune.models.keys`): ``OPENAI_API_KEY`` for OpenAI's
  own URL, ``MINETUNE_API_KEY`` for a base URL you set here, a ``[keys]`` mapping or the system
  keyring; sent as a bearer token; never stored in the database, printed or logged.
* ``MINETUNE_FINETUNE_PRICES`` / ``[finetune.prices]`` — USD per million training tokens by model
  name prefix (longest prefix wins), e.g. ``gpt-4.1-mini=5,my-model=0.8`` or a JSON object.
  The built-in table is OpenAI's published list price at the time of writing; check your
  provider's pricing page.
* ``MINETUNE_FINETUNE_POLL_INTERVAL`` / ``poll_interval`` — seconds between status polls (10).

Cost estimates count tokens approximately — about four characters per token plus four tokens per
message and three per example, the usual rule of thumb for English with OpenAI tokenizers (no
tokenizer download needed); expect ±25%, more for code or non-English text. Billed tokens are
training-file tokens × epochs; ``auto`` epochs are estimated as 3.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, date, datetime
from typing import Any

import httpx

from minetune.config import Settings, load_settings
from minetune.errors import ConfigError, MinetuneError
from minetune.models import keys
from minetune.store import Store
from minetune.store import training as jobs_db
from minetune.store.schema import TrainingJob
from minetune.train.datasets import MIN_EXAMPLES, Dataset, build_dataset, to_jsonl

OPENAI_BASE_URL = "https://api.openai.com/v1"
OPENAI_NEW_JOBS_CLOSE = date(2027, 1, 6)
CLOSURE_NOTE = (
    "OpenAI closes fine-tuning to new jobs on 6 January 2027; local LoRA training (`minetune train`) "
    "is the default path, and MINETUNE_FINETUNE_BASE_URL points this at another compatible provider."
)
HOSTED_METHODS = {"sft": "supervised", "dpo": "dpo"}
FORMAT_FOR = {"sft": "openai-chat", "dpo": "openai-dpo"}
TERMINAL = frozenset({"succeeded", "failed", "cancelled"})
DEFAULT_EPOCHS_ESTIMATE = 3
# USD per 1M training tokens (OpenAI list prices when this was written; override in config).
DEFAULT_PRICES: dict[str, float] = {
    "gpt-4.1-nano": 1.50,
    "gpt-4.1-mini": 5.00,
    "gpt-4.1": 25.00,
    "gpt-4o-mini": 3.00,
    "gpt-4o": 25.00,
    "gpt-3.5-turbo": 8.00,
}


class FineTuneError(MinetuneError):
    """The fine-tuning API refused a request, could not be reached, or the data is not enough."""


# -- configuration ---------------------------------------------------------------------------------


def _normalise_url(url: str) -> str:
    url = url.strip().rstrip("/")
    if not re.match(r"https?://[^/\s]+", url, re.IGNORECASE):
        raise ConfigError(f"The fine-tuning base URL {url!r} is not an http(s) URL.")
    if re.fullmatch(r"https?://[^/]+", url, re.IGNORECASE):
        url += "/v1"
    return url


def _parse_prices(raw: Any, where: str) -> dict[str, float]:
    if isinstance(raw, str):
        text = raw.strip()
        if text.startswith("{"):
            try:
                raw = json.loads(text)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"{where} is not valid JSON: {exc}") from exc
        else:
            pairs = [p for p in text.split(",") if p.strip()]
            if not all("=" in p for p in pairs):
                raise ConfigError(f"{where} must look like 'model=usd_per_million,model=usd_per_million'.")
            raw = dict(p.split("=", 1) for p in pairs)
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must map model names to USD per million training tokens.")
    prices = {}
    for model, value in raw.items():
        try:
            prices[str(model).strip()] = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: the price of {model!r} is not a number ({value!r}).") from None
    return prices


@dataclass(frozen=True)
class HostedConfig:
    """Where hosted jobs go and how they are priced. The key is kept out of repr()."""

    base_url: str = OPENAI_BASE_URL
    api_key: str | None = field(default=None, repr=False)
    prices: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_PRICES))
    poll_interval: float = 10.0
    timeout: float = 60.0
    key_help: str = "set OPENAI_API_KEY to a valid key"  # how to give this base URL a key
    settings: Settings | None = field(default=None, repr=False, compare=False)

    @property
    def is_openai(self) -> bool:
        return self.base_url.rstrip("/") == OPENAI_BASE_URL

    def model_spec(self, model: str) -> str:
        """The model spec a fine-tuned model is used through."""
        return f"openai:{model}" if self.is_openai else f"openai-compatible:{model}@{self.base_url}"

    def price_for(self, model: str) -> float | None:
        """USD per million training tokens for ``model`` (longest matching prefix), if known."""
        matches = [p for p in self.prices if model == p or model.startswith(p)]
        return self.prices[max(matches, key=len)] if matches else None


def load_config(settings: Settings | None = None, **overrides: Any) -> HostedConfig:
    """Resolve the hosted fine-tuning configuration: overrides > environment > config.toml."""
    file_cfg: dict[str, Any] = {}
    if settings is not None:
        path = settings.home / "config.toml"
        if path.is_file():
            try:
                file_cfg = tomllib.loads(path.read_text(encoding="utf-8")).get("finetune", {}) or {}
            except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
                raise ConfigError(f"{path} is not valid TOML: {exc}. Fix or remove the file.") from exc
    env = os.environ
    prices = dict(DEFAULT_PRICES)
    if "prices" in file_cfg:
        prices |= _parse_prices(file_cfg["prices"], "config.toml [finetune] prices")
    if env.get("MINETUNE_FINETUNE_PRICES"):
        prices |= _parse_prices(env["MINETUNE_FINETUNE_PRICES"], "MINETUNE_FINETUNE_PRICES")
    poll_raw = env.get("MINETUNE_FINETUNE_POLL_INTERVAL", file_cfg.get("poll_interval", 10.0))
    try:
        poll = float(poll_raw)
    except (TypeError, ValueError):
        raise ConfigError(
            f"The fine-tuning poll interval must be a number of seconds, got {poll_raw!r}."
        ) from None
    chosen = env.get("MINETUNE_FINETUNE_BASE_URL") or file_cfg.get("base_url")
    values: dict[str, Any] = {
        "base_url": _normalise_url(overrides.get("base_url") or chosen or OPENAI_BASE_URL),
        "prices": prices,
        "poll_interval": max(0.0, poll),
    }
    for key, value in overrides.items():
        if value is not None and key != "base_url":
            values[key] = value
    if "api_key" not in values:
        # The base URL set here is the user's own choice, so MINETUNE_API_KEY is scoped to it too.
        resolved = settings or load_settings()
        also = [_normalise_url(chosen)] if chosen else []
        found = keys.key_for(resolved, values["base_url"], also=also)
        values |= {
            "api_key": found.value if found else None,
            "key_help": keys.key_help(resolved, values["base_url"], also=also),
            "settings": resolved,
        }
    return HostedConfig(**values)


# -- the HTTP client -------------------------------------------------------------------------------


class FineTuneClient:
    """The OpenAI-compatible files and fine-tuning jobs endpoints through the official ``openai``
    SDK (its retries with backoff); replies are the server's JSON objects as dicts. Only the
    configured key (scoped to this base URL) is sent; nothing is read from the environment."""

    def __init__(self, config: HostedConfig, transport: httpx.BaseTransport | None = None) -> None:
        self.config = config
        self._http = httpx.Client(timeout=config.timeout, transport=transport)
        self._sdk: Any = None

    def close(self) -> None:
        if self._sdk is not None:
            self._sdk.close()
        self._http.close()

    def __enter__(self) -> FineTuneClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _redact(self, text: str) -> str:
        key = self.config.api_key
        return text.replace(key, "***") if key else text

    def _client(self) -> Any:
        base = self.config.base_url
        if not self.config.api_key:
            raise FineTuneError(
                f"No API key for hosted fine-tuning at {base}: {self.config.key_help} "
                "(local LoRA training, `minetune train`, needs no key)."
            )
        if self._sdk is None:
            import openai

            client = openai.OpenAI(
                api_key=self.config.api_key, admin_api_key="", organization="", project="", webhook_secret="",
                base_url=base, timeout=self.config.timeout, http_client=self._http,  # type: ignore[arg-type]
            )
            client.organization = None
            client.project = None
            self._sdk = client
        return self._sdk

    def _request(self, method: str, path: str, call: Callable[[Any], Any]) -> dict[str, Any]:
        """Run ``call(sdk client)`` (a ``with_raw_response`` call); the reply's JSON object, or a
        FineTuneError that says what to do (never the key)."""
        import openai

        base = self.config.base_url
        client = self._client()
        try:
            raw = call(client)
        except openai.APITimeoutError:
            raise FineTuneError(
                f"The fine-tuning API at {base} did not answer in time ({method} {path})."
            ) from None
        except openai.APIConnectionError as exc:
            raise FineTuneError(
                f"Cannot reach the fine-tuning API at {base}: {self._redact(str(exc.__cause__ or exc))}"
            ) from None
        except openai.APIStatusError as exc:
            raise self._status_error(method, path, exc.status_code, exc.body) from None
        try:
            data = raw.http_response.json()
        except ValueError:
            raise FineTuneError(
                f"The fine-tuning API at {base} sent a non-JSON reply to {method} {path}."
            ) from None
        if not isinstance(data, dict):
            raise FineTuneError(f"The fine-tuning API at {base} sent an unexpected reply to {method} {path}.")
        return data

    def _status_error(self, method: str, path: str, status: int, body: object) -> FineTuneError:
        base = self.config.base_url
        detail = self._error_detail(body)
        if status == 401:
            return FineTuneError(
                f"The fine-tuning API at {base} rejected the API key "
                f"(HTTP 401{': ' + detail if detail else ''}); {self.config.key_help}."
            )
        if status == 403:
            return FineTuneError(f"The API key may not use fine-tuning at {base} (HTTP 403): {detail}")
        if status == 404:
            return FineTuneError(
                f"Not found at {base}: {method} {path} (HTTP 404{': ' + detail if detail else ''}). "
                "Check MINETUNE_FINETUNE_BASE_URL and the job id."
            )
        return FineTuneError(
            f"The fine-tuning API at {base} refused {method} {path} (HTTP {status}): {detail}"
        )

    def _error_detail(self, body: object) -> str:
        """The message of an SDK error body (the ``error`` object, or the whole body)."""
        if isinstance(body, dict):
            inner = body.get("error", body)
            message = inner.get("message") if isinstance(inner, dict) else inner
            text = str(message or body)
        else:
            text = str(body or "")[:300]
        return self._redact(text.strip())

    def upload(self, filename: str, data: bytes) -> dict[str, Any]:
        """POST /files (multipart/form-data, purpose=fine-tune): the file object."""
        return self._request("POST", "/files", lambda c: c.files.with_raw_response.create(
            file=(filename, data, "application/jsonl"), purpose="fine-tune"))

    def delete_file(self, file_id: str) -> dict[str, Any]:
        """DELETE /files/{id} (used by forget: uploaded training data is erased at the provider)."""
        return self._request(
            "DELETE", f"/files/{file_id}", lambda c: c.files.with_raw_response.delete(file_id)
        )

    def create_job(self, payload: dict[str, Any]) -> dict[str, Any]:
        """POST /fine_tuning/jobs: the new fine_tuning.job object (``payload`` sent unchanged)."""
        named = {k: v for k, v in payload.items() if k in ("model", "training_file")}
        extra = {k: v for k, v in payload.items() if k not in named}
        return self._request(
            "POST",
            "/fine_tuning/jobs",
            lambda c: c.fine_tuning.jobs.with_raw_response.create(**named, extra_body=extra or None),
        )

    def retrieve(self, job_id: str) -> dict[str, Any]:
        return self._request("GET", f"/fine_tuning/jobs/{job_id}",
                             lambda c: c.fine_tuning.jobs.with_raw_response.retrieve(job_id))

    def cancel(self, job_id: str) -> dict[str, Any]:
        return self._request("POST", f"/fine_tuning/jobs/{job_id}/cancel",
                             lambda c: c.fine_tuning.jobs.with_raw_response.cancel(job_id))

    def list_jobs(self, limit: int = 20, after: str | None = None) -> dict[str, Any]:
        params: dict[str, Any] = {"limit": limit} | ({"after": after} if after else {})
        return self._request("GET", "/fine_tuning/jobs",
                             lambda c: c.fine_tuning.jobs.with_raw_response.list(**params))

    def events(self, job_id: str, limit: int = 100, after: str | None = None) -> dict[str, Any]:
        params: dict[str, Any] = {"limit": limit} | ({"after": after} if after else {})
        return self._request("GET", f"/fine_tuning/jobs/{job_id}/events",
                             lambda c: c.fine_tuning.jobs.with_raw_response.list_events(job_id, **params))


# -- estimates -------------------------------------------------------------------------------------


def approx_tokens(text: str) -> int:
    """About four characters per token (see the module docstring)."""
    return math.ceil(len(text) / 4)


def _messages_tokens(messages: Sequence[dict[str, Any]]) -> int:
    return sum(4 + approx_tokens(str(m.get("content", ""))) for m in messages)


def example_tokens(example: Any) -> int:
    """Approximate tokens of one SFT or DPO example as the provider would count them."""
    tokens = 3 + _messages_tokens(example.prompt)
    if example.method == "dpo":
        return tokens + 2 * 4 + approx_tokens(example.chosen) + approx_tokens(example.rejected)
    return tokens + 4 + approx_tokens(example.response)


@dataclass(frozen=True)
class CostEstimate:
    """What a hosted job will roughly cost, before anything is uploaded."""

    method: str
    model: str | None
    train_examples: int
    valid_examples: int
    train_tokens: int  # per epoch
    valid_tokens: int
    n_epochs: int
    epochs_assumed: bool  # True when "auto" epochs were estimated
    price_per_million: float | None
    base_url: str

    @property
    def billed_tokens(self) -> int:
        return self.train_tokens * self.n_epochs

    @property
    def usd(self) -> float | None:
        if self.price_per_million is None:
            return None
        return self.billed_tokens * self.price_per_million / 1_000_000

    def summary(self) -> str:
        epochs = f"{self.n_epochs} epoch(s){' (auto, estimated)' if self.epochs_assumed else ''}"
        text = (
            f"{self.method.upper()} on {self.model or '(no model given)'}: {self.train_examples} training + "
            f"{self.valid_examples} validation examples, ~{self.train_tokens:,} training tokens × {epochs} "
            f"= ~{self.billed_tokens:,} billed tokens"
        )
        if self.usd is not None:
            usd = f"${self.usd:,.2f}" if self.usd >= 0.01 else "under $0.01"
            return text + f" ≈ {usd} at ${self.price_per_million:g}/1M tokens (approximate)."
        return text + "; no price known for this model (set MINETUNE_FINETUNE_PRICES)."

    def as_dict(self) -> dict[str, Any]:
        return asdict(self) | {"billed_tokens": self.billed_tokens, "usd": self.usd}


def _hosted_method(method: str) -> str:
    if method not in HOSTED_METHODS:
        raise FineTuneError(
            f"Hosted fine-tuning takes --method sft or dpo, not {method!r} "
            "(KTO trains locally: `minetune train --method kto`)."
        )
    return method


def _train_valid(dataset: Dataset) -> tuple[list[Any], list[Any]]:
    """Providers want at least 10 training examples: below that, validation folds into training."""
    if len(dataset.train) < MIN_EXAMPLES:
        return dataset.examples, []
    return dataset.train, dataset.valid


def estimate_cost(
    dataset: Dataset, model: str | None, config: HostedConfig, n_epochs: int | None = None
) -> CostEstimate:
    train, valid = _train_valid(dataset)
    return CostEstimate(
        method=dataset.method,
        model=model,
        train_examples=len(train),
        valid_examples=len(valid),
        train_tokens=sum(example_tokens(ex) for ex in train),
        valid_tokens=sum(example_tokens(ex) for ex in valid),
        n_epochs=n_epochs or DEFAULT_EPOCHS_ESTIMATE,
        epochs_assumed=n_epochs is None,
        price_per_million=config.price_for(model) if model else None,
        base_url=config.base_url,
    )


def estimate(
    store: Store,
    program: str,
    method: str,
    model: str | None,
    config: HostedConfig,
    *,
    n_epochs: int | None = None,
    threshold: int = 4,
) -> tuple[Dataset, CostEstimate]:
    """The dataset a hosted job would use (with its eligibility) and the cost estimate. Offline."""
    dataset = build_dataset(store, program, _hosted_method(method), threshold=threshold)
    return dataset, estimate_cost(dataset, model, config, n_epochs)


# -- jobs ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HostedJob:
    """A hosted job as recorded in the store."""

    id: int
    program: str
    method: str
    status: str
    base_model: str
    provider: str | None
    provider_job_id: str | None
    result_model: str | None
    model_spec: str | None
    version: int | None
    activated: bool
    error: str | None
    examples: int
    trained_tokens: int | None
    loss_curve: list[Any]
    created_at: datetime
    finished_at: datetime | None

    @property
    def done(self) -> bool:
        return self.status in TERMINAL


def _view(row: TrainingJob, program: str) -> HostedJob:
    metrics = row.metrics or {}
    spec = metrics.get("model_spec")
    return HostedJob(
        id=row.id,
        program=program,
        method=row.method,
        status=row.status,
        base_model=row.base_model,
        provider=row.provider,
        provider_job_id=row.provider_job_id,
        result_model=row.result_model,
        model_spec=spec,
        version=metrics.get("version"),
        activated=bool(metrics.get("activated")),
        error=row.error,
        examples=int(sum((metrics.get("examples") or {}).values())),
        trained_tokens=metrics.get("trained_tokens"),
        loss_curve=list(row.loss_curve or []),
        created_at=row.created_at,
        finished_at=row.finished_at,
    )


def _row(store: Store, ref: int | str) -> TrainingJob:
    text = str(ref).strip()
    row = jobs_db.get_job(store, int(text)) if text.isdigit() else jobs_db.job_by_provider_id(store, text)
    if row.kind != "hosted":
        raise FineTuneError(f"Training job {row.id} is a local training run, not a hosted fine-tuning job.")
    return row


def get(store: Store, ref: int | str) -> HostedJob:
    """A recorded hosted job by local id or provider job id (no network)."""
    row = _row(store, ref)
    return _view(row, jobs_db.job_program_name(store, row.id))


def _suffix(program: str) -> str:
    slug = re.sub(r"[^a-z0-9-]+", "-", program.lower()).strip("-")
    return (slug or "minetune")[:18]


def _method_payload(method: str, n_epochs: int | None, beta: float | None) -> dict[str, Any]:
    kind = HOSTED_METHODS[method]
    hyper: dict[str, Any] = {}
    if n_epochs is not None:
        hyper["n_epochs"] = n_epochs
    if beta is not None and method == "dpo":
        hyper["beta"] = beta
    return {"type": kind, kind: {"hyperparameters": hyper} if hyper else {}}


def _error_text(error: Any) -> str | None:
    if not error:
        return None
    if isinstance(error, dict):
        message = error.get("message") or ""
        code = error.get("code")
        text = f"{code}: {message}" if code and message else str(message or code or "")
        return text or None
    return str(error)


def _timestamp(value: Any) -> datetime | None:
    if isinstance(value, int | float) and value > 0:
        return datetime.fromtimestamp(value, UTC)
    return None


def start(
    store: Store,
    program: str,
    *,
    method: str,
    model: str,
    config: HostedConfig,
    confirm: Callable[[CostEstimate], bool] | None = None,
    activate: bool = False,
    n_epochs: int | None = None,
    beta: float | None = None,
    suffix: str | None = None,
    threshold: int = 4,
    transport: httpx.BaseTransport | None = None,
) -> HostedJob | None:
    """Check eligibility, estimate, confirm, upload, and create a hosted job. None when declined.

    With too few examples nothing is uploaded or recorded. The API key and base URL are checked
    (one ``GET /fine_tuning/jobs``) before anything is recorded or uploaded.
    """
    if not model or not model.strip():
        raise FineTuneError("Name the base model to fine-tune with --model (e.g. gpt-4.1-mini-2025-04-14).")
    dataset, cost = estimate(store, program, method, model, config, n_epochs=n_epochs, threshold=threshold)
    if not dataset.eligibility.eligible:
        raise FineTuneError(
            f"Not enough data for hosted {method.upper()} fine-tuning of {program!r}: "
            + " ".join(dataset.eligibility.missing)
            + " Nothing was uploaded."
        )
    train, valid = _train_valid(dataset)
    with FineTuneClient(config, transport) as client:
        client.list_jobs(limit=1)  # the key and URL work before anything is created
        if confirm is not None and not confirm(cost):
            return None
        row = jobs_db.create_job(
            store,
            program,
            kind="hosted",
            method=method,
            base_model=model,
            status="uploading",
            provider=config.base_url,
            hyperparameters=_method_payload(method, n_epochs, beta),
            example_attempt_ids=dataset.attempt_ids,
            metrics={
                "estimate": cost.as_dict(),
                "examples": {"train": len(train), "valid": len(valid)},
                "format": FORMAT_FOR[method],
                "activate_on_success": activate,
                "threshold": threshold,
            },
        )
        try:
            fmt = FORMAT_FOR[method]
            stem = f"minetune-{_suffix(program)}-{method}-job{row.id}"
            files = {"training_file": client.upload(f"{stem}-train.jsonl", to_jsonl(train, fmt))["id"]}
            if valid:
                files["validation_file"] = client.upload(f"{stem}-valid.jsonl", to_jsonl(valid, fmt))["id"]
            payload = {
                "model": model,
                **files,
                "method": row.hyperparameters,
                "suffix": suffix or _suffix(program),
            }
            remote = client.create_job(payload)
            if not remote.get("id"):
                raise FineTuneError(f"the API created no job id (reply: {json.dumps(remote)[:200]})")
        except (MinetuneError, KeyError, TypeError) as exc:
            message = (
                str(exc) if isinstance(exc, MinetuneError) else f"unexpected reply from the API ({exc!r})"
            )
            jobs_db.update_job(store, row.id, status="failed", error=message, finished_at=datetime.now(UTC))
            raise FineTuneError(f"Hosted job {row.id} could not be created: {message}") from None
        row = jobs_db.update_job(
            store,
            row.id,
            provider_job_id=str(remote.get("id")),
            status=str(remote.get("status") or "validating_files"),
            metrics=dict(row.metrics) | {"files": files},
        )
    return _view(row, program)


def refresh(
    store: Store,
    ref: int | str,
    config: HostedConfig,
    *,
    activate: bool | None = None,
    transport: httpx.BaseTransport | None = None,
    client: FineTuneClient | None = None,
) -> HostedJob:
    """Fetch a job's status from the provider and record it; on success register the model as a
    new program version (once), activated when ``activate`` (default: what ``start`` was asked)."""
    row = _row(store, ref)
    program = jobs_db.job_program_name(store, row.id)
    metrics = dict(row.metrics or {})
    if row.status == "succeeded" and "version" in metrics:
        if activate and not metrics.get("activated"):
            store.activate(program, int(metrics["version"]))
            row = jobs_db.update_job(store, row.id, metrics=metrics | {"activated": True})
        return _view(row, program)
    if row.provider_job_id is None or row.status in TERMINAL - {"succeeded"}:
        return _view(row, program)
    own = client is None
    client = client or FineTuneClient(_config_for(row, config), transport)
    try:
        remote = client.retrieve(row.provider_job_id)
    finally:
        if own:
            client.close()
    status = str(remote.get("status") or row.status)
    if remote.get("trained_tokens") is not None:
        metrics["trained_tokens"] = remote["trained_tokens"]
    fine_tuned = remote.get("fine_tuned_model")
    if status == "succeeded" and fine_tuned:
        spec = _config_for(row, config).model_spec(str(fine_tuned))
        wants = metrics.get("activate_on_success", False) if activate is None else activate
        row, _version = jobs_db.complete_job(
            store,
            row.id,
            result_model=str(fine_tuned),
            note=f"hosted {row.method.upper()} fine-tune of {row.base_model} (job {row.id})",
            activate=bool(wants),
            version_changes={
                "model_spec": spec,
                "adapter": None,
                "sources": {
                    "training_job": row.id,
                    "provider": row.provider,
                    "provider_job_id": row.provider_job_id,
                    "method": row.method,
                    "base_model": row.base_model,
                    "examples": len(row.example_attempt_ids or []),
                },
            },
            metrics=metrics | {"model_spec": spec},
        )
        if _timestamp(remote.get("finished_at")):
            row = jobs_db.update_job(store, row.id, finished_at=_timestamp(remote.get("finished_at")))
        return _view(row, program)
    fields: dict[str, Any] = {"status": status, "metrics": metrics}
    error = _error_text(remote.get("error"))
    if error:
        fields["error"] = error
    if status in TERMINAL:
        fields["finished_at"] = _timestamp(remote.get("finished_at")) or datetime.now(UTC)
        if status == "failed" and not error:
            fields["error"] = "the provider reported the job as failed without a reason"
    return _view(jobs_db.update_job(store, row.id, **fields), program)


def _config_for(row: TrainingJob, config: HostedConfig) -> HostedConfig:
    """A job is always followed at the provider it was created at."""
    if row.provider and row.provider != config.base_url:
        # Only the key scoped to the job's own provider goes there, never this config's key.
        settings = config.settings or load_settings()
        found = keys.key_for(settings, row.provider)
        return replace(
            config,
            base_url=row.provider,
            api_key=found.value if found else None,
            key_help=keys.key_help(settings, row.provider),
        )
    return config


def _sorted_events(data: dict[str, Any]) -> list[dict[str, Any]]:
    events = [e for e in data.get("data") or [] if isinstance(e, dict)]
    return sorted(events, key=lambda e: (e.get("created_at") or 0, str(e.get("id", ""))))


def events(
    store: Store,
    ref: int | str,
    config: HostedConfig,
    *,
    limit: int = 100,
    transport: httpx.BaseTransport | None = None,
) -> list[dict[str, Any]]:
    """The job's latest events (up to ``limit``), oldest first."""
    row = _row(store, ref)
    if row.provider_job_id is None:
        return []
    with FineTuneClient(_config_for(row, config), transport) as client:
        return _sorted_events(client.events(row.provider_job_id, limit=limit))


def _loss_point(event: dict[str, Any]) -> dict[str, Any] | None:
    data = event.get("data")
    if event.get("type") != "metrics" or not isinstance(data, dict) or "step" not in data:
        return None
    keep = ("step", "total_steps", "train_loss", "valid_loss", "train_mean_token_accuracy", "full_valid_loss")
    return {k: data[k] for k in keep if k in data}


ProgressCallback = Callable[[HostedJob, list[dict[str, Any]]], None]


def follow(
    store: Store,
    ref: int | str,
    config: HostedConfig,
    on_update: ProgressCallback | None = None,
    *,
    poll_interval: float | None = None,
    max_polls: int | None = None,
    activate: bool | None = None,
    transport: httpx.BaseTransport | None = None,
) -> HostedJob:
    """Poll a job until it finishes, calling ``on_update(job, new_events)`` after every poll and
    recording the loss curve from ``metrics`` events. Interrupting leaves the job running."""
    row = _row(store, ref)
    cfg = _config_for(row, config)
    interval = cfg.poll_interval if poll_interval is None else poll_interval
    seen: set[str] = set()
    curve = {int(p["step"]): p for p in row.loss_curve or [] if isinstance(p, dict) and "step" in p}
    polls = 0
    with FineTuneClient(cfg, transport) as client:
        while True:
            job = refresh(store, row.id, cfg, activate=activate, client=client)
            fresh: list[dict[str, Any]] = []
            if job.provider_job_id is not None:
                for event in _sorted_events(client.events(job.provider_job_id, limit=100)):
                    key = str(event.get("id") or json.dumps(event, sort_keys=True))
                    if key not in seen:
                        seen.add(key)
                        fresh.append(event)
            points = [p for p in map(_loss_point, fresh) if p is not None]
            if points:
                curve.update({int(p["step"]): p for p in points})
                jobs_db.update_job(store, row.id, loss_curve=[curve[s] for s in sorted(curve)])
                job = get(store, row.id)
            if on_update is not None:
                on_update(job, fresh)
            polls += 1
            if job.done or job.provider_job_id is None or (max_polls is not None and polls >= max_polls):
                return job
            time.sleep(interval)


def cancel(
    store: Store, ref: int | str, config: HostedConfig, *, transport: httpx.BaseTransport | None = None
) -> HostedJob:
    """Ask the provider to cancel a job and record the answer."""
    row = _row(store, ref)
    program = jobs_db.job_program_name(store, row.id)
    if row.status in TERMINAL:
        raise FineTuneError(f"Hosted job {row.id} has already {row.status}; there is nothing to cancel.")
    if row.provider_job_id is None:
        return _view(
            jobs_db.update_job(store, row.id, status="cancelled", finished_at=datetime.now(UTC)), program
        )
    with FineTuneClient(_config_for(row, config), transport) as client:
        remote = client.cancel(row.provider_job_id)
    status = str(remote.get("status") or "cancelled")
    fields: dict[str, Any] = {"status": status}
    if status in TERMINAL:
        fields["finished_at"] = _timestamp(remote.get("finished_at")) or datetime.now(UTC)
    return _view(jobs_db.update_job(store, row.id, **fields), program)


def list_jobs(store: Store, program: str | None = None) -> list[HostedJob]:
    """Hosted jobs recorded in the store (newest first), optionally of one program. No network."""
    return [_view(row, name) for row, name in jobs_db.list_jobs(store, program, kind="hosted")]


def remote_jobs(
    config: HostedConfig, limit: int = 20, *, transport: httpx.BaseTransport | None = None
) -> list[dict[str, Any]]:
    """Jobs the provider lists for this API key (newest first), including ones made elsewhere."""
    with FineTuneClient(config, transport) as client:
        data = client.list_jobs(limit=limit)
    return [j for j in data.get("data") or [] if isinstance(j, dict)]
