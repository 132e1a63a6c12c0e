/* log.h — a small leveled logger writing one line per call to stderr.
 *
 * Lines look like "2026-11-29T05:40:01.123Z warn store: message", or in the JSON format
 * {"time":"2026-11-29T05:40:01.123Z","level":"warn","module":"store","msg":"message"}. Any thread
 * may log; each line is written with a single write(2) so lines from different threads do not
 * interleave. The level is set at start-up and again by a reload (SIGHUP), from any thread (it
 * is atomic); the format at start-up. They are the process's one piece of logging state.
 */
#ifndef CHP_LOG_H
#define CHP_LOG_H

#include <stddef.h>

enum chp_log_level { CHP_LOG_ERROR = 0, CHP_LOG_WARN, CHP_LOG_INFO, CHP_LOG_DEBUG };

/* How log lines are written: the access log's two formats (server/net/accesslog.h); the error
 * log keeps its classic line for logfmt and writes JSON objects for json. */
enum chp_log_format { CHP_LOG_LOGFMT = 0, CHP_LOG_JSON };

/* Parses "logfmt" or "json"; returns 0 or -EINVAL. */
int chp_log_parse_format(const char *name, enum chp_log_format *format /* out */);
void chp_log_set_format(enum chp_log_format format);
/* JSON string escaping of len bytes of s (quotes not included) into out[cap]: '"', '\\' and
 * every byte outside printable ASCII escaped (\n, \uXXXX), so that no value can end a line or
 * a string early. Returns the length written (NUL-terminated, cut short at a whole escape when
 * out is too small). */
size_t chp_log_json_escape(const char *s, size_t len, char *out, size_t cap);

void chp_log_set_level(enum chp_log_level level);
enum chp_log_level chp_log_get_level(void);
/* Parses "error", "warn", "info" or "debug"; returns 0 or -EINVAL. */
int chp_log_parse_level(const char *name, enum chp_log_level *level /* out */);

/* The current time as the logs write it, UTC to the millisecond: 2026-01-01T00:00:00.000Z. */
#define CHP_LOG_TIME_MAX 64 /* room for any year the compiler can imagine */
void chp_log_time(char out[CHP_LOG_TIME_MAX]);

void chp_log(enum chp_log_level level, const char *module, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define chp_log_error(mod, ...) chp_log(CHP_LOG_ERROR, mod, __VA_ARGS__)
#define chp_log_warn(mod, ...)  chp_log(CHP_LOG_WARN, mod, __VA_ARGS__)
#define chp_log_info(mod, ...)  chp_log(CHP_LOG_INFO, mod, __VA_ARGS__)
#define chp_log_debug(mod, ...) chp_log(CHP_LOG_DEBUG, mod, __VA_ARGS__)

#endif
