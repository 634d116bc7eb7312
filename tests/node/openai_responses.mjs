// openai-node's Responses API (`client.responses`) against tollgate: one JSON line per case.
// The pytest side (tests/clients/test_openai_responses.py) makes the assertions.
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
    name: TOOL_NAME,
    description: TOOL_DESCRIPTION,
    parameters: TOOL_PARAMETERS,
    strict: true,
  },
];

function calls(output) {
  return (output ?? [])
    .filter((item) => item.type === "function_call")
    .map((c) => ({ id: c.id, call_id: c.call_id, name: c.name, arguments: c.arguments }));
}

// A whole answer, with the headers (`.withResponse()`).
async function create(body) {
  const { data, response } = await client.responses.create(body).withResponse();
  return {
    headers: headersOf(response.headers),
    id: data.id,
    status: data.status,
    text: data.output_text,
    usage: data.usage,
    tool_calls: calls(data.output),
    output: data.output,
  };
}

// `create({stream: true})`: the raw events, with the headers and the cost on the last one.
async function rawStream(body) {
  const { data, response } = await client.responses.create({ ...body, stream: true }).withResponse();
  const types = [];
  let text = "";
  let last = null;
  for await (const event of data) {
    types.push(event.type);
    if (event.type === "response.output_text.delta") text += event.delta;
    last = event;
  }
  return {
    headers: headersOf(response.headers),
    types,
    text,
    status: last?.response?.status ?? null,
    usage: last?.response?.usage ?? null,
    cost: last?.x_tollgate_cost_usd ?? null,
    sequence: types.length,
  };
}

// The `responses.stream()` helper: it follows every event and fails without response.completed.
async function helperStream(body) {
  const stream = client.responses.stream(body);
  let deltas = 0;
  stream.on("response.output_text.delta", () => {
    deltas += 1;
  });
  const final = await stream.finalResponse();
  return {
    text: final.output_text,
    status: final.status,
    usage: final.usage,
    deltas,
    tool_calls: calls(final.output),
  };
}

const plain = { model: "auto", temperature: 0, input: "openai-node responses: name three deserts in Asia." };
await runCase("create", () => create(plain));
await settle();
await runCase("create_repeat", () => create(plain));

const streamed = { model: "auto", temperature: 0, input: "openai-node responses stream: describe a glacier at dawn." };
await runCase("stream", () => rawStream(streamed));
await settle();
await runCase("stream_repeat", () => rawStream(streamed));

await runCase("stream_helper", () =>
  helperStream({ model: "auto", input: "openai-node responses helper: describe a quiet harbour." }),
);

// A function tool round trip, stateless: the second turn carries the first one's items.
await runCase("tools", async () => {
  const input = [{ role: "user", content: TOOL_PROMPT + " (node responses)" }];
  const first = await create({ model: "auto", input, tools, store: false });
  const call = first.tool_calls[0];
  if (!call) return { ...first, answer: null };
  const output = JSON.stringify({ temperature: 21, unit: "celsius" });
  const second = await create({
    model: "auto",
    tools,
    store: false,
    input: [...input, ...first.output, { type: "function_call_output", call_id: call.call_id, output }],
  });
  return { ...first, answer: second.text, answer_tool_calls: second.tool_calls };
});

await runCase("stream_tools", () =>
  helperStream({ model: "auto", input: TOOL_PROMPT + " (node responses, streamed)", tools }),
);
