#include "log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* atomic: a reload (SIGHUP) sets it on the main thread while every thread logs */
static _Atomic(enum chp_log_level) current_level = CHP_LOG_INFO;
static _Atomic(enum chp_log_format) current_format = CHP_LOG_LOGFMT;
static const char *const level_names[] = {"error", "warn", "info", "debug"};

int chp_log_parse_format(const char *name, enum chp_log_format *format)
{
        if (strcmp(name, "logfmt") == 0)
                *format = CHP_LOG_LOGFMT;
        else if (strcmp(name, "json") == 0)
                *format = CHP_LOG_JSON;
        else
                return -EINVAL;
        return 0;
}

void chp_log_set_format(enum chp_log_format format)
{
        current_format = format;
}

size_t chp_log_json_escape(const char *s, size_t len, char *out, size_t cap)
{
        static const char hex[] = "0123456789abcdef";
        size_t o = 0;
        if (!cap)
                return 0;
        for (size_t i = 0; i < len; i++) {
                unsigned char ch = (unsigned char)s[i];
                char esc[7];
                size_t n;
                if (ch == '"' || ch == '\\') {
                        esc[0] = '\\', esc[1] = (char)ch, n = 2;
                } else if (ch == '\n') {
                        esc[0] = '\\', esc[1] = 'n', n = 2;
                } else if (ch < 0x20 || ch >= 0x7f) {
                        /* bytes, not characters: a value may be any bytes, and the line must
                         * stay valid JSON (UTF-8) whatever they are */
                        memcpy(esc, "\\u00", 4);
                        esc[4] = hex[ch >> 4], esc[5] = hex[ch & 15], n = 6;
                } else {
                        esc[0] = (char)ch, n = 1;
                }
                if (o + n >= cap)
                        break;
                memcpy(out + o, esc, n);
                o += n;
        }
        out[o] = '\0';
        return o;
}

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

void chp_log_time(char out[CHP_LOG_TIME_MAX])
{
        struct timespec ts;
        struct tm tm;
        clock_gettime(CLOCK_REALTIME, &ts);
        gmtime_r(&ts.tv_sec, &tm);
        snprintf(out, CHP_LOG_TIME_MAX, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900,
                 tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000);
}

void chp_log(enum chp_log_level level, const char *module, const char *fmt, ...)
{
        if (level > current_level)
                return;
        char line[1024];
        char when[CHP_LOG_TIME_MAX];
        chp_log_time(when);
        char msg[768];
        va_list ap;
        va_start(ap, fmt);
        int m = vsnprintf(msg, sizeof(msg), fmt, ap);
        va_end(ap);
        if (m < 0)
                msg[0] = '\0';
        int n;
        if (current_format == CHP_LOG_JSON) {
                char esc[sizeof(line)];
                chp_log_json_escape(msg, strlen(msg), esc, sizeof(esc) - 64);
                n = snprintf(line, sizeof(line),
                             "{\"time\":\"%s\",\"level\":\"%s\",\"module\":\"%s\",\"msg\":\"%s\"}",
                             when, level_names[level], module, esc);
        } else {
                n = snprintf(line, sizeof(line), "%s %s %s: %s", when, level_names[level], module,
                             msg);
        }
        if (n < 0)
                return;
        size_t used = (size_t)n < sizeof(line) - 1 ? (size_t)n : sizeof(line) - 2;
        line[used++] = '\n';
        ssize_t w = write(STDERR_FILENO, line, used);
        (void)w; /* nothing sensible to do when stderr is gone */
}
