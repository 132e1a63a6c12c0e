/* http.h — what the three files of chapard's HTTP face share (private to server/faces/): the
 * per-connection state struct http, the response builder, and each file's entry points.
 *
 *   http.c      request loop (parse, route, body-discard rule), responses, /metrics, /healthz
 *   tus.c       tus 1.0.0 uploads: creation, PATCH bodies cut into chunks, the one-writer claims
 *   xmpp.c      /xmpp/NAME/<path>: XMPP external uploads (PUT signed by the XMPP server's
 *               secret, streamed through tus.c's body machinery; GET/HEAD as download.c)
 *   download.c  GET/HEAD /f/<file id>: Range, ETag, bytes spliced from the store; with
 *               ?origin=<a peer's key>, a file not here is first fetched from that peer
 *               (pull-through, waiting on the loop's tick); the face's record lookups
 *               (http_lookup), answered now or from the store's thread
 *
 * Loop thread only. A struct http belongs to its connection (c->proto); every pointer in it is
 * owned by it and freed by http_request_done / the face's detach. Handlers queue exactly one
 * response per request (http_simple, or http_start + http_add + http_finish) and then call
 * http_request_done, at once or from a store completion.
 */
#ifndef CHP_FACES_HTTP_H
#define CHP_FACES_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <openssl/evp.h>

#include "accesslog.h"
#include "conn.h"
#include "gate.h"
#include "hash.h"
#include "http_parse.h"
#include "manifest.h"

#define HEAD_MAX    CHP_HTTP_MAX_HEAD
#define RESP_MAX    4096
#define TUS_VERSION "1.0.0"

enum route { R_NONE, R_FILES, R_UPLOAD, R_FILE, R_METRICS, R_HEALTHZ, R_XMPP };
/* PH_DISCARD: the response is out, the rest of the request's body is read and dropped;
 * PH_FETCH: a download waits for a peer's fetch of the file (download.c, c->want_tick) */
enum phase { PH_HEAD, PH_CREATE, PH_BODY, PH_FLUSH, PH_COMMIT, PH_SEND, PH_DISCARD, PH_FETCH };

/* checksum mode: a chunk stored, to attach to the upload once the whole body matched */
struct attach {
        uint32_t index;
        uint8_t addr[CHP_HASH_BYTES];
};

struct http;
/* A record lookup of the request being served (chp_store_lookup): one at a time per connection.
 * The caller fills q's kind and inputs and calls http_lookup; `then` runs on the loop thread
 * with the answer (at once, or from the store's completion while the connection is open) and
 * owns q's outputs: it takes or clears them (chp_store_lookup_clear) before it returns or asks
 * again. It gets the request's head as the caller passed it (NULL stays NULL), copied into req
 * when the answer comes later. While one is under way the request is pending (h->pending) and
 * holds the connection; a request left unanswered in PH_CREATE with nothing pending after
 * `then` is done (as on_request's rule). */
typedef void (*http_lookup_fn)(struct http *h, struct chp_store_lookup *q,
                               const struct chp_http_request *req);
struct http_lookup {
        struct conn_op base; /* first: the loop routes the completion through it */
        struct chp_store_lookup q;
        http_lookup_fn then;
        bool has_req;
        struct chp_http_request req; /* pointing into h->head, valid while the request is */
};

struct download_req {
        struct chp_http_str inm, range, if_range; /* of the request's head (h->head) */
        bool has_inm, has_range, has_if_range;    /* range, if_range: exactly one given */
        bool if_range_many;                       /* more than one If-Range */
};

struct dl_read;
struct download {
        uint8_t *manifest; /* owned */
        struct chp_manifest m;
        uint64_t next, last; /* byte positions still to queue or read: [next, last] */
        /* chunk reads (download.c), in the file's order: under way, or arrived and waiting
         * for those before them; owned, freed by download_reset */
        struct dl_read *reads;
        uint32_t nreads;
        uint64_t read_bytes; /* their buffers' bytes */
        struct download_req req; /* what the head asked, kept while the file is looked up */
        uint64_t first;          /* the range answered: [first, last] */
        /* the Upload-Metadata to name the file by instead of the file's own (an XMPP upload's,
         * whose name is its path's): borrowed, valid until the head is queued; NULL: the
         * file's */
        const uint8_t *meta;
        size_t meta_len;
        int status;              /* 200 or 206 */
        /* pull-through: ?origin= named another relay's key; while PH_FETCH, the peer it is
         * (chp_peers_fetch) and when the wait gives up (chp_net_now_ms) */
        bool has_origin;
        uint8_t origin[CHP_KEY_BYTES];
        int peer;
        bool fetched; /* the fetch said DONE: the file's lookup does not fetch again */
        uint64_t deadline;
};

