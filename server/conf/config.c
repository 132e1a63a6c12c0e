/* config.c — chapard's settings: one table of settings drives both the INI file and the flags.
 *
 * The INI file is read through libinih's ini_parse_stream with our own line reader, which
 *   - counts lines, so every error names PATH:LINE (libinih 55 does not pass line numbers),
 *   - strips leading whitespace, so indented keys are plain keys (libinih would otherwise take an
 *     indented line as the continuation of the previous value) and values never span lines,
 *   - recognises section headers itself, so [peer "NAME"] names are not cut at libinih's 50-byte
 *     section buffer and a section with no keys is still checked (and a second [peer "a"] is a
 *     duplicate even when it follows the first),
 *   - stops at the first error, so the message reported is the first one.
 * Lines are limited to the length libinih was built with (200 bytes on Debian); longer lines are an
 * error rather than being cut in two.
 *
 * Numbers are all-digit strings (no sign, no spaces) parsed with strtoull and checked for overflow
 * after the suffix is applied; every number has a lower and upper bound. Durations of 0 are
 * rejected (none of them has a "never" meaning), except audit_interval's (0: no audit).
 * window_bytes below one largest chunk frame is an error, not clamped: a connection with that
 * window could never send a full chunk.
 *
 * [tenant "NAME"] sections have a table of their own (tenant_settings, offsets into struct
 * chp_tenant_config) for the limits, which also take "unlimited"; token_key is repeatable and
 * parsed by hand. A tenant's public key must be a point libsodium would verify against (canonical,
 * on the curve, not of small order): a key that can never verify is an error at start-up, not a
 * tenant whose every token is refused. Who may upload, given the tenants and --open, is in
 * access.c.
 *
 * At about 1,000 lines this file is over the project's usual size: it is one parser (the settings
 * tables, the INI reader and the flags share its private state: the table entries, the line
 * reader's position, the section being read), and a split would put that state in a header.
 */
#include "config.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <ini.h>
#include <sodium.h>

#include "hash.h"
#include "manifest.h"
#include "net.h"
#include "token.h"

/* One largest chunk frame (CHP_CHUNK_FRAME_MAX of common/proto.h): the least window that lets a
 * connection send a full chunk. */
#define MIN_WINDOW    ((uint64_t)CHP_CHUNK_MAX + 64)
#define MAX_THREADS   64
#define PEER_NAME_MAX 64
_Static_assert(PEER_NAME_MAX == CHP_TENANT_NAME_MAX, "check_name's message says one maximum");
#define KID_HEX       (2 * CHP_TENANT_KID_BYTES)
#define PUBKEY_HEX    (2 * CHP_TENANT_PUBKEY_BYTES)
#define MIN_MAP_SIZE  ((uint64_t)1 << 20)
#define MIN_SEGMENT   ((uint64_t)CHP_CHUNK_MAX)
#define LOOPBACK_RULE                                                                              \
        "--insecure-plaintext is allowed only on a loopback --listen address "                     \
        "(127.0.0.0/8, ::1)"

_Static_assert(sizeof(unsigned) == sizeof(uint32_t), "unsigned fields are stored as uint32_t");
_Static_assert(CHP_TENANT_PUBKEY_BYTES == crypto_sign_PUBLICKEYBYTES, "an Ed25519 public key");
_Static_assert(CHP_TENANT_PUBKEY_BYTES == crypto_core_ed25519_BYTES, "an Ed25519 point");

enum section { SEC_NONE, SEC_SERVER, SEC_STORE, SEC_PEER, SEC_TENANT };

enum kind {
        K_STRING,    /* char *, non-empty */
        K_HOSTPORT,  /* char *, HOST:PORT */
        K_HEADERS,   /* char *, HTTP header names separated by spaces or commas */
        K_CCNAME,    /* char *, a TCP congestion control's name (congestion_name_ok) */
        K_FLAG,      /* bool; a flag without a value, a boolean in the file */
        K_SYNC,      /* enum chp_sync */
        K_BACKEND,   /* enum chp_store_backend: local or rados */
        K_LOGLEVEL,  /* enum chp_log_level */
        K_LOGFORMAT, /* enum chp_log_format */
        K_NUMBER,    /* plain whole number */
        K_SIZE,      /* bytes, optional K/M/G suffix */
        K_DURATION,  /* seconds, optional s/m/h/d suffix */
        K_INLINE,    /* a size, or "all" for CHP_STORE_INLINE_ALL */
        K_RATIO,     /* double in [0, 1] */
};

struct setting {
        enum section sec;
        const char *key;  /* in the INI file */
        const char *flag; /* command line, without "--"; NULL: file only */
        enum kind kind;
        size_t off;   /* of the field in struct chp_config (struct chp_tenant_config for
                         tenant_settings) */
        size_t width; /* of a numeric field: 4 or 8 bytes */
        uint64_t min, max;
        bool unlimited; /* a number that may also be "unlimited": CHP_UNLIMITED (width 8) */
};

#define FIELD(f)  offsetof(struct chp_config, f), sizeof(((struct chp_config *)0)->f)
#define TFIELD(f) offsetof(struct chp_tenant_config, f), sizeof(((struct chp_tenant_config *)0)->f)

