/* e2e.h — end-to-end encryption of a file's chunks and metadata, format v2. Client side only:
 * the relay never sees a file key or a plaintext byte.
 *
 * A file has a random 32-byte key K. crypto_kdf (BLAKE2b) derives four subkeys from it under the
 * context "chpE2Ev2": the chunk key (id 1), the SIV key (id 2), the metadata key (id 3) and the
 * key commitment (id 4).
 *
 * Chunk i of the (padded) plaintext, last = 1 for the file's final chunk and 0 otherwise:
 *   N      = BLAKE2b-192, keyed with the SIV key, over (i u64 LE || last u8 || SHA-256(plaintext))
 *   sealed = N[24] || XChaCha20-Poly1305-IETF(chunk key, N, AD = i u64 LE || last u8, plaintext)
 * The nonce is synthetic (SIV-style): a PRF of the chunk's position and content under a key of
 * its own. The same (K, i, last, plaintext) always seals to the same bytes, so a re-run resumes
 * and the same content deduplicates; two different plaintexts (or positions) share a nonce under
 * K only through a SHA-256 collision or a collision of the 192-bit PRF — for q distinct chunks
 * under one key at most q^2 / 2^193: 2^-153 for a file's 2^20 chunks, 2^-97 even at 2^48 (the
 * plaintext is read once by SHA-256, not by the PRF as well: SHA-NI makes that the cheaper
 * pass, and a put hashes each chunk anyway to notice a file changing) — so no key+nonce pair ever
 * seals two plaintexts, even when a file changes while it is being read. What it leaks: equal
 * chunks at equal positions under the same key seal to equal bytes (what dedup and resume need).
 * open_chunk decrypts with the carried nonce and the AD, so reordering, substitution and
 * truncation still fail authentication; it does not re-derive the nonce (only the sender's
 * safety depends on it being synthetic). Every file has at least one chunk (an empty file is one
 * CHP_E2E_CHUNK_OVERHEAD-byte chunk), so truncation to zero chunks is detected too. With the
 * manifest's chunk size C, a plaintext chunk holds C - CHP_E2E_CHUNK_OVERHEAD bytes.
 *
 * Metadata: one fixed-size blob (CHP_E2E_META_BYTES, whatever the name and MIME lengths):
 *   version u8 = 2 || commitment[32] || nonce[24] (random) ||
 *   XChaCha20-Poly1305-IETF(metadata key, nonce, AD = version || commitment, body)
 *   body = plain_size u64 LE, chunk_size u32 LE, name_len u8, name zero-padded to 255 bytes,
 *          mime_len u8, mime zero-padded to 127 bytes
 * The commitment is the id-4 subkey, BLAKE2b with K as its key block: a collision-resistant
 * function of K. chp_e2e_open_meta compares it (constant time) before it decrypts anything, so a
 * blob opens under one key only; the manifest carries the blob and the file id is the manifest's
 * hash, so a ticket with another key cannot open the file to other valid plaintext.
 * Format v1 (counter nonces, no commitment) is neither written nor read: reading it would let a
 * sender bypass the commitment by writing v1.
 *
 * Padding: chp_e2e_padded_size (Padmé with a 4 KiB floor) is the size a plaintext is padded to
 * before it is cut, zeros at the end; the real size is in the metadata.
 * Pure functions; any thread; nothing allocates except chp_e2e_seal_chunk's SHA-256 (OpenSSL's
 * context). Errors: -EINVAL (bad sizes), -ENOSPC (cap), -ENOMEM (seal_chunk only), -EBADMSG
 * (authentication failed: wrong key, tampered, reordered or truncated, not format v2).
 */
#ifndef CHP_E2E_H
#define CHP_E2E_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define CHP_FILE_KEY_BYTES   32
#define CHP_E2E_VERSION      2  /* the format this module writes and reads */
#define CHP_E2E_TAG          16 /* Poly1305 tag */
#define CHP_E2E_NONCE        24 /* XChaCha20 nonce: synthetic in chunks, random in metadata */
#define CHP_E2E_COMMIT_BYTES 32 /* the key commitment in the metadata blob */
/* Bytes a sealed chunk adds to its plaintext (len + CHP_E2E_CHUNK_OVERHEAD out of seal_chunk).
 * Code outside e2e.c sizes chunks with this, chp_e2e_plain_chunk and chp_e2e_cipher_size only. */
#define CHP_E2E_CHUNK_OVERHEAD (CHP_E2E_NONCE + CHP_E2E_TAG)
#define CHP_E2E_NAME_MAX       255
#define CHP_E2E_MIME_MAX       127
#define CHP_E2E_PAD_FLOOR      4096 /* chp_e2e_padded_size never answers less */

