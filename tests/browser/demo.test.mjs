// The demo page in a real browser: a visitor browses, logs in and buys; then the live context, the
// re-ranked list and PostgreSQL must show the whole session as the user's. Started by scripts/browser-test, which passes BASE_URL,
// DATABASE_URL and SCREENSHOT.
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { eventually, launch } from "./harness.mjs";

const base = process.env.BASE_URL ?? "http://127.0.0.1:18000";
const databaseUrl = process.env.DATABASE_URL;
const screenshot = process.env.SCREENSHOT ?? "demo.png";

function sql(query) {
  return execFileSync("psql", ["-qtA", databaseUrl, "-c", query], { encoding: "utf8" }).trim();
}


test("a visitor who browses, logs in and buys shows up in the context, the re-ranked list and PostgreSQL", async () => {
  const browser = await launch();
  try {
    const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
    page.on("pageerror", (error) => assert.fail(`the page threw: ${error.message}`));
    const sent = [];
    page.on("request", (request) => {
      if (request.url().endsWith("/api/event")) sent.push(JSON.parse(request.postData()));
    });
    await page.goto(`${base}/demo/`);
    await page.waitForSelector("body[data-ready=true]");
    // A fresh browser profile: a new visitor, with an anonymous id the client keeps.
    assert.equal(await page.getAttribute("#who", "data-kind"), "visitor");
    const user = Number(await page.inputValue("#user"));
    await eventually("an empty context for the new visitor", async () =>
      (await page.locator("#recent li").count()) === 0);
    assert.match(await page.textContent("#rerank-note"), /No recent activity/);

    const cards = await page.$$eval("[data-testid=product]", (all) =>
      all.map((c) => ({ asin: c.dataset.asin, category: c.dataset.category })));
    const browsed = cards[0].category;
    const other = cards.find((c) => c.category !== browsed).category;
    const ofBrowsed = cards.filter((c) => c.category === browsed);
    const clicked = ofBrowsed.slice(0, 3);
    const card = (asin) => page.locator(`[data-testid=product][data-asin="${asin}"]`);

    for (const item of clicked) await card(item.asin).locator(".title").click();
    await card(clicked[0].asin).locator("[data-action=add_to_cart]").click();
    await eventually("the visitor's four events in the log", async () =>
      (await page.locator("#log li", { hasText: "✓" }).count()) === 4);
    await eventually("the visitor's context", async () =>
      (await page.locator("#recent li").count()) === 4);
    const visitor = await page.evaluate(() => localStorage.getItem("event-ingest.anonymous_id"));

    // Log in: the visitor's context becomes the user's.
    await page.click("#login");
    await eventually("the identification", async () =>
      (await page.getAttribute("#who", "data-kind")) === "user");
    const bought = cards.find((c) => c.category === other);
    await card(bought.asin).locator("[data-action=purchase]").click();
    await eventually("four events, the login and the purchase in the log", async () =>
      (await page.locator("#log li", { hasText: "✓" }).count()) === 6);

    // The live context: newest first, counts by category.
    await eventually("the context panel to show the session", async () =>
      (await page.locator("#recent li").count()) === 5);
    const counts = Object.fromEntries(await page.$$eval("#categories li", (rows) =>
      rows.map((r) => [r.dataset.category, Number(r.dataset.count)])));
    assert.deepEqual(counts, { [browsed]: 4, [other]: 1 });
    assert.notEqual(await page.textContent("#last-active"), "never");
    // What was bought is remembered apart (30 days), for the purchased rule.
    assert.deepEqual(await page.$$eval("#purchased li", (rows) => rows.map((r) => r.dataset.asin)), [bought.asin]);

    // The re-ranked list: an item of the browsed category that was not touched rises to the top,
    // from further down the recommender's order, and the touched ones are not on top.
    await eventually("the re-ranked list to follow the session", async () =>
      (await page.textContent("#rerank-note")) === "");
    const reranked = await page.$$eval("#reranked li", (rows) =>
      rows.map((r) => ({ asin: r.dataset.asin, originalRank: Number(r.dataset.originalRank) })));
    const category = new Map(cards.map((c) => [c.asin, c.category]));
    const touched = new Set([...clicked.map((c) => c.asin), bought.asin]);
    assert.equal(category.get(reranked[0].asin), browsed, JSON.stringify(reranked));
    assert.ok(!touched.has(reranked[0].asin), "an untouched item leads");
    assert.ok(reranked[0].originalRank > 0, "it rose from further down");
    assert.ok(await page.locator("#reranked .up").count() > 0);

    // PostgreSQL: the five events, once each, enriched, all the user's: the visitor's four were
    // attributed in the background, and keep the anonymous id.
    const rows = await eventually("the events in PostgreSQL, attributed to the user", async () => {
      const out = sql(`SELECT event_type || ' ' || asin || ' ' || coalesce(metadata->>'category', '-') FROM interaction_logs WHERE user_id = ${user} ORDER BY ts`);
      const lines = out ? out.split("\n") : [];
      return lines.length === 5 ? lines : null;
    });
    assert.deepEqual(rows.map((r) => r.split(" ")[0]), ["click", "click", "click", "add_to_cart", "purchase"]);
    assert.ok(rows.every((r) => !r.endsWith(" -")), "every row has its category");
    assert.equal(sql(`SELECT count(*) FROM interaction_logs WHERE anonymous_id = '${visitor}' AND user_id = ${user}`), "4");

    // Each event carried the browser's times, and is stored at the time it happened.
    assert.equal(sent.length, 5);
    assert.deepEqual(sent.map((e) => e.anonymous_id ?? e.user_id), [visitor, visitor, visitor, visitor, user]);
    for (const event of sent) {
      assert.ok(Date.parse(event.timestamp) <= Date.parse(event.sent_at), JSON.stringify(event));
      const stored = Number(sql(`SELECT (extract(epoch FROM ts) * 1000)::bigint FROM interaction_logs WHERE event_id = '${event.event_id}'`));
      assert.ok(Math.abs(stored - Date.parse(event.timestamp)) < 1000, `${stored} for ${JSON.stringify(event)}`);
    }

    await page.screenshot({ path: screenshot, fullPage: true });
  } finally {
    await browser.close();
  }
});
