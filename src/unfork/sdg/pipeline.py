"""Loading a pipeline folder and checking it before anything runs.

A pipeline is a folder with a ``pipeline.yaml`` and the Jinja2 prompt
templates it names. ``pipeline.yaml`` holds one *flow* per kind of leaf
(``freeform_skill``, ``grounded_skill``, ``knowledge``); a flow is a list of
steps, each with a ``name``, a ``type`` (see :mod:`unfork.sdg.steps`), the
columns it ``reads`` and ``writes``, and its options. The check walks every
flow from the leaf's own columns and stops at the first step that reads a
column nobody wrote, or a template that uses a variable its step does not
read. A flow's ``inputs`` are columns its caller gives each unit (the
knowledge exam's chunks), so only that caller runs it. Built-in pipelines
(``full``, ``simple``) ship inside the package; copy one
(``unfork data generate --pipeline DIR``) to change prompts or settings.
"""

from __future__ import annotations

import functools
import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from unfork.errors import UserError
from unfork.sdg import parsers
from unfork.sdg.steps import STEP_TYPES, TEMPLATED, Step, StepSpec

BUILTIN_DIR = Path(__file__).parent / "pipelines"
FLOWS = ("freeform_skill", "grounded_skill", "knowledge")
LEAF_COLUMNS = {
    "freeform_skill": {"leaf", "task_description", "seed_examples"},
    "grounded_skill": {"leaf", "task_description", "seed_examples"},
    "knowledge": {"leaf", "domain", "document_outline", "seed_examples", "documents"},
}
PRODUCES = {
    "freeform_skill": ("question", "answer"),
    "grounded_skill": ("context", "question", "answer"),
    "knowledge": ("chunk", "question", "answer"),
}
TEMPLATE_EXTRAS = {"llm": {"n"}, "judge": {"items"}}
JUDGE_PARSERS = ("scores", "verdicts")
LLM_PARSERS = tuple(sorted(set(parsers.PARSERS) - set(JUDGE_PARSERS)))


class PipelineError(UserError):
    pass


@dataclass
class Flow:
    name: str
    steps: list[StepSpec]
    samples_per_unit: float = 3.0  # rough accepted samples per unit, to plan the work
    max_units_factor: float = 4.0  # give up after this many times the planned units
    inputs: list[str] = field(default_factory=list)  # columns the caller puts in each unit's first row


@dataclass
class Pipeline:
    name: str
    folder: Path
    flows: dict[str, Flow]
    system_prompt: str = ""
    mix: dict[str, Any] = field(default_factory=dict)
    hash: str = ""
    _env: Any = None

    @property
    def templates(self) -> Any:
        if self._env is None:
            import jinja2
            from jinja2.sandbox import ImmutableSandboxedEnvironment

            # Sandboxed: a pipeline folder may come from anyone, and its templates must not reach os.system.
            self._env = ImmutableSandboxedEnvironment(loader=_folder_loader()(str(self.folder)),
                                                      undefined=jinja2.StrictUndefined,
                                                      keep_trailing_newline=False, autoescape=False)
            self._env.template_class = _sandboxed_template()
        return self._env

    def build_steps(self, flow: str) -> list[Step]:
        return [STEP_TYPES[s.type](s, self.templates, self.system_prompt) for s in self.flows[flow].steps]


@functools.cache
def _folder_loader() -> type:
    """A loader that reads only regular files inside the pipeline folder: a shared folder's template
    may not be a link that turns a file of the maintainer's into a prompt."""
    import jinja2

    class FolderLoader(jinja2.FileSystemLoader):
        def get_source(self, environment: Any, template: str) -> Any:
            source, filename, uptodate = super().get_source(environment, template)
            root = Path(self.searchpath[0]).resolve()
            path = Path(filename)
            if path.is_symlink() or not path.resolve().is_relative_to(root):
                raise PipelineError(f"{filename}: a template must be a file inside the pipeline folder, "
                                    "not a link", hint="copy the template into the folder")
            return source, filename, uptodate

    return FolderLoader


@functools.cache
def _sandboxed_template() -> type:
    """A template class whose sandbox violations become a :class:`PipelineError` naming the file."""
    import jinja2
    from jinja2.exceptions import SecurityError

    class SandboxedTemplate(jinja2.Template):
        def render(self, *args: Any, **kwargs: Any) -> str:
            try:
                return super().render(*args, **kwargs)
            except SecurityError as exc:
                raise PipelineError(f"{self.filename}: the template tried something templates may not ({exc})",
                                    hint="templates may use the step's columns, not Python's internals") from None

    return SandboxedTemplate


def resolve_folder(name_or_dir: str) -> Path:
    builtin = BUILTIN_DIR / name_or_dir
    if "/" not in name_or_dir and (builtin / "pipeline.yaml").is_file():
        return builtin
    path = Path(name_or_dir).expanduser()
    if path.is_file() and path.name.endswith((".yaml", ".yml")):
        path = path.parent
    if (path / "pipeline.yaml").is_file():
        return path
    names = sorted(p.name for p in BUILTIN_DIR.iterdir() if (p / "pipeline.yaml").is_file())
    raise PipelineError(f"no pipeline '{name_or_dir}': not a built-in one and not a folder with a pipeline.yaml",
                        hint=f"built-in pipelines: {', '.join(names)}; or copy one from {BUILTIN_DIR}")


