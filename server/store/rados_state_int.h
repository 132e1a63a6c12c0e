/* rados_state_int.h — what rados_state.c (the engine, chunks), rados_state_files.c and
 * rados_state_flows.c (commit, uploads, pending, usage, tus) share. Private to those files.
 *
 * A request's private part (struct chp_rstate_priv) runs one librados operation at a time (its
 * rop); steps that run in parallel run child requests. Step functions run on librados' completion
 * threads or the handle's timer thread, never block, and end in rop_go (the next operation),
 * sub_go (a child request), later (the timer) or finish (done).
 */
#ifndef CHP_STORE_RADOS_STATE_INT_H
#define CHP_STORE_RADOS_STATE_INT_H

#include "rados_state.h"

enum { NS_C, NS_F, NS_U, NS_P, NS_T, NS_I, NS_N };

#define OID_MAX   160
#define HEX16     17    /* 16 hex digits and a NUL */
#define READ_HEAD 65536 /* a record read's first read; the rest, if any, in a second */

/* Small xattrs of an object as read: each with its presence (a "" value counts as absent). */
struct xattrs {
        bool has_e, has_q, has_n;
        uint64_t e, q, n;
        uint8_t *m; /* malloc'd or NULL */
        size_t m_len;
        uint8_t s[80], u[64];
        size_t s_len, u_len;
};

typedef void (*step_fn)(struct chp_rstate_priv *p, int rc);

struct rop {
        int ns;
        uint64_t t0_us; /* started (for chp_rstate_op_stats) */
        char oid[OID_MAX];
        rados_write_op_t w;
        rados_read_op_t r;
        struct rop *qnext; /* in the handle's queue */
        uint64_t version;  /* of the object, after the operation */
        /* a read's outputs */
        size_t got;
        int read_rv, stat_rv, xattrs_rv;
        uint64_t size;
        time_t mtime;
        rados_xattrs_iter_t xit;
        rados_omap_iter_t oit;
        unsigned char omore;
        int omap_rv;
};

struct chp_rstate_priv {
        struct chp_rstate *st;
        struct chp_rstate_req *req;
        unsigned flags;
        int step;
        uint32_t tries;
        struct rop op;
        step_fn next;    /* the current operation's continuation */
        step_fn after;   /* a composite step's continuation (obj_read, keys) */
        step_fn held_fn; /* resumed by chp_rstate_resume */
        bool held_once;
        struct chp_rstate_req *sub; /* a child request in flight, or NULL */
        /* the timer */
        uint64_t due_us;
        int timer_rc;
        step_fn timer_fn;
        struct chp_rstate_priv *tnext;
        /* an object read (obj_read) */
        struct xattrs x;
        bool found;
        uint8_t *data; /* malloc'd: the object's bytes */
        size_t data_len;
        uint64_t version;
        /* per kind */
        uint64_t expires, created, size;
        char tenant[CHP_TENANT_MAX + 1];
        size_t tlen;
        uint8_t old_usage[CHP_REC_TENANT_BYTES];
        size_t old_usage_len;
        bool usage_found, counted;
        uint8_t *rec; /* malloc'd: a record the request built */
        size_t rec_len;
        struct commit_state *cs;
        int saved_rc;
};

#define RS_SKIP_KEYS 1u /* FILE_PUT from a commit: the index keys are written */

/* ---- the engine (rados_state.c) ---- */
void rop_write(struct chp_rstate_priv *p, int ns, const char *oid);
void rop_read(struct chp_rstate_priv *p, int ns, const char *oid);
void rop_go(struct chp_rstate_priv *p, step_fn next);
void later(struct chp_rstate_priv *p, uint64_t us, step_fn fn, int rc);
void finish(struct chp_rstate_priv *p, int rc);
bool hold_here(struct chp_rstate_priv *p, int step, step_fn fn);
int sub_go(struct chp_rstate_priv *p, struct chp_rstate_req *sub, unsigned flags,
           void (*done)(struct chp_rstate_req *, int));
int rs_submit(struct chp_rstate *st, struct chp_rstate_req *req, unsigned flags);
int rs_unavailable(int rc);
void obj_read(struct chp_rstate_priv *p, int ns, const char *oid, step_fn after);
/* The file's index keys (id: the request's, expires, created and tenant in p), set or dropped. */
void file_keys(struct chp_rstate_priv *p, bool drop, step_fn after);
/* Sets (or drops) one key of an index object of namespace i, then next. */
void index_key(struct chp_rstate_priv *p, const char *oid, const char *key, bool drop,
               step_fn next);
void chunk_done(struct chp_rstate_priv *p, int rc); /* finish(p, rc) as a step */
/* The handle's I/O context of namespace ns (NS_*), for what is not a request (the GC lock). */
rados_ioctx_t rs_io(struct chp_rstate *st, int ns);

/* names and numbers */
void hex16(uint64_t v, char out[HEX16]);
bool unhex16(const uint8_t *s, size_t len, uint64_t *v); /* exactly 16 lowercase hex digits */
void oid_hex(const uint8_t *id, size_t n, char oid[OID_MAX]);
void shard_oid(const char *prefix, const uint8_t *id, char oid[OID_MAX]);
void list_oid(const char *tenant, size_t tlen, char oid[OID_MAX]);
size_t exp_key(char *out, uint64_t expires, char kind, const uint8_t *id, size_t idlen);
size_t list_key(char *out, uint64_t created, const uint8_t *id);

/* ---- the files (rados_state_files.c) ---- */
int file_start(struct chp_rstate_priv *p); /* the FILE_* kinds and INDEX_PAGE */

/* ---- the flows (rados_state_flows.c) ---- */
int flows_start(struct chp_rstate_priv *p); /* commit, uploads, pending, usage, tus */
void flows_free(struct chp_rstate_priv *p);
/* usage of a file record going away (a delete, expiry or quarantine): a child USAGE_ADD */
int usage_sub_file(struct chp_rstate_priv *p, step_fn then);

#endif
