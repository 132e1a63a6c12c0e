#include "log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* atomic: a reload (SIGHUP) sets it on the main thread while every thread logs */
static _Atomic(enum chp_log_level) current_level = CHP_LOG_INFO;
static const char *const level_names[] = {"error", "warn", "info", "debug"};

void chp_log_set_level(enum chp_log_level level)
{
        current_level = level;
}

enum chp_log_level chp_log_get_level(void)
{
        return current_level;
}

int chp_log_parse_level(const char *name, enum chp_log_level *level)
{
        for (int i = 0; i <= CHP_LOG_DEBUG; i++) {
                if (strcmp(name, level_names[i]) == 0) {
                        *level = (enum chp_log_level)i;
                        return 0;
                }
        }
        return -EINVAL;
}

void chp_log(enum chp_log_level level, const char *module, const char *fmt, ...)
{
        if (level > current_level)
                return;
        char line[1024];
        struct timespec ts;
        struct tm tm;
        clock_gettime(CLOCK_REALTIME, &ts);
        gmtime_r(&ts.tv_sec, &tm);
        int n = snprintf(line, sizeof(line),
                         "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %s %s: ", tm.tm_year + 1900,
                         tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                         ts.tv_nsec / 1000000, level_names[level], module);
        if (n < 0)
                return;
        size_t used = (size_t)n < sizeof(line) ? (size_t)n : sizeof(line) - 1;
        va_list ap;
        va_start(ap, fmt);
        int m = vsnprintf(line + used, sizeof(line) - used, fmt, ap);
        va_end(ap);
        if (m > 0)
                used += (size_t)m < sizeof(line) - used ? (size_t)m : sizeof(line) - used - 1;
        if (used >= sizeof(line) - 1)
                used = sizeof(line) - 2;
        line[used++] = '\n';
        ssize_t w = write(STDERR_FILENO, line, used);
        (void)w; /* nothing sensible to do when stderr is gone */
}
