/* chapar.h — libchapar: send and receive end-to-end encrypted files through a chapar relay.
 *
 * A file is encrypted on this machine under a fresh random key, cut into chunks and uploaded;
 * the result is a ticket (a string for a chat message) that carries the relay's address and
 * public key, the file id and, after '#', the file key, which no relay ever receives. Downloads
 * verify every chunk twice: its address (SHA-256) and its authentication tag.
 *
 * Handles are opaque. A client is one connection to one relay, used by one thread at a time;
 * chapar_cancel may be called from any thread or a signal handler. Strings returned in result
 * structs are owned by the struct. Every function returns 0 or a negative CHAPAR_E* code;
 * chapar_strerror explains it and chapar_error_class maps it to the command-line exit codes.
 */
#ifndef CHAPAR_H
#define CHAPAR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define CHAPAR_KEY_BYTES  32
#define CHAPAR_ID_BYTES   32
#define CHAPAR_TICKET_MAX 480

/* Not negative errnos (-1 and -2 equal -EPERM and -ENOENT): a space of their own, fixed by the
 * ABI. libchapar maps its internal codes (common/err.h) to these in one table (client/link.c). */
enum chapar_error {
        CHAPAR_EUSAGE = -1,     /* bad argument */
        CHAPAR_ENET = -2,       /* cannot reach the relay, or the connection broke */
        CHAPAR_ERELAY = -3,     /* the relay refused the request (see chapar_last_error) */
        CHAPAR_EKEY = -4,       /* the relay's key is not the pinned one */
        CHAPAR_EINTEGRITY = -5, /* a chunk or the metadata failed verification */
        CHAPAR_EIO = -6,        /* a local file could not be read or written */
        CHAPAR_ENOMEM = -7,
        CHAPAR_ECANCELED = -8,
        CHAPAR_ENOTFOUND = -9, /* the relay has no such file */
        CHAPAR_EPROTO = -10,   /* the relay spoke something this client does not understand */
        CHAPAR_ECHANGED = -11, /* the file changed while a put read it; nothing inconsistent was
                                  sent: put it again */
};

/* Exit code classes of the chapar tool: 1 usage, 2 relay or network, 3 integrity or
 * authentication, 4 local I/O. */
int chapar_error_class(int err);
const char *chapar_strerror(int err);

struct chapar_opts {
        const char *relay;        /* "HOST:PORT"; NULL: $CHAPAR_RELAY, else 127.0.0.1:7700 */
        const uint8_t *relay_key; /* CHAPAR_KEY_BYTES to pin, or NULL: the known-relays file */
        const char *known_relays; /* path, or NULL: $XDG_CONFIG_HOME/chapar/known_relays or
                                     ~/.config/chapar/known_relays */
        const char *cache_dir;    /* resume and dedup state, or NULL: $XDG_CACHE_HOME/chapar or
                                     ~/.cache/chapar; "" disables the cache */
        bool insecure_plaintext;  /* no transport encryption (the relay must allow it) */
        int timeout_ms;           /* per network wait; 0 = 30 s */
};

struct chapar_client;

/* Connects and authenticates the relay. With no key given or known, the relay's key is learnt
 * and written to the known-relays file (trust on first use); a key that differs from the known
 * one is CHAPAR_EKEY. Caller frees *out with chapar_close — also after a failure, when *out is
 * set so that chapar_last_error can say what went wrong. */
int chapar_connect(const struct chapar_opts *o, struct chapar_client **out);
void chapar_close(struct chapar_client *c); /* NULL is a no-op */

/* The relay's public key (valid while c is). */
const uint8_t *chapar_relay_key(const struct chapar_client *c);
/* The last relay error message ("" if none); valid until the next call on c. */
const char *chapar_last_error(const struct chapar_client *c);

/* Asks a running operation on c to stop; it returns CHAPAR_ECANCELED. Async-signal-safe. */
void chapar_cancel(struct chapar_client *c);

/* Progress: bytes done of total, called from the calling thread. */
typedef void (*chapar_progress_fn)(void *ctx, uint64_t done, uint64_t total);

struct chapar_put_opts {
        uint32_t chunk_size; /* ciphertext chunk size, power of two 64 KiB..8 MiB; 0 = 1 MiB */
        bool pad;            /* pad the size into Padmé buckets */
        const char *name;    /* stored encrypted; NULL = the file's base name */
        const char *mime;    /* stored encrypted; NULL = "" */
        uint32_t expires_in; /* seconds; 0 = the relay's default */
        chapar_progress_fn progress;
        void *progress_ctx;
};

struct chapar_put_result {
        char ticket[CHAPAR_TICKET_MAX];
        uint8_t file_id[CHAPAR_ID_BYTES];
        uint64_t bytes_total; /* ciphertext bytes of the file */
        uint64_t bytes_sent;  /* chunk bytes sent by this call */
        uint32_t chunks_total, chunks_sent, chunks_deduplicated;
        double seconds;
};

/* Encrypts and uploads the file at path (or an open fd, read from offset 0 with pread). Run
 * again after an interruption, it sends only the chunks the relay lacks; content put before
 * reuses its earlier encryption, so the relay deduplicates it. */
int chapar_put_path(struct chapar_client *c, const char *path, const struct chapar_put_opts *o,
                    struct chapar_put_result *out);
int chapar_put_fd(struct chapar_client *c, int fd, const struct chapar_put_opts *o,
                  struct chapar_put_result *out);

struct chapar_get_opts {
        chapar_progress_fn progress;
        void *progress_ctx;
};

struct chapar_get_result {
        char path[4096];         /* where the file was written */
        char name[256];          /* the name the sender gave */
        uint64_t bytes_total;    /* plaintext size */
        uint64_t bytes_received; /* chunk bytes fetched by this call */
        double seconds;
};

/* Downloads, verifies and decrypts the file a ticket names to out_path (NULL: the sender's
 * name in the current directory), through a temporary file renamed at the end. A partial
 * download left by an interrupted call is resumed. On a verification failure no output file is
 * left. */
int chapar_get(struct chapar_client *c, const char *ticket, const char *out_path,
               const struct chapar_get_opts *o, struct chapar_get_result *out);

struct chapar_stat_result {
        bool complete;         /* false while the upload is still running */
        uint64_t stored_bytes; /* ciphertext size on the relay */
        uint32_t chunks, chunks_present, chunk_size;
        uint64_t created, expires; /* unix seconds; 0 = unknown / never */
        bool has_meta;             /* the ticket had the key: the fields below are filled */
        uint64_t plain_size;
        char name[256];
        char mime[128];
};

int chapar_stat(struct chapar_client *c, const char *ticket, struct chapar_stat_result *out);

/* Asks the connected relay (the ticket's origin) to offer the file to the peer relay whose
 * public key is peer_key, which then fetches it in the background — for a recipient on that
 * relay, before they ask. */
int chapar_offer(struct chapar_client *c, const char *ticket,
                 const uint8_t peer_key[CHAPAR_KEY_BYTES]);

#ifdef __cplusplus
}
#endif

#endif
