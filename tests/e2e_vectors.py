#!/usr/bin/env python3
"""e2e_vectors.py — the known answers of chapar's E2E format v2 (common/e2e.h), computed without
libsodium: BLAKE2b from Python's hashlib, XChaCha20-Poly1305-IETF written out below from its
specifications (RFC 8439 for ChaCha20, Poly1305 and the AEAD; draft-irtf-cfrg-xchacha for
HChaCha20 and the 24-byte nonce). The primitives are first checked against the specifications'
own test vectors (and, when the `cryptography` package is installed, against OpenSSL on random
inputs); then the chapar vectors are computed and compared with the constants test_e2e.c pins
libchapar to, so those constants do not come from the code they test.

Usage: e2e_vectors.py TEST_E2E_C   compare with the V_* constants in that file (exit 0 or 1)
       e2e_vectors.py --print      print the constants in C form
"""
import hashlib
import os
import re
import sys

M32 = 0xFFFFFFFF


def rotl(v, c):
    return ((v << c) & M32) | (v >> (32 - c))


def words(b):
    return [int.from_bytes(b[i:i + 4], "little") for i in range(0, len(b), 4)]


def pack(ws):
    return b"".join(w.to_bytes(4, "little") for w in ws)


def rounds(state):
    """The 20 ChaCha rounds (RFC 8439 2.1-2.3) over a copy of state, no feed-forward."""
    x = list(state)

    def qr(a, b, c, d):
        x[a] = (x[a] + x[b]) & M32
        x[d] = rotl(x[d] ^ x[a], 16)
        x[c] = (x[c] + x[d]) & M32
        x[b] = rotl(x[b] ^ x[c], 12)
        x[a] = (x[a] + x[b]) & M32
        x[d] = rotl(x[d] ^ x[a], 8)
        x[c] = (x[c] + x[d]) & M32
        x[b] = rotl(x[b] ^ x[c], 7)

    for _ in range(10):
        qr(0, 4, 8, 12)
        qr(1, 5, 9, 13)
        qr(2, 6, 10, 14)
        qr(3, 7, 11, 15)
        qr(0, 5, 10, 15)
        qr(1, 6, 11, 12)
        qr(2, 7, 8, 13)
        qr(3, 4, 9, 14)
    return x


SIGMA = words(b"expand 32-byte k")


def chacha20_block(key, counter, nonce12):
    state = SIGMA + words(key) + [counter] + words(nonce12)
    return pack([(a + b) & M32 for a, b in zip(rounds(state), state)])


