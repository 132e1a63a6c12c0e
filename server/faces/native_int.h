/* native_int.h — what the files of chapard's native face share (private to server/faces/): the
 * per-connection state struct native, the reply helpers, and each file's frame handlers.
 *
 *   native.c         the frame loop and the session: HELLO, PING, dispatch, flow control
 *   native_upload.c  OPEN, CHUNK, COMMIT, DELETE: requests through the store's writer
 *   native_read.c    HAVE, GET_MANIFEST, GET_CHUNK, STAT: answered from the store on the loop
 *                    (from a read's or a lookup's completion when the backend fetches); the
 *                    face's record lookups (struct nlookup)
 *   native_peer.c    federation: pull-through from a file's origin relay, PREFETCH, OFFER
 *
 * Loop thread only. A struct native belongs to its connection (c->nat) and owns the manifests it
 * keeps. Each handler answers its request with one reply (native_reply_frame or
 * native_reply_error), at once or from the store's completion. Who may do what is the gate's
 * (conf/gate.h): HELLO identifies the caller once, OPEN is admitted by chp_gate_upload_begin,
 * OFFER and pull-through need their scopes, STAT and HAVE tell anonymous callers less. OPEN and
 * CHUNK take over a payload passed as owned (a buffer of its own, charged to the memory budget);
 * the others borrow theirs.
 */
#ifndef CHP_FACES_NATIVE_INT_H
#define CHP_FACES_NATIVE_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "accesslog.h"
#include "conn.h"
#include "gate.h"
#include "hash.h"
#include "manifest.h"
#include "proto.h"

#define MAX_UPL 8 /* uploads a connection keeps at hand */

struct upl {
        bool used;
        bool created_here; /* this connection opened it first (and may delete it) */
        uint8_t id[CHP_UPLOAD_ID_BYTES];
        uint8_t file_id[CHP_HASH_BYTES];
        uint8_t *manifest; /* owned */
        size_t manifest_len;
        struct chp_manifest m; /* points into manifest */
        uint64_t last_used;
        struct chp_gate_upload adm; /* this connection's admission (gate.h); given back with
                                       chp_gate_upload_end when the upload leaves its hand */
};

struct native {
        bool hello;
        struct chp_caller caller; /* who sent HELLO (its token, its address): gate.h */
        bool stopping;
        uint32_t inflight;    /* requests not yet answered */
        uint64_t window_used; /* chunk bytes received and not yet acknowledged */
        uint64_t reading;     /* chunk bytes the store is fetching for GET_CHUNK replies */
        bool in_frame;        /* a payload is arriving into `payload` */
        struct chp_frame_header hdr;
        uint8_t *payload;
        struct chp_sha256 sha;
        size_t hashed; /* payload bytes fed to sha */
        struct upl upl[MAX_UPL];
        struct nlog *log; /* the access log (when on): requests awaiting their reply; lazily */
        uint32_t nlog;    /* of NLOG_MAX entries used */
        uint64_t born_us; /* chp_net_now_us() at attach, for the SESSION line */
        uint64_t chunks_in, chunks_out; /* CHUNK frames received, CHUNK replies sent */
        char addr[CHP_ALOG_ADDR_MAX];
};

/* An access-logged request (native.c): its line is written when its reply is queued. */
#define NLOG_MAX 64
struct nlog {
        uint32_t id;
        uint8_t type;
        uint8_t id_len; /* bytes of file id (32) or upload id (16) in obj; 0: none */
        uint8_t obj[CHP_HASH_BYTES];
        uint32_t bytes_in; /* the request frame, header and payload */
        uint64_t t0;       /* chp_net_now_us() */
};

/* native.c: payload buffers charged to the loop's memory budget; free(NULL) is a no-op. */
uint8_t *native_payload_alloc(struct conn *c, size_t n);
void native_payload_free(struct chp_shared *sh, uint8_t *p, size_t n);
/* Queues a frame header and returns where its payload_len bytes go (NULL: out of memory, and
 * the connection is closed). */
uint8_t *native_reply_frame(struct conn *c, uint8_t type, uint32_t id, size_t payload_len);
/* Queues ERROR(code, message); a code that ends the connection closes it once flushed. */
__attribute__((format(printf, 4, 5))) void native_reply_error(struct conn *c, uint32_t id,
                                                              uint32_t code, const char *fmt, ...);
