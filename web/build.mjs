// Copies the web console's files into dist/, which the Go binary embeds:
// xterm.js and its fit addon from node_modules (installed from
// package-lock.json by `npm ci`), and the page's own files from src/.
import { copyFileSync, mkdirSync, readdirSync } from "node:fs";

mkdirSync("dist", { recursive: true });
const vendor = {
  "node_modules/@xterm/xterm/lib/xterm.js": "dist/xterm.js",
  "node_modules/@xterm/xterm/css/xterm.css": "dist/xterm.css",
  "node_modules/@xterm/addon-fit/lib/addon-fit.js": "dist/addon-fit.js",
};
for (const [from, to] of Object.entries(vendor)) copyFileSync(from, to);
for (const f of readdirSync("src")) copyFileSync(`src/${f}`, `dist/${f}`);
console.log("web console assets written to dist/");
