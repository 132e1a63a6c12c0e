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

/* What the shared library exports: the functions below and nothing else (it is built with
 * hidden visibility). */
#if defined(__GNUC__)
#define CHAPAR_API __attribute__((visibility("default")))
#else
#define CHAPAR_API
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
        CHAPAR_EKEY = -4,       /* the relay's key is not the pinned one, or none is pinned */
        CHAPAR_EINTEGRITY = -5, /* a chunk or the metadata failed verification */
        CHAPAR_EIO = -6,        /* a local file could not be read or written */
        CHAPAR_ENOMEM = -7,
        CHAPAR_ECANCELED = -8,
        CHAPAR_ENOTFOUND = -9, /* the relay has no such file */
        CHAPAR_EPROTO = -10,   /* the relay spoke something this client does not understand */
        CHAPAR_ECHANGED = -11, /* the file changed while a put read it; nothing inconsistent was
                                  sent: put it again */
        CHAPAR_EAUTH = -12,    /* the relay needs an upload token, refused the one given, or the
                                  token does not allow this (chapar_last_error says which) */
        CHAPAR_EQUOTA = -13,   /* over the token's budget, the tenant's quota or a size limit */
        CHAPAR_ELIMITED = -14, /* over a rate or concurrency limit: retry later (the message
                                  begins "retry after N s") */
};

/* Exit code classes of the chapar tool: 1 usage, 2 relay or network, 3 integrity or
 * authentication, 4 local I/O. */
CHAPAR_API int chapar_error_class(int err);
CHAPAR_API const char *chapar_strerror(int err);

struct chapar_opts {
        const char *relay;        /* "HOST:PORT"; NULL: $CHAPAR_RELAY, else 127.0.0.1:7700 */
        const uint8_t *relay_key; /* CHAPAR_KEY_BYTES to pin, or NULL: the known-relays file */
        const char *known_relays; /* path, or NULL: $XDG_CONFIG_HOME/chapar/known_relays or
                                     ~/.config/chapar/known_relays */
        const char *cache_dir;    /* resume and dedup state, or NULL: $XDG_CACHE_HOME/chapar or
                                     ~/.cache/chapar; "" disables the cache */
        bool insecure_plaintext;  /* no transport encryption (the relay must allow it) */
        bool trust_new_relay;     /* a relay missing from the known-relays file is recorded there
                                     (relay_key, else the key it presents) instead of refused.
                                     In what was padding: the struct's layout is unchanged. */
        int timeout_ms;           /* per network wait; 0 = 30 s */
};

struct chapar_client;

/* Connects and authenticates the relay. Its key is relay_key, else the one pinned for the
 * address in the known-relays file; a relay that presents another key is CHAPAR_EKEY. A relay
 * with neither is CHAPAR_EKEY too (nothing is sent to it), unless trust_new_relay: then the key
 * (relay_key, or whatever the relay presents: trust on first use) is recorded for the address.
 * insecure_plaintext connections have no key to check. Caller frees *out with chapar_close —
 * also after a failure, when *out is set so that chapar_last_error can say what went wrong. A
 * successful connect may leave a "warning: ..." there (a pin that could not be recorded). */
CHAPAR_API int chapar_connect(const struct chapar_opts *o, struct chapar_client **out);
/* chapar_connect presenting an upload token (docs/tokens.md: what a messenger's backend mints)
 * in the connection's HELLO; NULL or "" is none, as chapar_connect. A relay with tenants needs one
 * for uploads and offers; downloads need none. A token the relay does not accept fails the
 * connect with CHAPAR_EAUTH. The token is copied. (A function of its own, not a field of
 * struct chapar_opts, so that the struct's layout stays what programs were built with.) */
CHAPAR_API int chapar_connect_token(const struct chapar_opts *o, const char *token,
                                    struct chapar_client **out);
CHAPAR_API void chapar_close(struct chapar_client *c); /* NULL is a no-op */

