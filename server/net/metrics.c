/* metrics.c — the relay's counters and their Prometheus rendering (see metrics.h). */
#include "metrics.h"

#include <dirent.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "accesslog.h"
#include "http_parse.h"
#include "proto.h"

#include "client_limits.h"
#include "congestion.h"
#include "err.h"
#include "loop.h"
#include "net.h"
#include "store.h"

const double chp_commit_buckets[CHP_COMMIT_BUCKETS] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                                                       0.05,   0.1,   0.25,   0.5,   1.0};

static const char *const close_reason_name[CHP_CLOSE_NREASONS] = {
    [CHP_CLOSE_IDLE] = "idle",
    [CHP_CLOSE_STALLED] = "stalled",
    [CHP_CLOSE_HANDSHAKE_TIMEOUT] = "handshake_timeout",
    [CHP_CLOSE_HEADER_TIMEOUT] = "header_timeout",
    [CHP_CLOSE_SLOW_BODY] = "slow_body",
    [CHP_CLOSE_CAP] = "cap",
    [CHP_CLOSE_NO_FDS] = "no_fds",
    [CHP_CLOSE_ADDRESS_CAP] = "address_cap",
};

const char *chp_metrics_close_reason(enum chp_close_reason why)
{
        return why < CHP_CLOSE_NREASONS ? close_reason_name[why] : "?";
}

const char *chp_metrics_fetch_outcome(enum chp_fetch_outcome o)
{
        static const char *const names[CHP_FETCHED_NOUTCOMES] = {
            [CHP_FETCHED_DONE] = "done",
            [CHP_FETCHED_NOT_FOUND] = "not_found",
            [CHP_FETCHED_TIMEOUT] = "timeout",
            [CHP_FETCHED_TOO_SLOW] = "too_slow",
            [CHP_FETCHED_UNFINISHED] = "unfinished",
            [CHP_FETCHED_FAILED] = "failed",
        };
        return (unsigned)o < CHP_FETCHED_NOUTCOMES ? names[o] : "failed";
}

const char *chp_metrics_refusal_name(enum chp_refusal why)
{
        static const char *const names[CHP_REFUSE_NREASONS] = {
            [CHP_REFUSE_TOKEN_MISSING] = "token_missing",
            [CHP_REFUSE_TOKEN_INVALID] = "token_invalid",
            [CHP_REFUSE_SCOPE] = "scope",
            [CHP_REFUSE_QUOTA] = "quota",
            [CHP_REFUSE_TOO_BIG] = "too_big",
            [CHP_REFUSE_LIMITED] = "limited",
            [CHP_REFUSE_OTHER] = "other",
        };
        return (unsigned)why < CHP_REFUSE_NREASONS ? names[why] : "other";
}

void chp_metrics_refuse(struct chp_metrics *m, int code)
{
        enum chp_refusal why = CHP_REFUSE_OTHER;
        if (code == CHP_ETOKEN_MISSING)
                why = CHP_REFUSE_TOKEN_MISSING;
        else if (code <= CHP_ETOKEN_KEY && code >= CHP_ETOKEN_EXPIRED)
                why = CHP_REFUSE_TOKEN_INVALID;
        else if (code == CHP_ETOKEN_SCOPE || code == CHP_ETOKEN_FILE || code == CHP_ETOKEN_SUBJECT)
                why = CHP_REFUSE_SCOPE;
        else if (code == CHP_EQUOTA)
                why = CHP_REFUSE_QUOTA;
        else if (code == CHP_ETOOBIG)
                why = CHP_REFUSE_TOO_BIG;
        else if (code == CHP_ELIMITED)
                why = CHP_REFUSE_LIMITED;
        atomic_fetch_add(&m->refused[why], 1);
}

void chp_metrics_http_status(struct chp_metrics *m, int method, int status)
{
        if (status < 100 || status > 599)
                return;
        unsigned mi = method >= 0 && method < CHP_METRICS_METHODS - 1 ? (unsigned)method
                                                                      : CHP_METRICS_METHODS - 1;
        atomic_fetch_add(&m->http_by_status[mi][status - 100], 1);
}