static const struct setting settings[] = {
    {SEC_SERVER, "data", "data", K_STRING, FIELD(data_dir), 0, 0},
    {SEC_SERVER, "listen", "listen", K_HOSTPORT, FIELD(listen), 0, 0},
    {SEC_SERVER, "http", "http", K_HOSTPORT, FIELD(http), 0, 0},
    {SEC_SERVER, "threads", "threads", K_NUMBER, FIELD(threads), 1, MAX_THREADS},
    {SEC_SERVER, "sync", "sync", K_SYNC, FIELD(sync), 0, 0},
    {SEC_SERVER, "key", "key", K_STRING, FIELD(key_file), 0, 0},
    {SEC_SERVER, "insecure_plaintext", "insecure-plaintext", K_FLAG, FIELD(insecure_plaintext), 0,
     0},
    {SEC_SERVER, "open", "open", K_FLAG, FIELD(open), 0, 0},
    {SEC_SERVER, "ready_file", "ready-file", K_STRING, FIELD(ready_file), 0, 0},
    {SEC_SERVER, "admin_listen", "admin-listen", K_STRING, FIELD(admin_listen), 0, 0},
    {SEC_SERVER, "admin_key", "admin-key", K_STRING, FIELD(admin_key), 0, 0},
    {SEC_SERVER, "log_level", "log-level", K_LOGLEVEL, FIELD(log_level), 0, 0},
    {SEC_SERVER, "access_log", "access-log", K_STRING, FIELD(access_log), 0, 0},
    {SEC_SERVER, "log_format", "log-format", K_LOGFORMAT, FIELD(log_format), 0, 0},
    {SEC_SERVER, "max_connections", NULL, K_NUMBER, FIELD(max_connections), 1, UINT32_MAX},
    {SEC_SERVER, "idle_timeout", NULL, K_DURATION, FIELD(idle_timeout), 1, UINT32_MAX},
    {SEC_SERVER, "io_timeout", NULL, K_DURATION, FIELD(io_timeout), 1, UINT32_MAX},
    {SEC_SERVER, "header_timeout", NULL, K_DURATION, FIELD(header_timeout), 1, UINT32_MAX},
    {SEC_SERVER, "handshake_timeout", NULL, K_DURATION, FIELD(handshake_timeout), 1, UINT32_MAX},
    {SEC_SERVER, "min_body_rate", NULL, K_SIZE, FIELD(min_body_rate), 0, UINT32_MAX},
    {SEC_SERVER, "body_rate_window", NULL, K_DURATION, FIELD(body_rate_window), 1, UINT32_MAX},
    {SEC_SERVER, "window_bytes", NULL, K_SIZE, FIELD(window_bytes), MIN_WINDOW, UINT32_MAX},
    {SEC_SERVER, "max_inflight", NULL, K_NUMBER, FIELD(max_inflight), 1, UINT32_MAX},
    {SEC_SERVER, "upload_expiry", NULL, K_DURATION, FIELD(upload_expiry), 1, UINT64_MAX},
    {SEC_SERVER, "file_expiry", NULL, K_DURATION, FIELD(file_expiry), 1, UINT64_MAX},
    {SEC_SERVER, "audit_interval", NULL, K_DURATION, FIELD(audit_interval), 0, UINT32_MAX},
    {SEC_SERVER, "memory_limit", NULL, K_SIZE, FIELD(memory_limit), MIN_WINDOW, UINT64_MAX},
    {SEC_SERVER, "cors_origins", NULL, K_STRING, FIELD(cors_origins), 0, 0},
    {SEC_SERVER, "cors_headers", NULL, K_HEADERS, FIELD(cors_headers), 0, 0},
    {SEC_SERVER, "tus_chunk_size", NULL, K_SIZE, FIELD(tus_chunk_size), 64 * 1024, 8 << 20},
    {SEC_SERVER, "tus_max_size", NULL, K_SIZE, FIELD(tus_max_size), 1, (uint64_t)1 << 40},
    {SEC_SERVER, "max_connections_per_address", NULL, K_NUMBER, FIELD(max_connections_per_address),
     0, UINT32_MAX},
    {SEC_SERVER, "uploads_per_minute", NULL, K_NUMBER, FIELD(uploads_per_minute), 0, UINT32_MAX},
    {SEC_SERVER, "upload_rate_per_address", NULL, K_SIZE, FIELD(upload_rate_per_address), 0,
     UINT64_MAX},
    {SEC_SERVER, "download_rate_per_address", NULL, K_SIZE, FIELD(download_rate_per_address), 0,
     UINT64_MAX},
    {SEC_SERVER, "max_incomplete_per_address", NULL, K_NUMBER, FIELD(max_incomplete_per_address), 0,
     UINT32_MAX},
    {SEC_SERVER, "limit_loopback", NULL, K_FLAG, FIELD(limit_loopback), 0, 0},
    {SEC_SERVER, "max_connections_per_subject", NULL, K_NUMBER, FIELD(max_connections_per_subject),
     0, UINT32_MAX},
    {SEC_SERVER, "upload_rate_per_subject", NULL, K_SIZE, FIELD(upload_rate_per_subject), 0,
     UINT64_MAX},
    {SEC_SERVER, "max_incomplete_per_subject", NULL, K_NUMBER, FIELD(max_incomplete_per_subject), 0,
     UINT32_MAX},
    {SEC_SERVER, "fetch_timeout", NULL, K_DURATION, FIELD(fetch_timeout), 1, 7ull * 24 * 3600},
    {SEC_SERVER, "fetch_min_rate", NULL, K_SIZE, FIELD(fetch_min_rate), 0, UINT32_MAX},
    {SEC_SERVER, "congestion_control", NULL, K_CCNAME, FIELD(congestion_control), 0, 0},
    {SEC_SERVER, "fetch_workers_per_peer", NULL, K_NUMBER, FIELD(fetch_workers_per_peer), 1, 64},
    {SEC_STORE, "inline_max", NULL, K_INLINE, FIELD(store.inline_max), 0, UINT32_MAX},
    {SEC_STORE, "map_size", NULL, K_SIZE, FIELD(store.map_size), MIN_MAP_SIZE, UINT64_MAX},
    {SEC_STORE, "segment_size", NULL, K_SIZE, FIELD(store.segment_size), MIN_SEGMENT, UINT64_MAX},
    {SEC_STORE, "compact_ratio", NULL, K_RATIO, FIELD(store.compact_ratio), 0, 0},
    {SEC_STORE, "backend", "store", K_BACKEND, FIELD(store.backend), 0, 0},
    {SEC_STORE, "rados_conf", "rados-conf", K_STRING, FIELD(rados_conf), 0, 0},
    {SEC_STORE, "rados_pool", "rados-pool", K_STRING, FIELD(rados_pool), 0, 0},
    {SEC_STORE, "rados_user", "rados-user", K_STRING, FIELD(rados_user), 0, 0},
    {SEC_STORE, "rados_inflight", NULL, K_NUMBER, FIELD(store.rados_inflight), 1, 4096},
    {SEC_STORE, "rados_op_timeout", NULL, K_DURATION, FIELD(store.rados_op_timeout), 1, 3600},
    {SEC_STORE, "cache_size", NULL, K_SIZE, FIELD(store.cache_size), 0, UINT64_MAX},
    {SEC_STORE, "rados_shared", "rados-shared", K_FLAG, FIELD(store.rados_shared), 0, 0},
    {SEC_STORE, "gc_grace", NULL, K_DURATION, FIELD(store.gc_grace), 1, 7ull * 24 * 3600},
};

#define NSETTINGS (sizeof(settings) / sizeof(settings[0]))

/* A [tenant "NAME"] section's limits; each is CHP_UNLIMITED until set (token_key: on_token_key). */
static const struct setting tenant_settings[] = {
    {SEC_TENANT, "max_stored", NULL, K_SIZE, TFIELD(max_stored), 1, UINT64_MAX, true},
    {SEC_TENANT, "max_uploaded_per_day", NULL, K_SIZE, TFIELD(max_uploaded_per_day), 1, UINT64_MAX,
     true},
    {SEC_TENANT, "max_file_size", NULL, K_SIZE, TFIELD(max_file_size), 1, UINT64_MAX, true},
    {SEC_TENANT, "max_file_life", NULL, K_DURATION, TFIELD(max_file_life), 1, UINT64_MAX, true},
    {SEC_TENANT, "max_concurrent_uploads", NULL, K_NUMBER, TFIELD(max_concurrent_uploads), 1,
     UINT64_MAX, true},
    {SEC_TENANT, "max_incomplete_uploads", NULL, K_NUMBER, TFIELD(max_incomplete_uploads), 1,
     UINT64_MAX, true},
};

#define NTENANT_SETTINGS (sizeof(tenant_settings) / sizeof(tenant_settings[0]))

/* ---- defaults and free ------------------------------------------------------------------- */

