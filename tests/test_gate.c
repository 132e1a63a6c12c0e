/* The gate (server/conf/gate.c): who a caller is for each way of presenting (or not) a token,
 * every refusal of a bad token, scopes and expiry at use, and an upload's admission: the token's
 * file id, the size limits, the budget charged once per file however often it is resumed,
 * max_files, the tenant's uploads in progress given back by _end, the ledger's bounds and its
 * expiry, and the ledger kept in a file across a restart (charges, grown lengths, refunds;
 * expired tokens dropped; a torn or corrupt tail ignored; compaction). Tokens are signed here with
 * chp_token_sign; the budget cases build callers directly. */
#include "harness.h"
#include "testutil.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#include "err.h"
#include "gate.h"

#define NOW    1767225600ull /* 2026-01-01T00:00:00Z */
#define TENANT "acme"
#define GIB    (1ull << 30)

static uint8_t seed[CHP_TOKEN_SEED_BYTES], other_seed[CHP_TOKEN_SEED_BYTES];
static uint8_t relay_key[CHP_KEY_BYTES], other_relay[CHP_KEY_BYTES];

static void init(void)
{
        static bool done;
        if (done)
                return;
        if (sodium_init() < 0)
                abort();
        memset(seed, 0x11, sizeof(seed));
        memset(other_seed, 0x22, sizeof(other_seed));
        memset(relay_key, 0x33, sizeof(relay_key));
        memset(other_relay, 0x44, sizeof(other_relay));
        done = true;
}

/* A configuration with the tenant TENANT (seed's key) and the given limits, no --open. */
static void config(struct chp_config *c, uint64_t max_file_size, uint64_t max_concurrent)
{
        init();
        chp_config_defaults(c);
        c->tenants = calloc(1, sizeof(*c->tenants));
        if (!c->tenants || !(c->tenants[0].name = strdup(TENANT)))
                abort();
        c->ntenants = 1;
        struct chp_tenant_config *t = &c->tenants[0];
        struct chp_token_key k;
        chp_token_key_from_seed(seed, &k);
        memcpy(t->keys[0].kid, k.kid, sizeof(k.kid));
        memcpy(t->keys[0].pub, k.pub, sizeof(k.pub));
        t->nkeys = 1;
        t->max_stored = 100 * GIB;
        t->max_uploaded_per_day = 10 * GIB;
        t->max_file_size = max_file_size;
        t->max_file_life = 7 * 86400;
        t->max_concurrent_uploads = max_concurrent;
        t->max_incomplete_uploads = 5;
        if (!(c->audiences[0] = strdup("fed.example")))
                abort();
        c->naudiences = 1;
}

/* A token of TENANT for this relay: upload, 1 GiB, 4 files, a day's file life, an hour. */
static struct chp_token base_token(void)
{
        init();
        struct chp_token t;
        memset(&t, 0, sizeof(t));
        t.version = CHP_TOKEN_VERSION;
        t.scopes = CHP_TOKEN_SCOPE_UPLOAD;
        struct chp_token_key k;
        chp_token_key_from_seed(seed, &k);
        memcpy(t.kid, k.kid, sizeof(t.kid));
        memset(t.id, 0xab, sizeof(t.id));
        t.issued_at = NOW;
        t.expires_at = NOW + 3600;
        t.max_bytes = GIB;
        t.max_files = 4;
        t.max_file_life = 86400;
        t.audience = CHP_TOKEN_AUD_RELAY;
        memcpy(t.audience_key, relay_key, CHP_KEY_BYTES);
        snprintf(t.tenant, sizeof(t.tenant), TENANT);
        snprintf(t.subject, sizeof(t.subject), "u_1");
        return t;
}

static int identify_signed(const struct chp_config *c, const struct chp_token *t, const uint8_t *by,
                           uint64_t now, struct chp_caller *out)
{
        char text[CHP_TOKEN_TEXT_MAX];
        ssize_t n = chp_token_sign(t, by, text, sizeof(text));
        if (n < 0)
                return (int)n;
        char *copy = (char *)tu_exact_copy((const uint8_t *)text, (size_t)n);
        int rc = chp_gate_identify(c, relay_key, false, copy, (size_t)n, now, out);
        free(copy);
        return rc;
}

static int identify(const struct chp_config *c, const struct chp_token *t, uint64_t now,
                    struct chp_caller *out)
{
        return identify_signed(c, t, seed, now, out);
}

/* A caller holding t, as identify would make it (for cases about the budget, not the token). */
static struct chp_caller holder(const struct chp_token *t)
{
        struct chp_caller c = {.kind = CHP_CALLER_TOKEN, .scopes = t->scopes, .token = *t};
        return c;
}

static void key_of(unsigned n, uint8_t key[CHP_HASH_BYTES])
{
        memset(key, 0, CHP_HASH_BYTES);
        tu_put32(key, n);
        key[31] = 0x5a;
}