/* The relay's public key (valid while c is). */
CHAPAR_API const uint8_t *chapar_relay_key(const struct chapar_client *c);
/* The last relay error message ("" if none); valid until the next call on c. */
CHAPAR_API const char *chapar_last_error(const struct chapar_client *c);

/* Asks a running operation on c to stop; it returns CHAPAR_ECANCELED. Async-signal-safe. */
CHAPAR_API void chapar_cancel(struct chapar_client *c);

/* ---- transport: how a put or get uses the network ---------------------------------------- */

#define CHAPAR_CONNECTIONS_MAX 8
#define CHAPAR_CC_MAX          16 /* bytes of a congestion-control name, its NUL included */

/* Set on a client before a put or get; applies to every later transfer on it. size is
 * sizeof(struct chapar_transport) as the caller was built: the struct may grow at its end, and
 * fields a caller's size does not reach keep their defaults. */
struct chapar_transport {
        uint32_t size;
        /* TCP connections per transfer, chunks striped across them: 0 = adapt to the path
         * (start at 2, add while the transfer gets faster, up to CHAPAR_CONNECTIONS_MAX);
         * 1..CHAPAR_CONNECTIONS_MAX = that many. */
        uint32_t connections;
        /* TCP congestion control to ask the kernel for on the transfer's sockets ("bbr"); NULL
         * or "" = the system's. A refusal (an unprivileged process may only pick from
         * net.ipv4.tcp_allowed_congestion_control) is no error: the socket keeps the system's,
         * and chapar_transfer_stats says what ran. */
        const char *congestion;
        /* Seconds a transfer keeps reconnecting after a cut (with backoff and jitter), resuming
         * at the chunk; 0 = 120; negative = fail at the first cut. */
        int32_t retry_s;
        /* put: called once, on the calling thread, as soon as the relay holds the manifest and
         * before the chunks go, with the ticket the put will return — so that a recipient can
         * start fetching while the upload runs (cut-through). NULL = not called. */
        void (*on_ticket)(void *ctx, const char *ticket);
        void *ctx;
};

/* CHAPAR_EUSAGE for a size below the first fields, a connections over the maximum or a
 * congestion name too long; the struct is copied (the name too). */
CHAPAR_API int chapar_set_transport(struct chapar_client *c, const struct chapar_transport *t);

/* What the last put or get on c did on the network. size as in struct chapar_transport. */
struct chapar_transfer_stats {
        uint32_t size;
        uint32_t connections;           /* the most open at once */
        uint32_t reconnects;            /* connections made again after a cut */
        uint64_t bytes_resent;          /* chunk bytes sent (put) or fetched (get) more than once */
        char congestion[CHAPAR_CC_MAX]; /* what the kernel ran on the transfer's sockets */
};

CHAPAR_API int chapar_transfer_stats(const struct chapar_client *c,
                                     struct chapar_transfer_stats *out);

/* Progress: bytes done of total, called from the calling thread. */
typedef void (*chapar_progress_fn)(void *ctx, uint64_t done, uint64_t total);

