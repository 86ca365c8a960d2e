"""The whole shrink pipeline behind `pocketgpt shrink`: plan, trim, prune, distill, store, budget."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pocketgpt.errors import PocketError

if TYPE_CHECKING:
    from transformers import GPT2LMHeadModel

    from pocketgpt.gguf_io import GPT2Config, ModelFile
    from pocketgpt.shrink.distill import DistillConfig, DistillResult
    from pocketgpt.shrink.prune import Shape
    from pocketgpt.shrink.targets import TeacherTargets
    from pocketgpt.shrink.vocab import TrimmedVocab
    from pocketgpt.tokenizer import BPEVocab

VAL_FRACTION = 0.05   # pocketgpt train's split: the same quotes stay held out
SPLIT_SEED = 1337


@dataclass
class ShrinkOptions:
    input: str
    output: str
    corpus: list[str] = field(default_factory=list)
    budget: str | None = None
    merges: list[int] | None = None
    layers: list[int] | None = None
    widths: list[int] | None = None
    ffs: list[int] | None = None
    n_ctx: int | None = None
    qtype: str = "q8"
    steps: int = 1000
    max_minutes: float | None = None
    batch: int = 8
    lr: float = 1e-3
    alpha: float = 0.5
    kl_anneal: float | None = 0.5     # the measured default recipe (docs/models.md): KL early only,
    teacher_fraction: float = 0.25    # so a quarter of the corpus is enough for the teacher to read
    from_scratch: bool = False
    exclude: str | None = None
    threads: int | None = None
    seed: int = 1337
    topk: int = 32
    teacher_cache: str | None = None
    teacher_minutes: float | None = None
    progress: bool = False


def _one(values: list[int] | None, default: int, what: str) -> int:
    if not values:
        return default
    if len(values) > 1:
        raise PocketError(f"--{what} {','.join(map(str, values))}: a list of choices needs --budget; give one value")
    return values[0]


def training_documents(corpus: list[str], exclude: str | None) -> tuple[list[str], list[str], int]:
    """(train, held-out) documents with pocketgpt train's split, minus every quote of `exclude`."""
    from pocketgpt.corpus import read_documents, read_text
    from pocketgpt.corpus import split_documents as split_text
    from pocketgpt.train import split_documents

    docs = read_documents(corpus)
    train, val = split_documents(docs, VAL_FRACTION, SPLIT_SEED)
    dropped = 0
    if exclude:
        banned = {d.strip() for d in split_text(read_text(exclude))}
        kept = [d for d in train if d.strip() not in banned]
        dropped = len(train) - len(kept)
        train = kept
    if not train:
        raise PocketError("no training documents left after the held-out split; give a larger --corpus")
    return train, val, dropped


def _dtype_spec(qtype: str) -> str:
    from pocketgpt.quant import presets

    if qtype.lower() == "f32":
        return "f32"
    presets.parse_type(qtype)  # one-line error for unknown types
    return qtype


@dataclass
class Prepared:
    """Everything before training: the teacher, the student's shape, initial weights and data."""

    tmf: ModelFile                  # the teacher, as read
    shape: Shape
    cfg: GPT2Config
    vocab: BPEVocab                 # the student's (trimmed) tokenizer
    student: GPT2LMHeadModel
    plan_note: str
    qspec: str
    train_ids: np.ndarray | None = None
    val_ids: np.ndarray | None = None
    targets: TeacherTargets | None = None
    n_train_docs: int = 0
    dropped: int = 0


def fresh_student(cfg: GPT2Config, vocab: BPEVocab, seed: int) -> GPT2LMHeadModel:
    """The student's random start (transformers' initialisation under `seed`): what training from
    scratch begins with, and what pruning then overwrites."""
    import torch
    from transformers import GPT2LMHeadModel

    from pocketgpt.hf import hf_config

    torch.manual_seed(seed)
    return GPT2LMHeadModel(hf_config(cfg, vocab, tied=True))


def shrink(o: ShrinkOptions) -> tuple[dict[str, Any], str]:
    """Run the pipeline; returns (JSON result, human text)."""
    from pocketgpt.shrink.distill import distill

    p = prepare(o)
    res = None
    if o.steps > 0:
        assert p.train_ids is not None and p.val_ids is not None  # prepare encodes both for training
        res = distill(p.student, p.train_ids, p.val_ids, distill_config(o), targets=p.targets,
                      progress=o.progress)
    return finish(o, p, res)


def distill_config(o: ShrinkOptions) -> DistillConfig:
    from pocketgpt.shrink.distill import DistillConfig

    return DistillConfig(steps=o.steps, max_minutes=o.max_minutes, batch_size=o.batch, lr=o.lr, alpha=o.alpha,
                         kl_anneal=o.kl_anneal, seed=o.seed)


