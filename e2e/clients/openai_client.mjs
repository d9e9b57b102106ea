// The npm `openai` SDK (pinned in e2e/package.json) as a client of the portal's LLM gateway.
// Usage: node openai_client.mjs BASE_URL TOKEN MODEL
// Runs, for MODEL: a chat completion, a streamed chat completion (with usage), a tool-call round
// trip, a Responses API call and a streamed Responses API call; prints one JSON line with what
// each returned. Exits non-zero (with the error on stderr) when the SDK throws.
import OpenAI from "openai";

const [baseURL, apiKey, model] = process.argv.slice(2);
const client = new OpenAI({ baseURL, apiKey, maxRetries: 0, timeout: 20000 });
const out = {};

const chat = await client.chat.completions.create({
  model,
  messages: [{ role: "user", content: "hello from node" }],
});
out.chat = { text: chat.choices[0].message.content, usage: chat.usage, finish: chat.choices[0].finish_reason };

const stream = await client.chat.completions.create({
  model,
  stream: true,
  stream_options: { include_usage: true },
  messages: [{ role: "user", content: "stream from node" }],
});
let text = "";
let chunks = 0;
let usage = null;
for await (const c of stream) {
  chunks += 1;
  if (c.choices.length) text += c.choices[0].delta.content ?? "";
  if (c.usage) usage = c.usage;
}
out.stream = { text, chunks, usage };

const tools = [{
  type: "function",
  function: {
    name: "get_weather",
    description: "Weather of a city",
    parameters: { type: "object", properties: { city: { type: "string" } }, required: ["city"] },
  },
}];
const first = await client.chat.completions.create({
  model,
  tools,
  messages: [{ role: "user", content: "weather in Paris?" }],
});
const call = first.choices[0].message.tool_calls[0];
const second = await client.chat.completions.create({
  model,
  tools,
  messages: [
    { role: "user", content: "weather in Paris?" },
    first.choices[0].message,
    { role: "tool", tool_call_id: call.id, content: "18C" },
  ],
});
out.tools = {
  name: call.function.name,
  arguments: JSON.parse(call.function.arguments),
  finish: first.choices[0].finish_reason,
  answer: second.choices[0].message.content,
};

const resp = await client.responses.create({ model, instructions: "Be brief.", input: "responses from node" });
out.responses = { text: resp.output_text, status: resp.status, usage: resp.usage };

const rstream = await client.responses.create({ model, input: "responses stream from node", stream: true });
const types = [];
let rtext = "";
let completed = null;
for await (const ev of rstream) {
  types.push(ev.type);
  if (ev.type === "response.output_text.delta") rtext += ev.delta;
  if (ev.type === "response.completed") completed = ev.response;
}
out.responsesStream = {
  types,
  text: rtext,
  final: completed && completed.output_text !== undefined ? completed.output_text : completed?.output?.[0]?.content?.[0]?.text,
  usage: completed?.usage,
};

console.log(JSON.stringify(out));