struct chapar_put_opts {
        uint32_t chunk_size; /* ciphertext chunk size, power of two 64 KiB..8 MiB; 0 = 1 MiB */
        bool pad;            /* no effect: padding is on unless no_pad (kept for the ABI) */
        bool no_pad;         /* store the exact size: no Padmé padding, no 4 KiB floor */
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
CHAPAR_API int chapar_put_path(struct chapar_client *c, const char *path,
                               const struct chapar_put_opts *o, struct chapar_put_result *out);
CHAPAR_API int chapar_put_fd(struct chapar_client *c, int fd, const struct chapar_put_opts *o,
                             struct chapar_put_result *out);

struct chapar_get_opts {
        chapar_progress_fn progress;
        void *progress_ctx;
};

struct chapar_get_result {
        char path[4096];         /* where the file was written ("-": chapar_get_fd) */
        char name[256];          /* the name the sender gave */
        uint64_t bytes_total;    /* plaintext size */
        uint64_t bytes_received; /* chunk bytes fetched by this call */
        double seconds;
};

/* Downloads, verifies and decrypts the file a ticket names, through a partial file beside the
 * target renamed at the end; a partial download left by an interrupted call is resumed. The
 * target is out_path, which must not exist (an existing file is never replaced: CHAPAR_EIO);
 * or, when out_path is NULL or an existing directory, the sender's name made safe (no path, no
 * leading dot, no control characters, invalid UTF-8 or Windows device names, at most 255 bytes)
 * in the current directory or that one, as "NAME (1).EXT", "NAME (2).EXT", ... when taken.
 * out->path says where it went. No symlink is followed at the partial files' names. On a
 * verification failure no output file is left. The chunks are fetched over the connections
 * chapar_set_transport asks for (c's own and more to the same relay, each pinned to the key c's
 * proved); one that breaks is made again and its chunks fetched again, until retry_s passes
 * without a chunk arriving. c's connection may be replaced on the way. */
CHAPAR_API int chapar_get(struct chapar_client *c, const char *ticket, const char *out_path,
                          const struct chapar_get_opts *o, struct chapar_get_result *out);

/* The same download written in order to fd (a pipe, a socket, stdout), each chunk only once it
 * has verified; nothing is resumed and no file is created. A failure part-way leaves a prefix of
 * the file written to fd: the caller must treat the output as incomplete unless this returns 0.
 * fd is borrowed (not closed). out->path is "-". */
CHAPAR_API int chapar_get_fd(struct chapar_client *c, const char *ticket, int fd,
                             const struct chapar_get_opts *o, struct chapar_get_result *out);

struct chapar_stat_result {
        bool complete;         /* false while the upload is still running */
        uint64_t stored_bytes; /* ciphertext size on the relay */
        uint32_t chunks, chunks_present, chunk_size;
        uint64_t created, expires; /* unix seconds; 0 = unknown / never */
        bool has_meta;             /* the ticket had the key: the fields below are filled */
        bool times_withheld;       /* the relay did not tell created and expires (both 0) to
                                      this caller: no upload token on a relay with tenants */
        uint64_t plain_size;
        char name[256];
        char mime[128];
};

CHAPAR_API int chapar_stat(struct chapar_client *c, const char *ticket,
                           struct chapar_stat_result *out);

/* Asks the connected relay (the ticket's origin) to offer the file to the peer relay whose
 * public key is peer_key, which then fetches it in the background — for a recipient on that
 * relay, before they ask. */
CHAPAR_API int chapar_offer(struct chapar_client *c, const char *ticket,
                            const uint8_t peer_key[CHAPAR_KEY_BYTES]);

/* The known-relays file (known_relays as in chapar_opts; NULL: the default): fn is called once
 * per pin, in file order, with the address and the key. 0 (also with no file), CHAPAR_EIO. */
typedef void (*chapar_relay_fn)(void *ctx, const char *addr, const uint8_t key[CHAPAR_KEY_BYTES]);
CHAPAR_API int chapar_relays_list(const char *known_relays, chapar_relay_fn fn, void *ctx);
/* Removes the pins of addr (the HOST:PORT string they were recorded under). 0, CHAPAR_ENOTFOUND
 * when there is none, CHAPAR_EIO. */
CHAPAR_API int chapar_relays_remove(const char *known_relays, const char *addr);

/* Removes the key-cache entries (cache_dir as in chapar_opts; NULL: the default) of a file, so
 * that its next put uses a fresh key: target is a ticket with its file key (the entry holding
 * that key) or a file's path (the entries for its content, at every chunk size). *removed (may
 * be NULL) gets how many were removed; entries found expired are removed too, uncounted. 0
 * (also when none), CHAPAR_EUSAGE (a ticket without its key), CHAPAR_EIO (the file cannot be
 * read). */
CHAPAR_API int chapar_forget(const char *cache_dir, const char *target, unsigned *removed);

#ifdef __cplusplus
}
#endif

#endif
