// Vercel AI SDK against tollgate: `@ai-sdk/openai`'s chat model and `@ai-sdk/openai-compatible`,
// with generateText and streamText (text, usage, tool calls). One JSON line per case.
import { createOpenAI } from "@ai-sdk/openai";
import { createOpenAICompatible } from "@ai-sdk/openai-compatible";
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
  settle,
} from "./common.mjs";

// No `execute`: the SDK returns the tool calls instead of running them.
const tools = {
  [TOOL_NAME]: tool({ description: TOOL_DESCRIPTION, inputSchema: jsonSchema(TOOL_PARAMETERS) }),
};

const providers = {
  openai: createOpenAI({ baseURL: BASE_URL, apiKey: API_KEY }).chat("auto"),
  compat: createOpenAICompatible({
    name: "tollgate",
    baseURL: BASE_URL,
    apiKey: API_KEY,
    includeUsage: true, // without it a stream carries no usage
  })("auto"),
};

const calls = (list) => (list ?? []).map((c) => ({ id: c.toolCallId, name: c.toolName, input: c.input }));

async function generate(model, opts) {
  const r = await generateText({ model, maxRetries: 0, ...opts });
  return {
    headers: headersOf(r.response?.headers),
    model_id: r.response?.modelId ?? null,
    text: r.text,
    finish_reason: r.finishReason,
    usage: r.usage,
    tool_calls: calls(r.toolCalls),
  };
}

async function stream(model, opts) {
  const errors = [];
  const r = streamText({
    model,
    maxRetries: 0,
    includeRawChunks: true, // to read x_tollgate_cost_usd on the usage chunk
    onError: ({ error }) => errors.push(String(error)),
    ...opts,
  });
  let rawCost = null;
  let rawUsageChunks = 0;
  let parts = 0;
  for await (const part of r.fullStream) {
    parts += 1;
    if (part.type === "raw" && part.rawValue && typeof part.rawValue === "object") {
      if (part.rawValue.usage) rawUsageChunks += 1;
      if ("x_tollgate_cost_usd" in part.rawValue) rawCost = part.rawValue.x_tollgate_cost_usd;
    }
    if (part.type === "error") errors.push(String(part.error));
  }
  const response = await r.response;
  return {
    headers: headersOf(response?.headers),
    model_id: response?.modelId ?? null,
    text: await r.text,
    finish_reason: await r.finishReason,
    usage: await r.usage,
    tool_calls: calls(await r.toolCalls),
    raw_usage_chunks: rawUsageChunks,
    raw_cost: rawCost,
    parts,
    errors,
  };
}

for (const [name, model] of Object.entries(providers)) {
  const gen = { temperature: 0, prompt: `ai-sdk ${name} generateText: name three islands in the Pacific.` };
  await runCase(`${name}_generate`, () => generate(model, gen));
  await settle();
  await runCase(`${name}_generate_repeat`, () => generate(model, gen));

  const str = { temperature: 0, prompt: `ai-sdk ${name} streamText: describe a canyon after rain.` };
  await runCase(`${name}_stream`, () => stream(model, str));
  await settle();
  await runCase(`${name}_stream_repeat`, () => stream(model, str));

  await runCase(`${name}_generate_tools`, () => generate(model, { prompt: `${TOOL_PROMPT} (${name})`, tools }));
  await runCase(`${name}_stream_tools`, () => stream(model, { prompt: `${TOOL_PROMPT} (${name}, streamed)`, tools }));
}
