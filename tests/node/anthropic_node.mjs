// @anthropic-ai/sdk against tollgate's /v1/messages: one JSON line per case.
import Anthropic from "@anthropic-ai/sdk";
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

// The SDK appends /v1/messages itself.
const client = new Anthropic({
  baseURL: BASE_URL.replace(/\/v1\/?$/, ""),
  apiKey: API_KEY,
  maxRetries: 0,
  timeout: 20_000,
});
const tools = [{ name: TOOL_NAME, description: TOOL_DESCRIPTION, input_schema: TOOL_PARAMETERS }];
const user = (content) => [{ role: "user", content }];
const run = Date.now().toString(36); // a prompt no earlier run sent: the first is a miss

function summary(message) {
  return {
    id: message.id,
    text: message.content.filter((b) => b.type === "text").map((b) => b.text).join(""),
    stop_reason: message.stop_reason,
    usage: message.usage,
    tool_uses: message.content
      .filter((b) => b.type === "tool_use")
      .map((b) => ({ id: b.id, name: b.name, input: b.input })),
  };
}

async function create(body) {
  const { data, response } = await client.messages.create(body).withResponse();
  return { headers: headersOf(response.headers), ...summary(data) };
}

async function stream(body) {
  const s = client.messages.stream(body);
  const events = [];
  let cost = null;
  let inputJson = 0;
  s.on("streamEvent", (event) => {
    events.push(event.type);
    if (event.type === "message_delta") cost = event.x_tollgate_cost_usd ?? null;
  });
  s.on("inputJson", () => {
    inputJson += 1;
  });
  const { response } = await s.withResponse();
  const final = await s.finalMessage();
  return {
    headers: headersOf(response.headers),
    events,
    message_delta_cost: cost,
    input_json_events: inputJson,
    ...summary(final),
  };
}

const plain = {
  model: "auto",
  max_tokens: 200,
  temperature: 0,
  messages: user(`anthropic-node: name three deserts in Africa (${run}).`),
};
await runCase("create", () => create(plain));
await settle();
await runCase("create_repeat", () => create(plain));

const streamed = {
  model: "auto",
  max_tokens: 200,
  temperature: 0,
  messages: user(`anthropic-node stream: describe a glacier at night (${run}).`),
};
await runCase("stream", () => stream(streamed));
await settle();
await runCase("stream_repeat", () => stream(streamed));

await runCase("stream_tools", () =>
  stream({ model: "auto", max_tokens: 300, messages: user(TOOL_PROMPT + " (node, streamed)"), tools }),
);

// The tool's result goes back as a tool_result block in a user turn.
await runCase("tool_result", async () => {
  const first = await client.messages.create({
    model: "auto",
    max_tokens: 300,
    messages: user(TOOL_PROMPT + " (node)"),
    tools,
  });
  const call = first.content.find((b) => b.type === "tool_use");
  if (!call) throw new Error(`no tool_use block: ${JSON.stringify(first.content)}`);
  const second = await create({
    model: "auto",
    max_tokens: 300,
    tools,
    messages: [
      ...user(TOOL_PROMPT + " (node)"),
      { role: "assistant", content: first.content },
      { role: "user", content: [{ type: "tool_result", tool_use_id: call.id, content: "21 C" }] },
    ],
  });
  return { first: summary(first), ...second };
});

await runCase("count_tokens", async () => {
  const counted = await client.messages.countTokens({ model: "auto", messages: user(TOOL_PROMPT), tools });
  return { input_tokens: counted.input_tokens };
});
