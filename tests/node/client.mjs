// A jetflow client in another language, with nothing but the `nats` package: it starts the
// check-services example twice with one execution name over the JSON protocol (docs/PROTOCOL.md),
// waits for the result, and prints everything it received as one JSON document.
//
//   node client.mjs nats://127.0.0.1:4222 order-42
import { connect, headers } from "nats";

const [url = "nats://127.0.0.1:4222", name = "node-" + Date.now()] = process.argv.slice(2);
const nc = await connect({ servers: url, name: "jetflow-node-client" });
const enc = new TextEncoder();
const dec = new TextDecoder();

// call sends one JSON request and returns the decoded JSON reply.
async function call(subject, body, timeout = 10000) {
  const h = headers();
  h.set("Content-Type", "application/json");
  const reply = await nc.request(subject, enc.encode(JSON.stringify(body)), { timeout, headers: h });
  return JSON.parse(dec.decode(reply.data));
}

const start = { protocolVersion: 1, function: "check-services", input: "order-42", executionName: name };
const first = await call("jetflow.api.start", start);
const second = await call("jetflow.api.start", start);
const result = await call("jetflow.api.result", { executionId: first.executionId, waitMs: 30000 }, 35000);
const rejected = await call("jetflow.api.start", { function: "no spaces allowed", input: null });
console.log(JSON.stringify({ first, second, result, rejected }, null, 2));
await nc.close();
