// Opens Horizon's serial console page (the one zun-ui shows for a
// container) in Debian's chromium and checks what a person sees in it: the
// shell's prompt after the carriage return the page sends on open, the
// answer to a typed command, characters of several bytes shown whole even
// when the container prints them a byte at a time, and the connection still
// open after the container printed bytes that are not UTF-8. The terminal's
// text is read from term.js's DOM, the status from the line under it.
// Saves a screenshot. Exit 0 when everything held.
//
// usage: node horizon.mjs PAGE_URL ARTIFACT_DIR
import { launch } from "./chromium.mjs";
import { mkdirSync } from "node:fs";
import { join } from "node:path";

const [url, artifacts] = process.argv.slice(2);
if (!url || !artifacts) {
  console.error("usage: node horizon.mjs PAGE_URL ARTIFACT_DIR");
  process.exit(2);
}
mkdirSync(artifacts, { recursive: true });

const browser = await launch();
let failed = false;
const page = await browser.newPage({ viewport: { width: 900, height: 560 } });
// The console URL's token stays out of the output.
const redact = (s) => String(s).replace(/token=[^&'"\s]*/g, "token=…");
page.on("console", (m) => console.log("page:", redact(m.text())));
page.on("pageerror", (e) => console.log("page error:", redact(e.message)));
let text = 0, binary = 0; // messages from the proxy, by type
page.on("websocket", (ws) => {
  console.log(`websocket opened: ${redact(ws.url())}`);
  ws.on("framereceived", (f) => (typeof f.payload === "string" ? text++ : binary++));
  ws.on("socketerror", (e) => console.log(`websocket error: ${redact(e)}`));
  ws.on("close", () => console.log(`websocket closed after ${text} text and ${binary} binary messages from the proxy`));
});

// screen is the terminal's text as term.js draws it: one div per row.
const screen = () => page.evaluate(() =>
  Array.from(document.querySelectorAll(".terminal > div"), (row) => row.textContent.replace(/\u00a0/g, " ").trimEnd()).join("\n"));
// status is the line the directive writes under the terminal.
const status = () => page.evaluate(() => document.querySelector("serial-console").lastChild.textContent.trim());

async function waitScreen(re, what) {
  const deadline = Date.now() + 10000;
  while (Date.now() < deadline) {
    const m = (await screen()).match(re);
    if (m) return m;
    if ((await status()) === "Status: Closed") break;
    await page.waitForTimeout(50);
  }
  throw new Error(`${what}: not on screen (${await status()}); screen was:\n${await screen()}`);
}
async function expectOpen(when) {
  const s = await status();
  if (s !== "Status: Open") throw new Error(`${when}: the page shows "${s}", want "Status: Open"; screen was:\n${await screen()}`);
}
async function type(text) {
  await page.keyboard.type(text, { delay: 2 });
  await page.keyboard.press("Enter");
}

try {
  await page.goto(url);
  await page.waitForFunction(() => {
    const el = document.querySelector("serial-console");
    return el && /Status: (Open|Closed)/.test(el.lastChild.textContent);
  }, null, { timeout: 10000 });
  await expectOpen("after loading the page");

  // The page sends a carriage return on open; the shell answers with a new
  // prompt on the next row (its own echo of the return moves down a row).
  await waitScreen(/\n.*zun-prompt#$/m, "the prompt after the page's carriage return");
  console.log("the shell's prompt is on screen after the page's carriage return");

  await page.click(".terminal");
  await type("echo $((6*7))");
  await waitScreen(/^42$/m, "the answer 42");
  await expectOpen("after a command");
  console.log("typed echo $((6*7)) and saw 42");

  // Each byte of €, é and 中 in its own write, with pauses, so Docker
  // reads and sends the characters in pieces.
  await type(String.raw`printf 'mb:\342'; usleep 50000; printf '\202\254 \303'; usleep 50000; printf '\251 \344'; usleep 50000; printf '\270'; usleep 50000; printf '\255:end\n'`);
  const [line] = await waitScreen(/^mb:.*:end$/m, "the multi-byte line");
  if (line.replace(/ +/g, " ") !== "mb:€ é 中:end") {
    throw new Error(`multi-byte output shows as ${JSON.stringify(line)}, want "mb:€ é 中:end"`);
  }
  if ((await screen()).includes("\ufffd")) throw new Error(`replacement characters on screen:\n${await screen()}`);
  await expectOpen("after multi-byte output");
  console.log(`multi-byte output printed a byte at a time shows whole: ${line}`);

  // Bytes that are not UTF-8, then more output: the connection stays open
  // and what follows still shows.
  await type(String.raw`printf 'bad:\377\376:'; echo after-$((2+3))`);
  await waitScreen(/^bad:.*:after-5$/m, "the output after bytes that are not UTF-8");
  await expectOpen("after bytes that are not UTF-8");
  await type("echo still-$((3*3))");
  await waitScreen(/^still-9$/m, "a command after bytes that are not UTF-8");
  await expectOpen("after a command that followed bytes that are not UTF-8");
  console.log(`after bytes that are not UTF-8 the page shows "${await status()}" and later output`);
  console.log(`the proxy sent ${text} text and ${binary} binary messages`);
  await page.screenshot({ path: join(artifacts, "horizon-console.png") });
} catch (e) {
  failed = true;
  console.error("FAIL:", e.message);
  await page.screenshot({ path: join(artifacts, "horizon-console-failure.png") }).catch(() => {});
} finally {
  await browser.close();
}
process.exit(failed ? 1 : 0);
