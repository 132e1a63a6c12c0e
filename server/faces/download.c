/* download.c — chapard's download face: GET and HEAD /f/<file id>.
 *
 *   GET /f/<file id>[?origin=<64 hex: a relay's key>]  [Range: bytes=a-b] [If-Range]
 *                                                      [If-None-Match] [Authorization: Bearer]
 *     (a file not here, origin another relay's key: pull-through)
 *       origin not a peer: 404;  the caller may not pull (a token with the pull scope, or
 *       trusted, unless the peer is public_pull): 401/403;  else chp_peers_fetch, asked again
 *       at each loop tick (PH_FETCH) until the file is here, the peer says it has none (404),
 *       the fetch fails or fetch_timeout passes (502), or the relay stops (503)
 *     <-- 200 / 206 / 304 / 416, ETag "<file id>", Chapar-Relay-Key, Content-Type and
 *         Content-Disposition from the uploader's tus metadata (checked), then the bytes: each
 *         chunk spliced from the page cache (inline chunks copied), DRAIN_LOW bytes queued at a
 *         time as the socket drains
 *
 * Loop thread only. A chunk missing under a file whose head is already out cuts the connection
 * (the body can only be cut short); everything before the head is answered with a status. A
 * backend without files (RADOS) fills buffers of the download's (chp_store_read_async): up to
 * DL_READS_MAX reads under way at once (within DRAIN_LOW bytes), whose completions are posted
 * to this loop and whose bytes go out in the file's order.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "err.h"
#include "http.h"
#include "identity.h"
#include "log.h"
#include "peer.h"

#define DRAIN_LOW    (4u << 20) /* keep this many download bytes queued or being read */
#define DL_READS_MAX 16         /* chunk reads a download has under way or waiting to go out */
/* a pull-through request waits at most fetch_timeout and this: the fetch's own deadline ends it
 * first, this bounds a request whose fetch failed and was retried by another's */
#define PULL_SLACK_MS 2000

bool download_parse_id(struct chp_http_str path, uint8_t id[CHP_HASH_BYTES])
{
        /* /f/<64 lowercase hex> */
        if (path.n != 3 + 64)
                return false;
        for (size_t i = 3; i < path.n; i++)
                if (!((path.p[i] >= '0' && path.p[i] <= '9') ||
                      (path.p[i] >= 'a' && path.p[i] <= 'f')))
                        return false;
        return chp_hex_decode(path.p + 3, 64, id, CHP_HASH_BYTES) == 0;
}

int download_parse_origin(struct chp_http_str query, uint8_t key[CHP_KEY_BYTES], bool *has)
{
        struct chp_http_str v;
        unsigned n = chp_http_query_param(query, "origin", &v);
        *has = false;
        if (!n)
                return 0;
        uint8_t k[CHP_KEY_BYTES];
        if (n > 1 || v.n != 2 * CHP_KEY_BYTES || chp_hex_decode(v.p, v.n, k, CHP_KEY_BYTES) != 0)
                return -EINVAL;
        memcpy(key, k, CHP_KEY_BYTES);
        *has = true;
        return 0;
}

/* A chunk the store copies into buf, of which n bytes from off go out: at once, or later from
 * the backend. Reads queue their bytes in the order they were started (the download's list);
 * each is owned by the download and charged to the memory budget until it is freed. */
struct dl_read {
        struct conn_op base; /* first: the loop routes the completion through it */
        struct dl_read *next;
        uint8_t *buf;
        uint32_t index, clen, off, n;
        ssize_t result; /* the store's thread writes it, then posts */
        bool arrived;   /* loop thread: result is in */
};

static void dl_read_free(struct chp_shared *sh, struct dl_read *r)
{
        atomic_fetch_sub(&sh->mem_used, r->clen);
        free(r->buf);
        free(r);
}

/* Queues the bytes of the reads at the head of the list that have arrived, in order; false
 * when one failed or the queue could not take it (the connection is to be cut). */
