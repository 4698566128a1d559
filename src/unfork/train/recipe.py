"""The fine-tuning recipe: LoRA or full, one or two LAB phases, resumable, data-parallel or sharded.

Read :func:`train` top to bottom: set-up, data, run folder, model, then for
each phase the loop (packed micro-batches, gradient accumulation to the
effective batch, clipping, checkpoints, held-out loss each epoch keeping the
best), then the self-describing output folder (:class:`unfork.contracts.TrainingRun`)::

    <run>/training.json        resolved settings, data summary, phase results; "complete" once final/ is there
    <run>/data_manifest.json   the input files with SHA-256 and row counts
    <run>/metrics.jsonl        one row per optimizer step and per evaluation
    <run>/checkpoints/         resumable state (rerun the same command to continue)
    <run>/phases/<name>/best.safetensors   best trained tensors of each phase
    <run>/adapter/             LoRA adapter in peft's layout (LoRA runs)
    <run>/final/               merged Hugging Face model, tokenizer, chat template, model.json

The loss is the sum of cross-entropies over assistant tokens divided by the
number of assistant tokens in the whole optimizer step (all micro-batches, all
processes), so the gradient is the same however the step is split. Only the
rows of the output head that have a target are computed.

Under torchrun, ``--distributed`` picks DDP or FSDP (see distributed.py). With
FSDP every forward and backward is a collective, so each process runs as many
micro-batches as the busiest one, the extra ones weighted zero; saving gathers
full tensors (see checkpoint.py) and rank 0 writes them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import hashlib
import json
import math
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from unfork import fsio
from unfork.config import TrainConfig
from unfork.contracts import TrainingInfo, TrainingRun
from unfork.errors import UserError
from unfork.train import attention, checkpoint, distributed
from unfork.train.data import (
    IGNORE,
    DataFiles,
    Prepared,
    find_data,
    pack,
    prepare,
    shard,
    step_plan,
)
from unfork.train.lora import apply_lora, merge_lora, save_adapter
from unfork.train.report import Reporter
from unfork.train.run_folder import clear_for_fresh

EvalHook = Callable[[nn.Module, Any, str, int], float]
"""``hook(model, tokenizer, phase_name, epoch) -> score``, lower is better; replaces held-out loss."""


LOSS_CHUNK = 256
"""Target rows per output-head chunk: its logits (rows x vocabulary, in float32) exist one chunk at a time."""


def _head_loss(head: nn.Module, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(head(hidden).float(), targets, reduction="sum")


def chunked_head_loss(head: nn.Module, hidden: torch.Tensor, targets: torch.Tensor,
                      chunk: int = LOSS_CHUNK) -> torch.Tensor:
    """``cross_entropy(head(hidden), targets, reduction="sum")`` without holding every row's logits.

    With a large vocabulary the target rows' logits are a step's largest allocation, so each chunk
    is checkpointed: the forward keeps only its inputs and the backward recomputes its logits.
    """
    if hidden.shape[0] <= chunk or not torch.is_grad_enabled():
        return _head_loss(head, hidden, targets)
    from torch.utils.checkpoint import checkpoint

    parts = [checkpoint(_head_loss, head, h, t, use_reentrant=False)
             for h, t in zip(hidden.split(chunk), targets.split(chunk), strict=True)]
    return torch.stack(parts).sum()


class CausalLMLoss(nn.Module):
    """Summed cross-entropy over target tokens of a packed row; the output head sees only those rows."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, position_ids: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        extra = {}
        if input_ids.shape[0] == 1:  # sample boundaries, for variable-length attention (ignored by the others)
            cu = attention.cu_seq_lens(position_ids)
            extra = {"cu_seq_lens_q": cu, "cu_seq_lens_k": cu}
        hidden = self.model.base_model(input_ids=input_ids, position_ids=position_ids, use_cache=False,
                                       **extra).last_hidden_state
        keep = targets != IGNORE
        return chunked_head_loss(self.model.get_output_embeddings(), hidden[keep], targets[keep])


# --------------------------------------------------------------------------- choices made once


