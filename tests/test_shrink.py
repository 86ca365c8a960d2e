"""pocketgpt shrink: the trimmed vocabulary is exact BPE in the C engine, pruning starts from the
teacher's own function, distillation targets are the teacher's distribution, and the command
writes a model the engine runs, with a device budget, never training on held-out quotes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from support import assert_one_line_error, make_hf_model, pocketgpt, pocketgpt_json, write_model

TEXTS = [
    "Hello, world! The quick brown fox jumps over the lazy dog.",
    "  leading spaces,\ttabs\nand\n\nnewlines   ",
    "naïve café, Straße, Ελληνικά, русский, 日本語のテキスト, emoji 🦊🚀 and e\u0301",
    "numbers 1234567890 3.14159 and symbols <|endoftext|> {}[]()!?@#$%^&*",
    "Antidisestablishmentarianism isn't a word you'd've heard, y'all.",
    "\x00\x01 control \x7f chars and a lone \ud800 surrogate-free tail",
]


def _corpus(path: Path, n: int = 240) -> Path:
    rng = np.random.default_rng(0)
    words = "the cat sat on a mat while dogs barked loudly at strange people in the old town square".split()
    quotes = [" ".join(rng.choice(words, size=int(rng.integers(5, 30)))).capitalize() + "." for _ in range(n)]
    path.write_text("\n%\n".join(quotes) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def trimmed():
    from pocketgpt.shrink.vocab import trim_vocab
    from pocketgpt.tokenizer import gpt2_vocab

    return trim_vocab(gpt2_vocab(), 400)


def test_trimmed_vocabulary_is_bytes_then_merges_then_eot(trimmed):
    from pocketgpt.tokenizer import EOT, gpt2_vocab

    full = gpt2_vocab()
    v = trimmed.vocab
    assert v.n_vocab == 256 + 400 + 1 and v.merges == full.merges[:400]
    assert v.tokens[:256] == full.tokens[:256]  # GPT-2's byte tokens in GPT-2's id order
    assert v.tokens[256:-1] == [m.replace(" ", "") for m in full.merges[:400]]
    assert v.tokens[-1] == EOT and v.eos_id == v.n_vocab - 1
    assert [full.tokens[i] for i in trimmed.teacher_ids] == v.tokens


def test_engine_tokenizes_the_trimmed_vocabulary_exactly_like_huggingface(trimmed, tmp_path):
    from pocketgpt.engine import Engine

    model, vocab = make_hf_model(n_embd=32, n_layer=1, n_head=2, n_ctx=32, vocab=trimmed.vocab)
    path = write_model(tmp_path / "trim.gguf", model, vocab)
    eng = Engine(path, threads=1)
    hf = vocab.hf_tokenizer()
    assert eng.n_vocab == 657
    for text in TEXTS:
        text = text.encode("utf-8", "replace").decode("utf-8")
        ids = eng.tokenize(text)  # <|endoftext|> is special in both
        assert ids == hf(text, add_special_tokens=False)["input_ids"], text
        assert max(ids) < 657
        assert eng.detokenize(ids) == text  # decodes anything


def test_teacher_tokens_map_to_their_first_trimmed_piece(trimmed):
    from pocketgpt.shrink.vocab import teacher_to_student_map
    from pocketgpt.tokenizer import gpt2_vocab

    full = gpt2_vocab()
    t2s = teacher_to_student_map(full, trimmed)
    for s, t in enumerate(trimmed.teacher_ids):
        assert t2s[t] == s
    hf_small = trimmed.vocab.hf_tokenizer()
    for word in [" interesting", " extraordinary", " 1999", " Jerusalem"]:
        (tid,) = full.hf_tokenizer()(word, add_special_tokens=False)["input_ids"]
        assert t2s[tid] == hf_small(word, add_special_tokens=False)["input_ids"][0], word


def test_teacher_tokens_split_into_the_pieces_the_trimmed_tokenizer_gives_them(trimmed):
    """vocab.student_pieces: what the student emits for each teacher token, in order."""
    from pocketgpt.shrink.vocab import student_pieces
    from pocketgpt.tokenizer import gpt2_vocab

    full = gpt2_vocab()
    pieces = student_pieces(full, trimmed)
    small = trimmed.vocab.tokens
    for t in range(full.n_vocab - 1):  # every token: its pieces spell it
        assert "".join(small[s] for s in pieces[t]) == full.tokens[t]
    hf_small = trimmed.vocab.hf_tokenizer()
    for word in [" interesting", " extraordinary", " 1999", " Jerusalem"]:
        (tid,) = full.hf_tokenizer()(word, add_special_tokens=False)["input_ids"]
        assert list(pieces[tid]) == hf_small(word, add_special_tokens=False)["input_ids"], word


def _teacher_with_dead_parts(n_layer=3, n_ff=96, dead_neurons=10):
    """A teacher whose middle layer is an identity and whose last `dead_neurons` MLP neurons write
    nothing: pruning exactly those must leave its function unchanged."""
    import torch

    model, vocab = make_hf_model(n_embd=64, n_layer=n_layer, n_head=4, n_ctx=48, n_ff=n_ff, seed=5)
    with torch.no_grad():
        mid = model.transformer.h[1]
        for p in (mid.attn.c_proj.weight, mid.attn.c_proj.bias, mid.mlp.c_proj.weight, mid.mlp.c_proj.bias):
            p.zero_()
        for blk in model.transformer.h:
            blk.mlp.c_proj.weight[-dead_neurons:] = 0.0  # HF Conv1D: (n_ff, n_embd) rows are neurons
    return model, vocab


def test_pruning_dead_layers_and_neurons_keeps_the_teachers_function(trimmed):
    import torch

    from pocketgpt import hf
    from pocketgpt.gguf_io import tensors_to_hf_state
    from pocketgpt.shrink.prune import Shape, prune

    teacher, _ = _teacher_with_dead_parts()
    tcfg, tensors, _ = hf.hf_to_tensors(teacher)
    shape = Shape(400, 2, 64, 86, 48)
    st = prune(tensors, tcfg, shape, trimmed.teacher_ids)
    cfg = shape.config(tcfg)
    assert (cfg.n_layer, cfg.n_head, cfg.n_ff, cfg.n_vocab) == (2, 4, 86, 657)
    from transformers import GPT2LMHeadModel

    student = GPT2LMHeadModel(hf.hf_config(cfg, trimmed.vocab))
    student.load_state_dict({k: torch.from_numpy(v) for k, v in tensors_to_hf_state(st, cfg).items()}, strict=False)
    student.tie_weights()
    student.eval()
    ids = np.arange(0, 657, 17)[:40]
    with torch.no_grad():
        want = teacher(input_ids=torch.from_numpy(trimmed.teacher_ids[ids])[None]).logits[0][:, trimmed.teacher_ids]
        got = student(input_ids=torch.from_numpy(ids)[None]).logits[0]
    print("max |diff|", float((got - want).abs().max()))
    assert torch.allclose(got, want, atol=1e-4)


def test_narrower_student_keeps_whole_heads_and_the_most_used_dimensions(trimmed):
    from pocketgpt import hf
    from pocketgpt.shrink.prune import Shape, prune

    teacher, _ = make_hf_model(n_embd=64, n_layer=2, n_head=4, n_ctx=48, seed=6)
    tcfg, t, _ = hf.hf_to_tensors(teacher)
    st = prune(t, tcfg, Shape(400, 1, 32, 64, 96), trimmed.teacher_ids)
    assert Shape(400, 1, 32, 64, 96).config(tcfg).n_head == 2  # head size 16 kept
    assert st["blk.0.attn_qkv.weight"].shape == (96, 32)
    assert st["position_embd.weight"].shape == (96, 32)
    # the longer context repeats the teacher's positions
    np.testing.assert_array_equal(st["position_embd.weight"][48:], st["position_embd.weight"][:48])
    # every kept weight is a teacher weight: the kept embedding columns are teacher columns
    cols = [next(j for j in range(64) if np.array_equal(t["token_embd.weight"][trimmed.teacher_ids, j], c))
            for c in st["token_embd.weight"].T]
    assert len(set(cols)) == 32


DOCS = ["The interesting extraordinary weather in Jerusalem, 1999.", "Never trust a man who reads quotes!",
        "Antidisestablishmentarianism isn't a word you'd've heard.", "naïve café 🦊 and the cat."]


def test_every_teacher_token_boundary_is_a_student_boundary(trimmed):
    """The trimmed BPE is the full BPE stopped early: the streams align at every teacher token's end."""
    from pocketgpt.shrink.targets import align, token_bytes
    from pocketgpt.tokenizer import gpt2_vocab
    from pocketgpt.train import encode_documents

    full = gpt2_vocab()
    s_ids = encode_documents(trimmed.vocab.hf_tokenizer(), DOCS * 3, trimmed.vocab.eos_id)
    t_ids = encode_documents(full.hf_tokenizer(), DOCS * 3, full.eos_id)
    where = align(s_ids, token_bytes(trimmed.vocab.tokens, trimmed.vocab.eos_id), t_ids,
                  token_bytes(full.tokens, full.eos_id))
    hit = where[where >= 0]
    assert len(set(hit.tolist())) == len(t_ids) == len(hit)  # each teacher position exactly once
    assert len(s_ids) > len(t_ids)  # fewer merges: more, shorter tokens
    assert (s_ids[where == len(t_ids) - 1] == trimmed.vocab.eos_id).all()


