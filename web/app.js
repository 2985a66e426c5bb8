// The wallet: a user's account, top-ups, transfers, cross-currency transfers at a locked
// quote, orders with live status, the statement and a live event log, all over kopek's own
// HTTP API and WebSockets. It also holds what the operator console (console.js) shares: the
// API key, `call`, `element` and the errors shown until dismissed.
"use strict";

const currency = window.KOPEK_CURRENCY || "USD";
const digits = Number(window.KOPEK_CURRENCY_DIGITS || 2);
const $ = (id) => document.getElementById(id);
let user = localStorage.getItem("kopek.user") || ("demo-" + Math.random().toString(36).slice(2, 8));
// With auth on, the server answers 401 until the console has a key: it asks once, and keeps
// the key for this tab only.
let apiKey = sessionStorage.getItem("kopek.key") || "";
let feed = null;
let lastSequence = 0;

function accountOf(id) { return `user:${id}:${currency}`; }

// Builds an element with text only: server strings never become markup.
function element(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined) node.textContent = text;
  if (className) node.className = className;
  return node;
}

function orderItem(id) { return document.querySelector(`[data-order="${CSS.escape(id)}"]`); }

// Good news passes; an error stays on screen until it is dismissed.
function toast(text, bad) {
  if (bad) return showError(text);
  const box = $("toast");
  box.textContent = text;
  box.className = "show";
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { box.className = ""; }, 3500);
}

// What a call throws while the key card asks for a key: the card says it already.
const KEY_NEEDED = "an API key is needed";

function showError(text) {
  if (text === KEY_NEEDED) return;
  const item = element("div", undefined, "error");
  item.dataset.testid = "error";
  const dismiss = element("button", "Dismiss", "secondary");
  dismiss.type = "button";
  dismiss.addEventListener("click", () => item.remove());
  item.append(element("span", text), dismiss);
  $("errors").append(item);
}

function askForKey(message) {
  $("key-card").hidden = false;
  $("key-message").textContent = message;
  $("api-key").focus();
}

// WebSockets cannot send headers: the key goes in the query.
function withToken(url) {
  if (!apiKey) return url;
  return url + (url.includes("?") ? "&" : "?") + "access_token=" + encodeURIComponent(apiKey);
}