def device_kind(choice: str) -> str:
    """``cuda`` or ``cpu`` for ``--device`` (``auto``: a GPU when torch sees one)."""
    if choice == "cuda" or (choice == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise UserError("--device cuda was asked for, but torch sees no CUDA device")
        return "cuda"
    return "cpu"


def cpu_has_bf16() -> bool:
    """AVX-512 BF16 or AMX: the CPU computes in bf16 natively (otherwise bf16 is emulated and slower)."""
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def pick_dtype(choice: str, device: torch.device) -> torch.dtype:
    """``auto``: bf16 on GPUs that support it and on CPUs with native bf16, else fp32 (emulated bf16 is slower)."""
    if choice == "bf16":
        return torch.bfloat16
    if choice == "fp32":
        return torch.float32
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    return torch.bfloat16 if cpu_has_bf16() else torch.float32


def heap_trimmer(device: torch.device) -> Callable[[], None]:
    """A call that hands the heap's free pages back to the OS (glibc's ``malloc_trim``), else a no-op.

    On the CPU every step allocates and frees activations of new sizes, and glibc would keep
    the freed pages, so the resident memory would creep up step after step.
    """
    if device.type != "cpu":
        return lambda: None
    import ctypes
    import ctypes.util

    try:
        trim = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc (macOS, musl): their allocators behave differently
        return lambda: None
    return lambda: trim(0)


@dataclass
class Phase:
    name: str
    train_rows: list[dict[str, Any]]
    test_rows: list[dict[str, Any]]


def plan_phases(files: DataFiles, strategy: str, replay_fraction: float, seed: int) -> list[Phase]:
    """LAB: knowledge, then skills plus a replayed share of knowledge; or skills only; or one file."""
    def rows(p: Path | None) -> list[dict[str, Any]]:
        return files.read(p) if p else []

    test_all = rows(files.test.get("all"))
    knowledge, skills = rows(files.train_knowledge), rows(files.train_skills)
    if not knowledge and not skills:
        return [Phase("train", rows(files.train_all), test_all)]
    if strategy == "skills-only":
        if not skills:
            raise UserError(f"{files.root} has no skills data (train_skills.jsonl)",
                            hint="use --strategy lab-multiphase")
        return [Phase("skills", skills, rows(files.test.get("skills")) or test_all)]
    phases = []
    if knowledge:
        phases.append(Phase("knowledge", knowledge, rows(files.test.get("knowledge")) or test_all))
    if skills:
        replay = random.Random(seed).sample(knowledge, round(len(knowledge) * replay_fraction))
        phases.append(Phase("skills", skills + replay, rows(files.test.get("skills")) or test_all))
    return phases


def run_key(settings: dict[str, Any]) -> str:
    """What makes two runs the same run (a rerun resumes it): everything but where it runs."""
    where = ("device", "distributed", "keep_checkpoints", "save_steps", "report_to")
    same = {k: v for k, v in settings.items() if k not in where}
    return hashlib.sha256(json.dumps(same, sort_keys=True).encode()).hexdigest()


def lr_lambda(warmup: int, total: int) -> Callable[[int], float]:
    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return f


# --------------------------------------------------------------------------- evaluation


def padded(real: list[Any], spare: list[Any], shape: tuple[int, int], count: int) -> list[tuple[Any, bool]]:
    """``real`` micro-batches marked True, then copies of ``spare`` packed, marked False, up to ``count``."""
    filler = pack(spare, *shape)[:1] * (count - len(real)) if count > len(real) else []
    return [(mb, True) for mb in real] + [(mb, False) for mb in filler]


@torch.no_grad()
def held_out_loss(loss_fn: nn.Module, data: Prepared, shape: tuple[int, int], device: torch.device,
                  dist: distributed.Dist, autocast: Any, sharded: bool = False) -> float | None:
    """Mean loss per assistant token over ``data`` (split across processes)."""
    if not data.samples:
        return None
    mine = shard(list(range(len(data.samples))), data.samples, dist.rank, dist.world)
    total = 0.0
    was_training = loss_fn.training
    loss_fn.eval()
    real = pack([data.samples[i] for i in mine], *shape)
    count = distributed.all_max(dist, len(real), device) if sharded else len(real)
    for mb, counted in padded(real, data.samples[:1], shape, count):
        with autocast():
            out = float(loss_fn(*mb.tensors(device)))
        if counted:
            total += out
    loss_fn.train(was_training)
    return distributed.all_sum(dist, total, device) / data.target_tokens


# --------------------------------------------------------------------------- the recipe


def train(cfg: TrainConfig, *, model: str, data_path: str | Path | None = None, output_dir: Path | None = None,
          fresh: bool = False, eval_hook: EvalHook | None = None) -> Path:
    """Fine-tune ``model`` on the data at ``data_path`` (default: the newest dataset); return the run folder."""
    import transformers

    transformers.utils.logging.disable_progress_bar()
    # 1. Where and how: processes, device, precision, seeds.
    where = choose_where(cfg, eval_hook)
    random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)

    # 2. Data: files, phases, rendering with the model's chat template (drop, never truncate).
    inputs = load_inputs(cfg, model, data_path, where.dist)

    # 3. The run folder: a rerun of the same settings on the same data resumes it.
    manifest = inputs.files.manifest()
    settings = {**dataclasses.asdict(cfg), "model": str(inputs.base.path), "model_name": inputs.base.name,
                "data": {k: v["sha256"] for k, v in manifest["files"].items()}}
    key = run_key(settings)
    with claim_run(cfg, key, inputs.base.name, output_dir, fresh, where.dist) as run:
        return _train_in(run, cfg, where, inputs, settings, key, manifest, eval_hook)