def test_teacher_targets_are_its_distribution_carried_onto_the_student_vocabulary(trimmed, tmp_path):
    import torch

    from pocketgpt.shrink.targets import TeacherTargets, build_targets
    from pocketgpt.shrink.vocab import teacher_to_student_map
    from pocketgpt.tokenizer import gpt2_vocab
    from pocketgpt.train import encode_documents

    full = gpt2_vocab()
    teacher, _ = make_hf_model(n_embd=32, n_layer=1, n_head=2, n_ctx=8, seed=2)
    s_ids = encode_documents(trimmed.vocab.hf_tokenizer(), DOCS, trimmed.vocab.eos_id)
    tg = build_targets(teacher, full, trimmed, DOCS, s_ids, k=5, batch_windows=3, inside=False)
    assert tg.ids.shape == (len(s_ids), 5) and tg.coverage == tg.teacher_tokens / len(s_ids)
    # by hand: the teacher over its own tokens in windows of its context, softmax over the tokens
    # the corpus uses, each probability summed onto the student token its spelling starts with
    t_ids = encode_documents(full.hf_tokenizer(), DOCS, full.eos_id)
    used = np.unique(t_ids)
    t2s = torch.from_numpy(teacher_to_student_map(full, trimmed)[used])
    with torch.no_grad():
        logits = torch.cat([teacher(input_ids=torch.from_numpy(t_ids[i:i + 8])[None]).logits[0]
                            for i in range(0, len(t_ids), 8)])
    want = torch.zeros(len(t_ids), trimmed.vocab.n_vocab).index_add_(1, t2s, torch.softmax(logits[:, used], -1))
    # student position i has a target iff its token ends where a teacher token ends
    j = 0
    s_end = np.cumsum([len(trimmed.vocab.tokens[i]) if i != trimmed.vocab.eos_id else 1 for i in s_ids])
    t_end = np.cumsum([len(full.tokens[i]) if i != full.eos_id else 1 for i in t_ids])
    for i in range(len(s_ids)):
        while t_end[j] < s_end[i]:
            j += 1
        assert tg.has[i] == (t_end[j] == s_end[i])
        if tg.has[i]:
            top = torch.topk(want[j], 5)
            np.testing.assert_allclose(tg.probs[i].astype(np.float32), top.values.numpy(), rtol=2e-3, atol=1e-4)
            assert set(tg.ids[i][tg.probs[i] > 1.01 * top.values[-1].item()]) <= set(top.indices.tolist())
    # the cache comes back only for the same key
    tg.save(tmp_path / "t.npz", {"merges": 400})
    back = TeacherTargets.load(tmp_path / "t.npz", {"merges": 400})
    assert back is not None and (back.ids == tg.ids).all() and back.coverage == tg.coverage
    assert TeacherTargets.load(tmp_path / "t.npz", {"merges": 401}) is None


