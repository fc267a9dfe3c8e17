// The demo page: products from the catalogue, events logged through the TypeScript client, and
// the user's live context and re-ranked list, refreshed after every event and every 2 seconds.
import { EventClient } from "/demo/client/index.js";

const client = new EventClient({ baseUrl: location.origin });
const $ = (id) => document.getElementById(id);
const hues = new Map();
let products = [];

function hue(category) {
  if (!hues.has(category)) hues.set(category, `hsl(${(hues.size * 83) % 360} 55% 45%)`);
  return hues.get(category);
}

function userId() {
  return Number($("user").value);
}

function newUser() {
  $("user").value = String(100000 + Math.floor(Math.random() * 900000));
  localStorage.setItem("demo-user", $("user").value);
  $("log").replaceChildren();
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
    await client.logEvent(userId(), product.asin, type, { page: "demo" });
    line.textContent = `${type} ${product.asin} ✓`;
  } catch (error) {
    line.textContent = `${type} ${product.asin} ✗ ${error.message}`;
  }
  refresh();
}

async function refresh() {
  const user = userId();
  if (!user) return;
  const [context, reranked] = await Promise.all([
    fetch(`/api/users/${user}/context`).then((r) => r.json()),
    fetch("/api/rerank", {
      method: "POST",
      headers: { "content-type": "application/json" },
      // A recommender's ranking of the grid, in grid order, with close scores: the context's
      // boosts and penalties are enough to move items many places.
      body: JSON.stringify({ user_id: user, items: products.map((p, i) => ({ asin: p.asin, score: 0.9 - i * 0.005 })) }),
    }).then((r) => r.json()),
  ]);
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

async function main() {
  $("user").value = localStorage.getItem("demo-user") ?? "";
  if (!userId()) newUser();
  $("new-user").addEventListener("click", newUser);
  $("user").addEventListener("change", () => {
    localStorage.setItem("demo-user", $("user").value);
    refresh();
  });
  products = await fetch("/demo/products").then((r) => r.json());
  renderGrid();
  await refresh();
  document.body.dataset.ready = "true";
  setInterval(refresh, 2000);
}

main();
