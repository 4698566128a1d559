"""The one typed definition of unfork's settings.

Each section is a dataclass whose fields carry their help text. From it come:
the defaults, the commented config file (``unfork config init``), the
environment variables (``UNFORK_<SECTION>_<FIELD>``) and the command-line flags
(:func:`unfork.cli.options.config_options`). Precedence: defaults < config file
< environment < flags.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from unfork.errors import UserError
from unfork.paths import get_paths
from unfork.yamlsafe import ALIAS_BOMB_HINT, ALIAS_BOMB_TEXT, BAD_TAG_ERRORS, MAX_YAML_VALUES, expanded_size


def _f(default: Any, help: str, *, choices: tuple[str, ...] | None = None,
       min: float | None = None, max: float | None = None) -> Any:
    """A setting: its default, help text, and the choices or the (inclusive) range it must be in."""
    meta = {"help": help, "choices": choices, "min": min, "max": max}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


# Upper ends of the numeric ranges: far beyond any real use, low enough to catch a typo or an overflow.
_TOKENS = 1 << 24
_COUNT = 10 ** 7
_EPOCHS = 10_000
_STEPS = 10 ** 9
_SEED = 2 ** 32 - 1  # the widest seed every library in the stack (numpy included) accepts


@dataclass
class GeneralConfig:
    log_level: str = _f("WARNING", "Messages shown on stderr from this level up; 'unfork -v' (INFO) and "
                        "'-vv' or '--debug' (DEBUG) win over it.", choices=("DEBUG", "INFO", "WARNING", "ERROR"))


@dataclass
class TaxonomyConfig:
    path: str = _f("", "Taxonomy folder (a git repository). Empty: <data dir>/taxonomy.")
    base: str = _f("origin/main", "Git ref that 'taxonomy diff' compares against; 'empty' means every leaf.")


@dataclass
class ModelsConfig:
    teacher: str = _f("qwen2.5-coder-1.5b-instruct", "Teacher model for data generation and judging (catalog name or path).")
    student: str = _f("smollm2-135m-instruct", "Student model that training starts from (catalog name or path).")
    chat: str = _f("", "Model for 'model serve' and 'model chat'. Empty: the teacher.")


@dataclass
class ServeConfig:
    backend: str = _f("auto", "Serving backend.", choices=("auto", "llama-cpp", "transformers", "vllm"))
    host: str = _f("127.0.0.1", "Address to bind. Keep 127.0.0.1 unless you set an API key.")
    port: int = _f(8000, "Port to listen on.", min=1, max=65535)
    api_key: str = _f("", "If set, every request must send 'Authorization: Bearer <key>'.")
    parallel: int = _f(4, "Requests decoded at the same time (llama.cpp slots).", min=1, max=4096)
    ctx_size: int = _f(4096, "Context window in tokens (shared by the parallel slots for llama.cpp).",
                       min=1, max=_TOKENS)


@dataclass
class ChatConfig:
    system: str = _f("You are a helpful assistant.", "System prompt for chat.")
    temperature: float = _f(0.7, "Sampling temperature.", min=0, max=2)
    max_tokens: int = _f(512, "Most tokens in one answer.", min=1, max=_TOKENS)
    markdown: bool = _f(True, "Render answers as Markdown.")


@dataclass
class GenerateConfig:
    pipeline: str = _f("full", "SDG pipeline: full, simple, or a folder with a pipeline.yaml.")
    num_samples: int = _f(30, "Accepted samples to aim for per leaf.", min=1, max=_COUNT)
    max_concurrency: int = _f(8, "Sequences each teacher endpoint writes at once (a request for n choices counts n); "
                                 "the local teacher gets this many slots.", min=1, max=4096)
    endpoint_urls: list[str] = _f([], "OpenAI-compatible teacher endpoints. Empty: start a local server.")
    endpoint_model: str = _f("", "Model name sent to the endpoints. Empty: the first model the server lists.")
    api_key: str = _f("", "API key for the endpoints.")
    seed: int = _f(42, "Random seed.", min=0, max=_SEED)
    knowledge_samples: int = _f(0, "Accepted samples to aim for per knowledge leaf; 0: the same as num_samples.",
                                min=0, max=_COUNT)
    samples_per_seed: int = _f(0, "If set, each leaf aims for this many accepted samples per seed example it has "
                                  "(ilab's --sdg-scale-factor), instead of num_samples and knowledge_samples.",
                               min=0, max=_COUNT)
    ctx_per_slot: int = _f(2048, "Context window in tokens of each slot of the local teacher server.",
                           min=1, max=_TOKENS)
    request_timeout: float = _f(600.0, "Seconds to wait for one teacher response.", min=1, max=86_400)
    mix: dict[str, Any] = _f({}, "Overrides of the pipeline's mix settings (how accepted samples become "
                                 "training lines), e.g. {knowledge_raft: false}.")


@dataclass
class TrainConfig:
    method: str = _f("lora", "Fine-tuning method.", choices=("lora", "full"))
    epochs: int = _f(3, "Passes over the data.", min=1, max=_EPOCHS)
    learning_rate: float = _f(2e-4, "Peak learning rate.", min=0, max=1)
    effective_batch_size: int = _f(16, "Samples per optimizer step (reached with gradient accumulation).",
                                   min=1, max=_COUNT)
    max_seq_len: int = _f(1024, "Longest sample in tokens; longer ones are dropped and counted.", min=1, max=_TOKENS)
    device: str = _f("auto", "Training device.", choices=("auto", "cpu", "cuda"))
    distributed: str = _f("auto", "With several processes (torchrun): ddp copies the model to every device; fsdp "
                                  "shards weights, gradients and optimizer state across them, for a full "
                                  "fine-tune too big for one device (not LoRA). auto: ddp.",
                          choices=("auto", "ddp", "fsdp"))
    dtype: str = _f("auto", "Training precision.", choices=("auto", "bf16", "fp32"))
    seed: int = _f(42, "Random seed.", min=0, max=_SEED)
    strategy: str = _f("lab-multiphase", "LAB multi-phase (knowledge, then skills with replay) or skills only.",
                       choices=("lab-multiphase", "skills-only"))
    replay_fraction: float = _f(0.2, "Share of the phase-1 (knowledge) samples replayed in phase 2.", min=0, max=1)
    knowledge_epochs: int = _f(0, "Passes over the knowledge phase (LAB phase 1), which memorises facts and "
                                  "often wants more than the skills phase; 0: the same as epochs.",
                               min=0, max=_EPOCHS)
    keep_epoch: str = _f("best", "The epoch of each phase that the next phase starts from and the final model "
                                 "keeps: best (lowest held-out loss) or last.", choices=("best", "last"))
    lora_rank: int = _f(8, "LoRA rank.", min=1, max=65_536)
    lora_alpha: float = _f(16.0, "LoRA alpha (the update is scaled by alpha / rank).", min=0, max=1e6)
    lora_target_modules: list[str] = _f(["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                         "down_proj"], "Linear layers that get LoRA adapters.")
    micro_batch_tokens: int = _f(512, "Tokens per forward pass: samples packed in one row, no padding (memory "
                                      "grows with it; accumulation makes up the effective batch).",
                                    min=1, max=_TOKENS)
    gradient_checkpointing: bool = _f(False, "Recompute activations in the backward pass (less memory, ~30% slower).")
    warmup_steps: int = _f(0, "Linear warm-up steps; 0: 5% of the steps.", min=0, max=_STEPS)
    max_grad_norm: float = _f(1.0, "Gradient clipping norm; 0 turns it off.", min=0, max=1e6)
    save_steps: int = _f(0, "Also checkpoint every N optimizer steps; 0: at the end of each epoch only.",
                         min=0, max=_STEPS)
    keep_checkpoints: int = _f(2, "Resumable checkpoints kept per run (the best of each phase is kept apart).",
                               min=0, max=_COUNT)
    report_to: str = _f("none", "Also log metrics to TensorBoard or W&B.", choices=("none", "tensorboard", "wandb"))


@dataclass
class Config:
    general: GeneralConfig = field(default_factory=GeneralConfig)
    taxonomy: TaxonomyConfig = field(default_factory=TaxonomyConfig)
    models: ModelsConfig = field(default_factory=ModelsConfig)
    serve: ServeConfig = field(default_factory=ServeConfig)
    chat: ChatConfig = field(default_factory=ChatConfig)
    generate: GenerateConfig = field(default_factory=GenerateConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def taxonomy_path(self) -> Path:
        return Path(self.taxonomy.path).expanduser() if self.taxonomy.path else get_paths().taxonomy_dir

    def chat_model(self) -> str:
        return self.models.chat or self.models.teacher


SECTION_DOCS = {
    "general": "General settings.",
    "taxonomy": "Where the taxonomy lives and what 'diff' compares against.",
    "models": "Which models play which role.",
    "serve": "'unfork model serve': the OpenAI-compatible server.",
    "chat": "'unfork model chat'.",
    "generate": "'unfork data generate': synthetic data generation.",
    "train": "'unfork model train'.",
}


_SECTION_TYPES: dict[str, type] = {
    "general": GeneralConfig, "taxonomy": TaxonomyConfig, "models": ModelsConfig,
    "serve": ServeConfig, "chat": ChatConfig, "generate": GenerateConfig, "train": TrainConfig,
}


def field_type(section: str, name: str) -> Any:
    hints = typing.get_type_hints(_SECTION_TYPES[section])
    return hints[name]


def env_var(section: str, name: str) -> str:
    return f"UNFORK_{section.upper()}_{name.upper()}"


class ConfigError(UserError):
    pass


def _suggest(word: str, options: list[str]) -> str | None:
    close = difflib.get_close_matches(word, options, n=1, cutoff=0.5)
    return close[0] if close else None


def unknown_key_error(where: str, key: str, options: list[str]) -> ConfigError:
    close = _suggest(key, options)
    hint = f"did you mean '{close}'?" if close else f"valid keys: {', '.join(sorted(options))}"
    return ConfigError(f"{where}: unknown setting '{key}'", hint=hint)


def coerce(value: Any, typ: Any, where: str) -> Any:
    """Convert a value from a file, the environment or a flag to the field's type."""
    origin = typing.get_origin(typ)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(typ) if a is not type(None)]
        return None if value is None else coerce(value, args[0], where)
    if origin is dict:
        return _mapping(value, where)
    if origin is list:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        (item,) = typing.get_args(typ)
        return [coerce(v, item, where) for v in value]
    if typ is bool:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if typ in (int, float):
        if isinstance(value, bool):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        try:
            return typ(value) if typ is float or not isinstance(value, float) else _exact_int(value)
        except (TypeError, ValueError, OverflowError):
            kind = "a whole number" if typ is int else "a number"
            raise ConfigError(f"{where}: expected {kind}, got {value!r}") from None
    if typ is str:
        if value is None or isinstance(value, (dict, list)):
            raise ConfigError(f"{where}: expected text, got {value!r}")
        return str(value)
    return value