TEST(identify_without_token)
{
        struct chp_config c;
        struct chp_caller who;
        init();
        chp_config_defaults(&c);
        /* no tenant: loopback is trusted, other addresses anonymous */
        CHECK_OK(chp_gate_identify(&c, relay_key, true, NULL, 0, NOW, &who));
        CHECK_EQ(who.kind, CHP_CALLER_TRUSTED);
        CHECK_EQ(who.scopes, CHP_TOKEN_SCOPE_ALL);
        CHECK_OK(chp_gate_identify(&c, relay_key, false, "", 0, NOW, &who));
        CHECK_EQ(who.kind, CHP_CALLER_ANONYMOUS);
        CHECK_EQ(who.scopes, 0);
        /* --open: everyone is trusted */
        c.open = true;
        CHECK_OK(chp_gate_identify(&c, relay_key, false, NULL, 0, NOW, &who));
        CHECK_EQ(who.kind, CHP_CALLER_TRUSTED);
        chp_config_free(&c);

        /* tenants: loopback needs a token too, unless --open */
        config(&c, GIB, 2);
        CHECK_OK(chp_gate_identify(&c, relay_key, true, NULL, 0, NOW, &who));
        CHECK_EQ(who.kind, CHP_CALLER_ANONYMOUS);
        c.open = true;
        CHECK_OK(chp_gate_identify(&c, relay_key, false, NULL, 0, NOW, &who));
        CHECK_EQ(who.kind, CHP_CALLER_TRUSTED);
        chp_config_free(&c);
}

TEST(identify_token)
{
        struct chp_config c;
        config(&c, GIB, 2);
        struct chp_caller who;
        struct chp_token t = base_token();
        t.scopes = CHP_TOKEN_SCOPE_UPLOAD | CHP_TOKEN_SCOPE_PULL;
        REQUIRE_OK(identify(&c, &t, NOW + 10, &who));
        CHECK_EQ(who.kind, CHP_CALLER_TOKEN);
        CHECK_EQ(who.scopes, CHP_TOKEN_SCOPE_UPLOAD | CHP_TOKEN_SCOPE_PULL);
        CHECK(strcmp(who.token.subject, "u_1") == 0);
        CHECK(memcmp(who.token.id, t.id, CHP_TOKEN_ID_BYTES) == 0);

        /* the audience: this relay's key, the tenant's name, a [server] audience name */
        t.audience = CHP_TOKEN_AUD_NAME;
        memset(t.audience_key, 0, sizeof(t.audience_key));
        snprintf(t.audience_name, sizeof(t.audience_name), TENANT);
        CHECK_OK(identify(&c, &t, NOW, &who));
        snprintf(t.audience_name, sizeof(t.audience_name), "fed.example");
        CHECK_OK(identify(&c, &t, NOW, &who));
        /* a token is a token from loopback and with --open too */
        c.open = true;
        CHECK_OK(identify(&c, &t, NOW, &who));
        CHECK_EQ(who.kind, CHP_CALLER_TOKEN);
        chp_config_free(&c);
}

TEST(identify_refusals)
{
        struct chp_config c;
        config(&c, GIB, 2);
        struct chp_caller who;
        struct chp_token t;

        /* another relay's key, a name this relay does not answer to */
        t = base_token();
        memcpy(t.audience_key, other_relay, CHP_KEY_BYTES);
        CHECK_EQ(identify(&c, &t, NOW, &who), CHP_ETOKEN_AUDIENCE);
        CHECK_EQ(who.kind, CHP_CALLER_ANONYMOUS); /* cleared, not left as a token */
        t.audience = CHP_TOKEN_AUD_NAME;
        memset(t.audience_key, 0, sizeof(t.audience_key));
        snprintf(t.audience_name, sizeof(t.audience_name), "other.example");
        CHECK_EQ(identify(&c, &t, NOW, &who), CHP_ETOKEN_AUDIENCE);

        /* a tenant not configured, a key id the tenant lacks, another key with its key id */
        t = base_token();
        snprintf(t.tenant, sizeof(t.tenant), "other");
        CHECK_EQ(identify(&c, &t, NOW, &who), CHP_ETOKEN_KEY);
        t = base_token();
        t.kid[0] ^= 1;
        CHECK_EQ(identify(&c, &t, NOW, &who), CHP_ETOKEN_KEY);
        t = base_token();
        CHECK_EQ(identify_signed(&c, &t, other_seed, NOW, &who), CHP_ETOKEN_SIGNATURE);

        /* times: empty or too long a life, early, expired; the skew forgiven either side */
        t = base_token();
        t.expires_at = t.issued_at;
        CHECK_EQ(identify(&c, &t, NOW, &who), CHP_ETOKEN_LIFE);
        t.expires_at = t.issued_at + CHP_TOKEN_LIFE_MAX + 1;
        CHECK_EQ(identify(&c, &t, NOW, &who), CHP_ETOKEN_LIFE);
        t = base_token();
        CHECK_EQ(identify(&c, &t, NOW - CHP_TOKEN_SKEW - 1, &who), CHP_ETOKEN_EARLY);
        CHECK_OK(identify(&c, &t, NOW - CHP_TOKEN_SKEW, &who));
        CHECK_EQ(identify(&c, &t, NOW + 3600 + CHP_TOKEN_SKEW + 1, &who), CHP_ETOKEN_EXPIRED);
        CHECK_OK(identify(&c, &t, NOW + 3600 + CHP_TOKEN_SKEW, &who));

        /* text that is not a token at all, and a tampered one: never taken as no token */
        CHECK_EQ(chp_gate_identify(&c, relay_key, true, "x", 1, NOW, &who), CHP_ETOKEN_SIGNATURE);
        CHECK_EQ(chp_gate_identify(&c, relay_key, true, "!!!!", 4, NOW, &who),
                 CHP_ETOKEN_SIGNATURE);
        char text[CHP_TOKEN_TEXT_MAX];
        t = base_token();
        ssize_t n = chp_token_sign(&t, seed, text, sizeof(text));
        REQUIRE(n > 40);
        text[30] = text[30] == 'A' ? 'B' : 'A'; /* inside the fields: the subject's bytes */
        CHECK_EQ(chp_gate_identify(&c, relay_key, true, text, (size_t)n, NOW, &who),
                 CHP_ETOKEN_SIGNATURE);
        /* a whole token with a tail is not a token either */
        n = chp_token_sign(&t, seed, text, sizeof(text));
        CHECK_EQ(chp_gate_identify(&c, relay_key, true, text, (size_t)n - 1, NOW, &who),
                 CHP_ETOKEN_SIGNATURE);
        chp_config_free(&c);
}

