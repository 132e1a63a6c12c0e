/* xmpp.c — XMPP external uploads (XEP-0363 through an XMPP server's upload delegation) at
 * /xmpp/NAME/ on the HTTP face: Prosody's mod_http_upload_external and ejabberd's
 * mod_http_upload with external_secret hand their clients URLs signed with the tenant's
 * xmpp_secret; this file checks them and stores the body as a tus-style upload.
 *
 *   XMPP client          XMPP server (tenant NAME)                 relay
 *     slot request --------->  PUT URL = base/PATH?v=HMAC(secret, "PATH SIZE")
 *                              (or ?v2=HMAC(secret, "PATH\0SIZE\0TYPE"))
 *     PUT /xmpp/NAME/PATH?v=... Content-Length: SIZE + body ---------->  MAC checked over the
 *                                                                         decoded PATH; upload
 *                                                                         id = H(relay key,
 *                                                                         NAME, PATH); body cut
 *                                                                         into chunks (tus.c)
 *     <---------------------------------------------------------------  201 Chapar-File-Id
 *     GET /xmpp/NAME/PATH  (anyone with the URL) ----------------------->  the upload's file,
 *     <---------------------------------------------------------------  as /f/<file id> serves it
 *
 * Loop thread only. The upload id is derived, not stored: HMAC-SHA256(K, "xmpp" 0 NAME 0 PATH)
 * cut to CHP_UPLOAD_ID_BYTES, with K = HMAC-SHA256(the relay's static private key, a label), so
 * relays sharing one key and one shared state find the same upload, and nobody without the
 * key can name it on /files/. The kept upload record (complete, with the file id) is how GET
 * finds the file; the commit gives it the file's expiry.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sodium.h>

#include "err.h"
#include "hash.h"
#include "http.h"
#include "metrics.h"

#define PREFIX       "/xmpp/"
#define PREFIX_LEN   (sizeof(PREFIX) - 1)
#define NAME_META    1024 /* bytes of the last path segment kept as the file's name */
#define DEFAULT_TYPE "application/octet-stream" /* what Prosody signs when a client sends none */
#define ID_LABEL     "chapar xmpp upload id v1"
#define ALLOW        "OPTIONS, GET, HEAD, PUT"

/* ---- the URL ------------------------------------------------------------------------------ */

/* The parts of a /xmpp/NAME/PATH?QUERY target. */
struct xurl {
        struct chp_http_str tenant; /* NAME, as sent */
        struct chp_http_str path;   /* PATH, still encoded */
        struct chp_http_str query;  /* after '?', or empty */
};

/* Splits the target; -ENOENT when there is no NAME/ or no PATH. */
static int split(struct chp_http_str t, struct xurl *u)
{
        memset(u, 0, sizeof(*u));
        size_t q = 0;
        while (q < t.n && t.p[q] != '?')
                q++;
        if (q < t.n)
                u->query = (struct chp_http_str){t.p + q + 1, t.n - q - 1};
        size_t i = PREFIX_LEN, s = i;
        while (i < q && t.p[i] != '/')
                i++;
        if (i == s || i + 1 >= q)
                return -ENOENT;
        u->tenant = (struct chp_http_str){t.p + s, i - s};
        u->path = (struct chp_http_str){t.p + i + 1, q - i - 1};
        return 0;
}

/* The tenant of u when it takes XMPP uploads (has an xmpp_secret), else NULL. */
static const struct chp_tenant_config *xmpp_tenant(struct http *h, const struct xurl *u)
{
        const struct chp_tenant_config *t =
            chp_config_find_tenant(h->c->sh->cfg, u->tenant.p, u->tenant.n);
        return t && t->xmpp_secret_len ? t : NULL;
}

/* The upload id of (tenant, decoded path): see the file's head. */
static void derive_id(struct http *h, const struct chp_tenant_config *t, const char *path, size_t n,
                      uint8_t id[CHP_UPLOAD_ID_BYTES])
{
        uint8_t k[crypto_auth_hmacsha256_BYTES], mac[crypto_auth_hmacsha256_BYTES];
        crypto_auth_hmacsha256_state st;
        crypto_auth_hmacsha256_init(&st, h->c->sh->identity->priv, CHP_KEY_BYTES);
        crypto_auth_hmacsha256_update(&st, (const uint8_t *)ID_LABEL, sizeof(ID_LABEL) - 1);
        crypto_auth_hmacsha256_final(&st, k);
        crypto_auth_hmacsha256_init(&st, k, sizeof(k));
        crypto_auth_hmacsha256_update(&st, (const uint8_t *)"xmpp", 5); /* with its NUL */
        crypto_auth_hmacsha256_update(&st, (const uint8_t *)t->name, strlen(t->name) + 1);
        crypto_auth_hmacsha256_update(&st, (const uint8_t *)path, n);
        crypto_auth_hmacsha256_final(&st, mac);
        memcpy(id, mac, CHP_UPLOAD_ID_BYTES);
        sodium_memzero(k, sizeof(k));
        sodium_memzero(&st, sizeof(st));
}

