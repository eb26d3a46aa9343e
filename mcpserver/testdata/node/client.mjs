// Drives "microagent serve mcp" through the official MCP TypeScript SDK, a
// client nobody here wrote. Run by mcpserver's TestNodeClient:
//
//   node client.mjs stdio MICROAGENT STATE_DIR POLICY IMAGE
//   node client.mjs http  URL TOKEN
//
// The stdio run makes workspaces n1 (booted) and its fork n2; the http run
// finds them through a second server of the same owner, uses them, and
// deletes them. Any failed check exits 1 with the reason on stderr.
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StdioClientTransport } from "@modelcontextprotocol/sdk/client/stdio.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { EmptyResultSchema } from "@modelcontextprotocol/sdk/types.js";

const TOOLS = [
  "egress_log", "file_list", "file_read", "file_write", "snapshot_create", "snapshot_delete", "snapshot_list",
  "workspace_create", "workspace_delete", "workspace_exec", "workspace_fork", "workspace_halt",
  "workspace_list", "workspace_logs", "workspace_restore", "workspace_start", "workspace_status",
];

function check(cond, what, detail) {
  if (!cond) {
    console.error(`FAIL: ${what}${detail === undefined ? "" : ": " + JSON.stringify(detail)}`);
    process.exit(1);
  }
  console.log(`ok: ${what}`);
}

const text = (r) => (r.content || []).filter((c) => c.type === "text").map((c) => c.text).join("\n");

async function ok(client, name, args, opts) {
  const r = await client.callTool({ name, arguments: args }, undefined, opts);
  check(!r.isError, `${name} succeeds`, r.isError ? text(r) : undefined);
  return r.structuredContent;
}

async function refused(client, field, name, args) {
  const r = await client.callTool({ name, arguments: args });
  check(r.isError && text(r).includes(`refused by policy "${field}"`), `${name} refused by ${field}`, text(r));
}

async function listTools(client) {
  const { tools } = await client.listTools();
  const names = tools.map((t) => t.name).sort();
  check(JSON.stringify(names) === JSON.stringify(TOOLS), "the tools are the contract's", names);
  for (const t of tools) {
    check(t.inputSchema?.type === "object" && t.outputSchema?.type === "object", `${t.name} has input and output schemas`);
    check(typeof t.annotations?.readOnlyHint === "boolean", `${t.name} has annotations`);
  }
}

async function malformed(client) {
  // An unknown method and arguments of the wrong type: errors, and the
  // server answers the next call.
  let threw = false;
  try {
    await client.request({ method: "no/such/method", params: {} }, EmptyResultSchema);
  } catch {
    threw = true;
  }
  check(threw, "an unknown method is an error");
  const r = await client.callTool({ name: "workspace_exec", arguments: { name: 42, argv: "not a list" } });
  check(r.isError, "arguments of the wrong type are a tool error", text(r));
  await client.ping();
  check(true, "the server still answers");
}

