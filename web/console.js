// The operator console: accounts (find, open one, freeze, unfreeze, close, capture and void
// its holds, read its statement), the transfer explorer and a transfer's page (entries,
// metadata, events, replay key), the live event log in words, and users with their orders.
// Every view is a hash route (#/accounts, #/accounts/ID, #/transfers?FILTERS, #/transfers/ID,
// #/events, #/users/ID, #/wallet) over kopek's own HTTP API; app.js holds the key and `call`.
"use strict";

const views = ["accounts", "account", "transfers", "transfer", "events", "users", "wallet"];
const PAGE = 50;
const accountList = { loaded: [], cursor: null, owner: null };

function path(...parts) { return parts.map(encodeURIComponent).join("/"); }
function link(text, href, className) {
  const anchor = element("a", text, className);
  anchor.href = href;
  return anchor;
}
function accountLink(id) { return id ? link(id, "#/accounts/" + path(id)) : element("span", "–", "muted"); }
function transferLink(text, id) { return link(text, "#/transfers/" + path(id)); }
function when(text) { return text ? new Date(text).toLocaleString() : "–"; }
function cell(content, className) {
  const td = element("td", undefined, className);
  if (content instanceof Node) td.append(content); else td.textContent = content;
  return td;
}
function row(...cells) {
  const tr = element("tr");
  tr.append(...cells);
  return tr;
}
function badge(node, text) {
  node.textContent = text;
  node.className = "badge " + text;
}
// Minor units as a decimal in the currency's digits (from the amount text the API gives, or
// the ledger's default digits).
function minorText(minor, digitsOf) {
  const places = digitsOf === undefined ? digits : digitsOf;
  const negative = minor < 0;
  const text = String(Math.abs(minor)).padStart(places + 1, "0");
  const whole = places ? text.slice(0, -places) + "." + text.slice(-places) : text;
  return (negative ? "−" : "") + whole;
}
function placesOf(amountText) {
  const dot = (amountText || "").indexOf(".");
  return dot < 0 ? 0 : amountText.length - dot - 1;
}
// Runs an operator's act: its error stays on screen until dismissed.
async function act(work) {
  try { return await work(); } catch (error) { showError(error.message); return undefined; }
}
function fields(list, pairs) {
  list.replaceChildren();
  for (const [name, value] of pairs) {
    if (value === null || value === undefined || value === "") continue;
    const term = element("dt", name);
    const definition = element("dd");
    if (value instanceof Node) definition.append(value); else definition.textContent = value;
    list.append(term, definition);
  }
}

// ---- routing ----

