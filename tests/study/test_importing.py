"""Results from elsewhere: a CSV read into trial records, every bad row named, nothing kept from a bad file."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from nero_study.errors import ResultsFileError
from nero_study.study.analysis import analyze_sweep
from nero_study.study.importing import parse_results, read_results_file

GOOD = """task,optimizer,lr,seed,status,metric,metric_name,lower_is_better,chance,source
translation,nero,0.01,0,succeeded,11.35,perplexity,true,30000,table
translation,sgd,0.1,0,succeeded,92.4,perplexity,true,30000,table
translation,adam,0.001,0,failed,,perplexity,true,30000,crashed
digits-mlp,nero,0.01,0,succeeded,0.05,,,,
"""


def test_a_good_file_gives_trials_the_analysis_reads():
    parsed = parse_results(GOOD, name="paper")
    assert len(parsed.trials) == 4 and parsed.spec["name"] == "paper" and parsed.spec["imported"] is True
    nero = parsed.trials[0]
    assert (nero["task"], nero["label"], nero["lr"], nero["status"], nero["metric"]) == (
        "translation", "nero", 0.01, "succeeded", 11.35,
    )
    assert nero["initial_metric"] == 30000.0 and nero["lower_is_better"] is True
    # A known task takes its metric name, orientation and chance from the registry.
    digits = parsed.trials[3]
    assert (digits["metric_name"], digits["lower_is_better"], digits["initial_metric"]) == ("test_error", True, 0.9)
    analysis = analyze_sweep(parsed.trials)
    assert analysis.profiles["tuned"].ratios["sgd"]["translation"] == pytest.approx(92.4 / 11.35, rel=1e-12)
    assert analysis.failed_trials == 1


def test_every_bad_row_and_column_is_named():
    text = """task,optimizer,lr,seed,status,metric,metric_name,lower_is_better,chance
translation,nero,-1,0,succeeded,11.35,perplexity,true,30000
translation,sgd,0.1,x,finished,92.4,perplexity,true,30000
mystery,sgd,0.1,0,succeeded,,,,
digits-mlp,sgd,0.1,0,succeeded,0.2,,false,
"""
    with pytest.raises(ResultsFileError) as caught:
        parse_results(text)
    message = str(caught.value)
    assert "row 2, column lr: '-1' is not a positive number" in message
    assert "row 3, column seed: 'x' is not an integer" in message
    assert "row 3, column status: 'finished'; valid: succeeded, diverged, failed" in message
    assert "row 4, column metric: a succeeded trial needs a finite final metric" in message
    assert "row 4, column metric_name: task 'mystery' is not a known task" in message
    assert "row 4, column chance" in message
    assert "row 5, column lower_is_better: task 'digits-mlp' is lower-is-better" in message


def test_bad_headers_and_duplicates():
    with pytest.raises(ResultsFileError, match=r"row 1: unknown column\(s\) colour; allowed: task, lr, status"):
        parse_results("task,optimizer,lr,status,colour\n")
    with pytest.raises(ResultsFileError, match=r"row 1: missing column\(s\) lr, optimizer or label"):
        parse_results("task,status\n")
    with pytest.raises(ResultsFileError, match="row 3, column seed: the same task, label, lr and seed as row 2"):
        parse_results("task,optimizer,lr,status,metric\ndigits-mlp,sgd,0.1,succeeded,0.2\ndigits-mlp,sgd,0.1,diverged,\n")
    with pytest.raises(ResultsFileError, match="curve files cannot be read from an upload"):
        parse_results("task,optimizer,lr,status,metric,curve_file\ndigits-mlp,sgd,0.1,succeeded,0.2,c.csv\n",
                      allow_curve_files=False)


def test_curve_files_are_read_relative_to_the_results_file(tmp_path: Path):
    (tmp_path / "curve.csv").write_text("step,metric,epoch\n0,0.9,0\n10,0.3,1\n")
    results = tmp_path / "results.csv"
    results.write_text("task,optimizer,lr,status,metric,curve_file\ndigits-mlp,sgd,0.1,succeeded,0.3,curve.csv\n"
                       "digits-mlp,sgd,1.0,diverged,,missing.csv\n")
    with pytest.raises(ResultsFileError, match="row 3, column curve_file: curve file .*missing.csv.* does not exist"):
        read_results_file(results)
    results.write_text("task,optimizer,lr,status,metric,curve_file\ndigits-mlp,sgd,0.1,succeeded,0.3,curve.csv\n")
    parsed = read_results_file(results)
    assert parsed.spec["name"] == "results"
    assert parsed.curves[0] == [{"step": 0.0, "metric": 0.9, "epoch": 0.0}, {"step": 10.0, "metric": 0.3, "epoch": 1.0}]
    assert math.isclose(parsed.trials[0]["metric"], 0.3)


def test_the_papers_released_runs_give_sgd_a_translation_ratio_near_8():
    """examples/paper-released-runs.csv: the translation and 100-layer-MLP runs in the paper's released code."""
    path = Path(__file__).resolve().parents[2] / "examples" / "paper-released-runs.csv"
    parsed = read_results_file(path)
    analysis = analyze_sweep(parsed.trials)

    def mean_of(label: str, lr: float) -> float:
        values = [
            t["metric"] for t in parsed.trials
            if t["task"] == "translation-transformer" and t["label"] == label and t["lr"] == lr
        ]
        assert len(values) == 3  # the paper protocol's three seeds at the chosen lr
        return sum(values) / 3

    ratio = analysis.profiles["tuned"].ratios["sgd"]["translation-transformer"]
    assert ratio == pytest.approx(mean_of("sgd", 1e-4) / mean_of("nero", 1e-3), rel=1e-12)
    assert 8.0 < ratio < 8.3  # the paper's table: SGD 92.4 vs Nero 11.35
    assert analysis.failed_trials == 4  # runs whose logs end early, cause not recorded
