// The demo page: products from the catalogue, events logged through the TypeScript client, and
// the live context and re-ranked list, refreshed after every event and every 2 seconds. The page
// starts as a visitor (the client's anonymous id); "Log in" identifies them as the user typed,
// which merges the visitor's context into the user's; "Log out" starts a new visitor.
//
// Tracking goes through the TypeScript client, or, at /demo/?tracking=segment, through Segment's
// browser SDK (segment.js) as a shop already on Segment would send it.
//
// When the service has API keys, the page reads nothing without a server key: it asks for one,
// keeps it in this tab's sessionStorage only, and sends it with every call. A server key is a
// secret; this page is for the operator's own browser, never a public one.
import { EventClient } from "/demo/client/index.js";
import { segmentTracker } from "/demo/segment.js";

const KEY_STORE = "event-ingest.demo.server_key";
const SEGMENT = new URLSearchParams(location.search).get("tracking") === "segment";
let apiKey = sessionStorage.getItem(KEY_STORE) ?? undefined;
/** Who sends the page's events: our client, or Segment's SDK; set by main(). */
let tracker;
const $ = (id) => document.getElementById(id);
const hues = new Map();
let products = [];

function hue(category) {
  if (!hues.has(category)) hues.set(category, `hsl(${(hues.size * 83) % 360} 55% 45%)`);
  return hues.get(category);
}

function randomUser() {
  $("user").value = String(100000 + Math.floor(Math.random() * 900000));
}

/** The page's tracking through our TypeScript client. */
function clientTracker(apiKey) {
  const client = new EventClient({ baseUrl: location.origin, apiKey });
  return {
    name: "the TypeScript client",
    get userId() {
      return client.userId;
    },
    get anonymousId() {
      return client.anonymousId;
    },
    logEvent: (product, type) => client.logEvent(undefined, product.asin, type, { page: "demo" }),
    identify: (user) => client.identify(user),
    reset: () => client.reset(),
  };
}

/** Who the page acts as: the logged-in user, else the visitor. */
function actor() {
  const user = tracker.userId;
  return user !== undefined ? { user_id: user } : { anonymous_id: tracker.anonymousId };
}

function showWho() {
  const user = tracker.userId;
  $("who").textContent = user !== undefined ? `User ${user}` : `Visitor ${tracker.anonymousId.slice(0, 13)}…`;
  $("who").dataset.kind = user !== undefined ? "user" : "visitor";
  $("who").dataset.anonymousId = tracker.anonymousId;
  $("login").disabled = user !== undefined;
  $("logout").disabled = user === undefined;
}

async function logIn() {
  const user = Number($("user").value);
  const line = el("li", { textContent: `identify ${user} …` });
  $("log").prepend(line);
  try {
    await tracker.identify(user);
    line.textContent = `identify ${user} ✓`;
  } catch (error) {
    line.textContent = `identify ${user} ✗ ${error.message}`;
  }
  showWho();
  refresh();
}

function logOut() {
  tracker.reset();
  randomUser();
  $("log").replaceChildren();
  showWho();
  refresh();
}

function el(tag, props = {}, ...children) {
  const node = Object.assign(document.createElement(tag), props);
  node.append(...children);
  return node;
}

function renderGrid() {
  $("grid").replaceChildren(
    ...products.map((p) => {
      const card = el("article", { className: "product" });
      card.dataset.asin = p.asin;
      card.dataset.category = p.category;
      card.dataset.testid = "product";
      card.style.setProperty("--hue", hue(p.category));
      const button = (label, type) => {
        const b = el("button", { type: "button", textContent: label });
        b.dataset.action = type;
        b.addEventListener("click", (event) => {
          event.stopPropagation();
          send(p, type);
        });
        return b;
      };
      card.append(
        el("span", { className: "category", textContent: p.category }),
        el("span", { className: "title", textContent: p.title ?? p.asin }),
        el("span", { className: "meta", textContent: `${p.brand ?? ""} · ${p.asin}${p.price ? ` · $${p.price}` : ""}` }),
        el("div", { className: "actions" }, button("Add to cart", "add_to_cart"), button("Buy", "purchase")),
      );
      card.addEventListener("click", () => send(p, "click"));
      return card;
    }),
  );
}

async function send(product, type) {
  const line = el("li", { textContent: `${type} ${product.asin} …` });
  $("log").prepend(line);
  try {
    await tracker.logEvent(product, type);
    line.textContent = `${type} ${product.asin} ✓`;
  } catch (error) {
    line.textContent = `${type} ${product.asin} ✗ ${error.message}`;
  }
  refresh();
}

/** The headers of the page's own reads: the server key, once one is given. */
function headers(extra = {}) {
  return apiKey === undefined ? extra : { ...extra, "x-api-key": apiKey };
}

/** A read's answer; a 401 or 403 shows the key form with the service's reason. */
async function read(response) {
  const body = await response.json();
  if (response.status === 401 || response.status === 403) {
    $("key-form").hidden = false;
    $("key-note").textContent = `${body.error?.code}: this service has API keys; reading a context takes a server key.`;
    throw new Error(body.error?.code);
  }
  return body;
}

