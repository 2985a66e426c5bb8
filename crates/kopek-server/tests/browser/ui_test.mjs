// Drives the web UI in headless Chromium at phone width against a server that requires API
// keys: give the key the console asks for, open an account, top up, transfer, place an order
// and see it become PAID live (over a WebSocket that carries the key), then save a
// screenshot.
// Run by the Rust test `browser::the_ui_works_in_a_real_browser`, which sets the variables.
import { createRequire } from "node:module";

const require = createRequire(process.env.PLAYWRIGHT_DIR + "/");
const { chromium } = require("playwright-core");
const base = process.env.KOPEK_HTTP_URL;
const screenshot = process.env.SCREENSHOT_PATH;

function check(condition, message) {
  if (!condition) throw new Error(message);
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--no-first-run", "--disable-sync", "--disable-quic"],
});
try {
  const page = await browser.newPage({ viewport: { width: 390, height: 844 } });
  const problems = [];
  page.on("pageerror", (error) => problems.push(error.message));
  const balanceIs = (text) =>
    page.waitForFunction((want) => document.querySelector("#balance").textContent === want, text, { timeout: 20000 });

  await page.goto(base + "/");
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

  const width = await page.evaluate(() => document.documentElement.scrollWidth);
  check(width <= 390, `the page overflows a phone screen: ${width}px wide`);
  await page.screenshot({ path: screenshot, fullPage: true });

  const headers = { Authorization: `Bearer ${process.env.KOPEK_API_KEY}` };
  const friend = await (await fetch(`${base}/v1/accounts/user:ui-friend:USD`, { headers })).json();
  check(friend.balance.posted === "25.50", `the friend has ${friend.balance.posted}`);
  check(problems.length === 0, `page errors: ${problems.join("; ")}`);
  console.log(`ui ok; screenshot ${screenshot}`);
} finally {
  await browser.close();
}
