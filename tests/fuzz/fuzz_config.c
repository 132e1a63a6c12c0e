/* Fuzz target for chapard's configuration (server/conf/config.c and access.c, included for their
 * static parsers and rules): the INI file through libinih and our line reader into struct
 * chp_config, then flags over it, then the cross-field rules (the no-tenant rule among them).
 *
 * The input up to its first NUL byte is the INI file (written to a memfd and read through
 * /proc/self/fd, as chp_config_load_file takes a path); the rest, split at NUL bytes, is argv for
 * chp_config_parse_args. Each step answers 0, -EINVAL or -ENOMEM, with a NUL-terminated message
 * exactly when it fails; a config that passes chp_config_finish keeps every documented bound (each
 * tenant named once, with 1..8 distinct usable keys and limits of at least 1); and
 * chp_config_free leaves nothing behind (LeakSanitizer). Every line of the file and every argument
 * also goes through each value parser: parse_scaled for each kind against a slow reference,
 * parse_bool, and chp_net_split_hostport, whose result must format back to an address that
 * splits the same. Anything else aborts. Linked with libFuzzer, or with replay.c to run the
 * committed corpus under ctest. */
#include "../../server/conf/config.c"
#include "../../server/conf/access.c" /* only_loopback */

#include <sys/mman.h>
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_ARGS 64

/* parse_scaled, the slow obvious way. */
static int scaled_reference(const char *s, enum kind kind, uint64_t *out)
{
        size_t i = 0;
        uint64_t v = 0;
        bool overflow = false;
        for (; s[i] >= '0' && s[i] <= '9'; i++) {
                unsigned d = (unsigned)(s[i] - '0');
                if (v > (UINT64_MAX - d) / 10)
                        overflow = true;
                v = v * 10 + d;
        }
        if (i == 0)
                return -EINVAL;
        if (overflow)
                return -ERANGE;
        uint64_t mul = 1;
        const char *u = s + i;
        if (*u) {
                if (u[1])
                        return -EINVAL;
                if (kind == K_DURATION)
                        mul = *u == 's' ? 1 : *u == 'm' ? 60 : *u == 'h' ? 3600 : *u == 'd' ? 86400 : 0;
                else if (kind == K_SIZE || kind == K_INLINE)
                        mul = (*u | 0x20) == 'k'   ? 1ull << 10
                              : (*u | 0x20) == 'm' ? 1ull << 20
                              : (*u | 0x20) == 'g' ? 1ull << 30
                                                   : 0;
                else
                        mul = 0;
                if (mul == 0)
                        return -EINVAL;
        }
        if (v > UINT64_MAX / mul)
                return -ERANGE;
        *out = v * mul;
        return 0;
}

static void values(const char *s)
{
        static const enum kind kinds[] = {K_NUMBER, K_SIZE, K_DURATION, K_INLINE};
        for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++) {
                uint64_t got = 7, want = 7;
                int rc = parse_scaled(s, kinds[i], &got);
                EXPECT(rc == scaled_reference(s, kinds[i], &want));
                EXPECT(got == want);
        }
        bool b = false;
        int rc = parse_bool(s, &b);
        EXPECT(rc == 0 || rc == -EINVAL);

        char host[CHP_NET_HOST_MAX], again[CHP_NET_HOST_MAX];
        uint16_t port = 1, port2 = 1;
        rc = chp_net_split_hostport(s, host, sizeof(host), &port);
        EXPECT(rc == 0 || rc == -EINVAL);
        if (rc != 0) {
                EXPECT(port == 0 && host[0] == '\0');
        } else {
                size_t hlen = strlen(host);
                EXPECT(hlen > 0 && hlen < CHP_NET_HOST_MAX);
                char addr[CHP_NET_HOST_MAX + 16];
                bool v6 = strchr(host, ':') != NULL;
                snprintf(addr, sizeof(addr), v6 ? "[%s]:%u" : "%s:%u", host, port);
                EXPECT(chp_net_split_hostport(addr, again, sizeof(again), &port2) == 0);
                EXPECT(port2 == port && strcmp(again, host) == 0);
                /* a host that does not fit the caller's buffer is refused, not cut */
                EXPECT(chp_net_split_hostport(s, again, hlen, &port2) == -EINVAL);
                (void)chp_config_is_loopback(host);
        }
}

static void expect_result(int rc, const char *err)
{
        EXPECT(rc == 0 || rc == -EINVAL || rc == -ENOMEM);
        size_t n = strnlen(err, CHP_CONFIG_ERR_MAX);
        EXPECT(n < CHP_CONFIG_ERR_MAX);
        EXPECT((rc == 0) == (n == 0));
}