void chp_metrics_observe_commit(struct chp_metrics *m, uint64_t since_us)
{
        uint64_t now = chp_net_now_us();
        uint64_t us = now > since_us ? now - since_us : 0;
        for (int i = 0; i < CHP_COMMIT_BUCKETS; i++)
                if ((double)us / 1e6 <= chp_commit_buckets[i])
                        atomic_fetch_add(&m->commit_le[i], 1);
        atomic_fetch_add(&m->commit_count, 1);
        atomic_fetch_add(&m->commit_sum_us, us);
}

void chp_metrics_put(char *buf, size_t cap, size_t *len, const char *fmt, ...)
{
        if (*len >= cap)
                return;
        va_list ap;
        va_start(ap, fmt);
        int w = vsnprintf(buf + *len, cap - *len, fmt, ap);
        va_end(ap);
        if (w > 0 && (size_t)w < cap - *len) /* a line that does not fit is left out */
                *len += (size_t)w;
}

/* The process metrics node_exporter's and the Go client's users know, from /proc/self: CPU
 * seconds, resident bytes, open and allowed descriptors, start time. A file that cannot be read
 * leaves its series out. */
static void render_process(struct chp_metrics *m, char *buf, size_t cap, size_t *len)
{
        long tick = sysconf(_SC_CLK_TCK), page = sysconf(_SC_PAGESIZE);
        char st[1024];
        FILE *f = fopen("/proc/self/stat", "re");
        size_t n = f ? fread(st, 1, sizeof(st) - 1, f) : 0;
        if (f)
                fclose(f);
        st[n] = '\0';
        /* the fields after the command name, which may hold spaces and parentheses */
        char *p = strrchr(st, ')');
        unsigned long long utime = 0, stime = 0, start = 0, rss = 0;
        int got = p && tick > 0 ? sscanf(p + 1,
                                         " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu "
                                         "%*d %*d %*d %*d %*d %*d %llu %*u %llu",
                                         &utime, &stime, &start, &rss)
                                : 0;
        if (got == 4)
                chp_metrics_put(
                    buf, cap, len,
                    "# HELP process_cpu_seconds_total Total user and system CPU time spent in "
                    "seconds.\n# TYPE process_cpu_seconds_total counter\n"
                    "process_cpu_seconds_total %.2f\n"
                    "# HELP process_resident_memory_bytes Resident memory size in bytes.\n"
                    "# TYPE process_resident_memory_bytes gauge\n"
                    "process_resident_memory_bytes %llu\n",
                    (double)(utime + stime) / (double)tick, rss * (unsigned long long)page);
        unsigned fds = 0;
        DIR *d = opendir("/proc/self/fd");
        if (d) {
                struct dirent *e;
                while ((e = readdir(d)))
                        fds += e->d_name[0] != '.';
                closedir(d);
                chp_metrics_put(buf, cap, len,
                                "# HELP process_open_fds Number of open file descriptors.\n"
                                "# TYPE process_open_fds gauge\nprocess_open_fds %u\n",
                                fds ? fds - 1 : 0); /* not the directory's own descriptor */
        }
        struct rlimit rl;
        if (getrlimit(RLIMIT_NOFILE, &rl) == 0)
                chp_metrics_put(buf, cap, len,
                                "# HELP process_max_fds Maximum number of open file descriptors.\n"
                                "# TYPE process_max_fds gauge\nprocess_max_fds %llu\n",
                                (unsigned long long)rl.rlim_cur);
        /* started: the boot time plus the process's start in ticks since boot; the relay's
         * own start when /proc/stat cannot tell the boot time */
        double started = (double)m->start_time;
        unsigned long long btime = 0;
        char line[256];
        if (got == 4 && (f = fopen("/proc/stat", "re"))) {
                while (fgets(line, sizeof(line), f))
                        if (sscanf(line, "btime %llu", &btime) == 1)
                                break;
                fclose(f);
        }
        if (btime)
                started = (double)btime + (double)start / (double)tick;
        if (started)
                chp_metrics_put(
                    buf, cap, len,
                    "# HELP process_start_time_seconds Start time of the process since unix epoch "
                    "in seconds.\n# TYPE process_start_time_seconds gauge\n"
                    "process_start_time_seconds %.2f\n",
                    started);
        chp_metrics_put(
            buf, cap, len,
            "# HELP chapar_build_info The running relay's version and native protocol version.\n"
            "# TYPE chapar_build_info gauge\n"
            "chapar_build_info{version=\"%s\",protocol=\"%u\"} 1\n",
            CHAPAR_VERSION, (unsigned)CHP_PROTO_VERSION);
}

