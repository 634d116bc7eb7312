// Vercel AI SDK against tollgate's /v1/responses: `createOpenAI(...)(model)` is the SDK's
// Responses model, with its default `store: true`. Two turns each of generateText and
// streamText, text and tool calls; on a second turn the SDK sends `item_reference` items
// for the first turn's output (or `previous_response_id` when asked), which the gateway
// resolves from its store. One JSON line per case; tests/clients/test_ai_sdk_responses.py
// makes the assertions.
import { createOpenAI } from "@ai-sdk/openai";
import { generateText, jsonSchema, streamText, tool } from "ai";
import {
  API_KEY,
  BASE_URL,
  TOOL_DESCRIPTION,
  TOOL_NAME,
  TOOL_PARAMETERS,
  TOOL_PROMPT,
  headersOf,
  runCase,
} from "./common.mjs";

const model = createOpenAI({ baseURL: BASE_URL, apiKey: API_KEY })("auto");

// No `execute`: the SDK returns the tool calls; the script sends the result itself.
const tools = {
  [TOOL_NAME]: tool({ description: TOOL_DESCRIPTION, inputSchema: jsonSchema(TOOL_PARAMETERS) }),
};

const calls = (list) => (list ?? []).map((c) => ({ id: c.toolCallId, name: c.toolName, input: c.input }));

// What the SDK put in the request body: the store flag, and each input item's kind.
function sent(request) {
  let body = request?.body;
  if (typeof body === "string") body = JSON.parse(body);
  if (!body || typeof body !== "object") return { store: null, input_kinds: [], previous_response_id: null };
  const input = Array.isArray(body.input) ? body.input : [];
  return {
    store: body.store ?? null,
    previous_response_id: body.previous_response_id ?? null,
    input_kinds: input.map((i) => i.type ?? `message:${i.role}`),
    references: input.filter((i) => i.type === "item_reference").map((i) => i.id),
  };
}

async function generate(opts) {
  const r = await generateText({ model, maxRetries: 0, ...opts });
  return {
    outcome: {
      headers: headersOf(r.response?.headers),
      model_id: r.response?.modelId ?? null,
      response_id: r.providerMetadata?.openai?.responseId ?? null,
      text: r.text,
      finish_reason: r.finishReason,
      usage: r.usage,
      tool_calls: calls(r.toolCalls),
      sent: sent(r.request),
    },
    messages: r.response.messages,
  };
}

async function stream(opts) {
  const errors = [];
  const r = streamText({
    model,
    maxRetries: 0,
    includeRawChunks: true, // to read x_tollgate_cost_usd on response.completed
    onError: ({ error }) => errors.push(String(error)),
    ...opts,
  });
  let parts = 0;
  let rawCost = null;
  let rawLast = null;
  for await (const part of r.fullStream) {
    parts += 1;
    if (part.type === "raw" && part.rawValue && typeof part.rawValue === "object") {
      rawLast = part.rawValue.type ?? null;
      if ("x_tollgate_cost_usd" in part.rawValue) rawCost = part.rawValue.x_tollgate_cost_usd;
    }
    if (part.type === "error") errors.push(String(part.error));
  }
  const response = await r.response;
  const meta = await r.providerMetadata;
  return {
    outcome: {
      headers: headersOf(response?.headers),
      model_id: response?.modelId ?? null,
      response_id: meta?.openai?.responseId ?? null,
      text: await r.text,
      finish_reason: await r.finishReason,
      usage: await r.usage,
      tool_calls: calls(await r.toolCalls),
      sent: sent(await r.request),
      parts,
      raw_last: rawLast, // the last upstream event the SDK saw
      raw_cost: rawCost,
      errors,
    },
    messages: response.messages,
  };
}

// One case; returns its outcome and messages for the next turn, or null if it threw. A
// turn whose first turn threw prints nothing, and its pytest case fails as missing.
async function turn(name, fn) {
  let kept = null;
  await runCase(name, async () => {
    const { outcome, messages } = await fn();
    kept = { outcome, messages };
    return outcome;
  });
  return kept;
}

const toolResult = (call) => ({
  role: "tool",
  content: [
    {
      type: "tool-result",
      toolCallId: call.toolCallId ?? call.id,
      toolName: call.toolName ?? call.name,
      output: { type: "json", value: { city: "Paris", temperature: 18, unit: "celsius" } },
    },
  ],
});

for (const [kind, run] of [
  ["generate", generate],
  ["stream", stream],
]) {
  // Text: the second turn refers to the first answer by item id (store on).
  const q1 = { role: "user", content: `ai-sdk responses ${kind}: name three rivers in Europe.` };
  const t1 = await turn(`${kind}_turn1`, () => run({ messages: [q1] }));
  if (t1) {
    const q2 = { role: "user", content: `ai-sdk responses ${kind}: which of those is the longest?` };
    await turn(`${kind}_turn2`, () => run({ messages: [q1, ...t1.messages, q2] }));
    // The same follow-up by previous_response_id: only the new message is sent.
    await turn(`${kind}_previous`, () =>
      run({
        messages: [{ role: "user", content: `ai-sdk responses ${kind}: and the shortest?` }],
        providerOptions: { openai: { previousResponseId: t1.outcome.response_id } },
      }),
    );
  }

  // Tools: a function call, then its result; the answer is text.
  const ask = { role: "user", content: `${TOOL_PROMPT} (ai-sdk responses ${kind})` };
  const c1 = await turn(`${kind}_tool_turn1`, () => run({ messages: [ask], tools }));
  if (c1 && c1.outcome.tool_calls.length > 0) {
    const call = c1.messages
      .flatMap((m) => (Array.isArray(m.content) ? m.content : []))
      .find((p) => p.type === "tool-call");
    await turn(`${kind}_tool_turn2`, () => run({ messages: [ask, ...c1.messages, toolResult(call)], tools }));
  }
}
