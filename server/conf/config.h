/* config.h — chapard's settings: defaults, then the INI file (--config), then flags.
 *
 * chp_config_defaults fills every field; chp_config_load_file overlays an INI file (libinih);
 * chp_config_parse_args overlays command-line flags (flags win over the file, so callers load the
 * file named by --config first: chp_config_find_file tells which). Strings are owned by the
 * config and freed by chp_config_free (NULL-safe). Errors are -EINVAL (-ENOMEM when out of
 * memory; a config file that cannot be read is -EINVAL too) with a readable message in err (what
 * was wrong and where: "config.ini:12: unknown key 'foo' in [server]"); c may then be partly
 * overlaid. The main thread only (at start-up and on reload).
 *
 * INI layout:
 *   [server]   data, listen, http, threads, sync, key, insecure_plaintext, open, ready_file,
 *              admin_listen, admin_key,
 *              log_level, access_log, log_format, max_connections, idle_timeout, io_timeout,
 *              window_bytes, max_inflight, upload_expiry, file_expiry, memory_limit,
 *              cors_origins, cors_headers,
 *              tus_chunk_size,
 *              tus_max_size, header_timeout, handshake_timeout, min_body_rate,
 *              body_rate_window, audience (repeatable: a federation-wide name tokens may be
 *              addressed to besides this relay's key and the tenant's name; reloadable),
 *              max_connections_per_address, uploads_per_minute,
 *              upload_rate_per_address, download_rate_per_address, max_incomplete_per_address,
 *              limit_loopback (the per-address and per-subject limits: conf/client_limits.h),
 *              fetch_timeout, fetch_min_rate, fetch_workers_per_peer, audit_interval
 *   [store]    inline_max, map_size, segment_size, compact_ratio, backend (--store),
 *              rados_conf (--rados-conf), rados_pool (--rados-pool), rados_user (--rados-user),
 *              rados_inflight, rados_op_timeout
 *   [peer "NAME"]  address, pubkey, public_pull  (federation: the relays this one fetches from
 *              and accepts; public_pull: anyone's HTTP GET may pull that peer's files through)
 *   [tenant "NAME"]  token_key (one or more), max_stored, max_uploaded_per_day, max_file_size,
 *              max_file_life, max_concurrent_uploads, max_incomplete_uploads, xmpp_secret
 *              (who may upload: token holders, or an XMPP server's signed URLs; a tenant has
 *              a token_key, an xmpp_secret, or both)
 * Sizes accept K, M, G suffixes (powers of 1024); durations accept s, m, h, d suffixes. A tenant
 * limit may also be "unlimited" (CHP_UNLIMITED, its default).
 *
 * The no-tenant rule (chp_config_check_access): a relay whose native or HTTP face listens on an
 * address that is not loopback needs a tenant or --open; with neither, chp_config_finish refuses
 * the configuration, so chapard does not start.
 */
#ifndef CHP_CONFIG_H
#define CHP_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "log.h"
#include "store.h"

#define CHP_CONFIG_ERR_MAX 512
#define CHP_MAX_PEERS      64
#define CHP_CORS_HEADERS_MAX 1024 /* characters of cors_headers */

#define CHP_MAX_TENANTS         256
#define CHP_TENANT_NAME_MAX     64         /* letters, digits, '.', '_', '-' */
#define CHP_XMPP_SECRET_MIN     16         /* bytes of a tenant's xmpp_secret */
#define CHP_XMPP_SECRET_MAX     1024
#define CHP_TENANT_KEYS_MAX     8          /* token_key lines per tenant: rotation overlaps */
#define CHP_TENANT_KID_BYTES    8          /* a token key id; 16 hex digits in the file */
#define CHP_TENANT_PUBKEY_BYTES 32         /* an Ed25519 public key; 64 hex digits in the file */
#define CHP_UNLIMITED           UINT64_MAX /* a tenant limit that is not set */
#define CHP_AUDIENCES_MAX       16         /* [server] audience lines */

struct chp_peer_config {
        char *name;
        char *address; /* HOST:PORT */
        char *pubkey;  /* as chapard keygen prints it */
        bool public_pull; /* anyone's GET /f/ID?origin=KEY may pull its files through */
};

/* One token-verification key of a tenant: `token_key = KID:PUBLIC-KEY`. The public key is a
 * valid Ed25519 point (not of small order), checked when the file is read. */
struct chp_tenant_key {
        uint8_t kid[CHP_TENANT_KID_BYTES];
        uint8_t pub[CHP_TENANT_PUBKEY_BYTES];
};

/* A tenant: a messenger (or part of one) whose backend mints upload tokens. Every limit is
 * CHP_UNLIMITED unless the file sets it; a set limit is at least 1. */