function route() {
  const hash = location.hash.replace(/^#\/?/, "");
  const [where, query = ""] = hash.split("?");
  const parts = where.split("/").filter(Boolean).map(decodeURIComponent);
  const params = new URLSearchParams(query);
  let view = parts[0] || "accounts";
  if (view === "accounts" && parts[1]) view = "account";
  if (view === "transfers" && parts[1]) view = "transfer";
  if (!views.includes(view)) view = "accounts";
  for (const name of views) $("view-" + name).hidden = name !== view;
  document.querySelectorAll("#nav a").forEach((anchor) => {
    const current = anchor.dataset.view === view || anchor.dataset.view + "s" === view
      || (view === "account" && anchor.dataset.view === "accounts")
      || (view === "transfer" && anchor.dataset.view === "transfers");
    anchor.classList.toggle("current", current);
  });
  if (view === "accounts") {
    accountList.loaded = []; // each visit reads the accounts as they are now
    showAccounts();
  }
  if (view === "account") showAccount(parts[1]);
  if (view === "transfers") showTransfers(params);
  if (view === "transfer") showTransfer(parts[1]);
  if (view === "events") followAll();
  if (view === "users") showUser(parts[1]);
  if (view === "wallet") startWallet();
}
window.addEventListener("hashchange", route);
window.addEventListener("kopek:key", route);

// ---- accounts ----

// Reads the first page again when the owner changed or nothing is loaded; then paints.
async function showAccounts() {
  const owner = $("accounts-owner").value.trim();
  if (accountList.owner !== owner || !accountList.loaded.length) {
    accountList.loaded = [];
    accountList.cursor = null;
    accountList.owner = owner;
    await loadAccounts();
  }
  paintAccounts();
}

async function loadAccounts() {
  const query = new URLSearchParams({ limit: "200" });
  if (accountList.owner) query.set("owner", accountList.owner);
  if (accountList.cursor) query.set("after", accountList.cursor);
  const page = await act(() => call("GET", "/v1/accounts?" + query));
  if (!page) return;
  accountList.loaded.push(...page.accounts);
  accountList.cursor = page.next_cursor;
}

function paintAccounts() {
  const text = $("accounts-search").value.trim().toLowerCase();
  const currencyWanted = $("accounts-currency").value.trim().toUpperCase();
  const kind = $("accounts-kind").value;
  const status = $("accounts-status").value;
  const shown = accountList.loaded.filter((account) =>
    (!text || account.id.toLowerCase().includes(text))
    && (!currencyWanted || account.currency === currencyWanted)
    && (!kind || account.kind === kind) && (!status || account.status === status));
  $("accounts-table").tBodies[0].replaceChildren(...shown.map((account) => {
    const status = element("span", account.status, "badge " + account.status);
    const available = account.balance.available === null ? "unbounded" : account.balance.available;
    return row(cell(accountLink(account.id)), cell(account.owner || "–"), cell(account.kind), cell(status),
      cell(`${account.balance.posted} ${account.currency}`, "num"), cell(available, "num"));
  }));
  $("accounts-note").textContent = `${shown.length} of ${accountList.loaded.length} accounts loaded`
    + (accountList.cursor ? "; load more to search further" : "");
  $("accounts-more").hidden = !accountList.cursor;
}

$("accounts-form").addEventListener("submit", (event) => {
  event.preventDefault();
  accountList.loaded = [];
  showAccounts();
});
["accounts-search", "accounts-currency", "accounts-kind", "accounts-status"].forEach((id) =>
  $(id).addEventListener("input", paintAccounts));
$("accounts-more").addEventListener("click", async () => { await loadAccounts(); paintAccounts(); });

// ---- one account ----

let accountShown = null;
const statement = { cursor: null };

async function showAccount(id) {
  accountShown = id;
  $("account-title").textContent = id;
  $("account-transfers").href = "#/transfers?account=" + encodeURIComponent(id);
  $("account-statement").tBodies[0].replaceChildren();
  const account = await act(() => call("GET", "/v1/accounts/" + path(id)));
  if (!account || accountShown !== id) return;
  paintAccount(account);
  showHolds(id);
  statement.cursor = null;
  loadStatement(id);
}

function paintAccount(account) {
  badge($("account-status"), account.status);
  const places = placesOf(account.balance.posted);
  const figure = (name, value) => {
    const box = element("div", undefined, "figure");
    box.append(element("span", name, "label"), element("span", value, "value"));
    box.dataset.testid = "figure-" + name.toLowerCase().replace(/ /g, "-");
    return box;
  };
  const limit = account.overdraft_limit_minor === null ? "unbounded" : minorText(account.overdraft_limit_minor, places);
  $("account-balances").replaceChildren(
    figure("Posted", `${account.balance.posted} ${account.currency}`),
    figure("Available", account.balance.available === null ? "unbounded" : `${account.balance.available} ${account.currency}`),
    figure("Pending out", minorText(account.balance.pending_out_minor, places)),
    figure("Pending in", minorText(account.balance.pending_in_minor, places)),
    figure("Overdraft limit", limit));
  const metadata = Object.entries(account.metadata || {}).map(([key, value]) => `${key}=${value}`).join(", ");
  $("account-meta").textContent = [`${account.kind} account`, account.owner ? `owned by ${account.owner}` : "",
    `opened ${when(account.created_at)}`, metadata ? `metadata ${metadata}` : ""].filter(Boolean).join(" · ");
  $("account-freeze").hidden = account.status !== "active";
  $("account-unfreeze").hidden = account.status !== "frozen";
  $("account-close").hidden = account.status === "closed";
}

async function setStatus(status) {
  const id = accountShown;
  const account = await act(() => call("PATCH", "/v1/accounts/" + path(id), { status }));
  if (account && accountShown === id) {
    paintAccount(account);
    toast(`${id} is ${account.status}`);
  }
}
$("account-freeze").addEventListener("click", () => setStatus("frozen"));
$("account-unfreeze").addEventListener("click", () => setStatus("active"));
$("account-close").addEventListener("click", () => {
  if (confirm(`Close ${accountShown}? A closed account takes no more transfers.`)) setStatus("closed");
});

function counterparty(transfer, id) {
  return transfer.debit_account_id === id ? transfer.credit_account_id : transfer.debit_account_id;
}

async function showHolds(id) {
  const query = new URLSearchParams({ account: id, status: "pending", limit: "100" });
  const page = await act(() => call("GET", "/v1/transfers?" + query));
  if (!page || accountShown !== id) return;
  $("holds-table").tBodies[0].replaceChildren(...page.transfers.map((hold) => {
    const capture = element("button", "Capture");
    capture.type = "button";
    capture.addEventListener("click", () => resolveHold(hold.id, "capture", {}));
    const release = element("button", "Void", "danger");
    release.type = "button";
    release.addEventListener("click", () => resolveHold(hold.id, "void"));
    const buttons = element("span", undefined, "buttons");
    buttons.append(capture, release);
    const tr = row(cell(transferLink(hold.id.slice(-8), hold.id)), cell(accountLink(counterparty(hold, id))),
      cell(`${hold.amount} ${hold.currency}`, "num"), cell(hold.expires_at ? when(hold.expires_at) : "never"),
      cell(buttons));
    tr.dataset.hold = hold.id;
    return tr;
  }));
  $("holds-note").textContent = page.transfers.length ? "" : "No pending holds.";
}

async function resolveHold(id, how, body) {
  const done = await act(() => call("POST", `/v1/transfers/${path(id)}/${how}`, body,
    { "Idempotency-Key": newKey() }));
  if (!done) return;
  toast(how === "capture" ? `captured ${done.amount} ${done.currency}` : "hold voided");
  // A read by id waits until searches see the write too (docs/api.md): then the holds and
  // the statement are read again.
  await act(() => call("GET", "/v1/transfers/" + path(id)));
  if (accountShown) showAccount(accountShown);
  if (transferShown === id) showTransfer(id);
}

// The statement: the account's transfers with their entries, newest first; each row is this
// account's entry, with the other side, the kind, the description and the balance after it.
async function loadStatement(id) {
  const query = new URLSearchParams({ account: id, include: "entries", limit: String(PAGE) });
  if (statement.cursor) query.set("cursor", statement.cursor);
  const page = await act(() => call("GET", "/v1/transfers?" + query));
  if (!page || accountShown !== id) return;
  const rows = [];
  for (const transfer of page.transfers) {
    for (const entry of (transfer.entries || []).filter((e) => e.account_id === id).reverse()) {
      const credit = entry.direction === "credit";
      const tr = row(cell(transferLink(when(entry.committed_at), transfer.id)), cell(transfer.kind),
        cell(accountLink(counterparty(transfer, id))), cell(transfer.description || ""),
        cell((credit ? "+" : "−") + entry.amount, "num " + (credit ? "credit" : "debit")),
        cell(entry.balance_after, "num"));
      tr.dataset.testid = "statement-row";
      rows.push(tr);
    }
  }
  $("account-statement").tBodies[0].append(...rows);
  statement.cursor = page.next_cursor;
  $("statement-more").hidden = !page.next_cursor;
}
$("statement-more").addEventListener("click", () => loadStatement(accountShown));

// ---- the transfer explorer ----

const explorer = { query: null, cursor: null };

function showTransfers(params) {
  const form = $("transfers-form");
  for (const input of form.elements) {
    if (!input.name) continue;
    let value = params.get(input.name) || "";
    if (input.name === "metadata") {
      const pair = [...params.entries()].find(([name]) => name.startsWith("metadata."));
      value = pair ? `${pair[0].slice("metadata.".length)}=${pair[1]}` : "";
    }
    if (input.type === "datetime-local" && value) value = value.replace(/Z$/, "").slice(0, 19);
    if (input.tagName === "SELECT" && !value) value = input.options[0].value;
    input.value = value;
  }
  explorer.query = new URLSearchParams(params);
  explorer.cursor = null;
  $("transfers-table").tBodies[0].replaceChildren();
  loadTransfers();
}

async function loadTransfers() {
  const query = new URLSearchParams(explorer.query);
  if (!query.has("limit")) query.set("limit", String(PAGE));
  if (explorer.cursor) query.set("cursor", explorer.cursor);
  const page = await act(() => call("GET", "/v1/transfers?" + query));
  if (!page) return;
  $("transfers-table").tBodies[0].append(...page.transfers.map((transfer) => {
    const status = element("span", transfer.status, "badge " + transfer.status);
    const sides = element("span");
    sides.append(accountLink(transfer.debit_account_id), " → ", accountLink(transfer.credit_account_id));
    const amount = transfer.amount ? `${transfer.amount} ${transfer.currency}` : "–";
    const tr = row(cell(transferLink(when(transfer.committed_at), transfer.id)), cell(transfer.kind), cell(status),
      cell(sides), cell(amount, "num"), cell(transfer.description || ""));
    tr.dataset.testid = "transfer-row";
    return tr;
  }));
  explorer.cursor = page.next_cursor;
  $("transfers-more").hidden = !page.next_cursor;
  const count = $("transfers-table").tBodies[0].rows.length;
  $("transfers-note").textContent = count ? `${count} transfers` : "No transfer matches.";
}

$("transfers-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const query = new URLSearchParams();
  for (const input of event.target.elements) {
    const value = (input.value || "").trim();
    if (!input.name || !value || (input.name === "order" && value === "desc")) continue;
    if (input.name === "metadata") {
      const [key, ...rest] = value.split("=");
      if (!rest.length) return showError("metadata is searched as key=value");
      query.set("metadata." + key.trim(), rest.join("=").trim());
    } else if (input.type === "datetime-local") {
      query.set(input.name, new Date(value).toISOString());
    } else {
      query.set(input.name, input.name === "currency" ? value.toUpperCase() : value);
    }
  }
  const target = "#/transfers" + (query.toString() ? "?" + query : "");
  if (location.hash === target) showTransfers(query); else location.hash = target;
});
$("transfers-more").addEventListener("click", loadTransfers);