/* A strdup failure leaves the field NULL; chp_config_finish reports it as -ENOMEM. */
void chp_config_defaults(struct chp_config *c)
{
        memset(c, 0, sizeof(*c));
        c->data_dir = strdup("./data");
        c->listen = strdup("127.0.0.1:7700");
        c->http = strdup("127.0.0.1:7780");
        c->cors_origins = strdup("*");
        c->congestion_control = strdup("bbr");
        c->tus_chunk_size = 1024 * 1024;
        c->tus_max_size = (uint64_t)64 << 30;
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        c->threads = n < 1 ? 1 : n > MAX_THREADS ? MAX_THREADS : (unsigned)n;
        c->sync = CHP_SYNC_FULL;
        c->key_file = NULL;
        c->insecure_plaintext = false;
        c->open = false;
        c->ready_file = NULL;
        c->log_level = CHP_LOG_INFO;
        c->max_connections = 20000;
        c->idle_timeout = 120;
        c->io_timeout = 30;
        c->header_timeout = 20;
        c->handshake_timeout = 10;
        c->min_body_rate = 1024;
        c->body_rate_window = 20;
        c->window_bytes = 32u << 20;
        c->max_inflight = 64;
        c->upload_expiry = 7ull * 24 * 3600;
        c->file_expiry = 30ull * 24 * 3600;
        c->audit_interval = 6 * 3600;
        c->memory_limit = 1ull << 30;
        c->max_connections_per_address = 256;
        c->uploads_per_minute = 120;
        c->upload_rate_per_address = 0;
        c->download_rate_per_address = 64ull << 20;
        c->max_incomplete_per_address = 1000;
        c->limit_loopback = false;
        c->max_connections_per_subject = 256;
        c->upload_rate_per_subject = 0;
        c->max_incomplete_per_subject = 1000;
        c->fetch_timeout = 600;
        c->fetch_min_rate = 1024;
        c->fetch_workers_per_peer = 2;
        chp_store_opts_default(&c->store);
        c->store.dir = c->data_dir;
        c->store.sync = c->sync;
        c->npeers = 0;
        c->tenants = NULL;
        c->ntenants = 0;
}

void chp_config_free(struct chp_config *c)
{
        if (!c)
                return;
        free(c->data_dir);
        free(c->listen);
        free(c->http);
        free(c->cors_origins);
        free(c->cors_headers);
        free(c->congestion_control);
        c->congestion_control = NULL;
        free(c->key_file);
        free(c->ready_file);
        free(c->access_log);
        c->access_log = NULL;
        free(c->admin_listen);
        free(c->admin_key);
        c->admin_listen = c->admin_key = NULL;
        free(c->rados_conf);
        free(c->rados_pool);
        free(c->rados_user);
        c->rados_conf = c->rados_pool = c->rados_user = NULL;
        c->store.rados_conf = c->store.rados_pool = c->store.rados_user = NULL;
        c->data_dir = c->listen = c->http = c->key_file = c->ready_file = c->cors_origins = NULL;
        c->cors_headers = NULL;
        c->store.dir = NULL;
        for (unsigned i = 0; i < c->npeers; i++) {
                free(c->peers[i].name);
                free(c->peers[i].address);
                free(c->peers[i].pubkey);
                c->peers[i] = (struct chp_peer_config){0};
        }
        c->npeers = 0;
        for (unsigned i = 0; i < c->ntenants; i++) {
                free(c->tenants[i].name);
                sodium_memzero(c->tenants[i].xmpp_secret, sizeof(c->tenants[i].xmpp_secret));
        }
        free(c->tenants);
        c->tenants = NULL;
        c->ntenants = 0;
        for (unsigned i = 0; i < c->naudiences; i++)
                free(c->audiences[i]);
        c->naudiences = 0;
}

/* ---- addresses --------------------------------------------------------------------------- */

bool chp_config_is_loopback(const char *host)
{
        if (!host)
                return false;
        if (strcasecmp(host, "localhost") == 0)
                return true;
        struct in_addr a4;
        if (inet_pton(AF_INET, host, &a4) == 1)
                return ((const uint8_t *)&a4.s_addr)[0] == 127;
        struct in6_addr a6;
        if (inet_pton(AF_INET6, host, &a6) == 1)
                return IN6_IS_ADDR_LOOPBACK(&a6);
        return false;
}

/* ---- values ------------------------------------------------------------------------------ */

/* An all-digit number with the suffixes kind allows. -EINVAL for junk, -ERANGE on overflow. */
static int parse_scaled(const char *s, enum kind kind, uint64_t *out)
{
        if (!isdigit((unsigned char)s[0]))
                return -EINVAL;
        char *end;
        errno = 0;
        unsigned long long v = strtoull(s, &end, 10);
        if (errno == ERANGE)
                return -ERANGE;
        static const char size_units[] = "KMG", time_units[] = "smhd";
        static const uint64_t size_mul[] = {1ull << 10, 1ull << 20, 1ull << 30},
                              time_mul[] = {1, 60, 3600, 86400};
        uint64_t mul = 1;
        if (*end) {
                bool is_time = kind == K_DURATION;
                const char *units = is_time                              ? time_units
                                    : kind == K_SIZE || kind == K_INLINE ? size_units
                                                                         : "";
                char unit = is_time ? *end : (char)toupper((unsigned char)*end);
                const char *hit = end[1] == '\0' ? strchr(units, unit) : NULL;
                if (!hit)
                        return -EINVAL;
                mul = (is_time ? time_mul : size_mul)[hit - units];
        }
        if (v > UINT64_MAX / mul)
                return -ERANGE;
        *out = (uint64_t)v * mul;
        return 0;
}

static const char *number_form(enum kind kind)
{
        switch (kind) {
        case K_SIZE:
                return "a byte count with an optional K, M or G suffix";
        case K_INLINE:
                return "a byte count with an optional K, M or G suffix, or \"all\"";
        case K_DURATION:
                return "seconds with an optional s, m, h or d suffix";
        default:
                return "a whole number";
        }
}

static int parse_bool(const char *s, bool *out)
{
        static const char *const yes[] = {"true", "yes", "on", "1"};
        static const char *const no[] = {"false", "no", "off", "0"};
        for (size_t i = 0; i < 4; i++) {
                if (strcasecmp(s, yes[i]) == 0) {
                        *out = true;
                        return 0;
                }
                if (strcasecmp(s, no[i]) == 0) {
                        *out = false;
                        return 0;
                }
        }
        return -EINVAL;
}

static int set_string(char **dst, const char *v)
{
        char *copy = strdup(v);
        if (!copy)
                return -ENOMEM;
        free(*dst);
        *dst = copy;
        return 0;
}

static void store_number(void *field, size_t width, uint64_t v)
{
        if (width == sizeof(uint32_t)) {
                uint32_t v32 = (uint32_t)v;
                memcpy(field, &v32, sizeof(v32));
        } else {
                memcpy(field, &v, sizeof(v));
        }
}

/* Whether v may name a TCP congestion control: 1..CHP_NET_CC_MAX-1 lowercase letters, digits, '_'
 * and '-' (the kernel's names are shorter than TCP_CA_NAME_MAX, 16, and made of these). */
