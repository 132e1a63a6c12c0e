/* noise.h — the Noise Protocol Framework (revision 34) on libsodium: CipherState,
 * SymmetricState and HandshakeState for the patterns XX, IK and NK, with DH 25519 and the
 * cipher/hash pairs ChaChaPoly/BLAKE2b (everyone implements it), AESGCM/SHA256 (only where
 * crypto_aead_aes256gcm_is_available()), and ChaChaPoly/SHA256.
 *
 * HMAC and HKDF are written on crypto_generichash / crypto_hash_sha256 (keyed BLAKE2b is not
 * HMAC). A DH result of all zeros (a low-order peer key) fails the handshake. Secrets are wiped
 * on every path, including failure; chp_noise_hs_wipe and chp_noise_cs_wipe wipe what is left.
 * Structs are plain values owned by the caller; one thread at a time. Errors: -EINVAL (misuse:
 * wrong turn, pattern needs a key not given), -ENOSPC (output too small), -EBADMSG (a message
 * that does not decrypt or parse, a low-order key), -ENOTSUP (suite not available here).
 */
#ifndef CHP_NOISE_H
#define CHP_NOISE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* An X25519 key, public or private (Noise's DHLEN): the size of every static key. */
#define CHP_KEY_BYTES       32
#define CHP_NOISE_KEYLEN    32
#define CHP_NOISE_TAGLEN    16
#define CHP_NOISE_HASHMAX   64
#define CHP_NOISE_MSGMAX    65535 /* every Noise message, handshake or transport */
#define CHP_NOISE_PLAINMAX  (CHP_NOISE_MSGMAX - CHP_NOISE_TAGLEN)

enum chp_noise_pattern { CHP_NOISE_NK, CHP_NOISE_XX, CHP_NOISE_IK };
enum chp_noise_cipher { CHP_NOISE_CHACHAPOLY, CHP_NOISE_AESGCM };
enum chp_noise_hash { CHP_NOISE_BLAKE2B, CHP_NOISE_SHA256 };

struct chp_noise_suite {
        enum chp_noise_cipher cipher;
        enum chp_noise_hash hash;
};

/* "Noise_XX_25519_ChaChaPoly_BLAKE2b" and the like. Returns 0, or -EINVAL for anything this
 * module does not implement (other DH functions, PSK patterns, other patterns). */
int chp_noise_parse_name(const char *name, enum chp_noise_pattern *pattern /* out */,
                         struct chp_noise_suite *suite /* out */);
/* Writes the protocol name; returns its length or -ENOSPC. */
ssize_t chp_noise_name(enum chp_noise_pattern pattern, struct chp_noise_suite suite, char *out,
                       size_t cap);
/* Whether this machine can run the suite (AESGCM needs AES-NI). */
bool chp_noise_suite_available(struct chp_noise_suite suite);

struct chp_noise_cs {
        struct chp_noise_suite suite;
        uint8_t k[CHP_NOISE_KEYLEN];
        bool has_key;
        uint64_t n;
};

/* Transport encryption: out gets len + 16 bytes (out may equal plain); nonce n then n+1.
 * -EBADMSG after 2^64-1 messages (the nonce is exhausted). */
int chp_noise_encrypt(struct chp_noise_cs *cs, const uint8_t *ad, size_t adlen,
                      const uint8_t *plain, size_t len, uint8_t *out);
/* out gets len - 16 bytes (out may equal cipher); on failure n is not advanced. */
int chp_noise_decrypt(struct chp_noise_cs *cs, const uint8_t *ad, size_t adlen,
                      const uint8_t *cipher, size_t len, uint8_t *out);
/* Rekey() of the specification: k = ENCRYPT(k, 2^64-1, empty, zeros)[0..32). */
void chp_noise_rekey(struct chp_noise_cs *cs);
void chp_noise_cs_wipe(struct chp_noise_cs *cs);

struct chp_noise_hs {
        enum chp_noise_pattern pattern;
        struct chp_noise_suite suite;
        bool initiator;
        int step; /* index of the next message pattern */
        /* SymmetricState */
        struct chp_noise_cs cs;
        uint8_t ck[CHP_NOISE_HASHMAX], h[CHP_NOISE_HASHMAX];
        size_t hashlen;
        /* keys */
        uint8_t s_priv[CHP_KEY_BYTES], s_pub[CHP_KEY_BYTES];
        uint8_t e_priv[CHP_KEY_BYTES], e_pub[CHP_KEY_BYTES];
        uint8_t rs[CHP_KEY_BYTES], re[CHP_KEY_BYTES];
        bool has_s, has_e, has_rs, has_re, fixed_e;
};

/* Starts a handshake. s_priv: this side's static private key (NULL if the pattern sends none
 * from this side); rs: the peer's static public key when the pattern has it known in advance
 * (IK and NK initiators), else NULL. A key missing or given against that is -EINVAL. */
__attribute__((warn_unused_result)) int chp_noise_hs_init(
        struct chp_noise_hs *hs, enum chp_noise_pattern pattern, struct chp_noise_suite suite,
        bool initiator, const uint8_t *prologue, size_t prologue_len, const uint8_t *s_priv,
        const uint8_t *rs);
/* Tests only: use this ephemeral private key instead of a random one. */
void chp_noise_hs_fix_ephemeral(struct chp_noise_hs *hs, const uint8_t e_priv[CHP_KEY_BYTES]);

/* Writes the next handshake message carrying payload; *out_len gets its length. */
__attribute__((warn_unused_result)) int chp_noise_hs_write(struct chp_noise_hs *hs,
                                                           const uint8_t *payload, size_t len,
                                                           uint8_t *out, size_t cap,
                                                           size_t *out_len /* out */);
/* Reads the next handshake message; its payload goes to payload (cap bytes). */
__attribute__((warn_unused_result)) int chp_noise_hs_read(struct chp_noise_hs *hs,
                                                          const uint8_t *msg, size_t len,
                                                          uint8_t *payload, size_t cap,
                                                          size_t *payload_len /* out */);
/* Whether it is this side's turn to write, and whether the handshake is complete. */
bool chp_noise_hs_my_turn(const struct chp_noise_hs *hs);
bool chp_noise_hs_done(const struct chp_noise_hs *hs);
/* After the last message: the two transport CipherStates (for this side: send, receive), the
 * handshake hash (channel binding) and its length. Wipes the handshake state except the peer's
 * static public key, which chp_noise_hs_remote_static still returns (chp_noise_hs_wipe ends
 * that too). */
__attribute__((warn_unused_result)) int chp_noise_hs_split(struct chp_noise_hs *hs,
                                                           struct chp_noise_cs *send,
                                                           struct chp_noise_cs *recv,
                                                           uint8_t h[CHP_NOISE_HASHMAX],
                                                           size_t *hashlen);
/* The peer's static public key once received (or given); -ENOENT before. */
int chp_noise_hs_remote_static(const struct chp_noise_hs *hs, uint8_t out[CHP_KEY_BYTES]);
void chp_noise_hs_wipe(struct chp_noise_hs *hs);

/* A static key pair: a fresh one, or the public half of a private key. */
void chp_noise_keypair(uint8_t priv[CHP_KEY_BYTES], uint8_t pub[CHP_KEY_BYTES]);
int chp_noise_public(const uint8_t priv[CHP_KEY_BYTES], uint8_t pub[CHP_KEY_BYTES]);

#endif