// ---- one transfer ----

let transferShown = null;

async function showTransfer(id) {
  transferShown = id;
  for (const id of ["transfer-fields", "transfer-metadata", "transfer-events"]) $(id).replaceChildren();
  $("transfer-entries").tBodies[0].replaceChildren();
  const transfer = await act(() => call("GET", "/v1/transfers/" + path(id)));
  if (!transfer || transferShown !== id) return;
  badge($("transfer-status"), transfer.status);
  const key = element("code", transfer.idempotency_key);
  key.dataset.testid = "replay-key";
  fields($("transfer-fields"), [
    ["Id", transfer.id],
    ["Kind", `${transfer.kind} (${transfer.action})`],
    ["Amount", transfer.amount ? `${transfer.amount} ${transfer.currency}` : ""],
    ["Captured", transfer.action === "hold" && transfer.captured_amount_minor ? minorText(transfer.captured_amount_minor, placesOf(transfer.amount)) : ""],
    ["From", accountLink(transfer.debit_account_id)],
    ["To", accountLink(transfer.credit_account_id)],
    ["Resolves hold", transfer.pending_id ? transferLink(transfer.pending_id, transfer.pending_id) : ""],
    ["Description", transfer.description],
    ["Category", transfer.category],
    ["Declined", transfer.error ? `${transfer.error.code}: ${transfer.error.message}` : ""],
    ["Effective", when(transfer.effective_at)],
    ["Committed", when(transfer.committed_at)],
    ["Updated", transfer.updated_at !== transfer.committed_at ? when(transfer.updated_at) : ""],
    ["Expires", transfer.expires_at ? when(transfer.expires_at) : ""],
    ["Replay key", key],
  ]);
  fields($("transfer-metadata"), Object.entries(transfer.metadata || {}));
  if (!Object.keys(transfer.metadata || {}).length) $("transfer-metadata").append(element("dd", "none", "muted"));
  $("transfer-actions").hidden = transfer.status !== "pending";
  const [found, events] = await Promise.all([
    act(() => call("GET", "/v1/transfers?" + new URLSearchParams({ idempotency_key: transfer.idempotency_key, include: "entries" }))),
    act(() => call("GET", `/v1/transfers/${path(id)}/events`)),
  ]);
  if (transferShown !== id) return;
  const entries = found && found.transfers[0] ? found.transfers[0].entries || [] : [];
  $("transfer-entries").tBodies[0].replaceChildren(...entries.map((entry) => row(cell(accountLink(entry.account_id)),
    cell(entry.direction, entry.direction), cell(`${entry.amount} ${entry.currency}`, "num"), cell(entry.balance_after, "num"))));
  $("transfer-entries-note").textContent = entries.length ? "" : "No entries: it moved no money.";
  if (events) $("transfer-events").replaceChildren(...events.events.map(eventItem));
}