static bool congestion_name_ok(const char *v)
{
        size_t n = strlen(v);
        if (n == 0 || n >= CHP_NET_CC_MAX)
                return false;
        for (size_t i = 0; i < n; i++)
                if (!((v[i] >= 'a' && v[i] <= 'z') || (v[i] >= '0' && v[i] <= '9') || v[i] == '_' ||
                      v[i] == '-'))
                        return false;
        return true;
}

/* Whether v is a list of HTTP field names (RFC 9110 5.1: tokens) separated by spaces or commas:
 * it is copied into Access-Control-Allow-Headers, so nothing else may reach a response head. */
static bool header_names_ok(const char *v)
{
        static const char tchar[] = "!#$%&'*+-.^_`|~";
        size_t n = strlen(v), names = 0;
        if (n > CHP_CORS_HEADERS_MAX)
                return false;
        for (size_t i = 0; i < n;) {
                if (v[i] == ' ' || v[i] == ',') {
                        i++;
                        continue;
                }
                size_t j = i;
                while (j < n && (isalnum((unsigned char)v[j]) || (v[j] && strchr(tchar, v[j]))))
                        j++;
                if (j == i || (j < n && v[j] != ' ' && v[j] != ','))
                        return false;
                names++;
                i = j;
        }
        return names > 0;
}

/* Sets s's field of base (the struct s->off counts in) from v. On failure writes why v was
 * refused into why (cap bytes) and returns -EINVAL (or -ENOMEM); base is unchanged then. */
static int apply(void *base, const struct setting *s, const char *v, char *why, size_t cap)
{
        void *field = (char *)base + s->off;
        if (v[0] == '\0') {
                snprintf(why, cap, "must not be empty");
                return -EINVAL;
        }
        switch (s->kind) {
        case K_HOSTPORT: {
                char host[CHP_NET_HOST_MAX];
                uint16_t port;
                bool off = strcmp(s->key, "http") == 0 && strcmp(v, "off") == 0;
                if (!off && chp_net_split_hostport(v, host, sizeof(host), &port) != 0) {
                        snprintf(why, cap, "expected HOST:PORT or [IPv6]:PORT, port 0..65535");
                        return -EINVAL;
                }
        }
                /* fall through */
        case K_CCNAME:
                if (s->kind == K_CCNAME && !congestion_name_ok(v)) {
                        snprintf(why, cap,
                                 "expected system or an algorithm's name (lowercase letters, "
                                 "digits, '_' and '-'), at most %d characters",
                                 CHP_NET_CC_MAX - 1);
                        return -EINVAL;
                }
                /* fall through */
        case K_HEADERS:
                if (s->kind == K_HEADERS && !header_names_ok(v)) {
                        snprintf(why, cap,
                                 "expected header names (letters, digits, !#$%%&'*+-.^_`|~) "
                                 "separated by spaces or commas, at most %d characters",
                                 CHP_CORS_HEADERS_MAX);
                        return -EINVAL;
                }
                /* fall through */
        case K_STRING:
                if (set_string((char **)field, v) != 0) {
                        snprintf(why, cap, "out of memory");
                        return -ENOMEM;
                }
                return 0;
        case K_FLAG:
                if (parse_bool(v, (bool *)field) != 0) {
                        snprintf(why, cap, "expected true/false, yes/no, on/off or 1/0");
                        return -EINVAL;
                }
                return 0;
        case K_BACKEND:
                if (strcmp(v, "local") == 0)
                        *(enum chp_store_backend *)field = CHP_STORE_LOCAL;
                else if (strcmp(v, "rados") == 0)
                        *(enum chp_store_backend *)field = CHP_STORE_RADOS;
                else {
                        snprintf(why, cap, "expected local or rados");
                        return -EINVAL;
                }
                return 0;
        case K_SYNC:
                if (strcmp(v, "full") == 0)
                        *(enum chp_sync *)field = CHP_SYNC_FULL;
                else if (strcmp(v, "none") == 0)
                        *(enum chp_sync *)field = CHP_SYNC_NONE;
                else {
                        snprintf(why, cap, "expected full or none");
                        return -EINVAL;
                }
                return 0;
        case K_LOGLEVEL: {
                enum chp_log_level level;
                if (chp_log_parse_level(v, &level) != 0) {
                        snprintf(why, cap, "expected error, warn, info or debug");
                        return -EINVAL;
                }
                *(enum chp_log_level *)field = level;
                return 0;
        }
        case K_LOGFORMAT: {
                enum chp_log_format format;
                if (chp_log_parse_format(v, &format) != 0) {
                        snprintf(why, cap, "expected logfmt or json");
                        return -EINVAL;
                }
                *(enum chp_log_format *)field = format;
                return 0;
        }
        case K_RATIO: {
                char *end;
                double d = strtod(v, &end);
                if ((!isdigit((unsigned char)v[0]) && v[0] != '.') || *end || !(d >= 0 && d <= 1)) {
                        snprintf(why, cap, "expected a number from 0 to 1");
                        return -EINVAL;
                }
                *(double *)field = d;
                return 0;
        }
        case K_INLINE:
                if (strcmp(v, "all") == 0) {
                        store_number(field, s->width, CHP_STORE_INLINE_ALL);
                        return 0;
                }
                /* fall through */
        case K_NUMBER:
        case K_SIZE:
        case K_DURATION: {
                if (s->unlimited && strcmp(v, "unlimited") == 0) {
                        store_number(field, s->width, CHP_UNLIMITED);
                        return 0;
                }
                uint64_t n;
                int rc = parse_scaled(v, s->kind, &n);
                if (rc == -EINVAL) {
                        snprintf(why, cap, "expected %s%s", number_form(s->kind),
                                 s->unlimited ? ", or \"unlimited\"" : "");
                        return -EINVAL;
                }
                if (rc == -ERANGE) {
                        snprintf(why, cap, "too large");
                        return -EINVAL;
                }
                if (n < s->min || n > s->max) {
                        if (s->max == UINT64_MAX)
                                snprintf(why, cap, "must be at least %llu",
                                         (unsigned long long)s->min);
                        else
                                snprintf(why, cap, "must be from %llu to %llu",
                                         (unsigned long long)s->min, (unsigned long long)s->max);
                        return -EINVAL;
                }
                store_number(field, s->width, n);
                return 0;
        }
        }
        snprintf(why, cap, "unsupported setting");
        return -EINVAL;
}

/* ---- the INI file ------------------------------------------------------------------------ */

struct ini_ctx {
        struct chp_config *c;
        const char *path;
        FILE *f;
        char *line; /* getline's buffer */
        size_t line_cap;
        unsigned lineno; /* of the line last handed to libinih */
        enum section sec;
        struct chp_peer_config *peer; /* while sec == SEC_PEER */
        unsigned first_new_peer;      /* peers before this one came from elsewhere */
        unsigned peer_line[CHP_MAX_PEERS];
        unsigned tenant;           /* c->tenants[tenant] while sec == SEC_TENANT */
        unsigned first_new_tenant; /* tenants before this one came from elsewhere */
        unsigned tenant_line[CHP_MAX_TENANTS];
        bool failed;
        unsigned err_line;
        int rc;
        char *err;
};