static bool dl_queue_arrived(struct conn *c, struct download *d)
{
        struct dl_read *r;
        while ((r = d->reads) && r->arrived) {
                uint8_t *out = r->result == (ssize_t)r->clen ? conn_out_reserve(c, r->n) : NULL;
                if (!out) {
                        chp_log_error("http", "download: chunk %u of a file cannot be read (%s)",
                                      r->index,
                                      chp_strerror(r->result < 0                   ? (int)r->result
                                                   : r->result != (ssize_t)r->clen ? CHP_ECORRUPT
                                                                                   : -ENOMEM));
                        return false;
                }
                memcpy(out, r->buf + r->off, r->n);
                d->reads = r->next;
                d->nreads--;
                d->read_bytes -= r->clen;
                dl_read_free(c->sh, r);
        }
        return true;
}

/* The store's thread: the bytes are in (or not); the loop goes on. */
static void dl_read_arrived(void *ctx, ssize_t result)
{
        struct dl_read *r = ctx;
        r->result = result;
        chp_loop_post(r->base.c->loop, &r->base.req);
}

/* Loop thread: a read under way completed. It held the connection; once closed, the read stays
 * in the list, which the connection's end frees (download_reset). */
static void dl_read_done(struct conn_op *base)
{
        struct dl_read *r = (struct dl_read *)base;
        struct conn *c = base->c;
        struct http *h = c->proto;
        r->arrived = true;
        if (!c->closed) {
                download_fill(c);
                if (h->ph == PH_HEAD || h->ph == PH_DISCARD)
                        http_on_input(c); /* the download is queued whole: the next request */
                conn_flush(c);
                conn_maybe_read(c);
        }
        conn_release(c);
}

/* Starts reading chunk i (clen bytes at addr) at the end of the list, n bytes from off to go
 * out; 0, or -ENOMEM. */
static int dl_read_start(struct conn *c, struct download *d, const uint8_t *addr, uint32_t i,
                         uint32_t clen, uint32_t off, uint32_t n)
{
        struct dl_read *r = calloc(1, sizeof(*r));
        uint8_t *buf = r ? malloc(clen ? clen : 1) : NULL;
        if (!buf) {
                free(r);
                return -ENOMEM;
        }
        atomic_fetch_add(&c->sh->mem_used, clen);
        *r = (struct dl_read){.base = {.c = c, .done = dl_read_done, .t0 = chp_net_now_us()},
                              .buf = buf,
                              .index = i,
                              .clen = clen,
                              .off = off,
                              .n = n};
        struct dl_read **tail = &d->reads;
        while (*tail)
                tail = &(*tail)->next;
        *tail = r;
        d->nreads++;
        d->read_bytes += clen;
        /* not into r->result: once under way, r is the completion's (another thread's) */
        ssize_t got = chp_store_read_async(c->sh->store, addr, buf, clen, dl_read_arrived, r);
        if (got == -EINPROGRESS) {
                conn_hold(c);
        } else {
                r->result = got;
                r->arrived = true;
        }
        return 0;
}

/* Queues download bytes until DRAIN_LOW are waiting or being read (called again as they drain,
 * and when a chunk read completes). */
void download_fill(struct conn *c)
{
        struct http *h = c->proto;
        struct download *d = &h->dl;
        if (!d->manifest || c->closed)
                return;
        if (!dl_queue_arrived(c, d)) {
                conn_close(c); /* the head is out: the body can only be cut */
                return;
        }
        uint32_t cs = d->m.chunk_size;
        while (d->next <= d->last && c->out_bytes + d->read_bytes < DRAIN_LOW &&
               d->nreads < DL_READS_MAX) {
                uint32_t i = (uint32_t)(d->next / cs);
                uint32_t off = (uint32_t)(d->next % cs);
                uint32_t clen = chp_manifest_chunk_len(&d->m, i);
                uint64_t upto = (uint64_t)i * cs + clen - 1;
                uint32_t n = (uint32_t)((upto < d->last ? upto : d->last) - d->next + 1);
                const uint8_t *addr = d->m.addrs + (size_t)i * CHP_HASH_BYTES;
                struct chp_chunk_loc loc;
                int rc = chp_store_locate(c->sh->store, addr, &loc);
                if (!rc && loc.remote) {
                        /* the shared state: nothing known before the bytes; their length is
                         * checked against the manifest's when they arrive */
                        if (dl_read_start(c, d, addr, i, clen, off, n) != 0) {
                                conn_close(c);
                                return;
                        }
                } else if (rc || loc.len != clen) {
                        if (!rc)
                                chp_store_loc_release(c->sh->store, &loc);
                        chp_log_error("http", "download: chunk %u of a file is missing (%s)", i,
                                      chp_strerror(rc ? rc : CHP_ECORRUPT));
                        conn_close(c); /* the head is out: the body can only be cut */
                        return;
                } else if (loc.is_inline || loc.fd < 0) {
                        /* no file to splice from (inline, or a backend without files): copied */
                        chp_store_loc_release(c->sh->store, &loc);
                        if (dl_read_start(c, d, addr, i, clen, off, n) != 0) {
                                conn_close(c);
                                return;
                        }
                } else if (d->reads) {
                        chp_store_loc_release(c->sh->store, &loc);
                        break; /* its bytes go out after the reads before them */
                } else if (conn_out_splice(c, &loc, loc.offset + off, n) != 0) {
                        conn_close(c);
                        return;
                }
                d->next += n;
                if (!dl_queue_arrived(c, d)) {
                        conn_close(c);
                        return;
                }
        }
        if (d->next > d->last && !d->reads) {
                free(d->manifest);
                d->manifest = NULL;
                h->ph = PH_HEAD;
                http_request_done(h);
        }
}