/* The request's tenant, decoded path (into *path, malloc'd: the caller frees it) and upload id
 * (h->id). false when the response is queued: 404 (no such XMPP tenant), 400 (a bad escape). */
static bool resolve(struct http *h, const struct chp_http_request *req, struct xurl *u,
                    const struct chp_tenant_config **t, char **path, size_t *plen)
{
        *path = NULL;
        if (split(req->target, u) != 0 || !(*t = xmpp_tenant(h, u))) {
                http_simple(h, 404, "no such XMPP upload service");
                return false;
        }
        if (!(*path = malloc(u->path.n))) {
                http_simple(h, 500, NULL);
                return false;
        }
        ssize_t n = chp_http_pct_decode(u->path.p, u->path.n, false, *path, u->path.n);
        if (n < 0) {
                free(*path);
                *path = NULL;
                http_simple(h, 400, "malformed percent-encoding in the path");
                return false;
        }
        *plen = (size_t)n;
        memset(h->id, 0, sizeof(h->id));
        derive_id(h, *t, *path, *plen, h->id);
        return true;
}

/* ---- PUT ---------------------------------------------------------------------------------- */

/* Whether the query's v= (v1) or v2= MAC is the tenant's over this request; a missing or wrong
 * one is refused 403 (counted as an invalid credential). */
static bool mac_ok(struct http *h, const struct chp_http_request *req, const struct xurl *u,
                   const struct chp_tenant_config *t, const char *path, size_t plen, uint64_t size)
{
        struct chp_http_str v;
        bool v2 = chp_http_query_param(u->query, "v2", &v) > 0;
        if (!v2 && !chp_http_query_param(u->query, "v", &v)) {
                chp_metrics_refuse(h->c->sh->metrics, CHP_ETOKEN_MISSING);
                http_simple(h, 403, "the URL carries no signature (?v= or ?v2=)");
                return false;
        }
        uint8_t got[crypto_auth_hmacsha256_BYTES] = {0}, want[crypto_auth_hmacsha256_BYTES];
        /* lowercase hex from Prosody and ejabberd; either case is taken */
        bool ok = chp_hex_decode(v.p, v.n, got, sizeof(got)) == 0;
        char num[24];
        int nl = snprintf(num, sizeof(num), "%llu", (unsigned long long)size);
        crypto_auth_hmacsha256_state st;
        crypto_auth_hmacsha256_init(&st, t->xmpp_secret, t->xmpp_secret_len);
        crypto_auth_hmacsha256_update(&st, (const uint8_t *)path, plen);
        if (v2) {
                /* "PATH\0SIZE\0TYPE": the type the client asked the slot for, which it sends */
                const struct chp_http_str *ct = chp_http_header(req, "Content-Type");
                struct chp_http_str type = ct ? *ct : (struct chp_http_str){DEFAULT_TYPE, 24};
                crypto_auth_hmacsha256_update(&st, (const uint8_t *)"", 1);
                crypto_auth_hmacsha256_update(&st, (const uint8_t *)num, (size_t)nl);
                crypto_auth_hmacsha256_update(&st, (const uint8_t *)"", 1);
                crypto_auth_hmacsha256_update(&st, (const uint8_t *)type.p, type.n);
        } else {
                /* "PATH SIZE" */
                crypto_auth_hmacsha256_update(&st, (const uint8_t *)" ", 1);
                crypto_auth_hmacsha256_update(&st, (const uint8_t *)num, (size_t)nl);
        }
        crypto_auth_hmacsha256_final(&st, want);
        ok = sodium_memcmp(got, want, sizeof(want)) == 0 && ok;
        sodium_memzero(&st, sizeof(st));
        if (!ok) {
                chp_metrics_refuse(h->c->sh->metrics, CHP_ETOKEN_SIGNATURE);
                http_simple(h, 403, "the URL's signature does not match this path and size");
        }
        return ok;
}

/* Appends "key base64(val)" to the tus metadata m (cap bytes). */
static void meta_add(uint8_t *m, uint32_t *len, size_t cap, const char *key, const void *val,
                     size_t n)
{
        size_t kl = strlen(key), bl = sodium_base64_encoded_len(n, sodium_base64_VARIANT_ORIGINAL);
        if (*len + (*len ? 1 : 0) + kl + 1 + bl > cap)
                return;
        if (*len)
                m[(*len)++] = ',';
        memcpy(m + *len, key, kl);
        *len += (uint32_t)kl;
        m[(*len)++] = ' ';
        sodium_bin2base64((char *)m + *len, bl, val, n, sodium_base64_VARIANT_ORIGINAL);
        *len += (uint32_t)(bl - 1); /* without its NUL */
}