TEST(allow_and_probe)
{
        struct chp_token t = base_token();
        t.scopes = CHP_TOKEN_SCOPE_OFFER;
        struct chp_caller tok = holder(&t);
        struct chp_caller trusted = {.kind = CHP_CALLER_TRUSTED, .scopes = CHP_TOKEN_SCOPE_ALL};
        struct chp_caller anon = {.kind = CHP_CALLER_ANONYMOUS};
        for (uint8_t s = CHP_TOKEN_SCOPE_UPLOAD; s <= CHP_TOKEN_SCOPE_PULL; s <<= 1) {
                CHECK_OK(chp_gate_allow(&trusted, s, NOW));
                CHECK_EQ(chp_gate_allow(&anon, s, NOW), CHP_ETOKEN_MISSING);
                CHECK_EQ(chp_gate_allow(&tok, s, NOW),
                         s == CHP_TOKEN_SCOPE_OFFER ? 0 : CHP_ETOKEN_SCOPE);
        }
        /* a connection outlives its token: the scope is checked again at each use */
        CHECK_OK(chp_gate_allow(&tok, CHP_TOKEN_SCOPE_OFFER, NOW + 3600 + CHP_TOKEN_SKEW));
        CHECK_EQ(chp_gate_allow(&tok, CHP_TOKEN_SCOPE_OFFER, NOW + 3600 + CHP_TOKEN_SKEW + 1),
                 CHP_ETOKEN_EXPIRED);
        CHECK(chp_gate_may_probe(&trusted));
        CHECK(chp_gate_may_probe(&tok));
        CHECK(!chp_gate_may_probe(&anon));
}

TEST(begin_scope_and_trusted)
{
        struct chp_config c;
        config(&c, GIB, 2);
        struct chp_gate *g;
        REQUIRE_OK(chp_gate_new(&g));
        uint8_t key[CHP_HASH_BYTES];
        key_of(1, key);
        struct chp_gate_upload u;

        struct chp_caller anon = {.kind = CHP_CALLER_ANONYMOUS};
        CHECK_EQ(chp_gate_upload_begin(g, &c, &anon, key, true, 10, NOW, &u), CHP_ETOKEN_MISSING);
        struct chp_token t = base_token();
        t.scopes = CHP_TOKEN_SCOPE_OFFER | CHP_TOKEN_SCOPE_PULL;
        struct chp_caller offer_only = holder(&t);
        CHECK_EQ(chp_gate_upload_begin(g, &c, &offer_only, key, true, 10, NOW, &u),
                 CHP_ETOKEN_SCOPE);
        t = base_token();
        struct chp_caller up = holder(&t);
        CHECK_EQ(
            chp_gate_upload_begin(g, &c, &up, key, true, 10, NOW + 3600 + CHP_TOKEN_SKEW + 1, &u),
            CHP_ETOKEN_EXPIRED);

        /* trusted: nothing charged, no tenant, no quota, no slot, no expiry bound */
        struct chp_caller trusted = {.kind = CHP_CALLER_TRUSTED, .scopes = CHP_TOKEN_SCOPE_ALL};
        for (int i = 0; i < 5; i++) {
                CHECK_OK(chp_gate_upload_begin(g, &c, &trusted, key, true, 100 * GIB, NOW, &u));
                CHECK(u.tenant[0] == '\0' && !u.has_quota && !u.holds_slot);
                CHECK_EQ(u.expires_max, 0);
        }

        /* a token's admission carries its tenant, the shorter life and the tenant's quota */
        CHECK_OK(chp_gate_upload_begin(g, &c, &up, key, true, 10, NOW, &u));
        CHECK(strcmp(u.tenant, TENANT) == 0 && u.has_quota && u.holds_slot);
        CHECK_EQ(u.expires_max, NOW + 86400); /* the token's day, under the tenant's week */
        CHECK_EQ(u.quota.max_stored, 100 * GIB);
        CHECK_EQ(u.quota.max_incomplete, 5);
        CHECK_EQ(u.quota.max_per_day, 10 * GIB);
        CHECK_EQ(u.quota.now, NOW);
        chp_gate_upload_end(g, &u);
        CHECK(!u.holds_slot);
        chp_gate_upload_end(g, &u); /* idempotent */
        c.tenants[0].max_file_life = 600;
        CHECK_OK(chp_gate_upload_begin(g, &c, &up, key, true, 10, NOW, &u));
        CHECK_EQ(u.expires_max, NOW + 600);
        chp_gate_upload_end(g, &u);

        /* a reload that removed the tenant: its tokens no longer admit anything */
        snprintf(c.tenants[0].name, strlen(TENANT) + 1, "gone");
        CHECK_EQ(chp_gate_upload_begin(g, &c, &up, key, true, 10, NOW, &u), CHP_ETOKEN_KEY);
        struct chp_gate_upload zero = {0};
        chp_gate_upload_end(g, &zero); /* a no-op */
        chp_gate_free(g);
        chp_gate_free(NULL);
        chp_config_free(&c);
}

