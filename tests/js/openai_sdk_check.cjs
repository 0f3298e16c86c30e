// Drives chatstream's OpenAI-compatible API with the official `openai`
// JavaScript SDK (Node.js).
//
// Run by tests/openai_sdk_e2e.rs, which starts the platform and passes
// CHATSTREAM_OPENAI_BASE_URL, CHATSTREAM_OPENAI_API_KEY and
// CHATSTREAM_TEST_OPENAI_JS (a directory whose node_modules holds `openai`).
// Asserts what the SDK sees and prints, as one JSON line, the conversations
// it created so the Rust test can check their events.
"use strict";

const assert = require("node:assert/strict");
const { createRequire } = require("node:module");
const path = require("node:path");

const requireFromSdkDir = createRequire(path.join(process.env.CHATSTREAM_TEST_OPENAI_JS, "/"));
const { OpenAI } = requireFromSdkDir("openai");

const baseURL = process.env.CHATSTREAM_OPENAI_BASE_URL;
const apiKey = process.env.CHATSTREAM_OPENAI_API_KEY;
const CONVERSATION_HEADER = "x-chatstream-conversation-id";

// No retries: every request must succeed or fail the first time.
const client = new OpenAI({ baseURL, apiKey, maxRetries: 0, timeout: 30_000 });

async function expectError(request, ErrorClass, check) {
  try {
    await request();
  } catch (error) {
    assert.ok(error instanceof ErrorClass, `expected ${ErrorClass.name}, got ${error}`);
    check(error);
    return;
  }
  assert.fail(`expected ${ErrorClass.name}, the request succeeded`);
}

async function checkModels() {
  const ids = [];
  for await (const model of client.models.list()) ids.push(model.id);
  assert.deepEqual(ids, ["mock"]);
  assert.equal((await client.models.retrieve("mock")).id, "mock");
}

async function checkPlain() {
  const userText = "hello from javascript";
  const { data: completion, response } = await client.chat.completions
    .create({
      model: "mock",
      messages: [
        { role: "system", content: "you are a test" },
        { role: "user", content: userText },
      ],
    })
    .withResponse();
  const choice = completion.choices[0];
  assert.equal(choice.message.role, "assistant");
  assert.equal(choice.message.content, `You said: ${userText}`);
  assert.equal(choice.finish_reason, "stop");
  assert.deepEqual(completion.usage, { prompt_tokens: 3, completion_tokens: 5, total_tokens: 8 });
  return {
    conversation_id: response.headers.get(CONVERSATION_HEADER),
    completion_id: completion.id,
    user_text: userText,
    reply_text: choice.message.content,
  };
}

async function checkStreamed() {
  const userText = "stream from javascript";
  const { data: stream, response } = await client.chat.completions
    .create({
      model: "mock",
      messages: [{ role: "user", content: userText }],
      stream: true,
      stream_options: { include_usage: true },
    })
    .withResponse();
  const pieces = [];
  const finishReasons = [];
  const ids = new Set();
  let usage = null;
  for await (const chunk of stream) {
    ids.add(chunk.id);
    if (chunk.usage) usage = chunk.usage;
    for (const choice of chunk.choices) {
      if (choice.delta.content) pieces.push(choice.delta.content);
      if (choice.finish_reason) finishReasons.push(choice.finish_reason);
    }
  }
  const text = pieces.join("");
  assert.equal(text, `You said: ${userText}`);
  assert.equal(pieces.length, 5, "one chunk per token of the mock's reply");
  assert.deepEqual(finishReasons, ["stop"]);
  assert.equal(usage?.total_tokens, 8);
  assert.equal(ids.size, 1);
  return {
    conversation_id: response.headers.get(CONVERSATION_HEADER),
    completion_id: [...ids][0],
    user_text: userText,
    reply_text: text,
  };
}

async function checkErrors() {
  const stranger = new OpenAI({ baseURL, apiKey: "cs_unknown", maxRetries: 0 });
  const hi = [{ role: "user", content: "hi" }];
  await expectError(
    () => stranger.chat.completions.create({ model: "mock", messages: hi }),
    OpenAI.AuthenticationError,
    (error) => assert.equal(error.code, "invalid_api_key"),
  );
  await expectError(
    () => client.chat.completions.create({ model: "gpt-4o", messages: hi }),
    OpenAI.NotFoundError,
    (error) => assert.equal(error.param, "model"),
  );
  await expectError(
    () => client.chat.completions.create({ model: "mock", messages: [{ role: "system", content: "x" }] }),
    OpenAI.BadRequestError,
    (error) => assert.equal(error.param, "messages"),
  );
  const failing = [{ role: "user", content: "/mock error boom" }];
  await expectError(
    () => client.chat.completions.create({ model: "mock", messages: failing }),
    OpenAI.InternalServerError,
    (error) => assert.ok(error.status === 502 && error.message.includes("boom"), String(error)),
  );
  await expectError(
    async () => {
      const stream = await client.chat.completions.create({ model: "mock", messages: failing, stream: true });
      for await (const _ of stream);
    },
    OpenAI.APIError,
    (error) => assert.ok(error.message.includes("boom"), String(error)),
  );
}

async function main() {
  await checkModels();
  const plain = await checkPlain();
  const streamed = await checkStreamed();
  await checkErrors();
  console.log(JSON.stringify({ plain, streamed }));
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
