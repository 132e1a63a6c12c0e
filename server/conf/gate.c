/* gate.c — callers, scopes, token budgets and tenants' uploads in progress (gate.h).
 *
 * The ledger is a chained hash table of token ids (BUCKETS chains, at most CHP_GATE_TOKENS
 * entries), each holding the keys of the files charged to it in an array that grows by doubling
 * up to CHP_GATE_FILES. The uploads in progress are a short list of (tenant name, count), an
 * entry dropped when its count returns to 0: a tenant a reload removed leaves nothing behind.
 * One mutex guards both; it is held for lookups, small allocations and the ledger file's appends
 * (one write of a record to the page cache, no fsync) and compactions (see "the ledger on disk").
 */
#include "gate.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#include "err.h"

#define BUCKETS       16384                   /* a power of two: CHP_GATE_TOKENS / 4 */
#define FILES_FIRST   4                       /* the first allocation of a token's files */
#define AUDIENCES_MAX (1 + CHP_AUDIENCES_MAX) /* the tenant's name and [server] audience */
_Static_assert((BUCKETS & (BUCKETS - 1)) == 0, "bucket index is a mask");

struct charge {
        uint8_t key[CHP_HASH_BYTES];
        bool sized;    /* its bytes are charged (false: a deferred length not known yet) */
        uint64_t size; /* with sized: the bytes charged for it */
};

struct entry {
        struct entry *next;
        uint8_t id[CHP_TOKEN_ID_BYTES];
        uint64_t expires_at; /* the token's; the entry goes at expires_at + CHP_TOKEN_SKEW */
        uint64_t bytes;      /* charged to the token id */
        uint32_t nfiles, cap;
        struct charge *files;
};

struct slots {
        struct slots *next;
        char tenant[CHP_TENANT_NAME_MAX + 1];
        uint64_t busy; /* uploads in progress */
};

struct chp_gate {
        pthread_mutex_t mu;
        struct entry *buckets[BUCKETS];
        size_t ntokens;
        struct slots *slots;
        /* the ledger on disk (chp_gate_persist); fd -1: in memory only */
        int fd;
        char *path;      /* DIR/ledger */
        uint64_t fbytes; /* the file's size */
};

/* ---- callers (pure) ---------------------------------------------------------------------- */

int chp_gate_identify(const struct chp_config *cfg, const uint8_t relay_key[CHP_KEY_BYTES],
                      bool peer_loopback, const char *token, size_t len, uint64_t now,
                      struct chp_caller *out)
{
        memset(out, 0, sizeof(*out));
        if (!token || len == 0) {
                bool trusted = cfg->open || (cfg->ntenants == 0 && peer_loopback);
                out->kind = trusted ? CHP_CALLER_TRUSTED : CHP_CALLER_ANONYMOUS;
                out->scopes = trusted ? CHP_TOKEN_SCOPE_ALL : 0;
                return 0;
        }
        /* A token that does not parse has no signature that could verify. */
        struct chp_token_signed tok;
        if (chp_token_parse(token, len, &tok) != 0)
                return CHP_ETOKEN_SIGNATURE;
        const struct chp_tenant_config *t =
            chp_config_find_tenant(cfg, tok.t.tenant, strlen(tok.t.tenant));
        if (!t)
                return CHP_ETOKEN_KEY; /* no tenant of that name: no key can have signed it */
        _Static_assert(sizeof(struct chp_tenant_key) == sizeof(struct chp_token_key) &&
                           CHP_TENANT_KID_BYTES == CHP_TOKEN_KID_BYTES &&
                           CHP_TENANT_PUBKEY_BYTES == CHP_TOKEN_PUB_BYTES,
                       "a tenant's keys are token keys");
        struct chp_token_key keys[CHP_TENANT_KEYS_MAX];
        for (unsigned i = 0; i < t->nkeys; i++) {
                memcpy(keys[i].kid, t->keys[i].kid, CHP_TOKEN_KID_BYTES);
                memcpy(keys[i].pub, t->keys[i].pub, CHP_TOKEN_PUB_BYTES);
        }
        const char *names[AUDIENCES_MAX];
        size_t nnames = 0;
        names[nnames++] = t->name;
        for (unsigned i = 0; i < cfg->naudiences && nnames < AUDIENCES_MAX; i++)
                names[nnames++] = cfg->audiences[i];
        struct chp_token_policy p = {
            .tenant = t->name,
            .keys = keys,
            .nkeys = t->nkeys,
            .relay_key = relay_key,
            .audience_names = names,
            .naudience_names = nnames,
            .need_scopes = 0,
            .now = now,
        };
        int rc = chp_token_verify(&tok, &p);
        if (rc != 0)
                return rc;
        out->kind = CHP_CALLER_TOKEN;
        out->scopes = tok.t.scopes;
        out->token = tok.t;
        return 0;
}

