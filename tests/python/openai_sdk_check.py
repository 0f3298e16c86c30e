"""Drives chatstream's OpenAI-compatible API with the official `openai` SDK.

Run by tests/openai_sdk_e2e.rs, which starts the platform and passes
CHATSTREAM_OPENAI_BASE_URL and CHATSTREAM_OPENAI_API_KEY. Asserts what the
SDK sees and prints, as one JSON line, the conversations it created so the
Rust test can check their events.
"""

import json
import os

import openai

BASE_URL = os.environ["CHATSTREAM_OPENAI_BASE_URL"]
API_KEY = os.environ["CHATSTREAM_OPENAI_API_KEY"]
CONVERSATION_HEADER = "x-chatstream-conversation-id"

# No retries: every request must succeed or fail the first time.
client = openai.OpenAI(base_url=BASE_URL, api_key=API_KEY, max_retries=0, timeout=30)


def check_models():
    ids = [model.id for model in client.models.list()]
    assert ids == ["mock"], ids
    assert client.models.retrieve("mock").id == "mock"


def check_plain():
    raw = client.chat.completions.with_raw_response.create(
        model="mock",
        messages=[
            {"role": "system", "content": "you are a test"},
            {"role": "user", "content": "hello from python"},
        ],
    )
    completion = raw.parse()
    choice = completion.choices[0]
    assert choice.message.role == "assistant", choice
    assert choice.message.content == "You said: hello from python", choice
    assert choice.finish_reason == "stop", choice
    usage = completion.usage
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (3, 5, 8), usage
    return {
        "conversation_id": raw.headers[CONVERSATION_HEADER],
        "completion_id": completion.id,
        "user_text": "hello from python",
        "reply_text": choice.message.content,
    }


def check_streamed():
    raw = client.chat.completions.with_raw_response.create(
        model="mock",
        messages=[{"role": "user", "content": "stream from python"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    pieces, finish_reasons, usage, ids = [], [], None, set()
    for chunk in raw.parse():
        ids.add(chunk.id)
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            if choice.delta.content:
                pieces.append(choice.delta.content)
            if choice.finish_reason:
                finish_reasons.append(choice.finish_reason)
    text = "".join(pieces)
    assert text == "You said: stream from python", pieces
    assert len(pieces) == 5, pieces  # one chunk per token of the mock's reply
    assert finish_reasons == ["stop"], finish_reasons
    assert usage is not None and usage.total_tokens == 8, usage
    assert len(ids) == 1, ids
    return {
        "conversation_id": raw.headers[CONVERSATION_HEADER],
        "completion_id": ids.pop(),
        "user_text": "stream from python",
        "reply_text": text,
    }


def check_errors():
    stranger = openai.OpenAI(base_url=BASE_URL, api_key="cs_unknown", max_retries=0)
    try:
        stranger.chat.completions.create(model="mock", messages=[{"role": "user", "content": "hi"}])
        raise AssertionError("an unknown key was accepted")
    except openai.AuthenticationError as error:
        assert error.status_code == 401 and error.code == "invalid_api_key", error

    try:
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
        raise AssertionError("an unknown model was accepted")
    except openai.NotFoundError as error:
        assert error.code == "model_not_found" and error.param == "model", error

    try:
        client.chat.completions.create(model="mock", messages=[{"role": "system", "content": "x"}])
        raise AssertionError("a request without a user message was accepted")
    except openai.BadRequestError as error:
        assert error.param == "messages", error

    try:
        client.chat.completions.create(model="mock", messages=[{"role": "user", "content": "/mock error boom"}])
        raise AssertionError("a failed model call looked like an answer")
    except openai.InternalServerError as error:
        assert error.status_code == 502 and "boom" in error.message, error

    stream = client.chat.completions.create(
        model="mock", messages=[{"role": "user", "content": "/mock error boom"}], stream=True
    )
    try:
        for _ in stream:
            pass
        raise AssertionError("a failed streamed model call looked like an answer")
    except openai.APIError as error:
        assert "boom" in error.message, error


check_models()
plain = check_plain()
streamed = check_streamed()
check_errors()
print(json.dumps({"plain": plain, "streamed": streamed}))