async function call(method, path, body, headers) {
  const base = { "Content-Type": "application/json", "X-User-ID": user };
  if (apiKey) base.Authorization = "Bearer " + apiKey;
  const response = await fetch(path, {
    method,
    headers: Object.assign(base, headers || {}),
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (response.status === 401) {
    askForKey(apiKey ? "That key was refused; enter another." : "This server needs an API key.");
    throw new Error(KEY_NEEDED);
  }
  const text = await response.text();
  const data = text ? JSON.parse(text) : null;
  if (!response.ok) {
    const error = data && (data.error ? `${data.error.code}: ${data.error.message}` : data.detail);
    throw new Error(error || `HTTP ${response.status}`);
  }
  return data;
}

function money(text) { return `${text} ${currency}`; }

function newKey() { return crypto.randomUUID ? crypto.randomUUID() : `${Date.now()}-${Math.random()}`; }

// Only the newest refresh paints: an older answer (another user's, or from before a change)
// arriving late must not overwrite a newer one.
let refreshes = 0;

async function refresh() {
  const mine = ++refreshes;
  try {
    const account = await call("GET", `/v1/accounts/${encodeURIComponent(accountOf(user))}`);
    if (mine !== refreshes) return;
    $("balance").textContent = money(account.balance.posted);
    $("account-id").textContent = account.id;
    const statement = await call("GET", `/v1/accounts/${encodeURIComponent(accountOf(user))}/entries?limit=50`);
    if (mine !== refreshes) return;
    const body = document.querySelector("#statement tbody");
    body.replaceChildren(...statement.entries.slice().reverse().map((entry) => {
      const sign = entry.direction === "credit" ? "+" : "−";
      const row = element("tr");
      row.append(element("td", new Date(entry.effective_at).toLocaleString()), element("td", entry.transfer_id),
        element("td", sign + entry.amount, `num ${entry.direction === "credit" ? "credit" : "debit"}`),
        element("td", entry.balance_after, "num"));
      return row;
    }));
  } catch (error) {
    if (mine !== refreshes) return;
    $("balance").textContent = "–";
    $("account-id").textContent = "no account yet: open one";
  }
}

async function refreshOrders() {
  try {
    const orders = await call("GET", "/orders/orders");
    $("orders").replaceChildren();
    orders.slice().reverse().forEach(showOrder);
  } catch (error) { /* no orders yet */ }
}

function showOrder(order) {
  let item = orderItem(order.id);
  if (!item) {
    item = element("li");
    item.dataset.order = order.id;
    $("orders").prepend(item);
  }
  const status = element("span", order.status, "status " + order.status.replace(/[^A-Z]/g, ""));
  status.dataset.testid = "order-status";
  item.replaceChildren(element("span", `${order.amount} ${currency} · ${order.id.slice(0, 8)}`), status);
  if (order.status === "PENDING") watchOrder(order.id);
  if (order.status === "FAILED") showReason(order.id);
}

// Why an order FAILED: the contract's order has no reason; kopek's own API has it.
async function showReason(id) {
  try {
    const order = await call("GET", `/v1/orders/${encodeURIComponent(id)}`);
    const item = orderItem(id);
    if (!item || !order.failure) return;
    let reason = item.querySelector(".reason");
    if (!reason) {
      reason = element("span", "", "reason");
      reason.dataset.testid = "order-reason";
      item.append(reason);
    }
    reason.textContent = `${order.failure.code}: ${order.failure.message}`;
  } catch (error) { /* the status stays; the reason needs a key that reads orders */ }
}

function watchOrder(id) {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const socket = new WebSocket(withToken(`${scheme}://${location.host}/ws/orders/${encodeURIComponent(id)}`));
  socket.onmessage = (message) => {
    const update = JSON.parse(message.data);
    if (update.status) {
      const item = orderItem(id) && orderItem(id).querySelector(".status");
      if (item) { item.textContent = update.status; item.className = "status " + update.status.replace(/[^A-Z]/g, ""); }
      if (update.status === "FAILED") showReason(id);
      toast(`order ${id.slice(0, 8)}: ${update.status}`, update.status !== "PAID");
      refresh();
    }
  };
}

function follow() {
  if (feed) feed.close();
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const after = lastSequence ? `&after=${lastSequence}` : "";
  feed = new WebSocket(withToken(`${scheme}://${location.host}/v1/ws?user=${encodeURIComponent(user)}${after}`));
  const socket = feed;
  socket.onopen = () => $("live").classList.add("on");
  socket.onclose = () => {
    $("live").classList.remove("on");
    // Reconnect and resume after the last event seen: nothing is missed.
    if (socket === feed) setTimeout(follow, 1000);
  };
  socket.onmessage = (message) => {
    const event = JSON.parse(message.data);
    lastSequence = Math.max(lastSequence, event.sequence);
    const item = element("li");
    const balance = (event.payload.balances || []).find((b) => b.account_id === accountOf(user));
    const after = balance ? ` → ${(balance.posted_minor / 10 ** digits).toFixed(digits)} ${currency}` : "";
    item.append(element("span", `#${event.sequence} ${event.type}`, "type"), element("span", event.subject_id + after));
    $("events").prepend(item);
    while ($("events").children.length > 100) $("events").lastChild.remove();
    refresh();
  };
}

function selectUser(id) {
  user = id;
  localStorage.setItem("kopek.user", user);
  $("user-id").value = user;
  lastSequence = 0;
  $("events").replaceChildren();
  $("orders").replaceChildren();
  follow();
  refresh();
  refreshOrders();
  loadCurrencies();
  price();
}

$("open-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  selectUser($("user-id").value.trim());
  try {
    const opened = await call("POST", "/payments/account");
    toast(`account open: ${opened.balance} ${currency}`);
    refresh();
  } catch (error) { toast(error.message, true); }
});

$("topup-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  try {
    const result = await call("POST", "/payments/account/topup", { amount: Number($("topup-amount").value) },
      { "Idempotency-Key": newKey() });
    toast(`topped up: balance ${result.balance} ${currency}`);
    refresh();
  } catch (error) { toast(error.message, true); }
});

$("transfer-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const to = $("transfer-to").value.trim();
  try {
    await call("POST", "/payments/account", undefined, { "X-User-ID": to });
    const transfer = await call("POST", "/v1/transfers", {
      debit_account_id: accountOf(user), credit_account_id: accountOf(to),
      amount: $("transfer-amount").value.trim(), currency, kind: "transfer",
    }, { "Idempotency-Key": newKey() });
    toast(`sent ${transfer.amount} ${currency} to ${to}`);
    refresh();
  } catch (error) { toast(error.message, true); }
});

// Convert and send. While the form changes, a live price (POST /v1/fx/convert writes
// nothing) at the rates in force, refreshed every few seconds. "Lock quote" asks for a firm
// quote and counts down its life; "Send" pays at exactly the quote's terms. The transfer's
// key is made from the quote id, so a second click replays the first transfer instead of
// being declined for reusing the quote.
let quote = null; // the locked quote, until it is used, expires or the form changes
let prices = 0; // only the newest price check paints
let priceTimer = null;

function conversion() {
  return {
    to: $("convert-to").value.trim(),
    currency: $("convert-currency").value.trim().toUpperCase(),
    amount: $("convert-amount").value.trim(),
  };
}

// Rates are exact to 18 places; the console shows 8 and marks what it left out.
function rateText(rate) {
  const [whole, fraction = ""] = rate.split(".");
  return fraction.length > 8 ? `${whole}.${fraction.slice(0, 8)}…` : rate;
}