def _train_in(run: TrainingRun, cfg: TrainConfig, where: Where, inputs: Inputs, settings: dict[str, Any], key: str,
              manifest: dict[str, Any], eval_hook: EvalHook | None) -> Path:
    """Steps 3 to 6 of :func:`train`, in the run folder this process holds."""
    if run.is_complete():
        if where.dist.main:
            print(f"{run.root} is already trained (pass --fresh to train again)")
        distributed.teardown(where.dist)
        return run.root
    info = start_info(run, key, settings, manifest, inputs.prepared, where)
    report = Reporter(run.root, enabled=where.dist.main, report_to=cfg.report_to, settings=settings)
    for p, tr, _ in inputs.prepared:
        report.message(f"{p.name}: {len(tr.samples)} samples, {tr.tokens:,} tokens "
                       f"({tr.target_tokens:,} trained); dropped {tr.dropped_too_long} longer than "
                       f"{cfg.max_seq_len} tokens, {tr.dropped_no_target} without an answer")
    for note in inputs.files.skipped.values():
        report.message(note)

    # 4. The model, and where a stopped run left off.
    net, loss_fn = build_model(cfg, inputs.base, where)
    loop = Loop(cfg, where, run, settings, net, loss_fn, inputs.tokenizer, report, autocast_for(cfg, where),
                heap_trimmer(where.device), eval_hook)
    resume_from = checkpoint.latest(run.checkpoints)
    pos = checkpoint.Position()
    if resume_from is not None:
        pos = checkpoint.Position(**checkpoint.read_state(resume_from)["position"])
        report.message(f"Resuming from {resume_from.name} (phase {pos.phase + 1}, epoch {pos.epoch + 1}, "
                       f"step {pos.step_in_epoch})")

    # 5. The phases, each continuing from the best epoch of the one before.
    for phase_index, (phase, train_data, test_data) in enumerate(inputs.prepared):
        if phase_index < pos.phase:
            continue
        label = f"{phase.name} ({phase_index + 1}/{len(inputs.prepared)})"
        pos = run_phase(loop, phase_index, label, phase, train_data, test_data,
                        resume_from if pos.phase == phase_index else None)
        info.phases[phase.name] = {"best_epoch": pos.best_epoch, "best_eval_loss": pos.best_eval_loss,
                                   "steps": pos.global_step}
        if where.dist.main:
            run.write_info(info)
        resume_from = None
        pos = checkpoint.Position(phase=phase_index + 1)

    # 6. The output folder: adapter, merged model, tokenizer and chat template; then the run is complete.
    finish(loop, info, inputs.base)
    return run.root


@dataclass
class Where:
    """Processes, device, precision and parallelism of a run."""

    dist: distributed.Dist
    device: torch.device
    dtype: torch.dtype
    mode: str

    @property
    def sharded(self) -> bool:
        return self.mode == "fsdp"


def choose_where(cfg: TrainConfig, eval_hook: EvalHook | None) -> Where:
    """Choose the device once: the process group's backend and the tensors' device follow from it."""
    kind = device_kind(cfg.device)
    dist = distributed.setup(kind)
    device = torch.device("cuda", dist.local_rank) if kind == "cuda" else torch.device("cpu")
    where = Where(dist, device, pick_dtype(cfg.dtype, device), distributed.pick_mode(cfg.distributed, dist, cfg.method))
    if where.sharded and eval_hook is not None:
        raise UserError("an evaluation hook runs the model outside the loss, which FSDP does not gather for",
                        hint="use --distributed ddp")
    return where


@dataclass
class Inputs:
    """The resolved base model, its tokenizer, and each phase's rendered train and test samples."""

    files: DataFiles
    base: Any
    tokenizer: Any
    prepared: list[tuple[Phase, Prepared, Prepared]]