def folder_hash(folder: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.suffix in (".yaml", ".yml", ".j2"):
            h.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


def load_pipeline(name_or_dir: str) -> Pipeline:
    import yaml

    from unfork.yamlsafe import (
        ALIAS_BOMB_HINT,
        ALIAS_BOMB_TEXT,
        BAD_TAG_ERRORS,
        MAX_YAML_VALUES,
        expanded_size,
    )

    folder = resolve_folder(name_or_dir)
    where = folder / "pipeline.yaml"
    try:
        text = where.read_bytes().decode("utf-8")
        data = yaml.safe_load(text)
    except UnicodeDecodeError as exc:
        raise PipelineError(f"{where}: {_not_utf8(exc)}", hint="save it as UTF-8") from None
    except yaml.YAMLError as exc:
        raise PipelineError(f"{where}: not valid YAML ({exc})") from None
    except BAD_TAG_ERRORS as exc:
        raise PipelineError(f"{where}: not valid YAML (a tagged value such as '!!int' alone cannot be read: {exc})",
                            hint="remove the '!!' tag") from None
    if expanded_size(data) > MAX_YAML_VALUES:
        raise PipelineError(f"{where}: {ALIAS_BOMB_TEXT}", hint=ALIAS_BOMB_HINT)
    if not isinstance(data, dict) or not isinstance(data.get("flows"), dict):
        raise PipelineError(f"{where}: needs a 'flows' mapping (freeform_skill, grounded_skill, knowledge)")
    src = _Source(where, text)
    if not isinstance(data.get("mix") or {}, dict):
        raise PipelineError(f"{src.at('mix')}: 'mix' must be a mapping, not {data['mix']!r}")
    flows = {}
    for fname, fdata in data["flows"].items():
        if fname not in FLOWS:
            raise PipelineError(f"{where}: unknown flow '{fname}'", hint=f"flows: {', '.join(FLOWS)}")
        flows[fname] = _flow(src, fname, fdata)
    pipe = Pipeline(str(data.get("name") or folder.name), folder, flows, str(data.get("teacher_system") or ""),
                    dict(data.get("mix") or {}), folder_hash(folder))
    check_pipeline(pipe, where)
    return pipe


def _not_utf8(exc: UnicodeDecodeError) -> str:
    return f"not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start})"


@dataclass
class _Source:
    """A pipeline file and its text, to name the line of a bad value."""

    path: Path
    text: str

    def at(self, *keys: str | int) -> str:
        """``path, line N`` for the value under ``keys`` (mapping keys and list indexes), or the path."""
        import yaml

        try:
            node = yaml.compose(self.text, Loader=yaml.SafeLoader)
        except yaml.YAMLError:
            return str(self.path)
        for key in keys:
            if isinstance(node, yaml.MappingNode):
                node = next((v for k, v in node.value if k.value == key), None)
            elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
                node = node.value[key]
            else:
                node = None
            if node is None:
                return str(self.path)
        return f"{self.path}, line {node.start_mark.line + 1}"


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


# (step type, option) -> (test, what the value must be); the step's own checks cover n, choices and max_tokens
OPTION_RULES: dict[tuple[str, str], tuple[Callable[[Any], bool], str]] = {
    ("sample", "k"): (_is_count, "a whole number of at least 0 (0: all)"),
    ("llm", "parser"): (lambda v: v in LLM_PARSERS, f"one of {', '.join(LLM_PARSERS)}"),
    ("llm", "temperature"): (lambda v: _is_number(v) and v >= 0, "a number of at least 0"),
    ("judge", "parser"): (lambda v: v in JUDGE_PARSERS, f"one of {', '.join(JUDGE_PARSERS)}"),
    ("judge", "temperature"): (lambda v: _is_number(v) and v >= 0, "a number of at least 0"),
    ("judge", "threshold"): (lambda v: _is_number(v) and v >= 0, "a number of at least 0"),
    ("dedup", "threshold"): (lambda v: _is_number(v) and 0 < v <= 1, "a number above 0 and at most 1"),
    ("dedup", "method"): (lambda v: v in ("rouge_l", "minhash"), "rouge_l or minhash"),
}


def _check_options(src: _Source, fname: str, i: int, spec: StepSpec) -> None:
    for key, value in spec.options.items():
        test, must = OPTION_RULES.get((spec.type, key), (None, ""))
        if test is not None and not test(value):
            at = src.at("flows", fname, "steps", i, key)
            raise PipelineError(f"{at}: step '{spec.name}' (flow {fname}): '{key}' must be {must}, not {value!r}")


def _flow_number(src: _Source, fname: str, fdata: dict[str, Any], key: str, default: float) -> float:
    value = fdata.get(key, default)
    if not _is_number(value) or value <= 0:
        raise PipelineError(f"{src.at('flows', fname, key)}: flow '{fname}': '{key}' must be a number above 0, "
                            f"not {value!r}")
    return float(value)


def _flow(src: _Source, fname: str, fdata: Any) -> Flow:
    where = src.path
    if not isinstance(fdata, dict) or not isinstance(fdata.get("steps"), list):
        raise PipelineError(f"{where}: flow '{fname}' needs a list of 'steps'")
    steps = []
    for i, s in enumerate(fdata["steps"]):
        if not isinstance(s, dict):
            raise PipelineError(f"{where}: flow '{fname}', step {i + 1} is not a mapping")
        s = dict(s)
        name = str(s.pop("name", f"step{i + 1}"))
        typ = s.pop("type", None)
        if not isinstance(typ, str) or typ not in STEP_TYPES:
            raise PipelineError(f"{where}: step '{name}' (flow {fname}) has type {typ!r}",
                                hint=f"types: {', '.join(STEP_TYPES)}")
        reads, writes = s.pop("reads", []), s.pop("writes", [])
        if not all(isinstance(x, list) for x in (reads, writes)):
            raise PipelineError(f"{where}: step '{name}' (flow {fname}): 'reads' and 'writes' must be lists")
        steps.append(StepSpec(name, typ, [str(c) for c in reads], [str(c) for c in writes], s))
        _check_options(src, fname, i, steps[-1])
    inputs = fdata.get("inputs", [])
    if not isinstance(inputs, list):
        raise PipelineError(f"{where}: flow '{fname}': 'inputs' must be a list")
    return Flow(fname, steps, _flow_number(src, fname, fdata, "samples_per_unit", 3.0),
                _flow_number(src, fname, fdata, "max_units_factor", 4.0),
                [str(c) for c in inputs])


def check_pipeline(pipe: Pipeline, where: Path | str = "") -> None:
    """Every column read is written earlier (or is a leaf column); templates use only what they read."""
    import jinja2
    from jinja2 import meta

    for fname, flow in pipe.flows.items():
        have = set(LEAF_COLUMNS[fname]) | set(flow.inputs)
        names = set()
        for spec in flow.steps:
            at = f"{where}: step '{spec.name}' (flow {fname})"
            if spec.name in names:
                raise PipelineError(f"{at}: another step has the same name")
            names.add(spec.name)
            missing = [c for c in spec.reads if c not in have]
            if missing:
                raise PipelineError(f"{at} reads column '{missing[0]}', which no earlier step writes",
                                    hint=f"available here: {', '.join(sorted(have))}")
            if not spec.writes and spec.type in ("sample", "chunk", "llm", "judge"):
                raise PipelineError(f"{at} must declare the columns it writes")
            try:
                STEP_TYPES[spec.type](spec, pipe.templates, pipe.system_prompt)
            except ValueError as exc:
                raise PipelineError(f"{at}: {exc}") from None
            if spec.type in TEMPLATED:
                tname = spec.options.get("template")
                if not tname or not isinstance(tname, str):
                    raise PipelineError(f"{at} needs a 'template': the name of a file in the folder, not {tname!r}")
                try:
                    source = pipe.templates.loader.get_source(pipe.templates, tname)[0]
                    tree = pipe.templates.parse(source)
                    used = meta.find_undeclared_variables(tree)
                except jinja2.TemplateNotFound:
                    raise PipelineError(f"{at}: template '{tname}' not found in {pipe.folder}") from None
                except jinja2.TemplateSyntaxError as exc:
                    raise PipelineError(f"{at}: template '{tname}' line {exc.lineno}: {exc.message}") from None
                except UnicodeDecodeError as exc:
                    raise PipelineError(f"{at}: template '{tname}' is {_not_utf8(exc)}",
                                        hint="save it as UTF-8") from None
                _check_no_internals(tree, f"{at}: template '{tname}'")
                extra = sorted(used - set(spec.reads) - TEMPLATE_EXTRAS[spec.type])
                if extra:
                    raise PipelineError(f"{at}: template '{tname}' uses '{extra[0]}', which the step does not read",
                                        hint="add it to 'reads' or remove it from the template")
            have |= set(spec.writes)
        lacking = [c for c in PRODUCES[fname] if c not in have]
        if lacking:
            raise PipelineError(f"{where}: flow '{fname}' never writes '{lacking[0]}'",
                                hint=f"a {fname} flow must end with the columns {', '.join(PRODUCES[fname])}")


def _check_no_internals(tree: Any, at: str) -> None:
    """Refuse ``x.__init__``, ``x['_y']`` and ``x|attr('_y')`` at load time, before the sandbox stops them mid-run."""
    from jinja2 import nodes

    for node in tree.find_all((nodes.Getattr, nodes.Getitem, nodes.Filter)):
        name = None
        if isinstance(node, nodes.Getattr):
            name = node.attr
        elif isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const):
            name = node.arg.value
        elif isinstance(node, nodes.Filter) and node.name == "attr" and node.args \
                and isinstance(node.args[0], nodes.Const):
            name = node.args[0].value
        if isinstance(name, str) and name.startswith("_"):
            raise PipelineError(f"{at} line {node.lineno}: '{name}' reaches into Python's internals",
                                hint="templates may use the step's columns and their fields, nothing starting with '_'")
