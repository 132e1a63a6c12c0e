/* client_limits.c — the limits table (see client_limits.h): a fixed array of entries, chained in a
 * hash table keyed by SipHash (a random key per table, so a client cannot choose addresses that
 * share one chain), and an idle list in least-recently-used order of the entries that hold no
 * connection, which is where an eviction takes its victim. Entries with connections are out of that
 * list.
 *
 * Buckets are tokens as doubles refilled from the time elapsed: uploads (capacity
 * uploads_per_minute, refilled at that much per minute) and bytes in each direction (capacity one
 * second of upload_rate_per_address for bytes read, of download_rate_per_address for bytes sent).
 * Reads are charged after they happen, so that bucket may go below zero; sends take their bytes
 * before they are armed (and get back what did not go out), so that one never does, however many
 * connections of the address send at once. A new or reused entry starts with full buckets.
 */
#include "client_limits.h"

#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "err.h"

#define NIL UINT32_MAX
/* a read or send waits until the bucket holds a sixteenth of a second's worth, within these
 * bounds (and never more than it wants or one second's worth) */
#define QUANTUM_MIN 512
#define QUANTUM_MAX 16384

/* A byte bucket: tokens as of at (ms); below zero: bytes moved ahead of the rate. */
struct rate {
        double bytes;
        uint64_t at;
};

struct entry {
        struct chp_limits_key key;
        uint32_t hnext;      /* next in its hash chain */
        uint32_t prev, next; /* in the idle list (conns == 0) */
        uint32_t conns;
        /* incomplete uploads begun in generation inc_gen and in the one before it */
        uint32_t inc_now, inc_before;
        uint64_t inc_gen;
        double uploads; /* tokens as of uploads_at (ms) */
        uint64_t uploads_at;
        struct rate in, out; /* bytes read from the address, bytes sent to it */
};

struct limits_conf {
        uint32_t conns;      /* 0: unlimited */
        uint32_t per_minute; /* 0: unlimited */
        uint64_t rate;       /* bytes/s read; 0: unlimited */
        uint64_t out_rate;   /* bytes/s sent; 0: unlimited */
        uint32_t incomplete; /* 0: unlimited */
        uint32_t subj_conns; /* connections per subject; 0: unlimited */
        uint64_t subj_rate;  /* bytes/s read per subject; 0: unlimited */
        uint32_t subj_incomplete; /* incomplete uploads per subject; 0: unlimited */
        uint64_t gen_ms;     /* an incomplete upload is forgotten after one to two of these */
        bool loopback;       /* loopback addresses are counted too */
};

struct chp_limits {
        pthread_mutex_t lock;
        struct limits_conf conf;
        struct entry *e;
        uint32_t capacity;
        uint32_t *bucket; /* heads of the hash chains */
        uint32_t mask;    /* buckets - 1 (a power of two) */
        uint32_t fresh;   /* entries from here on were never used (calloc's pages untouched) */
        uint32_t idle_head, idle_tail; /* least and most recently used */
        atomic_uint entries;
        atomic_uint_fast64_t evictions;
        uint8_t hash_key[crypto_shorthash_KEYBYTES];
};

/* ---- keys -------------------------------------------------------------------------------- */

int chp_limits_key_from_addr(const struct sockaddr *sa, socklen_t len, struct chp_limits_key *out)
{
        memset(out, 0, sizeof(*out));
        if (!sa || len < (socklen_t)sizeof(sa_family_t))
                return -EAFNOSUPPORT;
        if (sa->sa_family == AF_INET && len >= (socklen_t)sizeof(struct sockaddr_in)) {
                const struct sockaddr_in *in = (const struct sockaddr_in *)(const void *)sa;
                out->kind = CHP_LIMITS_IPV4;
                memcpy(out->bytes, &in->sin_addr, 4);
                out->loopback = out->bytes[0] == 127;
                return 0;
        }
        if (sa->sa_family == AF_INET6 && len >= (socklen_t)sizeof(struct sockaddr_in6)) {
                const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)(const void *)sa;
                const struct in6_addr *a = &in6->sin6_addr;
                if (IN6_IS_ADDR_V4MAPPED(a)) {
                        out->kind = CHP_LIMITS_IPV4;
                        memcpy(out->bytes, a->s6_addr + 12, 4);
                        out->loopback = out->bytes[0] == 127;
                        return 0;
                }
                out->kind = CHP_LIMITS_IPV6;
                out->loopback = IN6_IS_ADDR_LOOPBACK(a);
                memcpy(out->bytes, a->s6_addr, 8); /* the /64 */
                return 0;
        }
        return -EAFNOSUPPORT;
}

