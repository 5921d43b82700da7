"""stripesim against Stripe's own spec: every answer and event payload of one SDK scenario
validates against the response schemas (`openapi-judge.json`), every object has the keys of
Stripe's example object (`fixtures3.json`), every route and event type is exercised, and every
enum parameter of the routes served refuses a made-up value.

The reference files are read from `../shared/stripe/`; without them these tests skip.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from stripesim.app import load_resources
from stripesim.event_types import EVENT_TYPES
from stripesim.registry import API_ROUTES
from stripesim.testing import RunningSim
from tests.stripe_reference import fixtures, judge
from tests.stripesim.allowances import (
    ANSWER_DIFFERENCES,
    EXTRA_KEYS,
    MISSING_KEYS,
    ONLY_REFUSED_ROUTES,
)
from tests.stripesim.conformance import Recording, recorded_run
from tests.stripesim.judge import Judge

pytestmark = pytest.mark.xdist_group("conformance")


@pytest.fixture(scope="module")
def the_judge() -> Judge:
    return Judge(judge())


@pytest.fixture(scope="module")
def recording(the_judge: Judge) -> Iterator[Recording]:
    fixtures()  # skip early, before the scenario runs, when the reference data is absent
    with recorded_run() as recorded:
        yield recorded


def _allowed(difference: str) -> bool:
    return any(re.search(pattern, difference) for pattern in ANSWER_DIFFERENCES)


def _answer_schema(the_judge: Judge, method: str, route: str, body: Any) -> dict[str, Any] | None:
    """The schema an answer should meet: its operation's, else its object kind's."""
    concrete = re.sub(r"\{[^}]+\}", "x", route)
    schema = the_judge.response_schema(method, concrete)
    if schema is not None:
        return schema
    if body.get("object") == "list" and body.get("data"):
        item = the_judge.object_schema(body["data"][0]["object"])
        return {
            "type": "object",
            "properties": {
                "object": {"enum": ["list"]},
                "data": {"type": "array", "items": item},
                "has_more": {"type": "boolean"},
                "url": {"type": "string"},
            },
            "required": ["object", "data", "has_more", "url"],
        }
    return the_judge.object_schema(str(body.get("object")))


def test_the_scenario_runs_every_step(recording: Recording) -> None:
    assert recording.broken == []


def test_the_scenario_touches_every_route(recording: Recording) -> None:
    load_resources()
    served = {(route.method, route.path) for route in API_ROUTES}
    answered = {(e.method, e.route) for e in recording.exchanges if e.status == 200}
    touched = {(e.method, e.route) for e in recording.exchanges}
    untouched = sorted(served - touched)
    assert not untouched, f"routes the scenario never calls: {untouched}"
    refused = sorted(served - answered - ONLY_REFUSED_ROUTES)
    assert not refused, f"routes that never answered 200: {refused}"


def test_every_answer_validates(recording: Recording, the_judge: Judge) -> None:
    differences: Counter[str] = Counter()
    checked = 0
    for exchange in recording.exchanges:
        if exchange.status != 200:
            continue
        schema = _answer_schema(the_judge, exchange.method, exchange.route, exchange.body)
        assert schema is not None, f"no schema for {exchange.method} {exchange.route}"
        checked += 1
        for problem in the_judge.errors(exchange.body, schema):
            where = re.sub(r"\[\d+\]", "[]", problem)
            difference = f"{exchange.method} {exchange.route} {where}"
            if not _allowed(difference):
                differences[difference] += 1
    assert checked > 150
    assert not differences, "\n".join(f"{n}x {d}" for d, n in sorted(differences.items()))


def test_every_event_validates(recording: Recording, the_judge: Judge) -> None:
    envelope = the_judge.document["x-event-schema"]
    differences: Counter[str] = Counter()
    for event in recording.events:
        schema = the_judge.event_object_schema(event["type"])
        assert schema is not None, f"Stripe's schemas know no {event['type']} event"
        problems = [
            f"event {p}" for p in the_judge.errors({**event, "data": {"object": {}}}, envelope)
        ]
        problems += the_judge.errors(event["data"]["object"], schema, "$.data.object")
        for problem in problems:
            where = re.sub(r"\[\d+\]", "[]", problem)
            difference = f"{event['type']} {where}"
            if not _allowed(difference):
                differences[difference] += 1
    assert not differences, "\n".join(f"{n}x {d}" for d, n in sorted(differences.items()))


def test_the_scenario_sees_every_event_type_the_simulator_sends(recording: Recording) -> None:
    seen = {event["type"] for event in recording.events}
    unseen = sorted(EVENT_TYPES - seen)
    assert not unseen, f"event types the scenario never causes: {unseen}"


def test_every_event_type_is_one_stripe_sends(the_judge: Judge) -> None:
    known = set(the_judge.document["x-event-objects"])
    unknown = sorted(EVENT_TYPES - known)
    assert not unknown, f"event types Stripe does not send: {unknown}"


def _objects(value: Any) -> Iterator[dict[str, Any]]:
    """Every object (a hash with an `object` and an `id`) in an answer, nested ones too."""
    if isinstance(value, dict):
        if isinstance(value.get("object"), str) and "id" in value and not value.get("deleted"):
            yield value
        for item in value.values():
            yield from _objects(item)
    elif isinstance(value, list):
        for item in value:
            yield from _objects(item)


def test_every_object_has_the_keys_of_stripes_example(recording: Recording) -> None:
    examples = fixtures()
    differences: set[str] = set()
    bodies = [e.body for e in recording.exchanges if e.status == 200]
    bodies += [event["data"]["object"] for event in recording.events]
    for body in bodies:
        for obj in _objects(body):
            kind = obj["object"]
            if kind not in examples or kind == "list":
                continue
            expected = set(examples[kind])
            for key in expected - set(obj):
                if (kind, key) not in MISSING_KEYS:
                    differences.add(f"{kind} lacks {key}")
            for key in set(obj) - expected:
                if (kind, key) not in EXTRA_KEYS:
                    differences.add(f"{kind} has {key}")
    assert not differences, "\n".join(sorted(differences))


# -- request validation ----------------------------------------------------------------------------


def _enum_params(schema: dict[str, Any], prefix: str = "", depth: int = 0) -> Iterator[str]:
    """Every parameter (two levels deep, as the judge records them) that takes an enum value."""
    for key, spec in (schema.get("properties") or {}).items():
        name = f"{prefix}[{key}]" if prefix else key
        values = [value for value in spec.get("enum") or [] if isinstance(value, str) and value]
        if values:
            yield name
        for alternative in [spec, *(spec.get("anyOf") or [])]:
            if alternative.get("type") == "object" and depth == 0:
                yield from _enum_params(alternative, name, depth + 1)
            items = alternative.get("items") if alternative.get("type") == "array" else None
            if isinstance(items, dict):
                item_values = [v for v in items.get("enum") or [] if isinstance(v, str) and v]
                if item_values:
                    yield f"{name}[0]"
                if items.get("properties") and depth == 0:
                    yield from _enum_params(items, f"{name}[0]", depth + 1)


def test_every_enum_parameter_refuses_a_made_up_value(sim: RunningSim, the_judge: Judge) -> None:
    load_resources()
    checked = 0
    accepted = []
    headers = {"Authorization": "Bearer sk_test_conformance"}
    for route in API_ROUTES:
        concrete = re.sub(r"\{[^}]+\}", "x_made_up", route.path)
        found = the_judge.operation(route.method, concrete)
        if found is None:
            continue
        for name in _enum_params(found[1].get("x-request-params") or {}):
            checked += 1
            # The parameter's form name as the SDK encodes it: `a[b][0]=made_up_value`.
            fields = {name: "made_up_value"}
            if route.method in ("GET", "DELETE"):
                # The SDK sends GET and DELETE parameters in the query string.
                url = f"{sim.url}{concrete}"
                answer = httpx.request(route.method, url, params=fields, headers=headers)
            else:
                answer = httpx.request(
                    route.method, f"{sim.url}{concrete}", data=fields, headers=headers
                )
            error = answer.json().get("error") or {}
            # An unknown parent (a parameter the SDK's newer version dropped) refuses it too.
            named = error.get("param") == name or name.startswith(f"{error.get('param')}[")
            if answer.status_code == 400 and error.get("code") and named:
                continue
            accepted.append(
                f"{route.method} {route.path} {name}: {answer.status_code} "
                f"{error.get('code')} {error.get('param')}"
            )
    assert checked > 150
    assert not accepted, "\n".join(accepted)