def load_inputs(cfg: TrainConfig, model: str, data_path: str | Path | None, dist: distributed.Dist) -> Inputs:
    from transformers import AutoTokenizer

    from unfork.models import ensure_hf
    from unfork.paths import get_paths

    files = find_data(data_path, get_paths().datasets_dir)
    base = ensure_hf(model) if dist.main else None  # one process downloads, the others wait for it
    distributed.barrier(dist)
    base = base or ensure_hf(model)
    tokenizer = AutoTokenizer.from_pretrained(base.path)
    if not tokenizer.chat_template:
        raise UserError(f"{base.path} has no chat template", hint="training renders samples with it")
    phases = plan_phases(files, cfg.strategy, cfg.replay_fraction, cfg.seed)
    prepared = [(p, prepare(p.train_rows, tokenizer, cfg.max_seq_len), prepare(p.test_rows, tokenizer, cfg.max_seq_len))
                for p in phases]
    for p, tr, _ in prepared:
        if not tr.samples:
            raise UserError(f"phase '{p.name}': {tr.why_empty(cfg.max_seq_len)}")
    return Inputs(files, base, tokenizer, prepared)


@contextlib.contextmanager
def claim_run(cfg: TrainConfig, key: str, base_name: str, output_dir: Path | None, fresh: bool,
              dist: distributed.Dist) -> Iterator[TrainingRun]:
    """The run folder for ``key``, locked while it trains; one of other settings is refused (unless ``fresh``)."""
    from unfork.paths import get_paths

    run = TrainingRun(Path(output_dir) if output_dir else get_paths().checkpoints_dir / f"{base_name}-{cfg.method}-{key[:8]}")
    held = fsio.run_folder(run.root, run.root.parent, run.root.name) if dist.main else contextlib.nullcontext()
    with held:
        if dist.main:
            if fresh:
                clear_for_fresh(run)
            if run.info_path.is_file():
                old = run.read_info()
                if old is None or old.key != key:
                    raise UserError(f"{run.root} holds a run with other settings or data",
                                    hint="pass --fresh to start over there, or another --output-dir")
        distributed.barrier(dist)
        yield run


def start_info(run: TrainingRun, key: str, settings: dict[str, Any], manifest: dict[str, Any],
               prepared: list[tuple[Phase, Prepared, Prepared]], where: Where) -> TrainingInfo:
    """Write the data manifest and an unfinished ``training.json`` (keeping a resumed run's start and phases)."""
    if where.dist.main:
        run.root.mkdir(parents=True, exist_ok=True)
        run.write_data_manifest(manifest)
        started = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
        old = run.read_info()
        run.write_info(TrainingInfo(
            key=key, started=(old.started if old else None) or started,
            resumed=old.resumed + [started] if old else [], settings=settings,
            dtype=str(where.dtype).removeprefix("torch."), device=str(where.device), world_size=where.dist.world,
            distributed=where.mode, data={p.name: {"train": tr.summary(), "test": te.summary()} for p, tr, te in prepared},
            phases=old.phases if old else {}))
    distributed.barrier(where.dist)
    info = run.read_info()
    if info is None:
        raise UserError(f"cannot read {run.info_path}")
    return info


def build_model(cfg: TrainConfig, base: Any, where: Where) -> tuple[nn.Module, nn.Module]:
    """Full weights in fp32 (bf16 through autocast), or frozen weights in the compute dtype with fp32 LoRA adapters."""
    from transformers import AutoModelForCausalLM

    lora = cfg.method == "lora"
    net = AutoModelForCausalLM.from_pretrained(base.path, dtype=where.dtype if lora else torch.float32)
    if not where.sharded:  # FSDP moves each layer to the device as it shards it: the whole model never is there
        net.to(where.device)
    net.set_attn_implementation(attention.register())
    if cfg.gradient_checkpointing:
        net.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if lora:
        apply_lora(net, cfg.lora_rank, cfg.lora_alpha, cfg.lora_target_modules)
    net.train()
    return net, distributed.wrap(CausalLMLoss(net), where.dist, where.device, where.mode, net)


def autocast_for(cfg: TrainConfig, where: Where) -> Callable[[], Any]:
    def autocast() -> Any:
        if cfg.method == "lora" or where.dtype == torch.float32:
            return torch.autocast(where.device.type, enabled=False)
        return torch.autocast(where.device.type, dtype=where.dtype)
    return autocast