/* Records the first error as "PATH:LINE: message". */
__attribute__((format(printf, 3, 4))) static void fail(struct ini_ctx *x, int rc, const char *fmt,
                                                       ...)
{
        if (x->failed)
                return;
        x->failed = true;
        x->rc = rc;
        x->err_line = x->lineno;
        int n = snprintf(x->err, CHP_CONFIG_ERR_MAX, "%s:%u: ", x->path, x->lineno);
        if (n < 0 || n >= CHP_CONFIG_ERR_MAX)
                return;
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(x->err + n, CHP_CONFIG_ERR_MAX - (size_t)n, fmt, ap);
        va_end(ap);
}

/* A peer or tenant name: 1..max letters, digits, '-', '_', '.'. */
static bool valid_name(const char *s, size_t len, size_t max)
{
        if (len == 0 || len > max)
                return false;
        for (size_t i = 0; i < len; i++) {
                unsigned char ch = (unsigned char)s[i];
                if (!isalnum(ch) && ch != '-' && ch != '_' && ch != '.')
                        return false;
        }
        return true;
}

static bool valid_peer_name(const char *s, size_t len)
{
        return valid_name(s, len, PEER_NAME_MAX);
}

static bool valid_tenant_name(const char *s, size_t len)
{
        return valid_name(s, len, CHP_TENANT_NAME_MAX);
}

/* Whether valid(name, nlen); when not, says so as the error of a WORD section. */
static bool check_name(struct ini_ctx *x, const char *word, bool (*valid)(const char *, size_t),
                       const char *name, size_t nlen)
{
        if (valid(name, nlen))
                return true;
        fail(x, -EINVAL, "%s name '%.*s' must be 1 to %d letters, digits, '-', '_' or '.'", word,
             (int)nlen, name, PEER_NAME_MAX);
        return false;
}

/* The NAME of [WORD "NAME"], b..e being the header's text without brackets (trimmed): true with
 * *name and *len set when the text is WORD, blanks, a quoted name. Else false: not this word. A
 * header that is this word but not quoted is an error (x->failed set). */
static bool quoted_name(struct ini_ctx *x, const char *b, const char *e, const char *word,
                        const char **name, size_t *len)
{
        size_t wlen = strlen(word);
        if ((size_t)(e - b) <= wlen || memcmp(b, word, wlen) != 0 ||
            (b[wlen] != ' ' && b[wlen] != '\t'))
                return false;
        const char *q = b + wlen;
        while (*q == ' ' || *q == '\t')
                q++;
        if (*q != '"' || e - q < 2 || e[-1] != '"') {
                fail(x, -EINVAL, "expected [%s \"NAME\"]", word);
                return false;
        }
        *name = q + 1;
        *len = (size_t)(e - 1 - *name);
        return true;
}

/* Opens [tenant "NAME"]: a new tenant with no key and every limit unlimited. */
static void begin_tenant(struct ini_ctx *x, const char *name, size_t nlen)
{
        if (!check_name(x, "tenant", valid_tenant_name, name, nlen))
                return;
        struct chp_config *c = x->c;
        if (chp_config_find_tenant(c, name, nlen)) {
                fail(x, -EINVAL, "duplicate [tenant \"%.*s\"]", (int)nlen, name);
                return;
        }
        if (c->ntenants >= CHP_MAX_TENANTS) {
                fail(x, -EINVAL, "too many tenants (at most %d)", CHP_MAX_TENANTS);
                return;
        }
        struct chp_tenant_config *grown =
            realloc(c->tenants, (c->ntenants + 1) * sizeof(*c->tenants));
        if (!grown) {
                fail(x, -ENOMEM, "out of memory");
                return;
        }
        c->tenants = grown;
        struct chp_tenant_config *t = &c->tenants[c->ntenants];
        *t = (struct chp_tenant_config){
            .max_stored = CHP_UNLIMITED,
            .max_uploaded_per_day = CHP_UNLIMITED,
            .max_file_size = CHP_UNLIMITED,
            .max_file_life = CHP_UNLIMITED,
            .max_concurrent_uploads = CHP_UNLIMITED,
            .max_incomplete_uploads = CHP_UNLIMITED,
        };
        t->name = strndup(name, nlen);
        if (!t->name) {
                fail(x, -ENOMEM, "out of memory");
                return;
        }
        x->tenant_line[c->ntenants] = x->lineno;
        x->tenant = c->ntenants++;
        x->sec = SEC_TENANT;
}

/* A section header line, s starting at '['. */
static void begin_section(struct ini_ctx *x, const char *s)
{
        x->sec = SEC_NONE;
        x->peer = NULL;
        const char *close = strchr(s, ']');
        if (!close) {
                fail(x, -EINVAL, "section header without ']'");
                return;
        }
        const char *rest = close + 1;
        while (*rest == ' ' || *rest == '\t')
                rest++;
        if (*rest && *rest != ';' && *rest != '#' && *rest != '\r' && *rest != '\n') {
                fail(x, -EINVAL, "unexpected text after ']'");
                return;
        }
        const char *b = s + 1, *e = close;
        while (b < e && (*b == ' ' || *b == '\t'))
                b++;
        while (e > b && (e[-1] == ' ' || e[-1] == '\t'))
                e--;
        size_t len = (size_t)(e - b);
        if (len == 6 && memcmp(b, "server", 6) == 0) {
                x->sec = SEC_SERVER;
                return;
        }
        if (len == 5 && memcmp(b, "store", 5) == 0) {
                x->sec = SEC_STORE;
                return;
        }
        const char *name;
        size_t nlen;
        if (quoted_name(x, b, e, "tenant", &name, &nlen)) {
                begin_tenant(x, name, nlen);
                return;
        }
        if (x->failed)
                return;
        if (quoted_name(x, b, e, "peer", &name, &nlen)) {
                if (!check_name(x, "peer", valid_peer_name, name, nlen))
                        return;
                struct chp_config *c = x->c;
                for (unsigned i = 0; i < c->npeers; i++) {
                        if (strlen(c->peers[i].name) == nlen &&
                            memcmp(c->peers[i].name, name, nlen) == 0) {
                                fail(x, -EINVAL, "duplicate [peer \"%.*s\"]", (int)nlen, name);
                                return;
                        }
                }
                if (c->npeers >= CHP_MAX_PEERS) {
                        fail(x, -EINVAL, "too many peers (at most %d)", CHP_MAX_PEERS);
                        return;
                }
                struct chp_peer_config *p = &c->peers[c->npeers];
                *p = (struct chp_peer_config){0};
                p->name = strndup(name, nlen);
                if (!p->name) {
                        fail(x, -ENOMEM, "out of memory");
                        return;
                }
                x->peer_line[c->npeers] = x->lineno;
                c->npeers++;
                x->sec = SEC_PEER;
                x->peer = p;
                return;
        }
        if (!x->failed)
                fail(x, -EINVAL, "unknown section [%.*s]", (int)len, b);
}

