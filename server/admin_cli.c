/* admin_cli.c — chapard admin and admin-key (admin_cli.h): one HTTP/1.1 request per step to the
 * admin face, over its Unix socket or TCP with the operator key.
 */
#include "admin_cli.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#include "admin.h"
#include "err.h"
#include "hash.h"
#include "net.h"

#define REPLY_MAX (64u << 20) /* the most a reply may hold: a page of CHP_LIST_MAX is far less */

struct target {
        const char *data;  /* the data directory: its admin.sock */
        const char *admin; /* or HOST:PORT */
        char auth[2 * CHP_ADMIN_KEY_BYTES + 1];
};

struct reply {
        int status;
        char *body; /* NUL-terminated; caller frees */
        size_t len;
};

static int usage(void)
{
        fprintf(
            stderr,
            "usage: chapard admin [--data DIR | --admin HOST:PORT --key FILE] [--json] COMMAND\n"
            "  list [--tenant T] [--limit N] [--cursor C] [--uploads] [--all]\n"
            "  stats | delete FILE-ID | quarantine FILE-ID | unquarantine FILE-ID\n"
            "  quarantined | verify [--rate BYTES-PER-S] | status\n"
            "       chapard admin-key --out FILE\n");
        return 2;
}

static int connect_to(const struct target *t)
{
        if (t->admin) {
                char host[CHP_NET_HOST_MAX], port[8];
                uint16_t p;
                if (chp_net_split_hostport(t->admin, host, sizeof(host), &p) != 0)
                        return -EINVAL;
                snprintf(port, sizeof(port), "%u", p);
                struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res = NULL;
                if (getaddrinfo(host, port, &hints, &res) != 0)
                        return -EADDRNOTAVAIL;
                int rc = -ECONNREFUSED;
                for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
                        int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
                        if (fd < 0)
                                continue;
                        if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0) {
                                freeaddrinfo(res);
                                return fd;
                        }
                        rc = -errno;
                        close(fd);
                }
                freeaddrinfo(res);
                return rc;
        }
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        int w = snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/%s", t->data, CHP_ADMIN_SOCKET);
        if (w < 0 || (size_t)w >= sizeof(sa.sun_path))
                return -ENAMETOOLONG;
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return -errno;
        if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
                int rc = -errno;
                close(fd);
                return rc;
        }
        return fd;
}

/* Sends one request, reads the whole reply (the face closes after it). */
static int call(const struct target *t, const char *method, const char *target, struct reply *r)
{
        memset(r, 0, sizeof(*r));
        int fd = connect_to(t);
        if (fd < 0) {
                fprintf(stderr, "chapard admin: cannot reach the admin face at %s%s: %s\n",
                        t->admin ? t->admin : t->data, t->admin ? "" : "/" CHP_ADMIN_SOCKET,
                        chp_strerror(fd));
                return fd;
        }
        char req[1024];
        int n = snprintf(req, sizeof(req),
                         "%s %s HTTP/1.1\r\nHost: chapard-admin\r\n%s%s%s"
                         "Connection: close\r\n\r\n",
                         method, target, t->admin ? "Authorization: Bearer " : "",
                         t->admin ? t->auth : "", t->admin ? "\r\n" : "");
        int rc = 0;
        if (n < 0 || (size_t)n >= sizeof(req) || send(fd, req, (size_t)n, MSG_NOSIGNAL) != n)
                rc = -EIO;
        sodium_memzero(req, sizeof(req));
        size_t cap = 0, len = 0;
        char *buf = NULL;
        while (!rc) {
                if (len + 4096 + 1 > cap) {
                        cap = cap ? cap * 2 : 16384;
                        char *nb = cap > REPLY_MAX ? NULL : realloc(buf, cap);
                        if (!nb) {
                                rc = -ENOMEM;
                                break;
                        }
                        buf = nb;
                }
                ssize_t rd = recv(fd, buf + len, cap - len - 1, 0);
                if (rd < 0)
                        rc = -errno;
                if (rd <= 0)
                        break;
                len += (size_t)rd;
        }
        close(fd);
        char *body = NULL;
        if (!rc && buf) {
                buf[len] = '\0';
                body = strstr(buf, "\r\n\r\n");
                if (sscanf(buf, "HTTP/1.%*d %d", &r->status) != 1 || !body)
                        rc = -EPROTO;
        } else if (!rc) {
                rc = -EPROTO;
        }
        if (rc) {
                fprintf(stderr, "chapard admin: no answer from the admin face: %s\n",
                        chp_strerror(rc));
                free(buf);
                return rc;
        }
        body += 4;
        r->len = len - (size_t)(body - buf);
        memmove(buf, body, r->len + 1);
        r->body = buf;
        return 0;
}