static void put_got_record(struct http *h, struct chp_store_lookup *q,
                           const struct chp_http_request *req);

static void xmpp_put(struct http *h, const struct chp_http_request *req)
{
        const struct chp_config *cfg = h->c->sh->cfg;
        struct xurl u;
        const struct chp_tenant_config *t;
        char *path;
        size_t plen;
        if (!resolve(h, req, &u, &t, &path, &plen))
                return;
        uint64_t size = h->body_left;
        if (!chp_http_header(req, "Content-Length")) {
                free(path);
                http_simple(h, 411, "a Content-Length is required");
                return;
        }
        bool ok = mac_ok(h, req, &u, t, path, plen, size);
        /* the upload's record: its file is named by the path's last segment */
        if (ok && !(h->up = calloc(1, sizeof(*h->up)))) {
                http_simple(h, 500, NULL);
                ok = false;
        }
        if (ok) {
                size_t s = plen;
                while (s > 0 && path[s - 1] != '/')
                        s--;
                size_t nl = plen - s < NAME_META ? plen - s : NAME_META;
                struct chp_upload *up = h->up;
                meta_add(up->meta, &up->meta_len, sizeof(up->meta), "filename", path + s, nl);
                const struct chp_http_str *ct = chp_http_header(req, "Content-Type");
                if (ct && chp_http_media_type_ok(*ct))
                        meta_add(up->meta, &up->meta_len, sizeof(up->meta), "filetype", ct->p,
                                 ct->n);
        }
        free(path);
        if (!ok)
                return;
        if (size > t->max_file_size) {
                http_refuse(h, CHP_ETOOBIG, false, "larger than the tenant's max_file_size");
                return;
        }
        if (size > cfg->tus_max_size) {
                http_simple(h, 413, "larger than the relay's tus_max_size");
                return;
        }
        /* one writer per path: a second PUT while the first streams is refused */
        if (!tus_claim(h)) {
                http_simple(h, 409, "another request is uploading to this path");
                return;
        }
        struct chp_store_lookup *lq = &h->lk.q;
        h->lk_buf = (uint8_t *)calloc(1, sizeof(struct chp_upload)); /* the old record */
        if (!h->lk_buf) {
                http_simple(h, 500, NULL);
                return;
        }
        *lq = (struct chp_store_lookup){.kind = CHP_LOOKUP_UPLOAD,
                                        .upload = (struct chp_upload *)h->lk_buf};
        memcpy(lq->id, h->id, CHP_UPLOAD_ID_BYTES);
        http_lookup(h, req, put_got_record);
}

/* Admits the new upload and creates it (a cut one is dropped first: xmpp_dropped goes on). */
static void put_got_record(struct http *h, struct chp_store_lookup *q,
                           const struct chp_http_request *req)
{
        (void)req;
        struct chp_shared *sh = h->c->sh;
        const struct chp_config *cfg = sh->cfg;
        int rc = q->status;
        struct chp_upload *old = (struct chp_upload *)h->lk_buf;
        bool complete = !rc && old->complete, cut = !rc && !old->complete;
        chp_store_lookup_clear(q);
        free(h->lk_buf);
        h->lk_buf = NULL;
        if (rc && rc != -ENOENT) {
                http_simple(h, http_status_of(rc), chp_strerror(rc));
                return;
        }
        if (complete) {
                http_simple(h, 409, "a file was already uploaded to this path");
                return;
        }
        if (!tus_limits_admit(h))
                return;
        uint64_t now = (uint64_t)time(NULL);
        struct xurl u;
        split(req->target, &u); /* resolve() checked it */
        char tenant[CHP_TENANT_NAME_MAX + 1];
        snprintf(tenant, sizeof(tenant), "%.*s", (int)u.tenant.n, u.tenant.p);
        rc = chp_gate_upload_begin_tenant(sh->gate, cfg, tenant, h->body_left, now, &h->gu);
        if (rc == -ENOENT) { /* a reload removed the tenant meanwhile */
                chp_limits_upload_end(sh->limits, &h->c->peer, NULL, NULL, chp_net_now_ms());
                http_simple(h, 404, "no such XMPP upload service");
                return;
        }
        if (rc) {
                chp_limits_upload_end(sh->limits, &h->c->peer, NULL, NULL, chp_net_now_ms());
                http_refuse(h, rc, false,
                            rc == CHP_ETOOBIG ? "larger than the tenant's max_file_size" : NULL);
                return;
        }
        struct chp_upload *up = h->up;
        memcpy(up->id, h->id, CHP_UPLOAD_ID_BYTES);
        snprintf(up->tenant, sizeof(up->tenant), "%s", h->gu.tenant);
        up->declared_size = h->body_left;
        up->chunk_size = cfg->tus_chunk_size;
        up->created = now;
        up->expires = cfg->upload_expiry ? now + cfg->upload_expiry : 0;
        up->file_expires = h->gu.expires_max;
        if (up->file_expires && (!up->expires || up->expires > up->file_expires))
                up->expires = up->file_expires;
        if (cut) {
                tus_drop(h); /* its chunks stay stored until GC: the new body reuses them */
                return;
        }
        tus_create(h);
}