struct http {
        struct conn *c;
        enum phase ph;
        bool stopping;
        /* the request being served */
        int method;
        enum route route;
        uint8_t id[CHP_HASH_BYTES];
        bool keep_alive, close_after, head_only;
        char origin[256];
        bool has_origin, expect_continue, continued; /* continued: 100 Continue was sent */
        uint64_t body_left; /* body bytes not read yet (the response may leave some unread) */
        /* tus */
        struct chp_upload *up;
        bool created; /* a POST that made the upload */
        uint32_t cs;
        uint64_t length;     /* declared, or UINT64_MAX while deferred */
        bool set_length;     /* this PATCH carries the length of a deferred upload */
        uint64_t start;      /* durable offset at the request's start */
        uint32_t next_index; /* chunk being filled */
        uint8_t *chunk;      /* its buffer (cs bytes), counted in the memory budget */
        size_t fill, base;   /* bytes in chunk; of which the first base were kept before */
        struct chp_sha256 sha;
        bool sha_ok;
        EVP_MD_CTX *csum; /* Upload-Checksum over the body */
        uint8_t csum_want[32];
        size_t csum_len;
        struct attach *attach; /* checksum mode: chunks stored, to attach at the end */
        uint32_t nattach, attach_cap;
        uint64_t inflight; /* chunk bytes with the writer */
        uint32_t pending;  /* store requests outstanding */
        int failed;        /* the first of their errors */
        uint8_t file_id[CHP_HASH_BYTES];
        bool committed;
        bool claimed; /* this request is the upload's one writer (claim) */
        /* tus.c's load_upload while its lookups are under way: its continuation, and whether
         * it reads the kept tail too */
        void (*loaded)(struct http *h, int rc, const struct chp_http_request *req);
        bool load_tail;
        uint8_t *lk_buf; /* tus.c: a lookup's buffer (the chunk list of a finished upload) */
        /* tokens: who sent the request that needed one (a POST, or a PATCH declaring a
         * deferred length), and the POST's admission, whose slot among the tenant's uploads in
         * progress is held until the request ends (tus_reset gives it back) */
        struct chp_caller caller;
        struct chp_gate_upload gu;
        struct download dl;
        struct http_lookup lk;     /* the request's record lookup (download.c, tus.c) */
        char *head;                /* the request head being served (HEAD_MAX bytes) */
        struct chp_http_parser hp; /* the next request's head, as far as it has arrived */
        char host[256];            /* the Host header, for absolute Location URLs */
        /* the access log (net/accesslog.h), when it is on: the request being served. The
         * strings point into head, valid until the next request is parsed. */
        bool log_open;
        uint64_t log_t0, log_out0; /* chp_net_now_us() and c->queued_total at its head */
        uint64_t log_in;           /* head bytes, plus the body's Content-Length */
        int log_status;            /* of the response queued; 0: none yet */
        struct chp_http_str log_path, log_agent, log_meta;
        char addr[CHP_ALOG_ADDR_MAX]; /* the client's, once */
};

/* ---- http.c: responses and the request loop ---- */

/* A response head being built; http_finish queues it (or closes the connection when it did
 * not fit RESP_MAX). */
struct resp {
        char buf[RESP_MAX];
        size_t len;
        int status; /* the status line's, counted when the response is queued */
        bool overflow;
};

/* Begins a response: status line, Tus-Resumable on tus routes, CORS, Connection: close. */
void http_start(struct http *h, struct resp *r, int status);
/* Appends a header line (printf-style) to the response head. */
__attribute__((format(printf, 2, 3))) void http_add(struct resp *r, const char *fmt, ...);
/* Ends the head (with Content-Length body_len unless no_length) and queues it with the body. */
void http_finish(struct http *h, struct resp *r, const void *body, size_t body_len, bool no_length);
/* A whole response: status and, when msg is not NULL, a text/plain body msg + "\n". */
void http_simple(struct http *h, int status, const char *msg);
/* An IMF-fixdate (RFC 9110 5.6.7) for Unix time t into out. */
void http_date(uint64_t t, char *out, size_t cap);
/* The status that answers a store or project error rc (404, 400, 503, 507, else 500; a token
 * or limit code its own, chp_err_http_status). */
int http_status_of(int rc);
/* The response is queued: writes the request's access log line (when the log is on), resets the
 * request state, then closes or goes on (after dropping what is left of the body). The caller
 * goes back to http_on_input for a pipelined request. */
void http_request_done(struct http *h);
/* The conn hook: parses and serves the requests waiting in c->in, in order. */
void http_on_input(struct conn *c);

/* ---- tus.c: uploads at /files/ ---- */