/* The chunk backend's operations (chp_store_backend_stats), labelled with its name; nothing for
 * a backend that counts none (local). */
static void render_backend(struct chp_shared *sh, char *buf, size_t cap, size_t *len)
{
        static const char *const op_name[CHP_STORE_NOPS] = {
            [CHP_STORE_OP_WRITE] = "chunk_write",
            [CHP_STORE_OP_READ] = "chunk_read",
            [CHP_STORE_OP_REMOVE] = "remove",
            [CHP_STORE_OP_RECORD_WRITE] = "record_write",
            [CHP_STORE_OP_RECORD_READ] = "record_read",
        };
        static const char *const err_name[CHP_STORE_NERRS] = {
            [CHP_STORE_ERR_UNAVAILABLE] = "unavailable",
            [CHP_STORE_ERR_NOSPC] = "enospc",
            [CHP_STORE_ERR_LOCK] = "lock_lapsed",
            [CHP_STORE_ERR_OTHER] = "other",
        };
        struct chp_store_backend_stats *bs = malloc(sizeof(*bs));
        if (!bs)
                return;
        if (chp_store_backend_stats(sh->store, bs) != 0) {
                free(bs);
                return;
        }
        const char *be = bs->backend;
        chp_metrics_put(buf, cap, len,
                        "# HELP chapar_store_op_seconds Latency of the chunk backend's operations, "
                        "by kind (failed ones too).\n"
                        "# TYPE chapar_store_op_seconds histogram\n");
        for (int op = 0; op < CHP_STORE_NOPS; op++) {
                for (int i = 0; i < CHP_STORE_OP_BUCKETS; i++)
                        chp_metrics_put(
                            buf, cap, len,
                            "chapar_store_op_seconds_bucket{backend=\"%s\",op=\"%s\",le=\"%g\"} "
                            "%llu\n",
                            be, op_name[op], chp_store_op_buckets[i],
                            (unsigned long long)bs->op_le[op][i]);
                chp_metrics_put(
                    buf, cap, len,
                    "chapar_store_op_seconds_bucket{backend=\"%s\",op=\"%s\",le=\"+Inf\"} %llu\n"
                    "chapar_store_op_seconds_sum{backend=\"%s\",op=\"%s\"} %.6f\n"
                    "chapar_store_op_seconds_count{backend=\"%s\",op=\"%s\"} %llu\n",
                    be, op_name[op], (unsigned long long)bs->op_count[op], be, op_name[op],
                    (double)bs->op_sum_us[op] / 1e6, be, op_name[op],
                    (unsigned long long)bs->op_count[op]);
        }
        chp_metrics_put(buf, cap, len,
                        "# HELP chapar_store_inflight The chunk backend's operations in flight.\n"
                        "# TYPE chapar_store_inflight gauge\n"
                        "chapar_store_inflight{backend=\"%s\"} %llu\n",
                        be, (unsigned long long)bs->inflight);
        chp_metrics_put(
            buf, cap, len,
            "# HELP chapar_store_errors_total The chunk backend's failed operations, by "
            "kind and error class.\n"
            "# TYPE chapar_store_errors_total counter\n");
        for (int op = 0; op < CHP_STORE_NOPS; op++)
                for (int e = 0; e < CHP_STORE_NERRS; e++)
                        chp_metrics_put(
                            buf, cap, len,
                            "chapar_store_errors_total{backend=\"%s\",op=\"%s\",error=\"%s\"} "
                            "%llu\n",
                            be, op_name[op], err_name[e], (unsigned long long)bs->errors[op][e]);
        chp_metrics_put(
            buf, cap, len,
            "# HELP chapar_store_lock_renewals_failed_total Renewals of the pool's lock that "
            "failed.\n"
            "# TYPE chapar_store_lock_renewals_failed_total counter\n"
            "chapar_store_lock_renewals_failed_total{backend=\"%s\"} %llu\n"
            "# HELP chapar_store_lock_lapsed 1 while the pool's lock may have lapsed (writes are "
            "refused).\n"
            "# TYPE chapar_store_lock_lapsed gauge\n"
            "chapar_store_lock_lapsed{backend=\"%s\"} %d\n",
            be, (unsigned long long)bs->lock_renewals_failed, be, bs->lock_lost ? 1 : 0);
        if (bs->cache)
                chp_metrics_put(
                    buf, cap, len,
                    "# HELP chapar_cache_hits_total Chunks served from the local read cache.\n"
                    "# TYPE chapar_cache_hits_total counter\n"
                    "chapar_cache_hits_total %llu\n"
                    "# HELP chapar_cache_misses_total Chunks looked for in the read cache and read "
                    "from the pool.\n"
                    "# TYPE chapar_cache_misses_total counter\n"
                    "chapar_cache_misses_total %llu\n"
                    "# HELP chapar_cache_fills_total Copies of chunks read from the pool, by "
                    "outcome.\n"
                    "# TYPE chapar_cache_fills_total counter\n"
                    "chapar_cache_fills_total{outcome=\"stored\"} %llu\n"
                    "chapar_cache_fills_total{outcome=\"dropped\"} %llu\n"
                    "# HELP chapar_cache_evictions_total Cached chunks removed for room or "
                    "damage.\n"
                    "# TYPE chapar_cache_evictions_total counter\n"
                    "chapar_cache_evictions_total %llu\n"
                    "# HELP chapar_cache_bytes Bytes held by the read cache.\n"
                    "# TYPE chapar_cache_bytes gauge\n"
                    "chapar_cache_bytes %llu\n"
                    "# HELP chapar_cache_chunks Chunks held by the read cache.\n"
                    "# TYPE chapar_cache_chunks gauge\n"
                    "chapar_cache_chunks %llu\n",
                    (unsigned long long)bs->cache_hits, (unsigned long long)bs->cache_misses,
                    (unsigned long long)bs->cache_stored, (unsigned long long)bs->cache_dropped,
                    (unsigned long long)bs->cache_evictions, (unsigned long long)bs->cache_bytes,
                    (unsigned long long)bs->cache_chunks);
        free(bs);
}

