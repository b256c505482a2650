// Opens zun-wsproxy's web console in Debian's chromium, as a person would:
// types a command and reads the answer on screen, resizes the window and
// checks the container's terminal followed, ends the container and checks
// the page says so. Saves screenshots. Exit 0 when everything held.
//
// usage: node console.mjs CONSOLE_URL ARTIFACT_DIR [--used-token]
// With --used-token it checks instead that the page explains why a token
// that was already used cannot connect.
import { launch } from "./chromium.mjs";
import { mkdirSync } from "node:fs";
import { join } from "node:path";

const [url, artifacts, mode] = process.argv.slice(2);
if (!url || !artifacts) {
  console.error("usage: node console.mjs CONSOLE_URL ARTIFACT_DIR");
  process.exit(2);
}
mkdirSync(artifacts, { recursive: true });

const browser = await launch();
let failed = false;
const page = await browser.newPage({ viewport: { width: 900, height: 500 } });
page.on("console", (m) => console.log("page:", m.text()));

// screen returns the terminal's visible text, read through xterm's buffer.
const screen = () => page.evaluate(() => {
  const t = window.zunConsole.term;
  const b = t.buffer.active;
  const lines = [];
  for (let i = 0; i < b.length; i++) lines.push(b.getLine(i).translateToString(true));
  return lines.join("\n");
});
const size = () => page.evaluate(() => [window.zunConsole.term.rows, window.zunConsole.term.cols]);
async function waitScreen(re, what) {
  const deadline = Date.now() + 15000;
  while (Date.now() < deadline) {
    const m = (await screen()).match(re);
    if (m) return m;
    await page.waitForTimeout(100);
  }
  throw new Error(`${what}: not on screen; screen was:\n${await screen()}`);
}
async function type(text) {
  await page.keyboard.type(text, { delay: 5 });
  await page.keyboard.press("Enter");
}

try {
  await page.goto(url);
  if (mode === "--used-token") {
    await page.waitForSelector('#state[data-state="failed"]', { timeout: 15000 });
    const state = await page.textContent("#state");
    if (!state.includes("invalid, expired or used up")) throw new Error(`failure state: ${state}`);
    console.log(`page shows: ${state}`);
    await page.screenshot({ path: join(artifacts, "console-used-token.png") });
    await browser.close();
    process.exit(0);
  }
  await page.waitForSelector('#state[data-state="connected"]', { timeout: 15000 });
  if (new URL(page.url()).search.includes("token")) throw new Error("the token stays in the address bar");

  // The page's policy lets it open WebSockets to its own origin (the
  // console's, just connected) and to no other.
  const elsewhere = `ws://127.0.0.2:${new URL(url).port || 80}/`;
  const blocked = await page.evaluate((target) => new Promise((resolve) => {
    const timer = setTimeout(() => resolve(""), 3000);
    document.addEventListener("securitypolicyviolation", (e) => {
      clearTimeout(timer);
      resolve(e.effectiveDirective);
    }, { once: true });
    try { new WebSocket(target); } catch (e) { /* refused at once: the event says why */ }
  }), elsewhere);
  if (blocked !== "connect-src") throw new Error(`a WebSocket to ${elsewhere} was not refused by connect-src`);
  console.log(`a WebSocket to ${elsewhere} was refused by connect-src`);
  await page.click("#terminal");

  await type("echo hello-$((6*7))");
  await waitScreen(/^hello-42$/m, "echo hello-42");
  console.log("typed a command and saw hello-42");

  // The terminal's size reaches the container's tty.
  let [rows, cols] = await size();
  await type("stty size");
  await waitScreen(new RegExp(`^${rows} ${cols}$`, "m"), `stty size ${rows} ${cols}`);
  await page.setViewportSize({ width: 1300, height: 760 });
  await page.waitForFunction(([r, c]) => {
    const t = window.zunConsole.term;
    return t.rows !== r || t.cols !== c;
  }, [rows, cols], { timeout: 10000 });
  const [rows2, cols2] = await size();
  // The resize message travels to Docker beside the typing: ask again
  // until the terminal's new size has arrived there.
  const resized = new RegExp(`^${rows2} ${cols2}$`, "m");
  const deadline = Date.now() + 15000;
  do {
    await type("clear; stty size");
    await waitScreen(/^\d+ \d+$/m, "stty size");
  } while (!(await screen()).match(resized) && Date.now() < deadline);
  await waitScreen(resized, `stty size after resize ${rows2} ${cols2}`);
  console.log(`terminal resized from ${rows}x${cols} to ${rows2}x${cols2}, and stty size followed`);
  await page.screenshot({ path: join(artifacts, "console.png") });

  // The container's main process exits: the page says the session ended.
  await type("exit");
  await page.waitForSelector('#state[data-state="ended"]', { timeout: 15000 });
  const state = await page.textContent("#state");
  if (!state.includes("container exited")) throw new Error(`end state: ${state}`);
  console.log(`page shows: ${state}`);
  await page.screenshot({ path: join(artifacts, "console-ended.png") });
} catch (e) {
  failed = true;
  console.error("FAIL:", e.message);
  await page.screenshot({ path: join(artifacts, "console-failure.png") }).catch(() => {});
} finally {
  await browser.close();
}
process.exit(failed ? 1 : 0);
