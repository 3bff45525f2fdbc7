"""Settings from the environment, an optional ``config.toml`` in the home folder, and flags.

Precedence, highest first: explicit arguments (CLI flags) > environment variables >
``$MINETUNE_HOME/config.toml`` > defaults.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from minetune.errors import ConfigError
from minetune.files import private_file, private_home

DEFAULT_OLLAMA_URL = "http://127.0.0.1:11434"
DEFAULT_OPENAI_MODEL = "gpt-4o-mini"
DEFAULT_RETRY_LIMIT = 5
OPENAI_BASE_URL = "https://api.openai.com/v1"
MODELS_DIR = "models"  # under MINETUNE_HOME: the default root of model folders web training may use
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True)
class PraiseSettings:
    """User overrides for praise detection (see :mod:`minetune.feedback`)."""

    phrases: tuple[str, ...] | None = None  # replaces the built-in phrase list when set
    extra_phrases: tuple[str, ...] = ()
    affirmatives: tuple[str, ...] | None = None  # replaces the built-in short affirmatives when set
    max_short_words: int = 3


@dataclass(frozen=True)
class ContinualSettings:
    """Continual learning from the chat (``[continual]`` in config.toml; see
    :mod:`minetune.train.continual`). Off by default: it needs a local ``hf:``/``vllm:`` base model.

    When on, every answer accepted with ``stars`` or more (or praised) is noted, and once
    ``threshold`` new examples wait, a gated incremental adapter update runs in the background.
    ``train`` holds LoRA hyperparameters for the update (``max_steps``, ``learning_rate``, …).
    """

    enabled: bool = False
    threshold: int = 8
    stars: int = 4
    replay_ratio: float = 1.0
    replay_max: int = 64
    min_improvement: float = 0.0
    retention_tolerance: float = 0.05
    ewc_lambda: float = 0.0
    train: tuple[tuple[str, Any], ...] = ()  # (name, value) pairs, frozen like the rest


@dataclass(frozen=True)
class Settings:
    """Resolved settings for one minetune process."""

    home: Path
    database_url: str | None = None
    model: str | None = None
    ollama_url: str = DEFAULT_OLLAMA_URL
    openai_base_url: str = OPENAI_BASE_URL
    retry_limit: int = DEFAULT_RETRY_LIMIT
    temperature: float = 0.7
    max_tokens: int = 1024
    request_timeout: float = 120.0  # seconds an upstream model may take to answer (upstream_timeout)
    upstream_workers: int = 64  # threads for upstream model calls, apart from the pages' (serve)
    user_concurrency: int = 16  # upstream-bound requests one user may have in flight (serve)
    praise: PraiseSettings = field(default_factory=PraiseSettings)
    embedder: str = "minilm-int8"  # MiniLM as int8 ONNX; "minilm" (sentence-transformers); a model dir
    reoptimize: bool = True  # re-optimize demos and lessons after every feedback
    reflection_model: str | None = None  # model spec for distilling critiques; default: the program's
    continual: ContinualSettings = field(default_factory=ContinualSettings)
    allowed_hosts: tuple[str, ...] = ()  # Host names the server answers besides loopback (serve)
    allowed_origins: tuple[str, ...] = ()  # other origins that may post to the server (serve)
    keys: tuple[tuple[str, str], ...] = ()  # [keys]: (base URL, NAME of the env var holding its key)
    model_roots: tuple[Path, ...] = ()  # folders web training may take base models from ([] = home/models)
    queue: str = "local"  # where training jobs run: "local" threads, or "procrastinate" workers (PostgreSQL)
    adapters_dir: Path | None = None  # where adapters live (shared storage for teams); default home/adapters

    @property
    def sqlite_path(self) -> Path:
        return self.home / "minetune.db"

    @property
    def adapters_path(self) -> Path:
        """The folder adapters are written to and read from: ``adapters_dir``, else under the home."""
        return self.adapters_dir or self.home / "adapters"

    @property
    def resolved_database_url(self) -> str:
        """``MINETUNE_DATABASE_URL`` when set, else the SQLite file under the home folder."""
        return self.database_url or f"sqlite:///{self.sqlite_path}"

    def with_overrides(self, **overrides: Any) -> Settings:
        """A copy with the given non-None fields replaced."""
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})


def _read_toml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}. Fix or remove the file.") from exc


def _tuple(value: Any, key: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"config.toml: {key} must be a list of strings")
    return tuple(value)


def _names(env_value: str | None, file_cfg: dict[str, Any], key: str) -> tuple[str, ...]:
    """A comma-separated environment variable, else a list of strings in config.toml."""
    if env_value is not None:
        return tuple(name.strip() for name in env_value.split(",") if name.strip())
    return _tuple(file_cfg[key], key) if key in file_cfg else ()


def _keys(raw: Any) -> tuple[tuple[str, str], ...]:
    """``[keys]``: base URL -> the name of the environment variable that holds its key."""
    if not isinstance(raw, dict):
        raise ConfigError('config.toml: [keys] must be a table of "base URL" = "ENV_VAR_NAME"')
    pairs = []
    for url, name in raw.items():
        if not re.match(r"https?://[^/\s]+", str(url), re.IGNORECASE):
            raise ConfigError(f"config.toml [keys]: {str(url)[:100]!r} is not an http(s) base URL")
        if not isinstance(name, str) or not _ENV_NAME.fullmatch(name):
            raise ConfigError(
                f"config.toml [keys]: {str(url)[:100]} must name an environment variable "
                "(e.g. OPENROUTER_API_KEY), not hold a key; keys are never stored in files"
            )
        pairs.append((str(url), name))
    return tuple(pairs)


def _model_roots(env_value: str | None, raw: Any, home: Path) -> tuple[Path, ...]:
    """Folders web training may take base models from: MINETUNE_MODEL_ROOTS (os.pathsep-separated)
    or ``model_roots`` in config.toml; default ``$MINETUNE_HOME/models``."""
    if env_value is not None:
        items: list[Any] = [p for p in env_value.split(os.pathsep) if p.strip()]
    elif raw is None:
        items = []
    else:
        items = list(_tuple(raw, "model_roots"))
    roots = tuple(Path(p).expanduser() for p in items)
    return roots or (home / MODELS_DIR,)


def _praise_settings(raw: dict[str, Any]) -> PraiseSettings:
    kwargs: dict[str, Any] = {}
    if "phrases" in raw:
        kwargs["phrases"] = _tuple(raw["phrases"], "praise.phrases")
    if "extra_phrases" in raw:
        kwargs["extra_phrases"] = _tuple(raw["extra_phrases"], "praise.extra_phrases")
    if "affirmatives" in raw:
        kwargs["affirmatives"] = _tuple(raw["affirmatives"], "praise.affirmatives")
    if "max_short_words" in raw:
        if not isinstance(raw["max_short_words"], int) or raw["max_short_words"] < 0:
            raise ConfigError("config.toml: praise.max_short_words must be a non-negative integer")
        kwargs["max_short_words"] = raw["max_short_words"]
    return PraiseSettings(**kwargs)


def _continual_settings(raw: Any, env: Any) -> ContinualSettings:
    if not isinstance(raw, dict):
        raise ConfigError("config.toml: [continual] must be a table")
    known = {
        "enabled",
        "threshold",
        "stars",
        "replay_ratio",
        "replay_max",
        "min_improvement",
        "retention_tolerance",
        "ewc_lambda",
        "train",
    }
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(f"config.toml: unknown [continual] key(s): {', '.join(unknown)}")
    enabled = _flag(env.get("MINETUNE_CONTINUAL", raw.get("enabled", False)), "continual.enabled")
    threshold = _positive_int(
        env.get("MINETUNE_CONTINUAL_THRESHOLD", raw.get("threshold", 8)), "continual.threshold"
    )
    stars = _positive_int(raw.get("stars", 4), "continual.stars")
    if stars > 5:
        raise ConfigError("continual.stars must be from 1 to 5")
    numbers: dict[str, float] = {}
    for key, default in (
        ("replay_ratio", 1.0),
        ("min_improvement", 0.0),
        ("retention_tolerance", 0.05),
        ("ewc_lambda", 0.0),
    ):
        value = raw.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"config.toml: continual.{key} must be a number, got {value!r}")
        numbers[key] = float(value)
    train = raw.get("train", {})
    if not isinstance(train, dict):
        raise ConfigError("config.toml: [continual.train] must be a table of LoRA settings")
    return ContinualSettings(
        enabled=enabled,
        threshold=threshold,
        stars=stars,
        replay_max=_positive_int(raw.get("replay_max", 64), "continual.replay_max"),
        train=tuple(sorted(train.items())),
        **numbers,
    )


def _positive_int(value: Any, name: str) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        number = 0
    if number < 1:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    return number


def _positive_number(value: Any, name: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = 0.0
    if not number > 0 or number == float("inf"):
        raise ConfigError(f"{name} must be a positive number of seconds, got {value!r}")
    return number


def _flag(value: Any, name: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name} must be true or false, got {value!r}")


def load_settings(home: str | Path | None = None, **overrides: Any) -> Settings:
    """Resolve settings; ``home`` and keyword overrides (e.g. ``model=``) win over the environment."""
    env = os.environ
    home_path = Path(home or env.get("MINETUNE_HOME") or Path.home() / ".minetune").expanduser()
    if home_path.is_dir():
        private_home(home_path)  # an existing install is fixed here (0700 folders, 0600 files)
    file_cfg = _read_toml(home_path / "config.toml")
    retry_raw = env.get("MINETUNE_RETRY_LIMIT", file_cfg.get("retry_limit", DEFAULT_RETRY_LIMIT))
    settings = Settings(
        home=home_path,
        database_url=env.get("MINETUNE_DATABASE_URL") or file_cfg.get("database_url"),
        model=env.get("MINETUNE_MODEL") or file_cfg.get("model"),
        ollama_url=(env.get("MINETUNE_OLLAMA_URL") or file_cfg.get("ollama_url") or DEFAULT_OLLAMA_URL),
        openai_base_url=env.get("OPENAI_BASE_URL") or file_cfg.get("openai_base_url") or OPENAI_BASE_URL,
        retry_limit=_positive_int(retry_raw, "retry_limit"),
        temperature=float(file_cfg.get("temperature", 0.7)),
        max_tokens=_positive_int(file_cfg.get("max_tokens", 1024), "max_tokens"),
        request_timeout=_positive_number(
            env.get("MINETUNE_UPSTREAM_TIMEOUT", file_cfg.get("upstream_timeout", 120.0)), "upstream_timeout"
        ),
        upstream_workers=_positive_int(
            env.get("MINETUNE_UPSTREAM_WORKERS", file_cfg.get("upstream_workers", 64)), "upstream_workers"
        ),
        user_concurrency=_positive_int(
            env.get("MINETUNE_USER_CONCURRENCY", file_cfg.get("user_concurrency", 16)), "user_concurrency"
        ),
        praise=_praise_settings(file_cfg.get("praise", {})),
        embedder=env.get("MINETUNE_EMBEDDER") or file_cfg.get("embedder") or "minilm-int8",
        reoptimize=_flag(env.get("MINETUNE_REOPTIMIZE", file_cfg.get("reoptimize", True)), "reoptimize"),
        reflection_model=env.get("MINETUNE_REFLECTION_MODEL") or file_cfg.get("reflection_model"),
        continual=_continual_settings(file_cfg.get("continual", {}), env),
        allowed_hosts=_names(env.get("MINETUNE_ALLOWED_HOSTS"), file_cfg, "allowed_hosts"),
        allowed_origins=_names(env.get("MINETUNE_ALLOWED_ORIGINS"), file_cfg, "allowed_origins"),
        keys=_keys(file_cfg.get("keys", {})),
        model_roots=_model_roots(env.get("MINETUNE_MODEL_ROOTS"), file_cfg.get("model_roots"), home_path),
        queue=str(env.get("MINETUNE_QUEUE") or file_cfg.get("queue") or "local"),
        adapters_dir=_optional_path(env.get("MINETUNE_ADAPTERS_DIR") or file_cfg.get("adapters_dir")),
    )
    settings = settings.with_overrides(**overrides)
    _check_queue(settings)
    return settings


CONFIG_FILE = "config.toml"


def _carries_credentials(spec: str) -> bool:
    """Whether a URL in ``spec`` has a user, a password or a key/token parameter."""
    from urllib.parse import parse_qs, urlsplit

    for match in re.finditer(r"[A-Za-z][A-Za-z0-9+.-]*://\S+", spec):
        url = urlsplit(match.group())
        names = [name.lower() for name in parse_qs(url.query)]
        if url.username or url.password or any("key" in n or "token" in n for n in names):
            return True
    return False


def save_default_model(home: str | Path, spec: str) -> Path:
    """Write ``model = "<spec>"`` into ``home/config.toml`` (mode 0600), keeping every other key
    and the comments (tomlkit). Only the model spec is written: a spec that carries credentials (a
    URL with a user or password, a ``key``/``token`` parameter) is refused, since keys belong in
    the keyring or the environment. Returns the file's path."""
    import tomlkit

    spec = spec.strip()
    if not spec or "\n" in spec:
        raise ConfigError("A default model needs a one-line model spec.")
    if _carries_credentials(spec):
        raise ConfigError("A model spec with credentials is not saved: set the key with `minetune key set`.")
    path = Path(home).expanduser() / CONFIG_FILE
    _read_toml(path)  # an invalid file is reported, never overwritten
    document = tomlkit.parse(path.read_text(encoding="utf-8")) if path.is_file() else tomlkit.document()
    document["model"] = spec
    tmp = private_file(path.with_name(path.name + ".tmp"))
    tmp.write_text(tomlkit.dumps(document), encoding="utf-8")
    os.replace(tmp, path)
    return path


def _optional_path(value: Any) -> Path | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ConfigError("config.toml: adapters_dir must be a folder path")
    return Path(value).expanduser()


QUEUES = ("local", "procrastinate")


def _check_queue(settings: Settings) -> None:
    if settings.queue not in QUEUES:
        raise ConfigError(f"queue must be one of {', '.join(QUEUES)}, not {settings.queue[:40]!r}")
    if settings.queue == "procrastinate" and not settings.resolved_database_url.startswith("postgresql"):
        raise ConfigError(
            'queue = "procrastinate" needs a PostgreSQL database (database_url / MINETUNE_DATABASE_URL): '
            "its workers share the queue through it"
        )
