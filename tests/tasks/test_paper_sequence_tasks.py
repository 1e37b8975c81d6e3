"""The paper's sequence and RL tasks: wikitext2-transformer, translation-transformer, ppo-pong.

Data sets are tiny files written here in the real on-disk formats (WikiText-2 token files, Multi30k
plain-text pairs) under a temporary ``NERO_STUDY_DATA_DIR``; Pong runs on the real ALE emulator.
"""

from __future__ import annotations

import math
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from nero_study.data.parallel_text import (
    BOS,
    EOS,
    PAD,
    UNK,
    build_joint_vocabulary,
    filter_length,
    load_multi30k,
    read_parallel,
    tokenize,
)
from nero_study.data.wikitext import EOS as WIKI_EOS
from nero_study.data.wikitext import (
    batchify,
    bptt_chunks,
    count_bptt_chunks,
    load_wikitext2,
    read_tokens,
)
from nero_study.tasks import TaskConfigError, TrialSpec, get_task, run_trial
from nero_study.tasks.atari import EpisodeReturns, make_atari_envs
from nero_study.tasks.ppo_pong import AtariActorCritic, gae_returns
from nero_study.tasks.translation_transformer import (
    Seq2SeqTransformer,
    TranslationConfig,
    smoothed_token_losses,
    triangular_factor,
)
from nero_study.tasks.wikitext2_transformer import (
    BestValidationCheckpoint,
    WikiText2Config,
    WordTransformerLM,
    evaluate_perplexity,
)

# ---------------------------------------------------------------- tiny data sets in the real formats

WIKI_WORDS = (
    "the of and in to a was game series Valkyria Chronicles battle Sega tactical role @-@ playing , . "
    "<unk> Japan released 2011 ( ) @,@ @.@ unit squad"
).split()
GERMAN = "ein eine mann frau hund kind läuft sitzt auf der die straße bank im park mit einem ball".split()
ENGLISH = "a a man woman dog child runs sits on the the street bench in park with a ball".split()


def write_wikitext(root: Path, lines_per_split: dict[str, int] | None = None, seed: int = 0) -> Path:
    """WikiText-2 token files: title lines, blank lines and space-separated tokens, as the real files."""
    counts = lines_per_split or {"train": 120, "valid": 30, "test": 30}
    rng = random.Random(seed)
    folder = root / "wikitext-2"
    folder.mkdir(parents=True, exist_ok=True)
    for split, count in counts.items():
        lines = [" \n", " = Valkyria Chronicles III = \n", " \n"]
        for index in range(count):
            words = rng.choices(WIKI_WORDS, k=rng.randint(4, 18))
            lines.append(" " + " ".join(words) + " \n")
            if index % 5 == 4:
                lines.append(" \n")
        (folder / f"wiki.{split}.tokens").write_text("".join(lines), encoding="utf-8")
    return folder


def write_multi30k(root: Path, train_pairs: int = 48, val_pairs: int = 10, seed: int = 0) -> Path:
    """Multi30k plain text: ``{train,val}.{de,en}``, one capitalised sentence per line, aligned by line."""
    rng = random.Random(seed)
    folder = root / "multi30k"
    folder.mkdir(parents=True, exist_ok=True)
    for split, count in (("train", train_pairs), ("val", val_pairs)):
        german, english = [], []
        for _ in range(count):
            picks = [rng.randrange(len(GERMAN)) for _ in range(rng.randint(3, 9))]
            german.append(" ".join(GERMAN[i] for i in picks).capitalize() + ".\n")
            english.append(" ".join(ENGLISH[i] for i in picks).capitalize() + ".\n")
        (folder / f"{split}.de").write_text("".join(german), encoding="utf-8")
        (folder / f"{split}.en").write_text("".join(english), encoding="utf-8")
    return folder