TEST(begin_file_id_and_sizes)
{
        struct chp_config c;
        config(&c, 1000, 8);
        struct chp_gate *g;
        REQUIRE_OK(chp_gate_new(&g));
        uint8_t key[CHP_HASH_BYTES], other[CHP_HASH_BYTES];
        key_of(1, key);
        key_of(2, other);
        struct chp_gate_upload u;

        struct chp_token t = base_token();
        t.has_file_id = true;
        memcpy(t.file_id, key, CHP_HASH_BYTES);
        struct chp_caller one = holder(&t);
        CHECK_EQ(chp_gate_upload_begin(g, &c, &one, other, true, 10, NOW, &u), CHP_ETOKEN_FILE);
        /* a tus upload id is never the file id, even with the same bytes */
        CHECK_EQ(chp_gate_upload_begin(g, &c, &one, key, false, 10, NOW, &u), CHP_ETOKEN_FILE);
        CHECK_OK(chp_gate_upload_begin(g, &c, &one, key, true, 10, NOW, &u));
        chp_gate_upload_end(g, &u);

        /* the tenant's largest file (1000), then the token's whole budget (500) */
        t = base_token();
        memset(t.id, 0x01, sizeof(t.id));
        struct chp_caller up = holder(&t);
        CHECK_EQ(chp_gate_upload_begin(g, &c, &up, key, true, 1001, NOW, &u), CHP_ETOOBIG);
        CHECK_OK(chp_gate_upload_begin(g, &c, &up, key, true, 1000, NOW, &u));
        chp_gate_upload_end(g, &u);
        t.max_bytes = 500;
        memset(t.id, 0x02, sizeof(t.id));
        up = holder(&t);
        CHECK_EQ(chp_gate_upload_begin(g, &c, &up, key, true, 501, NOW, &u), CHP_ETOOBIG);
        CHECK_OK(chp_gate_upload_begin(g, &c, &up, key, true, 500, NOW, &u));
        chp_gate_upload_end(g, &u);
        chp_gate_free(g);
        chp_config_free(&c);
}

TEST(budget_once_per_file)
{
        struct chp_config c;
        config(&c, GIB, 100);
        struct chp_gate *g;
        REQUIRE_OK(chp_gate_new(&g));
        uint8_t a[CHP_HASH_BYTES], b[CHP_HASH_BYTES], d[CHP_HASH_BYTES];
        key_of(1, a);
        key_of(2, b);
        key_of(3, d);
        struct chp_token t = base_token();
        t.max_bytes = 1000;
        struct chp_caller up = holder(&t);
        struct chp_gate_upload u;

        /* 600 bytes begun, resumed five times: still 600 charged, so 400 more fit, 401 not */
        for (int i = 0; i < 6; i++) {
                CHECK_OK(chp_gate_upload_begin(g, &c, &up, a, true, 600, NOW + (uint64_t)i, &u));
                chp_gate_upload_end(g, &u);
        }
        CHECK_EQ(chp_gate_upload_begin(g, &c, &up, b, true, 401, NOW, &u), CHP_EQUOTA);
        CHECK_OK(chp_gate_upload_begin(g, &c, &up, b, true, 400, NOW, &u));
        chp_gate_upload_end(g, &u);
        /* the budget is spent: a 1-byte file is refused, the files charged still resume */
        CHECK_EQ(chp_gate_upload_begin(g, &c, &up, d, true, 1, NOW, &u), CHP_EQUOTA);
        CHECK_OK(chp_gate_upload_begin(g, &c, &up, a, true, 600, NOW, &u));
        chp_gate_upload_end(g, &u);

        /* another token (another id) of the same tenant has its own budget */
        struct chp_token t2 = t;
        memset(t2.id, 0xcd, sizeof(t2.id));
        struct chp_caller up2 = holder(&t2);
        CHECK_OK(chp_gate_upload_begin(g, &c, &up2, d, true, 1000, NOW, &u));
        chp_gate_upload_end(g, &u);

        /* a deferred length: the file counts at begin, its bytes when known (once) */
        struct chp_token t3 = t;
        memset(t3.id, 0xef, sizeof(t3.id));
        struct chp_caller up3 = holder(&t3);
        CHECK_OK(chp_gate_upload_begin(g, &c, &up3, a, false, CHP_UPLOAD_SIZE_UNKNOWN, NOW, &u));
        chp_gate_upload_end(g, &u);
        CHECK_EQ(chp_gate_upload_grow(g, &c, &up3, a, 1001, NOW), CHP_ETOOBIG);
        CHECK_OK(chp_gate_upload_grow(g, &c, &up3, a, 700, NOW));
        CHECK_OK(chp_gate_upload_grow(g, &c, &up3, a, 700, NOW)); /* not charged twice */
        CHECK_OK(chp_gate_upload_begin(g, &c, &up3, b, false, CHP_UPLOAD_SIZE_UNKNOWN, NOW, &u));
        chp_gate_upload_end(g, &u);
        CHECK_EQ(chp_gate_upload_grow(g, &c, &up3, b, 301, NOW), CHP_EQUOTA);
        CHECK_OK(chp_gate_upload_grow(g, &c, &up3, b, 300, NOW));
        /* trusted callers grow freely */
        struct chp_caller trusted = {.kind = CHP_CALLER_TRUSTED, .scopes = CHP_TOKEN_SCOPE_ALL};
        CHECK_OK(chp_gate_upload_grow(g, &c, &trusted, d, 100 * GIB, NOW));
        chp_gate_free(g);
        chp_config_free(&c);
}

/* A file the store refused after the gate admitted it gives its charge back; a charge an earlier
 * admission made (the same file, resumed) is not the refused one's to give back. */
