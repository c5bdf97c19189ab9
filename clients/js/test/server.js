// A real `live serve` for the client's tests (the repository's server, `python -m live`), and
// tokens signed with its secret (HS256, minted here with node:crypto: the tests need neither
// the server's code nor a JWT library). The Python is $LIVE_PYTHON (default python3).

import { spawn } from "node:child_process";
import { createHmac, randomBytes } from "node:crypto";
import { mkdtempSync, openSync, readFileSync, closeSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

export const SECRET = "client-test-secret-" + "s".repeat(40);
export const REPO = resolve(dirname(fileURLToPath(import.meta.url)), "../../..");

const b64 = (raw) => Buffer.from(raw).toString("base64url");

/** A token as `live token` makes it. */
export function mint(user, role = "viewer", { room = "*", ttlS = 600 } = {}) {
  const now = Math.floor(Date.now() / 1000);
  const header = b64(JSON.stringify({ alg: "HS256", typ: "JWT" }));
  const claims = b64(JSON.stringify({ sub: user, room, role, iat: now, exp: now + ttlS }));
  const signature = createHmac("sha256", SECRET).update(`${header}.${claims}`).digest();
  return `${header}.${claims}.${b64(signature)}`;
}

export const newId = (prefix) => `${prefix}${randomBytes(5).toString("hex")}`;

function freePort() {
  return new Promise((resolvePort, reject) => {
    const probe = createServer();
    probe.on("error", reject);
    probe.listen(0, "127.0.0.1", () => {
      const { port } = probe.address();
      probe.close(() => resolvePort(port));
    });
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Poll `check` until it is truthy (generous deadline: the machine may be busy). */
export async function until(check, { timeoutMs = 20000, what = "the condition" } = {}) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(25);
  }
}

/** One `live serve` on a free port with its own data dir; restart() keeps both. */
export class Server {
  constructor() {
    this.dataDir = join(mkdtempSync(join(tmpdir(), "live-js-")), "data");
    this.logPath = `${this.dataDir}.log`;
    this.proc = null;
    this.port = null;
  }

  get url() {
    return `http://127.0.0.1:${this.port}`;
  }

  get wsUrl() {
    return `ws://127.0.0.1:${this.port}`;
  }

  async start() {
    if (this.port === null) this.port = await freePort();
    const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("LIVE_")));
    Object.assign(env, {
      LIVE_SECRET: SECRET,
      LIVE_LOG_LEVEL: "warning",
      LIVE_BUY_IP_BURST: "100000",
      LIVE_BUY_IP_RATE_PER_S: "100000",
      PYTHONPATH: [REPO, process.env.PYTHONPATH].filter(Boolean).join(":"),
    });
    const python = process.env.LIVE_PYTHON || "python3";
    const log = openSync(this.logPath, "a");
    this.proc = spawn(python, ["-m", "live", "serve", "--port", String(this.port), "--data-dir", this.dataDir], {
      env,
      cwd: REPO,
      stdio: ["ignore", log, log],
    });
    closeSync(log);
    const proc = this.proc;
    proc.exited = new Promise((r) => proc.once("exit", r));
    const deadline = Date.now() + 60000;
    while (Date.now() < deadline) {
      if (proc.exitCode !== null) throw new Error(`live serve exited ${proc.exitCode}:\n${this.logTail()}`);
      try {
        const response = await fetch(`${this.url}/readyz`, { signal: AbortSignal.timeout(2000) });
        if (response.status === 200) return;
      } catch {
        // not listening yet
      }
      await sleep(100);
    }
    throw new Error(`live serve not ready in 60 s:\n${this.logTail()}`);
  }

  async stop() {
    const proc = this.proc;
    if (!proc || proc.exitCode !== null || proc.signalCode !== null) return;
    proc.kill("SIGTERM");
    const killed = await Promise.race([proc.exited.then(() => false), sleep(30000).then(() => true)]);
    if (killed) {
      proc.kill("SIGKILL");
      await proc.exited;
    }
  }

  async restart() {
    await this.stop();
    await this.start();
  }

  logTail(lines = 30) {
    try {
      return readFileSync(this.logPath, "utf8").split("\n").slice(-lines).join("\n");
    } catch {
      return "(no log)";
    }
  }
}