/* Prints a reply: a success's body on stdout, a refusal's on stderr. Returns the exit status. */
static int show(const struct reply *r)
{
        bool ok = r->status >= 200 && r->status < 300;
        fwrite(r->body, 1, r->len, ok ? stdout : stderr);
        return ok ? 0 : r->status == 401 || r->status >= 500 ? 2 : 1;
}

static int once(const struct target *t, const char *method, const char *target)
{
        struct reply r;
        if (call(t, method, target, &r))
                return 2;
        int rc = show(&r);
        free(r.body);
        return rc;
}

/* Appends "&name=value" with value percent-encoded (tenant names are plain, but be safe). */
static void add_param(char *q, size_t cap, const char *name, const char *value)
{
        size_t n = strlen(q);
        n += (size_t)snprintf(q + n, n < cap ? cap - n : 0, "&%s=", name);
        for (const unsigned char *p = (const unsigned char *)value; *p && n + 4 < cap; p++) {
                if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
                    (*p >= '0' && *p <= '9') || *p == '-' || *p == '_' || *p == '.')
                        q[n++] = (char)*p;
                else
                        n += (size_t)snprintf(q + n, cap - n, "%%%02X", *p);
        }
        q[n < cap ? n : cap - 1] = '\0';
}

static int cmd_list(const struct target *t, bool json, int argc, char **argv)
{
        const char *tenant = NULL, *limit = NULL, *cursor = NULL;
        bool uploads = false, all = false;
        for (int i = 0; i < argc; i++) {
                if (strcmp(argv[i], "--tenant") == 0 && i + 1 < argc)
                        tenant = argv[++i];
                else if (strcmp(argv[i], "--limit") == 0 && i + 1 < argc)
                        limit = argv[++i];
                else if (strcmp(argv[i], "--cursor") == 0 && i + 1 < argc)
                        cursor = argv[++i];
                else if (strcmp(argv[i], "--uploads") == 0)
                        uploads = true;
                else if (strcmp(argv[i], "--all") == 0)
                        all = true;
                else
                        return usage();
        }
        char next[2 * 40 + 1] = "";
        if (cursor)
                snprintf(next, sizeof(next), "%s", cursor);
        for (;;) {
                char q[1024];
                snprintf(q, sizeof(q), "/%s?format=%s", uploads ? "uploads" : "files",
                         json ? "json" : "text");
                if (tenant)
                        add_param(q, sizeof(q), "tenant", tenant);
                if (limit)
                        add_param(q, sizeof(q), "limit", limit);
                if (next[0])
                        add_param(q, sizeof(q), "cursor", next);
                struct reply r;
                if (call(t, "GET", q, &r))
                        return 2;
                if (r.status != 200 || !all) {
                        int rc = show(&r);
                        free(r.body);
                        return rc;
                }
                /* --all: print the page, follow its cursor */
                const char *mark = json ? "\"next\":\"" : "more: --cursor ";
                char *m = strstr(r.body, mark);
                next[0] = '\0';
                if (m) {
                        snprintf(next, sizeof(next), "%.80s", m + strlen(mark));
                        if (!json)
                                *m = '\0'; /* the line that says there is more */
                }
                fputs(r.body, stdout);
                free(r.body);
                if (!m)
                        return 0;
        }
}

/* The number after "key": in a JSON reply (0 when absent). */
static unsigned long long json_num(const char *body, const char *key)
{
        char k[64];
        snprintf(k, sizeof(k), "\"%s\":", key);
        const char *p = strstr(body, k);
        return p ? strtoull(p + strlen(k), NULL, 10) : 0;
}

static int cmd_verify(const struct target *t, bool json, int argc, char **argv)
{
        char q[128] = "/verify?format=json";
        for (int i = 0; i < argc; i++) {
                if (strcmp(argv[i], "--rate") == 0 && i + 1 < argc)
                        add_param(q, sizeof(q), "rate", argv[++i]);
                else
                        return usage();
        }
        struct reply r;
        if (call(t, "POST", q, &r))
                return 2;
        if (r.status != 202) {
                int rc = show(&r);
                free(r.body);
                return rc;
        }
        free(r.body);
        unsigned long long last = 0;
        for (;;) {
                if (call(t, "GET", "/verify?format=json", &r))
                        return 2;
                bool running = strstr(r.body, "\"state\":\"running\"") != NULL;
                unsigned long long done = json_num(r.body, "chunks"),
                                   total = json_num(r.body, "total");
                free(r.body);
                if (!running)
                        break;
                if (!json && isatty(STDERR_FILENO) && done != last)
                        fprintf(stderr, "\rverify: %llu of %llu chunks", done, total);
                last = done;
                struct timespec ts = {0, 200 * 1000000L}; /* a poll of progress, not a sync */
                nanosleep(&ts, NULL);
        }
        if (!json && isatty(STDERR_FILENO))
                fputc('\n', stderr);
        if (call(t, "GET", "/verify?format=json", &r))
                return 2;
        unsigned long long problems = json_num(r.body, "problems");
        bool failed = strstr(r.body, "\"error\":null") == NULL;
        if (!json) {
                free(r.body);
                if (call(t, "GET", "/verify?format=text", &r))
                        return 2;
        }
        int rc = show(&r);
        free(r.body);
        return rc ? rc : failed ? 2 : problems ? 1 : 0;
}

