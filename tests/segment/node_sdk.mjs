// Sends a scenario through Segment's Node SDK, @segment/analytics-node, as a shop's server would:
// `node node_sdk.mjs PLAN`, where PLAN is JSON {host, writeKey, calls: [[method, message], ...]}.
// Every call goes into one batch (flushAt is the number of calls), flushed at the end; exits 1
// if the SDK reports a delivery error. Driven by sdks.py.
import { Analytics } from "@segment/analytics-node";

const plan = JSON.parse(process.argv[2]);
const analytics = new Analytics({
  writeKey: plan.writeKey,
  host: plan.host,
  flushAt: plan.calls.length,
  flushInterval: 60_000,
  maxRetries: 3,
});
const failures = [];
analytics.on("error", (error) => failures.push(String(error?.reason ?? error?.message ?? error)));
for (const [method, message] of plan.calls) analytics[method](message);
await analytics.closeAndFlush({ timeout: 30_000 });
if (failures.length > 0) {
  console.error(`analytics-node reported: ${failures.join("; ")}`);
  process.exit(1);
}