def test_inside_a_teacher_token_the_target_is_its_distribution_given_the_pieces_so_far(trimmed):
    """A student position part-way through a teacher token: the teacher's distribution before that
    token, kept to the tokens whose pieces start with the pieces emitted so far, each token's
    probability on the piece it would emit next, over the mass of all such tokens (those that end
    right there count in the mass but name no next piece)."""
    import torch

    from pocketgpt.shrink.targets import build_targets
    from pocketgpt.shrink.vocab import student_pieces
    from pocketgpt.tokenizer import gpt2_vocab
    from pocketgpt.train import encode_documents

    full = gpt2_vocab()
    teacher, _ = make_hf_model(n_embd=32, n_layer=1, n_head=2, n_ctx=8, seed=2)
    # words that are prefixes of one another ("inter", "internal", "international"): positions where
    # some candidate token ends right at the pieces emitted so far, and several candidates go on
    docs = DOCS + ["An inter internal international interest in the interesting interview."]
    s_ids = encode_documents(trimmed.vocab.hf_tokenizer(), docs, trimmed.vocab.eos_id)
    t_ids = encode_documents(full.hf_tokenizer(), docs, full.eos_id)
    edge = build_targets(teacher, full, trimmed, docs, s_ids, k=5, batch_windows=3, inside=False)
    tg = build_targets(teacher, full, trimmed, docs, s_ids, k=5, batch_windows=3)
    # the boundary targets are unchanged; every position after the first teacher token has one
    np.testing.assert_array_equal(tg.probs[edge.has], edge.probs[edge.has])
    first = len(student_pieces(full, trimmed)[t_ids[0]])
    assert tg.has[first - 1:-1].all() and not tg.has[:first - 1].any() and edge.coverage < 0.8
    pieces = student_pieces(full, trimmed)
    used = np.unique(t_ids).tolist()
    with torch.no_grad():
        logits = torch.cat([teacher(input_ids=torch.from_numpy(t_ids[i:i + 8])[None]).logits[0]
                            for i in range(0, len(t_ids), 8)])
    P = torch.softmax(logits[:, used], -1).numpy()
    s_len = [len(trimmed.vocab.tokens[i]) if i != trimmed.vocab.eos_id else 1 for i in s_ids]
    t_len = [len(full.tokens[i]) if i != full.eos_id else 1 for i in t_ids]
    s_end, t_end = np.cumsum(s_len), np.cumsum(t_len)
    checked = ends_here = 0
    for i in range(len(s_ids) - 1):
        m = int(np.searchsorted(t_end, s_end[i], side="right"))
        start = t_end[m - 1] if m else 0
        if m == 0 or s_end[i] == start:
            continue
        done = tuple(s_ids[int(np.searchsorted(s_end, start)) + 1:i + 1].tolist())
        assert pieces[t_ids[m]][:len(done)] == done   # the student is part-way through the token
        want, mass, ends = np.zeros(trimmed.vocab.n_vocab), 0.0, 0
        for j, u in enumerate(used):
            if pieces[u][:len(done)] == done:
                mass += P[m - 1, j]
                if len(pieces[u]) > len(done):
                    want[pieces[u][len(done)]] += P[m - 1, j]
                else:
                    ends += 1
        ends_here += ends > 0
        top = np.sort(want / mass)[::-1][:5]
        got = tg.probs[i].astype(np.float32)
        np.testing.assert_allclose(got, top, rtol=2e-3, atol=1e-4)
        kept = got > 0  # each kept id carries its own piece's share (zero-probability filler aside)
        np.testing.assert_allclose(got[kept], (want / mass)[tg.ids[i][kept]], rtol=2e-3, atol=1e-4)
        assert s_ids[i + 1] in tg.ids[i] or want[s_ids[i + 1]] / mass <= top[-1] + 1e-4
        checked += 1
    assert checked > 10 and ends_here > 0


