/* gate.c — callers, scopes, token budgets and tenants' uploads in progress (gate.h).
 *
 * The ledger is a chained hash table of token ids (BUCKETS chains, at most CHP_GATE_TOKENS
 * entries), each holding the keys of the files charged to it in an array that grows by doubling
 * up to CHP_GATE_FILES. The uploads in progress are a short list of (tenant name, count), an
 * entry dropped when its count returns to 0: a tenant a reload removed leaves nothing behind.
 * One mutex guards both; it is held only for lookups and small allocations, never for I/O.
 */
#include "gate.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

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
static struct entry *reserve(struct chp_gate *g, struct entry *e, const struct chp_token *tok,
                             int *rc)
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
                memcpy(e->id, tok->id, CHP_TOKEN_ID_BYTES);
                e->expires_at = tok->expires_at;
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
                struct entry **b = bucket(g, tok->id);
                e->next = *b;
                *b = e;
                g->ntokens++;
        }
        return e;
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
                e = reserve(g, e, tok, &rc);
                if (!e) {
                        free(fresh_slots);
                        goto out;
                }
                ch = &e->files[e->nfiles++];
                memcpy(ch->key, key, CHP_HASH_BYTES);
                ch->sized = size != CHP_UPLOAD_SIZE_UNKNOWN;
                ch->size = ch->sized ? size : 0;
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
        if (!ch) {
                /* the entry expired and went (or never was): charge the file afresh */
                e = reserve(g, e, tok, &rc);
                if (!e)
                        goto out;
                ch = &e->files[e->nfiles++];
                memcpy(ch->key, key, CHP_HASH_BYTES);
        }
        ch->sized = true;
        ch->size = size == CHP_UPLOAD_SIZE_UNKNOWN ? 0 : size;
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

void chp_gate_expire(struct chp_gate *g, uint64_t now)
{
        pthread_mutex_lock(&g->mu);
        for (size_t b = 0; b < BUCKETS; b++)
                for (struct entry **p = &g->buckets[b]; *p;) {
                        struct entry *e = *p;
                        if (now > e->expires_at + CHP_TOKEN_SKEW) {
                                *p = e->next;
                                entry_free(e);
                                g->ntokens--;
                        } else {
                                p = &e->next;
                        }
                }
        pthread_mutex_unlock(&g->mu);
}
