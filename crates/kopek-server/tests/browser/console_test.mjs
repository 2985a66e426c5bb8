// Drives the operator console in headless Chromium against a server that requires API keys,
// at desktop (1280x800) and phone (390x844) sizes: the key is asked for once and kept for the
// session; accounts are found and filtered; an account page shows balances, the statement
// with counterparty, kind, description and running balance, captures and voids holds, freezes
// and unfreezes, and closes; an error stays until dismissed; the transfer explorer filters and
// opens a transfer's page (entries, metadata, events, replay key); the live event log reads as
// sentences; a user's orders show why one failed. Every view: no page or console error, no
// horizontal overflow, a screenshot. Run by `browser::the_console_works_in_a_real_browser`.
import { check, launch } from "./chromium.mjs";

const base = process.env.KOPEK_HTTP_URL;
const shots = process.env.SCREENSHOT_DIR;
const key = process.env.KOPEK_API_KEY;

const headers = { Authorization: `Bearer ${key}`, "Content-Type": "application/json" };
let keys = 0;
async function api(method, path, body, extra) {
  const response = await fetch(base + path, {
    method, body: body && JSON.stringify(body),
    headers: Object.assign({ "Idempotency-Key": `console-test-${++keys}` }, headers, extra || {}),
  });
  const answer = { status: response.status, body: await response.json() };
  check(response.status < 300, `${method} ${path}: ${JSON.stringify(answer)}`);
  return answer.body;
}

// The ledger the console shows.
for (const [id, metadata] of [["alice", { team: "ops" }], ["bob", {}], ["carol", {}]]) {
  await api("POST", "/v1/accounts", { id, currency: "USD", metadata });
}
await api("POST", "/v1/transfers", { kind: "deposit", credit_account_id: "alice", amount: "500.00", currency: "USD" });
const beans = await api("POST", "/v1/transfers", {
  debit_account_id: "alice", credit_account_id: "bob", amount: "25.00", currency: "USD",
  description: "Coffee beans", metadata: { invoice: "inv-7" },
}, { "Idempotency-Key": "beans-inv-7" });
for (const amount of ["40.00", "10.00"]) {
  await api("POST", "/v1/transfers", { debit_account_id: "alice", credit_account_id: "bob", amount, currency: "USD", hold: {} });
}
// Text from the ledger is shown as text: markup in a description runs nothing.
await api("POST", "/v1/transfers", {
  kind: "withdrawal", debit_account_id: "bob", amount: "0.01", currency: "USD",
  description: "<img src=x onerror=\"window.__injected=1\">",
});
await api("POST", "/v1/users", { id: "u1", name: "Uma", currency: "USD" });
await api("POST", "/v1/transfers", { kind: "deposit", credit_account_id: "user:u1:USD", amount: "10.00", currency: "USD" });
for (const amount of [3, 100]) await api("POST", "/orders/orders", { amount }, { "X-User-ID": "u1" });

