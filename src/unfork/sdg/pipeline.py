"""Loading a pipeline folder and checking it before anything runs.

A pipeline is a folder with a ``pipeline.yaml`` and the Jinja2 prompt
templates it names. ``pipeline.yaml`` holds one *flow* per kind of leaf
(``freeform_skill``, ``grounded_skill``, ``knowledge``); a flow is a list of
steps, each with a ``name``, a ``type`` (see :mod:`unfork.sdg.steps`), the
columns it ``reads`` and ``writes``, and its options. The check walks every
flow from the leaf's own columns and stops at the first step that reads a
column nobody wrote, or a template that uses a variable its step does not
read. Built-in pipelines (``full``, ``simple``) ship inside the package; copy
one (``unfork data generate --pipeline DIR``) to change prompts or settings.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from unfork.errors import UserError
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


class PipelineError(UserError):
    pass


@dataclass
class Flow:
    name: str
    steps: list[StepSpec]
    samples_per_unit: float = 3.0  # rough accepted samples per unit, to plan the work
    max_units_factor: float = 4.0  # give up after this many times the planned units


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

            self._env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(self.folder)),
                                           undefined=jinja2.StrictUndefined, keep_trailing_newline=False,
                                           autoescape=False)
        return self._env

    def build_steps(self, flow: str) -> list[Step]:
        return [STEP_TYPES[s.type](s, self.templates, self.system_prompt) for s in self.flows[flow].steps]


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

    folder = resolve_folder(name_or_dir)
    where = folder / "pipeline.yaml"
    try:
        data = yaml.safe_load(where.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise PipelineError(f"{where}: not valid YAML ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("flows"), dict):
        raise PipelineError(f"{where}: needs a 'flows' mapping (freeform_skill, grounded_skill, knowledge)")
    flows = {}
    for fname, fdata in data["flows"].items():
        if fname not in FLOWS:
            raise PipelineError(f"{where}: unknown flow '{fname}'", hint=f"flows: {', '.join(FLOWS)}")
        flows[fname] = _flow(where, fname, fdata)
    pipe = Pipeline(str(data.get("name") or folder.name), folder, flows, str(data.get("teacher_system") or ""),
                    dict(data.get("mix") or {}), folder_hash(folder))
    check_pipeline(pipe, where)
    return pipe


def _flow(where: Path, fname: str, fdata: Any) -> Flow:
    if not isinstance(fdata, dict) or not isinstance(fdata.get("steps"), list):
        raise PipelineError(f"{where}: flow '{fname}' needs a list of 'steps'")
    steps = []
    for i, s in enumerate(fdata["steps"]):
        if not isinstance(s, dict):
            raise PipelineError(f"{where}: flow '{fname}', step {i + 1} is not a mapping")
        s = dict(s)
        name = str(s.pop("name", f"step{i + 1}"))
        typ = s.pop("type", None)
        if typ not in STEP_TYPES:
            raise PipelineError(f"{where}: step '{name}' (flow {fname}) has type {typ!r}",
                                hint=f"types: {', '.join(STEP_TYPES)}")
        reads, writes = s.pop("reads", []), s.pop("writes", [])
        if not all(isinstance(x, list) for x in (reads, writes)):
            raise PipelineError(f"{where}: step '{name}' (flow {fname}): 'reads' and 'writes' must be lists")
        steps.append(StepSpec(name, typ, [str(c) for c in reads], [str(c) for c in writes], s))
    return Flow(fname, steps, float(fdata.get("samples_per_unit", 3.0)), float(fdata.get("max_units_factor", 4.0)))


def check_pipeline(pipe: Pipeline, where: Path | str = "") -> None:
    """Every column read is written earlier (or is a leaf column); templates use only what they read."""
    import jinja2
    from jinja2 import meta

    for fname, flow in pipe.flows.items():
        have = set(LEAF_COLUMNS[fname])
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
                if not tname:
                    raise PipelineError(f"{at} needs a 'template'")
                try:
                    source = pipe.templates.loader.get_source(pipe.templates, tname)[0]
                    used = meta.find_undeclared_variables(pipe.templates.parse(source))
                except jinja2.TemplateNotFound:
                    raise PipelineError(f"{at}: template '{tname}' not found in {pipe.folder}") from None
                except jinja2.TemplateSyntaxError as exc:
                    raise PipelineError(f"{at}: template '{tname}' line {exc.lineno}: {exc.message}") from None
                extra = sorted(used - set(spec.reads) - TEMPLATE_EXTRAS[spec.type])
                if extra:
                    raise PipelineError(f"{at}: template '{tname}' uses '{extra[0]}', which the step does not read",
                                        hint="add it to 'reads' or remove it from the template")
            have |= set(spec.writes)
        lacking = [c for c in PRODUCES[fname] if c not in have]
        if lacking:
            raise PipelineError(f"{where}: flow '{fname}' never writes '{lacking[0]}'",
                                hint=f"a {fname} flow must end with the columns {', '.join(PRODUCES[fname])}")