function showTerms(terms, firm) {
  $("convert-price").textContent =
    `${terms.sell_amount} ${terms.from} ${firm ? "→" : "≈"} ${terms.buy_amount} ${terms.to}`;
  $("convert-price").className = firm ? "firm" : "";
  const spread = terms.spread_amount_minor ? ` · spread ${terms.spread_amount} ${terms.to}` : "";
  $("convert-terms").textContent =
    `rate ${rateText(terms.rate)} (mid ${rateText(terms.mid_rate)} via ${terms.rate_path})${spread}`;
}

function dropQuote(message) {
  quote = null;
  $("convert-send").disabled = true;
  $("convert-expiry").textContent = message || "";
}

async function price() {
  const mine = ++prices;
  const wanted = conversion();
  const quiet = (text) => {
    $("convert-price").textContent = text;
    $("convert-price").className = "";
    $("convert-terms").textContent = "";
  };
  if (!/^[A-Z]{3}$/.test(wanted.currency) || !wanted.amount) return quiet("–");
  if (wanted.currency === currency) return quiet(`both sides are ${currency}: use Transfer`);
  try {
    const priced = await call("POST", "/v1/fx/convert",
      { amount: wanted.amount, from_currency: currency, to_currency: wanted.currency });
    if (mine !== prices || quote) return;
    showTerms(priced, false);
  } catch (error) {
    if (mine !== prices || quote) return;
    quiet(error.message);
    $("convert-price").className = "bad";
  }
}

function priceSoon() {
  clearTimeout(priceTimer);
  priceTimer = setTimeout(price, 250);
}

async function loadCurrencies() {
  try {
    const listed = await call("GET", "/v1/fx/rates");
    const codes = new Set();
    listed.rates.forEach((rate) => { codes.add(rate.base); codes.add(rate.quote); });
    codes.delete(currency);
    $("currencies").replaceChildren(...[...codes].sort().map((code) => {
      const option = element("option");
      option.value = code;
      return option;
    }));
    if (!codes.size) $("convert-expiry").textContent = "no exchange rates yet: an admin sets them with kopek rates set";
  } catch (error) { /* the price check says what is wrong */ }
}

// Counts the locked quote down; the server decides, so an expired quote is dropped.
function tick() {
  if (!quote) return;
  const left = Math.ceil((Date.parse(quote.expires_at) - Date.now()) / 1000);
  if (left <= 0) {
    dropQuote("the quote expired: lock a new one");
    price();
    return;
  }
  $("convert-expiry").textContent = `quote ${quote.id} holds for ${left} s`;
}

["convert-to", "convert-currency", "convert-amount"].forEach((id) => $(id).addEventListener("input", () => {
  if (quote) dropQuote("the form changed: lock a new quote");
  priceSoon();
}));

$("convert-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const wanted = conversion();
  try {
    const locked = await call("POST", "/v1/fx/quotes",
      { from: currency, to: wanted.currency, amount: wanted.amount, side: "sell" },
      { "Idempotency-Key": newKey() });
    // A quote asked for a form that has changed since is not this form's quote.
    if (JSON.stringify(conversion()) !== JSON.stringify(wanted)) return;
    quote = Object.assign(locked, { payee: wanted.to });
    showTerms(quote, true);
    $("convert-send").disabled = false;
    tick();
  } catch (error) {
    dropQuote();
    toast(error.message, true);
  }
});

$("convert-send").addEventListener("click", async () => {
  if (!quote) return;
  const used = quote;
  $("convert-send").disabled = true;
  try {
    await call("POST", "/v1/accounts", { id: `user:${used.payee}:${used.to}`, currency: used.to, owner: used.payee },
      { "Idempotency-Key": newKey() });
    await call("POST", "/v1/transfers", {
      debit_account_id: accountOf(user), credit_account_id: `user:${used.payee}:${used.to}`,
      currency, quote_id: used.id,
    }, { "Idempotency-Key": `convert-${used.id}` });
    dropQuote(`sent: ${used.payee} got ${used.buy_amount} ${used.to}`);
    toast(`sent ${used.sell_amount} ${used.from}; ${used.payee} got ${used.buy_amount} ${used.to}`);
    refresh();
  } catch (error) {
    // A declined transfer is recorded under the quote's key: sending again would replay it.
    dropQuote(error.message);
    toast(error.message, true);
  }
});

setInterval(tick, 500);
setInterval(() => { if (!quote && !document.hidden) price(); }, 5000);

$("order-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  try {
    const order = await call("POST", "/orders/orders", { amount: Number($("order-amount").value) });
    showOrder(order);
  } catch (error) { toast(error.message, true); }
});

// The key is asked for once and kept for this tab's session; the view shown asks again.
$("key-form").addEventListener("submit", (event) => {
  event.preventDefault();
  apiKey = $("api-key").value.trim();
  sessionStorage.setItem("kopek.key", apiKey);
  $("key-card").hidden = true;
  $("api-key").value = "";
  if (startWallet.started) selectUser(user);
  window.dispatchEvent(new Event("kopek:key"));
});

// The wallet starts (its socket, its account) when it is first shown.
function startWallet() {
  if (startWallet.started) return;
  startWallet.started = true;
  selectUser(user);
}
