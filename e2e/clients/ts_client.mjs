// The official TypeScript SDK v1 client over Streamable HTTP, driven from the command line.
// Prints one JSON object on stdout; exits non-zero (with the error on stderr) on failure.
//
//   node ts_client.mjs URL [--call NAME] [--args JSON] [--read URI] [--prompt NAME] [--prompt-args JSON]
//
// Output: {"protocolVersion", "serverInfo", "tools": [...names], "call": CallToolResult,
//          "read": ReadResourceResult, "prompt": GetPromptResult, "resources": [...uris]}
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';

const argv = process.argv.slice(2);
const url = argv[0];
const opt = (name) => {
  const i = argv.indexOf(name);
  return i >= 0 ? argv[i + 1] : undefined;
};
if (!url) {
  console.error('usage: ts_client.mjs URL [--call NAME] [--args JSON] [--read URI] [--prompt NAME] [--prompt-args JSON]');
  process.exit(2);
}

const timer = setTimeout(() => {
  console.error('ts_client: timed out');
  process.exit(3);
}, Number(process.env.TS_CLIENT_TIMEOUT_MS || 30000));

const client = new Client({ name: 'portcullis-e2e-ts-client', version: '1.0.0' });
const transport = new StreamableHTTPClientTransport(new URL(url));
try {
  await client.connect(transport);
  const out = {
    protocolVersion: transport.protocolVersion ?? null,
    sessionId: transport.sessionId ?? null,
    serverInfo: client.getServerVersion() ?? null,
    tools: [],
  };
  let cursor;
  do {
    const page = await client.listTools(cursor ? { cursor } : {});
    out.tools.push(...page.tools.map((t) => t.name));
    cursor = page.nextCursor;
  } while (cursor);
  if (opt('--call')) {
    out.call = await client.callTool({ name: opt('--call'), arguments: JSON.parse(opt('--args') ?? '{}') });
  }
  if (client.getServerCapabilities()?.resources) {
    out.resources = (await client.listResources()).resources.map((r) => r.uri);
  }
  if (opt('--read')) out.read = await client.readResource({ uri: opt('--read') });
  if (opt('--prompt')) {
    out.prompt = await client.getPrompt({ name: opt('--prompt'), arguments: JSON.parse(opt('--prompt-args') ?? '{}') });
  }
  await transport.terminateSession().catch(() => {});
  await client.close();
  process.stdout.write(JSON.stringify(out) + '\n');
  clearTimeout(timer);
} catch (e) {
  console.error(`ts_client: ${e?.stack ?? e}`);
  process.exit(1);
}