$("transfer-capture").addEventListener("click", () => {
  const amount = $("transfer-capture-amount").value.trim();
  resolveHold(transferShown, "capture", amount ? { amount } : {});
});
$("transfer-void").addEventListener("click", () => resolveHold(transferShown, "void"));

// ---- events, in words ----

// One sentence for an event, from its document: what happened, to what, for how much.
function describe(event) {
  const subject = event.payload.subject || {};
  const money = subject.amount ? `${subject.amount} ${subject.currency}` : "";
  const sides = `${subject.debit_account_id || "?"} → ${subject.credit_account_id || "?"}`;
  switch (event.type) {
    case "TransferPosted": return `${money} ${sides} (${subject.kind})${subject.description ? ": " + subject.description : ""}`;
    case "TransferDeclined": return `${money} ${sides} declined: ${subject.error_code || ""} ${subject.error_message || ""}`;
    case "HoldPlaced": return `${money} held ${sides}`;
    case "HoldCaptured": return `hold captured: ${money} ${sides}`;
    case "HoldVoided": return `hold voided: ${money} ${sides}`;
    case "HoldExpired": return `hold expired: ${money} ${sides}`;
    case "AccountOpened": return `account ${subject.id} opened in ${subject.currency}${subject.owner ? " for " + subject.owner : ""}`;
    case "AccountUpdated": return `account ${subject.id} is ${subject.status}`;
    case "UserCreated": return `user ${subject.id} (${subject.name || "no name"})`;
    case "OrderCreated": case "OrderPaid": case "OrderFailed": case "PaymentCompleted": case "PaymentFailed":
      return `order ${subject.id} of ${subject.user_id}: ${subject.amount} ${subject.currency} ${subject.status}`
        + (subject.failure_code ? ` (${subject.failure_code}: ${subject.failure_message})` : "");
    case "RateUpdated": return `${subject.base}/${subject.quote} at ${subject.rate}`;
    case "QuoteCreated": return `quote ${subject.id}`;
    default: return event.subject_id;
  }
}

