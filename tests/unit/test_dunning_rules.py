"""The dunning policy: parsing, steps by attempt count, access that only shrinks."""

from __future__ import annotations

import pytest

from tollgate.domain.dunning import (
    DEFAULT_POLICY,
    access_after_failure,
    parse_dunning_policy,
)


def test_the_default_policy_warns_then_reduces_then_downgrades() -> None:
    policy = parse_dunning_policy(DEFAULT_POLICY)
    steps = [policy.step_for(attempt) for attempt in (0, 1, 2, 3, 4)]
    assert [step and (step.template, step.access) for step in steps] == [
        None,
        ("payment_failed_soft", "full"),
        ("payment_failed_warning", "reduced"),
        ("downgraded_payment_failed", "default"),
        ("downgraded_payment_failed", "default"),
    ]


def test_a_late_earlier_attempt_never_gives_access_back() -> None:
    policy = parse_dunning_policy(DEFAULT_POLICY)
    assert access_after_failure(policy, 1, None) == "full"
    assert access_after_failure(policy, 3, "full") == "default"
    assert access_after_failure(policy, 1, "default") == "default"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "at least one step"),
        ("1:payment_failed_soft", "attempt:template:access"),
        ("0:payment_failed_soft:full", "whole number from 1"),
        ("1:hello:full", "template must be one of"),
        ("1:payment_failed_soft:none", "access must be one of"),
        ("1:payment_failed_soft:full,1:payment_failed_warning:full", "two steps"),
        ("1:payment_failed_soft:default,2:payment_failed_warning:full", "may only shrink"),
    ],
)
def test_a_bad_policy_is_refused_with_a_reason(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_dunning_policy(text)


def test_the_setting_is_checked_when_read() -> None:
    from tollgate.config import ConfigError, load_settings

    with pytest.raises(ConfigError, match="TOLLGATE_DUNNING_POLICY"):
        load_settings(TOLLGATE_ENV="test", TOLLGATE_DUNNING_POLICY="1:nope:full")
    settings = load_settings(
        TOLLGATE_ENV="test", TOLLGATE_DUNNING_POLICY="2:payment_failed_warning:reduced"
    )
    assert settings.dunning_policy.step_for(1) is None
