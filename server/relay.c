#include "relay.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "accesslog.h"
#include "admin.h"
#include "client_limits.h"
#include "congestion.h"
#include "conn.h"
#include "faces.h"
#include "err.h"
#include "gate.h"
#include "hash.h"
#include "identity.h"
#include "peer.h"
#include "log.h"
#include "loop.h"
#include "metrics.h"
#include "net.h"
#include "notify.h"
#include "store.h"
#include "uring_compat.h"

#define GC_INTERVAL_S 60
#define WAIT_MS       200 /* the main thread's turn: signals, GC, reload bookkeeping */

/* Reload (SIGHUP) publishes a new configuration snapshot in sh->cfg; loops read it without a lock
 * (loop.h: never past one callback). The snapshot it replaced is freed once every loop has run a
 * barrier: a callback queued through the loop's completion queue after the new snapshot was
 * published, which runs between the loop's other callbacks, so when it runs that loop holds no
 * pointer into the old one. At most one snapshot waits for its barriers; a SIGHUP that comes
 * meanwhile is applied when they are through. So at most three snapshots exist at once. */
struct barrier {
        struct conn_op op; /* first: the loop's queue hands back &op.req */
        atomic_uint *pending;
};

struct reload {
        const struct chp_relay_source *src;
        struct chp_config *owned;    /* the running snapshot when a reload made it (else cfg) */
        struct chp_config *retiring; /* the one before it, until every loop ran its barrier */
        atomic_uint pending;         /* loops yet to run the barrier */
        bool wanted;                 /* a SIGHUP came while a snapshot was retiring */
};

/* Rings are created with SINGLE_ISSUER: a ring must be set up by the thread that submits to it,
 * so each worker creates its own loop and reports back before it runs. */
struct worker {
        struct chp_shared *sh;
        struct barrier barrier;
        int listen_fd, http_fd;
        struct chp_tus_claims *tus; /* the HTTP face's shared state */
        struct chp_loop *loop;
        pthread_t thread;
        bool started;
        int rc;
        pthread_mutex_t *lock;
        pthread_cond_t *cond;
        unsigned *reported;
};

static void *worker_main(void *arg)
{
        struct worker *w = arg;
        const struct chp_listener_spec lis[] = {{w->listen_fd, &native_ops, NULL},
                                                {w->http_fd, &http_ops, w->tus}};
        int rc = chp_loop_create(w->sh, lis, 2, &w->loop);
        pthread_mutex_lock(w->lock);
        w->rc = rc;
        (*w->reported)++;
        pthread_cond_broadcast(w->cond);
        pthread_mutex_unlock(w->lock);
        if (rc)
                return NULL;
        w->rc = chp_loop_run(w->loop);
        if (w->rc)
                *w->sh->stop = 1; /* a loop that died takes the relay down, ready file and all */
        return NULL;
}

static void barrier_done(struct conn_op *op)
{
        atomic_fetch_sub(((struct barrier *)op)->pending, 1);
}

static void restart_needed(void *ctx, const char *key)
{
        (void)ctx;
        chp_log_warn("relay", "SIGHUP: '%s' differs from the running relay's; it takes a restart "
                              "(keeping the running value)",
                     key);
}

static void free_snapshot(struct chp_config *c)
{
        chp_config_free(c);
        free(c);
}

/* Reads the configuration again and applies what can be applied to the running relay; on any
 * error logs it and keeps the running configuration. Main thread. */