def _mapping(value: Any, where: str) -> dict[str, Any]:
    """A mapping from a file as it is, or from the environment or a flag as YAML text."""
    if isinstance(value, str):
        import yaml

        try:
            value = yaml.safe_load(value) if value.strip() else {}
        except (yaml.YAMLError, *BAD_TAG_ERRORS):
            raise ConfigError(f"{where}: expected a mapping such as {{key: value}}, got {value!r}") from None
        if expanded_size(value) > MAX_YAML_VALUES:
            raise ConfigError(f"{where}: {ALIAS_BOMB_TEXT}", hint=ALIAS_BOMB_HINT)
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: expected a mapping such as {{key: value}}, got {value!r}")
    return {str(k): v for k, v in value.items()}


def _exact_int(value: float) -> int:
    if value != int(value):
        raise ValueError(value)
    return int(value)


def _check_choice(section: str, name: str, value: Any, where: str) -> None:
    meta = {f.name: f for f in dataclasses.fields(_SECTION_TYPES[section])}[name].metadata
    choices = meta.get("choices")
    if choices and value not in choices:
        raise ConfigError(f"{where}: '{value}' is not one of {', '.join(choices)}")
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return
    if not math.isfinite(value):
        raise ConfigError(f"{where}: expected a finite number, got {value!r}")
    lo, hi = meta.get("min"), meta.get("max")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise ConfigError(f"{where}: {value!r} is out of range: it must be {_range_text(lo, hi)}")


