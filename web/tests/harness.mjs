// What the browser tests start and stop: the real equipoise server on a free
// loopback port with a temporary data directory, its CLI (tokens, trial
// set-up), and Debian's Chromium driven by playwright-core over CDP.
import { execFile, spawn } from "node:child_process";
import { createHmac } from "node:crypto";
import { once } from "node:events";
import { createWriteStream, existsSync } from "node:fs";
import { mkdir, mkdtemp, readFile, rm } from "node:fs/promises";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { chromium } from "playwright-core";

const run = promisify(execFile);

export const repoRoot = fileURLToPath(new URL("../../", import.meta.url));
export const outputDir = fileURLToPath(new URL("../test-output/", import.meta.url));
export const screenshotsDir = fileURLToPath(new URL("../screenshots/", import.meta.url));
export const bin = process.env.EQUIPOISE_BIN || join(repoRoot, "target/debug/equipoise");
export const chromiumPath = process.env.CHROMIUM_BIN || "/usr/bin/chromium";

/** Chromium's flags: headless, and nothing that reaches beyond loopback. */
export const CHROMIUM_FLAGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];

/** A loopback port nobody listens on right now. */
export async function freePort() {
  const server = createServer();
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const { port } = server.address();
  server.close();
  await once(server, "close");
  return port;
}

/** The environment of every equipoise process: none of ours leaks in. */
function environment(dataDir, port) {
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("EQUIPOISE_")));
  return {
    ...env,
    EQUIPOISE_DATA_DIR: dataDir,
    EQUIPOISE_LISTEN: `127.0.0.1:${port}`,
    EQUIPOISE_LOG_FORMAT: "text",
    EQUIPOISE_DRAIN_DELAY_MS: "0",
    RUST_LOG: process.env.RUST_LOG || "warn",
    OTEL_SDK_DISABLED: "true",
  };
}

/** The real server, `serve --target all`, in its own temporary data dir. */
export class Server {
  static async start() {
    if (!existsSync(bin)) {
      throw new Error(`no equipoise binary at ${bin}: run \`cargo build -p equipoise\` first, or set EQUIPOISE_BIN`);
    }
    const dataDir = await mkdtemp(join(tmpdir(), "equipoise-web-"));
    const server = new Server(dataDir, await freePort());
    await server.spawn();
    return server;
  }

  constructor(dataDir, port) {
    this.dataDir = dataDir;
    this.port = port;
    this.url = `http://127.0.0.1:${port}`;
    this.child = null;
    this.exited = null;
  }