/* Whether Tus-Resumable: 1.0.0 is sent; else the 412 is queued and it is false. */
bool tus_version_ok(struct http *h, const struct chp_http_request *req);
/* The upload id of a /files/<32 lowercase hex> path: 0 or -EINVAL. */
int tus_parse_id(struct chp_http_str path, uint8_t id[CHP_UPLOAD_ID_BYTES] /* out */);
/* The request handlers; each queues its response now or from a store completion. */
void tus_options(struct http *h, const struct chp_http_request *req);
void tus_post(struct http *h, const struct chp_http_request *req);
void tus_patch(struct http *h, const struct chp_http_request *req);
void tus_head(struct http *h);
void tus_delete(struct http *h);
/* PH_BODY: moves the body along (the conn's body buffer filled, or the window opened). */
void tus_body_progress(struct http *h);
/* For another face on the same body machinery (xmpp.c): */
/* Claims h->id (an upload id) for this request's writes until it ends; false when another
 * request writes it now. */
bool tus_claim(struct http *h);
/* Whether the limits per address admit one more upload; else the 429 is queued. */
bool tus_limits_admit(struct http *h);
/* Queues the refusal of a gate or limit code rc (CHP_ETOOBIG 413, CHP_EQUOTA 403, CHP_ELIMITED
 * 429 with Retry-After), counted in /metrics by reason; why: more for the body, or NULL. */
void tus_refuse(struct http *h, int rc, const char *why);
/* Creates the upload h->up (taken over: every field set, h->id its id) under the admission h->gu
 * and streams the request's body (h->body_left bytes) into it, then commits it; the reply is
 * xmpp_reply's (route R_XMPP). A failure before anything is under way is answered here. */
void tus_create(struct http *h);
/* Drops the upload h->id (a cut upload started over); then xmpp_dropped(h, status). */
void tus_drop(struct http *h);
/* Releases what the request held of the tus state: buffers, checksum, the upload claim. */
void tus_reset(struct http *h);
/* Who sent the request, from its Bearer token and address (conf/gate.h): 0 with h->caller
 * filled, or the refusal queued (401 for a token that does not verify or a malformed header) and
 * an error. *had_token: the request carried Bearer credentials. */
int http_identify(struct http *h, const struct chp_http_request *req, uint64_t now,
                  bool *had_token /* out */);
/* Answers a request the token and limit checks refused with code rc (CHP_ETOKEN_*, CHP_EQUOTA,
 * CHP_ETOOBIG, CHP_ELIMITED): 401 with a Bearer challenge (RFC 6750 3: error="invalid_token"
 * when a token was presented and failed), 403 (insufficient_scope names the scope: upload, or
 * pull on /f/), 413 or 429 with Retry-After; counted in /metrics by reason. had_token: the
 * request carried a token. why: more for the body, or NULL. */
void http_refuse(struct http *h, int rc, bool had_token, const char *why);

/* ---- xmpp.c: XMPP external uploads at /xmpp/NAME/ ---- */

/* The request of route R_XMPP (any method; http.c checked only the prefix). */
void xmpp_request(struct http *h, const struct chp_http_request *req);
/* The PUT's upload ended (committed: rc 0, h->file_id set; or failed with rc): its response. */
void xmpp_reply(struct http *h, int rc);
/* tus_drop is done (status rc): on with the new upload. */
void xmpp_dropped(struct http *h, int rc);

/* ---- download.c: files at /f/, and the face's record lookups ---- */

/* Asks h->lk.q (kind and inputs filled in) and continues with then (struct http_lookup). */
void http_lookup(struct http *h, const struct chp_http_request *req, http_lookup_fn then);

/* The file id of a /f/<64 lowercase hex> path; false when it is not one. */
bool download_parse_id(struct chp_http_str path, uint8_t id[CHP_HASH_BYTES] /* out */);
/* The origin= parameter of a /f/ query string (after the '?'; other parameters ignored):
 * 0 with *has set and key filled when there is one (64 hex digits), 0 with *has false when
 * none, -EINVAL when it is malformed or given twice. */
int download_parse_origin(struct chp_http_str query, uint8_t key[CHP_KEY_BYTES] /* out */,
                          bool *has /* out */);
/* GET or HEAD of the file h->id: 200/206/304/416, then its bytes as the connection drains. */
void download_get(struct http *h, const struct chp_http_request *req);
/* The conn's drain hook while PH_SEND: queues more of the file. */
void download_fill(struct conn *c);
/* The conn's tick hook while PH_FETCH: asks the peer's fetch again; serves the file once it is
 * here, or answers why not (the relay stopping: 503). */
void download_tick(struct conn *c);
/* Frees the download's state. */
void download_reset(struct http *h);

#endif