def test_teacher_pass_over_a_fraction_scores_a_sample_of_windows_exactly(trimmed):
    """--teacher-fraction: the teacher scores about that share of the corpus, and every position it
    does score gets the same target the full pass gives it."""
    from pocketgpt.shrink.targets import build_targets
    from pocketgpt.tokenizer import gpt2_vocab
    from pocketgpt.train import encode_documents

    full = gpt2_vocab()
    teacher, _ = make_hf_model(n_embd=32, n_layer=1, n_head=2, n_ctx=8, seed=2)
    s_ids = encode_documents(trimmed.vocab.hf_tokenizer(), DOCS, trimmed.vocab.eos_id)
    whole = build_targets(teacher, full, trimmed, DOCS, s_ids, k=5, batch_windows=3)
    half = build_targets(teacher, full, trimmed, DOCS, s_ids, k=5, batch_windows=3, fraction=0.5)
    assert not (half.has & ~whole.has).any()
    assert 0.3 * whole.has.sum() < half.has.sum() < 0.7 * whole.has.sum()
    np.testing.assert_array_equal(half.ids[half.has], whole.ids[half.has])
    np.testing.assert_array_equal(half.probs[half.has], whole.probs[half.has])


def test_annealed_kl_weight_reaches_zero_and_then_steps_skip_the_teacher(monkeypatch):
    """--kl-anneal F: the KL weight falls linearly from --alpha to 0 over the first F of training;
    after that a step is a plain cross-entropy step (no KL computed: it costs a scratch step)."""
    import torch

    from pocketgpt.shrink import distill
    from pocketgpt.shrink.targets import TeacherTargets

    cfg = distill.DistillConfig(steps=8, batch_size=2, alpha=0.6, kl_anneal=0.5, warmup=1)
    assert [round(distill.kl_weight(cfg, p), 3) for p in (0.0, 0.25, 0.5, 0.9)] == [0.6, 0.3, 0.0, 0.0]
    assert distill.kl_weight(distill.DistillConfig(alpha=0.6), 0.9) == 0.6  # no anneal: constant
    model, _ = make_hf_model(n_embd=32, n_layer=1, n_head=2, n_ctx=8, seed=3)
    V = model.config.vocab_size
    ids = np.random.default_rng(0).integers(0, V, 200)
    rng = np.random.default_rng(1)
    tg = TeacherTargets(rng.integers(0, V, (200, 4)).astype(np.int32), np.full((200, 4), 0.2, np.float16),
                        np.ones(200, bool), 0.0, 200)
    calls = []
    real = distill._soft_loss
    monkeypatch.setattr(distill, "_soft_loss", lambda *a: calls.append(1) or real(*a))
    tr = distill.Trainer(model, ids, cfg, tg)
    while not tr.done():
        tr.step()
    assert tr.steps == 8 and len(calls) == 4  # progress 0, 1/8, 2/8, 3/8; from 4/8 on no KL
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_distillation_loss_is_zero_when_the_student_is_the_teacher():
    """The k + 1-bin KL: zero for a student equal to the teacher's top-k, positive otherwise."""
    import torch

    from pocketgpt.shrink.distill import _soft_loss
    from pocketgpt.shrink.targets import TeacherTargets

    logits = torch.randn(6, 50) * 3
    p = torch.softmax(logits, -1)
    top = p.topk(4, -1)
    tg = TeacherTargets(top.indices.numpy().astype(np.int32), top.values.numpy().astype(np.float16),
                        np.array([True, True, False, True, True, True]), 0.0, 6)
    pos = np.arange(6)
    assert float(_soft_loss(torch.log_softmax(logits, -1), tg, pos)) < 1e-3
    assert float(_soft_loss(torch.log_softmax(torch.zeros(6, 50), -1), tg, pos)) > 0.1


