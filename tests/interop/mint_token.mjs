// mint_token.mjs — mints a chapar upload token from docs/tokens.md alone, with node:crypto: no
// chapar code, no npm package. The proof that a backend in another language can mint tokens.
//
// Usage: node mint_token.mjs --seed HEX64 --tenant NAME --subject S --token-id HEX32
//          --issued-at UNIX --ttl SECONDS --bytes N --files N --file-life SECONDS
//          --scope upload[,offer][,pull] (--audience-key HEX64 | --audience-name NAME)
//          [--file-id HEX64] [--kid HEX16] [--fields]
// Prints the token (or, with --fields, the hex of FIELDS and of the signature, one a line).
import { createHash, createPrivateKey, createPublicKey, sign } from "node:crypto";

function usage(msg) {
  process.stderr.write(`mint_token.mjs: ${msg}\n`);
  process.exit(2);
}

const args = {};
const argv = process.argv.slice(2);
for (let i = 0; i < argv.length; i++) {
  const a = argv[i];
  if (!a.startsWith("--")) usage(`unexpected ${a}`);
  if (a === "--fields") args.fields = true;
  else if (i + 1 < argv.length) args[a.slice(2)] = argv[++i];
  else usage(`${a} needs a value`);
}

function hex(name, bytes) {
  const v = args[name];
  if (v === undefined || !new RegExp(`^[0-9a-f]{${2 * bytes}}$`).test(v))
    usage(`--${name} must be ${2 * bytes} lowercase hex digits`);
  return Buffer.from(v, "hex");
}
function uint(name, bits) {
  const v = args[name];
  if (v === undefined || !/^(0|[1-9][0-9]*)$/.test(v)) usage(`--${name} must be a number`);
  const n = BigInt(v);
  if (n >= 1n << BigInt(bits)) usage(`--${name} is over ${bits} bits`);
  return n;
}
function le(n, bytes) { // little-endian, as the spec's integers
  const b = Buffer.alloc(bytes);
  for (let i = 0; i < bytes; i++) b[i] = Number((n >> BigInt(8 * i)) & 0xffn);
  return b;
}
function str(name, re) { // u8 length, then the bytes
  const v = args[name];
  if (v === undefined || !re.test(v)) usage(`--${name} does not match ${re}`);
  return Buffer.concat([Buffer.from([v.length]), Buffer.from(v, "ascii")]);
}

const NAME = /^[a-z0-9._-]{1,63}$/;
const SUBJECT = /^[A-Za-z0-9._~-]{1,64}$/;
const SCOPES = { upload: 1, offer: 2, pull: 4 };

// the key: an Ed25519 private key from its 32-byte seed (PKCS#8 DER with the seed at the end)
const seed = hex("seed", 32);
const pkcs8 = Buffer.concat([Buffer.from("302e020100300506032b657004220420", "hex"), seed]);
const priv = createPrivateKey({ key: pkcs8, format: "der", type: "pkcs8" });
const pub = createPublicKey(priv).export({ format: "jwk" });
const pubBytes = Buffer.from(pub.x, "base64url");
// the key id: the first 8 bytes of SHA-256(public key), unless the backend chose its own
const kid = args.kid !== undefined ? hex("kid", 8)
  : createHash("sha256").update(pubBytes).digest().subarray(0, 8);

let scopes = 0;
for (const s of (args.scope ?? "").split(",")) {
  if (!(s in SCOPES)) usage(`unknown scope "${s}"`);
  scopes |= SCOPES[s];
}
const issued = uint("issued-at", 64);
const expires = issued + uint("ttl", 64);
if (expires >= 1n << 64n) usage("expiry is over 64 bits");

let audience;
if (args["audience-key"] !== undefined)
  audience = Buffer.concat([Buffer.from([1]), hex("audience-key", 32)]);
else if (args["audience-name"] !== undefined)
  audience = Buffer.concat([Buffer.from([2]), str("audience-name", NAME)]);
else usage("--audience-key or --audience-name is needed");

const fileId = args["file-id"] !== undefined
  ? Buffer.concat([Buffer.from([1]), hex("file-id", 32)]) : Buffer.from([0]);

const fields = Buffer.concat([
  Buffer.from([1, scopes]),       // version, scopes
  kid,                            // key id, 8 bytes
  hex("token-id", 16),            // token id, 16 bytes
  le(issued, 8), le(expires, 8),  // issued_at, expires_at
  le(uint("bytes", 64), 8),       // max_bytes
  le(uint("files", 32), 4),       // max_files
  le(uint("file-life", 32), 4),   // max_file_life
  audience,
  str("tenant", NAME),
  str("subject", SUBJECT),
  fileId,
]);
const message = Buffer.concat([Buffer.from("chapar upload token v1\0", "ascii"), fields]);
const sig = sign(null, message, priv); // Ed25519 takes no digest name
if (args.fields) {
  process.stdout.write(`${fields.toString("hex")}\n${sig.toString("hex")}\n`);
} else {
  // base64url without padding: Node's "base64url" never pads
  process.stdout.write(`${Buffer.concat([fields, sig]).toString("base64url")}\n`);
}