function useKey(submitted) {
  submitted.preventDefault();
  apiKey = $("key").value.trim() || undefined;
  if (apiKey === undefined) sessionStorage.removeItem(KEY_STORE);
  else sessionStorage.setItem(KEY_STORE, apiKey);
  // Segment's SDK takes its write key once, when it loads.
  if (SEGMENT) return location.reload();
  // The same visitor and user: the client keeps them in localStorage.
  tracker = clientTracker(apiKey);
  $("key-note").textContent = "";
  refresh();
}

async function refresh() {
  const who = actor();
  const contextUrl = who.user_id !== undefined ? `/api/users/${who.user_id}/context` : `/api/visitors/${who.anonymous_id}/context`;
  const answers = Promise.all([
    fetch(contextUrl, { headers: headers() }).then(read),
    fetch("/api/rerank", {
      method: "POST",
      headers: headers({ "content-type": "application/json" }),
      // A recommender's ranking of the grid, in grid order, with close scores: the context's
      // boosts and penalties are enough to move items many places.
      body: JSON.stringify({ ...who, items: products.map((p, i) => ({ asin: p.asin, score: 0.9 - i * 0.005 })) }),
    }).then(read),
  ]);
  const [context, reranked] = await answers.catch(() => [{}, {}]);
  renderContext(context);
  renderReranked(reranked);
}

function renderContext(context) {
  const byAsin = new Map(products.map((p) => [p.asin, p]));
  $("recent").replaceChildren(
    ...(context.recent_items ?? []).map((asin) => el("li", { textContent: byAsin.get(asin)?.title ?? asin })),
  );
  const counts = Object.entries(context.recent_categories ?? {}).sort((a, b) => b[1] - a[1]);
  const most = Math.max(1, ...counts.map(([, n]) => n));
  $("categories").replaceChildren(
    ...counts.map(([category, n]) => {
      const bar = el("span", { className: "bar" });
      bar.style.width = `${(100 * n) / most}%`;
      bar.style.setProperty("--hue", hue(category));
      const row = el("li", {}, el("span", { textContent: category }), el("span", {}, bar), el("span", { textContent: String(n) }));
      row.dataset.category = category;
      row.dataset.count = String(n);
      return row;
    }),
  );
  $("purchased").replaceChildren(
    ...(context.purchased ?? []).map((asin) => {
      const row = el("li", { textContent: byAsin.get(asin)?.title ?? asin });
      row.dataset.asin = asin;
      return row;
    }),
  );
  $("last-active").textContent = context.last_active ?? "never";
}

function renderReranked(answer) {
  const byAsin = new Map(products.map((p) => [p.asin, p]));
  const removed = answer.removed?.length ?? 0;
  $("rerank-note").textContent = !answer.context?.available
    ? "No recent activity yet: the recommender's order stands."
    : removed > 0
      ? `${removed} item(s) already bought left out.`
      : "";
  $("reranked").replaceChildren(
    ...(answer.items ?? []).slice(0, 12).map((item, rank) => {
      const moved = item.original_rank - rank;
      const move = el("span", { className: `move ${moved > 0 ? "up" : moved < 0 ? "down" : ""}`, textContent: moved > 0 ? `▲${moved}` : moved < 0 ? `▼${-moved}` : "·" });
      const why = item.reasons.map((r) => `${r.rule} ${r.delta > 0 ? "+" : ""}${r.delta.toFixed(2)}`).join(", ");
      const row = el("li", {}, move, `${byAsin.get(item.asin)?.title ?? item.asin} `, el("span", { className: "why", textContent: why }));
      row.dataset.asin = item.asin;
      row.dataset.originalRank = String(item.original_rank);
      return row;
    }),
  );
}

/** Names the page's tracker, with a link to the other one. */
function showTracking() {
  const other = SEGMENT ? ["/demo/", "use the TypeScript client"] : ["/demo/?tracking=segment", "use Segment's SDK"];
  $("tracking").replaceChildren(`Tracking: ${tracker.name} `, el("a", { href: other[0], textContent: `(${other[1]})` }));
  $("tracking").dataset.tracker = SEGMENT ? "segment" : "client";
}

async function startTracking() {
  if (!SEGMENT) return clientTracker(apiKey);
  try {
    // Any key works on a service without keys; with keys, the server key the page was given.
    return await segmentTracker(apiKey ?? "demo");
  } catch (error) {
    $("tracking").textContent = `Segment's SDK: ${error.message}`;
    throw error;
  }
}

async function main() {
  tracker = await startTracking();
  showTracking();
  if (tracker.userId !== undefined) $("user").value = String(tracker.userId);
  else randomUser();
  showWho();
  $("login").addEventListener("click", logIn);
  $("logout").addEventListener("click", logOut);
  $("key-form").addEventListener("submit", useKey);
  products = await fetch("/demo/products").then((r) => r.json());
  renderGrid();
  await refresh();
  document.body.dataset.ready = "true";
  setInterval(refresh, 2000);
}

main();