def _range_text(lo: float | None, hi: float | None) -> str:
    def num(x: float) -> str:
        return str(int(x)) if float(x).is_integer() else repr(x)

    if lo is not None and hi is not None:
        return f"between {num(lo)} and {num(hi)}"
    return f"at least {num(lo)}" if lo is not None else f"at most {num(hi)}"


def _checked(section: str, name: str, raw: Any, where: str) -> Any:
    fields = {f.name for f in dataclasses.fields(_SECTION_TYPES[section])}
    if name not in fields:
        raise unknown_key_error(where.rsplit(":", 1)[0] if ":" in where else where, f"{section}.{name}",
                                [f"{section}.{n}" for n in fields])
    value = coerce(raw, field_type(section, name), where)
    _check_choice(section, name, value, where)
    return value


def _apply(cfg: Config, section: str, name: str, raw: Any, where: str) -> None:
    setattr(getattr(cfg, section), name, _checked(section, name, raw, where))


def _file_data(path: Path) -> dict[str, Any]:
    import yaml

    from unfork.fsio import NotAFile, read_regular_bytes

    try:
        raw = read_regular_bytes(path)
    except NotAFile as exc:
        raise ConfigError(exc.message, hint="move it away; 'unfork config init' writes a new config file") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    try:  # newlines read as Path.read_text reads them
        text = raw.decode("utf-8").replace("\r\n", "\n").replace("\r", "\n")
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        data = yaml.load(text, Loader=loader)
    except BAD_TAG_ERRORS as exc:
        raise ConfigError(f"{path}: not valid YAML (a tagged value such as '!!int' alone cannot be read: {exc})",
                          hint="remove the '!!' tag") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f":{mark.line + 1}:{mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", exc)
        if isinstance(exc, yaml.reader.ReaderError):  # a character YAML forbids, such as NUL: no mark, an offset
            done = text.encode()[:exc.position].decode(errors="replace") if loader is not yaml.SafeLoader \
                else text[:exc.position]
            at, problem = f":{done.count(chr(10)) + 1}:{len(done) - done.rfind(chr(10))}", exc.reason
        raise ConfigError(f"{path}{at}: not valid YAML ({problem})",
                          hint="fix the file, or recreate it with 'unfork config init --force'") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections")
    if expanded_size(data) > MAX_YAML_VALUES:
        raise ConfigError(f"{path}: {ALIAS_BOMB_TEXT}", hint=ALIAS_BOMB_HINT)
    return data