static void check_finished(const struct chp_config *c)
{
        EXPECT(c->data_dir && c->data_dir[0] && c->listen && c->http && c->cors_origins);
        EXPECT(c->threads >= 1 && c->threads <= MAX_THREADS);
        EXPECT(c->tus_chunk_size >= 64 * 1024 && c->tus_chunk_size <= 8 << 20 &&
               (c->tus_chunk_size & (c->tus_chunk_size - 1)) == 0);
        EXPECT(c->window_bytes >= MIN_WINDOW && c->memory_limit >= MIN_WINDOW);
        EXPECT(c->idle_timeout >= 1 && c->io_timeout >= 1 && c->max_inflight >= 1);
        EXPECT(c->upload_expiry >= 1 && c->file_expiry >= 1);
        EXPECT(c->tus_max_size >= 1 && c->tus_max_size <= (uint64_t)1 << 40);
        EXPECT(c->store.map_size >= MIN_MAP_SIZE && c->store.segment_size >= MIN_SEGMENT);
        EXPECT(c->store.compact_ratio >= 0 && c->store.compact_ratio <= 1);
        EXPECT(c->store.dir == c->data_dir && c->store.sync == c->sync);
        EXPECT(c->sync == CHP_SYNC_FULL || c->sync == CHP_SYNC_NONE);
        EXPECT(c->log_level >= CHP_LOG_ERROR && c->log_level <= CHP_LOG_DEBUG);
        EXPECT(c->npeers <= CHP_MAX_PEERS);
        char host[CHP_NET_HOST_MAX];
        uint16_t port;
        EXPECT(chp_net_split_hostport(c->listen, host, sizeof(host), &port) == 0);
        EXPECT(!c->insecure_plaintext || chp_config_is_loopback(host));
        for (unsigned i = 0; i < c->npeers; i++) {
                const struct chp_peer_config *p = &c->peers[i];
                EXPECT(p->name && valid_peer_name(p->name, strlen(p->name)));
                EXPECT(p->address && p->pubkey && p->pubkey[0]);
                EXPECT(chp_net_split_hostport(p->address, host, sizeof(host), &port) == 0);
                for (unsigned j = 0; j < i; j++)
                        EXPECT(strcmp(p->name, c->peers[j].name) != 0);
        }
        EXPECT(c->ntenants <= CHP_MAX_TENANTS && (c->ntenants == 0) == (c->tenants == NULL));
        for (unsigned i = 0; i < c->ntenants; i++) {
                const struct chp_tenant_config *t = &c->tenants[i];
                EXPECT(t->name && valid_tenant_name(t->name, strlen(t->name)));
                EXPECT(chp_config_find_tenant(c, t->name, strlen(t->name)) == t); /* distinct */
                EXPECT(t->nkeys >= 1 && t->nkeys <= CHP_TENANT_KEYS_MAX);
                for (unsigned j = 0; j < t->nkeys; j++) {
                        EXPECT(chp_tenant_find_key(t, t->keys[j].kid) == &t->keys[j]);
                        EXPECT(crypto_core_ed25519_is_valid_point(t->keys[j].pub) == 1);
                }
                EXPECT(t->max_stored && t->max_uploaded_per_day && t->max_file_size &&
                       t->max_file_life && t->max_concurrent_uploads && t->max_incomplete_uploads);
        }
        /* the no-tenant rule held */
        char err[CHP_CONFIG_ERR_MAX];
        EXPECT(chp_config_check_access(c, err) == 0 && err[0] == '\0');
        EXPECT(c->ntenants || c->open || (only_loopback(c->listen) && only_loopback(c->http)));
        char buf[160];
        const char *d = chp_config_describe_access(c, buf, sizeof(buf));
        EXPECT(d && strlen(d) < sizeof(buf));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        static int fd = -1;
        static char path[64];
        if (fd < 0) {
                fd = memfd_create("fuzz_config.ini", MFD_CLOEXEC);
                EXPECT(fd >= 0);
                snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
        }
        const uint8_t *nul = memchr(data, '\0', size);
        size_t ini_len = nul ? (size_t)(nul - data) : size;
        EXPECT(ftruncate(fd, 0) == 0);
        EXPECT(pwrite(fd, data, ini_len, 0) == (ssize_t)ini_len);

        /* a NUL-terminated copy of everything, for the line and argument views */
        char *text = malloc(size + 1);
        EXPECT(text);
        memcpy(text, data, size);
        text[size] = '\0';
        char *argv[MAX_ARGS];
        int argc = 0;
        for (size_t at = ini_len + 1; nul && at <= size && argc < MAX_ARGS;) {
                argv[argc++] = text + at;
                at += strlen(text + at) + 1;
        }

        struct chp_config c;
        char err[CHP_CONFIG_ERR_MAX];
        chp_config_defaults(&c);
        memset(err, 'x', sizeof(err));
        int rc = chp_config_load_file(&c, path, err);
        expect_result(rc, err);
        if (rc == 0 && argc > 0) {
                memset(err, 'x', sizeof(err));
                rc = chp_config_parse_args(&c, argc, argv, err);
                expect_result(rc, err);
        }
        if (rc == 0) {
                memset(err, 'x', sizeof(err));
                rc = chp_config_finish(&c, err);
                expect_result(rc, err);
                if (rc == 0)
                        check_finished(&c);
        }
        chp_config_free(&c);
        EXPECT(c.npeers == 0 && !c.data_dir && !c.listen);

        /* --config is found where parse_args would skip it */
        char *full[MAX_ARGS + 1];
        full[0] = "chapard";
        memcpy(full + 1, argv, (size_t)argc * sizeof(*argv));
        (void)chp_config_find_file(argc + 1, full);

        text[ini_len] = '\0';
        for (char *line = text, *next; line; line = next) {
                next = strchr(line, '\n');
                if (next)
                        *next++ = '\0';
                values(line);
                char *eq = strchr(line, '=');
                if (eq) {
                        eq++;
                        while (*eq == ' ' || *eq == '\t')
                                eq++;
                        values(eq);
                }
        }
        for (int i = 0; i < argc; i++)
                values(argv[i]);
        free(text);
        return 0;
}