/* libinih's reader: one line per call, fgets-style. Returning NULL ends the parse. */
static char *read_line(char *str, int num, void *stream)
{
        struct ini_ctx *x = stream;
        if (x->failed)
                return NULL;
        errno = 0;
        ssize_t n = getline(&x->line, &x->line_cap, x->f);
        if (n < 0) {
                if (ferror(x->f)) {
                        int e = errno ? errno : EIO;
                        x->lineno++;
                        fail(x, -EINVAL, "cannot read: %s", strerror(e));
                }
                return NULL;
        }
        x->lineno++;
        if (memchr(x->line, '\0', (size_t)n)) {
                fail(x, -EINVAL, "NUL byte in line");
                return NULL;
        }
        char *s = x->line;
        if (x->lineno == 1 && n >= 3 && memcmp(s, "\xEF\xBB\xBF", 3) == 0)
                s += 3; /* a UTF-8 byte order mark, which libinih skips too */
        while (*s == ' ' || *s == '\t')
                s++;
        size_t len = (size_t)n - (size_t)(s - x->line);
        if (num < 4 || len + 1 > (size_t)num) {
                fail(x, -EINVAL, "line longer than %d bytes", num - 1);
                return NULL;
        }
        if (*s == '[') {
                begin_section(x, s);
                if (x->failed)
                        return NULL;
        }
        memcpy(str, s, len + 1);
        return str;
}

static const char *section_name(const struct ini_ctx *x)
{
        return x->sec == SEC_SERVER ? "server" : x->sec == SEC_STORE ? "store" : "peer";
}

/* token_key = KID:PUBLIC-KEY in tenant t: 16 and 64 hex digits (either case), a usable Ed25519
 * public key, a key id new in this tenant, at most CHP_TENANT_KEYS_MAX of them. */
static void on_token_key(struct ini_ctx *x, struct chp_tenant_config *t, const char *v)
{
        const char *why = NULL;
        struct chp_tenant_key k;
        const char *colon = strchr(v, ':');
        if (t->nkeys >= CHP_TENANT_KEYS_MAX) {
                fail(x, -EINVAL, "[tenant \"%s\"] token_key: more than %d keys in one tenant",
                     t->name, CHP_TENANT_KEYS_MAX);
                return;
        }
        if (v[0] == '\0')
                why = "must not be empty";
        else if (!colon)
                why = "expected KID:PUBLIC-KEY (16 and 64 hex digits, as chapard tenant-key "
                      "prints it)";
        else if (colon - v != KID_HEX || chp_hex_decode(v, KID_HEX, k.kid, sizeof(k.kid)) != 0)
                why = "the key id must be 16 hex digits";
        else if (strlen(colon + 1) != PUBKEY_HEX ||
                 chp_hex_decode(colon + 1, PUBKEY_HEX, k.pub, sizeof(k.pub)) != 0)
                why = "the public key must be 64 hex digits";
        else if (sodium_init() < 0)
                why = "libsodium cannot be initialised";
        else if (crypto_core_ed25519_is_valid_point(k.pub) != 1)
                why = "not a usable Ed25519 public key (not a canonical point of the curve's "
                      "prime-order group)";
        if (why) {
                fail(x, -EINVAL, "[tenant \"%s\"] token_key = '%s': %s", t->name, v, why);
                return;
        }
        if (chp_tenant_find_key(t, k.kid)) {
                char hex[KID_HEX + 1];
                chp_hex_encode(k.kid, sizeof(k.kid), hex);
                fail(x, -EINVAL, "[tenant \"%s\"] token_key: key id %s is there twice", t->name,
                     hex);
                return;
        }
        t->keys[t->nkeys++] = k;
}

/* A key in a [tenant "NAME"] section. Returns libinih's nonzero on success. */
static int on_tenant(struct ini_ctx *x, const char *name, const char *value)
{
        struct chp_tenant_config *t = &x->c->tenants[x->tenant];
        if (strcmp(name, "token_key") == 0) {
                on_token_key(x, t, value);
                return !x->failed;
        }
        if (strcmp(name, "xmpp_secret") == 0) {
                /* the value is never echoed: it is a secret */
                size_t n = strlen(value);
                if (n < CHP_XMPP_SECRET_MIN || n > CHP_XMPP_SECRET_MAX) {
                        fail(x, -EINVAL,
                             "[tenant \"%s\"] xmpp_secret: %zu bytes (it takes %d to %d)", t->name,
                             n, CHP_XMPP_SECRET_MIN, CHP_XMPP_SECRET_MAX);
                        return 0;
                }
                memcpy(t->xmpp_secret, value, n);
                t->xmpp_secret_len = n;
                return 1;
        }
        for (size_t i = 0; i < NTENANT_SETTINGS; i++) {
                const struct setting *s = &tenant_settings[i];
                if (strcmp(s->key, name) != 0)
                        continue;
                char why[160];
                int rc = apply(t, s, value, why, sizeof(why));
                if (rc != 0) {
                        fail(x, rc, "[tenant \"%s\"] %s = '%s': %s", t->name, name, value, why);
                        return 0;
                }
                return 1;
        }
        fail(x, -EINVAL, "unknown key '%s' in [tenant \"%s\"]", name, t->name);
        return 0;
}

/* audience = NAME in [server]: repeatable, a name as tokens spell it (chp_token_name_valid),
 * each once, at most CHP_AUDIENCES_MAX. Returns libinih's nonzero on success. */
static int on_audience(struct ini_ctx *x, const char *value)
{
        struct chp_config *c = x->c;
        size_t len = strlen(value);
        if (!chp_token_name_valid(value, len)) {
                fail(x, -EINVAL,
                     "audience = '%s': expected a name of 1 to %d lowercase letters, digits, '.', "
                     "'_' or '-'",
                     value, CHP_TOKEN_NAME_MAX);
                return 0;
        }
        for (unsigned i = 0; i < c->naudiences; i++)
                if (strcmp(c->audiences[i], value) == 0) {
                        fail(x, -EINVAL, "audience = '%s' is there twice", value);
                        return 0;
                }
        if (c->naudiences >= CHP_AUDIENCES_MAX) {
                fail(x, -EINVAL, "too many audience names (at most %d)", CHP_AUDIENCES_MAX);
                return 0;
        }
        if (!(c->audiences[c->naudiences] = strdup(value))) {
                fail(x, -ENOMEM, "out of memory");
                return 0;
        }
        c->naudiences++;
        return 1;
}