/* ---- the face's record lookups --------------------------------------------------------- */

/* The store's thread: the answer is in; the loop goes on. */
static void lookup_arrived(struct chp_store_lookup *q)
{
        struct http_lookup *lk = q->ctx;
        chp_loop_post(lk->base.c->loop, &lk->base.req);
}

/* After a request moved on outside http_on_input (a store's answer, the tick): on_request's
 * rule for a request answered (an error) with nothing pending, then the next request. */
static void go_on(struct conn *c)
{
        struct http *h = c->proto;
        if (h->ph == PH_CREATE && !h->pending)
                http_request_done(h);
        if (h->ph == PH_HEAD || h->ph == PH_DISCARD)
                http_on_input(c); /* answered: the next request */
        conn_flush(c);
        conn_maybe_read(c);
}

/* Loop thread: the answer of a lookup that was under way. It held the connection; once closed,
 * what the answer owns is freed here. */
static void lookup_done(struct conn_op *base)
{
        struct http_lookup *lk = (struct http_lookup *)base;
        struct conn *c = base->c;
        struct http *h = c->proto;
        h->pending--;
        if (!c->closed) {
                lk->then(h, &lk->q, lk->has_req ? &lk->req : NULL);
                go_on(c);
        } else {
                chp_store_lookup_clear(&lk->q);
        }
        conn_release(c);
}

void http_lookup(struct http *h, const struct chp_http_request *req, http_lookup_fn then)
{
        struct http_lookup *lk = &h->lk;
        lk->base.c = h->c;
        lk->base.done = lookup_done;
        lk->then = then;
        lk->q.done = lookup_arrived;
        lk->q.ctx = lk;
        if (chp_store_lookup(h->c->sh->store, &lk->q) != -EINPROGRESS) {
                then(h, &lk->q, req);
                return;
        }
        if ((lk->has_req = req != NULL) && req != &lk->req)
                lk->req = *req; /* its strings point into h->head, which stays */
        lk->base.t0 = chp_net_now_us();
        h->pending++; /* the request is answered from lookup_done */
        conn_hold(h->c);
}

/* ---- GET and HEAD /f/<file id> ----------------------------------------------------------- */

/* Content-Type and Content-Disposition of a download: the filetype and filename that the tus
 * upload which stored the file gave in Upload-Metadata (meta, mlen bytes), when they are sane
 * (the type a media type, the name made safe by chp_http_content_disposition); else
 * application/octet-stream and no disposition. Metadata never reaches the head unchecked. A type
 * the uploader chose is always an attachment, never rendered inline (an uploaded text/html page
 * would otherwise run as the relay's origin), and never sniffed. */