static bool same_key(const struct chp_limits_key *a, const struct chp_limits_key *b)
{
        return a->kind == b->kind && memcmp(a->bytes, b->bytes, CHP_LIMITS_KEY_BYTES) == 0;
}

static uint32_t chain_of(const struct chp_limits *l, const struct chp_limits_key *k)
{
        uint8_t in[1 + CHP_LIMITS_KEY_BYTES], h[crypto_shorthash_BYTES];
        in[0] = k->kind;
        memcpy(in + 1, k->bytes, CHP_LIMITS_KEY_BYTES);
        crypto_shorthash(h, in, sizeof(in), l->hash_key);
        uint32_t v;
        memcpy(&v, h, sizeof(v));
        return v & l->mask;
}

/* The key of a token's subject: a digest of tenant NUL subject (tenant names have no NUL). */
static void subject_key(const char *tenant, const char *subject, struct chp_limits_key *out)
{
        memset(out, 0, sizeof(*out));
        out->kind = CHP_LIMITS_SUBJECT;
        crypto_generichash_state st;
        crypto_generichash_init(&st, NULL, 0, CHP_LIMITS_KEY_BYTES);
        crypto_generichash_update(&st, (const uint8_t *)tenant, strlen(tenant) + 1);
        crypto_generichash_update(&st, (const uint8_t *)subject, strlen(subject));
        crypto_generichash_final(&st, out->bytes, CHP_LIMITS_KEY_BYTES);
}

/* ---- the table (lock held) --------------------------------------------------------------- */

static void idle_unlink(struct chp_limits *l, uint32_t i)
{
        struct entry *e = &l->e[i];
        if (e->prev != NIL)
                l->e[e->prev].next = e->next;
        else
                l->idle_head = e->next;
        if (e->next != NIL)
                l->e[e->next].prev = e->prev;
        else
                l->idle_tail = e->prev;
        e->prev = e->next = NIL;
}

static void idle_append(struct chp_limits *l, uint32_t i)
{
        struct entry *e = &l->e[i];
        e->prev = l->idle_tail;
        e->next = NIL;
        if (l->idle_tail != NIL)
                l->e[l->idle_tail].next = i;
        else
                l->idle_head = i;
        l->idle_tail = i;
}

/* Marks i as just used: the end of the idle list (entries with connections are not in it). */
static void touch(struct chp_limits *l, uint32_t i)
{
        if (l->e[i].conns == 0 && l->idle_tail != i) {
                idle_unlink(l, i);
                idle_append(l, i);
        }
}

static uint32_t find(const struct chp_limits *l, const struct chp_limits_key *k)
{
        for (uint32_t i = l->bucket[chain_of(l, k)]; i != NIL; i = l->e[i].hnext)
                if (same_key(&l->e[i].key, k))
                        return i;
        return NIL;
}

static void chain_remove(struct chp_limits *l, uint32_t i)
{
        uint32_t *p = &l->bucket[chain_of(l, &l->e[i].key)];
        while (*p != i)
                p = &l->e[*p].hnext;
        *p = l->e[i].hnext;
}

/* The byte rate read under an entry of kind: its address's or its subject's. */
static uint64_t rate_in(const struct limits_conf *c, uint8_t kind)
{
        return kind == CHP_LIMITS_SUBJECT ? c->subj_rate : c->rate;
}

/* The entry of k, made if it is not there (a never used one, else by evicting the least recently
 * used idle entry other than keep); NIL when every other entry holds connections. */
static uint32_t get(struct chp_limits *l, const struct chp_limits_key *k, uint64_t now,
                    uint32_t keep)
{
        uint32_t i = find(l, k);
        if (i != NIL) {
                touch(l, i);
                return i;
        }
        if (l->fresh < l->capacity) {
                i = l->fresh++;
                atomic_fetch_add(&l->entries, 1);
        } else {
                i = l->idle_head;
                if (i == keep && i != NIL)
                        i = l->e[i].next;
                if (i == NIL)
                        return NIL;
                idle_unlink(l, i);
                chain_remove(l, i);
                atomic_fetch_add(&l->evictions, 1);
        }
        struct entry *e = &l->e[i];
        uint32_t b = chain_of(l, k);
        *e = (struct entry){.key = *k,
                            .hnext = l->bucket[b],
                            .prev = NIL,
                            .next = NIL,
                            .inc_gen = now / l->conf.gen_ms,
                            .uploads = l->conf.per_minute,
                            .uploads_at = now,
                            .in = {(double)rate_in(&l->conf, k->kind), now},
                            .out = {(double)l->conf.out_rate, now}};
        l->bucket[b] = i;
        idle_append(l, i);
        return i;
}