struct chp_tenant_config {
        char *name;
        struct chp_tenant_key keys[CHP_TENANT_KEYS_MAX]; /* distinct key ids, in file order */
        unsigned nkeys;                                  /* 1..CHP_TENANT_KEYS_MAX */
        uint64_t max_stored;             /* bytes of the tenant's files stored at once */
        uint64_t max_uploaded_per_day;   /* bytes received per UTC day */
        uint64_t max_file_size;          /* bytes in one file */
        uint64_t max_file_life;          /* seconds a file may live */
        uint64_t max_concurrent_uploads; /* uploads receiving data at once */
        uint64_t max_incomplete_uploads; /* upload sessions begun and not committed */
        /* `xmpp_secret = SECRET`: the secret an XMPP server (Prosody's mod_http_upload_external,
         * ejabberd's mod_http_upload external_secret) shares with the relay to sign PUT URLs of
         * /xmpp/NAME/ (faces/xmpp.c); CHP_XMPP_SECRET_MIN..MAX bytes, or 0: not an XMPP tenant */
        uint8_t xmpp_secret[CHP_XMPP_SECRET_MAX];
        size_t xmpp_secret_len;
};

struct chp_config {
        char *data_dir;       /* --data, default "./data" */
        char *listen;         /* --listen HOST:PORT, default "127.0.0.1:7700" */
        char *http;           /* --http HOST:PORT, default "127.0.0.1:7780"; "off": no HTTP face */
        unsigned threads;     /* --threads, default: online cores (at least 1), at most 64 */
        enum chp_sync sync;   /* --sync full|none, default full */
        char *key_file;       /* --key FILE, default NULL (kept in the data directory) */
        bool insecure_plaintext;  /* --insecure-plaintext */
        bool open;                /* --open: uploads, offers and pull-through without a token from
                                     any address; default off */
        char *ready_file;     /* --ready-file PATH, default NULL */
        /* The admin face (server/admin.h): always on the Unix socket DATA/admin.sock (mode
         * 0600); also on TCP when admin_listen is set, which needs admin_key (a file made by
         * chapard admin-key: requests there must carry it). Both take a restart. */
        char *admin_listen;           /* --admin-listen HOST:PORT, default NULL (no TCP admin) */
        char *admin_key;              /* --admin-key FILE, default NULL */
        enum chp_log_level log_level; /* --log-level, default info */
        char *access_log; /* --access-log FILE ("-": stderr), default NULL: no access log */
        enum chp_log_format log_format; /* --log-format logfmt|json, default logfmt: the access
                                           log's lines (and the error log's, when json) */
        unsigned max_connections; /* default 20000 */
        unsigned idle_timeout;    /* seconds without a request before closing, default 120 */
        unsigned io_timeout;      /* seconds a started frame or send may stall, default 30 */
        unsigned header_timeout;  /* seconds for a whole HTTP head or native frame header,
                                     default 20 */
        unsigned handshake_timeout; /* seconds from accept to the end of the native preamble and
                                       Noise handshake, default 10 */
        uint32_t min_body_rate;   /* bytes/s a body (native payload, HTTP body) must keep up,
                                     measured over body_rate_window; 0 = no floor; default 1 KiB */
        unsigned body_rate_window; /* seconds, default 20 */
        uint32_t window_bytes;    /* unacknowledged chunk bytes per connection, default 32 MiB */
        uint32_t max_inflight;    /* unanswered requests per connection, default 64 */
        uint64_t upload_expiry;   /* seconds an upload session lives, default 7 days */
        uint64_t file_expiry;     /* seconds a file lives when the client asks for none,
                                     default 30 days */
        unsigned audit_interval;  /* seconds between mark-and-sweep audits of the store
                                     (chp_store_audit), default 6 h; 0 = none. Unreferenced
                                     chunks are kept upload_expiry before they are freed */
        uint64_t memory_limit;    /* bytes of chunk buffers across all connections, default 1 GiB */
        char *cors_origins;       /* Access-Control-Allow-Origin for browsers: "*" (default), or a
                                     space-separated list of origins echoed when they match */
        char *cors_headers;       /* request headers browsers may send besides the tus ones and
                                     Authorization (Access-Control-Allow-Headers): header names
                                     separated by spaces or commas; NULL (default): none */
        uint32_t tus_chunk_size;  /* chunks tus uploads are cut into: power of two, 64 KiB..8 MiB,
                                     default 1 MiB */
        uint64_t tus_max_size;    /* Tus-Max-Size, default 64 GiB */
        /* limits per client address (IPv4 /32, IPv6 /64) and per token subject (client_limits.h);
           0 = unlimited. Loopback addresses are exempt from the per-address ones unless
           limit_loopback is set. */
        uint32_t max_connections_per_address; /* open at once, default 256 */
        uint32_t uploads_per_minute;          /* new uploads per address and per subject,
                                                 default 120 (a burst of that many) */
        uint64_t upload_rate_per_address;     /* bytes/s read from one address, default 0 */
        uint64_t download_rate_per_address;   /* bytes/s sent to one address, default 0 */
        uint32_t max_incomplete_per_address;  /* uploads begun and not committed, default 1000 */
        bool limit_loopback;                  /* default false: loopback is exempt */
        uint32_t max_connections_per_subject; /* native connections that presented one subject's
                                                 tokens, open at once, default 256 */
        uint64_t upload_rate_per_subject;     /* bytes/s read from one subject's native
                                                 connections, default 0 */
        uint32_t max_incomplete_per_subject;  /* uploads begun and not committed, default 1000 */
        uint64_t fetch_timeout;   /* seconds a federation fetch may take, default 10 min */
        uint32_t fetch_min_rate;  /* bytes/s a peer must send a fetch, over 10 s; 0 = no floor;
                                     default 1 KiB */
        unsigned fetch_workers_per_peer; /* fetches running against one peer, default 2 */
        char *congestion_control;        /* TCP congestion control of the relay's sockets (accepted
                                            and federation): an algorithm's name, or "system" (the
                                            kernel's default); default "bbr"; takes a restart */
        /* [store] backend = rados: the cluster's ceph.conf, the pool, the client name (without
           "client."); NULL until set; chp_config_finish points store.rados_* at them */
        char *rados_conf, *rados_pool, *rados_user;
        struct chp_store_opts store; /* store.dir is set from data_dir by chp_config_finish */
        struct chp_peer_config peers[CHP_MAX_PEERS];
        unsigned npeers;
        struct chp_tenant_config *tenants; /* ntenants of them, in file order, distinct names;
                                              owned by the config, as immutable as the rest */
        unsigned ntenants;                 /* 0..CHP_MAX_TENANTS */
        char *audiences[CHP_AUDIENCES_MAX]; /* [server] audience = NAME: names a token's audience
                                               may give for this relay (chp_token_name_valid),
                                               distinct, in file order; owned by the config */
        unsigned naudiences;                /* 0..CHP_AUDIENCES_MAX */
};