uint32_t native_wire_code(int rc); /* a store or gate error (err.h) as a wire error code */
void native_reply_store_error(struct conn *c, uint32_t id, int rc);
/* Answers a request the gate refused (CHP_ETOKEN_*, CHP_EQUOTA, CHP_ETOOBIG, CHP_ELIMITED): the
 * wire code for rc, chp_strerror's reason after what was refused, counted in the refusals by
 * reason. */
void native_reply_refusal(struct conn *c, uint32_t id, int rc, const char *what);
/* Reads the frames that have arrived, as far as flow control allows. */
void native_on_input(struct conn *c);

/* ---- record lookups (native_read.c): chp_store_lookup without blocking the loop ---- */

struct nlookup;
/* Continues a request with the answer in op->q, on the loop thread while the connection is
 * open; it takes or clears q's outputs, then asks again (nlookup_ask) or answers and frees op. */
typedef void (*nlookup_fn)(struct conn *c, struct nlookup *op);

/* A request that reads records: its lookup and what it keeps between lookups (all owned by op,
 * freed by nlookup_free). While a lookup is under way it counts in inflight and holds the
 * connection; once the connection is closed, its answer only frees op. */
struct nlookup {
        struct conn_op base; /* first: the loop routes the completion through it */
        struct chp_store_lookup q;
        nlookup_fn then;
        nlookup_fn after_pending; /* pending_file's continuation (pending_rc says how it went) */
        uint32_t frame_id;
        uint8_t file_id[CHP_HASH_BYTES];
        struct chp_msg_file_req fq; /* GET_MANIFEST's, pointing into the arrays below */
        uint8_t origin_key[CHP_KEY_BYTES];
        char origin_addr[256];
        bool probe;        /* STAT: the caller may learn of uploads in progress */
        int peer;          /* OFFER: the peer's index */
        uint8_t state;     /* CHP_UPLOAD_COMPLETE or _PARTIAL */
        uint8_t *manifest; /* the file's or the pending upload's */
        size_t manifest_len;
        struct chp_file_info info;
        uint8_t *present; /* pending: the bitmap of chunks stored so far */
        uint8_t *have;    /* pending: a byte per chunk (the lookup's buffer) */
        uint32_t stored, chunk_count;
        int pending_rc;
        uint8_t *buf; /* HAVE: the addresses asked about, then a byte each */
        void *ctx;    /* the caller's, freed with free_ctx (may be NULL) */
        void (*free_ctx)(void *ctx);
};
/* A new lookup op of frame frame_id, or NULL (out of memory). */
struct nlookup *nlookup_new(struct conn *c, uint32_t frame_id);
void nlookup_free(struct nlookup *op); /* NULL is a no-op */
/* Asks op->q (kind and inputs filled in); then(c, op) follows, at once or from the answer. */
void nlookup_ask(struct conn *c, struct nlookup *op, nlookup_fn then);

/* native_upload.c */
void native_upload_open(struct conn *c, const struct chp_frame_header *h, uint8_t *p, bool owned);
void native_upload_chunk(struct conn *c, const struct chp_frame_header *h, uint8_t *p, bool owned);
void native_upload_finish(struct conn *c, const struct chp_frame_header *h,
                          const uint8_t *p); /* COMMIT or DELETE */
void native_upload_forget_all(struct conn *c); /* the uploads at hand, at detach */

/* native_read.c */
void native_read_have(struct conn *c, const struct chp_frame_header *h, const uint8_t *p);
void native_read_manifest(struct conn *c, const struct chp_frame_header *h, const uint8_t *p);
void native_read_chunk(struct conn *c, const struct chp_frame_header *h, const uint8_t *p);
void native_read_stat(struct conn *c, const struct chp_frame_header *h, const uint8_t *p);

/* native_peer.c */
/* A file this relay lacks (pending: it holds `stored` of its chunks) whose ticket names another
 * origin: fetched from it if it is a peer. Returns true when the request is answered here. */
bool native_peer_via_origin(struct conn *c, uint32_t frame_id, const struct chp_msg_file_req *q,
                            bool pending, uint32_t stored);
void native_peer_prefetch(struct conn *c, const struct chp_frame_header *h, const uint8_t *p);
void native_peer_offer(struct conn *c, const struct chp_frame_header *h, const uint8_t *p);

#endif
