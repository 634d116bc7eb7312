// openai-node (the `openai` npm package) against tollgate: one JSON line per case.
import OpenAI from "openai";
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

const client = new OpenAI({ baseURL: BASE_URL, apiKey: API_KEY, maxRetries: 0, timeout: 20_000 });
const tools = [
  {
    type: "function",
    function: { name: TOOL_NAME, description: TOOL_DESCRIPTION, parameters: TOOL_PARAMETERS },
  },
];
const user = (content) => [{ role: "user", content }];

async function complete(body) {
  const { data, response } = await client.chat.completions.create(body).withResponse();
  const choice = data.choices[0];
  return {
    headers: headersOf(response.headers),
    text: choice.message.content,
    finish_reason: choice.finish_reason,
    usage: data.usage,
    tool_calls: (choice.message.tool_calls ?? []).map((c) => ({
      id: c.id,
      type: c.type,
      name: c.function.name,
      arguments: c.function.arguments,
    })),
  };
}

async function stream(body) {
  const { data, response } = await client.chat.completions
    .create({ ...body, stream: true, stream_options: { include_usage: true } })
    .withResponse();
  let text = "";
  let finish = null;
  let chunks = 0;
  const calls = [];
  let last = null;
  for await (const chunk of data) {
    chunks += 1;
    last = chunk;
    for (const ch of chunk.choices ?? []) {
      text += ch.delta?.content ?? "";
      for (const tc of ch.delta?.tool_calls ?? []) {
        const c = (calls[tc.index] ??= { id: "", name: "", arguments: "" });
        c.id += tc.id ?? "";
        c.name += tc.function?.name ?? "";
        c.arguments += tc.function?.arguments ?? "";
      }
      finish = ch.finish_reason ?? finish;
    }
  }
  return {
    headers: headersOf(response.headers),
    text,
    finish_reason: finish,
    chunks,
    last_chunk_usage: last?.usage ?? null,
    last_chunk_cost: last?.x_tollgate_cost_usd ?? null,
    tool_calls: calls,
  };
}

const plain = { model: "auto", temperature: 0, messages: user("openai-node: name three deserts in America.") };
await runCase("create", () => complete(plain));
await settle();
await runCase("create_repeat", () => complete(plain));

const streamed = { model: "auto", temperature: 0, messages: user("openai-node stream: describe a glacier at night.") };
await runCase("stream", () => stream(streamed));
await settle();
await runCase("stream_repeat", () => stream(streamed));

await runCase("tools", () => complete({ model: "auto", messages: user(TOOL_PROMPT + " (node)"), tools }));
await runCase("stream_tools", () => stream({ model: "auto", messages: user(TOOL_PROMPT + " (node, streamed)"), tools }));
