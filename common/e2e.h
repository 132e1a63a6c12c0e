/* e2e.h — end-to-end encryption of a file's chunks and metadata. Client side only: the relay
 * never sees a file key or a plaintext byte.
 *
 * A file has a random 32-byte key. Two subkeys are derived from it with crypto_kdf (BLAKE2b):
 * one for chunks, one for metadata. Chunk i of the plaintext is sealed on its own with
 * ChaCha20-Poly1305-IETF under the nonce (i as 11 bytes big-endian || last), where last is 1 for
 * the file's final chunk and 0 otherwise — the STREAM construction the age format uses — so each
 * chunk decrypts independently (random access, parallel fetch) and reordering, substitution and
 * truncation all fail authentication. Every file has at least one chunk (an empty file is one
 * 16-byte chunk), so truncation to zero chunks is detected too. A sealed chunk is the plaintext
 * plus a 16-byte tag: with the manifest's chunk size C, a plaintext chunk holds C - 16 bytes.
 *
 * Metadata (plaintext size, name, MIME type) is sealed with XChaCha20-Poly1305 under a random
 * 24-byte nonce, since the same file key may be reused for the same content under another name.
 * Optional padding (Padmé) rounds the plaintext size up so that the stored size leaks little.
 * Pure functions; any thread. Errors: -EINVAL (bad sizes), -ENOSPC (cap), -EBADMSG
 * (authentication failed: wrong key, tampered, reordered or truncated).
 */
#ifndef CHP_E2E_H
#define CHP_E2E_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define CHP_FILE_KEY_BYTES 32
#define CHP_E2E_TAG        16
/* Bytes a sealed chunk adds to its plaintext (len + CHP_E2E_CHUNK_OVERHEAD out of seal_chunk).
 * Code outside e2e.c sizes chunks with this, chp_e2e_plain_chunk and chp_e2e_cipher_size only. */
#define CHP_E2E_CHUNK_OVERHEAD CHP_E2E_TAG
#define CHP_E2E_NAME_MAX   255
#define CHP_E2E_MIME_MAX   127

/* The three size functions below return 0 when chunk_size is not a valid chunk size (a power of
 * two, CHP_CHUNK_MIN..CHP_CHUNK_MAX, see manifest.h) or the result does not fit: 0 is never a
 * valid answer for them. */
/* Plaintext bytes a chunk holds at a ciphertext chunk size (chunk_size - 16). */
uint32_t chp_e2e_plain_chunk(uint32_t chunk_size);
/* Chunks a plaintext of plain_size takes (at least 1). */
uint64_t chp_e2e_chunk_count(uint64_t plain_size, uint32_t chunk_size);
/* Stored (ciphertext) size of a plaintext of plain_size. */
uint64_t chp_e2e_cipher_size(uint64_t plain_size, uint32_t chunk_size);
/* Padmé: the size a plaintext of plain_size is padded to (leaks O(log log) bits, at most
 * about 12% overhead; padme(0) = 0). Saturates at UINT64_MAX where the rounded size would not
 * fit in 64 bits. */
uint64_t chp_e2e_padme(uint64_t plain_size);

/* Fresh random file key. */
void chp_e2e_keygen(uint8_t key[CHP_FILE_KEY_BYTES]);

/* Seals len plaintext bytes (at most chp_e2e_plain_chunk(chunk_size)) as chunk index; out gets
 * len + CHP_E2E_CHUNK_OVERHEAD bytes and may not overlap plain. */
__attribute__((warn_unused_result)) int chp_e2e_seal_chunk(const uint8_t key[CHP_FILE_KEY_BYTES],
                                                           uint64_t index, bool last,
                                                           const uint8_t *plain, size_t len,
                                                           uint8_t *out);
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

/* Bytes a sealed metadata blob takes at most: nonce, then sealed version u8, plain_size u64,
 * chunk_size u32, name_len u8, name, mime_len u8, mime, tag. */
#define CHP_E2E_META_MAX                                                                           \
        (24 + 1 + 8 + 4 + 1 + CHP_E2E_NAME_MAX + 1 + CHP_E2E_MIME_MAX + CHP_E2E_TAG)

/* Seals m into out; returns the blob's length or a negative code. */
__attribute__((warn_unused_result)) ssize_t chp_e2e_seal_meta(const uint8_t key[CHP_FILE_KEY_BYTES],
                                                              const struct chp_e2e_meta *m,
                                                              uint8_t *out, size_t cap);
/* Opens a blob; -EBADMSG when it does not authenticate or does not parse. */
__attribute__((warn_unused_result)) int chp_e2e_open_meta(const uint8_t key[CHP_FILE_KEY_BYTES],
                                                          const uint8_t *blob, size_t len,
                                                          struct chp_e2e_meta *out /* out */);

#endif
