"""The evaluation gate's verdict: each check fails it for its own reason, and passes when the
tuned model is no worse than its base."""

from __future__ import annotations

import math

from genloom.gateway.fine_tune_gate import PROBES, TaskMetric, judge


def verdict(**changes):
    figures = dict(eval_loss=1.0, base_eval_loss=2.0, flagged=1, base_flagged=1, probes=len(PROBES), metric=None,
                   metric_score=None, base_metric_score=None)
    return judge(**(figures | changes))


def test_no_worse_than_the_base_passes_with_perplexities():
    v = verdict()
    assert v.passed and v.reasons == () and v.as_json()["state"] == "passed"
    assert v.eval_perplexity == round(math.e, 4) and v.base_eval_perplexity == round(math.e ** 2, 4)


def test_each_check_fails_for_its_own_reason():
    assert verdict(eval_loss=2.5).reasons == ("eval loss 2.5000 is above the base's 2.0000",)
    assert verdict(flagged=3).reasons == (f"3 of {len(PROBES)} probe answers flagged by the guards, the base 1",)
    metric = TaskMetric.of({"type": "exact_match"})
    failed = verdict(metric=metric, metric_score=0.2, base_metric_score=0.5)
    assert not failed.passed and failed.as_json()["state"] == "failed_eval" and "exact_match 0.2" in failed.reasons[0]


def test_without_an_eval_split_the_loss_check_is_skipped():
    assert verdict(eval_loss=None, base_eval_loss=None).passed


def test_task_metrics_score_answers():
    assert TaskMetric.of({"type": "exact_match"}).score([" yes", "no"], ["yes", "yes"]) == 0.5
    assert TaskMetric.of({"type": "pattern", "pattern": r"^Dear "}).score(["Dear Ann,", "Hi"], ["", ""]) == 0.5
    assert TaskMetric.of(None) is None and TaskMetric.of({"type": "exact_match"}).score([], []) is None