@dataclass
class Loop:
    """What every step of every phase uses."""

    cfg: TrainConfig
    where: Where
    run: TrainingRun
    settings: dict[str, Any]
    net: nn.Module
    loss_fn: nn.Module
    tokenizer: Any
    report: Reporter
    autocast: Callable[[], Any]
    trim_heap: Callable[[], None]
    eval_hook: EvalHook | None

    @property
    def shape(self) -> tuple[int, int]:
        # One row of packed samples per forward pass; attention runs per sample (see attention.py).
        return (max(1, self.cfg.micro_batch_tokens), 1)

    def save_checkpoint(self, optimizer: Any, scheduler: Any, pos: checkpoint.Position) -> None:
        if self.where.dist.main or self.where.sharded:  # gathering shards takes every process; rank 0 writes
            checkpoint.save(self.run.checkpoints / f"p{pos.phase}-s{pos.global_step:06d}", model=self.net,
                            optimizer=optimizer, scheduler=scheduler, position=pos, settings=self.settings,
                            keep=self.cfg.keep_checkpoints, sharded=self.where.sharded)
        distributed.barrier(self.where.dist)


def run_phase(loop: Loop, phase_index: int, label: str, phase: Phase, train_data: Prepared, test_data: Prepared,
              resume_from: Path | None) -> checkpoint.Position:
    """Train one phase (from ``resume_from`` when given), keep its best epoch; return where it ended."""
    cfg = loop.cfg
    params = [p for p in loop.net.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=0.0)
    n = len(train_data.samples)
    per_epoch = math.ceil(n / cfg.effective_batch_size)
    epochs = cfg.knowledge_epochs if phase.name == "knowledge" and cfg.knowledge_epochs > 0 else cfg.epochs
    total_steps = per_epoch * epochs
    warmup = cfg.warmup_steps or max(1, round(0.05 * total_steps))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(warmup, total_steps))
    if resume_from is not None:
        pos = checkpoint.load(resume_from, model=loop.net, optimizer=optimizer, scheduler=scheduler,
                              sharded=loop.where.sharded)
    else:
        pos = checkpoint.Position(phase=phase_index)

    loop.report.start(label, total_steps, pos.global_step)
    while pos.epoch < epochs:
        plan = step_plan(n, cfg.effective_batch_size, cfg.seed + phase_index, pos.epoch)
        while pos.step_in_epoch < len(plan):
            t0 = time.monotonic()
            step_loss, tokens = optimizer_step(loop, params, optimizer, scheduler, train_data,
                                               plan[pos.step_in_epoch])
            pos.step_in_epoch += 1
            pos.global_step += 1
            seconds = time.monotonic() - t0
            tps = tokens / seconds
            loop.report.advance(step_loss, tps)
            loop.report.log({"phase": phase.name, "epoch": pos.epoch, "global_step": pos.global_step,
                             "loss": round(step_loss, 6), "lr": scheduler.get_last_lr()[0],
                             "tokens": int(tokens), "tokens_per_s": round(tps, 1), "seconds": round(seconds, 4)})
            if cfg.save_steps and pos.global_step % cfg.save_steps == 0 and pos.step_in_epoch < len(plan):
                loop.save_checkpoint(optimizer, scheduler, pos)
        end_epoch(loop, phase, test_data, pos)
        loop.save_checkpoint(optimizer, scheduler, pos)
    loop.report.stop()

    from safetensors.torch import load_file

    checkpoint.load_trainable_state(loop.net, load_file(str(loop.run.best_path(phase.name))), loop.where.sharded)
    return pos


def optimizer_step(loop: Loop, params: list[nn.Parameter], optimizer: Any, scheduler: Any, data: Prepared,
                   step_samples: list[int]) -> tuple[float, float]:
    """One optimizer step over ``step_samples`` (this process's share of them); the step's loss and tokens."""
    dist, device, shape = loop.where.dist, loop.where.device, loop.shape
    step_targets = sum(data.samples[i].n_targets for i in step_samples)
    mine = shard(step_samples, data.samples, dist.rank, dist.world)
    real = pack([data.samples[i] for i in mine], *shape)
    # More processes than samples in this step: join the gradient sync with a zero-weighted
    # micro-batch. With FSDP every process also runs as many micro-batches as the busiest.
    count = distributed.all_max(dist, len(real), device) if loop.where.sharded else max(1, len(real))
    work = padded(real, [data.samples[step_samples[0]]], shape, count)
    loss_sum = tokens = 0.0
    for k, (mb, counted) in enumerate(work):
        with distributed.accumulate(loop.loss_fn, loop.where.mode, last=k == len(work) - 1), loop.autocast():
            out = loop.loss_fn(*mb.tensors(device))
            # DDP and FSDP average gradients over processes; the step's loss is a global sum / global count.
            scaled = out * (dist.world / step_targets if counted else 0.0)
        scaled.backward()
        if counted:
            loss_sum += float(out.detach())
            tokens += mb.n_tokens
    if loop.cfg.max_grad_norm > 0:
        torch.nn.utils.clip_grad_norm_(params, loop.cfg.max_grad_norm)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    loop.trim_heap()
    return distributed.all_sum(dist, loss_sum, device) / step_targets, distributed.all_sum(dist, tokens, device)