static void file_names(struct resp *r, const uint8_t *meta, size_t mlen)
{
        /* on the loop thread's stack: most files (native uploads) have no metadata */
        uint8_t val[CHP_UPLOAD_META_MAX];
        char disp[CHP_HTTP_DISPOSITION_MAX];
        struct chp_http_str m = {(const char *)meta, meta ? mlen : 0};
        size_t n;
        bool typed = false;
        if (m.n && chp_http_check_metadata(m) == 0) {
                if (chp_http_metadata_get(m, "filetype", val, sizeof(val), &n) == 0 &&
                    chp_http_media_type_ok((struct chp_http_str){(const char *)val, n})) {
                        http_add(r, "Content-Type: %.*s\r\n", (int)n, (const char *)val);
                        typed = true;
                }
                if (chp_http_metadata_get(m, "filename", val, sizeof(val), &n) == 0 &&
                    chp_http_content_disposition(val, n, disp, sizeof(disp)) > 0)
                        http_add(r, "Content-Disposition: %s\r\n", disp);
                else if (typed)
                        http_add(r, "Content-Disposition: attachment\r\n");
        }
        if (!typed)
                http_add(r, "Content-Type: application/octet-stream\r\n");
        http_add(r, "X-Content-Type-Options: nosniff\r\n");
}

/* Chapar-Relay-Key: this relay's public key, so that a client holding this file's URL can name
 * this relay as the origin on its own relay (?origin=). */
static void relay_key(struct http *h, struct resp *r)
{
        char key[2 * CHP_KEY_BYTES + 1];
        chp_hex_encode(h->c->sh->identity->pub, CHP_KEY_BYTES, key);
        http_add(r, "Chapar-Relay-Key: %s\r\n", key);
}

/* The head, named by meta (mlen bytes; NULL: no names), then the bytes. */
static void send_head(struct http *h, const uint8_t *meta, size_t mlen)
{
        struct download *d = &h->dl;
        char hex[CHP_HASH_HEXBYTES];
        chp_hex_encode(h->id, CHP_HASH_BYTES, hex);
        uint64_t total = d->m.total_size, first = d->first, last = d->last;
        struct resp r;
        http_start(h, &r, d->status);
        file_names(&r, meta, mlen);
        if (h->route == R_XMPP)
                http_add(&r, "Chapar-File-Id: %s\r\n", hex);
        http_add(&r,
                 "Accept-Ranges: bytes\r\nETag: \"%s\"\r\nCache-Control: private, immutable\r\n",
                 hex);
        relay_key(h, &r);
        if (d->status == 206)
                http_add(&r, "Content-Range: bytes %llu-%llu/%llu\r\n", (unsigned long long)first,
                         (unsigned long long)last, (unsigned long long)total);
        uint64_t body = total ? last - first + 1 : 0;
        http_add(&r, "Content-Length: %llu\r\n", (unsigned long long)body);
        http_finish(h, &r, NULL, 0, true);
        if (h->head_only || body == 0) {
                http_request_done(h);
                return;
        }
        d->next = first;
        d->last = last;
        h->ph = PH_SEND;
        download_fill(h->c);
}

/* The file's metadata is in (or not: then none is sent): the head, then the bytes. */
static void got_meta(struct http *h, struct chp_store_lookup *q, const struct chp_http_request *req)
{
        (void)req; /* the head's conditions were kept in d->req */
        send_head(h, q->status ? NULL : q->meta, q->len);
        chp_store_lookup_clear(q);
}

static void pull_start(struct http *h, const struct chp_http_request *req);

/* The file's record is in: 404/451 (or, not here, pull-through), 304, 416, or on to its
 * metadata. */
