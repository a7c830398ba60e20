"""The JSON API against its own OpenAPI document, with schemathesis generating requests.

Every generated request, valid (positive) and invalid (negative: wrong types,
missing fields, values outside the schema), must get an answer the document
allows and never a 500. schemathesis's pytest plugin does not run under this
pytest version, so the operations are driven here with Hypothesis directly.
"""

from __future__ import annotations

import os

import pytest
import schemathesis
from flask import Flask
from hypothesis import HealthCheck, given, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from newsletter.models import MailingList

# In CI the examples are fixed (a red build must be reproducible); locally they vary,
# so every run explores new input.
IN_CI = os.environ.get("CI") == "true"


@pytest.mark.parametrize("mode", list(schemathesis.GenerationMode))
def test_api_conforms_to_its_document(
    app: Flask, default_list: MailingList, mode: schemathesis.GenerationMode
) -> None:
    schema = schemathesis.openapi.from_wsgi("/api/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.method.upper() for op in operations} == {"POST", "OPTIONS"}
    for operation in operations:
        if mode == schemathesis.GenerationMode.NEGATIVE and operation.method.upper() == "OPTIONS":
            continue  # nothing to get wrong: the preflight has no parameters or body

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=50,
            deadline=None,
            database=None,
            derandomize=IN_CI,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        )
        def conforms(case: schemathesis.Case) -> None:
            # A schema-valid body can still be refused with 422, as documented:
            # JSON Schema cannot say which list slugs exist, nor email-validator's
            # rules (reserved domains such as .test). Every other check applies,
            # including that invalid data is refused and nothing answers 500.
            case.call_and_validate(excluded_checks=[positive_data_acceptance])

        conforms()


def test_document_is_served(client) -> None:
    response = client.get("/api/openapi.json")
    assert response.status_code == 200
    document = response.get_json()
    assert document["openapi"].startswith("3.1")
    assert "/api/v1/subscriptions" in document["paths"]
