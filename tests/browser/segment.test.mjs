// The demo page tracking through Segment's browser SDK, @segment/analytics-next from npm, as a
// shop already on Segment does: loaded without Segment's CDN (the service serves the SDK's files
// from DEMO_SEGMENT_SDK; the page gives the SDK its settings and points its Segment.io
// destination here). A visitor browses, logs in (identify) and buys; the context panel, the
// Segment routes' traffic and PostgreSQL must show it. Any request for another host fails the
// test. Started by scripts/browser-test, which passes BASE_URL and DATABASE_URL.
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { eventually, launch } from "./harness.mjs";

const base = process.env.BASE_URL ?? "http://127.0.0.1:18000";
const databaseUrl = process.env.DATABASE_URL;

function sql(query) {
  return execFileSync("psql", ["-qtA", databaseUrl, "-c", query], { encoding: "utf8" }).trim();
}

test("Segment's analytics-next, without Segment's CDN, feeds the context panel and PostgreSQL", async () => {
  const browser = await launch();
  try {
    const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
    page.on("pageerror", (error) => assert.fail(`the page threw: ${error.message}`));
    const elsewhere = [];
    await page.route("**/*", (route) => {
      const url = new URL(route.request().url());
      if (url.origin === new URL(base).origin) return route.continue();
      elsewhere.push(url.href);
      return route.abort();
    });
    const posted = [];
    page.on("request", (request) => {
      const path = new URL(request.url()).pathname;
      if (path.startsWith("/v1/")) posted.push({ path, body: JSON.parse(request.postData()), headers: request.headers() });
    });
    const answers = [];
    page.on("response", (response) => {
      if (new URL(response.url()).pathname.startsWith("/v1/")) answers.push(response.status());
    });

    await page.goto(`${base}/demo/?tracking=segment`);
    await page.waitForSelector("body[data-ready=true]");
    assert.equal(await page.getAttribute("#tracking", "data-tracker"), "segment");
    assert.equal(await page.getAttribute("#who", "data-kind"), "visitor");
    // The SDK's own anonymous id is the visitor.
    const visitor = await page.getAttribute("#who", "data-anonymous-id");
    assert.equal(visitor, await page.evaluate(() => window.analytics.user().anonymousId()));
    const user = Number(await page.inputValue("#user"));

    const cards = await page.$$eval("[data-testid=product]", (all) =>
      all.map((c) => ({ asin: c.dataset.asin, category: c.dataset.category })));
    const browsed = cards[0].category;
    const ofBrowsed = cards.filter((c) => c.category === browsed);
    const bought = cards.find((c) => c.category !== browsed);
    const card = (asin) => page.locator(`[data-testid=product][data-asin="${asin}"]`);

    // A visitor's two clicks and a cart, then the login, then a purchase.
    for (const item of ofBrowsed.slice(0, 2)) await card(item.asin).locator(".title").click();
    await card(ofBrowsed[0].asin).locator("[data-action=add_to_cart]").click();
    await eventually("the visitor's three events in the log", async () =>
      (await page.locator("#log li", { hasText: "✓" }).count()) === 3);
    await eventually("the visitor's context", async () => (await page.locator("#recent li").count()) === 3);
    await page.click("#login");
    await eventually("the identification", async () => (await page.getAttribute("#who", "data-kind")) === "user");
    await card(bought.asin).locator("[data-action=purchase]").click();
    await eventually("the three events, the login and the purchase in the log", async () =>
      (await page.locator("#log li", { hasText: "✓" }).count()) === 5);

    // The context panel: the visitor's events went to the user, with the purchase.
    await eventually("the user's context in the panel", async () => (await page.locator("#recent li").count()) === 4);
    const counts = Object.fromEntries(await page.$$eval("#categories li", (rows) =>
      rows.map((r) => [r.dataset.category, Number(r.dataset.count)])));
    assert.deepEqual(counts, { [browsed]: 3, [bought.category]: 1 });
    await eventually("the purchase in the panel", async () =>
      JSON.stringify(await page.$$eval("#purchased li", (rows) => rows.map((r) => r.dataset.asin))) === JSON.stringify([bought.asin]));

    // What the SDK sent: its short routes, text/plain, the write key both as Basic and in the
    // body, its own messageIds; each answered 200.
    assert.deepEqual(posted.map((p) => p.path), ["/v1/t", "/v1/t", "/v1/t", "/v1/i", "/v1/t"]);
    assert.deepEqual(answers, [200, 200, 200, 200, 200]);
    assert.deepEqual(posted.map((p) => p.body.event ?? p.body.type),
      ["Product Clicked", "Product Clicked", "Product Added", "identify", "Order Completed"]);
    for (const { body, headers } of posted) {
      assert.match(headers["content-type"], /^text\/plain/);
      assert.equal(body.writeKey, "demo");
      assert.match(body.messageId, /^ajs-next-/);
    }
    assert.equal(posted[3].body.userId, String(user));
    assert.equal(posted[3].body.anonymousId, visitor);

    // PostgreSQL: the four events, enriched, all the user's; the visitor's three keep its id.
    const rows = await eventually("the events in PostgreSQL, attributed to the user", async () => {
      const out = sql(`SELECT event_type || ' ' || asin || ' ' || coalesce(metadata->>'category', '-') FROM interaction_logs WHERE user_id = ${user} ORDER BY ts`);
      const lines = out ? out.split("\n") : [];
      return lines.length === 4 ? lines : null;
    });
    assert.deepEqual(rows.map((r) => r.split(" ").slice(0, 2).join(" ")), [
      `click ${ofBrowsed[0].asin}`, `click ${ofBrowsed[1].asin}`, `add_to_cart ${ofBrowsed[0].asin}`, `purchase ${bought.asin}`,
    ]);
    assert.ok(rows.every((r) => !r.endsWith(" -")), "every row has its category");
    assert.equal(sql(`SELECT count(*) FROM interaction_logs WHERE anonymous_id = '${visitor}' AND user_id = ${user}`), "3");
    assert.match(sql(`SELECT metadata->>'order_id' FROM interaction_logs WHERE user_id = ${user} AND event_type = 'purchase'`), /^demo-/);

    assert.deepEqual(elsewhere, [], "nothing was asked of another host (Segment's CDN or API)");
  } finally {
    await browser.close();
  }
});