def prepare(o: ShrinkOptions) -> Prepared:
    """Plan the shape, trim the vocabulary, initialise the student, encode the corpus, and get
    the teacher's targets (unless from scratch)."""
    from pocketgpt import models
    from pocketgpt.gguf_io import tensors_to_hf_state
    from pocketgpt.hf import require_toolchain
    from pocketgpt.shrink import plan as planner
    from pocketgpt.shrink.prune import Shape, check_shape, prune
    from pocketgpt.shrink.vocab import trim_vocab
    from pocketgpt.train import encode_documents

    require_toolchain()
    import torch

    qspec = _dtype_spec(o.qtype)
    out = Path(o.output)
    in_path = models.resolve(o.input)
    if in_path.exists() and out.exists() and in_path.resolve() == out.resolve():
        raise PocketError(f"{out}: output would overwrite the input; choose another name")
    if not out.parent.exists() and str(out.parent):
        raise PocketError(f"cannot write {out}: folder {out.parent} does not exist; create it first")
    if o.threads:
        torch.set_num_threads(o.threads)

    tmf = models.load(o.input)
    tc = tmf.cfg
    exclude = o.exclude
    if exclude is None and in_path.is_dir() and (in_path / "heldout.txt").exists():
        exclude = str(in_path / "heldout.txt")

    plan_note = ""
    if o.budget:
        n_ctx = o.n_ctx or 256
        # a float output is a step towards the quantized device file: plan for what the device runs
        pr = planner.choose(tc, budget=o.budget, n_ctx=n_ctx, qspec="q8" if qspec == "f32" else qspec, merges=o.merges, layers=o.layers,
                            widths=o.widths, ffs=o.ffs)
        shape = pr.shape
        plan_note = (f"--budget {o.budget}: picked {shape.describe(tc)} as the largest of {pr.n_fitting} fitting "
                     f"shapes (of {pr.n_candidates} tried; fitting: 1.1x speed margin on the mean and the goal "
                     f"met at the last position), modeled {pr.report.modeled_tok_s:.1f} tok/s mean, "
                     f"{pr.report.modeled_tok_s_full:.1f} at the last position")
    else:
        shape = Shape(_one(o.merges, len(tmf.vocab.merges), "vocab"), _one(o.layers, tc.n_layer, "layers"),
                      _one(o.widths, tc.n_embd, "width"), _one(o.ffs, tc.n_ff, "ff"), o.n_ctx or tc.n_ctx)
    check_shape(shape, tc)
    cfg = shape.config(tc)
    trimmed = trim_vocab(tmf.vocab, shape.n_merges)
    vocab = trimmed.vocab

    # ---- the student's initial weights ---------------------------------------------------------
    student = fresh_student(cfg, vocab, o.seed)
    if not o.from_scratch:
        tensors = prune(tmf.f32_tensors(), tc, shape, trimmed.teacher_ids)
        state = {k: torch.from_numpy(np.array(v, copy=True)) for k, v in tensors_to_hf_state(tensors, cfg).items()}
        student.load_state_dict(state, strict=False)
        student.tie_weights()

    p = Prepared(tmf, shape, cfg, vocab, student, plan_note, qspec)
    if o.steps > 0:
        train_docs, val_docs, p.dropped = training_documents(o.corpus, exclude)
        tok = vocab.hf_tokenizer()
        p.train_ids = encode_documents(tok, train_docs, vocab.eos_id)
        p.val_ids = encode_documents(tok, val_docs, vocab.eos_id)
        p.n_train_docs = len(train_docs)
        # no KL (from scratch, or --alpha 0: the teacher's weights only): no teacher pass to pay for
        p.targets = None if o.from_scratch or o.alpha == 0 else _targets(o, tmf, trimmed, train_docs, p.train_ids)
    return p


