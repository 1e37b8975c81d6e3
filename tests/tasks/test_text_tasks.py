"""The text proxy tasks (text-lm, seq2seq) through the public entry point, and their data."""

from __future__ import annotations

import math

import pytest
import torch

from nero_study.data.prose import BYTE_VOCAB_SIZE, decode_bytes, prose_splits, pydoc_topics_text
from nero_study.tasks import TrialSpec, get_task, run_trial
from nero_study.tasks.seq2seq import BOS, EOS, PAD, Seq2SeqConfig, make_dataset, make_language, translate

TEXT_TASKS = ["text-lm", "seq2seq"]


@pytest.fixture(autouse=True)
def one_thread():
    """Run with one torch thread, as sweeps run proxy trials (one core each), restoring the setting after."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


# --- data -----------------------------------------------------------------------------------------------


def test_prose_corpus_is_real_english_of_useful_size() -> None:
    text = pydoc_topics_text()
    splits = prose_splits()
    total = len(splits.train) + len(splits.validation)

    assert total == len(text.encode("utf-8")) > 300_000
    assert len(torch.unique(splits.train)) > 80  # letters, digits, punctuation, whitespace
    assert int(splits.train.max()) < BYTE_VOCAB_SIZE
    assert text.count(" the ") > 2_000
    # the validation part is the contiguous last 10% of the bytes
    assert abs(len(splits.validation) / total - 0.1) < 1e-3
    assert decode_bytes(torch.cat([splits.train, splits.validation])) == text


def test_prose_split_rejects_bad_fraction() -> None:
    with pytest.raises(ValueError, match="validation_fraction: 1.5"):
        prose_splits(1.5)


def test_seq2seq_data_is_fixed_by_its_seed_and_follows_the_rule() -> None:
    config = Seq2SeqConfig(epochs=1, evals_per_epoch=1, train_pairs=200, validation_pairs=50)
    torch.manual_seed(0)
    language, train, validation = make_dataset(config)
    torch.manual_seed(1)  # the trial seed must not matter
    language_again, train_again, validation_again = make_dataset(config)

    assert language == language_again
    for first, second in zip((*train, *validation), (*train_again, *validation_again), strict=True):
        assert torch.equal(first, second)

    for row in range(len(validation.source)):
        sentence = [int(w) for w in validation.source[row] if w != PAD]
        expected = translate(sentence, language)
        target = [int(w) for w in validation.target[row] if w != PAD]
        decoder_input = [int(w) for w in validation.decoder_input[row] if w != PAD]
        assert config.min_length <= len(sentence) <= config.max_length
        assert target == [*expected, EOS]
        assert decoder_input == [BOS, *expected]
    # the target is the source reversed, word by word through the lexicon
    assert translate([3, 4], language) == [*language.lexicon[4], *language.lexicon[3]]
    assert any(len(entry) == 2 for entry in language.lexicon.values())

    other_language = make_language(Seq2SeqConfig(epochs=1, evals_per_epoch=1, data_seed=99))
    assert other_language.lexicon != language.lexicon


# --- trials ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("task_name", TEXT_TASKS)
def test_smoke_trial_learns_and_reports_perplexity(task_name: str) -> None:
    result = run_trial(TrialSpec(task=task_name, optimizer="adam", lr=1e-3, budget="smoke"))

    assert result.status == "succeeded", result.error
    assert result.metric_name == "validation perplexity"
    assert result.lower_is_better is True
    assert result.curve[0].step == 0 and math.isnan(result.curve[0].train_loss)
    assert result.curve[-1].step == result.steps > 0
    # at initialisation the model is about as good as uniform guessing; a few steps already help
    chance = get_task(task_name).chance_metric
    assert 0.5 * chance < result.initial_metric < 2 * chance
    assert result.metric < 0.7 * result.initial_metric
    assert result.wall_s < 30


@pytest.mark.parametrize("task_name", TEXT_TASKS)
def test_same_spec_gives_identical_curve(task_name: str) -> None:
    spec = TrialSpec(task=task_name, optimizer="sgd", lr=0.1, seed=3, budget="smoke")
    first, second = run_trial(spec), run_trial(spec)
    other_seed = run_trial(TrialSpec(task=task_name, optimizer="sgd", lr=0.1, seed=4, budget="smoke"))

    assert [p.to_dict() for p in first.curve] == [p.to_dict() for p in second.curve]
    assert [p.metric for p in first.curve] != [p.metric for p in other_seed.curve]


@pytest.mark.parametrize("task_name", TEXT_TASKS)
@pytest.mark.parametrize(("optimizer", "lr"), [("adam", 10.0), ("sgd", 1e3)])
def test_absurd_learning_rate_ends_diverged(task_name: str, optimizer: str, lr: float) -> None:
    result = run_trial(TrialSpec(task=task_name, optimizer=optimizer, lr=lr, budget="smoke"))

    assert result.status == "diverged"
    assert result.error and ("exceeds" in result.error or "became" in result.error)
    assert result.curve[0].step == 0  # the metric at initialisation is still recorded


@pytest.mark.slow
@pytest.mark.parametrize("task_name", TEXT_TASKS)
@pytest.mark.parametrize(("optimizer", "lr"), [("nero", 0.01), ("sgd", 0.1)])
def test_proxy_budget_trains_well_below_chance(task_name: str, optimizer: str, lr: float) -> None:
    result = run_trial(TrialSpec(task=task_name, optimizer=optimizer, lr=lr, budget="proxy"))

    assert result.status == "succeeded", result.error
    assert len(result.curve) >= 5
    assert result.metric < get_task(task_name).chance_metric / 4