int chp_admin_cli(int argc, char **argv)
{
        struct target t = {.data = "./data"};
        const char *key = NULL;
        bool json = false;
        int i = 0;
        for (; i < argc && argv[i][0] == '-'; i++) {
                if (strcmp(argv[i], "--data") == 0 && i + 1 < argc)
                        t.data = argv[++i];
                else if (strcmp(argv[i], "--admin") == 0 && i + 1 < argc)
                        t.admin = argv[++i];
                else if (strcmp(argv[i], "--key") == 0 && i + 1 < argc)
                        key = argv[++i];
                else if (strcmp(argv[i], "--json") == 0)
                        json = true;
                else
                        return usage();
        }
        if (i >= argc || (t.admin && !key) || (key && !t.admin))
                return usage();
        if (key) {
                uint8_t k[CHP_ADMIN_KEY_BYTES];
                char err[CHP_ADMIN_ERR_MAX];
                if (chp_admin_key_load(key, k, err)) {
                        fprintf(stderr, "chapard admin: %s\n", err);
                        return 2;
                }
                chp_hex_encode(k, sizeof(k), t.auth);
                sodium_memzero(k, sizeof(k));
        }
        const char *cmd = argv[i++];
        int rest = argc - i;
        char **args = argv + i;
        char target[256];
        const char *fmt = json ? "json" : "text";
        int rc;
        if (strcmp(cmd, "list") == 0) {
                rc = cmd_list(&t, json, rest, args);
        } else if (strcmp(cmd, "verify") == 0) {
                rc = cmd_verify(&t, json, rest, args);
        } else if ((strcmp(cmd, "stats") == 0 || strcmp(cmd, "status") == 0 ||
                    strcmp(cmd, "quarantined") == 0) &&
                   rest == 0) {
                snprintf(target, sizeof(target), "/%s?format=%s",
                         strcmp(cmd, "quarantined") == 0 ? "quarantine" : cmd,
                         strcmp(cmd, "status") == 0 ? "json" : fmt);
                rc = once(&t, "GET", target);
        } else if ((strcmp(cmd, "delete") == 0 || strcmp(cmd, "quarantine") == 0 ||
                    strcmp(cmd, "unquarantine") == 0) &&
                   rest == 1 && strlen(args[0]) == 2 * CHP_HASH_BYTES &&
                   strspn(args[0], "0123456789abcdefABCDEF") == 2 * CHP_HASH_BYTES) {
                bool del = strcmp(cmd, "delete") == 0;
                snprintf(target, sizeof(target), "/%s/%s?format=%s", del ? "files" : "quarantine",
                         args[0], fmt);
                rc = once(&t, strcmp(cmd, "quarantine") == 0 ? "PUT" : "DELETE", target);
        } else {
                if (rest == 1 && strcmp(cmd, "list") != 0)
                        fprintf(stderr, "chapard admin: a FILE-ID is 64 hex digits\n");
                rc = usage();
        }
        sodium_memzero(t.auth, sizeof(t.auth));
        return rc;
}

int chp_admin_cli_key(int argc, char **argv)
{
        if (argc != 2 || strcmp(argv[0], "--out") != 0)
                return usage();
        uint8_t k[CHP_ADMIN_KEY_BYTES];
        char hex[2 * CHP_ADMIN_KEY_BYTES + 2];
        randombytes_buf(k, sizeof(k));
        chp_hex_encode(k, sizeof(k), hex);
        sodium_memzero(k, sizeof(k));
        size_t n = strlen(hex);
        hex[n++] = '\n';
        int fd = open(argv[1], O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        int rc = fd < 0 ? -errno : 0;
        if (!rc && write(fd, hex, n) != (ssize_t)n)
                rc = -EIO;
        if (fd >= 0 && close(fd) != 0 && !rc)
                rc = -errno;
        sodium_memzero(hex, sizeof(hex));
        if (rc) {
                fprintf(stderr, "chapard admin-key: cannot write %s: %s%s\n", argv[1],
                        chp_strerror(rc), rc == -EEXIST ? " (never overwritten)" : "");
                if (fd >= 0)
                        unlink(argv[1]);
                return 1;
        }
        printf("admin_key = %s\n", argv[1]);
        return 0;
}
