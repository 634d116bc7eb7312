// Shared by the client drivers: configuration from env, one JSON line per case on stdout.
// The pytest side (tests/clients/test_*_node.py, test_ai_sdk.py) makes the assertions.

export const BASE_URL = process.env.TOLLGATE_BASE_URL;
export const API_KEY = process.env.TOLLGATE_API_KEY;
if (!BASE_URL || !API_KEY) {
  console.error("set TOLLGATE_BASE_URL (ending in /v1) and TOLLGATE_API_KEY");
  process.exit(2);
}

// The same tool and prompt as tests/clients/__init__.py.
export const TOOL_NAME = "get_weather";
export const TOOL_DESCRIPTION = "Current weather in a city";
export const TOOL_PARAMETERS = {
  type: "object",
  properties: {
    city: { type: "string", description: "City name" },
    unit: { type: "string", enum: ["celsius", "fahrenheit"] },
  },
  required: ["city", "unit"],
  additionalProperties: false,
};
export const TOOL_PROMPT = "Call get_weather to find out how warm it is in Paris right now.";

// The cache stores a complete answer in the background: a repeat waits this long.
export const settle = () => new Promise((r) => setTimeout(r, 200));

export function headersOf(h) {
  if (!h) return null;
  const out = {};
  if (typeof h.forEach === "function" && !(h instanceof Array)) {
    h.forEach((v, k) => {
      out[k.toLowerCase()] = v;
    });
  } else {
    for (const [k, v] of Object.entries(h)) out[k.toLowerCase()] = v;
  }
  return out;
}

// Run one case; its result (or the error it threw) becomes one JSON line.
export async function runCase(name, fn) {
  const started = Date.now();
  let result;
  try {
    result = { case: name, ...(await fn()) };
  } catch (err) {
    result = {
      case: name,
      error: `${err?.name ?? "Error"}: ${err?.message ?? String(err)}`,
      status: err?.status ?? err?.statusCode ?? null,
      body: err?.error ?? err?.responseBody ?? null,
    };
  }
  result.ms = Date.now() - started;
  process.stdout.write(JSON.stringify(result) + "\n");
}
