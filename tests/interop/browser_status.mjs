// browser_status.mjs — the admin face's status page (GET / on --admin-listen) rendered in a real
// browser (Debian's chromium, driven by playwright-core), as an operator would open it.
//
// Checks, each printed "ok   NAME" or "FAIL NAME (why)":
//   - without the operator key the page is 401;
//   - with it (an Authorization: Bearer header on every request) the page loads (200, HTML), a
//     full-page PNG screenshot is written to --screenshot;
//   - the numbers read from the rendered DOM (innerText, what a person sees) are the expected
//     ones: the store's file count (#store), each expected tenant's files and bytes (the rows of
//     #tenants), and each expected refusal counter (#refused-REASON); the uptime (#uptime) and
//     the throughput (#throughput) are shown as numbers.
// Prints "N passed, N failed" last; exits 0 only when nothing failed.
// Usage: node browser_status.mjs --url http://HOST:PORT/ --key HEX --screenshot FILE.png
//          --files N [--tenant NAME=FILES:BYTES]... [--refused REASON=N]... [--chromium PATH]
import { check, counts, launch } from "./browser_lib.mjs";

const args = { chromium: "/usr/bin/chromium", tenant: [], refused: [] };
const argv = process.argv.slice(2);
for (let i = 0; i + 1 < argv.length; i += 2) {
  const k = argv[i].replace(/^--/, "");
  if (Array.isArray(args[k])) args[k].push(argv[i + 1]);
  else args[k] = argv[i + 1];
}
if (!args.url || !args.key || !args.screenshot || args.files === undefined) {
  process.stderr.write("usage: browser_status.mjs --url URL --key HEX --screenshot FILE --files N\n");
  process.exit(2);
}

let browser;
try {
  browser = await launch(args.chromium, { viewport: { width: 1000, height: 800 } });
  const context = browser.context;
  const tab = context.pages()[0] ?? (await context.newPage());

  const anon = await tab.goto(args.url);
  check(`without the key: ${anon?.status()}`, anon?.status() === 401);

  await context.setExtraHTTPHeaders({ Authorization: `Bearer ${args.key}` });
  const res = await tab.goto(args.url);
  check(
    `with the key: ${res?.status()} ${res?.headers()["content-type"]}`,
    res?.status() === 200 && /^text\/html/.test(res?.headers()["content-type"] ?? ""),
  );
  await tab.screenshot({ path: args.screenshot, fullPage: true });
  check(`screenshot written to ${args.screenshot}`, true);

  const text = async (sel) => (await tab.locator(sel).first().innerText()).trim();
  const title = await tab.title();
  check(`title: ${title}`, title === "chapard status");
  const store = await text("#store");
  const m = /^(\d+) files/.exec(store);
  check(`store: "${store}" (want ${args.files} files)`, m && m[1] === String(args.files));
  const uptime = await text("#uptime");
  check(`uptime shown: "${uptime}"`, /^\d+ s$/.test(uptime));
  const tput = await text("#throughput");
  check(`throughput shown: "${tput}"`, /^\d+ bytes\/s$/.test(tput));
  const rows = await tab.$$eval("#tenants tr", (trs) =>
    trs.slice(1).map((tr) => Array.from(tr.cells, (td) => td.innerText.trim())),
  );
  for (const want of args.tenant) {
    const [name, rest] = want.split("=");
    const [files, bytes] = rest.split(":");
    const row = rows.find((r) => r[0] === name);
    check(
      `tenant ${name}: ${row ? `${row[1]} files, ${row[2]} bytes` : "no row"} (want ${files}, ${bytes})`,
      row && row[1] === files && row[2] === bytes,
    );
  }
  for (const want of args.refused) {
    const [reason, n] = want.split("=");
    const got = await text(`#refused-${reason}`);
    check(`refusals ${reason}: ${got} (want ${n})`, got === n);
  }
} catch (e) {
  check("the browser ran", false, e.message.split("\n")[0]);
} finally {
  if (browser) await browser.done();
}
console.log(`${counts.passed} passed, ${counts.failed} failed`);
process.exit(counts.failed ? 1 : 0);