async function stdio([bin, stateDir, policy, image]) {
  const transport = new StdioClientTransport({
    command: bin,
    args: ["--state-dir", stateDir, "serve", "mcp", "--policy", policy],
    env: { ...process.env },
    stderr: "inherit",
  });
  const client = new Client({ name: "node-test", version: "1" });
  await client.connect(transport);
  check(client.getServerVersion()?.name === "microagent", "initialize names the server");
  await listTools(client);

  await refused(client, "images", "workspace_create", { name: "x", image: "docker.io/library/alpine:3.20" });
  await refused(client, "secrets", "workspace_create", { name: "x", image, secrets: { KEY: "env:HOME" } });
  await refused(client, "touch_others", "workspace_status", { name: "other" });

  const progress = [];
  const ws = await ok(client, "workspace_create", { name: "n1", image, profile: "tiny", disk_mib: 256, start: true },
    { onprogress: (p) => progress.push(p.message), timeout: 600000 });
  check(ws.state === "running", "n1 runs", ws);
  check(progress.some((m) => m.includes("booting n1")), "create reports progress", progress);

  const ex = await ok(client, "workspace_exec", { name: "n1", command: "echo hi; uname -s" });
  check(ex.exit_code === 0 && ex.stdout === "hi\nLinux\n", "exec output", ex);

  const blob = Buffer.alloc(512);
  for (let i = 0; i < blob.length; i++) blob[i] = i % 256;
  await ok(client, "file_write", { name: "n1", path: "/root/bin/blob", content: blob.toString("base64"), encoding: "base64" });
  const rd = await ok(client, "file_read", { name: "n1", path: "/root/bin/blob" });
  check(rd.encoding === "base64" && Buffer.from(rd.content, "base64").equals(blob), "binary round trip", rd.size);

  // Cancellation mid-exec: the guest process is gone afterwards.
  const ac = new AbortController();
  const running = client.callTool({ name: "workspace_exec", arguments: { name: "n1", command: "exec sleep 301" } }, undefined, { signal: ac.signal });
  for (let i = 0; i < 60; i++) {
    const p = await ok(client, "workspace_exec", { name: "n1", command: "ps | grep -v grep | grep -c 'sleep 301' || true" });
    if (p.stdout.trim() === "1") break;
    await new Promise((r) => setTimeout(r, 500));
  }
  ac.abort();
  let aborted = false;
  try { await running; } catch { aborted = true; }
  check(aborted, "the cancelled call ends");
  let gone = false;
  for (let i = 0; i < 60 && !gone; i++) {
    const p = await ok(client, "workspace_exec", { name: "n1", command: "ps | grep -v grep | grep -c 'sleep 301' || true" });
    gone = p.stdout.trim() === "0";
    if (!gone) await new Promise((r) => setTimeout(r, 500));
  }
  check(gone, "cancelling the call killed the guest process");

  const snap = await ok(client, "snapshot_create", { name: "n1", tag: "t1" }, { timeout: 600000 });
  check(snap.tag === "t1", "snapshot", snap);
  const fork = await ok(client, "workspace_fork", { name: "n2", from: "n1:t1" }, { timeout: 600000 });
  check(fork.state === "running", "fork runs", fork);
  const fx = await ok(client, "workspace_exec", { name: "n2", argv: ["sh", "-c", "cat /root/bin/blob | wc -c; hostname"] });
  check(fx.stdout === "512\nn2\n", "the fork has the file and its own hostname", fx);
  await refused(client, "max_workspaces", "workspace_create", { name: "n3", image, profile: "tiny" });

  await malformed(client);
  await client.close();
}

async function http([url, token]) {
  const bad = await fetch(url, { method: "POST", headers: { "content-type": "application/json" }, body: "{}" });
  check(bad.status === 401, "no token: 401", bad.status);
  const garbage = await fetch(url, {
    method: "POST",
    headers: { "content-type": "application/json", accept: "application/json, text/event-stream", authorization: `Bearer ${token}` },
    body: "this is not json",
  });
  check(garbage.status >= 400 && garbage.status < 500, "a malformed body is refused", garbage.status);

  const transport = new StreamableHTTPClientTransport(new URL(url), { requestInit: { headers: { authorization: `Bearer ${token}` } } });
  const client = new Client({ name: "node-test-http", version: "1" });
  await client.connect(transport);
  await listTools(client);
  const list = await ok(client, "workspace_list", {});
  check(list.workspaces.map((w) => w.name).sort().join() === "n1,n2", "a server of the same owner sees n1 and n2", list);
  const ex = await ok(client, "workspace_exec", { name: "n2", argv: ["cat", "/proc/sys/kernel/hostname"] });
  check(ex.stdout === "n2\n", "exec over HTTP", ex);
  await refused(client, "secrets", "workspace_exec", { name: "n1", argv: ["true"], env: { T: "helper:x" } });
  await refused(client, "touch_others", "workspace_delete", { name: "other" });
  await malformed(client);
  for (const n of ["n2", "n1"]) {
    const d = await ok(client, "workspace_delete", { name: n, force: true });
    check(d.deleted === n, `deleted ${n}`);
  }
  await client.close();
}

const [mode, ...rest] = process.argv.slice(2);
const run = { stdio, http }[mode];
if (!run) {
  console.error("usage: node client.mjs stdio|http ...");
  process.exit(2);
}
run(rest).then(
  () => { console.log("PASS"); process.exit(0); },
  (e) => { console.error(`FAIL: ${e?.stack || e}`); process.exit(1); },
);