def end_epoch(loop: Loop, phase: Phase, test_data: Prepared, pos: checkpoint.Position) -> None:
    """Held-out loss (or the evaluation hook's score); save the trained tensors when this epoch is the one to keep."""
    where = loop.where
    pos.epoch, pos.step_in_epoch = pos.epoch + 1, 0
    score = held_out_loss(loop.loss_fn, test_data, loop.shape, where.device, where.dist, loop.autocast,
                          where.sharded)
    if loop.eval_hook is not None:
        score = loop.eval_hook(loop.net, loop.tokenizer, phase.name, pos.epoch)
    loop.report.log({"phase": phase.name, "epoch": pos.epoch, "global_step": pos.global_step, "eval_loss": score})
    loop.report.message(f"{phase.name} epoch {pos.epoch}: held-out "
                        + (f"loss {score:.4f}" if score is not None else "loss n/a (no test split)"))
    # "last": every epoch replaces the kept one (the held-out loss is still logged)
    if loop.cfg.keep_epoch == "last" or pos.best_eval_loss is None or score is None or score < pos.best_eval_loss:
        pos.best_eval_loss, pos.best_epoch = score, pos.epoch
        if where.dist.main or where.sharded:  # gathering shards takes every process
            best = checkpoint.trainable_state(loop.net, where.sharded)
            if where.dist.main:
                _save_tensors(best, loop.run.best_path(phase.name))


def finish(loop: Loop, info: TrainingInfo, base: Any) -> None:
    """Write the final model, then mark ``training.json`` complete: a run is done only once both are there."""
    where = loop.where
    full = checkpoint.full_model_state(loop.net) if where.sharded else None  # every process takes part in gathering
    if where.dist.main:
        _save_final(loop.run, loop.net, loop.tokenizer, loop.cfg, base, full)
        info.finished = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
        info.complete = True
        loop.run.write_info(info)
        loop.report.message(f"Trained model: {loop.run.final}")
    loop.report.close()
    distributed.teardown(where.dist)


def _save_final(run: TrainingRun, net: nn.Module, tokenizer: Any, cfg: TrainConfig, base: Any,
                full: dict[str, torch.Tensor] | None) -> None:
    """Write ``<run>/final`` (and ``<run>/adapter`` for LoRA); ``full`` is the gathered state of a sharded model."""
    if cfg.method == "lora":
        save_adapter(net, run.adapter, base_model=str(base.path), rank=cfg.lora_rank,
                     alpha=cfg.lora_alpha, targets=cfg.lora_target_modules)
        merge_lora(net)
    if cfg.gradient_checkpointing:
        net.gradient_checkpointing_disable()
    net.set_attn_implementation("sdpa")
    from unfork.models.store import MANIFEST, folder_size, now, write_manifest

    with fsio.atomic_folder(run.final, markers=(MANIFEST, "config.json"), partial=run.partial_final) as tmp:
        if full is None:
            net.to("cpu").save_pretrained(tmp, safe_serialization=True)
        else:  # the module holds shards; its config and the gathered tensors make the same folder
            net.save_pretrained(tmp, state_dict=full, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        if tokenizer.chat_template and not (tmp / "chat_template.jinja").is_file():
            fsio.atomic_write_text(tmp / "chat_template.jinja", tokenizer.chat_template)
        write_manifest(tmp, {"name": run.root.name, "format": "hf", "file": None,
                             "source": f"trained from {base.name}", "base_model": str(base.path), "sha256": None,
                             "size": folder_size(tmp), "date": now(), "role": "trained", "method": cfg.method,
                             "run": str(run.root)})


def _save_tensors(state: dict[str, torch.Tensor], path: Path) -> None:
    from safetensors.torch import save_file

    with fsio.atomic_path(path) as tmp:
        save_file(state, str(tmp))