/* The three size functions below return 0 when chunk_size is not a valid chunk size (a power of
 * two, CHP_CHUNK_MIN..CHP_CHUNK_MAX, see manifest.h) or the result does not fit: 0 is never a
 * valid answer for them. */
/* Plaintext bytes a chunk holds at a ciphertext chunk size: chunk_size - CHP_E2E_CHUNK_OVERHEAD. */
uint32_t chp_e2e_plain_chunk(uint32_t chunk_size);
/* Chunks a plaintext of plain_size takes (at least 1). */
uint64_t chp_e2e_chunk_count(uint64_t plain_size, uint32_t chunk_size);
/* Stored (ciphertext) size of a plaintext of plain_size. */
uint64_t chp_e2e_cipher_size(uint64_t plain_size, uint32_t chunk_size);
/* Padmé: the size a plaintext of plain_size is padded to (leaks O(log log) bits, at most
 * about 12% overhead; padme(0) = 0). Saturates at UINT64_MAX where the rounded size would not
 * fit in 64 bits. */
uint64_t chp_e2e_padme(uint64_t plain_size);
/* The size a put pads a plaintext of plain_size to: CHP_E2E_PAD_FLOOR below it, Padmé above
 * (so a stored size says which of a few buckets the real size is in, and small files look
 * alike). */
uint64_t chp_e2e_padded_size(uint64_t plain_size);

/* Fresh random file key. */
void chp_e2e_keygen(uint8_t key[CHP_FILE_KEY_BYTES]);

/* Seals len plaintext bytes (at most chp_e2e_plain_chunk(chunk_size)) as chunk index; out gets
 * len + CHP_E2E_CHUNK_OVERHEAD bytes and may not overlap plain. */
__attribute__((warn_unused_result)) int chp_e2e_seal_chunk(const uint8_t key[CHP_FILE_KEY_BYTES],
                                                           uint64_t index, bool last,
                                                           const uint8_t *plain, size_t len,
                                                           uint8_t *out);
/* chp_e2e_seal_chunk for a caller that has just computed digest = SHA-256(plain[0..len)) (a put,
 * which checks every read of a chunk against its first): the same bytes out, one pass less. A
 * wrong digest seals with a nonce that does not follow the plaintext. */
__attribute__((warn_unused_result)) int
chp_e2e_seal_chunk_hashed(const uint8_t key[CHP_FILE_KEY_BYTES], uint64_t index, bool last,
                          const uint8_t *plain, size_t len, const uint8_t digest[32], uint8_t *out);
/* Opens a sealed chunk of len bytes (>= CHP_E2E_CHUNK_OVERHEAD) into out
 * (len - CHP_E2E_CHUNK_OVERHEAD bytes); -EBADMSG also when len is shorter than the overhead or
 * longer than CHP_CHUNK_MAX. */
__attribute__((warn_unused_result)) int chp_e2e_open_chunk(const uint8_t key[CHP_FILE_KEY_BYTES],
                                                           uint64_t index, bool last,
                                                           const uint8_t *cipher, size_t len,
                                                           uint8_t *out);

struct chp_e2e_meta {
        uint64_t plain_size;             /* the file's real size (the stored one may be padded) */
        uint32_t chunk_size;             /* ciphertext chunk size the file was cut with */
        char name[CHP_E2E_NAME_MAX + 1]; /* NUL-terminated, may be empty */
        char mime[CHP_E2E_MIME_MAX + 1];
};

/* Bytes of a sealed metadata blob, always: version, commitment, nonce, then the sealed body
 * (plain_size u64, chunk_size u32, name_len u8, name[255], mime_len u8, mime[127]) and its tag.
 * CHP_E2E_META_MAX is the same number, for buffers. */
#define CHP_E2E_META_BYTES                                                                         \
        (1 + CHP_E2E_COMMIT_BYTES + CHP_E2E_NONCE + 8 + 4 + 1 + CHP_E2E_NAME_MAX + 1 +             \
         CHP_E2E_MIME_MAX + CHP_E2E_TAG)
#define CHP_E2E_META_MAX CHP_E2E_META_BYTES

/* Seals m into out (a fresh random nonce each call); returns CHP_E2E_META_BYTES or a negative
 * code. */
__attribute__((warn_unused_result)) ssize_t chp_e2e_seal_meta(const uint8_t key[CHP_FILE_KEY_BYTES],
                                                              const struct chp_e2e_meta *m,
                                                              uint8_t *out, size_t cap);
/* Opens a blob: checks its version and its key commitment against key before decrypting;
 * -EBADMSG when either differs, when it does not authenticate, or does not parse. */
__attribute__((warn_unused_result)) int chp_e2e_open_meta(const uint8_t key[CHP_FILE_KEY_BYTES],
                                                          const uint8_t *blob, size_t len,
                                                          struct chp_e2e_meta *out /* out */);

#endif