static void reload(struct reload *r, struct chp_shared *sh, struct worker *workers, unsigned n)
{
        if (atomic_load(&r->pending)) {
                r->wanted = true; /* the last snapshot still retiring: after its barriers */
                return;
        }
        r->wanted = false;
        free_snapshot(r->retiring);
        r->retiring = NULL;
        const struct chp_config *running = sh->cfg;
        const char *file = r->src->file ? r->src->file : "the command line (no --config)";
        char err[CHP_CONFIG_ERR_MAX] = "";
        struct chp_config *next = calloc(1, sizeof(*next));
        int rc = next ? r->src->load(r->src->ctx, next, err) : -ENOMEM;
        if (!rc)
                rc = chp_config_keep_restart_settings(next, running, restart_needed, NULL);
        if (!rc) /* a listener kept from running may need the tenants or --open next dropped */
                rc = chp_config_check_access(next, err);
        if (!rc)
                rc = chp_peers_update(sh->peers, next, err, sizeof(err));
        if (rc) {
                chp_log_error("relay", "SIGHUP: %s; keeping the running configuration",
                              err[0] ? err : chp_strerror(rc));
                free_snapshot(next);
                return;
        }
        char was[160], now[160];
        const char *access = chp_config_describe_access(next, now, sizeof(now));
        bool access_changed = strcmp(chp_config_describe_access(running, was, sizeof(was)), access);
        sh->cfg = next; /* atomic: the loops' next callbacks see it */
        chp_log_set_level(next->log_level);
        chp_limits_configure(sh->limits, next);
        if (r->owned) {
                r->retiring = r->owned;
                atomic_store(&r->pending, n);
                for (unsigned i = 0; i < n; i++) {
                        struct barrier *b = &workers[i].barrier;
                        *b = (struct barrier){.op.done = barrier_done, .pending = &r->pending};
                        chp_loop_post(workers[i].loop, &b->op.req);
                }
        }
        r->owned = next;
        chp_log_info("relay", "SIGHUP: configuration reloaded from %s", file);
        if (access_changed)
                chp_log_info("relay", "SIGHUP: now %s", access);
}

/* Writes the ready file through a temporary name, so a reader never sees half of it. */
static int write_ready(const char *path, const char *host, uint16_t port, const char *hhost,
                       uint16_t hport, const uint8_t *pub, const char *admin)
{
        char hex[CHP_HASH_HEXBYTES];
        chp_hex_encode(pub, CHP_KEY_BYTES, hex);
        char tmp[4096];
        snprintf(tmp, sizeof(tmp), "%s.tmp", path);
        FILE *f = fopen(tmp, "w");
        if (!f)
                return -errno;
        bool v6 = strchr(host, ':') != NULL;
        fprintf(f, "native=%s%s%s:%u\n", v6 ? "[" : "", host, v6 ? "]" : "", port);
        if (hhost) {
                bool h6 = strchr(hhost, ':') != NULL;
                fprintf(f, "http=%s%s%s:%u\n", h6 ? "[" : "", hhost, h6 ? "]" : "", hport);
        }
        fprintf(f, "pubkey=%s\n", hex);
        if (admin[0]) /* the admin face's TCP address (admin.h) */
                fprintf(f, "admin=%s\n", admin);
        if (fclose(f) != 0 || rename(tmp, path) != 0) {
                int rc = -errno;
                unlink(tmp);
                return rc;
        }
        return 0;
}

static void listen_failed(const char *addr, const char *face, int rc)
{
        if (rc == -EADDRINUSE)
                chp_log_error("relay", "cannot listen on %s (%s): address in use by another "
                                       "process (is another chapard running?)",
                              addr, face);
        else
                chp_log_error("relay", "cannot listen on %s (%s): %s", addr, face,
                              chp_strerror(rc));
}

static void run_gc(struct chp_store *store)
{
        struct chp_gc_stats st;
        int rounds = 0, rc;
        do {
                rc = chp_store_gc(store, (uint64_t)time(NULL), &st);
                if (rc) {
                        chp_log_warn("relay", "gc: %s", chp_strerror(rc));
                        return;
                }
                if (st.files_expired || st.uploads_expired || st.segments_deleted ||
                    st.segments_compacted)
                        chp_log_info("relay",
                                     "gc: %llu files and %llu uploads expired, %llu chunks "
                                     "freed, %llu segments dropped, %llu compacted",
                                     (unsigned long long)st.files_expired,
                                     (unsigned long long)st.uploads_expired,
                                     (unsigned long long)st.chunks_freed,
                                     (unsigned long long)st.segments_deleted,
                                     (unsigned long long)st.segments_compacted);
        } while (st.more && ++rounds < 100);
}