def read_settings(path: Path) -> dict[str, Any]:
    """A config or profile file as ``{"section.field": value}``, every key and value checked."""
    out: dict[str, Any] = {}
    for section, values in _file_data(path).items():
        if section not in _SECTION_TYPES:
            raise unknown_key_error(str(path), str(section), list(_SECTION_TYPES))
        if values is None:
            continue
        if not isinstance(values, dict):
            raise ConfigError(f"{path}: section '{section}' must be a mapping")
        for name, raw in values.items():
            out[f"{section}.{name}"] = _checked(section, str(name), raw, f"{path}: {section}.{name}")
    return out


PROFILES_DIR = Path(__file__).parent / "profiles"


def load_profile(name: str) -> dict[str, Any]:
    """A shipped profile (``profiles/<name>.yaml``): a job's settings, as overrides for :func:`load_config`."""
    path = PROFILES_DIR / f"{name}.yaml"
    if not path.is_file():
        names = sorted(p.stem for p in PROFILES_DIR.glob("*.yaml"))
        raise ConfigError(f"no profile '{name}'", hint=f"profiles: {', '.join(names)}")
    return read_settings(path)


def load_config(path: Path | None = None, overrides: dict[str, Any] | None = None,
                environ: dict[str, str] | None = None) -> Config:
    """Resolve the settings: defaults < config file < environment < ``overrides`` (flags).

    ``overrides`` maps ``"section.field"`` to a value; ``None`` values are ignored
    (a flag the user did not give).
    """
    cfg = Config()
    path = path or get_paths().config_file
    if path.exists():
        for key, value in read_settings(path).items():
            section, _, name = key.partition(".")
            setattr(getattr(cfg, section), name, value)
    environ = os.environ if environ is None else environ
    known = {env_var(s, f.name): (s, f.name) for s, t in _SECTION_TYPES.items() for f in dataclasses.fields(t)}
    for var, raw in environ.items():
        if var in known:
            section, name = known[var]
            _apply(cfg, section, name, raw, f"environment variable {var}")
        elif var.startswith("UNFORK_") and var not in ("UNFORK_HOME",) and var.count("_") >= 2 \
                and var.split("_")[1].lower() in _SECTION_TYPES:
            raise unknown_key_error("environment", var, list(known))
    for key, raw in (overrides or {}).items():
        if raw is None:
            continue
        section, _, name = key.partition(".")
        _apply(cfg, section, name, raw, f"option --{name.replace('_', '-')}")
    return cfg


def to_dict(cfg: Config) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def render_config_file(cfg: Config | None = None) -> str:
    """The config file with a comment above every setting."""
    import yaml

    cfg = cfg or Config()
    lines = ["# unfork configuration.", "# Precedence: defaults < this file < UNFORK_<SECTION>_<KEY> environment",
             "# variables < command-line flags. 'unfork config show' prints the resolved values.", ""]
    for section, typ in _SECTION_TYPES.items():
        lines.append(f"# {SECTION_DOCS[section]}")
        lines.append(f"{section}:")
        for f in dataclasses.fields(typ):
            help_text = f.metadata.get("help", "")
            choices = f.metadata.get("choices")
            if choices:
                help_text += f" One of: {', '.join(choices)}."
            lines.append(f"  # {help_text} (env: {env_var(section, f.name)})")
            value = getattr(getattr(cfg, section), f.name)
            dumped = yaml.safe_dump({f.name: value}, default_flow_style=True, width=10_000).strip()
            lines.append("  " + dumped[1:-1])
        lines.append("")
    return "\n".join(lines).rstrip("\n") + "\n"