int chp_gate_allow(const struct chp_caller *c, uint8_t scope, uint64_t now)
{
        switch (c->kind) {
        case CHP_CALLER_TRUSTED:
                return 0;
        case CHP_CALLER_TOKEN:
                if (now > c->token.expires_at + CHP_TOKEN_SKEW)
                        return CHP_ETOKEN_EXPIRED;
                return (c->scopes & scope) == scope ? 0 : CHP_ETOKEN_SCOPE;
        case CHP_CALLER_ANONYMOUS:
        default:
                return CHP_ETOKEN_MISSING;
        }
}

bool chp_gate_may_probe(const struct chp_caller *c)
{
        return c->kind != CHP_CALLER_ANONYMOUS;
}

/* ---- the gate ---------------------------------------------------------------------------- */

int chp_gate_new(struct chp_gate **out)
{
        *out = NULL;
        struct chp_gate *g = calloc(1, sizeof(*g));
        if (!g)
                return -ENOMEM;
        int rc = pthread_mutex_init(&g->mu, NULL);
        if (rc != 0) {
                free(g);
                return -rc;
        }
        g->fd = -1;
        *out = g;
        return 0;
}

static void entry_free(struct entry *e)
{
        free(e->files);
        free(e);
}

void chp_gate_free(struct chp_gate *g)
{
        if (!g)
                return;
        for (size_t b = 0; b < BUCKETS; b++)
                for (struct entry *e = g->buckets[b], *n; e; e = n) {
                        n = e->next;
                        entry_free(e);
                }
        for (struct slots *s = g->slots, *n; s; s = n) {
                n = s->next;
                free(s);
        }
        if (g->fd >= 0)
                close(g->fd);
        free(g->path);
        pthread_mutex_destroy(&g->mu);
        free(g);
}

/* The chain of a token id: ids are random (docs/tokens.md), so their first bytes spread well;
 * a minter that reuses ids only shares a budget among its own tokens. */
static struct entry **bucket(struct chp_gate *g, const uint8_t id[CHP_TOKEN_ID_BYTES])
{
        uint32_t h =
            (uint32_t)id[0] | (uint32_t)id[1] << 8 | (uint32_t)id[2] << 16 | (uint32_t)id[3] << 24;
        return &g->buckets[h & (BUCKETS - 1)];
}

static struct entry *find_entry(struct chp_gate *g, const uint8_t id[CHP_TOKEN_ID_BYTES])
{
        for (struct entry *e = *bucket(g, id); e; e = e->next)
                if (memcmp(e->id, id, CHP_TOKEN_ID_BYTES) == 0)
                        return e;
        return NULL;
}

static struct charge *find_charge(struct entry *e, const uint8_t key[CHP_HASH_BYTES])
{
        if (!e)
                return NULL;
        for (uint32_t i = 0; i < e->nfiles; i++)
                if (memcmp(e->files[i].key, key, CHP_HASH_BYTES) == 0)
                        return &e->files[i];
        return NULL;
}

static struct slots *find_slots(struct chp_gate *g, const char *tenant)
{
        for (struct slots *s = g->slots; s; s = s->next)
                if (strcmp(s->tenant, tenant) == 0)
                        return s;
        return NULL;
}

