// browser_lib.mjs — what the browser tests share: the "ok/FAIL" checks and chromium's launch.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";

export const counts = { passed: 0, failed: 0 };

// Prints "ok   NAME" or "FAIL NAME (why)" and counts it.
export function check(name, cond, why) {
  if (cond) {
    counts.passed++;
    console.log(`ok   ${name}`);
  } else {
    counts.failed++;
    console.log(`FAIL ${name}${why ? ` (${why})` : ""}`);
  }
}

// Debian's chromium (at path) in a fresh profile that makes no traffic of its own: the machine
// may have no network but loopback. Returns { context, done }: done() closes it and removes the
// profile.
export async function launch(path, options = {}) {
  const profile = mkdtempSync(join(tmpdir(), "chapar-chromium-"));
  const done = async (context) => {
    if (context) await context.close();
    rmSync(profile, { recursive: true, force: true });
  };
  try {
    const context = await chromium.launchPersistentContext(profile, {
      executablePath: path,
      headless: true,
      timeout: 20000,
      ...options,
      args: [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
      ],
    });
    return { context, done: () => done(context) };
  } catch (e) {
    await done(null);
    throw e;
  }
}