/* libinih's handler: nonzero on success. The section argument is ignored: read_line tracks it. */
static int on_key(void *user, const char *section, const char *name, const char *value)
{
        (void)section;
        struct ini_ctx *x = user;
        if (x->failed)
                return 1;
        if (x->sec == SEC_NONE) {
                fail(x, -EINVAL, "key '%s' outside any section", name);
                return 0;
        }
        if (x->sec == SEC_TENANT)
                return on_tenant(x, name, value);
        if (x->sec == SEC_SERVER && strcmp(name, "audience") == 0)
                return on_audience(x, value);
        if (x->sec == SEC_PEER) {
                char **dst;
                if (strcmp(name, "public_pull") == 0) {
                        if (parse_bool(value, &x->peer->public_pull) != 0) {
                                fail(x, -EINVAL, "public_pull = '%s': expected true or false",
                                     value);
                                return 0;
                        }
                        return 1;
                }
                if (strcmp(name, "address") == 0)
                        dst = &x->peer->address;
                else if (strcmp(name, "pubkey") == 0)
                        dst = &x->peer->pubkey;
                else {
                        fail(x, -EINVAL, "unknown key '%s' in [peer \"%s\"]", name, x->peer->name);
                        return 0;
                }
                char host[CHP_NET_HOST_MAX];
                uint16_t port;
                if (value[0] == '\0') {
                        fail(x, -EINVAL, "%s: must not be empty", name);
                        return 0;
                }
                if (dst == &x->peer->address &&
                    chp_net_split_hostport(value, host, sizeof(host), &port) != 0) {
                        fail(x, -EINVAL, "address = '%s': expected HOST:PORT or [IPv6]:PORT",
                             value);
                        return 0;
                }
                if (set_string(dst, value) != 0) {
                        fail(x, -ENOMEM, "out of memory");
                        return 0;
                }
                return 1;
        }
        for (size_t i = 0; i < NSETTINGS; i++) {
                const struct setting *s = &settings[i];
                if (s->sec != x->sec || strcmp(s->key, name) != 0)
                        continue;
                char why[160];
                int rc = apply(x->c, s, value, why, sizeof(why));
                if (rc != 0) {
                        fail(x, rc, "%s = '%s': %s", name, value, why);
                        return 0;
                }
                return 1;
        }
        fail(x, -EINVAL, "unknown key '%s' in [%s]", name, section_name(x));
        return 0;
}

int chp_config_load_file(struct chp_config *c, const char *path, char err[CHP_CONFIG_ERR_MAX])
{
        err[0] = '\0';
        struct ini_ctx x = {.c = c,
                            .path = path,
                            .err = err,
                            .first_new_peer = c->npeers,
                            .first_new_tenant = c->ntenants};
        int rc = 0;
        x.f = fopen(path, "r");
        if (!x.f) {
                snprintf(err, CHP_CONFIG_ERR_MAX, "cannot read config file %s: %s", path,
                         strerror(errno));
                rc = -EINVAL;
                goto out;
        }
        int line = ini_parse_stream(read_line, &x, on_key, &x);
        if (line > 0 && (!x.failed || (unsigned)line < x.err_line)) {
                /* libinih's own syntax error came first */
                snprintf(err, CHP_CONFIG_ERR_MAX, "%s:%d: expected [section] or key = value", path,
                         line);
                rc = -EINVAL;
                goto out;
        }
        if (x.failed) {
                rc = x.rc;
                goto out;
        }
        if (line < 0) {
                snprintf(err, CHP_CONFIG_ERR_MAX, "%s: out of memory", path);
                rc = -ENOMEM;
                goto out;
        }
        for (unsigned i = x.first_new_peer; i < c->npeers; i++) {
                const struct chp_peer_config *p = &c->peers[i];
                const char *missing = !p->address ? "address" : !p->pubkey ? "pubkey" : NULL;
                if (missing) {
                        snprintf(err, CHP_CONFIG_ERR_MAX, "%s:%u: [peer \"%s\"] has no %s", path,
                                 x.peer_line[i], p->name, missing);
                        rc = -EINVAL;
                        goto out;
                }
        }
        for (unsigned i = x.first_new_tenant; i < c->ntenants; i++) {
                if (c->tenants[i].nkeys == 0 && c->tenants[i].xmpp_secret_len == 0) {
                        snprintf(err, CHP_CONFIG_ERR_MAX,
                                 "%s:%u: [tenant \"%s\"] has neither token_key nor xmpp_secret",
                                 path, x.tenant_line[i], c->tenants[i].name);
                        rc = -EINVAL;
                        goto out;
                }
        }
out:
        free(x.line);
        if (x.f)
                fclose(x.f);
        return rc;
}

/* ---- flags ------------------------------------------------------------------------------- */

static const struct setting *find_flag(const char *name, size_t len)
{
        for (size_t i = 0; i < NSETTINGS; i++) {
                const char *f = settings[i].flag;
                if (f && strlen(f) == len && memcmp(f, name, len) == 0)
                        return &settings[i];
        }
        return NULL;
}

const char *chp_config_find_file(int argc, char **argv)
{
        const char *found = NULL;
        for (int i = 1; i < argc; i++) {
                const char *a = argv[i];
                if (strncmp(a, "--", 2) != 0)
                        continue;
                const char *name = a + 2, *eq = strchr(name, '=');
                size_t len = eq ? (size_t)(eq - name) : strlen(name);
                if (len == 6 && memcmp(name, "config", 6) == 0) {
                        if (eq)
                                found = eq + 1;
                        else if (i + 1 < argc)
                                found = argv[++i];
                        continue;
                }
                const struct setting *s = find_flag(name, len);
                if (s && s->kind != K_FLAG && !eq)
                        i++; /* its value, which may look like a flag */
        }
        return found && found[0] ? found : NULL;
}

int chp_config_parse_args(struct chp_config *c, int argc, char **argv, char err[CHP_CONFIG_ERR_MAX])
{
        err[0] = '\0';
        for (int i = 0; i < argc; i++) {
                const char *a = argv[i];
                if (strncmp(a, "--", 2) != 0 || a[2] == '\0' || a[2] == '=') {
                        snprintf(err, CHP_CONFIG_ERR_MAX, "unexpected argument '%s'", a);
                        return -EINVAL;
                }
                const char *name = a + 2, *eq = strchr(name, '=');
                int len = (int)(eq ? (size_t)(eq - name) : strlen(name));
                bool is_config = len == 6 && memcmp(name, "config", 6) == 0;
                const struct setting *s = is_config ? NULL : find_flag(name, (size_t)len);
                if (!is_config && !s) {
                        snprintf(err, CHP_CONFIG_ERR_MAX, "unknown flag '--%.*s'", len, name);
                        return -EINVAL;
                }
                if (s && s->kind == K_FLAG) {
                        if (eq) {
                                snprintf(err, CHP_CONFIG_ERR_MAX, "--%.*s takes no value", len,
                                         name);
                                return -EINVAL;
                        }
                        *(bool *)((char *)c + s->off) = true;
                        continue;
                }
                const char *v = eq ? eq + 1 : i + 1 < argc ? argv[++i] : NULL;
                if (!v) {
                        snprintf(err, CHP_CONFIG_ERR_MAX, "--%.*s needs a value", len, name);
                        return -EINVAL;
                }
                if (is_config) {
                        if (v[0] == '\0') {
                                snprintf(err, CHP_CONFIG_ERR_MAX, "--config: must not be empty");
                                return -EINVAL;
                        }
                        continue;
                }
                char why[160];
                int rc = apply(c, s, v, why, sizeof(why));
                if (rc != 0) {
                        snprintf(err, CHP_CONFIG_ERR_MAX, "--%.*s '%s': %s", len, name, v, why);
                        return rc;
                }
        }
        return 0;
}

/* ---- cross-field rules ------------------------------------------------------------------- */

