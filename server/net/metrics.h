/* metrics.h — the relay's counters (bytes, chunks, errors, HTTP statuses by method, native
 * requests by frame, uploads created/finished/terminated, refused and closed connections, accept
 * errors), the commit-latency histogram, and the /metrics page with the process metrics.
 *
 * One struct chp_metrics per relay, owned by relay.c (zero-initialised, lives as long as the
 * loops) and borrowed through chp_shared.metrics. Every field is an atomic: any thread counts
 * with atomic_fetch_add, and chp_metrics_render reads from any thread. Nothing here fails.
 */
#ifndef CHP_METRICS_H
#define CHP_METRICS_H

#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#define CHP_COMMIT_BUCKETS 11
extern const double chp_commit_buckets[CHP_COMMIT_BUCKETS]; /* seconds, upper bounds */

struct chp_shared;

/* Why the loop refused or closed connections (chapar_connections_closed_total). */
enum chp_accept_err {
        CHP_ACCEPT_EMFILE,
        CHP_ACCEPT_ENFILE,
        CHP_ACCEPT_NOMEM,
        CHP_ACCEPT_OTHER,
        CHP_ACCEPT_NREASONS
};
enum chp_close_reason {
        CHP_CLOSE_IDLE,              /* idle_timeout */
        CHP_CLOSE_STALLED,           /* io_timeout: no byte moved mid-frame or mid-send */
        CHP_CLOSE_HANDSHAKE_TIMEOUT, /* handshake_timeout */
        CHP_CLOSE_HEADER_TIMEOUT,    /* header_timeout */
        CHP_CLOSE_SLOW_BODY,         /* under min_body_rate */
        CHP_CLOSE_CAP,               /* refused: over max_connections */
        CHP_CLOSE_NO_FDS,            /* refused: out of file descriptors (busy reply) */
        CHP_CLOSE_ADDRESS_CAP,       /* refused: over max_connections_per_address */
        CHP_CLOSE_NREASONS
};

/* Why a request was refused by the access and limit checks (chapar_refusals_total{reason}):
 * chp_metrics_refuse picks the reason from the error code. */
enum chp_refusal {
        CHP_REFUSE_TOKEN_MISSING, /* CHP_ETOKEN_MISSING */
        CHP_REFUSE_TOKEN_INVALID, /* CHP_ETOKEN_KEY .. CHP_ETOKEN_EXPIRED */
        CHP_REFUSE_SCOPE,         /* CHP_ETOKEN_SCOPE, CHP_ETOKEN_FILE, CHP_ETOKEN_SUBJECT */
        CHP_REFUSE_QUOTA,         /* CHP_EQUOTA */
        CHP_REFUSE_TOO_BIG,       /* CHP_ETOOBIG */
        CHP_REFUSE_LIMITED,       /* CHP_ELIMITED */
        CHP_REFUSE_OTHER,
        CHP_REFUSE_NREASONS
};

/* How a federation fetch ended (chapar_fetches_total{outcome}); server/peer counts them. */
enum chp_fetch_outcome {
        CHP_FETCHED_DONE,       /* the file is here */
        CHP_FETCHED_NOT_FOUND,  /* the peer has no such file */
        CHP_FETCHED_TIMEOUT,    /* past fetch_timeout */
        CHP_FETCHED_TOO_SLOW,   /* the peer sent less than fetch_min_rate */
        CHP_FETCHED_UNFINISHED, /* the origin never finished the upload */
        CHP_FETCHED_FAILED,     /* anything else: unreachable, a bad chunk, the relay stopping */
        CHP_FETCHED_NOUTCOMES
};

/* Which face an upload event happened on (chapar_uploads_*_total{face}). */
enum chp_metrics_face { CHP_METRICS_NATIVE, CHP_METRICS_HTTP, CHP_METRICS_NFACES };

/* HTTP responses by method (enum chp_http_method, and one for a request too malformed to have
 * one) and exact status (100..599): chapar_http_request_status_total{method,code}. */