void chp_config_defaults(struct chp_config *c);
void chp_config_free(struct chp_config *c);

/* The value of --config in argv (argv[0] is the program), or NULL. */
const char *chp_config_find_file(int argc, char **argv);

/* Overlays the INI file at path. Unknown sections or keys and bad values are errors. */
int chp_config_load_file(struct chp_config *c, const char *path, char err[CHP_CONFIG_ERR_MAX]);

/* Overlays flags from argv[0..argc) (no program name; --config FILE is accepted and skipped).
 * Unknown flags, missing values and bad values are errors. */
int chp_config_parse_args(struct chp_config *c, int argc, char **argv,
                          char err[CHP_CONFIG_ERR_MAX]);

/* Checks cross-field rules (e.g. --insecure-plaintext only with a loopback --listen, the
 * no-tenant rule of chp_config_check_access) and fills derived fields (store.dir, store.sync). */
int chp_config_finish(struct chp_config *c, char err[CHP_CONFIG_ERR_MAX]);

/* The no-tenant rule: -EINVAL, with what to do in err, when --listen or --http (unless off) is
 * not a loopback address while no tenant is configured and open is off; else 0. */
int chp_config_check_access(const struct chp_config *c, char err[CHP_CONFIG_ERR_MAX]);

/* One line for the start-up log saying who may upload: loopback clients only (no tenant), anyone
 * (open), or token holders of N tenants (and the XMPP domains among them, which also take signed
 * URLs). A static string or one in buf (cap bytes). */
const char *chp_config_describe_access(const struct chp_config *c, char *buf, size_t cap);

/* Reload (SIGHUP): next is a fresh configuration (defaults, file, flags, finished) and running
 * the one in use. Every setting that only a restart changes (all but log_level, the limits and
 * timeouts, cors_origins, cors_headers, tus_chunk_size, tus_max_size, open, the peers, the
 * tenants and the audience names) is given running's value in next; changed(ctx, key) is called
 * for each that differed (the file asked for a change that needs a restart). Tenants and audience
 * names are next's own: a reload adds and removes tenants and names, rotates their keys and
 * changes their limits. Returns 0, or -ENOMEM with next partly updated (the caller frees it). The
 * caller then checks next with chp_config_check_access: a listen address kept from running may
 * need the tenants or the open the file no longer has. */
int chp_config_keep_restart_settings(struct chp_config *next, const struct chp_config *running,
                                     void (*changed)(void *ctx, const char *key), void *ctx);

/* The tenant named name (len bytes, not NUL-terminated), or NULL. Borrowed from c. */
const struct chp_tenant_config *chp_config_find_tenant(const struct chp_config *c, const char *name,
                                                       size_t len);

/* t's key with this id, or NULL. Borrowed from t. */
const struct chp_tenant_key *chp_tenant_find_key(const struct chp_tenant_config *t,
                                                 const uint8_t kid[CHP_TENANT_KID_BYTES]);

/* Whether host (a literal address or "localhost") is loopback: 127.0.0.0/8 or ::1. */
bool chp_config_is_loopback(const char *host);

#endif
