"""Schemathesis against the app's own OpenAPI schema, over real HTTP on 127.0.0.1: for every
operation, generated requests that fit the schema and requests that break it; none may get a 5xx.
Slow (CI runs it); the examples per operation are bounded so it ends in a couple of minutes."""

from __future__ import annotations

from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from fakes import FakeOpenAI
from webchat import web_settings, word_embedder
from webusers import two_users

pytestmark = pytest.mark.slow

EXAMPLES = 15  # per operation and generation mode: ~43 operations x 2 modes


def test_no_generated_request_gets_a_server_error(database_url: str, fake_llm: FakeOpenAI) -> None:
    # The tiny word embedder: retries retrieve demos, and loading MiniLM would only add time.
    with word_embedder() as embedder, two_users(web_settings(fake_llm, embedder=embedder), fake_llm) as users:
        # As alice, with her bearer token: the guards' CSRF check is for cookie sessions.
        headers = {"Authorization": users.a.headers["Authorization"], "Accept": "application/json"}
        spec = users.a.get("/openapi.json").json()
        schema = schemathesis.openapi.from_dict(spec)
        session = requests.Session()
        failures: list[str] = []
        operations = 0
        for result in schema.get_all_operations():
            operation = result.ok()
            operations += 1
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

                @settings(
                    max_examples=EXAMPLES,
                    deadline=None,
                    database=None,
                    phases=[Phase.explicit, Phase.generate, Phase.shrink],
                    suppress_health_check=list(HealthCheck),
                )
                @given(case=operation.as_strategy(generation_mode=mode))
                def call(case: Any) -> None:
                    response = case.call(
                        base_url=users.base_url, session=session, headers=headers, timeout=60
                    )
                    assert response.status_code < 500, (
                        f"{response.status_code} {response.text[:300]}\n"
                        + case.as_curl_command(headers=headers, base_url=users.base_url)
                    )

                try:
                    call()
                except Unsatisfiable:  # nothing to break in an operation without inputs
                    assert mode is GenerationMode.NEGATIVE, operation.label
                except Exception as exc:  # a 5xx, or a request that got no answer
                    failures.append(f"{operation.label} ({mode.value}): {type(exc).__name__}: {exc}")
        assert operations >= 40, operations
        assert not failures, "\n\n".join(failures)