static void got_file(struct http *h, struct chp_store_lookup *q, const struct chp_http_request *req)
{
        /* the head's conditions were kept in d->req; req is given for pull-through only */
        struct download *d = &h->dl;
        int rc = q->status;
        if (rc == -ENOENT && d->has_origin && !d->fetched && req) {
                chp_store_lookup_clear(q);
                pull_start(h, req);
                return;
        }
        if (rc) {
                chp_store_lookup_clear(q);
                int st = rc == -ENOENT ? 404 : rc == CHP_EQUARANTINED ? 451 : 500;
                http_simple(h, st,
                            st == 500       ? NULL
                            : rc == -ENOENT ? "no such file"
                                            : chp_strerror(rc));
                http_request_done(h);
                return;
        }
        d->manifest = q->manifest; /* taken over: download_reset frees it */
        size_t len = q->manifest_len;
        q->manifest = NULL;
        chp_store_lookup_clear(q);
        if (chp_manifest_decode(d->manifest, len, &d->m) < 0) {
                http_simple(h, 500, NULL);
                http_request_done(h);
                return;
        }
        char hex[CHP_HASH_HEXBYTES];
        chp_hex_encode(h->id, CHP_HASH_BYTES, hex);
        uint64_t total = d->m.total_size;
        const struct download_req *rq = &d->req;
        struct resp r;
        if (rq->has_inm && chp_http_etag_matches(rq->inm, hex)) {
                http_start(h, &r, 304);
                http_add(&r, "ETag: \"%s\"\r\n", hex);
                relay_key(h, &r);
                http_finish(h, &r, NULL, 0, true);
                http_request_done(h);
                return;
        }
        bool ranged = rq->has_range;
        uint64_t first = 0, last = total ? total - 1 : 0;
        d->status = 200;
        /* If-Range: the Range applies only while the client's copy is this file (a strong
         * ETag match); otherwise the whole file is sent */
        if (rq->if_range_many ||
            (rq->has_if_range && !chp_http_if_range_matches(rq->if_range, hex)))
                ranged = false;
        if (ranged) {
                rc = chp_http_parse_range(rq->range, total, &first, &last);
                if (rc == -ERANGE) {
                        http_start(h, &r, 416);
                        http_add(&r, "Content-Range: bytes */%llu\r\n", (unsigned long long)total);
                        http_finish(h, &r, NULL, 0, false);
                        http_request_done(h);
                        return;
                }
                if (rc == 0)
                        d->status = 206;
                else
                        first = 0, last = total ? total - 1 : 0;
        }
        d->first = first;
        d->last = last;
        if (d->meta) {
                send_head(h, d->meta, d->meta_len); /* the caller's names (xmpp.c) */
                return;
        }
        *q = (struct chp_store_lookup){.kind = CHP_LOOKUP_FILE_META};
        memcpy(q->id, h->id, CHP_HASH_BYTES);
        http_lookup(h, req, got_meta);
}

/* Looks up the file h->id and goes on in got_file (req: the head, for pull-through; or NULL). */
static void lookup_file(struct http *h, const struct chp_http_request *req)
{
        struct chp_store_lookup *q = &h->lk.q;
        *q = (struct chp_store_lookup){.kind = CHP_LOOKUP_FILE, .want_manifest = true};
        memcpy(q->id, h->id, CHP_HASH_BYTES);
        http_lookup(h, req, got_file);
}

void download_get(struct http *h, const struct chp_http_request *req)
{
        /* what the head asks is kept (it points into h->head, which stays until the request is
         * done) while the file is looked up */
        struct download_req *rq = &h->dl.req; /* d->meta, d->meta_len are the caller's */
        const struct chp_http_str *inm = chp_http_header(req, "If-None-Match");
        const struct chp_http_str *range = chp_http_header(req, "Range");
        const struct chp_http_str *if_range = chp_http_header(req, "If-Range");
        *rq = (struct download_req){0};
        if ((rq->has_inm = inm != NULL))
                rq->inm = *inm;
        if ((rq->has_range = range && chp_http_header_count(req, "Range") == 1))
                rq->range = *range;
        if (if_range) {
                rq->if_range_many = chp_http_header_count(req, "If-Range") != 1;
                rq->has_if_range = true;
                rq->if_range = *if_range;
        }
        /* ?origin= naming this relay: what is here is all there is */
        if (h->dl.has_origin && memcmp(h->dl.origin, h->c->sh->identity->pub, CHP_KEY_BYTES) == 0)
                h->dl.has_origin = false;
        lookup_file(h, h->dl.has_origin ? req : NULL);
}

/* ---- pull-through: ?origin=<a peer's key> ------------------------------------------------ */

/* Whether the configured peer with this key lets anyone's GET pull its files (public_pull). The
 * running configuration's (a reload's takes effect at the next request). */
