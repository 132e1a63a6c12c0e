/* accesslog.h — the access log: one line per request (HTTP), per native request that does work,
 * and per native connection (its chunk traffic summed), in logfmt or JSON (docs/operations.md,
 * "Logs").
 *
 * Loop threads format a line on their own stack and copy it whole into a buffer under a mutex
 * held only for that copy; a writer thread of the log's own swaps the buffer out and writes it
 * (O_APPEND, whole lines) at most every 50 ms or 64 KiB, so a loop thread never waits for the
 * disk and a busy relay pays one write(2) per batch, not per line. When the disk falls a
 * buffer behind, lines are dropped and counted (chp_alog_dropped), never half written. The log is
 * made and closed by the relay (owner); chp_alog_write and chp_alog_reopen may be called from any
 * thread. Errors: -errno from opening the file, -ENOMEM.
 */
#ifndef CHP_ACCESSLOG_H
#define CHP_ACCESSLOG_H

#include <stddef.h>
#include <stdint.h>

#include "log.h"

#define CHP_ALOG_LINE_MAX 12288 /* the longest line: every value at its cap, all escaped */
#define CHP_ALOG_ADDR_MAX 56    /* "[v6 address]:port" and its NUL */

struct chp_alog;

/* Opens path for appending (created 0640; "-": stderr) and starts the writer thread. */
__attribute__((warn_unused_result)) int chp_alog_open(const char *path, enum chp_log_format fmt,
                                                      struct chp_alog **out /* out */);
/* Writes what is buffered, stops the writer and closes the file. NULL is a no-op. */
void chp_alog_close(struct chp_alog *a);
/* Asks the writer to write what is buffered to the file it has open, then open path afresh
 * (logrotate renamed it). Returns at once; a failure to open keeps the old file and is logged. */
void chp_alog_reopen(struct chp_alog *a);
/* Lines dropped because the writer was a whole buffer behind, or the file could not be written. */
uint64_t chp_alog_dropped(const struct chp_alog *a);

/* One line. Strings are borrowed for the call; NULL (or len 0) is an unknown value, written
 * empty. Free-text values (path, name, agent) may hold any bytes: they are escaped. */
struct chp_alog_entry {
        const char *face;   /* "http", "native" or "peer" */
        const char *addr;   /* the client's address and port */
        const char *tenant; /* the caller's token's, when it showed one */
        const char *subject;
        const char *method; /* HTTP method, or native frame name ("OPEN", "SESSION") */
        const char *path;   /* HTTP request target */
        size_t path_len;
        const char *id;   /* file id or upload id, hex */
        const char *name; /* the file name a tus upload declared (Upload-Metadata filename) */
        size_t name_len;
        const char *agent; /* User-Agent */
        size_t agent_len;
        uint64_t bytes_in, bytes_out;
        const char *status; /* HTTP status ("201"), native "ok" or the wire error code ("4") */
        uint64_t duration_us;
        uint64_t chunks_in, chunks_out; /* SESSION lines: CHUNK frames received, sent */
};

/* Formats e and queues the line (a no-op when a is NULL). Any thread. */
void chp_alog_write(struct chp_alog *a, const struct chp_alog_entry *e);

/* The address of a connected socket as "1.2.3.4:5" or "[::1]:5" into out
 * (CHP_ALOG_ADDR_MAX); "" when it has none. */
void chp_alog_peer_addr(int fd, char out[CHP_ALOG_ADDR_MAX]);

#endif