void xmpp_dropped(struct http *h, int rc)
{
        if (rc && rc != -ENOENT) {
                chp_limits_upload_end(h->c->sh->limits, &h->c->peer, NULL, NULL, chp_net_now_ms());
                http_simple(h, http_status_of(rc), chp_strerror(rc));
                http_request_done(h);
                return;
        }
        /* the drop ended the old upload's count in the limits (tus.c's hop_done): this one is
         * counted again */
        if (!tus_limits_admit(h)) {
                http_request_done(h);
                return;
        }
        tus_create(h);
        if (h->ph == PH_CREATE && !h->pending)
                http_request_done(h); /* refused at once */
}

void xmpp_reply(struct http *h, int rc)
{
        if (rc) {
                http_simple(h, http_status_of(rc), chp_strerror(rc));
                http_request_done(h);
                return;
        }
        char hex[CHP_HASH_HEXBYTES];
        chp_hex_encode(h->file_id, CHP_HASH_BYTES, hex);
        struct resp r;
        http_start(h, &r, 201);
        http_add(&r, "Chapar-File-Id: %s\r\nETag: \"%s\"\r\n", hex, hex);
        http_finish(h, &r, NULL, 0, false);
        http_request_done(h);
}

/* ---- GET, HEAD, OPTIONS ------------------------------------------------------------------- */

static void get_got_record(struct http *h, struct chp_store_lookup *q,
                           const struct chp_http_request *req)
{
        int rc = q->status;
        chp_store_lookup_clear(q);
        if (rc || !h->up->complete || h->up->has_manifest) {
                http_simple(h, rc && rc != -ENOENT ? http_status_of(rc) : 404,
                            rc && rc != -ENOENT ? chp_strerror(rc) : "no such file");
                return;
        }
        memcpy(h->id, h->up->file_id, CHP_HASH_BYTES);
        h->dl.meta = h->up->meta_len ? h->up->meta : NULL;
        h->dl.meta_len = h->up->meta_len;
        download_get(h, req);
}

static void xmpp_get(struct http *h, const struct chp_http_request *req)
{
        struct xurl u;
        const struct chp_tenant_config *t;
        char *path;
        size_t plen;
        if (!resolve(h, req, &u, &t, &path, &plen))
                return;
        free(path);
        if (!(h->up = calloc(1, sizeof(*h->up)))) {
                http_simple(h, 500, NULL);
                return;
        }
        struct chp_store_lookup *q = &h->lk.q;
        *q = (struct chp_store_lookup){.kind = CHP_LOOKUP_UPLOAD, .upload = h->up};
        memcpy(q->id, h->id, CHP_UPLOAD_ID_BYTES);
        http_lookup(h, req, get_got_record);
}

/* OPTIONS: what the route takes, and a CORS preflight's answer (browser XMPP clients PUT). */
static void xmpp_options(struct http *h, const struct chp_http_request *req)
{
        struct resp r;
        http_start(h, &r, 204);
        http_add(&r, "Allow: " ALLOW "\r\n");
        if (h->has_origin && chp_http_header(req, "Access-Control-Request-Method"))
                http_add(&r, "Access-Control-Allow-Methods: " ALLOW "\r\n"
                             "Access-Control-Allow-Headers: Content-Type, Range, If-None-Match, "
                             "If-Range\r\nAccess-Control-Max-Age: 86400\r\n");
        http_finish(h, &r, NULL, 0, false);
        http_request_done(h);
}

void xmpp_request(struct http *h, const struct chp_http_request *req)
{
        switch (h->method) {
        case CHP_HTTP_PUT:
                xmpp_put(h, req);
                return;
        case CHP_HTTP_GET:
        case CHP_HTTP_HEAD:
                xmpp_get(h, req);
                return;
        case CHP_HTTP_OPTIONS:
                xmpp_options(h, req);
                return;
        }
        struct resp r;
        http_start(h, &r, 405);
        http_add(&r, "Allow: " ALLOW "\r\n");
        http_finish(h, &r, NULL, 0, false);
}