  async spawn() {
    await mkdir(outputDir, { recursive: true });
    const log = createWriteStream(join(outputDir, "server.log"), { flags: "a" });
    this.child = spawn(bin, ["serve", "--target", "all"], {
      env: environment(this.dataDir, this.port),
      stdio: ["ignore", "pipe", "pipe"],
    });
    this.child.stdout.pipe(log);
    this.child.stderr.pipe(log);
    this.exited = once(this.child, "exit");
    // Ready when the page itself is served.
    const deadline = Date.now() + 120_000;
    for (;;) {
      if (this.child.exitCode !== null || this.child.signalCode !== null) {
        throw new Error(`equipoise serve exited during start-up (${this.child.exitCode ?? this.child.signalCode}); see ${join(outputDir, "server.log")}`);
      }
      try {
        const response = await fetch(`${this.url}/`);
        if (response.ok) return;
      } catch {
        // not listening yet
      }
      if (Date.now() > deadline) throw new Error(`equipoise serve did not serve / within 120 s on ${this.url}`);
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
  }

  get running() {
    return this.child !== null && this.child.exitCode === null && this.child.signalCode === null;
  }

  /** SIGKILL: the server goes away mid-conversation. */
  async kill() {
    if (!this.running) return;
    this.child.kill("SIGKILL");
    await this.exited;
  }

  async stop() {
    if (this.running) {
      this.child.kill("SIGTERM");
      const timer = setTimeout(() => this.child.kill("SIGKILL"), 15_000);
      await this.exited;
      clearTimeout(timer);
    }
    await rm(this.dataDir, { recursive: true, force: true });
  }

  /** `equipoise <args>` against this server's data dir and address. */
  async cli(args) {
    try {
      const { stdout } = await run(bin, args, { env: environment(this.dataDir, this.port), maxBuffer: 16 << 20 });
      return stdout;
    } catch (error) {
      throw new Error(`equipoise ${args.join(" ")} failed: ${error.stderr || error.message}`);
    }
  }

  async client(token, args) {
    return this.cli(["client", "--endpoint", this.url, "--token", token, ...args]);
  }

  /** A development token from `equipoise token mint`. */
  async mint({ sub, name, roles, sites = [], trials = ["RESPINE"] }) {
    const args = ["token", "mint", "--sub", sub];
    if (name) args.push("--name", name);
    for (const role of roles) args.push("--role", role);
    for (const site of sites) args.push("--site", site);
    for (const trial of trials) args.push("--trial", trial);
    return (await this.cli(args)).trim();
  }

  /** The same token with claims changed, signed again with the data dir's
   *  development HMAC secret: e.g. an `auth_time` from long ago. */
  async resign(token, changes) {
    const secret = Buffer.from((await readFile(join(this.dataDir, "dev-hmac.secret"), "utf8")).trim(), "hex");
    const [header, payload] = token.split(".");
    const claims = { ...JSON.parse(Buffer.from(payload, "base64url").toString("utf8")), ...changes };
    const body = `${header}.${Buffer.from(JSON.stringify(claims)).toString("base64url")}`;
    const signature = createHmac("sha256", secret).update(body).digest("base64url");
    return `${body}.${signature}`;
  }
}

/** The arms of a trial definition: ids and labels, as the YAML states them. */
export async function armsOf(path) {
  const yaml = await readFile(path, "utf8");
  return [...yaml.matchAll(/\{\s*id:\s*([A-Za-z0-9_-]+),\s*label:\s*"([^"]+)"/g)].map(([, id, label]) => ({ id, label }));
}

export async function launchBrowser() {
  if (!existsSync(chromiumPath)) {
    throw new Error(`no Chromium at ${chromiumPath}: run scripts/ensure-browser.sh (as root it installs Debian's chromium)`);
  }
  // playwright-core gives every launch a fresh temporary --user-data-dir of
  // its own and removes it on close.
  return chromium.launch({
    executablePath: chromiumPath,
    headless: true,
    args: CHROMIUM_FLAGS.filter((f) => f !== "--headless"),
    timeout: 60_000,
  });
}

/** Every response body a page receives, gRPC-Web streams included, as
 *  Chromium's network layer saw it (CDP), for looking for what must not be
 *  there. */
export async function recordResponses(page) {
  const cdp = await page.context().newCDPSession(page);
  await cdp.send("Network.enable", { maxTotalBufferSize: 64 << 20, maxResourceBufferSize: 16 << 20 });
  const entries = new Map();
  cdp.on("Network.responseReceived", ({ requestId, response }) => {
    const entry = { url: response.url, type: response.mimeType, chunks: [], streamed: false };
    entries.set(requestId, entry);
    if (/grpc-web/.test(response.headers["content-type"] ?? response.mimeType ?? "")) {
      // Streamed as it arrives: a watch never finishes loading.
      entry.streaming = cdp
        .send("Network.streamResourceContent", { requestId })
        .then(({ bufferedData }) => {
          entry.streamed = true;
          entry.chunks.push(Buffer.from(bufferedData, "base64"));
        })
        .catch(() => {});
    }
  });
  cdp.on("Network.dataReceived", ({ requestId, data }) => {
    const entry = entries.get(requestId);
    if (entry && data) entry.chunks.push(Buffer.from(data, "base64"));
  });
  cdp.on("Network.loadingFinished", async ({ requestId }) => {
    const entry = entries.get(requestId);
    if (!entry) return;
    await entry.streaming;
    if (entry.streamed) return;
    try {
      const { body, base64Encoded } = await cdp.send("Network.getResponseBody", { requestId });
      entry.chunks.push(Buffer.from(body, base64Encoded ? "base64" : "utf8"));
    } catch {
      // gone with its page
    }
  });
  return {
    all: () => [...entries.values()].map((e) => ({ url: e.url, body: Buffer.concat(e.chunks) })),
  };
}

/** What a page keeps anywhere but its memory: storage, cookies, IndexedDB, URL. */
export async function persisted(page) {
  const inPage = await page.evaluate(async () => {
    const dump = (storage) => {
      const out = [];
      for (let i = 0; i < storage.length; i++) {
        const key = storage.key(i);
        out.push(`${key}=${storage.getItem(key)}`);
      }
      return out.join("\n");
    };
    const databases = indexedDB.databases ? (await indexedDB.databases()).map((d) => d.name) : [];
    return {
      localStorage: dump(window.localStorage),
      sessionStorage: dump(window.sessionStorage),
      cookie: document.cookie,
      indexedDB: databases.join(","),
      url: window.location.href,
    };
  });
  const cookies = (await page.context().cookies()).map((c) => `${c.name}=${c.value}`).join("; ");
  return { ...inPage, contextCookies: cookies };
}

/** Everything the page shows or holds in its DOM, form values included. */
export async function pageText(page) {
  return page.evaluate(() => {
    const values = [...document.querySelectorAll("input, textarea, select")].map((e) => e.value);
    return [document.documentElement.outerHTML, document.body.innerText, ...values].join("\n");
  });
}

export async function screenshot(page, name) {
  await mkdir(outputDir, { recursive: true });
  const path = join(outputDir, `${name}.png`);
  await page.screenshot({ path, fullPage: true });
  return path;
}