static bool exempt(const struct chp_limits *l, const struct chp_limits_key *k)
{
        return !k || k->kind == CHP_LIMITS_NOBODY || (k->loopback && !l->conf.loopback);
}

/* Adds what accrued since *at at per_ms a millisecond, up to cap. */
static void refill(double *tokens, uint64_t *at, double cap, double per_ms, uint64_t now)
{
        if (now > *at) {
                *tokens += (double)(now - *at) * per_ms;
                *at = now;
        }
        if (*tokens > cap)
                *tokens = cap;
}

static void refill_uploads(const struct chp_limits *l, struct entry *e, uint64_t now)
{
        double n = l->conf.per_minute;
        refill(&e->uploads, &e->uploads_at, n, n / 60000.0, now);
}

static void refill_bytes(struct rate *b, uint64_t rate, uint64_t now)
{
        double r = (double)rate;
        refill(&b->bytes, &b->at, r, r / 1000.0, now);
}

/* Moves the incomplete counts on to the generation of now: one generation on, those begun two
 * generations ago are forgotten (the store has expired them by then). */
static void roll(const struct chp_limits *l, struct entry *e, uint64_t now)
{
        uint64_t gen = now / l->conf.gen_ms;
        if (gen == e->inc_gen)
                return;
        e->inc_before = gen == e->inc_gen + 1 ? e->inc_now : 0;
        e->inc_now = 0;
        e->inc_gen = gen;
}

/* ---- the calls --------------------------------------------------------------------------- */

int chp_limits_new(uint32_t capacity, struct chp_limits **out)
{
        *out = NULL;
        if (capacity < 2 || capacity > (UINT32_MAX >> 2))
                return -EINVAL;
        struct chp_limits *l = calloc(1, sizeof(*l));
        uint32_t buckets = 1;
        while (buckets < capacity)
                buckets <<= 1;
        if (!l)
                return -ENOMEM;
        l->e = calloc(capacity, sizeof(*l->e));
        l->bucket = malloc((size_t)buckets * sizeof(*l->bucket));
        if (!l->e || !l->bucket) {
                free(l->e);
                free(l->bucket);
                free(l);
                return -ENOMEM;
        }
        pthread_mutex_init(&l->lock, NULL);
        l->capacity = capacity;
        l->mask = buckets - 1;
        for (uint32_t i = 0; i < buckets; i++)
                l->bucket[i] = NIL;
        l->idle_head = l->idle_tail = NIL;
        l->conf.gen_ms = 1;
        randombytes_buf(l->hash_key, sizeof(l->hash_key));
        *out = l;
        return 0;
}

void chp_limits_free(struct chp_limits *l)
{
        if (!l)
                return;
        pthread_mutex_destroy(&l->lock);
        free(l->e);
        free(l->bucket);
        free(l);
}

void chp_limits_configure(struct chp_limits *l, const struct chp_config *cfg)
{
        if (!l)
                return;
        uint64_t life = cfg->upload_expiry;
        struct limits_conf c = {
            .conns = cfg->max_connections_per_address,
            .per_minute = cfg->uploads_per_minute,
            .rate = cfg->upload_rate_per_address,
            .out_rate = cfg->download_rate_per_address,
            .incomplete = cfg->max_incomplete_per_address,
            .subj_conns = cfg->max_connections_per_subject,
            .subj_rate = cfg->upload_rate_per_subject,
            .subj_incomplete = cfg->max_incomplete_per_subject,
            .gen_ms = life && life < UINT64_MAX / 1000 ? life * 1000 : UINT64_MAX,
            .loopback = cfg->limit_loopback,
        };
        pthread_mutex_lock(&l->lock);
        l->conf = c;
        pthread_mutex_unlock(&l->lock);
}

/* One more connection of key k, at most cap (0: unlimited) at once: 0 with *slot its entry, or
 * CHP_ELIMITED. */
