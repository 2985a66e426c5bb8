// What the browser tests share: Debian's Chromium, launched headless through playwright-core
// (installed where PLAYWRIGHT_DIR says), and `check`.
import { createRequire } from "node:module";

const require = createRequire(process.env.PLAYWRIGHT_DIR + "/");
const { chromium } = require("playwright-core");

export function check(condition, message) {
  if (!condition) throw new Error(message);
}

export function launch() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    headless: true,
    args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
      "--no-first-run", "--disable-sync", "--disable-quic"],
  });
}
