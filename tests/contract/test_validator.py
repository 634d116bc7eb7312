"""The validator itself: it must refuse what the document refuses, name what it refuses,
and read the document's OpenAPI 3.0 leftovers the way OpenAPI means them. No processes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.contract import openai_contract
from tests.contract.openai_contract import assert_valid, require_openapi


@pytest.fixture(autouse=True)
def openapi_present() -> None:
    require_openapi("the OpenAI contract validator")


def completion(**over: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "gpt-4o-mini",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "hi", "refusal": None},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
    }
    body.update(over)
    return body


def chunk(**over: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "gpt-4o-mini",
        "choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": None}],
    }
    body.update(over)
    return body


def test_a_valid_completion_passes() -> None:
    assert_valid("CreateChatCompletionResponse", completion())


def test_a_misspelled_schema_name_is_a_clear_error() -> None:
    with pytest.raises(LookupError, match=r"CreateChatCompletionRespons.*did you mean"):
        assert_valid("CreateChatCompletionRespons", completion())


def test_a_body_missing_fields_is_refused_with_each_field_named() -> None:
    with pytest.raises(AssertionError) as info:
        assert_valid("CreateChatCompletionResponse", {"object": "chat.completion"})
    msg = str(info.value)
    for field in ("id", "choices", "created", "model"):
        assert f"'{field}' is a required property" in msg


def test_errors_carry_their_json_path() -> None:
    bad = completion()
    bad["choices"][0]["message"]["role"] = "robot"
    bad["choices"][0]["finish_reason"] = "bored"
    with pytest.raises(AssertionError) as info:
        assert_valid("CreateChatCompletionResponse", bad)
    msg = str(info.value)
    assert "$.choices[0].message.role" in msg and "$.choices[0].finish_reason" in msg


def test_refs_are_followed() -> None:
    # usage is a $ref to CompletionUsage: a wrong type inside it must be seen.
    with pytest.raises(AssertionError, match=r"\$\.usage\.prompt_tokens"):
        assert_valid(
            "CreateChatCompletionResponse",
            completion(usage={"prompt_tokens": "7", "completion_tokens": 1, "total_tokens": 8}),
        )


def test_nullable_means_null_or_the_schema() -> None:
    # `usage: {$ref, nullable: true}` and a nullable enum (OpenAPI 3.0 in a 3.1 document).
    assert_valid("CreateChatCompletionStreamResponse", chunk(usage=None))
    with pytest.raises(AssertionError, match=r"\$\.usage"):
        assert_valid("CreateChatCompletionStreamResponse", chunk(usage="none"))
    with pytest.raises(AssertionError, match=r"\$\.service_tier"):
        assert_valid("CreateChatCompletionStreamResponse", chunk(service_tier="cheapest"))


def test_request_schema_refuses_a_bad_request() -> None:
    good = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
    assert_valid("CreateChatCompletionRequest", good)
    assert_valid("CreateChatCompletionRequest", {**good, "max_completion_tokens": None})
    for bad in (
        {"model": "gpt-4o-mini"},
        {**good, "temperature": 3},
        {**good, "messages": [{"role": "robot", "content": "hi"}]},
    ):
        with pytest.raises(AssertionError):
            assert_valid("CreateChatCompletionRequest", bad)


def test_error_response_needs_every_field() -> None:
    assert_valid(
        "ErrorResponse", {"error": {"message": "m", "type": "t", "param": None, "code": None}}
    )
    with pytest.raises(AssertionError, match="'param' is a required property"):
        assert_valid("ErrorResponse", {"error": {"message": "m", "type": "t", "code": None}})


def test_recursive_ref_reaches_the_component_itself() -> None:
    # CompoundFilter nests through $recursiveRef (2019-09), rewritten to a plain $ref.
    leaf = {"type": "eq", "key": "a", "value": 1}
    assert_valid("CompoundFilter", {"type": "and", "filters": [{"type": "or", "filters": [leaf]}]})
    with pytest.raises(AssertionError, match=r"\$\.filters\[0\]"):
        assert_valid("CompoundFilter", {"type": "and", "filters": [{"type": "xor"}]})


def test_boolean_exclusive_minimum_keeps_its_bound() -> None:
    # OpenAPI 3.0's `minimum: 0, exclusiveMinimum: true`: above 0, not above true == 1.
    schema = "FineTuneSupervisedHyperparameters"
    assert_valid(schema, {"learning_rate_multiplier": 0.5})
    with pytest.raises(AssertionError, match="learning_rate_multiplier"):
        assert_valid(schema, {"learning_rate_multiplier": 0})


def _ref(node: dict[str, Any]) -> str:
    ref: str = node["schema"]["$ref"]
    return ref.removeprefix("#/components/schemas/")


def test_the_schema_names_used_are_the_documents_own_for_these_paths() -> None:
    # The integration tests name schemas; the document's paths say which ones apply.
    doc = openai_contract._document()
    chat = doc["paths"]["/chat/completions"]["post"]
    assert _ref(chat["requestBody"]["content"]["application/json"]) == (
        "CreateChatCompletionRequest"
    )
    ok = chat["responses"]["200"]["content"]
    assert _ref(ok["application/json"]) == "CreateChatCompletionResponse"
    assert _ref(ok["text/event-stream"]) == "CreateChatCompletionStreamResponse"
    too_many = doc["components"]["responses"]["TooManyRequests"]["content"]
    assert _ref(too_many["application/json"]) == "ErrorResponse"
    models = doc["paths"]["/models"]["get"]["responses"]["200"]["content"]
    assert _ref(models["application/json"]) == "ListModelsResponse"


def test_a_missing_document_skips_locally_and_fails_in_ci(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(openai_contract, "OPENAPI_PATH", tmp_path / "nope.yaml")
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="not checked"):
        require_openapi("something")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match=r"ErrorResponse .* not checked.*nope\.yaml"):
        assert_valid("ErrorResponse", {})