#define CHP_METRICS_METHODS  8 /* CHP_HTTP_GET .. CHP_HTTP_PUT, then "other" */
#define CHP_METRICS_STATUSES 500

struct chp_metrics {
        atomic_uint_fast64_t refused[CHP_REFUSE_NREASONS];
        atomic_uint_fast64_t accept_errors[CHP_ACCEPT_NREASONS];
        atomic_uint_fast64_t closed[CHP_CLOSE_NREASONS];
        atomic_uint_fast64_t bytes_in, bytes_out;           /* on native connections, on the wire */
        atomic_uint_fast64_t http_bytes_in, http_bytes_out; /* on HTTP connections */
        atomic_uint_fast64_t chunks_stored, chunks_dedup, frames_bad;
        atomic_uint_fast64_t http_requests, uploads_active;
        atomic_uint_fast64_t reads_throttled; /* receives held back by a byte rate per address */
        atomic_uint_fast64_t sends_throttled; /* sends held back by a byte rate per address */
        atomic_uint_fast64_t errors[32];      /* by wire error code (native), CHP_WE_MAX */
        atomic_uint_fast64_t http_status[6];  /* by status class: 1xx..5xx (index 1..5) */
        /* commit latency: chunk submitted to the writer -> acknowledged */
        atomic_uint_fast64_t commit_le[CHP_COMMIT_BUCKETS]; /* cumulative, per bucket */
        atomic_uint_fast64_t commit_count, commit_sum_us;
        /* federation (server/peer): fetches by outcome; requests answered from the negative
         * cache without a fetch */
        atomic_uint_fast64_t fetches[CHP_FETCHED_NOUTCOMES];
        atomic_uint_fast64_t fetch_negative_hits;
        /* upload sessions created, committed into a file, and deleted before that, by face */
        atomic_uint_fast64_t uploads_created[CHP_METRICS_NFACES];
        atomic_uint_fast64_t uploads_finished[CHP_METRICS_NFACES];
        atomic_uint_fast64_t uploads_terminated[CHP_METRICS_NFACES];
        atomic_uint_fast64_t http_by_status[CHP_METRICS_METHODS][CHP_METRICS_STATUSES];
        atomic_uint_fast64_t native_requests[256]; /* request frames by type */
        uint64_t start_time; /* Unix seconds the relay started (process_start_time_seconds when
                                /proc does not tell the process's start) */
};

/* Counts one HTTP response: method an enum chp_http_method or -1 (none), status 100..599. */
void chp_metrics_http_status(struct chp_metrics *m, int method, int status);

/* The label of a close reason ("idle", "stalled", ...), as in /metrics and the logs. */
const char *chp_metrics_close_reason(enum chp_close_reason why);

/* The label of a fetch outcome ("done", "not_found", ...), as in /metrics. */
const char *chp_metrics_fetch_outcome(enum chp_fetch_outcome o);

/* The label of a refusal reason ("token_missing", ...), as in /metrics. */
const char *chp_metrics_refusal_name(enum chp_refusal why);
/* Counts one refusal by the access and limit checks; code is what they returned (err.h). */
void chp_metrics_refuse(struct chp_metrics *m, int code);

/* Counts one chunk acknowledgement that took from since_us (chp_net_now_us) to now. Any thread. */
void chp_metrics_observe_commit(struct chp_metrics *m, uint64_t since_us);

/* Appends fmt's text at buf[*len] if it fits in cap bytes (then *len grows), else nothing: a
 * layer above that adds series of its own to the page (faces/http.c) writes them the same way. */
void chp_metrics_put(char *buf, size_t cap, size_t *len, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Appends the whole /metrics page (Prometheus text: sh->metrics' counters, the connection and
 * memory gauges of sh, the store's statistics and its chunk backend's operation counters
 * (chp_store_backend_stats), the process's CPU, memory and descriptors from
 * /proc/self, the build) at buf[*len], up to cap bytes; *len grows by what fit. Any thread (it
 * takes a store read transaction). */
void chp_metrics_render(struct chp_shared *sh, char *buf, size_t cap, size_t *len);

#endif