/* The mark-and-sweep audit (chp_store_audit): reference drift repaired, orphan chunks freed. */
static void run_audit(struct chp_store *store)
{
        struct chp_audit_stats st;
        int rc = chp_store_audit(store, (uint64_t)time(NULL), &st);
        if (rc)
                chp_log_warn("relay", "audit: %s", chp_strerror(rc));
        else if (st.refs_fixed || st.dangling || st.chunks_freed || st.orphans)
                chp_log_info("relay",
                             "audit: %llu chunks checked, %llu reference counts fixed, %llu "
                             "dangling upload entries dropped, %llu chunks (%llu bytes) freed, "
                             "%llu unreferenced kept for now",
                             (unsigned long long)st.chunks, (unsigned long long)st.refs_fixed,
                             (unsigned long long)st.dangling, (unsigned long long)st.chunks_freed,
                             (unsigned long long)st.bytes_freed, (unsigned long long)st.orphans);
}

void chp_relay_block_signals(sigset_t *set)
{
        sigemptyset(set);
        sigaddset(set, SIGHUP);
        sigaddset(set, SIGUSR1); /* reopen the access log (logrotate) */
        sigaddset(set, SIGINT);
        sigaddset(set, SIGTERM);
        pthread_sigmask(SIG_BLOCK, set, NULL);
}