static bool public_pull(const struct chp_config *cfg, const uint8_t key[CHP_KEY_BYTES])
{
        uint8_t k[CHP_KEY_BYTES];
        for (unsigned i = 0; i < cfg->npeers; i++) {
                const char *pk = cfg->peers[i].pubkey;
                if (pk && chp_hex_decode(pk, strlen(pk), k, CHP_KEY_BYTES) == 0 &&
                    memcmp(k, key, CHP_KEY_BYTES) == 0)
                        return cfg->peers[i].public_pull;
        }
        return false;
}

/* The wait ends with status and a one-line body. */
static void pull_answer(struct http *h, int status, const char *msg)
{
        h->c->want_tick = false;
        http_simple(h, status, msg);
        http_request_done(h);
}

/* Asks the peer's fetch what it is doing: waits on (PH_FETCH), answers why not, or, the file
 * being here, looks it up again to serve it. */
static void pull_poll(struct http *h)
{
        struct chp_shared *sh = h->c->sh;
        struct download *d = &h->dl;
        char msg[CHP_PEER_MSG_MAX + 64];
        bool negative;
        if (h->stopping) {
                pull_answer(h, 503, "the relay is stopping");
                return;
        }
        enum chp_fetch_state st =
            chp_peers_fetch(sh->peers, d->peer, h->id, msg, CHP_PEER_MSG_MAX, &negative);
        if (st == CHP_FETCH_RUNNING) {
                if (chp_net_now_ms() < d->deadline)
                        return; /* the next tick asks again */
                snprintf(msg, sizeof(msg), "peer %s: no file within fetch_timeout",
                         chp_peers_name(sh->peers, d->peer));
                pull_answer(h, 502, msg);
                return;
        }
        if (st == CHP_FETCH_FAILED) {
                pull_answer(h, negative ? 404 : 502, msg);
                return;
        }
        /* the fetch is done: served as any file here (a lookup that finds none does not fetch) */
        h->c->want_tick = false;
        d->fetched = true;
        h->ph = PH_CREATE;
        lookup_file(h, &h->lk.req);
}

/* The file is not here and the request names another relay as its origin: fetched from it when
 * it is a peer and the caller may pull, else refused. */
static void pull_start(struct http *h, const struct chp_http_request *req)
{
        struct chp_shared *sh = h->c->sh;
        struct download *d = &h->dl;
        char hex[2 * CHP_KEY_BYTES + 1], msg[256];
        int peer = chp_peers_find(sh->peers, d->origin);
        if (peer < 0) {
                chp_hex_encode(d->origin, CHP_KEY_BYTES, hex);
                snprintf(msg, sizeof(msg),
                         "no such file here, and its origin relay (key %.16s...) is not a peer of "
                         "this relay: fetch it from its origin",
                         hex);
                http_simple(h, 404, msg);
                http_request_done(h);
                return;
        }
        if (!public_pull(sh->cfg, d->origin)) {
                uint64_t now = (uint64_t)time(NULL);
                bool had_token;
                if (http_identify(h, req, now, &had_token) != 0) {
                        http_request_done(h);
                        return;
                }
                int rc = chp_gate_allow(&h->caller, CHP_TOKEN_SCOPE_PULL, now);
                if (rc) {
                        http_refuse(h, rc, had_token,
                                    "pulling a file through from its origin needs a token with "
                                    "the pull scope");
                        http_request_done(h);
                        return;
                }
        }
        d->peer = peer;
        d->deadline = chp_net_now_ms() + sh->cfg->fetch_timeout * 1000 + PULL_SLACK_MS;
        if (req != &h->lk.req)
                h->lk.req = *req; /* its strings point into h->head, which stays */
        h->lk.has_req = true;
        h->ph = PH_FETCH;
        h->c->want_tick = true;
        pull_poll(h);
}

void download_tick(struct conn *c)
{
        struct http *h = c->proto;
        if (h->ph != PH_FETCH) {
                c->want_tick = false;
                return;
        }
        pull_poll(h);
        go_on(c);
}

void download_reset(struct http *h)
{
        /* no read is under way here: each held the connection */
        while (h->dl.reads) {
                struct dl_read *r = h->dl.reads;
                h->dl.reads = r->next;
                dl_read_free(h->c->sh, r);
        }
        free(h->dl.manifest);
        memset(&h->dl, 0, sizeof(h->dl));
        h->c->want_tick = false;
}