TEST(refund)
{
        struct chp_config c;
        config(&c, GIB, 100);
        struct chp_gate *g;
        REQUIRE_OK(chp_gate_new(&g));
        uint8_t a[CHP_HASH_BYTES], b[CHP_HASH_BYTES];
        key_of(1, a);
        key_of(2, b);
        struct chp_token t = base_token();
        t.max_bytes = 1000;
        t.max_files = 2;
        struct chp_caller up = holder(&t);
        struct chp_gate_upload u, again;

        CHECK_OK(chp_gate_upload_begin(g, &c, &up, a, true, 900, NOW, &u));
        CHECK(u.charged);
        chp_gate_upload_refund(g, &u);
        chp_gate_upload_refund(g, &u); /* idempotent */
        chp_gate_upload_end(g, &u);
        /* the 900 bytes and the file are back: two files of 500 fit */
        CHECK_OK(chp_gate_upload_begin(g, &c, &up, a, true, 500, NOW, &u));
        chp_gate_upload_end(g, &u);
        CHECK_OK(chp_gate_upload_begin(g, &c, &up, b, true, 500, NOW, &u));
        /* a resume of b charges nothing, so its refund takes nothing back */
        CHECK_OK(chp_gate_upload_begin(g, &c, &up, b, true, 500, NOW, &again));
        CHECK(!again.charged);
        chp_gate_upload_refund(g, &again);
        chp_gate_upload_end(g, &again);
        chp_gate_upload_end(g, &u);
        uint8_t d[CHP_HASH_BYTES];
        key_of(3, d);
        CHECK_EQ(chp_gate_upload_begin(g, &c, &up, d, true, 1, NOW, &u), CHP_EQUOTA);
        /* trusted admissions charge nothing */
        struct chp_caller trusted = {.kind = CHP_CALLER_TRUSTED, .scopes = CHP_TOKEN_SCOPE_ALL};
        CHECK_OK(chp_gate_upload_begin(g, &c, &trusted, d, true, 1, NOW, &u));
        CHECK(!u.charged);
        chp_gate_upload_refund(g, &u);
        chp_gate_free(g);
        chp_config_free(&c);
}

TEST(max_files)
{
        struct chp_config c;
        config(&c, GIB, 100);
        struct chp_gate *g;
        REQUIRE_OK(chp_gate_new(&g));
        struct chp_token t = base_token(); /* 4 files */
        struct chp_caller up = holder(&t);
        struct chp_gate_upload u;
        uint8_t key[CHP_HASH_BYTES];
        for (unsigned i = 0; i < 4; i++) {
                key_of(i, key);
                CHECK_OK(chp_gate_upload_begin(g, &c, &up, key, true, 1, NOW, &u));
                chp_gate_upload_end(g, &u);
        }
        key_of(4, key);
        CHECK_EQ(chp_gate_upload_begin(g, &c, &up, key, true, 1, NOW, &u), CHP_EQUOTA);
        key_of(0, key); /* a file charged already is not a fifth */
        CHECK_OK(chp_gate_upload_begin(g, &c, &up, key, true, 1, NOW, &u));
        chp_gate_upload_end(g, &u);
        chp_gate_free(g);
        chp_config_free(&c);
}

TEST(concurrent_slots)
{
        struct chp_config c;
        config(&c, GIB, 2);
        struct chp_gate *g;
        REQUIRE_OK(chp_gate_new(&g));
        struct chp_token t = base_token();
        t.max_files = 100;
        struct chp_caller up = holder(&t);
        struct chp_gate_upload u1, u2, u3;
        uint8_t k1[CHP_HASH_BYTES], k2[CHP_HASH_BYTES], k3[CHP_HASH_BYTES];
        key_of(1, k1);
        key_of(2, k2);
        key_of(3, k3);
        CHECK_OK(chp_gate_upload_begin(g, &c, &up, k1, true, 10, NOW, &u1));
        CHECK_OK(chp_gate_upload_begin(g, &c, &up, k2, true, 10, NOW, &u2));
        CHECK_EQ(chp_gate_upload_begin(g, &c, &up, k3, true, 10, NOW, &u3), CHP_ELIMITED);
        CHECK(!u3.holds_slot);
        /* a resume of k1 while k1 and k2 receive still needs a slot of its own */
        CHECK_EQ(chp_gate_upload_begin(g, &c, &up, k1, true, 10, NOW, &u3), CHP_ELIMITED);
        chp_gate_upload_end(g, &u1);
        CHECK_OK(chp_gate_upload_begin(g, &c, &up, k3, true, 10, NOW, &u3));
        CHECK_EQ(chp_gate_upload_begin(g, &c, &up, k1, true, 10, NOW, &u1), CHP_ELIMITED);
        chp_gate_upload_end(g, &u2);
        chp_gate_upload_end(g, &u2); /* twice: gives back one slot, not two */
        CHECK_OK(chp_gate_upload_begin(g, &c, &up, k1, true, 10, NOW, &u1));
        CHECK_EQ(chp_gate_upload_begin(g, &c, &up, k2, true, 10, NOW, &u2), CHP_ELIMITED);
        chp_gate_upload_end(g, &u1);
        chp_gate_upload_end(g, &u3);
        /* trusted uploads take no slot */
        struct chp_caller trusted = {.kind = CHP_CALLER_TRUSTED, .scopes = CHP_TOKEN_SCOPE_ALL};
        CHECK_OK(chp_gate_upload_begin(g, &c, &trusted, k1, true, 10, NOW, &u1));
        CHECK_OK(chp_gate_upload_begin(g, &c, &up, k1, true, 10, NOW, &u2));
        CHECK_OK(chp_gate_upload_begin(g, &c, &up, k2, true, 10, NOW, &u3));
        chp_gate_upload_end(g, &u2);
        chp_gate_upload_end(g, &u3);
        chp_gate_free(g);
        chp_config_free(&c);
}

