// Copies xterm.js and its fit addon from node_modules (installed from
// package-lock.json by `npm ci`) into dist/, which the Go binary embeds
// beside the page's own files in src/.
import { copyFileSync, mkdirSync } from "node:fs";

mkdirSync("dist", { recursive: true });
const vendor = {
  "node_modules/@xterm/xterm/lib/xterm.js": "dist/xterm.js",
  "node_modules/@xterm/xterm/css/xterm.css": "dist/xterm.css",
  "node_modules/@xterm/addon-fit/lib/addon-fit.js": "dist/addon-fit.js",
};
for (const [from, to] of Object.entries(vendor)) copyFileSync(from, to);
console.log("xterm.js assets written to dist/");