static uint64_t min_u64(uint64_t a, uint64_t b)
{
        return a < b ? a : b;
}

/* size over the tenant's largest file or the token's whole budget (a file that could never
 * fit): CHP_ETOOBIG. A deferred length is checked when it becomes known. */
static int check_size(const struct chp_tenant_config *t, const struct chp_token *tok, uint64_t size)
{
        if (size == CHP_UPLOAD_SIZE_UNKNOWN)
                return 0;
        return size > t->max_file_size || size > tok->max_bytes ? CHP_ETOOBIG : 0;
}

/* Whether the token's budget takes `size` more bytes (and with new_file one more file). */
static int check_budget(const struct entry *e, const struct chp_token *tok, uint64_t size,
                        bool new_file)
{
        uint64_t bytes = e ? e->bytes : 0;
        uint32_t files = e ? e->nfiles : 0;
        uint64_t add = size == CHP_UPLOAD_SIZE_UNKNOWN ? 0 : size;
        if (add > tok->max_bytes || bytes > tok->max_bytes - add)
                return CHP_EQUOTA;
        if (new_file && files >= tok->max_files)
                return CHP_EQUOTA;
        if (new_file && files >= CHP_GATE_FILES)
                return CHP_ELIMITED; /* the ledger's bound, not the token's */
        return 0;
}

/* Makes room for one more charge in e (a new entry when e is NULL): the entry, or NULL with *rc
 * set (CHP_ELIMITED at CHP_GATE_TOKENS, -ENOMEM). Nothing is charged yet. */
static struct entry *reserve(struct chp_gate *g, struct entry *e,
                             const uint8_t id[CHP_TOKEN_ID_BYTES], uint64_t expires_at, int *rc)
{
        bool fresh = !e;
        if (fresh) {
                if (g->ntokens >= CHP_GATE_TOKENS) {
                        *rc = CHP_ELIMITED;
                        return NULL;
                }
                e = calloc(1, sizeof(*e));
                if (!e) {
                        *rc = -ENOMEM;
                        return NULL;
                }
                memcpy(e->id, id, CHP_TOKEN_ID_BYTES);
                e->expires_at = expires_at;
        }
        if (e->nfiles == e->cap) {
                uint32_t cap = e->cap ? e->cap * 2 : FILES_FIRST;
                if (cap > CHP_GATE_FILES)
                        cap = CHP_GATE_FILES;
                struct charge *grown = realloc(e->files, cap * sizeof(*grown));
                if (!grown) {
                        if (fresh)
                                free(e);
                        *rc = -ENOMEM;
                        return NULL;
                }
                e->files = grown;
                e->cap = cap;
        }
        if (fresh) {
                struct entry **b = bucket(g, id);
                e->next = *b;
                *b = e;
                g->ntokens++;
        }
        return e;
}

/* ---- the ledger on disk ------------------------------------------------------------------ */

/* DIR/ledger: LEDGER_MAGIC, then records of REC_BYTES in the order the charges changed, each
 * the whole state of one (token id, key) charge, integers little-endian:
 *    0  type        'C' charged (sized, size as below) | 'R' refunded (gone)
 *    1  sized       0 / 1 (0: a deferred tus length, not known yet)
 *    2  zero        2 bytes
 *    4  token id    CHP_TOKEN_ID_BYTES
 *   20  key         CHP_HASH_BYTES
 *   52  expires_at  u64: the token's (the charge is forgotten at expires_at + CHP_TOKEN_SKEW)
 *   60  size        u64: the bytes charged
 *   68  check       the first REC_CHECK bytes of BLAKE2b (crypto_generichash) of bytes 0..67
 * A record is appended (write(2), no fsync) before the change it records is made in memory and
 * before the admission is answered: a relay that stops or crashes loses none; a machine that
 * loses power loses what the kernel had not written back (vm.dirty_expire_centisecs, 30 s by
 * default). The file is rewritten with one 'C' record per live charge at start and when it has
 * grown past twice that and LEDGER_COMPACT_MIN (chp_gate_expire). */