const browser = await launch();
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
  const problems = [];
  page.on("pageerror", (error) => problems.push(error.message));
  // A refused request is logged by the browser as a failed resource; the test causes those
  // on purpose (the key asked for, the close refused). Any other console error is a defect.
  page.on("console", (message) => {
    if (message.type() === "error" && !message.text().startsWith("Failed to load resource")) problems.push(message.text());
  });
  page.on("dialog", (dialog) => dialog.accept());
  const wait = (what, test, arg) => page.waitForFunction(test, arg, { timeout: 20000 }).catch(async () => {
    const errors = await page.textContent("#errors");
    throw new Error(`waiting for ${what} at ${page.url()}${errors ? `; the page says: ${errors}` : ""}`);
  });
  const text = (selector) => page.textContent(selector);
  let size = "desktop";
  const shoot = async (view) => {
    const width = await page.evaluate(() => document.documentElement.scrollWidth);
    const wanted = page.viewportSize().width;
    check(width <= wanted, `${view} overflows at ${size}: ${width}px wide in ${wanted}px`);
    await page.screenshot({ path: `${shots}/console-${view}-${size}.png`, fullPage: true });
  };
  const rows = (table) => page.locator(`#${table} tbody tr`);

  // The key, once.
  await page.goto(base + "/#/accounts");
  await page.waitForSelector("#key-card", { state: "visible", timeout: 20000 });
  await page.fill("#api-key", key);
  await page.click("#key-form button");
  await page.waitForSelector("#key-card", { state: "hidden" });

  // Accounts: listed, then filtered by id and status.
  await wait("the accounts", () => document.querySelectorAll("#accounts-table tbody tr").length >= 6);
  await page.fill("#accounts-search", "ali");
  await wait("one account", () => document.querySelectorAll("#accounts-table tbody tr").length === 1);
  await page.fill("#accounts-search", "");
  await page.selectOption("#accounts-kind", "system");
  await wait("the system accounts", () => [...document.querySelectorAll("#accounts-table tbody tr")].every((row) => row.textContent.includes("system")));
  await page.selectOption("#accounts-kind", "");
  await shoot("accounts");

  // An account: balances, statement, holds captured and voided, frozen and unfrozen.
  await page.click("#accounts-table a[href='#/accounts/alice']");
  await wait("alice's page", () => document.querySelector("[data-testid=figure-posted] .value")?.textContent === "475.00 USD");
  check((await text("[data-testid=figure-available] .value")) === "425.00 USD", "available is posted less the holds");
  check((await text("#account-meta")).includes("team=ops"), "the metadata is shown");
  await wait("the statement", () => document.querySelectorAll("[data-testid=statement-row]").length === 2);
  const newest = await page.locator("[data-testid=statement-row]").first().textContent();
  for (const part of ["transfer", "bob", "Coffee beans", "−25.00", "475.00"]) {
    check(newest.includes(part), `the statement's newest row says ${part}: ${newest}`);
  }
  await wait("two holds", () => document.querySelectorAll("#holds-table tbody tr").length === 2);
  await shoot("account");
  await rows("holds-table").filter({ hasText: "40.00" }).getByRole("button", { name: "Capture" }).click();
  await wait("the capture", () => document.querySelector("[data-testid=figure-posted] .value")?.textContent === "435.00 USD");
  await wait("one hold", () => document.querySelectorAll("#holds-table tbody tr").length === 1);
  await rows("holds-table").getByRole("button", { name: "Void" }).click();
  await wait("no hold", () => document.querySelector("#holds-note").textContent === "No pending holds.");
  check((await text("[data-testid=figure-available] .value")) === "435.00 USD", "nothing is held any more");
  await page.click("#account-freeze");
  await wait("frozen", () => document.querySelector("[data-testid=account-status]").textContent === "frozen");
  await page.click("#account-unfreeze");
  await wait("active", () => document.querySelector("[data-testid=account-status]").textContent === "active");

  // Closing an account that holds money is refused: the error stays until dismissed, while
  // good news (a toast) comes and goes.
  await page.click("#account-close");
  await wait("the refusal", () => document.querySelector("[data-testid=error]")?.textContent.includes("ACCOUNT_NOT_EMPTY"));
  await page.click("#account-freeze");
  await wait("the toast", () => document.querySelector("#toast").className === "show");
  await wait("the toast gone", () => document.querySelector("#toast").className === "");
  check(await page.isVisible("[data-testid=error]"), "the error is still there after the toast went");
  await page.click("#account-unfreeze");
  await page.click("[data-testid=error] button");
  check(await page.locator("[data-testid=error]").count() === 0, "dismissed");
  await page.goto(base + "/#/accounts/carol");
  await page.reload();
  await wait("carol", () => document.querySelector("[data-testid=account-status]").textContent === "active");
  check(!(await page.isVisible("#key-card")), "the key is kept for the session, across a reload");
  await page.click("#account-close");
  await wait("carol closed", () => document.querySelector("[data-testid=account-status]").textContent === "closed");

  // The transfer explorer: filters, then a transfer's page.
  await page.goto(base + "/#/transfers");
  await wait("transfers", () => document.querySelectorAll("[data-testid=transfer-row]").length >= 8);
  check((await text("#transfers-table")).includes("<img src=x onerror="), "the markup shows as text");
  check(await page.evaluate(() => window.__injected === undefined), "the markup ran nothing");
  await page.selectOption("#transfers-form [name=kind]", "deposit");
  await page.click("#transfers-form button");
  await wait("deposits", () => document.querySelectorAll("[data-testid=transfer-row]").length === 2);
  check(page.url().includes("kind=deposit"), `the filters are in the address: ${page.url()}`);
  await page.selectOption("#transfers-form [name=kind]", "");
  await page.fill("#transfers-form [name=metadata]", "invoice=inv-7");
  await page.click("#transfers-form button");
  await wait("the invoice's transfer", () => document.querySelectorAll("[data-testid=transfer-row]").length === 1);
  await shoot("transfers");
  await page.click("[data-testid=transfer-row] td:first-child a");
  await wait("the transfer page", () => document.querySelector("[data-testid=replay-key]")?.textContent === "beans-inv-7");
  check((await text("[data-testid=transfer-status]")) === "posted", "its status");
  await wait("its entries", () => document.querySelectorAll("#transfer-entries tbody tr").length === 2);
  const entries = await text("#transfer-entries tbody");
  check(entries.includes("alice") && entries.includes("debit") && entries.includes("475.00"), `entries: ${entries}`);
  check((await text("#transfer-metadata")).includes("inv-7"), "its metadata");
  await wait("its event", () => document.querySelector("#transfer-events")?.textContent.includes("TransferPosted"));
  check((await text("#transfer-events")).includes("25.00 USD alice → bob (transfer): Coffee beans"), "the event in words");
  check(page.url().endsWith(beans.id), "the page is the transfer's");
  await shoot("transfer");

  // The live event log, in words.
  await page.goto(base + "/#/events");
  await wait("the live log", () => document.querySelector("#events-live").classList.contains("on"));
  await api("POST", "/v1/transfers", { debit_account_id: "alice", credit_account_id: "bob", amount: "1.00", currency: "USD", description: "live one" });
  await wait("the event", () => document.querySelector("#event-log")?.textContent.includes("1.00 USD alice → bob (transfer): live one"));
  await shoot("events");

  // A user's orders: the failed one says why.
  await page.goto(base + "/#/users");
  await page.fill("#users-id", "u1");
  await page.click("#users-form button");
  await wait("the orders", () => document.querySelectorAll("[data-testid=user-order]").length === 2);
  await wait("the reason", () => document.querySelector("#user-orders .reason")?.textContent.startsWith("INSUFFICIENT_FUNDS"));
  check((await text("#user-orders")).includes("PAID"), "the paid order");
  check((await text("#user-accounts")).includes("user:u1:USD"), "the user's account");
  await shoot("users");
  await page.goto(base + "/#/wallet");
  await page.waitForSelector("#view-wallet", { state: "visible" });
  await shoot("wallet");

  // A phone: every view fits, and the main flows read.
  size = "phone";
  await page.setViewportSize({ width: 390, height: 844 });
  await page.goto(base + "/#/accounts");
  await wait("the accounts", () => document.querySelectorAll("#accounts-table tbody tr").length >= 6);
  await shoot("accounts");
  await page.goto(base + "/#/accounts/alice");
  // The deposit, the beans, the capture and the live one.
  await wait("the statement", () => document.querySelectorAll("[data-testid=statement-row]").length === 4);
  await shoot("account");
  await page.goto(base + "/#/transfers?status=voided");
  // The hold and the void that released it.
  await wait("the voided hold", () => document.querySelectorAll("[data-testid=transfer-row]").length === 2);
  await shoot("transfers");
  await page.goto(base + `/#/transfers/${beans.id}`);
  await wait("its entries", () => document.querySelectorAll("#transfer-entries tbody tr").length === 2);
  await shoot("transfer");
  await page.goto(base + "/#/events");
  await wait("the live log", () => document.querySelector("#events-live").classList.contains("on"));
  await api("POST", "/v1/transfers", { debit_account_id: "alice", credit_account_id: "bob", amount: "2.00", currency: "USD" });
  await wait("the event", () => document.querySelector("#event-log")?.textContent.includes("2.00 USD alice → bob"));
  await shoot("events");
  await page.goto(base + "/#/users/u1");
  await wait("the orders", () => document.querySelectorAll("[data-testid=user-order]").length === 2);
  await shoot("users");
  await page.goto(base + "/#/wallet");
  await page.waitForSelector("#view-wallet", { state: "visible" });
  await shoot("wallet");

  check(problems.length === 0, `page errors: ${problems.join("; ")}`);
  console.log(`console ok; screenshots in ${shots}`);
} finally {
  await browser.close();
}