function eventItem(event) {
  const item = element("li");
  item.dataset.testid = "event";
  const head = element("span", undefined, "type");
  const target = event.payload.subject_type === "transfer" ? transferLink(event.type, event.subject_id)
    : event.payload.subject_type === "account" ? link(event.type, "#/accounts/" + path(event.subject_id))
      : element("span", event.type);
  head.append(`#${event.sequence} `, target, element("span", " · " + when(event.at), "muted"));
  const raw = element("details");
  raw.append(element("summary", "document"), element("pre", JSON.stringify(event.payload, null, 2)));
  item.append(head, element("span", describe(event), "sentence"), raw);
  return item;
}

let logFeed = null;
function followAll() {
  if (logFeed && logFeed.readyState <= 1) return;
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const socket = new WebSocket(withToken(`${scheme}://${location.host}/v1/ws`));
  logFeed = socket;
  socket.onopen = () => $("events-live").classList.add("on");
  socket.onclose = () => {
    $("events-live").classList.remove("on");
    if (socket === logFeed && !$("view-events").hidden) setTimeout(followAll, 1000);
  };
  socket.onmessage = (message) => {
    const log = $("event-log");
    log.prepend(eventItem(JSON.parse(message.data)));
    while (log.children.length > 200) log.lastChild.remove();
  };
}

// ---- users and orders ----

$("users-form").addEventListener("submit", (event) => {
  event.preventDefault();
  location.hash = "#/users/" + path($("users-id").value.trim());
});

async function showUser(id) {
  for (const list of ["user-summary", "user-accounts", "user-orders"]) $(list).replaceChildren();
  if (!id) return;
  $("users-id").value = id;
  const user = await act(() => call("GET", "/v1/users/" + path(id)));
  if (!user) return;
  $("user-summary").append(element("p", `${user.name || id} · user since ${when(user.created_at)}`));
  const accounts = await act(() => call("GET", "/v1/accounts?" + new URLSearchParams({ owner: id })));
  if (accounts) {
    $("user-accounts").replaceChildren(...accounts.accounts.map((account) => {
      const item = element("li");
      item.append(accountLink(account.id), element("span", `${account.balance.posted} ${account.currency}`));
      return item;
    }));
  }
  const orders = await act(() => call("GET", "/orders/orders", undefined, { "X-User-ID": id }));
  if (!orders) return;
  $("user-orders").replaceChildren(...orders.slice().reverse().map((order) => {
    const item = element("li");
    item.dataset.testid = "user-order";
    const status = element("span", order.status, "status " + order.status);
    item.append(element("span", `${order.amount} · ${order.id.slice(0, 8)}`), status);
    if (order.status === "FAILED") {
      call("GET", "/v1/orders/" + path(order.id)).then((full) => {
        if (full.failure) item.append(element("span", `${full.failure.code}: ${full.failure.message}`, "reason"));
      }).catch((error) => showError(error.message));
    }
    return item;
  }));
  if (!orders.length) $("user-orders").append(element("li", "No orders.", "muted"));
}

route();