def test_training_never_sees_held_out_quotes(tmp_path):
    from pocketgpt.corpus import read_documents
    from pocketgpt.shrink.run import training_documents
    from pocketgpt.train import split_documents

    corpus = _corpus(tmp_path / "quotes", 200)
    docs = read_documents([str(corpus)])
    _, val = split_documents(docs, 0.05, 1337)
    banned = tmp_path / "heldout.txt"
    banned.write_text("\n%\n".join(docs[:7]) + "\n")
    train, val2, dropped = training_documents([str(corpus)], str(banned))
    assert val2 == val and not set(train) & set(val)
    assert not set(train) & set(docs[:7]) and dropped >= 1


@pytest.fixture(scope="module")
def teacher_path(tmp_path_factory) -> Path:
    model, vocab = make_hf_model(n_embd=64, n_layer=2, n_head=4, n_ctx=64, seed=4)
    return write_model(tmp_path_factory.mktemp("shrink") / "teacher.gguf", model, vocab)


@pytest.mark.slow
def test_shrink_command_writes_a_model_the_engine_runs(teacher_path, tmp_path):
    from pocketgpt.engine import Engine

    corpus = _corpus(tmp_path / "quotes")
    out = tmp_path / "small.gguf"
    d = pocketgpt_json("shrink", str(teacher_path), str(out), "--vocab", "300", "--layers", "1", "--width", "32",
                       "--ff", "64", "--ctx", "96", "--distill-steps", "4", "--batch", "2", "--corpus", str(corpus),
                       "--topk", "8", "--teacher-cache", str(tmp_path / "targets.npz"))
    assert (d["n_vocab"], d["n_layer"], d["n_embd"], d["n_head"], d["n_ff"], d["n_ctx"]) == (557, 1, 32, 2, 64, 96)
    assert d["file_bytes"] == out.stat().st_size and d["n_params"] < 40_000
    assert d["distill"]["steps"] == 4 and d["distill"]["mode"] == "distill"
    # the default recipe: the teacher reads a quarter of the corpus, the KL fades out over half the steps
    t = d["distill"]["teacher"]
    assert t["topk"] == 8 and t["fraction"] == 0.25 and 0.05 < t["coverage"] <= 0.5 and d["distill"]["kl_anneal"] == 0.5
    assert (tmp_path / "targets.npz").exists()
    assert d["budget"]["fits"] and "not measured" in d["budget"]["note"]
    eng = Engine(out, threads=1)
    assert eng.n_vocab == 557 and eng.n_ctx == 96
    text = "The cat sat on the mat."
    assert eng.detokenize(eng.tokenize(text)) == text
    res = pocketgpt_json("eval", str(out), "--text", str(corpus))
    assert res["bpb"] > 0 and res["bytes"] > 0