/* An upload the tenant authorised itself (an XMPP server's signed URL): no token, nothing charged;
 * the tenant's largest file, its slots shared with token uploads, its file life and store limits.
 */
TEST(begin_tenant)
{
        struct chp_config c;
        config(&c, 1000, 2);
        struct chp_gate *g;
        REQUIRE_OK(chp_gate_new(&g));
        struct chp_gate_upload u1, u2, u3;
        CHECK_EQ(chp_gate_upload_begin_tenant(g, &c, "nobody", 10, NOW, &u1), -ENOENT);
        CHECK_EQ(chp_gate_upload_begin_tenant(g, &c, "", 10, NOW, &u1), -ENOENT);
        CHECK_EQ(chp_gate_upload_begin_tenant(g, &c, TENANT, 1001, NOW, &u1), CHP_ETOOBIG);
        CHECK(!u1.holds_slot);
        CHECK_OK(chp_gate_upload_begin_tenant(g, &c, TENANT, 1000, NOW, &u1));
        CHECK(u1.holds_slot && !u1.charged && u1.has_quota);
        CHECK_EQ(u1.expires_max, NOW + 7 * 86400);
        CHECK_EQ(u1.quota.max_incomplete, 5);
        CHECK(strcmp(u1.tenant, TENANT) == 0);
        /* the slots are the tenant's, shared with its token holders' uploads */
        struct chp_token t = base_token();
        struct chp_caller up = holder(&t);
        uint8_t k[CHP_HASH_BYTES];
        key_of(1, k);
        CHECK_OK(chp_gate_upload_begin(g, &c, &up, k, true, 10, NOW, &u2));
        CHECK_EQ(chp_gate_upload_begin_tenant(g, &c, TENANT, 10, NOW, &u3), CHP_ELIMITED);
        chp_gate_upload_end(g, &u1);
        CHECK_OK(chp_gate_upload_begin_tenant(g, &c, TENANT, 10, NOW, &u3));
        chp_gate_upload_end(g, &u2);
        chp_gate_upload_end(g, &u3);
        /* an unlimited file life: no latest expiry */
        c.tenants[0].max_file_life = CHP_UNLIMITED;
        CHECK_OK(chp_gate_upload_begin_tenant(g, &c, TENANT, 10, NOW, &u1));
        CHECK_EQ(u1.expires_max, 0);
        chp_gate_upload_end(g, &u1);
        chp_gate_free(g);
        chp_config_free(&c);
}

TEST(ledger_bounds)
{
        struct chp_config c;
        config(&c, GIB, CHP_UNLIMITED);
        struct chp_gate *g;
        REQUIRE_OK(chp_gate_new(&g));
        struct chp_gate_upload u;
        uint8_t key[CHP_HASH_BYTES];

        /* one token with a budget over the ledger's bound: CHP_GATE_FILES files, then refused
         * CHP_ELIMITED (not forgotten, which would refill the budget) */
        struct chp_token t = base_token();
        t.max_files = UINT32_MAX;
        struct chp_caller up = holder(&t);
        for (unsigned i = 0; i < CHP_GATE_FILES; i++) {
                key_of(i, key);
                int rc = chp_gate_upload_begin(g, &c, &up, key, true, 1, NOW, &u);
                if (rc != 0) {
                        CHECK_EQ(rc, 0);
                        break;
                }
                chp_gate_upload_end(g, &u);
        }
        key_of(CHP_GATE_FILES, key);
        CHECK_EQ(chp_gate_upload_begin(g, &c, &up, key, true, 1, NOW, &u), CHP_ELIMITED);
        key_of(7, key);
        CHECK_OK(chp_gate_upload_begin(g, &c, &up, key, true, 1, NOW, &u));
        chp_gate_upload_end(g, &u);

        /* CHP_GATE_TOKENS token ids, then a new one is refused; charged ids still resume */
        key_of(1, key);
        for (uint32_t i = 1; i < CHP_GATE_TOKENS; i++) {
                struct chp_token ti = base_token();
                tu_put32(ti.id, i);
                struct chp_caller ci = holder(&ti);
                int rc = chp_gate_upload_begin(g, &c, &ci, key, true, 1, NOW, &u);
                if (rc != 0) {
                        CHECK_EQ(rc, 0);
                        break;
                }
                chp_gate_upload_end(g, &u);
        }
        struct chp_token extra = base_token();
        memset(extra.id, 0xfe, sizeof(extra.id));
        struct chp_caller ce = holder(&extra);
        CHECK_EQ(chp_gate_upload_begin(g, &c, &ce, key, true, 1, NOW, &u), CHP_ELIMITED);
        key_of(7, key);
        CHECK_OK(chp_gate_upload_begin(g, &c, &up, key, true, 1, NOW, &u));
        chp_gate_upload_end(g, &u);

        /* once they expire, the ledger has room again */
        chp_gate_expire(g, NOW + 3600 + CHP_TOKEN_SKEW + 1);
        CHECK_OK(chp_gate_upload_begin(g, &c, &ce, key, true, 1, NOW, &u));
        chp_gate_upload_end(g, &u);
        chp_gate_free(g);
        chp_config_free(&c);
}