#define LEDGER_MAGIC       "chpldg1\n"
#define LEDGER_MAGIC_BYTES 8
#define REC_BODY           (4 + CHP_TOKEN_ID_BYTES + CHP_HASH_BYTES + 8 + 8)
#define REC_CHECK          8
#define REC_BYTES          (REC_BODY + REC_CHECK)
#define LEDGER_COMPACT_MIN (1u << 20)
_Static_assert(REC_BODY == 68 && REC_BYTES == 76, "the record layout above");

struct rec {
        char type; /* 'C' or 'R' */
        bool sized;
        uint8_t id[CHP_TOKEN_ID_BYTES];
        uint8_t key[CHP_HASH_BYTES];
        uint64_t expires_at, size;
};

static void put_u64(uint8_t *p, uint64_t v)
{
        for (int i = 0; i < 8; i++)
                p[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t get_u64(const uint8_t *p)
{
        uint64_t v = 0;
        for (int i = 0; i < 8; i++)
                v |= (uint64_t)p[i] << (8 * i);
        return v;
}

static void rec_encode(const struct rec *r, uint8_t out[REC_BYTES])
{
        memset(out, 0, REC_BYTES);
        out[0] = (uint8_t)r->type;
        out[1] = r->sized;
        memcpy(out + 4, r->id, CHP_TOKEN_ID_BYTES);
        memcpy(out + 20, r->key, CHP_HASH_BYTES);
        put_u64(out + 52, r->expires_at);
        put_u64(out + 60, r->size);
        crypto_generichash(out + REC_BODY, REC_CHECK, out, REC_BODY, NULL, 0);
}

/* 0, or -EBADMSG: the check fails or a field is out of its range. */
static int rec_decode(const uint8_t in[REC_BYTES], struct rec *out)
{
        uint8_t check[REC_CHECK];
        crypto_generichash(check, REC_CHECK, in, REC_BODY, NULL, 0);
        if (memcmp(check, in + REC_BODY, REC_CHECK) != 0 || (in[0] != 'C' && in[0] != 'R') ||
            in[1] > 1 || in[2] || in[3])
                return -EBADMSG;
        out->type = (char)in[0];
        out->sized = in[1];
        memcpy(out->id, in + 4, CHP_TOKEN_ID_BYTES);
        memcpy(out->key, in + 20, CHP_HASH_BYTES);
        out->expires_at = get_u64(in + 52);
        out->size = get_u64(in + 60);
        return 0;
}

/* Writes all of buf at the end of fd: 0 or -errno. */
static int write_all(int fd, const uint8_t *buf, size_t len)
{
        while (len) {
                ssize_t n = write(fd, buf, len);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n <= 0)
                        return n < 0 ? -errno : -EIO;
                buf += n;
                len -= (size_t)n;
        }
        return 0;
}

/* Appends r to the ledger file (none: nothing to do): 0 or -errno, and then the file is as it
 * was (a partial record is cut off again). Lock held. */
static int ledger_append(struct chp_gate *g, const struct rec *r)
{
        if (g->fd < 0)
                return 0;
        uint8_t buf[REC_BYTES];
        rec_encode(r, buf);
        int rc = write_all(g->fd, buf, sizeof(buf));
        if (rc) {
                if (ftruncate(g->fd, (off_t)g->fbytes) != 0)
                        rc = -errno;
                return rc;
        }
        g->fbytes += REC_BYTES;
        return 0;
}

/* Makes in memory the change r records (replayed at start). 0, or CHP_ELIMITED / -ENOMEM (the
 * ledger's bounds: the charge is not kept). Lock held. */
static int apply(struct chp_gate *g, const struct rec *r)
{
        struct entry *e = find_entry(g, r->id);
        struct charge *ch = find_charge(e, r->key);
        if (r->type == 'R') {
                if (ch) {
                        e->bytes -= min_u64(e->bytes, ch->size);
                        *ch = e->files[--e->nfiles];
                }
                return 0;
        }
        if (!ch) {
                int rc = 0;
                if (e && e->nfiles >= CHP_GATE_FILES)
                        return CHP_ELIMITED;
                if (!(e = reserve(g, e, r->id, r->expires_at, &rc)))
                        return rc;
                ch = &e->files[e->nfiles++];
                *ch = (struct charge){0};
                memcpy(ch->key, r->key, CHP_HASH_BYTES);
        }
        e->bytes -= min_u64(e->bytes, ch->size);
        ch->sized = r->sized;
        ch->size = r->size;
        e->bytes += ch->size;
        return 0;
}

/* Rewrites the ledger file with one record per live charge (DIR/ledger.tmp, fsync, rename,
 * fsync of DIR) and appends to it from then on. 0 or -errno (the old file, if any, stays in
 * use). Lock held. */
static int compact(struct chp_gate *g)
{
        size_t plen = strlen(g->path) + 5;
        char *tmp = malloc(plen);
        if (!tmp)
                return -ENOMEM;
        snprintf(tmp, plen, "%s.tmp", g->path);
        int rc = 0, fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        uint64_t bytes = LEDGER_MAGIC_BYTES;
        if (fd < 0) {
                rc = -errno;
                goto out;
        }
        /* records in batches: one write per 64 */
        uint8_t buf[64 * REC_BYTES];
        size_t n = LEDGER_MAGIC_BYTES;
        memcpy(buf, LEDGER_MAGIC, LEDGER_MAGIC_BYTES);
        for (size_t b = 0; b < BUCKETS && !rc; b++)
                for (struct entry *e = g->buckets[b]; e && !rc; e = e->next)
                        for (uint32_t i = 0; i < e->nfiles && !rc; i++) {
                                struct rec r = {.type = 'C',
                                                .sized = e->files[i].sized,
                                                .expires_at = e->expires_at,
                                                .size = e->files[i].size};
                                memcpy(r.id, e->id, CHP_TOKEN_ID_BYTES);
                                memcpy(r.key, e->files[i].key, CHP_HASH_BYTES);
                                if (n + REC_BYTES > sizeof(buf)) {
                                        rc = write_all(fd, buf, n);
                                        n = 0;
                                }
                                rec_encode(&r, buf + n);
                                n += REC_BYTES;
                                bytes += REC_BYTES;
                        }
        if (!rc)
                rc = write_all(fd, buf, n);
        if (!rc && fsync(fd) != 0)
                rc = -errno;
        if (!rc && rename(tmp, g->path) != 0)
                rc = -errno;
        if (rc) {
                close(fd);
                unlink(tmp);
                goto out;
        }
        /* the rename itself made durable: the directory's entry */
        char *slash = strrchr(g->path, '/');
        if (slash) {
                *slash = '\0';
                int dfd =
                    open(slash == g->path ? "/" : g->path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
                *slash = '/';
                if (dfd >= 0) {
                        (void)fsync(dfd);
                        close(dfd);
                }
        }
        /* from now on appended to: the new file's descriptor, at its end */
        if (lseek(fd, 0, SEEK_END) < 0 || fcntl(fd, F_SETFL, O_APPEND) != 0) {
                rc = -errno;
                close(fd);
                goto out;
        }
        if (g->fd >= 0)
                close(g->fd);
        g->fd = fd;
        g->fbytes = bytes;
out:
        free(tmp);
        return rc;
}

/* Replays the file at g->path into memory: what it holds is counted into *out. 0 or -errno (it
 * could not be read; a missing file is an empty ledger). Lock held. */
static int replay(struct chp_gate *g, uint64_t now, struct chp_gate_ledger_load *out)
{
        int fd = open(g->path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return errno == ENOENT ? 0 : -errno;
        struct stat st;
        if (fstat(fd, &st) != 0) {
                int rc = -errno;
                close(fd);
                return rc;
        }
        uint64_t size = (uint64_t)st.st_size, off = 0;
        uint8_t buf[64 * REC_BYTES];
        size_t have = 0;
        bool magic = false, bad = false;
        int rc = 0;
        for (;;) {
                ssize_t n = read(fd, buf + have, sizeof(buf) - have);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0) {
                        rc = -errno;
                        break;
                }
                have += (size_t)n;
                size_t at = 0;
                if (!magic && have >= LEDGER_MAGIC_BYTES) {
                        if (memcmp(buf, LEDGER_MAGIC, LEDGER_MAGIC_BYTES) != 0) {
                                bad = true;
                                break;
                        }
                        magic = true;
                        at = LEDGER_MAGIC_BYTES;
                }
                for (; magic && have - at >= REC_BYTES; at += REC_BYTES) {
                        struct rec r;
                        if (rec_decode(buf + at, &r) != 0) {
                                bad = true;
                                break;
                        }
                        if (now > r.expires_at + CHP_TOKEN_SKEW)
                                out->expired++;
                        else if (apply(g, &r) == 0)
                                out->records++;
                        else
                                out->unkept++;
                }
                off += at;
                memmove(buf, buf + at, have - at);
                have -= at;
                if (bad || n == 0)
                        break;
        }
        close(fd);
        if (!rc && off < size)
                out->dropped_bytes = size - off; /* a torn or corrupt tail, or not a ledger */
        return rc;
}

int chp_gate_persist(struct chp_gate *g, const char *dir, uint64_t now,
                     struct chp_gate_ledger_load *out)
{
        memset(out, 0, sizeof(*out));
        size_t plen = strlen(dir) + sizeof("/ledger");
        char *path = malloc(plen);
        if (!path)
                return -ENOMEM;
        snprintf(path, plen, "%s/ledger", dir);
        pthread_mutex_lock(&g->mu);
        free(g->path);
        g->path = path;
        int rc = replay(g, now, out);
        if (!rc)
                rc = compact(g);
        pthread_mutex_unlock(&g->mu);
        return rc;
}

const char *chp_gate_quota_name(enum chp_store_quota_hit hit)
{
        switch (hit) {
        case CHP_QUOTA_STORED:
                return "the tenant's stored bytes (max_stored)";
        case CHP_QUOTA_INCOMPLETE:
                return "the tenant's incomplete uploads (max_incomplete_uploads)";
        case CHP_QUOTA_PER_DAY:
                return "the tenant's bytes per day (max_uploaded_per_day)";
        case CHP_QUOTA_NONE:
                break;
        }
        return "the token's budget (max_bytes, max_files)";
}

bool chp_gate_tenant_quota(const struct chp_config *cfg, const char *tenant, uint64_t now,
                           struct chp_store_quota *out)
{
        const struct chp_tenant_config *t = chp_config_find_tenant(cfg, tenant, strlen(tenant));
        if (!t || !tenant[0])
                return false;
        *out = (struct chp_store_quota){
            .max_stored = t->max_stored,
            .max_incomplete = t->max_incomplete_uploads,
            .max_per_day = t->max_uploaded_per_day,
            .now = now,
        };
        return true;
}

int chp_gate_upload_begin(struct chp_gate *g, const struct chp_config *cfg,
                          const struct chp_caller *c, const uint8_t key[CHP_HASH_BYTES],
                          bool is_file_id, uint64_t size, uint64_t now, struct chp_gate_upload *out)
{
        memset(out, 0, sizeof(*out));
        int rc = chp_gate_allow(c, CHP_TOKEN_SCOPE_UPLOAD, now);
        if (rc != 0)
                return rc;
        if (c->kind == CHP_CALLER_TRUSTED)
                return 0;
        const struct chp_token *tok = &c->token;
        const struct chp_tenant_config *t =
            chp_config_find_tenant(cfg, tok->tenant, strlen(tok->tenant));
        if (!t)
                return CHP_ETOKEN_KEY; /* a reload removed the tenant since the HELLO */
        if (tok->has_file_id && (!is_file_id || memcmp(tok->file_id, key, CHP_HASH_BYTES) != 0))
                return CHP_ETOKEN_FILE;
        if ((rc = check_size(t, tok, size)) != 0)
                return rc;

        pthread_mutex_lock(&g->mu);
        struct entry *e = find_entry(g, tok->id);
        struct charge *ch = find_charge(e, key);
        if (!ch && (rc = check_budget(e, tok, size, true)) != 0)
                goto out;
        struct slots *s = find_slots(g, t->name);
        if (s && s->busy >= t->max_concurrent_uploads) {
                rc = CHP_ELIMITED;
                goto out;
        }
        /* every allocation before any change, so that a failure leaves nothing charged */
        struct slots *fresh_slots = NULL;
        if (!s) {
                fresh_slots = calloc(1, sizeof(*fresh_slots));
                if (!fresh_slots) {
                        rc = -ENOMEM;
                        goto out;
                }
                memcpy(fresh_slots->tenant, t->name, strlen(t->name) + 1);
        }
        if (!ch) {
                e = reserve(g, e, tok->id, tok->expires_at, &rc);
                bool sized = size != CHP_UPLOAD_SIZE_UNKNOWN;
                struct rec r = {.type = 'C',
                                .sized = sized,
                                .expires_at = tok->expires_at,
                                .size = sized ? size : 0};
                memcpy(r.id, tok->id, CHP_TOKEN_ID_BYTES);
                memcpy(r.key, key, CHP_HASH_BYTES);
                if (!e || (rc = ledger_append(g, &r)) != 0) {
                        free(fresh_slots);
                        goto out;
                }
                ch = &e->files[e->nfiles++];
                memcpy(ch->key, key, CHP_HASH_BYTES);
                ch->sized = sized;
                ch->size = r.size;
                e->bytes += ch->size;
                out->charged = true;
                memcpy(out->token_id, tok->id, CHP_TOKEN_ID_BYTES);
                memcpy(out->key, key, CHP_HASH_BYTES);
        }
        if (fresh_slots) {
                fresh_slots->next = g->slots;
                g->slots = s = fresh_slots;
        }
        s->busy++;
out:
        pthread_mutex_unlock(&g->mu);
        if (rc != 0)
                return rc;
        memcpy(out->tenant, t->name, strlen(t->name) + 1);
        out->expires_max = now + min_u64(tok->max_file_life, t->max_file_life);
        out->has_quota = chp_gate_tenant_quota(cfg, t->name, now, &out->quota);
        out->holds_slot = true;
        return 0;
}

int chp_gate_upload_begin_tenant(struct chp_gate *g, const struct chp_config *cfg,
                                 const char *tenant, uint64_t size, uint64_t now,
                                 struct chp_gate_upload *out)
{
        memset(out, 0, sizeof(*out));
        const struct chp_tenant_config *t = chp_config_find_tenant(cfg, tenant, strlen(tenant));
        if (!t || !tenant[0])
                return -ENOENT;
        if (size != CHP_UPLOAD_SIZE_UNKNOWN && size > t->max_file_size)
                return CHP_ETOOBIG;
        int rc = 0;
        pthread_mutex_lock(&g->mu);
        struct slots *s = find_slots(g, t->name);
        if (s && s->busy >= t->max_concurrent_uploads) {
                rc = CHP_ELIMITED;
        } else if (!s) {
                if ((s = calloc(1, sizeof(*s))) != NULL) {
                        memcpy(s->tenant, t->name, strlen(t->name) + 1);
                        s->next = g->slots;
                        g->slots = s;
                } else {
                        rc = -ENOMEM;
                }
        }
        if (!rc)
                s->busy++;
        pthread_mutex_unlock(&g->mu);
        if (rc != 0)
                return rc;
        memcpy(out->tenant, t->name, strlen(t->name) + 1);
        out->expires_max = now + t->max_file_life;
        if (t->max_file_life > UINT64_MAX - now)
                out->expires_max = 0; /* unlimited */
        out->has_quota = chp_gate_tenant_quota(cfg, t->name, now, &out->quota);
        out->holds_slot = true;
        return 0;
}

int chp_gate_upload_grow(struct chp_gate *g, const struct chp_config *cfg,
                         const struct chp_caller *c, const uint8_t key[CHP_HASH_BYTES],
                         uint64_t size, uint64_t now)
{
        (void)now; /* the upload was admitted; its length is charged even past the token's expiry */
        if (c->kind != CHP_CALLER_TOKEN)
                return 0;
        const struct chp_token *tok = &c->token;
        const struct chp_tenant_config *t =
            chp_config_find_tenant(cfg, tok->tenant, strlen(tok->tenant));
        if (!t)
                return CHP_ETOKEN_KEY;
        int rc = check_size(t, tok, size);
        if (rc != 0)
                return rc;
        pthread_mutex_lock(&g->mu);
        struct entry *e = find_entry(g, tok->id);
        struct charge *ch = find_charge(e, key);
        if (ch && ch->sized)
                goto out; /* charged already */
        if ((rc = check_budget(e, tok, size, !ch)) != 0)
                goto out;
        /* the entry expired and went (or never was): the file is charged afresh */
        if (!ch && !(e = reserve(g, e, tok->id, tok->expires_at, &rc)))
                goto out;
        struct rec r = {.type = 'C',
                        .sized = true,
                        .expires_at = tok->expires_at,
                        .size = size == CHP_UPLOAD_SIZE_UNKNOWN ? 0 : size};
        memcpy(r.id, tok->id, CHP_TOKEN_ID_BYTES);
        memcpy(r.key, key, CHP_HASH_BYTES);
        if ((rc = ledger_append(g, &r)) != 0)
                goto out;
        if (!ch) {
                ch = &e->files[e->nfiles++];
                memcpy(ch->key, key, CHP_HASH_BYTES);
        }
        ch->sized = true;
        ch->size = r.size;
        e->bytes += ch->size;
out:
        pthread_mutex_unlock(&g->mu);
        return rc;
}

void chp_gate_upload_refund(struct chp_gate *g, struct chp_gate_upload *u)
{
        if (!g || !u->charged)
                return;
        pthread_mutex_lock(&g->mu);
        struct entry *e = find_entry(g, u->token_id);
        struct charge *ch = find_charge(e, u->key);
        if (ch) {
                /* on disk first; if that fails the file keeps the charge after a restart, which
                 * errs on the token's side of its budget, not the relay's */
                struct rec r = {.type = 'R', .expires_at = e->expires_at};
                memcpy(r.id, u->token_id, CHP_TOKEN_ID_BYTES);
                memcpy(r.key, u->key, CHP_HASH_BYTES);
                (void)ledger_append(g, &r);
                e->bytes -= min_u64(e->bytes, ch->size); /* with a deferred length grown since */
                *ch = e->files[--e->nfiles];
        }
        pthread_mutex_unlock(&g->mu);
        u->charged = false;
}

void chp_gate_upload_end(struct chp_gate *g, struct chp_gate_upload *u)
{
        if (!g || !u->holds_slot)
                return;
        pthread_mutex_lock(&g->mu);
        for (struct slots **p = &g->slots; *p; p = &(*p)->next) {
                struct slots *s = *p;
                if (strcmp(s->tenant, u->tenant) != 0)
                        continue;
                if (s->busy > 0)
                        s->busy--;
                if (s->busy == 0) {
                        *p = s->next;
                        free(s);
                }
                break;
        }
        pthread_mutex_unlock(&g->mu);
        u->holds_slot = false;
}

int chp_gate_expire(struct chp_gate *g, uint64_t now)
{
        uint64_t live = 0;
        int rc = 0;
        pthread_mutex_lock(&g->mu);
        for (size_t b = 0; b < BUCKETS; b++)
                for (struct entry **p = &g->buckets[b]; *p;) {
                        struct entry *e = *p;
                        if (now > e->expires_at + CHP_TOKEN_SKEW) {
                                *p = e->next;
                                entry_free(e);
                                g->ntokens--;
                        } else {
                                live += e->nfiles;
                                p = &e->next;
                        }
                }
        uint64_t need = LEDGER_MAGIC_BYTES + live * REC_BYTES;
        if (g->fd >= 0 && g->fbytes > LEDGER_COMPACT_MIN && g->fbytes > 2 * need)
                rc = compact(g);
        pthread_mutex_unlock(&g->mu);
        return rc;
}
