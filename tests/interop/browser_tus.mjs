// browser_tus.mjs — a real browser (Debian's chromium, driven by playwright-core) uploads with
// tus-js-client's browser bundle to chapard's HTTP face from another origin, the upload token in
// `headers: {Authorization: 'Bearer ' + token}`, as a messenger's web app would.
//
// A page is served from this process (http://127.0.0.1:PORT, port 0) and the relay is another
// origin (its own port), so every request is cross-origin: preflights, Authorization, exposed
// headers. Checks, each printed "ok   NAME" or "FAIL NAME (why)":
//   - with the token the upload completes (several PATCHes), its final response's
//     Chapar-File-Id reaches the page, and GET /f/<id> from here returns bytes whose SHA-256 is
//     the one the page computed over its Blob;
//   - without the header the page gets tus-js-client's error with the relay's 401 and its
//     `WWW-Authenticate: Bearer` challenge (readable cross-origin).
// Prints "N passed, N failed" last; exits 0 only when nothing failed.
// Usage: node browser_tus.mjs --endpoint http://HOST:PORT/files/ --token TOKEN
//          [--size BYTES] [--chunk-size BYTES] [--chromium PATH]
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { createServer } from "node:http";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { check, counts, launch } from "./browser_lib.mjs";

const here = dirname(fileURLToPath(import.meta.url));
const args = { size: "3145739", "chunk-size": "1048576", chromium: "/usr/bin/chromium" };
const argv = process.argv.slice(2);
for (let i = 0; i + 1 < argv.length; i += 2) args[argv[i].replace(/^--/, "")] = argv[i + 1];
if (!args.endpoint || !args.token) {
  process.stderr.write("usage: browser_tus.mjs --endpoint URL --token TOKEN [--size N]\n");
  process.exit(2);
}

// ---- the page's origin -----------------------------------------------------------------------

const tusBundle = readFileSync(join(here, "node_modules/tus-js-client/dist/tus.js"));
const page = `<!doctype html><meta charset="utf-8"><title>chapar tus upload</title>
<script src="/tus.js"></script>
<script>
function hex(buf) {
  return Array.from(new Uint8Array(buf), (b) => b.toString(16).padStart(2, "0")).join("");
}
// Uploads size random bytes as a Blob; resolves with what the page saw (never rejects).
window.runUpload = async (endpoint, token, size, chunkSize) => {
  const bytes = new Uint8Array(size);
  for (let i = 0; i < size; i += 65536)
    crypto.getRandomValues(bytes.subarray(i, Math.min(size, i + 65536)));
  const sha256 = hex(await crypto.subtle.digest("SHA-256", bytes));
  const blob = new Blob([bytes], { type: "application/octet-stream" });
  let fileId = null, patches = 0;
  return new Promise((resolve) => {
    const upload = new tus.Upload(blob, {
      endpoint,
      headers: token ? { Authorization: "Bearer " + token } : {},
      chunkSize,
      retryDelays: [],
      storeFingerprintForResuming: false,
      metadata: { filename: "blob.bin", filetype: "application/octet-stream" },
      onAfterResponse(req, res) {
        if (req.getMethod() === "PATCH") patches++;
        const f = res.getHeader("Chapar-File-Id");
        if (f) fileId = f;
      },
      onSuccess() {
        resolve({ ok: true, url: upload.url, fileId, sha256, patches, origin: location.origin });
      },
      onError(err) {
        const res = err.originalResponse;
        resolve({
          ok: false,
          message: String(err),
          status: res ? res.getStatus() : 0,
          challenge: res ? res.getHeader("WWW-Authenticate") : null,
          body: res ? res.getBody() : null,
          origin: location.origin,
        });
      },
    });
    upload.start();
  });
};
</script>`;

const server = createServer((req, res) => {
  if (req.url === "/tus.js") {
    res.writeHead(200, { "Content-Type": "text/javascript" });
    res.end(tusBundle);
  } else if (req.url === "/") {
    res.writeHead(200, { "Content-Type": "text/html; charset=utf-8" });
    res.end(page);
  } else {
    res.writeHead(404);
    res.end();
  }
});
await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
const pageOrigin = `http://127.0.0.1:${server.address().port}`;

// ---- the browser -----------------------------------------------------------------------------

let browser;
try {
  browser = await launch(args.chromium);
  const context = browser.context;
  const tab = context.pages()[0] ?? (await context.newPage());
  const consoleLines = [];
  tab.on("console", (m) => consoleLines.push(m.text()));
  await tab.goto(pageOrigin + "/");
  const size = Number(args.size);
  const chunk = Number(args["chunk-size"]);

  const good = await tab.evaluate(
    ([e, t, s, c]) => window.runUpload(e, t, s, c),
    [args.endpoint, args.token, size, chunk],
  );
  const relayOrigin = new URL(args.endpoint).origin;
  console.log(`# page ${good.origin}, relay ${relayOrigin}, ${size} B in chunks of ${chunk}`);
  check(
    `cross-origin (${good.origin} -> ${relayOrigin}): tus-js-client with Authorization completes`,
    good.ok && good.origin !== relayOrigin,
    good.ok ? `same origin ${good.origin}` : `${good.message}; console: ${consoleLines.join(" | ")}`,
  );
  if (good.ok) {
    check(
      `${good.patches} PATCHes, the last one's Chapar-File-Id read by the page`,
      good.patches >= Math.ceil(size / chunk) && /^[0-9a-f]{64}$/.test(good.fileId ?? ""),
      `patches ${good.patches}, file id ${good.fileId}`,
    );
    check(
      `the upload URL is on the relay (${good.url})`,
      typeof good.url === "string" && good.url.startsWith(relayOrigin + "/files/"),
    );
    if (good.fileId) {
      const res = await fetch(`${relayOrigin}/f/${good.fileId}`);
      const body = Buffer.from(await res.arrayBuffer());
      const got = createHash("sha256").update(body).digest("hex");
      console.log(`# GET /f/${good.fileId}: ${res.status}, ${body.length} B, sha256 ${got}`);
      check(
        "the relay stored the page's exact bytes (SHA-256 of GET /f/<id> = the Blob's)",
        res.status === 200 && body.length === size && got === good.sha256,
        `status ${res.status}, ${body.length} B, sha256 ${got}, page's ${good.sha256}`,
      );
    }
  }

  const none = await tab.evaluate(
    ([e, s, c]) => window.runUpload(e, null, s, c),
    [args.endpoint, 1000, chunk],
  );
  console.log(`# without Authorization: ${none.message?.split("\n")[0]}`);
  check(
    "without Authorization the page gets the 401 and its Bearer challenge",
    !none.ok && none.status === 401 && /^Bearer realm="chapar"/.test(none.challenge ?? ""),
    `ok ${none.ok}, status ${none.status}, challenge ${none.challenge}`,
  );
} catch (e) {
  check("the browser ran the page", false, String(e).split("\n")[0]);
} finally {
  if (browser) await browser.done();
  server.close();
}
console.log(`${counts.passed} passed, ${counts.failed} failed`);
process.exit(counts.failed === 0 && counts.passed > 0 ? 0 : 1);