TEST(expire)
{
        struct chp_config c;
        config(&c, GIB, 100);
        struct chp_gate *g;
        REQUIRE_OK(chp_gate_new(&g));
        struct chp_token t = base_token();
        t.max_bytes = 100;
        struct chp_caller up = holder(&t);
        struct chp_token later = t;
        memset(later.id, 0x77, sizeof(later.id));
        later.expires_at = NOW + 7200;
        struct chp_caller up_later = holder(&later);
        struct chp_gate_upload u;
        uint8_t a[CHP_HASH_BYTES], b[CHP_HASH_BYTES];
        key_of(1, a);
        key_of(2, b);
        CHECK_OK(chp_gate_upload_begin(g, &c, &up, a, true, 100, NOW, &u));
        chp_gate_upload_end(g, &u);
        CHECK_OK(chp_gate_upload_begin(g, &c, &up_later, a, true, 100, NOW, &u));
        chp_gate_upload_end(g, &u);

        /* within the skew the charges stay */
        chp_gate_expire(g, NOW + 3600 + CHP_TOKEN_SKEW);
        t.expires_at = NOW + 100000; /* (a caller that would still pass allow) */
        up = holder(&t);
        CHECK_EQ(chp_gate_upload_begin(g, &c, &up, b, true, 1, NOW, &u), CHP_EQUOTA);
        /* past it the first token's entry goes; the later token's stays */
        chp_gate_expire(g, NOW + 3600 + CHP_TOKEN_SKEW + 1);
        CHECK_OK(chp_gate_upload_begin(g, &c, &up, b, true, 1, NOW, &u));
        chp_gate_upload_end(g, &u);
        CHECK_EQ(chp_gate_upload_begin(g, &c, &up_later, b, true, 1, NOW, &u), CHP_EQUOTA);
        chp_gate_free(g);
        chp_config_free(&c);
}

/* ---- the ledger file --------------------------------------------------------------------- */

static char *ledger_path(const char *dir)
{
        static char p[256];
        snprintf(p, sizeof(p), "%s/ledger", dir);
        return p;
}

static long long file_size(const char *path)
{
        struct stat st;
        return stat(path, &st) == 0 ? (long long)st.st_size : -1;
}

/* A gate whose ledger is dir/ledger as of now; *load what it found. */
static struct chp_gate *reopen(const char *dir, uint64_t now, struct chp_gate_ledger_load *load)
{
        struct chp_gate *g = NULL;
        if (chp_gate_new(&g) != 0)
                return NULL;
        if (chp_gate_persist(g, dir, now, load) != 0) {
                chp_gate_free(g);
                return NULL;
        }
        return g;
}

static void append_bytes(const char *path, const void *p, size_t n)
{
        int fd = open(path, O_WRONLY | O_APPEND);
        CHECK(fd >= 0);
        CHECK_EQ(write(fd, p, n), (ssize_t)n);
        close(fd);
}

/* A tenant config in *c and a gate with a new, empty ledger in dir (a mkdtemp template). */
static struct chp_gate *ledger_start(struct chp_config *c, char *dir)
{
        struct chp_gate_ledger_load load;
        config(c, GIB, 100);
        return mkdtemp(dir) ? reopen(dir, NOW, &load) : NULL;
}

/* Frees what ledger_start made, and the ledger with its directory. */
static void ledger_done(struct chp_gate *g, struct chp_config *c, const char *dir)
{
        chp_gate_free(g);
        unlink(ledger_path(dir));
        rmdir(dir);
        chp_config_free(c);
}

/* What a token was charged is known again after a restart: the rest of its budget applies, a
 * grown deferred length and a refund included; expired tokens are dropped at start. */
TEST(ledger_survives_restart)
{
        struct chp_config c;
        char dir[] = "/tmp/chapar-test-gate-XXXXXX";
        struct chp_gate_ledger_load load;
        struct chp_gate *g = ledger_start(&c, dir);
        REQUIRE(g);
        CHECK_EQ(file_size(ledger_path(dir)), 8); /* its header */
        uint8_t a[CHP_HASH_BYTES], b[CHP_HASH_BYTES], d[CHP_HASH_BYTES], e[CHP_HASH_BYTES];
        key_of(1, a);
        key_of(2, b);
        key_of(3, d);
        key_of(4, e);
        struct chp_token t = base_token(), t3 = base_token();
        t.max_bytes = t3.max_bytes = 1000;
        memset(t3.id, 0xef, sizeof(t3.id));
        struct chp_caller up = holder(&t), up3 = holder(&t3);
        struct chp_gate_upload u;
        CHECK_OK(chp_gate_upload_begin(g, &c, &up, a, true, 600, NOW, &u));
        chp_gate_upload_end(g, &u);
        CHECK_OK(chp_gate_upload_begin(g, &c, &up, d, true, 100, NOW, &u));
        chp_gate_upload_refund(g, &u); /* the store refused it: 100 bytes back */
        chp_gate_upload_end(g, &u);
        CHECK_OK(chp_gate_upload_begin(g, &c, &up3, b, false, CHP_UPLOAD_SIZE_UNKNOWN, NOW, &u));
        chp_gate_upload_end(g, &u);
        CHECK_OK(chp_gate_upload_grow(g, &c, &up3, b, 300, NOW));
        chp_gate_free(g);

        g = reopen(dir, NOW + 10, &load);
        REQUIRE(g);
        CHECK_EQ(load.records, 5); /* a, d, d's refund, b, b's length */
        CHECK_EQ(load.expired + load.dropped_bytes, 0);
        /* 600 of t's 1000 are spent (d's 100 were given back): 401 more are over, 400 fit */
        CHECK_EQ(chp_gate_upload_begin(g, &c, &up, e, true, 401, NOW + 10, &u), CHP_EQUOTA);
        CHECK_OK(chp_gate_upload_begin(g, &c, &up, e, true, 400, NOW + 10, &u));
        chp_gate_upload_end(g, &u);
        /* a resumed after the restart is not charged again */
        CHECK_OK(chp_gate_upload_begin(g, &c, &up, a, true, 600, NOW + 10, &u));
        CHECK(!u.charged);
        chp_gate_upload_end(g, &u);
        /* t3's grown length (300) holds: 701 more are over */
        CHECK_OK(chp_gate_upload_grow(g, &c, &up3, b, 300, NOW + 10)); /* charged already */
        CHECK_EQ(chp_gate_upload_begin(g, &c, &up3, d, true, 701, NOW + 10, &u), CHP_EQUOTA);
        chp_gate_free(g);
        /* rewritten compacted at that start: a, b, then e appended */
        CHECK_EQ(file_size(ledger_path(dir)), 8 + 3 * 76);

        /* once the tokens expired (+ skew) a start drops them and the file is empty again */
        g = reopen(dir, NOW + 3600 + CHP_TOKEN_SKEW + 1, &load);
        REQUIRE(g);
        CHECK_EQ(load.expired, 3);
        CHECK_EQ(load.records, 0);
        CHECK_EQ(file_size(ledger_path(dir)), 8);
        ledger_done(g, &c, dir);
}