def chacha20_xor(key, counter, nonce12, data):
    out = bytearray()
    for i in range(0, len(data), 64):
        ks = chacha20_block(key, counter + i // 64, nonce12)
        out += bytes(a ^ b for a, b in zip(data[i:i + 64], ks))
    return bytes(out)


def hchacha20(key, nonce16):
    x = rounds(SIGMA + words(key) + words(nonce16))
    return pack(x[0:4] + x[12:16])


def poly1305(key32, msg):
    r = int.from_bytes(key32[:16], "little") & 0x0FFFFFFC0FFFFFFC0FFFFFFC0FFFFFFF
    s = int.from_bytes(key32[16:], "little")
    p = (1 << 130) - 5
    acc = 0
    for i in range(0, len(msg), 16):
        acc = (acc + int.from_bytes(msg[i:i + 16] + b"\x01", "little")) * r % p
    return ((acc + s) & ((1 << 128) - 1)).to_bytes(16, "little")


def pad16(b):
    return b"\x00" * (-len(b) % 16)


def aead_encrypt(key, nonce12, plain, ad):
    """ChaCha20-Poly1305 (RFC 8439 2.8): ciphertext || tag."""
    otk = chacha20_block(key, 0, nonce12)[:32]
    ct = chacha20_xor(key, 1, nonce12, plain)
    mac = ad + pad16(ad) + ct + pad16(ct) + len(ad).to_bytes(8, "little") + \
        len(ct).to_bytes(8, "little")
    return ct + poly1305(otk, mac)


def xaead_encrypt(key, nonce24, plain, ad):
    """XChaCha20-Poly1305-IETF: HChaCha20 subkey, nonce 0000 || nonce24[16:]."""
    return aead_encrypt(hchacha20(key, nonce24[:16]), b"\x00" * 4 + nonce24[16:], plain, ad)


def kdf(key, subkey_id, context, n=32):
    """libsodium's crypto_kdf_derive_from_key: BLAKE2b keyed with the master key, salt = the id
    (u64 LE, zero-padded to 16), personal = the 8-byte context (zero-padded to 16), no input."""
    return hashlib.blake2b(b"", digest_size=n, key=key, salt=subkey_id.to_bytes(8, "little"),
                           person=context).digest()


def self_check():
    fails = []
    # RFC 8439 2.8.2
    key = bytes(range(0x80, 0xA0))
    nonce = bytes.fromhex("070000004041424344454647")
    ad = bytes.fromhex("50515253c0c1c2c3c4c5c6c7")
    pt = (b"Ladies and Gentlemen of the class of '99: If I could offer you only one tip for "
          b"the future, sunscreen would be it.")
    out = aead_encrypt(key, nonce, pt, ad)
    if out[:16].hex() != "d31a8d34648e60db7b86afbc53ef7ec2" or \
            out[-16:].hex() != "1ae10b594f09e26a7e902ecbd0600691":
        fails.append("RFC 8439 2.8.2 AEAD vector")
    # draft-irtf-cfrg-xchacha 2.2.1
    h = hchacha20(bytes(range(32)), bytes.fromhex("000000090000004a0000000031415927"))
    if h.hex() != "82413b4227b27bfed30e42508a877d73a0f9e4d58a74a853c12ec41326d3ecdc":
        fails.append("HChaCha20 vector")
    # OpenSSL, when the cryptography package is there: the AEAD, and HChaCha20 as the permuted
    # state (ChaCha20 block minus its input state, words 0-3 and 12-15)
    try:
        from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
        from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
    except ImportError:
        ChaCha20Poly1305 = None
    if ChaCha20Poly1305:
        for n in (0, 1, 63, 64, 65, 200):
            k, no, a, p = os.urandom(32), os.urandom(12), os.urandom(n % 37), os.urandom(n)
            if ChaCha20Poly1305(k).encrypt(no, p, a) != aead_encrypt(k, no, p, a):
                fails.append("ChaCha20-Poly1305 against OpenSSL, %d bytes" % n)
            n16 = os.urandom(16)
            enc = Cipher(algorithms.ChaCha20(k, n16), mode=None).encryptor()
            block = words(enc.update(b"\x00" * 64))
            state = SIGMA + words(k) + words(n16)
            perm = [(b - s) & M32 for b, s in zip(block, state)]
            if pack(perm[0:4] + perm[12:16]) != hchacha20(k, n16):
                fails.append("HChaCha20 against OpenSSL")
    return fails


CONTEXT = b"chpE2Ev2"
KEY = bytes(range(32))


def seal_chunk(key, index, last, plain):
    ad = index.to_bytes(8, "little") + bytes([1 if last else 0])
    siv = kdf(key, 2, CONTEXT)
    nonce = hashlib.blake2b(ad + hashlib.sha256(plain).digest(), digest_size=24, key=siv).digest()
    return nonce + xaead_encrypt(kdf(key, 1, CONTEXT), nonce, plain, ad)


def seal_meta(key, nonce, plain_size, chunk_size, name, mime):
    body = plain_size.to_bytes(8, "little") + chunk_size.to_bytes(4, "little")
    body += bytes([len(name)]) + name.ljust(255, b"\x00")
    body += bytes([len(mime)]) + mime.ljust(127, b"\x00")
    head = bytes([2]) + kdf(key, 4, CONTEXT)
    return head + nonce + xaead_encrypt(kdf(key, 3, CONTEXT), nonce, body, head)


def vectors():
    """name -> hex; the inputs are restated in test_e2e.c next to the constants."""
    v = {}
    for i, name in ((1, "CHUNK_KEY"), (2, "SIV_KEY"), (3, "META_KEY"), (4, "COMMIT")):
        v[name] = kdf(KEY, i, CONTEXT).hex()
    v["CHUNK_A"] = seal_chunk(KEY, 0x0102030405060708, True, b"synthetic nonces, v2").hex()
    v["CHUNK_B"] = seal_chunk(KEY, 0, False, bytes((7 * i) & 0xFF for i in range(100))).hex()
    v["CHUNK_C"] = seal_chunk(KEY, 5, True, b"").hex()
    v["META"] = seal_meta(KEY, bytes(range(0x40, 0x58)), 0x0123456789ABCDEF, 1 << 20,
                          b"holiday photos (2024).tar.zst", b"application/zstd").hex()
    return v


def c_constants(path):
    text = open(path, encoding="utf-8").read()
    out = {}
    for m in re.finditer(r"\bV_(\w+)\[\]\s*=\s*((?:\"[0-9a-f]*\"\s*)+);", text):
        out[m.group(1)] = "".join(re.findall(r"\"([0-9a-f]*)\"", m.group(2)))
    return out


def main():
    fails = self_check()
    for f in fails:
        print("e2e_vectors: the Python primitives fail the %s" % f)
    if fails:
        return 1
    v = vectors()
    if len(sys.argv) == 2 and sys.argv[1] == "--print":
        for name, h in v.items():
            print("static const char V_%s[] =" % name)
            for i in range(0, len(h), 88):
                print('    "%s"' % h[i:i + 88])
            print("    ;")
        return 0
    if len(sys.argv) != 2:
        print(__doc__.strip().splitlines()[-2])
        return 1
    c = c_constants(sys.argv[1])
    bad = 0
    for name, h in v.items():
        if c.get(name) != h:
            print("e2e_vectors: V_%s in %s differs from the independent computation:\n"
                  "  C:      %s\n  Python: %s" % (name, sys.argv[1], c.get(name), h))
            bad += 1
    extra = set(c) - set(v)
    for name in sorted(extra):
        print("e2e_vectors: V_%s in %s is not computed here" % (name, sys.argv[1]))
        bad += 1
    print("e2e_vectors: %d of %d vectors agree" % (len(v) - bad, len(v)))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
