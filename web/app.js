// The kopek console: a user's account, top-ups, transfers, orders with live status, the
// statement and a live event log, all over kopek's own HTTP API and WebSockets.
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

function toast(text, bad) {
  const box = $("toast");
  box.textContent = text;
  box.className = "show" + (bad ? " bad" : "");
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { box.className = ""; }, 3500);
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
    throw new Error("an API key is needed");
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
}

function watchOrder(id) {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const socket = new WebSocket(withToken(`${scheme}://${location.host}/ws/orders/${encodeURIComponent(id)}`));
  socket.onmessage = (message) => {
    const update = JSON.parse(message.data);
    if (update.status) {
      const item = orderItem(id) && orderItem(id).querySelector(".status");
      if (item) { item.textContent = update.status; item.className = "status " + update.status.replace(/[^A-Z]/g, ""); }
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
      { "Idempotency-Key": crypto.randomUUID ? crypto.randomUUID() : String(Date.now()) });
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
    }, { "Idempotency-Key": crypto.randomUUID ? crypto.randomUUID() : String(Date.now()) });
    toast(`sent ${transfer.amount} ${currency} to ${to}`);
    refresh();
  } catch (error) { toast(error.message, true); }
});

$("order-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  try {
    const order = await call("POST", "/orders/orders", { amount: Number($("order-amount").value) });
    showOrder(order);
  } catch (error) { toast(error.message, true); }
});

$("key-form").addEventListener("submit", (event) => {
  event.preventDefault();
  apiKey = $("api-key").value.trim();
  sessionStorage.setItem("kopek.key", apiKey);
  $("key-card").hidden = true;
  $("api-key").value = "";
  selectUser(user);
});

selectUser(user);