@pytest.fixture(autouse=True)
def one_torch_thread():
    """These models are tiny: on a shared CPU, intra-op threads cost far more in waiting than they save."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def data_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("NERO_STUDY_DATA_DIR", str(tmp_path))
    return tmp_path


def curve_of(result) -> list[tuple[int, float]]:
    return [(point.step, point.metric) for point in result.curve]


# ---------------------------------------------------------------- WikiText-2 loader


def test_token_file_lines_become_tokens_then_eos_blank_lines_included(tmp_path: Path) -> None:
    path = tmp_path / "wiki.train.tokens"
    path.write_text(" \n = Title = \n \n Sega released it in 2011 @-@ 12 . \n", encoding="utf-8")
    assert read_tokens(path) == [
        WIKI_EOS,
        "=", "Title", "=", WIKI_EOS,
        WIKI_EOS,
        "Sega", "released", "it", "in", "2011", "@-@", "12", ".", WIKI_EOS,
    ]


def test_vocabulary_covers_train_valid_test_in_order_of_first_appearance(tmp_path: Path) -> None:
    folder = tmp_path / "wikitext-2"
    folder.mkdir()
    (folder / "wiki.train.tokens").write_text("a b a\n", encoding="utf-8")
    (folder / "wiki.valid.tokens").write_text("b c\n", encoding="utf-8")
    (folder / "wiki.test.tokens").write_text("d a\n", encoding="utf-8")
    corpus = load_wikitext2(tmp_path)
    assert corpus.vocabulary.words == ["a", "b", WIKI_EOS, "c", "d"]
    assert corpus.train.tolist() == [0, 1, 0, 2]
    assert corpus.valid.tolist() == [1, 3, 2]
    assert corpus.test.tolist() == [4, 0, 2]
    assert [corpus.vocabulary.words[i] for i in corpus.test.tolist()] == ["d", "a", WIKI_EOS]


def test_batchify_makes_contiguous_columns_and_bptt_targets_are_the_next_token() -> None:
    stream = torch.arange(23)
    columns = batchify(stream, 4)
    assert columns.shape == (5, 4)  # 3 trailing tokens dropped
    assert columns[:, 1].tolist() == [5, 6, 7, 8, 9]
    chunks = list(bptt_chunks(columns, bptt=3))
    assert len(chunks) == count_bptt_chunks(5, 3) == 2
    inputs, targets = chunks[0]
    assert inputs.shape == (3, 4) and torch.equal(targets, inputs + 1)
    assert chunks[1][0].shape == (1, 4)  # last window: rows - 1 = 4 predictions, 3 + 1


# ---------------------------------------------------------------- parallel text loader


def test_tokenizer_lowercases_and_splits_words_from_punctuation() -> None:
    assert tokenize("Zwei Männer, die's lieben.") == ["zwei", "männer", ",", "die", "'", "s", "lieben", "."]
    assert tokenize("A dog   runs!\n") == ["a", "dog", "runs", "!"]


def test_parallel_files_with_different_line_counts_fail_naming_both(tmp_path: Path) -> None:
    (tmp_path / "train.de").write_text("Ein Hund.\nZwei Katzen.\nEin Kind.\n", encoding="utf-8")
    (tmp_path / "train.en").write_text("A dog.\nTwo cats.\n", encoding="utf-8")
    with pytest.raises(ValueError) as error:
        read_parallel(tmp_path / "train.de", tmp_path / "train.en")
    message = str(error.value)
    assert "train.de" in message and "train.en" in message and "3" in message and "2" in message


def test_parallel_pairs_stay_aligned_line_by_line(tmp_path: Path) -> None:
    (tmp_path / "val.de").write_text("Ein Hund läuft.\n\nZwei Kinder spielen.\n", encoding="utf-8")
    (tmp_path / "val.en").write_text("A dog runs.\nNothing here.\nTwo children play.\n", encoding="utf-8")
    pairs = read_parallel(tmp_path / "val.de", tmp_path / "val.en")
    assert pairs == [  # the pair with an empty German side is dropped, the others keep their partner
        (["ein", "hund", "läuft", "."], ["a", "dog", "runs", "."]),
        (["zwei", "kinder", "spielen", "."], ["two", "children", "play", "."]),
    ]


def test_joint_vocabulary_keeps_words_frequent_on_either_side() -> None:
    pairs = [
        (["hund", "hund", "katze"], ["dog", "cat"]),
        (["hund", "katze"], ["dog", "cat", "cat"]),
        (["katze", "maus"], ["dog", "cat", "mouse"]),
    ]
    vocabulary = build_joint_vocabulary(pairs, min_freq=3)
    # hund 3x, katze 3x (de); dog 3x, cat 4x (en); maus / mouse once -> out
    assert vocabulary.words[:4] == [PAD, UNK, BOS, EOS]
    assert set(vocabulary.words[4:]) == {"hund", "katze", "dog", "cat"}
    encoded = vocabulary.encode(["hund", "maus"]).tolist()
    assert encoded == [vocabulary.bos_id, vocabulary.ids["hund"], vocabulary.unk_id, vocabulary.eos_id]
    # counted per side, not summed: 2 + 2 occurrences stay below min_freq 3
    split_word = [(["ja"], ["ja"]), (["ja"], ["ja"])]
    assert "ja" not in build_joint_vocabulary(split_word, min_freq=3).ids


def test_pairs_longer_than_max_len_are_dropped_and_corpus_shares_one_vocabulary(data_root: Path) -> None:
    assert filter_length([(["a"] * 3, ["b"] * 2), (["a"] * 2, ["b"] * 4)], max_len=3) == [
        (["a"] * 3, ["b"] * 2)
    ]
    write_multi30k(data_root)
    corpus = load_multi30k(data_root, min_freq=1, max_len=100)
    assert len(corpus.train) == 48 and len(corpus.valid) == 10
    source, target = corpus.train[0]
    assert source[0] == target[0] == corpus.vocabulary.bos_id
    assert source[-1] == target[-1] == corpus.vocabulary.eos_id
    assert "läuft" in corpus.vocabulary.ids and "runs" in corpus.vocabulary.ids


# ---------------------------------------------------------------- the paper's settings and models


def n_params(model: torch.nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters())


def test_wikitext2_paper_model_has_the_paper_architectures_parameter_count() -> None:
    vocab, d, ff, layers = 33_278, 200, 200, 2
    model = WordTransformerLM(vocab, WikiText2Config())
    attention = (3 * d * d + 3 * d) + (d * d + d)  # in-projection and out-projection, with biases
    feed_forward = (d * ff + ff) + (ff * d + d)
    expected = vocab * d + layers * (attention + feed_forward) + (d * vocab + vocab)  # no layer norm
    assert n_params(model) == expected
    logits = model(torch.randint(vocab, (35, 3)))
    assert logits.shape == (35, 3, vocab)


def test_translation_paper_model_has_the_paper_architectures_parameter_count() -> None:
    vocab, d, ff, layers = 9_000, 512, 2048, 6
    model = Seq2SeqTransformer(vocab, 0, TranslationConfig())
    attention = 4 * d * d  # query, key, value, output projections without biases
    feed_forward = (d * ff + ff) + (ff * d + d)
    expected = vocab * d + layers * (attention + feed_forward) + layers * (2 * attention + feed_forward)
    assert n_params(model) == expected  # one shared embedding, affine-free layer norms
    assert model.source_embedding.weight is model.target_embedding.weight
    model.eval()
    logits = model(torch.randint(4, vocab, (2, 7)), torch.randint(4, vocab, (2, 5)))
    assert logits.shape == (2, 5, vocab)


def test_untied_translation_model_adds_two_embedding_matrices() -> None:
    config = TranslationConfig(layers=1, d_model=16, heads=2, d_ff=32)
    tied = Seq2SeqTransformer(100, 0, config)
    untied = Seq2SeqTransformer(100, 0, TranslationConfig(layers=1, d_model=16, heads=2, d_ff=32,
                                                          tied_embeddings=False))
    assert n_params(untied) - n_params(tied) == 2 * 100 * 16


def test_ppo_model_is_the_atari_cnn_with_the_papers_parameter_count() -> None:
    frames, actions, hidden = 4, 6, 512
    model = AtariActorCritic(frames, actions)
    conv = (frames * 32 * 8 * 8 + 32) + (32 * 64 * 4 * 4 + 64) + (64 * 32 * 3 * 3 + 32)
    side = ((84 - 8) // 4 + 1 - 4) // 2 + 1 - 3 + 1  # 20 -> 9 -> 7
    dense = 32 * side * side * hidden + hidden
    heads = (hidden * actions + actions) + (hidden + 1)
    assert side == 7 and n_params(model) == conv + dense + heads
    logits, value = model(torch.randint(0, 256, (3, frames, 84, 84), dtype=torch.uint8))
    assert logits.shape == (3, actions) and value.shape == (3,)


def test_label_smoothing_matches_the_papers_one_hot_formula() -> None:
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(5, 11, generator=generator, dtype=torch.float64)
    gold = torch.tensor([0, 3, 10, 4, 4])
    eps = 0.1
    one_hot = torch.zeros_like(logits).scatter(1, gold[:, None], 1.0)
    target = one_hot * (1 - eps) + (1 - one_hot) * eps / (11 - 1)
    expected = -(target * torch.log_softmax(logits, dim=1)).sum(dim=1)
    torch.testing.assert_close(smoothed_token_losses(logits, gold, eps).double(), expected, rtol=1e-6, atol=1e-6)
    plain = torch.nn.functional.cross_entropy(logits, gold, reduction="none")
    torch.testing.assert_close(smoothed_token_losses(logits, gold, 0.0).double(), plain, rtol=1e-6, atol=1e-6)


def test_triangular_schedule_rises_to_the_middle_and_falls_to_zero() -> None:
    factors = [triangular_factor(epoch, 100) for epoch in range(100)]
    assert factors[0] == pytest.approx(0.02) and factors[1] == pytest.approx(0.04)
    assert max(factors) == pytest.approx(1.0) and factors.index(max(factors)) == 49
    assert factors[50] == pytest.approx(0.98) and factors[99] == 0.0


def test_gae_returns_discount_within_episodes_and_stop_at_their_end() -> None:
    gamma, lam = 0.9, 1.0  # lam = 1: returns are the discounted rewards plus the bootstrap
    rewards = torch.tensor([[1.0], [0.0], [2.0]])
    values = torch.tensor([[0.5], [0.2], [0.1], [3.0]])
    not_done = torch.tensor([[1.0], [0.0], [1.0]])  # the episode ends after step 1
    returns = gae_returns(rewards, values, not_done, gamma, lam)
    assert returns[:, 0].tolist() == pytest.approx([1.0 + gamma * 0.0, 0.0, 2.0 + gamma * 3.0])


def test_episode_returns_track_the_last_window_of_finished_episodes() -> None:
    tracker = EpisodeReturns(num_envs=2, window=2)
    assert tracker.mean() is None
    tracker.update(np.array([1.0, -1.0]), np.array([False, False]))
    tracker.update(np.array([1.0, 0.0]), np.array([True, False]))
    tracker.update(np.array([-1.0, -1.0]), np.array([True, True]))
    assert list(tracker.finished) == [-1.0, -2.0] and tracker.episodes == 3  # window keeps the last 2
    assert tracker.mean() == -1.5


def test_atari_envs_give_stacked_84x84_grey_frames_zeroed_at_reset() -> None:
    envs = make_atari_envs("pong", 2, num_threads=1)
    try:
        frames, _ = envs.reset(seed=0)
        assert frames.shape == (2, 4, 84, 84) and frames.dtype == np.uint8
        assert envs.single_action_space.n == 6
        assert frames[:, :3].max() == 0 and frames[:, 3].max() > 0  # only the newest frame at reset
        frames, rewards, *_ = envs.step(np.zeros(2, dtype=np.int64))
        assert frames[:, 2].max() > 0 and rewards.shape == (2,)
    finally:
        envs.close()


# ---------------------------------------------------------------- trials at smoke budget


def test_wikitext2_smoke_trial_succeeds_from_chance_and_is_deterministic(data_root: Path) -> None:
    write_wikitext(data_root)
    spec = TrialSpec(task="wikitext2-transformer", optimizer="sgd", lr=0.5, budget="smoke")
    result = run_trial(spec)
    assert result.status == "succeeded", result.error
    assert result.curve[0].step == 0 and result.curve[-1].step == 6 == result.steps
    assert [point.step for point in result.curve] == [0, 2, 4, 6]
    vocab_size = len(load_wikitext2(data_root).vocabulary)
    assert 0.8 * vocab_size < result.initial_metric < 1.5 * vocab_size  # small logits: about uniform
    assert all(math.isfinite(point.train_loss) for point in result.curve[1:])
    assert curve_of(run_trial(spec)) == curve_of(result)


def test_wikitext2_trial_result_is_the_test_perplexity_of_the_best_validation_checkpoint(
    data_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_wikitext(data_root)
    restored: list[tuple[BestValidationCheckpoint, dict[str, torch.Tensor]]] = []
    original_restore = BestValidationCheckpoint.restore

    def spy(self: BestValidationCheckpoint) -> None:
        original_restore(self)
        restored.append((self, {k: v.clone() for k, v in self.model.state_dict().items()}))

    monkeypatch.setattr(BestValidationCheckpoint, "restore", spy)
    spec = TrialSpec(task="wikitext2-transformer", optimizer="adam", lr=0.01, budget="smoke")
    result = run_trial(spec)
    assert result.status == "succeeded", result.error
    (checkpoint, weights), = restored
    validation = [point.metric for point in result.curve]
    assert checkpoint.best == min(validation[1:])  # the best after training began, not at initialisation
    # The trial's metric is that checkpoint's perplexity on the test split (the script's test_ppls.txt).
    corpus = load_wikitext2(data_root)
    config = get_task("wikitext2-transformer").config("smoke")
    model = WordTransformerLM(len(corpus.vocabulary), config)
    model.load_state_dict(weights)
    test_perplexity = evaluate_perplexity(model, batchify(corpus.test, config.eval_batch_size), config.bptt)
    assert result.metric == result.best_metric == pytest.approx(test_perplexity, rel=1e-6)
    assert result.metric_name == "test perplexity" and result.metric not in validation


def test_translation_smoke_trial_succeeds_and_is_deterministic(data_root: Path) -> None:
    write_multi30k(data_root)
    spec = TrialSpec(task="translation-transformer", optimizer="nero", lr=0.01, budget="smoke")
    result = run_trial(spec)
    assert result.status == "succeeded", result.error
    assert result.curve[0].step == 0 and result.steps == 6
    assert all(math.isfinite(point.metric) and point.metric > 1 for point in result.curve)
    assert curve_of(run_trial(spec)) == curve_of(result)


def test_ppo_pong_smoke_trial_plays_real_pong_and_is_deterministic() -> None:
    spec = TrialSpec(task="ppo-pong", optimizer="adam", lr=2.5e-4, budget="smoke")
    result = run_trial(spec)
    assert result.status == "succeeded", result.error
    assert result.curve[0].step == 0 and result.initial_metric == -21.0  # no episode finished yet
    assert result.steps == 3 * 1 * 2  # updates x ppo epochs x minibatches
    # smoke episodes are cut after 100 frames, too short for a point: finished episodes return 0
    assert -21.0 < result.metric <= 21.0
    assert curve_of(run_trial(spec)) == curve_of(result)


# ---------------------------------------------------------------- missing data fails at once


def test_missing_wikitext_fails_before_training_naming_the_expected_file(data_root: Path) -> None:
    spec = TrialSpec(task="wikitext2-transformer", optimizer="nero", lr=0.01, budget="smoke")
    with pytest.raises(TaskConfigError, match="wiki.train.tokens") as error:
        run_trial(spec)
    assert str(data_root / "wikitext-2" / "wiki.train.tokens") in str(error.value)
    write_wikitext(data_root, {"train": 20, "test": 5})  # valid missing
    with pytest.raises(TaskConfigError) as error:
        run_trial(spec)
    assert str(data_root / "wikitext-2" / "wiki.valid.tokens") in str(error.value)


def test_missing_multi30k_fails_before_training_naming_the_expected_file(data_root: Path) -> None:
    spec = TrialSpec(task="translation-transformer", optimizer="adam", lr=1e-3, budget="smoke")
    with pytest.raises(TaskConfigError) as error:
        run_trial(spec)
    assert str(data_root / "multi30k" / "train.de") in str(error.value)
    write_multi30k(data_root)
    (data_root / "multi30k" / "val.en").unlink()
    with pytest.raises(TaskConfigError) as error:
        run_trial(spec)
    assert str(data_root / "multi30k" / "val.en") in str(error.value)


def test_unset_data_dir_fails_naming_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NERO_STUDY_DATA_DIR", raising=False)
    for task in ("wikitext2-transformer", "translation-transformer"):
        with pytest.raises(TaskConfigError, match="NERO_STUDY_DATA_DIR"):
            run_trial(TrialSpec(task=task, optimizer="nero", lr=0.01, budget="smoke"))


def test_missing_atari_rom_fails_before_training_naming_it() -> None:
    spec = TrialSpec(
        task="ppo-pong", optimizer="nero", lr=0.01, budget="smoke", task_options={"game": "no_such_game"}
    )
    with pytest.raises(TaskConfigError, match="no_such_game"):
        run_trial(spec)


def test_invalid_options_fail_with_the_bad_value() -> None:
    with pytest.raises(TaskConfigError, match="loss_reduction"):
        get_task("translation-transformer").config("smoke", {"loss_reduction": "median"})
    with pytest.raises(TaskConfigError, match="num_minibatches"):
        get_task("ppo-pong").config("smoke", {"num_minibatches": 5})
