/* log.h — a small leveled logger writing one line per call to stderr.
 *
 * Lines look like "2026-11-29T05:40:01.123Z warn store: message". Any thread may log; each line
 * is written with a single write(2) so lines from different threads do not interleave. The level
 * is set at start-up and again by a reload (SIGHUP), from any thread (it is atomic); it is the
 * process's one piece of logging state.
 */
#ifndef CHP_LOG_H
#define CHP_LOG_H

enum chp_log_level { CHP_LOG_ERROR = 0, CHP_LOG_WARN, CHP_LOG_INFO, CHP_LOG_DEBUG };

void chp_log_set_level(enum chp_log_level level);
enum chp_log_level chp_log_get_level(void);
/* Parses "error", "warn", "info" or "debug"; returns 0 or -EINVAL. */
int chp_log_parse_level(const char *name, enum chp_log_level *level /* out */);

void chp_log(enum chp_log_level level, const char *module, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define chp_log_error(mod, ...) chp_log(CHP_LOG_ERROR, mod, __VA_ARGS__)
#define chp_log_warn(mod, ...)  chp_log(CHP_LOG_WARN, mod, __VA_ARGS__)
#define chp_log_info(mod, ...)  chp_log(CHP_LOG_INFO, mod, __VA_ARGS__)
#define chp_log_debug(mod, ...) chp_log(CHP_LOG_DEBUG, mod, __VA_ARGS__)

#endif