static int conn_take(struct chp_limits *l, const struct chp_limits_key *k, uint32_t cap,
                     uint64_t now, int32_t *slot)
{
        uint32_t i = get(l, k, now, NIL);
        if (i == NIL || (cap && l->e[i].conns >= cap))
                return CHP_ELIMITED;
        if (l->e[i].conns++ == 0)
                idle_unlink(l, i);
        *slot = (int32_t)i;
        return 0;
}

int chp_limits_conn_open(struct chp_limits *l, const struct chp_limits_key *addr, uint64_t now_ms,
                         int32_t *slot)
{
        *slot = CHP_LIMITS_NONE;
        if (!l)
                return 0;
        pthread_mutex_lock(&l->lock);
        int rc = exempt(l, addr) ? 0 : conn_take(l, addr, l->conf.conns, now_ms, slot);
        pthread_mutex_unlock(&l->lock);
        return rc;
}

int chp_limits_conn_subject(struct chp_limits *l, const char *tenant, const char *subject,
                            uint64_t now_ms, int32_t *slot)
{
        *slot = CHP_LIMITS_NONE;
        if (!l || !tenant || !subject || !subject[0])
                return 0;
        struct chp_limits_key k;
        subject_key(tenant, subject, &k);
        pthread_mutex_lock(&l->lock);
        int rc = conn_take(l, &k, l->conf.subj_conns, now_ms, slot);
        pthread_mutex_unlock(&l->lock);
        return rc;
}

void chp_limits_conn_close(struct chp_limits *l, int32_t slot)
{
        if (!l || slot < 0)
                return;
        pthread_mutex_lock(&l->lock);
        struct entry *e = &l->e[slot];
        if (e->conns > 0 && --e->conns == 0)
                idle_append(l, (uint32_t)slot);
        pthread_mutex_unlock(&l->lock);
}

/* How much of want the bucket b at rate (bytes/s, not 0) lets move now (see
 * chp_limits_read_room); it takes nothing. Lock held. */
static size_t bytes_room(struct rate *b, uint64_t rate, size_t want, uint64_t now,
                         uint32_t *wait_ms)
{
        refill_bytes(b, rate, now);
        /* it waits for a useful amount, not for the first byte to accrue */
        uint64_t lo = rate < QUANTUM_MIN ? rate : QUANTUM_MIN, q = rate / 16;
        uint64_t quantum = q < lo ? lo : q > QUANTUM_MAX ? QUANTUM_MAX : q;
        double need = (double)(want < quantum ? want : quantum);
        if (b->bytes >= need)
                return b->bytes >= (double)want ? want : (size_t)b->bytes;
        double ms = (need - b->bytes) * 1000.0 / (double)rate;
        uint32_t w = ms >= (double)UINT32_MAX ? UINT32_MAX : (uint32_t)ms;
        if ((double)w < ms && w < UINT32_MAX)
                w++; /* rounded up: asking again then finds the quantum */
        *wait_ms = w ? w : 1;
        return 0;
}

size_t chp_limits_read_room(struct chp_limits *l, int32_t slot, size_t want, uint64_t now_ms,
                            uint32_t *wait_ms)
{
        *wait_ms = 0;
        if (!l || slot < 0 || want == 0)
                return want;
        pthread_mutex_lock(&l->lock);
        uint64_t rate = rate_in(&l->conf, l->e[slot].key.kind);
        size_t n = rate ? bytes_room(&l->e[slot].in, rate, want, now_ms, wait_ms) : want;
        pthread_mutex_unlock(&l->lock);
        return n;
}

void chp_limits_read_charge(struct chp_limits *l, int32_t slot, size_t n, uint64_t now_ms)
{
        if (!l || slot < 0 || n == 0)
                return;
        pthread_mutex_lock(&l->lock);
        uint64_t rate = rate_in(&l->conf, l->e[slot].key.kind);
        if (rate) {
                struct rate *b = &l->e[slot].in;
                refill_bytes(b, rate, now_ms);
                b->bytes -= (double)n;
        }
        pthread_mutex_unlock(&l->lock);
}

size_t chp_limits_send_take(struct chp_limits *l, int32_t slot, size_t want, uint64_t now_ms,
                            uint32_t *wait_ms)
{
        *wait_ms = 0;
        if (!l || slot < 0 || want == 0)
                return want;
        pthread_mutex_lock(&l->lock);
        uint64_t rate = l->conf.out_rate;
        size_t n = want;
        if (rate) {
                struct rate *b = &l->e[slot].out;
                n = bytes_room(b, rate, want, now_ms, wait_ms);
                b->bytes -= (double)n;
        }
        pthread_mutex_unlock(&l->lock);
        return n;
}