/* A torn or corrupt tail is ignored (and counted), never an error; what precedes it holds. */
TEST(ledger_torn_and_corrupt)
{
        struct chp_config c;
        char dir[] = "/tmp/chapar-test-gate-XXXXXX";
        struct chp_gate_ledger_load load;
        struct chp_gate *g = ledger_start(&c, dir);
        REQUIRE(g);
        const char *path = ledger_path(dir);
        uint8_t a[CHP_HASH_BYTES], b[CHP_HASH_BYTES], d[CHP_HASH_BYTES];
        key_of(1, a);
        key_of(2, b);
        key_of(3, d);
        struct chp_token t = base_token();
        t.max_bytes = 1000;
        struct chp_caller up = holder(&t);
        struct chp_gate_upload u;
        CHECK_OK(chp_gate_upload_begin(g, &c, &up, a, true, 600, NOW, &u));
        chp_gate_upload_end(g, &u);
        CHECK_OK(chp_gate_upload_begin(g, &c, &up, b, true, 100, NOW, &u));
        chp_gate_upload_end(g, &u);
        chp_gate_free(g);
        /* a record cut short by a crash */
        uint8_t junk[30];
        memset(junk, 'C', sizeof(junk));
        append_bytes(path, junk, sizeof(junk));
        g = reopen(dir, NOW, &load);
        REQUIRE(g);
        CHECK_EQ(load.records, 2);
        CHECK_EQ(load.dropped_bytes, 30);
        CHECK_EQ(chp_gate_upload_begin(g, &c, &up, d, true, 301, NOW, &u), CHP_EQUOTA);
        chp_gate_free(g);
        CHECK_EQ(file_size(path), 8 + 2 * 76); /* rewritten without it */

        /* a flipped bit in the second record: it and what follows are ignored */
        int fd = open(path, O_RDWR);
        REQUIRE(fd >= 0);
        uint8_t byte;
        CHECK_EQ(pread(fd, &byte, 1, 8 + 76 + 60), 1);
        byte ^= 0x01;
        CHECK_EQ(pwrite(fd, &byte, 1, 8 + 76 + 60), 1);
        close(fd);
        g = reopen(dir, NOW, &load);
        REQUIRE(g);
        CHECK_EQ(load.records, 1);
        CHECK_EQ(load.dropped_bytes, 76);
        chp_gate_free(g);

        /* a file that is not a ledger at all: ignored whole */
        fd = open(path, O_WRONLY | O_TRUNC);
        REQUIRE(fd >= 0);
        CHECK_EQ(write(fd, "hello, world", 12), 12);
        close(fd);
        g = reopen(dir, NOW, &load);
        REQUIRE(g);
        CHECK_EQ(load.records, 0);
        CHECK_EQ(load.dropped_bytes, 12);
        CHECK_EQ(file_size(path), 8);
        ledger_done(g, &c, dir);
}

/* The file stays bounded while the relay runs: past 1 MiB and twice what is live, the periodic
 * expiry rewrites it with only what is live. */
TEST(ledger_compacts)
{
        struct chp_config c;
        char dir[] = "/tmp/chapar-test-gate-XXXXXX";
        struct chp_gate *g = ledger_start(&c, dir);
        REQUIRE(g);
        const char *path = ledger_path(dir);
        struct chp_token t = base_token();
        struct chp_caller up = holder(&t);
        struct chp_gate_upload u;
        uint8_t k[CHP_HASH_BYTES];
        /* 7000 charges given back (14000 records, 1.06 MB), one kept */
        for (unsigned i = 0; i < 7000; i++) {
                key_of(100 + i, k);
                CHECK_OK(chp_gate_upload_begin(g, &c, &up, k, true, 10, NOW, &u));
                chp_gate_upload_refund(g, &u);
                chp_gate_upload_end(g, &u);
        }
        key_of(1, k);
        CHECK_OK(chp_gate_upload_begin(g, &c, &up, k, true, 10, NOW, &u));
        chp_gate_upload_end(g, &u);
        CHECK_EQ(file_size(path), 8 + 14001 * 76);
        CHECK_OK(chp_gate_expire(g, NOW));
        CHECK_EQ(file_size(path), 8 + 76);
        /* and it is appended to from there */
        key_of(2, k);
        CHECK_OK(chp_gate_upload_begin(g, &c, &up, k, true, 10, NOW, &u));
        chp_gate_upload_end(g, &u);
        CHECK_EQ(file_size(path), 8 + 2 * 76);
        ledger_done(g, &c, dir);
}

HARNESS_MAIN()
