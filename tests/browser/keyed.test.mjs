// The demo page on a service with API keys (DEMO=true): the page reads nothing until it is given
// a server key, which it keeps in the tab's sessionStorage only. Started by scripts/browser-test
// with BASE_URL and SERVER_KEY.
import { test } from "node:test";
import assert from "node:assert/strict";
import { eventually, launch } from "./harness.mjs";

const base = process.env.BASE_URL ?? "http://127.0.0.1:18000";
const serverKey = process.env.SERVER_KEY;

test("with keys, the demo asks for a server key before it shows or sends anything", async () => {
  assert.ok(serverKey, "SERVER_KEY is set");
  const browser = await launch();
  try {
    const page = await browser.newPage();
    page.on("pageerror", (error) => assert.fail(`the page threw: ${error.message}`));
    await page.goto(`${base}/demo/`);
    await page.waitForSelector("body[data-ready=true]");
    await page.waitForSelector("#key-form:not([hidden])");
    assert.match(await page.textContent("#key-note"), /missing_api_key/);

    const card = page.locator("[data-testid=product]").first();
    await card.locator(".title").click();
    await eventually("the refused event in the log", async () =>
      (await page.locator("#log li", { hasText: "✗" }).count()) === 1);
    assert.equal(await page.locator("#recent li").count(), 0);

    await page.fill("#key", serverKey);
    await page.click("#key-form button");
    await card.locator(".title").click();
    await eventually("the event sent with the key", async () =>
      (await page.locator("#log li", { hasText: "✓" }).count()) === 1);
    await eventually("the context read with the key", async () =>
      (await page.locator("#recent li").count()) === 1);
    assert.equal(await page.textContent("#key-note"), "");

    const kept = await page.evaluate(() => ({
      session: sessionStorage.getItem("event-ingest.demo.server_key"),
      local: Object.values(localStorage),
    }));
    assert.equal(kept.session, serverKey);
    assert.ok(!kept.local.includes(serverKey), "the key is not kept beyond the tab");
  } finally {
    await browser.close();
  }
});