void chp_limits_send_refund(struct chp_limits *l, int32_t slot, size_t n, uint64_t now_ms)
{
        if (!l || slot < 0 || n == 0)
                return;
        pthread_mutex_lock(&l->lock);
        uint64_t rate = l->conf.out_rate;
        if (rate) {
                struct rate *b = &l->e[slot].out;
                b->bytes += (double)n;
                refill_bytes(b, rate, now_ms); /* (and no more than a full bucket) */
        }
        pthread_mutex_unlock(&l->lock);
}

/* Seconds until the bucket of e holds one upload (at least 1). */
static uint32_t uploads_retry(const struct chp_limits *l, const struct entry *e)
{
        double s = (1.0 - e->uploads) * 60.0 / l->conf.per_minute;
        return s < 1.0 ? 1 : s > 3600.0 ? 3600 : (uint32_t)s + 1;
}

int chp_limits_upload_begin(struct chp_limits *l, const struct chp_limits_key *addr,
                            const char *tenant, const char *subject, uint64_t now_ms,
                            uint32_t *retry_after_s)
{
        *retry_after_s = 0;
        if (!l)
                return 0;
        uint32_t retry = 0;
        pthread_mutex_lock(&l->lock);
        const struct limits_conf *c = &l->conf;
        uint32_t a = exempt(l, addr) ? NIL : get(l, addr, now_ms, NIL), s = NIL;
        if (tenant && subject && subject[0]) {
                struct chp_limits_key k;
                subject_key(tenant, subject, &k);
                s = get(l, &k, now_ms, a); /* evicts anything but a */
        }
        /* a table full of connected addresses (NIL) leaves the upload to the other checks */
        if (a != NIL) {
                struct entry *e = &l->e[a];
                roll(l, e, now_ms);
                if (c->incomplete && e->inc_now + e->inc_before >= c->incomplete)
                        retry = CHP_LIMITS_RETRY_S;
                if (c->per_minute) {
                        refill_uploads(l, e, now_ms);
                        if (e->uploads < 1.0 && uploads_retry(l, e) > retry)
                                retry = uploads_retry(l, e);
                }
        }
        if (s != NIL) {
                struct entry *e = &l->e[s];
                roll(l, e, now_ms);
                if (c->subj_incomplete && e->inc_now + e->inc_before >= c->subj_incomplete &&
                    retry < CHP_LIMITS_RETRY_S)
                        retry = CHP_LIMITS_RETRY_S;
                if (c->per_minute) {
                        refill_uploads(l, e, now_ms);
                        if (e->uploads < 1.0 && uploads_retry(l, e) > retry)
                                retry = uploads_retry(l, e);
                }
        }
        if (!retry) {
                if (a != NIL) {
                        l->e[a].inc_now++;
                        if (c->per_minute)
                                l->e[a].uploads -= 1.0;
                }
                if (s != NIL) {
                        l->e[s].inc_now++;
                        if (c->per_minute)
                                l->e[s].uploads -= 1.0;
                }
        }
        pthread_mutex_unlock(&l->lock);
        *retry_after_s = retry;
        return retry ? CHP_ELIMITED : 0;
}

/* One incomplete upload of entry i (NIL: none) is no longer. Lock held. */
static void incomplete_end(struct chp_limits *l, uint32_t i, uint64_t now)
{
        if (i == NIL)
                return;
        struct entry *e = &l->e[i];
        roll(l, e, now);
        if (e->inc_now > 0)
                e->inc_now--;
        else if (e->inc_before > 0)
                e->inc_before--;
}

void chp_limits_upload_end(struct chp_limits *l, const struct chp_limits_key *addr,
                           const char *tenant, const char *subject, uint64_t now_ms)
{
        if (!l)
                return;
        struct chp_limits_key k;
        bool subj = tenant && subject && subject[0];
        if (subj)
                subject_key(tenant, subject, &k);
        pthread_mutex_lock(&l->lock);
        incomplete_end(l, exempt(l, addr) ? NIL : find(l, addr), now_ms);
        if (subj)
                incomplete_end(l, find(l, &k), now_ms);
        pthread_mutex_unlock(&l->lock);
}

void chp_limits_stats(struct chp_limits *l, struct chp_limits_stats *out)
{
        memset(out, 0, sizeof(*out));
        if (!l)
                return;
        out->entries = atomic_load(&l->entries);
        out->capacity = l->capacity;
        out->evictions = atomic_load(&l->evictions);
}
