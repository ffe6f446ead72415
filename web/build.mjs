// Bundles the page into dist/: index.html, app.js and app.css, nothing else.
// Deterministic for a given lockfile: no source maps, no timestamps, no
// hashes, so `make web-check` can compare dist/ byte for byte.
import { build } from "esbuild";
import { copyFile, mkdir, readdir, rm } from "node:fs/promises";

const dist = new URL("./dist/", import.meta.url);
await rm(dist, { recursive: true, force: true });
await mkdir(dist, { recursive: true });

const common = {
  bundle: true,
  minify: true,
  sourcemap: false,
  legalComments: "eof",
  charset: "utf8",
  logLevel: "warning",
};
await build({
  ...common,
  entryPoints: ["src/main.ts"],
  outfile: "dist/app.js",
  format: "iife",
  target: ["es2020", "chrome100", "firefox100", "safari15"],
  platform: "browser",
});
await build({
  ...common,
  entryPoints: ["src/app.css"],
  outfile: "dist/app.css",
  target: ["chrome100", "firefox100", "safari15"],
});
await copyFile(new URL("./src/index.html", import.meta.url), new URL("index.html", dist));

const files = (await readdir(dist)).sort();
const expected = ["app.css", "app.js", "index.html"];
if (files.join() !== expected.join()) {
  throw new Error(`dist/ should hold exactly ${expected.join(", ")}, not ${files.join(", ")}`);
}