int chp_relay_run(const struct chp_config *cfg, const struct chp_relay_source *src,
                  atomic_int *stop)
{
        /* before any thread starts (the store's writer, the loops): they inherit the mask, and
         * the main thread takes these signals with sigtimedwait below */
        sigset_t sigs;
        chp_relay_block_signals(&sigs);
        char missing[256];
        int rc = chp_uring_probe(missing, sizeof(missing));
        if (rc) {
                chp_log_error("relay", "this kernel's io_uring lacks: %s", missing);
                return rc;
        }
        char host[256], hhost[256];
        uint16_t port, bound = 0, hport = 0, hbound = 0;
        bool http = strcmp(cfg->http, "off") != 0;
        if ((rc = chp_net_split_hostport(cfg->listen, host, sizeof(host), &port))) {
                chp_log_error("relay", "bad --listen address %s", cfg->listen);
                return rc;
        }
        if (http && (rc = chp_net_split_hostport(cfg->http, hhost, sizeof(hhost), &hport))) {
                chp_log_error("relay", "bad --http address %s", cfg->http);
                return rc;
        }

        struct chp_store *store = NULL;
        struct chp_identity identity = {0};
        bool ready_written = false;
        struct reload rl = {.src = src};
        struct worker *workers = calloc(cfg->threads, sizeof(*workers));
        /* lives as long as the loops: this call */
        struct chp_metrics metrics = {.start_time = (uint64_t)time(NULL)};
        struct chp_shared sh = {.cfg = cfg, .stop = stop, .metrics = &metrics};
        struct chp_tus_claims *tus = NULL;
        struct chp_gate *gate = NULL;
        struct chp_admin *admin = NULL;
        if (!workers)
                return -ENOMEM;
        if ((rc = chp_tus_claims_new(&tus)) ||
            (rc = chp_limits_new(CHP_LIMITS_ENTRIES, &sh.limits)))
                goto out;
        if ((rc = chp_gate_new(&gate)))
                goto out;
        sh.gate = gate;
        chp_limits_configure(sh.limits, cfg);
        if ((rc = chp_store_open(&cfg->store, &store))) {
                chp_log_error("relay", "cannot open the store in %s: %s", cfg->data_dir,
                              chp_strerror(rc));
                goto out;
        }
        sh.store = store;
        /* the tokens' charges, kept across restarts in the data directory */
        struct chp_gate_ledger_load led;
        if ((rc = chp_gate_persist(gate, cfg->data_dir, (uint64_t)time(NULL), &led))) {
                chp_log_error("relay", "cannot keep the token ledger in %s/ledger: %s",
                              cfg->data_dir, chp_strerror(rc));
                goto out;
        }
        if (led.dropped_bytes)
                chp_log_warn("relay",
                             "the token ledger %s/ledger ends in %llu bytes that are torn or "
                             "corrupt: ignored (charges recorded in them are forgotten)",
                             cfg->data_dir, (unsigned long long)led.dropped_bytes);
        chp_log_info("relay", "token ledger: %llu charges kept, %llu of expired tokens dropped",
                     (unsigned long long)led.records, (unsigned long long)led.expired);
        if (cfg->access_log && (rc = chp_alog_open(cfg->access_log, cfg->log_format, &sh.alog))) {
                chp_log_error("relay", "cannot open the access log %s: %s", cfg->access_log,
                              chp_strerror(rc));
                goto out;
        }
        char path[4096], err[CHP_IDENTITY_ERR_MAX];
        if (cfg->key_file) {
                rc = chp_identity_load(cfg->key_file, &identity, err);
        } else {
                snprintf(path, sizeof(path), "%s/relay.key", cfg->data_dir);
                rc = chp_identity_load_or_create(path, &identity, err);
        }
        if (rc) {
                chp_log_error("relay", "%s", err);
                goto out;
        }
        sh.identity = &identity;
        sh.peer_dir = &chp_peers_directory;
        /* chosen before the first socket; a refusal is a warning, never a failure to start */
        struct chp_congestion cc;
        chp_congestion_choose(cfg->congestion_control, &cc);
        sh.congestion = &cc;
        if ((rc = chp_peers_start(&sh, &sh.peers)))
                goto out;
        pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
        pthread_cond_t cond = PTHREAD_COND_INITIALIZER;
        unsigned reported = 0, started = 0;
        for (unsigned i = 0; i < cfg->threads; i++) {
                struct worker *w = &workers[i];
                *w = (struct worker){.sh = &sh,
                                     .lock = &lock,
                                     .cond = &cond,
                                     .reported = &reported,
                                     .http_fd = -1,
                                     .tus = tus};
                /* the first listener picks the port (port 0 = any) and holds the address
                 * against other processes; the others share it */
                if ((rc = chp_net_listen(host, i ? bound : port, i == 0, &w->listen_fd, &bound))) {
                        listen_failed(cfg->listen, "native", rc);
                        break;
                }
                chp_congestion_apply(&cc, w->listen_fd); /* accepted sockets inherit it */
                if (http &&
                    (rc = chp_net_listen(hhost, i ? hbound : hport, i == 0, &w->http_fd, &hbound))) {
                        listen_failed(cfg->http, "HTTP", rc);
                        close(w->listen_fd);
                        break;
                }
                if (http)
                        chp_congestion_apply(&cc, w->http_fd);
                if (pthread_create(&w->thread, NULL, worker_main, w) != 0) {
                        close(w->listen_fd);
                        if (w->http_fd >= 0)
                                close(w->http_fd);
                        rc = -EAGAIN;
                        break;
                }
                w->started = true;
                started++;
        }
        pthread_mutex_lock(&lock);
        while (reported < started)
                pthread_cond_wait(&cond, &lock);
        pthread_mutex_unlock(&lock);
        for (unsigned i = 0; !rc && i < started; i++)
                rc = workers[i].rc;
        if (rc) {
                *stop = 1;
                goto out;
        }
        chp_log_info("relay",
                     "listening on %s:%u (native), %u threads, data in %s, sync %s, TCP congestion "
                     "control %s%s",
                     host, bound, cfg->threads, cfg->data_dir,
                     cfg->sync == CHP_SYNC_FULL ? "full" : "none", cc.running[0] ? cc.running : "?",
                     cc.set ? "" : " (the system's default)");
        if (http)
                chp_log_info("relay", "HTTP face (tus, downloads, /metrics) on %s:%u", hhost,
                             hbound);
        char access[160];
        chp_log_info("relay", "%s", chp_config_describe_access(cfg, access, sizeof(access)));
        char pubhex[2 * CHP_KEY_BYTES + 1];
        chp_hex_encode(identity.pub, CHP_KEY_BYTES, pubhex);
        /* what clients pin and peers name: an operator reads it here (journalctl -u chapard) */
        chp_log_info("relay", "relay public key %s", pubhex);
        char admin_addr[CHP_NET_HOST_MAX + 8], admin_err[CHP_ADMIN_ERR_MAX];
        if ((rc = chp_admin_start(&sh, cfg, &admin, admin_addr, sizeof(admin_addr), admin_err))) {
                chp_log_error("relay", "admin face: %s",
                              admin_err[0] ? admin_err : chp_strerror(rc));
                *stop = 1;
                goto out;
        }
        chp_log_info("relay", "admin face on %s/%s%s%s", cfg->data_dir, CHP_ADMIN_SOCKET,
                     admin_addr[0] ? " and " : "", admin_addr);
        if (cfg->ready_file && (rc = write_ready(cfg->ready_file, host, bound, http ? hhost : NULL,
                                                 hbound, identity.pub, admin_addr))) {
                chp_log_error("relay", "cannot write the ready file %s: %s", cfg->ready_file,
                              chp_strerror(rc));
                *stop = 1;
                goto out;
        }
        ready_written = cfg->ready_file != NULL;
        if ((rc = chp_notify("READY=1"))) /* systemd's Type=notify; without it, nothing */
                chp_log_warn("relay", "cannot tell $NOTIFY_SOCKET the relay is ready: %s",
                             chp_strerror(rc));
        rc = 0;

        time_t last_gc = time(NULL), last_audit = last_gc;
        while (!*stop) {
                struct timespec ts = {.tv_sec = 0, .tv_nsec = WAIT_MS * 1000000L};
                int sig = sigtimedwait(&sigs, NULL, &ts);
                if (sig == SIGINT || sig == SIGTERM) {
                        chp_log_info("relay", "%s: stopping", sig == SIGINT ? "SIGINT" : "SIGTERM");
                        *stop = 1;
                        break;
                }
                if (rl.retiring && !atomic_load(&rl.pending)) {
                        free_snapshot(rl.retiring); /* every loop is past it */
                        rl.retiring = NULL;
                }
                if (sig == SIGHUP || sig == SIGUSR1)
                        chp_alog_reopen(sh.alog); /* after logrotate's rename */
                if (sig == SIGHUP || (rl.wanted && !atomic_load(&rl.pending)))
                        reload(&rl, &sh, workers, started);
                if (time(NULL) - last_gc >= GC_INTERVAL_S) {
                        run_gc(store);
                        int erc = chp_gate_expire(gate, (uint64_t)time(NULL));
                        if (erc)
                                chp_log_warn("relay", "compacting the token ledger: %s",
                                             chp_strerror(erc));
                        last_gc = time(NULL);
                }
                if (cfg->audit_interval && time(NULL) - last_audit >= cfg->audit_interval) {
                        run_audit(store);
                        last_audit = time(NULL);
                }
        }
        chp_log_info("relay", "stopping: finishing work in flight");
out:
        *stop = 1;
        for (unsigned i = 0; i < cfg->threads; i++) {
                if (workers[i].started) {
                        pthread_join(workers[i].thread, NULL);
                        if (workers[i].rc && !rc)
                                rc = workers[i].rc;
                }
        }
        /* the admin face and federation workers use the store: they stop first */
        chp_admin_stop(admin);
        chp_peers_stop(sh.peers);
        /* the writer drains here; its last completions land in the loops' queues */
        chp_store_close(store);
        for (unsigned i = 0; i < cfg->threads; i++)
                chp_loop_destroy(workers[i].loop); /* NULL for a worker that failed to start */
        free(workers);
        free_snapshot(rl.retiring); /* the loops are gone: no barrier is pending any more */
        free_snapshot(rl.owned);
        chp_alog_close(sh.alog); /* the loops are gone: every line is queued */
        chp_tus_claims_free(tus);
        chp_gate_free(gate); /* after the loops: closing connections give their slots back */
        chp_limits_free(sh.limits);
        chp_identity_wipe(&identity);
        /* only our own: a relay that failed to start leaves another's ready file alone */
        if (ready_written)
                unlink(cfg->ready_file);
        if (!rc)
                chp_log_info("relay", "stopped");
        return rc;
}