@pytest.mark.slow
def test_alpha_zero_trains_from_the_teachers_weights_without_a_teacher_pass(teacher_path, tmp_path):
    """--alpha 0: no KL, so the teacher never reads the corpus (nothing to pay for, nothing cached)."""
    corpus = _corpus(tmp_path / "quotes")
    d = pocketgpt_json("shrink", str(teacher_path), str(tmp_path / "s.gguf"), "--vocab", "300", "--layers", "1",
                       "--width", "32", "--ff", "64", "--ctx", "96", "--distill-steps", "2", "--batch", "2",
                       "--corpus", str(corpus), "--alpha", "0", "--teacher-cache", str(tmp_path / "t.npz"))
    assert d["distill"]["steps"] == 2 and "teacher" not in d["distill"]
    assert not (tmp_path / "t.npz").exists()


@pytest.mark.slow
def test_budget_flag_picks_a_fitting_shape_and_says_so(teacher_path, tmp_path):
    out = tmp_path / "dev.gguf"
    res = pocketgpt("shrink", str(teacher_path), str(out), "--budget", "esp32s3", "--vocab", "300,500",
                    "--distill-steps", "0")
    assert res.returncode == 0, res.stderr
    assert "--budget esp32s3: picked" in res.stdout and "not a measurement" in res.stdout.lower()
    d = pocketgpt_json("inspect", str(out))
    assert d["n_ctx"] == 256 and d["n_vocab"] in (557, 757)


def _in_process(capsys, *args: str):
    """The command line in this process (no torch import per call): returncode, stdout, stderr."""
    import subprocess

    from pocketgpt.cli import main

    code = main(list(args))
    out = capsys.readouterr()
    return subprocess.CompletedProcess(list(args), code, out.out, out.err)


@pytest.mark.parametrize("args,needle", [
    (["--width", "40"], "--width 40"),
    (["--vocab", "60000"], "--vocab 60000"),
    (["--layers", "9"], "--layers 9"),
    (["--vocab", "100,200"], "needs --budget"),
    (["--kl-anneal", "2"], "--kl-anneal 2"),
    (["--teacher-fraction", "0"], "--teacher-fraction 0"),
])
def test_bad_shapes_are_one_line_errors(teacher_path, tmp_path, capsys, args, needle):
    res = _in_process(capsys, "shrink", str(teacher_path), str(tmp_path / "x.gguf"), "--distill-steps", "0", *args)
    assert_one_line_error(res, needle)
    assert not (tmp_path / "x.gguf").exists()


def test_missing_corpus_and_bad_output_are_one_line_errors(teacher_path, tmp_path, capsys):
    assert_one_line_error(_in_process(capsys, "shrink", str(teacher_path), str(tmp_path / "x.gguf")), "--corpus")
    assert_one_line_error(_in_process(capsys, "shrink", str(teacher_path), str(tmp_path / "x.bin"),
                                      "--distill-steps", "0"), ".gguf")
    assert_one_line_error(_in_process(capsys, "shrink", str(tmp_path / "none.gguf"), str(tmp_path / "x.gguf"),
                                      "--distill-steps", "0"), "none.gguf")