void chp_metrics_render(struct chp_shared *sh, char *buf, size_t cap, size_t *len)
{
        struct chp_metrics *m = sh->metrics;
        struct chp_store_stats st = {0};
        int src = chp_store_stats(sh->store, &st);
        if (sh->congestion)
                chp_metrics_put(buf, cap, len,
                                "# HELP chapar_tcp_congestion_control The TCP congestion control "
                                "the relay's sockets run (algorithm) for its congestion_control "
                                "setting (wanted).\n"
                                "# TYPE chapar_tcp_congestion_control gauge\n"
                                "chapar_tcp_congestion_control{algorithm=\"%s\",wanted=\"%s\"} 1\n",
                                sh->congestion->running, sh->congestion->wanted);
        chp_metrics_put(buf, cap, len,
                        "# HELP chapar_connections Open connections (native and HTTP).\n"
                        "# TYPE chapar_connections gauge\nchapar_connections %u\n",
                        atomic_load(&sh->conns));
        chp_metrics_put(buf, cap, len,
                        "# HELP chapar_bytes_received_total Bytes received, by face.\n"
                        "# TYPE chapar_bytes_received_total counter\n"
                        "chapar_bytes_received_total{face=\"native\"} %llu\n"
                        "chapar_bytes_received_total{face=\"http\"} %llu\n",
                        (unsigned long long)atomic_load(&m->bytes_in),
                        (unsigned long long)atomic_load(&m->http_bytes_in));
        chp_metrics_put(buf, cap, len,
                        "# HELP chapar_bytes_sent_total Bytes sent, by face.\n"
                        "# TYPE chapar_bytes_sent_total counter\n"
                        "chapar_bytes_sent_total{face=\"native\"} %llu\n"
                        "chapar_bytes_sent_total{face=\"http\"} %llu\n",
                        (unsigned long long)atomic_load(&m->bytes_out),
                        (unsigned long long)atomic_load(&m->http_bytes_out));
        chp_metrics_put(
            buf, cap, len,
            "# HELP chapar_chunks_stored_total Chunks written to the store.\n"
            "# TYPE chapar_chunks_stored_total counter\nchapar_chunks_stored_total %llu\n"
            "# HELP chapar_dedup_hits_total Chunks received that the store already held.\n"
            "# TYPE chapar_dedup_hits_total counter\nchapar_dedup_hits_total %llu\n",
            (unsigned long long)atomic_load(&m->chunks_stored),
            (unsigned long long)atomic_load(&m->chunks_dedup));
        chp_metrics_put(
            buf, cap, len,
            "# HELP chapar_http_requests_total HTTP requests served.\n"
            "# TYPE chapar_http_requests_total counter\nchapar_http_requests_total %llu\n",
            (unsigned long long)atomic_load(&m->http_requests));
        chp_metrics_put(buf, cap, len,
                        "# HELP chapar_http_responses_total HTTP responses by status class.\n"
                        "# TYPE chapar_http_responses_total counter\n");
        for (int i = 1; i <= 5; i++)
                chp_metrics_put(buf, cap, len, "chapar_http_responses_total{class=\"%dxx\"} %llu\n",
                                i, (unsigned long long)atomic_load(&m->http_status[i]));
        chp_metrics_put(buf, cap, len,
                        "# HELP chapar_errors_total Native protocol errors sent, by code.\n"
                        "# TYPE chapar_errors_total counter\n");
        for (uint32_t i = 1; i <= CHP_WE_MAX; i++)
                if (atomic_load(&m->errors[i]))
                        chp_metrics_put(buf, cap, len, "chapar_errors_total{code=\"%u\"} %llu\n", i,
                                        (unsigned long long)atomic_load(&m->errors[i]));
        chp_metrics_put(buf, cap, len, "chapar_errors_total{code=\"bad_frame_closed\"} %llu\n",
                        (unsigned long long)atomic_load(&m->frames_bad));
        chp_metrics_put(buf, cap, len,
                        "# HELP chapar_uploads_active Upload sessions in the store.\n"
                        "# TYPE chapar_uploads_active gauge\nchapar_uploads_active %llu\n",
                        (unsigned long long)st.uploads);
        chp_metrics_put(buf, cap, len,
                        "# HELP chapar_commit_seconds From a chunk handed to the writer to its "
                        "acknowledgement.\n"
                        "# TYPE chapar_commit_seconds histogram\n");
        for (size_t i = 0; i < CHP_COMMIT_BUCKETS; i++)
                chp_metrics_put(buf, cap, len, "chapar_commit_seconds_bucket{le=\"%g\"} %llu\n",
                                chp_commit_buckets[i],
                                (unsigned long long)atomic_load(&m->commit_le[i]));
        chp_metrics_put(buf, cap, len,
                        "chapar_commit_seconds_bucket{le=\"+Inf\"} %llu\n"
                        "chapar_commit_seconds_sum %.6f\nchapar_commit_seconds_count %llu\n",
                        (unsigned long long)atomic_load(&m->commit_count),
                        (double)atomic_load(&m->commit_sum_us) / 1e6,
                        (unsigned long long)atomic_load(&m->commit_count));
        if (!src)
                chp_metrics_put(
                    buf, cap, len,
                    "# HELP chapar_store_chunks Chunks in the store.\n"
                    "# TYPE chapar_store_chunks gauge\nchapar_store_chunks %llu\n"
                    "# HELP chapar_store_files Files in the store.\n"
                    "# TYPE chapar_store_files gauge\nchapar_store_files %llu\n"
                    "# HELP chapar_store_segments Segment files.\n"
                    "# TYPE chapar_store_segments gauge\nchapar_store_segments %llu\n"
                    "# HELP chapar_store_segment_bytes Bytes in segment files.\n"
                    "# TYPE chapar_store_segment_bytes gauge\nchapar_store_segment_bytes %llu\n"
                    "# HELP chapar_store_live_bytes Bytes of live chunks in segments.\n"
                    "# TYPE chapar_store_live_bytes gauge\nchapar_store_live_bytes %llu\n",
                    (unsigned long long)st.chunks, (unsigned long long)st.files,
                    (unsigned long long)st.segments, (unsigned long long)st.segment_bytes,
                    (unsigned long long)st.live_bytes);
        render_backend(sh, buf, cap, len);
        /* connections refused or closed, accept errors, the memory budget */
        static const char *const accept_name[CHP_ACCEPT_NREASONS] = {
            [CHP_ACCEPT_EMFILE] = "emfile",
            [CHP_ACCEPT_ENFILE] = "enfile",
            [CHP_ACCEPT_NOMEM] = "nomem",
            [CHP_ACCEPT_OTHER] = "other",
        };
        chp_metrics_put(
            buf, cap, len,
            "# HELP chapar_accept_errors_total Failed accepts, by reason (emfile: the process "
            "is out of file descriptors).\n# TYPE chapar_accept_errors_total counter\n");
        for (int i = 0; i < CHP_ACCEPT_NREASONS; i++)
                chp_metrics_put(buf, cap, len, "chapar_accept_errors_total{reason=\"%s\"} %llu\n",
                                accept_name[i],
                                (unsigned long long)atomic_load(&m->accept_errors[i]));
        chp_metrics_put(
            buf, cap, len,
            "# HELP chapar_connections_closed_total Connections the relay refused or closed "
            "on its own, by reason.\n# TYPE chapar_connections_closed_total counter\n");
        for (int i = 0; i < CHP_CLOSE_NREASONS; i++)
                chp_metrics_put(
                    buf, cap, len, "chapar_connections_closed_total{reason=\"%s\"} %llu\n",
                    close_reason_name[i], (unsigned long long)atomic_load(&m->closed[i]));
        chp_metrics_put(
            buf, cap, len,
            "# HELP chapar_memory_used_bytes Chunk and body buffers held against memory_limit.\n"
            "# TYPE chapar_memory_used_bytes gauge\nchapar_memory_used_bytes %llu\n"
            "# HELP chapar_memory_waiting Connections waiting for memory_limit to allow more.\n"
            "# TYPE chapar_memory_waiting gauge\nchapar_memory_waiting %u\n",
            (unsigned long long)atomic_load(&sh->mem_used), atomic_load(&sh->mem_waiting));
        /* refusals by the access and limit checks, and the limits table */
        chp_metrics_put(
            buf, cap, len,
            "# HELP chapar_refusals_total Requests and connections refused by the access and "
            "limit checks, by reason.\n# TYPE chapar_refusals_total counter\n");
        for (int i = 0; i < CHP_REFUSE_NREASONS; i++)
                chp_metrics_put(buf, cap, len, "chapar_refusals_total{reason=\"%s\"} %llu\n",
                                chp_metrics_refusal_name((enum chp_refusal)i),
                                (unsigned long long)atomic_load(&m->refused[i]));
        struct chp_limits_stats ls;
        chp_limits_stats(sh->limits, &ls);
        chp_metrics_put(
            buf, cap, len,
            "# HELP chapar_limits_entries Client addresses and subjects the limits table holds.\n"
            "# TYPE chapar_limits_entries gauge\nchapar_limits_entries %u\n"
            "# HELP chapar_limits_capacity The most the limits table holds.\n"
            "# TYPE chapar_limits_capacity gauge\nchapar_limits_capacity %u\n"
            "# HELP chapar_limits_evictions_total Idle entries of the limits table reused for "
            "another address or subject.\n"
            "# TYPE chapar_limits_evictions_total counter\nchapar_limits_evictions_total %llu\n"
            "# HELP chapar_reads_throttled_total Times a connection's receives waited for the byte "
            "rate of its address (upload_rate_per_address).\n"
            "# TYPE chapar_reads_throttled_total counter\nchapar_reads_throttled_total %llu\n"
            "# HELP chapar_sends_throttled_total Times a connection's sends waited for the byte "
            "rate of its address (download_rate_per_address).\n"
            "# TYPE chapar_sends_throttled_total counter\nchapar_sends_throttled_total %llu\n",
            ls.entries, ls.capacity, (unsigned long long)ls.evictions,
            (unsigned long long)atomic_load(&m->reads_throttled),
            (unsigned long long)atomic_load(&m->sends_throttled));
        /* federation fetches (server/peer) */
        chp_metrics_put(buf, cap, len,
                        "# HELP chapar_fetches_total Fetches from peers, by how they ended.\n"
                        "# TYPE chapar_fetches_total counter\n");
        for (int i = 0; i < CHP_FETCHED_NOUTCOMES; i++)
                chp_metrics_put(buf, cap, len, "chapar_fetches_total{outcome=\"%s\"} %llu\n",
                                chp_metrics_fetch_outcome((enum chp_fetch_outcome)i),
                                (unsigned long long)atomic_load(&m->fetches[i]));
        chp_metrics_put(
            buf, cap, len,
            "# HELP chapar_fetch_negative_hits_total Requests for a file a peer lacks answered "
            "from memory, without a fetch.\n# TYPE chapar_fetch_negative_hits_total counter\n"
            "chapar_fetch_negative_hits_total %llu\n",
            (unsigned long long)atomic_load(&m->fetch_negative_hits));
        /* uploads by face, HTTP statuses by method, native requests by frame */
        static const char *const face_name[CHP_METRICS_NFACES] = {"native", "http"};
        static const struct {
                const char *name, *help;
                size_t off;
        } ups[] = {
            {"chapar_uploads_created_total", "Upload sessions created", 0},
            {"chapar_uploads_finished_total", "Uploads committed into a file", 1},
            {"chapar_uploads_terminated_total", "Upload sessions deleted before their commit", 2},
        };
        for (size_t k = 0; k < sizeof(ups) / sizeof(ups[0]); k++) {
                atomic_uint_fast64_t *v = ups[k].off == 0   ? m->uploads_created
                                          : ups[k].off == 1 ? m->uploads_finished
                                                            : m->uploads_terminated;
                chp_metrics_put(buf, cap, len, "# HELP %s %s, by face.\n# TYPE %s counter\n",
                                ups[k].name, ups[k].help, ups[k].name);
                for (int f = 0; f < CHP_METRICS_NFACES; f++)
                        chp_metrics_put(buf, cap, len, "%s{face=\"%s\"} %llu\n", ups[k].name,
                                        face_name[f], (unsigned long long)atomic_load(&v[f]));
        }
        static const char *const method_name[CHP_METRICS_METHODS] = {
            [CHP_HTTP_GET] = "GET",       [CHP_HTTP_HEAD] = "HEAD",
            [CHP_HTTP_POST] = "POST",     [CHP_HTTP_PATCH] = "PATCH",
            [CHP_HTTP_DELETE] = "DELETE", [CHP_HTTP_OPTIONS] = "OPTIONS",
            [CHP_HTTP_PUT] = "PUT",       [7] = "other",
        };
        _Static_assert(CHP_HTTP_PUT == CHP_METRICS_METHODS - 2, "one slot per method, then other");
        chp_metrics_put(
            buf, cap, len,
            "# HELP chapar_http_request_status_total HTTP responses by request method and "
            "status code.\n# TYPE chapar_http_request_status_total counter\n");
        for (int mi = 0; mi < CHP_METRICS_METHODS; mi++)
                for (int code = 0; code < CHP_METRICS_STATUSES; code++) {
                        uint64_t v = atomic_load(&m->http_by_status[mi][code]);
                        if (v)
                                chp_metrics_put(
                                    buf, cap, len,
                                    "chapar_http_request_status_total{method=\"%s\",code=\"%d\"} "
                                    "%llu\n",
                                    method_name[mi], code + 100, (unsigned long long)v);
                }
        chp_metrics_put(
            buf, cap, len,
            "# HELP chapar_native_requests_total Native request frames received, by type.\n"
            "# TYPE chapar_native_requests_total counter\n");
        for (int t = 0; t < 256; t++) {
                uint64_t v = atomic_load(&m->native_requests[t]);
                /* a type without a name of its own never passes the frame decoder; were one
                 * counted, its "?" would repeat a series */
                if (v && strcmp(chp_frame_type_name((uint8_t)t), "?") != 0)
                        chp_metrics_put(buf, cap, len,
                                        "chapar_native_requests_total{frame=\"%s\"} %llu\n",
                                        chp_frame_type_name((uint8_t)t), (unsigned long long)v);
        }
        chp_metrics_put(
            buf, cap, len,
            "# HELP chapar_access_log_dropped_total Access log lines dropped: the disk was a whole "
            "buffer behind, or the file could not be written.\n"
            "# TYPE chapar_access_log_dropped_total counter\nchapar_access_log_dropped_total "
            "%llu\n",
            (unsigned long long)chp_alog_dropped(sh->alog));
        render_process(m, buf, cap, len);
}
