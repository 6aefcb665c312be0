// The official `openai` npm package against llmgw. Run by
// tests/python/test_node_sdk.py, which starts a gateway and sets
// LLMGW_BASE_URL (the data plane's /v1 URL), LLMGW_KEY and LLMGW_MODEL.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import OpenAI from 'openai';

const baseURL = process.env.LLMGW_BASE_URL;
const apiKey = process.env.LLMGW_KEY;
const model = process.env.LLMGW_MODEL;
const TEXT = 'tok0 tok1 tok2 tok3 ';

assert.ok(baseURL && apiKey && model, 'set LLMGW_BASE_URL, LLMGW_KEY and LLMGW_MODEL');
const client = new OpenAI({ baseURL, apiKey, maxRetries: 0, timeout: 30_000 });
const messages = [{ role: 'user', content: 'hello from node' }];

test('chat completion', async () => {
  const { data, response } = await client.chat.completions
    .create({ model, messages })
    .withResponse();
  assert.equal(data.choices[0].message.content, TEXT);
  assert.equal(data.usage.prompt_tokens, 3);
  assert.equal(data.usage.completion_tokens, 4);
  assert.ok(response.headers.get('x-llmgw-request-id'));
});

test('streaming chat completion', async () => {
  const stream = await client.chat.completions.create({ model, messages, stream: true });
  let text = '';
  let usageChunks = 0;
  for await (const chunk of stream) {
    if (chunk.choices.length === 0) usageChunks += 1;
    text += chunk.choices[0]?.delta?.content ?? '';
  }
  assert.equal(text, TEXT);
  assert.equal(usageChunks, 0, 'the usage chunk the gateway asked for reached the client');
});

test('streaming chat completion with include_usage', async () => {
  const stream = await client.chat.completions.create({
    model,
    messages,
    stream: true,
    stream_options: { include_usage: true },
  });
  let usage = null;
  for await (const chunk of stream) {
    if (chunk.usage) usage = chunk.usage;
  }
  assert.ok(usage, 'no usage chunk');
  assert.equal(usage.completion_tokens, 4);
});

test('errors are SDK exceptions', async () => {
  const bad = new OpenAI({ baseURL, apiKey: 'sk-llmgw-not-a-key', maxRetries: 0 });
  await assert.rejects(bad.chat.completions.create({ model, messages }), (e) => {
    assert.ok(e instanceof OpenAI.AuthenticationError, String(e));
    assert.equal(e.status, 401);
    return true;
  });
});