int chp_config_finish(struct chp_config *c, char err[CHP_CONFIG_ERR_MAX])
{
        err[0] = '\0';
        if (!c->data_dir || !c->listen || !c->http || !c->cors_origins || !c->congestion_control) {
                snprintf(err, CHP_CONFIG_ERR_MAX, "out of memory");
                return -ENOMEM;
        }
        if (c->data_dir[0] == '\0') {
                snprintf(err, CHP_CONFIG_ERR_MAX, "--data must not be empty");
                return -EINVAL;
        }
        char lhost[CHP_NET_HOST_MAX], hhost[CHP_NET_HOST_MAX];
        uint16_t lport, hport;
        if (chp_net_split_hostport(c->listen, lhost, sizeof(lhost), &lport) != 0) {
                snprintf(err, CHP_CONFIG_ERR_MAX,
                         "--listen '%s': expected HOST:PORT or [IPv6]:PORT, port 0..65535",
                         c->listen);
                return -EINVAL;
        }
        bool http_off = strcmp(c->http, "off") == 0;
        if (!http_off && chp_net_split_hostport(c->http, hhost, sizeof(hhost), &hport) != 0) {
                snprintf(err, CHP_CONFIG_ERR_MAX,
                         "--http '%s': expected HOST:PORT or [IPv6]:PORT (port 0..65535) or off",
                         c->http);
                return -EINVAL;
        }
        if (!http_off && lport != 0 && lport == hport && strcasecmp(lhost, hhost) == 0) {
                snprintf(err, CHP_CONFIG_ERR_MAX, "--listen and --http are both %s", c->listen);
                return -EINVAL;
        }
        if (c->admin_listen) {
                char ahost[CHP_NET_HOST_MAX];
                uint16_t aport;
                if (chp_net_split_hostport(c->admin_listen, ahost, sizeof(ahost), &aport) != 0) {
                        snprintf(err, CHP_CONFIG_ERR_MAX,
                                 "--admin-listen '%s': expected HOST:PORT or [IPv6]:PORT",
                                 c->admin_listen);
                        return -EINVAL;
                }
                if (!c->admin_key) {
                        snprintf(err, CHP_CONFIG_ERR_MAX,
                                 "--admin-listen needs --admin-key FILE: the admin face on TCP "
                                 "answers only requests that carry the operator key (make one "
                                 "with: chapard admin-key --out FILE)");
                        return -EINVAL;
                }
        }
        if (c->insecure_plaintext && !chp_config_is_loopback(lhost)) {
                snprintf(err, CHP_CONFIG_ERR_MAX, "%s", LOOPBACK_RULE);
                return -EINVAL;
        }
        int rc = chp_config_check_access(c, err);
        if (rc)
                return rc;
        if (c->tus_chunk_size & (c->tus_chunk_size - 1)) {
                snprintf(err, CHP_CONFIG_ERR_MAX, "tus_chunk_size %u: must be a power of two",
                         c->tus_chunk_size);
                return -EINVAL;
        }
        if (c->threads < 1 || c->threads > MAX_THREADS) {
                snprintf(err, CHP_CONFIG_ERR_MAX, "--threads %u: must be from 1 to %d", c->threads,
                         MAX_THREADS);
                return -EINVAL;
        }
        if (c->window_bytes < MIN_WINDOW) {
                snprintf(err, CHP_CONFIG_ERR_MAX,
                         "window_bytes %u: must be at least %llu (one largest chunk frame)",
                         (unsigned)c->window_bytes, (unsigned long long)MIN_WINDOW);
                return -EINVAL;
        }
        if (c->store.backend == CHP_STORE_RADOS && (!c->rados_conf || !c->rados_pool)) {
                snprintf(err, CHP_CONFIG_ERR_MAX,
                         "--store rados needs rados_conf (--rados-conf FILE) and rados_pool "
                         "(--rados-pool POOL)");
                return -EINVAL;
        }
        c->store.dir = c->data_dir;
        c->store.sync = c->sync;
        c->store.rados_conf = c->rados_conf;
        c->store.rados_pool = c->rados_pool;
        c->store.rados_user = c->rados_user;
        /* a chunk stored for an upload is attached before the upload expires, or never */
        c->store.orphan_grace = c->upload_expiry;
        return 0;
}

/* ---- reload ------------------------------------------------------------------------------ */

/* What a running relay takes from a reloaded configuration (SIGHUP), besides its peers and its
 * tenants and its audience names (outside the table: next keeps its own). Every
 * other setting is read once at start-up (sockets, threads, the store, the key) and needs a
 * restart: a setting missing here is kept at its running value, so a new one is never claimed to
 * reload when it does not. */
static const char *const reloadable[] = {
    "log_level",
    "max_connections",
    "idle_timeout",
    "io_timeout",
    "window_bytes",
    "max_inflight",
    "upload_expiry",
    "file_expiry",
    "memory_limit",
    "cors_origins",
    "tus_chunk_size",
    "tus_max_size",
    "header_timeout",
    "handshake_timeout",
    "min_body_rate",
    "body_rate_window",
    "open",
    "cors_headers",
    "max_connections_per_address",
    "uploads_per_minute",
    "upload_rate_per_address",
    "download_rate_per_address",
    "max_incomplete_per_address",
    "limit_loopback",
    "max_connections_per_subject",
    "upload_rate_per_subject",
    "max_incomplete_per_subject",
    "fetch_timeout",
    "fetch_min_rate",
    "fetch_workers_per_peer",
};

static bool is_reloadable(const char *key)
{
        for (size_t i = 0; i < sizeof(reloadable) / sizeof(reloadable[0]); i++)
                if (strcmp(reloadable[i], key) == 0)
                        return true;
        return false;
}

static bool is_string(enum kind k)
{
        return k == K_STRING || k == K_HOSTPORT || k == K_HEADERS || k == K_CCNAME;
}

int chp_config_keep_restart_settings(struct chp_config *next, const struct chp_config *running,
                                     void (*changed)(void *ctx, const char *key), void *ctx)
{
        for (size_t i = 0; i < NSETTINGS; i++) {
                const struct setting *s = &settings[i];
                if (is_reloadable(s->key))
                        continue;
                char *nf = (char *)next + s->off;
                const char *rf = (const char *)running + s->off;
                if (is_string(s->kind)) {
                        char **nv = (char **)(void *)nf;
                        const char *rv = *(char *const *)(const void *)rf;
                        if (*nv == rv || (*nv && rv && strcmp(*nv, rv) == 0))
                                continue;
                        char *copy = NULL;
                        if (rv && !(copy = strdup(rv)))
                                return -ENOMEM;
                        free(*nv);
                        *nv = copy;
                } else {
                        if (memcmp(nf, rf, s->width) == 0)
                                continue;
                        memcpy(nf, rf, s->width);
                }
                if (changed)
                        changed(ctx, s->key);
        }
        /* the store's settings, those outside the table too, are the running store's */
        next->store = running->store;
        next->store.dir = next->data_dir;
        next->store.rados_conf = next->rados_conf;
        next->store.rados_pool = next->rados_pool;
        next->store.rados_user = next->rados_user;
        return 0;
}
