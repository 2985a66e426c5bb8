// Drives the web UI in headless Chromium at phone width against a server that requires API
// keys: give the key the console asks for, open an account, top up, transfer, place an order
// and see it become PAID live (over a WebSocket that carries the key), convert and send to
// another currency at a locked quote, then save a screenshot.
// Run by the Rust test `browser::the_ui_works_in_a_real_browser`, which sets the variables.
import { check, launch } from "./chromium.mjs";

const base = process.env.KOPEK_HTTP_URL;
const screenshot = process.env.SCREENSHOT_PATH;

const browser = await launch();
try {
  const page = await browser.newPage({ viewport: { width: 390, height: 844 } });
  const problems = [];
  page.on("pageerror", (error) => problems.push(error.message));
  const balanceIs = (text) =>
    page.waitForFunction((want) => document.querySelector("#balance").textContent === want, text, { timeout: 20000 });

  const headers = { Authorization: `Bearer ${process.env.KOPEK_API_KEY}`, "Content-Type": "application/json" };
  const api = async (method, path, body) => {
    const response = await fetch(base + path, { method, headers, body: body && JSON.stringify(body) });
    return { status: response.status, body: await response.json() };
  };
  const rate = await api("PUT", "/v1/fx/rates/USD/EUR", { rate: "0.9234" });
  check(rate.status === 200, `setting a rate: ${JSON.stringify(rate)}`);

  await page.goto(base + "/#/wallet");
  // The server requires a key: the console asks for one before anything else works.
  await page.waitForSelector("#key-card", { state: "visible", timeout: 20000 });
  check((await page.textContent("#key-message")).includes("needs an API key"), "the console says why it asks");
  await page.fill("#api-key", process.env.KOPEK_API_KEY);
  await page.click("#key-form button");
  await page.waitForSelector("#key-card", { state: "hidden", timeout: 20000 });
  await page.fill("#user-id", "ui-user");
  await page.click("#open-form button");
  await balanceIs("0.00 USD");

  await page.fill("#topup-amount", "500");
  await page.click("#topup-form button");
  await balanceIs("500.00 USD");

  await page.fill("#transfer-to", "ui-friend");
  await page.fill("#transfer-amount", "25.50");
  await page.click("#transfer-form button");
  await balanceIs("474.50 USD");

  await page.fill("#order-amount", "100");
  await page.click("#order-form button");
  await page.waitForFunction(
    () => [...document.querySelectorAll("[data-testid=order-status]")].some((item) => item.textContent === "PAID"),
    null, { timeout: 20000 });
  await balanceIs("374.50 USD");
  await page.waitForFunction(() => document.querySelectorAll("#events li").length >= 3, null, { timeout: 20000 });
  await page.waitForFunction(() => document.querySelectorAll("#statement tbody tr").length === 3, null, { timeout: 20000 });

  // Convert and send: the live price follows the form (the server takes 50 bp), a locked quote
  // counts down, and Send pays exactly its terms into the payee's EUR account.
  const priceIs = async (text) => {
    try {
      await page.waitForFunction((want) => document.querySelector("#convert-price").textContent === want, text, { timeout: 20000 });
    } catch (error) {
      throw new Error(`the price shows "${await page.textContent("#convert-price")}", not "${text}"`);
    }
  };
  await page.fill("#convert-to", "ui-euro");
  await page.fill("#convert-currency", "EUR");
  await page.fill("#convert-amount", "100.00");
  await priceIs("100.00 USD ≈ 91.88 EUR");
  check((await page.textContent("#convert-terms")).includes("mid 0.9234 via USDEUR"), "the price shows the mid rate and path");
  check(await page.isDisabled("#convert-send"), "nothing can be sent before a quote is locked");
  await page.fill("#convert-amount", "10.00");
  await priceIs("10.00 USD ≈ 9.19 EUR");
  await page.fill("#convert-currency", "JPY");
  await page.waitForFunction(() => document.querySelector("#convert-price").textContent.startsWith("NOT_FOUND"), null, { timeout: 20000 });
  await page.fill("#convert-currency", "EUR");
  await page.fill("#convert-amount", "100.00");
  await page.click("#convert-lock");
  await priceIs("100.00 USD → 91.88 EUR");
  await page.waitForFunction(() => /holds for \d+ s/.test(document.querySelector("#convert-expiry").textContent), null, { timeout: 20000 });
  // The rate moves after the quote was locked: the quote's terms still hold.
  const moved = await api("PUT", "/v1/fx/rates/USD/EUR", { rate: "0.5" });
  check(moved.status === 200, `moving the rate: ${JSON.stringify(moved)}`);
  await page.click("#convert-send");
  await balanceIs("274.50 USD");
  await page.waitForFunction(() => document.querySelector("#convert-expiry").textContent === "sent: ui-euro got 91.88 EUR", null, { timeout: 20000 });
  check(await page.isDisabled("#convert-send"), "a used quote cannot be sent again");
  await page.waitForFunction(() => document.querySelectorAll("#statement tbody tr").length === 4, null, { timeout: 20000 });
  await priceIs("100.00 USD ≈ 49.75 EUR");

  // An order the balance cannot pay FAILS, and says why.
  await page.fill("#order-amount", "100000");
  await page.click("#order-form button");
  await page.waitForFunction(
    () => [...document.querySelectorAll("[data-testid=order-reason]")].some((item) => item.textContent.startsWith("INSUFFICIENT_FUNDS: balance 274.50 USD")),
    null, { timeout: 20000 });
  await balanceIs("274.50 USD");

  const width = await page.evaluate(() => document.documentElement.scrollWidth);
  check(width <= 390, `the page overflows a phone screen: ${width}px wide`);
  await page.screenshot({ path: screenshot, fullPage: true });

  const friend = (await api("GET", "/v1/accounts/user:ui-friend:USD")).body;
  check(friend.balance.posted === "25.50", `the friend has ${friend.balance.posted}`);
  const euro = (await api("GET", "/v1/accounts/user:ui-euro:EUR")).body;
  check(euro.balance.posted === "91.88" && euro.owner === "ui-euro", `the EUR payee: ${JSON.stringify(euro)}`);
  const spread = (await api("GET", "/v1/accounts/fx-revenue:EUR")).body;
  check(spread.balance.posted === "0.46", `the spread booked: ${JSON.stringify(spread)}`);
  check(problems.length === 0, `page errors: ${problems.join("; ")}`);
  console.log(`ui ok; screenshot ${screenshot}`);
} finally {
  await browser.close();
}