def finish(o: ShrinkOptions, p: Prepared, res: DistillResult | None) -> tuple[dict[str, Any], str]:
    """Store the trained student (quantized to --type), size it for the device, report."""
    from pocketgpt.budget import estimate
    from pocketgpt.chat_format import TEMPLATE_KEY
    from pocketgpt.gguf_io import ModelFile, read_gguf, store_tensors, write_gguf
    from pocketgpt.hf import hf_to_tensors
    from pocketgpt.quant import formats as F
    from pocketgpt.quant import presets, quantizer

    tmf, shape, cfg, vocab, student, plan_note, qspec = p.tmf, p.shape, p.cfg, p.vocab, p.student, p.plan_note, p.qspec
    tc = tmf.cfg
    out = Path(o.output)
    stats: dict[str, Any] = {"steps": 0, "seconds": 0.0, "tokens_seen": 0}
    if res is not None:
        stats = {"steps": res.steps, "seconds": res.seconds, "tokens_seen": res.tokens_seen,
                 "train_loss": round(res.train_loss, 4), "val_loss": round(res.val_loss, 4),
                 "train_documents": p.n_train_docs, "excluded_documents": p.dropped,
                 "mode": "scratch" if o.from_scratch else "distill"}
        targets = p.targets
        if targets is not None:
            stats["teacher"] = {"seconds": targets.seconds, "topk": int(targets.ids.shape[1]),
                                "coverage": round(targets.coverage, 4), "topk_mass": round(targets.mass(), 4),
                                "teacher_tokens": targets.teacher_tokens, "cached": o.teacher_cache,
                                "fraction": o.teacher_fraction}
            stats["kl_anneal"] = o.kl_anneal

    # ---- store -------------------------------------------------------------------------------
    _, ftensors, _ = hf_to_tensors(student)
    fstored = store_tensors(ftensors, lambda n, a: F.F32)
    smf = ModelFile(out, cfg, vocab, fstored, {}, 0)
    if qspec == "f32":
        stored = fstored
    else:
        choices = presets.plan({n: t.shape for n, t in fstored.items()}, cfg.n_layer, True, qspec, None)
        stored, _ = quantizer.quantize_tensors(smf, choices, "rtn", None, progress=o.progress)
    teacher_name = str(tmf.metadata.get("general.name") or Path(o.input).name)
    extra = {"pocketgpt.shrink.teacher": o.input, "pocketgpt.shrink.merges": shape.n_merges,
             "pocketgpt.shrink.steps": int(stats["steps"]), "pocketgpt.shrink.mode":
             "scratch" if o.from_scratch else "distill", "pocketgpt.quantize.type": qspec}
    template = tmf.metadata.get(TEMPLATE_KEY)
    size = write_gguf(out, cfg, vocab, stored, name=f"{teacher_name}-shrunk", extra=extra,
                      chat_template=template if isinstance(template, str) else None)
    written = read_gguf(out)
    rep = estimate(written, n_ctx=min(256, cfg.n_ctx) if not o.budget else cfg.n_ctx)
    n_params = written.n_params()
    result = {
        "out": str(out), "n_params": n_params, "n_vocab": cfg.n_vocab, "n_merges": shape.n_merges,
        "n_layer": cfg.n_layer, "n_embd": cfg.n_embd, "n_head": cfg.n_head, "n_ff": cfg.n_ff, "n_ctx": cfg.n_ctx,
        "file_bytes": size, "type": qspec, "teacher": o.input, "teacher_n_params": tmf.n_params(),
        "distill": stats, "budget": rep.as_dict(), "plan": plan_note or None,
    }
    lines = [plan_note] if plan_note else []
    lines.append(f"wrote {out}: {shape.describe(tc)}; {n_params:,} parameters "
                 f"(teacher {tmf.n_params():,}), {size:,} bytes ({size / 2**20:.2f} MiB), {qspec}")
    if res is not None:
        lines.append(f"  {stats['mode']}: {stats['steps']} steps in {stats['seconds']:.0f} s, "
                     f"{stats['tokens_seen']:,} tokens; held-out loss {stats['val_loss']:.3f} nats/token "
                     "(trimmed tokens; compare models with 'pocketgpt eval --text', bits per byte)")
        if "teacher" in stats:
            t = stats["teacher"]
            lines.append(f"  teacher targets: top-{t['topk']} over {t['coverage']:.0%} of positions "
                         f"(holding {t['topk_mass']:.0%} of the teacher's probability), computed once in "
                         f"{t['seconds']:.0f} s")
    lines.append(rep.render())
    return result, "\n".join(lines)


def _targets(o: ShrinkOptions, tmf: ModelFile, trimmed: TrimmedVocab, docs: list[str],
             train_ids: np.ndarray) -> TeacherTargets:
    """The teacher's top-k targets over the training stream: from --teacher-cache when it holds
    them for this teacher, vocabulary and corpus, else computed now (and saved there)."""
    import hashlib

    from pocketgpt.hf import torch_model
    from pocketgpt.shrink.targets import TeacherTargets, build_targets

    key = {"teacher": str(Path(o.input)), "merges": len(trimmed.vocab.merges), "k": o.topk,
           "stream": hashlib.sha256(train_ids.tobytes()).hexdigest()[:16],
           "teacher_minutes": o.teacher_minutes, "seed": o.seed}
    key["targets"] = "every position"  # session 4: positions inside a teacher token get a target too
    if o.teacher_fraction < 1.0:
        key["fraction"] = o.teacher_fraction
    if o.teacher_cache:
        cached = TeacherTargets.load(o.teacher_cache, key)
        if cached is not None:
            return cached
    tg = build_targets(torch_model(tmf), tmf.vocab, trimmed, docs, train_ids, k=o.topk,
                       max_minutes=o.teacher_minutes, seed=o.seed, progress=o.progress,
                       fraction=o.teacher_fraction)
    if o.teacher_cache:
        tg.save(o.teacher_cache, key)
    return tg
