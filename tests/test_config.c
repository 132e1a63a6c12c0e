/* Configuration: defaults, the INI file overlay, flags over the file, every refusal with its
 * PATH:LINE or flag in the message, peers, tenants and their token keys and limits, number/size/
 * duration edge cases, addresses, the cross-field rules of chp_config_finish (the no-tenant rule
 * among them) and what a reload keeps. */
#include "harness.h"

#include <errno.h>
#include <unistd.h>

#include <sodium.h>

#include "config.h"
#include "hash.h"

/* Writes content to a fresh file under /tmp; path gets its name. Returns 0 or -1. */
static int write_temp(const char *content, char path[64])
{
        snprintf(path, 64, "/tmp/chapar-test-config-XXXXXX");
        int fd = mkstemp(path);
        if (fd < 0)
                return -1;
        size_t len = strlen(content), off = 0;
        while (off < len) {
                ssize_t n = write(fd, content + off, len - off);
                if (n <= 0) {
                        close(fd);
                        unlink(path);
                        return -1;
                }
                off += (size_t)n;
        }
        close(fd);
        return 0;
}

/* Loads content as a config file over c; err gets the message with the temp path replaced by
 * "T" so callers can match "T:LINE: ...". */
static int load_text(struct chp_config *c, const char *content, char err[CHP_CONFIG_ERR_MAX])
{
        char path[64];
        if (write_temp(content, path) != 0) {
                snprintf(err, CHP_CONFIG_ERR_MAX, "cannot write temp file");
                return -1000;
        }
        char raw[CHP_CONFIG_ERR_MAX];
        int rc = chp_config_load_file(c, path, raw);
        unlink(path);
        size_t plen = strlen(path);
        if (strncmp(raw, path, plen) == 0)
                snprintf(err, CHP_CONFIG_ERR_MAX, "T%s", raw + plen);
        else
                snprintf(err, CHP_CONFIG_ERR_MAX, "%s", raw);
        return rc;
}

/* Loads content over fresh defaults and frees them; for error cases. */
static int load_fresh(const char *content, char err[CHP_CONFIG_ERR_MAX])
{
        struct chp_config c;
        chp_config_defaults(&c);
        int rc = load_text(&c, content, err);
        chp_config_free(&c);
        return rc;
}

static int args(struct chp_config *c, char err[CHP_CONFIG_ERR_MAX], int argc, const char **argv)
{
        return chp_config_parse_args(c, argc, (char **)argv, err);
}

#define ARGS(c, err, ...)                                                                          \
        args((c), (err), (int)(sizeof((const char *[]){__VA_ARGS__}) / sizeof(const char *)),      \
             (const char *[]){__VA_ARGS__})

TEST(defaults)
{
        struct chp_config c;
        chp_config_defaults(&c);
        REQUIRE(c.data_dir && c.listen && c.http);
        CHECK(strcmp(c.data_dir, "./data") == 0);
        CHECK(strcmp(c.listen, "127.0.0.1:7700") == 0);
        CHECK(strcmp(c.http, "127.0.0.1:7780") == 0);
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        CHECK_EQ(c.threads, n < 1 ? 1 : n > 64 ? 64 : n);
        CHECK(c.threads >= 1 && c.threads <= 64);
        CHECK_EQ(c.sync, CHP_SYNC_FULL);
        CHECK(c.key_file == NULL);
        CHECK(!c.insecure_plaintext);
        CHECK(!c.open);
        CHECK(c.ready_file == NULL);
        CHECK_EQ(c.log_level, CHP_LOG_INFO);
        CHECK(c.access_log == NULL); /* off by default */
        CHECK_EQ(c.log_format, CHP_LOG_LOGFMT);
        CHECK_EQ(c.max_connections, 20000);
        CHECK_EQ(c.idle_timeout, 120);
        CHECK_EQ(c.io_timeout, 30);
        CHECK_EQ(c.handshake_timeout, 10);
        CHECK_EQ(c.header_timeout, 20);
        CHECK_EQ(c.min_body_rate, 1024);
        CHECK_EQ(c.body_rate_window, 20);
        CHECK_EQ(c.window_bytes, 32u << 20);
        CHECK_EQ(c.max_inflight, 64);
        CHECK_EQ(c.upload_expiry, 7 * 86400);
        CHECK_EQ(c.file_expiry, 30 * 86400);
        CHECK_EQ(c.audit_interval, 6 * 3600);
        CHECK_EQ(c.memory_limit, 1ll << 30);
        CHECK_EQ(c.fetch_timeout, 600);
        CHECK_EQ(c.fetch_min_rate, 1024);
        CHECK_EQ(c.fetch_workers_per_peer, 2);
        CHECK_EQ(c.npeers, 0);
        CHECK_EQ(c.ntenants, 0);
        CHECK(c.tenants == NULL);

        struct chp_store_opts d;
        chp_store_opts_default(&d);
        CHECK_EQ(c.store.inline_max, d.inline_max);
        CHECK_EQ(c.store.map_size, d.map_size);
        CHECK_EQ(c.store.segment_size, d.segment_size);
        CHECK_EQ(c.store.batch_bytes, d.batch_bytes);
        CHECK(c.store.compact_ratio == d.compact_ratio);
        CHECK_EQ(c.store.gc_batch, d.gc_batch);

        char err[CHP_CONFIG_ERR_MAX];
        CHECK_OK(chp_config_finish(&c, err));
        CHECK(c.store.dir == c.data_dir);
        CHECK_EQ(c.store.sync, CHP_SYNC_FULL);
        chp_config_free(&c);
        CHECK(c.data_dir == NULL && c.listen == NULL);
        chp_config_free(&c); /* twice is harmless */
        chp_config_free(NULL);
}

TEST(file_overlay)
{
        const char *ini = "\xEF\xBB\xBF; a comment\n"
                          "# another\n"
                          "[server]\n"
                          "data = /var/lib/chapar\n"
                          "    listen = 0.0.0.0:7701   ; indented, inline comment\n"
                          "http = [::1]:0\n"
                          "threads = 3\n"
                          "sync = none\n"
                          "key = /etc/chapar/key\n"
                          "insecure_plaintext = off\n"
                          "open = true\n"
                          "ready_file = /run/chapar.ready\n"
                          "log_level = debug\n"
                          "access_log = /var/log/chapar/access.log\n"
                          "log_format = json\n"
                          "max_connections = 500\n"
                          "idle_timeout = 2m\n"
                          "io_timeout = 45s\n"
                          "handshake_timeout = 5s\n"
                          "header_timeout = 1m\n"
                          "min_body_rate = 4K\n"
                          "body_rate_window = 30s\n"
                          "window_bytes = 16M\n"
                          "max_inflight = 8\n"
                          "upload_expiry = 2d\n"
                          "file_expiry = 3h\n"
                          "audit_interval = 0\n"
                          "memory_limit = 2G\n"
                          "fetch_timeout = 2m\n"
                          "fetch_min_rate = 0\n"
                          "fetch_workers_per_peer = 1\n"
                          "\n"
                          "[store]\n"
                          "inline_max = 4K\n"
                          "map_size = 1G\n"
                          "segment_size = 64M\n"
                          "compact_ratio = 0.25\n";
        struct chp_config c;
        chp_config_defaults(&c);
        char err[CHP_CONFIG_ERR_MAX];
        int rc = load_text(&c, ini, err);
        if (rc)
                fprintf(stderr, "  %s\n", err);
        REQUIRE_OK(rc);
        CHECK_EQ(err[0], '\0');
        CHECK(strcmp(c.data_dir, "/var/lib/chapar") == 0);
        CHECK(strcmp(c.listen, "0.0.0.0:7701") == 0);
        CHECK(strcmp(c.http, "[::1]:0") == 0);
        CHECK_EQ(c.threads, 3);
        CHECK_EQ(c.sync, CHP_SYNC_NONE);
        CHECK(c.key_file && strcmp(c.key_file, "/etc/chapar/key") == 0);
        CHECK(!c.insecure_plaintext);
        CHECK(c.open);
        CHECK(c.ready_file && strcmp(c.ready_file, "/run/chapar.ready") == 0);
        CHECK_EQ(c.log_level, CHP_LOG_DEBUG);
        CHECK(c.access_log && strcmp(c.access_log, "/var/log/chapar/access.log") == 0);
        CHECK_EQ(c.log_format, CHP_LOG_JSON);
        CHECK_EQ(c.max_connections, 500);
        CHECK_EQ(c.idle_timeout, 120);
        CHECK_EQ(c.io_timeout, 45);
        CHECK_EQ(c.handshake_timeout, 5);
        CHECK_EQ(c.header_timeout, 60);
        CHECK_EQ(c.min_body_rate, 4096);
        CHECK_EQ(c.body_rate_window, 30);
        CHECK_EQ(c.window_bytes, 16u << 20);
        CHECK_EQ(c.max_inflight, 8);
        CHECK_EQ(c.upload_expiry, 2 * 86400);
        CHECK_EQ(c.file_expiry, 3 * 3600);
        CHECK_EQ(c.audit_interval, 0); /* no audit */
        CHECK_EQ(c.memory_limit, 2ll << 30);
        CHECK_EQ(c.fetch_timeout, 120);
        CHECK_EQ(c.fetch_min_rate, 0);
        CHECK_EQ(c.fetch_workers_per_peer, 1);
        CHECK_EQ(c.store.inline_max, 4096);
        CHECK_EQ(c.store.map_size, 1ll << 30);
        CHECK_EQ(c.store.segment_size, 64ll << 20);
        CHECK(c.store.compact_ratio == 0.25);

        CHECK_OK(chp_config_finish(&c, err));
        CHECK(strcmp(c.store.dir, "/var/lib/chapar") == 0);
        CHECK_EQ(c.store.sync, CHP_SYNC_NONE);
        CHECK_EQ(c.store.orphan_grace, 2 * 86400); /* unattached chunks live as uploads do */
        chp_config_free(&c);
}

TEST(flags_override_file)
{
        struct chp_config c;
        chp_config_defaults(&c);
        char err[CHP_CONFIG_ERR_MAX];
        REQUIRE_OK(load_text(&c,
                             "[server]\nthreads = 2\nlisten = 127.0.0.1:9000\ndata = /from/file\n"
                             "log_level = warn\n",
                             err));
        REQUIRE_OK(ARGS(&c, err, "--config", "ignored.ini", "--threads", "5", "--data",
                        "/from/flag", "--insecure-plaintext", "--key", "k.key", "--ready-file",
                        "r.txt", "--sync", "none", "--http", "localhost:0"));
        CHECK_EQ(err[0], '\0');
        CHECK_EQ(c.threads, 5);
        CHECK(strcmp(c.data_dir, "/from/flag") == 0);
        CHECK(strcmp(c.listen, "127.0.0.1:9000") == 0); /* from the file, no flag */
        CHECK_EQ(c.log_level, CHP_LOG_WARN);
        CHECK(c.insecure_plaintext);
        CHECK(strcmp(c.key_file, "k.key") == 0);
        CHECK(strcmp(c.ready_file, "r.txt") == 0);
        CHECK_EQ(c.sync, CHP_SYNC_NONE);
        CHECK(strcmp(c.http, "localhost:0") == 0);
        CHECK_OK(chp_config_finish(&c, err));
        CHECK(strcmp(c.store.dir, "/from/flag") == 0);
        CHECK_EQ(c.store.sync, CHP_SYNC_NONE);
        chp_config_free(&c);
}

TEST(flag_equals_form)
{
        struct chp_config c;
        chp_config_defaults(&c);
        char err[CHP_CONFIG_ERR_MAX];
        REQUIRE_OK(ARGS(&c, err, "--data=/d", "--threads=7", "--log-level=error", "--sync=none",
                        "--listen=[::1]:7700", "--http=127.0.0.1:0", "--config=x.ini",
                        "--ready-file=a=b"));
        CHECK(strcmp(c.data_dir, "/d") == 0);
        CHECK_EQ(c.threads, 7);
        CHECK_EQ(c.log_level, CHP_LOG_ERROR);
        CHECK_EQ(c.sync, CHP_SYNC_NONE);
        CHECK(strcmp(c.listen, "[::1]:7700") == 0);
        CHECK(strcmp(c.http, "127.0.0.1:0") == 0);
        CHECK(strcmp(c.ready_file, "a=b") == 0);
        CHECK_OK(ARGS(&c, err, "--log-level", "debug"));
        CHECK_EQ(c.log_level, CHP_LOG_DEBUG);
        CHECK_OK(ARGS(&c, err, "--access-log", "-", "--log-format=json"));
        CHECK(c.access_log && strcmp(c.access_log, "-") == 0);
        CHECK_EQ(c.log_format, CHP_LOG_JSON);
        CHECK_OK(ARGS(&c, err, "--access-log=/var/log/a.log", "--log-format", "logfmt"));
        CHECK(c.access_log && strcmp(c.access_log, "/var/log/a.log") == 0);
        CHECK_EQ(c.log_format, CHP_LOG_LOGFMT);
        chp_config_free(&c);
}

TEST(find_file)
{
        const char *a1[] = {"chapard", "--data", "d", "--config", "one.ini"};
        const char *f = chp_config_find_file(5, (char **)a1);
        CHECK(f && strcmp(f, "one.ini") == 0);
        const char *a2[] = {"chapard", "--config=two.ini", "--threads", "2"};
        f = chp_config_find_file(4, (char **)a2);
        CHECK(f && strcmp(f, "two.ini") == 0);
        const char *a3[] = {"chapard", "--data", "--config"}; /* a data dir named --config */
        CHECK(chp_config_find_file(3, (char **)a3) == NULL);
        const char *a4[] = {"chapard", "--config"};
        CHECK(chp_config_find_file(2, (char **)a4) == NULL);
        const char *a5[] = {"chapard"};
        CHECK(chp_config_find_file(1, (char **)a5) == NULL);
        const char *a6[] = {"chapard", "--insecure-plaintext", "--config", "six.ini"};
        f = chp_config_find_file(4, (char **)a6);
        CHECK(f && strcmp(f, "six.ini") == 0);
}

struct file_case {
        const char *content;
        const char *want; /* a substring of the message */
};

/* Each case's content, loaded over defaults, is refused with -EINVAL and its message. */
static void check_file_cases(const struct file_case *cases, size_t n)
{
        for (size_t i = 0; i < n; i++) {
                char err[CHP_CONFIG_ERR_MAX];
                int rc = load_fresh(cases[i].content, err);
                bool ok = rc == -EINVAL && strstr(err, cases[i].want) != NULL;
                if (!ok)
                        fprintf(stderr, "  case %zu: rc %d, err \"%s\", want \"%s\"\n", i, rc, err,
                                cases[i].want);
                CHECK(ok);
        }
}

TEST(file_errors)
{
        static const struct file_case cases[] = {
            {"[server]\nfoo = 1\n", "T:2: unknown key 'foo' in [server]"},
            {"[store]\ndata = x\n", "T:2: unknown key 'data' in [store]"},
            {"[bogus]\n", "T:1: unknown section [bogus]"},
            {"[server]\n[Server]\nthreads = 1\n", "T:2: unknown section [Server]"},
            {"data = x\n", "T:1: key 'data' outside any section"},
            {"[server]\n; c\n\nthreads = 4\nfoo = 1\n", "T:5: unknown key 'foo'"},
            {"[server]\nthreads = 0\n", "T:2: threads = '0'"},
            {"[server]\nthreads = 65\n", "T:2: threads = '65': must be from 1 to 64"},
            {"[server]\nthreads = abc\n", "T:2: threads = 'abc'"},
            {"[server]\nthreads = -1\n", "T:2: threads"},
            {"[server]\nthreads = 1.5\n", "T:2: threads"},
            {"[server]\nthreads = 4K\n", "T:2: threads"},
            {"[server]\nthreads =\n", "T:2: threads = '': must not be empty"},
            {"[server]\ndata =\n", "T:2: data = '': must not be empty"},
            {"[server]\nsync = sometimes\n", "T:2: sync = 'sometimes': expected full or none"},
            {"[server]\nlog_level = loud\n", "T:2: log_level = 'loud'"},
            {"[server]\ninsecure_plaintext = maybe\n", "T:2: insecure_plaintext = 'maybe'"},
            {"[server]\nopen = sometimes\n", "T:2: open = 'sometimes': expected true/false"},
            {"[server]\ntoken_key = 0123456789abcdef:00\n",
             "T:2: unknown key 'token_key' in [server]"},
            {"[store]\nmax_stored = 1G\n", "T:2: unknown key 'max_stored' in [store]"},
            {"[server]\nlisten = 127.0.0.1\n", "T:2: listen = '127.0.0.1'"},
            {"[server]\nhttp = ::1:80\n", "T:2: http = '::1:80'"},
            {"[server]\nlisten = 1.2.3.4:65536\n", "T:2: listen"},
            {"[server]\nwindow_bytes = 1M\n", "T:2: window_bytes = '1M': must be from 8388672"},
            {"[server]\nwindow_bytes = 4G\n", "T:2: window_bytes = '4G'"},
            {"[server]\nmemory_limit = 99999999999999999999G\n", "T:2: memory_limit"},
            {"[server]\nmemory_limit = 17179869184G\n", "T:2: memory_limit = '17179869184G': too"},
            {"[server]\nidle_timeout = 0\n", "T:2: idle_timeout = '0'"},
            {"[server]\nio_timeout = 5x\n", "T:2: io_timeout = '5x'"},
            {"[server]\nhandshake_timeout = 0\n", "T:2: handshake_timeout = '0'"},
            {"[server]\nheader_timeout = 0\n", "T:2: header_timeout = '0'"},
            {"[server]\nbody_rate_window = 0\n", "T:2: body_rate_window = '0'"},
            {"[server]\nmin_body_rate = 1x\n", "T:2: min_body_rate = '1x'"},
            {"[server]\nmin_body_rate = 4G\n", "T:2: min_body_rate = '4G'"},
            {"[server]\nfetch_timeout = 0\n", "T:2: fetch_timeout = '0'"},
            {"[server]\nfetch_workers_per_peer = 0\n", "T:2: fetch_workers_per_peer = '0'"},
            {"[server]\nupload_expiry = 1w\n", "T:2: upload_expiry"},
            {"[server]\nfile_expiry = 99999999999999999999d\n", "T:2: file_expiry"},
            {"[server]\nmax_connections = 4294967296\n", "T:2: max_connections"},
            {"[server]\nmax_inflight = 0\n", "T:2: max_inflight"},
            {"[store]\nmap_size = 1K\n", "T:2: map_size = '1K': must be at least 1048576"},
            {"[store]\nsegment_size = 4M\n", "T:2: segment_size = '4M': must be at least 8388608"},
            {"[store]\ncompact_ratio = 1.5\n", "T:2: compact_ratio = '1.5'"},
            {"[store]\ncompact_ratio = -0.1\n", "T:2: compact_ratio"},
            {"[store]\ncompact_ratio = nan\n", "T:2: compact_ratio"},
            {"[store]\ncompact_ratio = 0.5x\n", "T:2: compact_ratio"},
            {"[store]\ninline_max = some\n", "T:2: inline_max = 'some'"},
            {"[store]\ninline_max = 4294967296\n", "T:2: inline_max"},
            {"[server]\njust words\n", "T:2: expected [section] or key = value"},
            {"[server\nthreads = 1\n", "T:1: section header without ']'"},
            {"[server] junk\n", "T:1: unexpected text after ']'"},
            {"[peer \"\"]\naddress = a:1\npubkey = k\n", "T:1: peer name ''"},
            {"[peer \"bad name\"]\n", "T:1: peer name 'bad name'"},
            {"[peer \"a/b\"]\n", "T:1: peer name 'a/b'"},
            {"[peer alice]\n", "T:1: expected [peer \"NAME\"]"},
            {"[peer \"x\"]\npubkey = k\n", "T:1: [peer \"x\"] has no address"},
            {"[peer \"x\"]\naddress = h:1\n", "T:1: [peer \"x\"] has no pubkey"},
            {"[peer \"x\"]\n", "T:1: [peer \"x\"] has no address"},
            {"[peer \"x\"]\naddress = h\npubkey = k\n", "T:2: address = 'h'"},
            {"[peer \"x\"]\naddress = h:1\npubkey =\n", "T:3: pubkey: must not be empty"},
            {"[peer \"x\"]\nport = 1\n", "T:2: unknown key 'port' in [peer \"x\"]"},
            {"[peer \"a\"]\naddress = h:1\npubkey = k\n[peer \"a\"]\naddress = h:2\npubkey = k\n",
             "T:4: duplicate [peer \"a\"]"},
        };
        check_file_cases(cases, sizeof(cases) / sizeof(cases[0]));
}

TEST(file_long_lines_and_names)
{
        char err[CHP_CONFIG_ERR_MAX];
        char text[1024];
        char name[80];

        /* 64 characters is the longest peer name; 65 is refused */
        memset(name, 'n', 64);
        name[64] = '\0';
        snprintf(text, sizeof(text), "[peer \"%s\"]\naddress = h:1\npubkey = k\n", name);
        CHECK_OK(load_fresh(text, err));
        memset(name, 'n', 65);
        name[65] = '\0';
        snprintf(text, sizeof(text), "[peer \"%s\"]\naddress = h:1\npubkey = k\n", name);
        CHECK_EQ(load_fresh(text, err), -EINVAL);
        CHECK(strstr(err, "T:1: peer name") != NULL);

        /* a line longer than libinih's buffer is an error, not two lines */
        char big[400];
        memset(big, 'x', sizeof(big) - 1);
        big[sizeof(big) - 1] = '\0';
        snprintf(text, sizeof(text), "[server]\ndata = %s\n", big);
        CHECK_EQ(load_fresh(text, err), -EINVAL);
        CHECK(strstr(err, "T:2: line longer than") != NULL);
}

TEST(file_missing)
{
        struct chp_config c;
        chp_config_defaults(&c);
        char err[CHP_CONFIG_ERR_MAX];
        const char *path = "/tmp/chapar-test-config-does-not-exist.ini";
        CHECK_EQ(chp_config_load_file(&c, path, err), -EINVAL);
        CHECK(strcmp(err,
                     "cannot read config file /tmp/chapar-test-config-does-not-exist.ini: No such "
                     "file or directory") == 0);
        CHECK_EQ(chp_config_load_file(&c, "/tmp", err), -EINVAL); /* a directory */
        CHECK(strstr(err, "/tmp") != NULL);
        chp_config_free(&c);
}

TEST(peers)
{
        struct chp_config c;
        chp_config_defaults(&c);
        char err[CHP_CONFIG_ERR_MAX];
        REQUIRE_OK(load_text(&c,
                             "[peer \"relay-1.example\"]\n"
                             "address = relay1.example.org:7700\n"
                             "pubkey = abcdef0123\n"
                             "[server]\nthreads = 2\n"
                             "[peer   \"b_2\"  ]\n"
                             "pubkey = 99\n"
                             "address = [2001:db8::1]:7700\n",
                             err));
        REQUIRE(c.npeers == 2);
        CHECK(strcmp(c.peers[0].name, "relay-1.example") == 0);
        CHECK(strcmp(c.peers[0].address, "relay1.example.org:7700") == 0);
        CHECK(strcmp(c.peers[0].pubkey, "abcdef0123") == 0);
        CHECK(strcmp(c.peers[1].name, "b_2") == 0);
        CHECK(strcmp(c.peers[1].address, "[2001:db8::1]:7700") == 0);
        CHECK(strcmp(c.peers[1].pubkey, "99") == 0);
        CHECK_EQ(c.threads, 2);

        /* a second file may not define a peer the first one did */
        CHECK_EQ(load_text(&c, "[peer \"b_2\"]\naddress = h:1\npubkey = k\n", err), -EINVAL);
        CHECK(strstr(err, "T:1: duplicate [peer \"b_2\"]") != NULL);
        chp_config_free(&c);
        CHECK_EQ(c.npeers, 0);
}

TEST(too_many_peers)
{
        size_t cap = 70 * 64;
        char *text = malloc(cap);
        REQUIRE(text);
        size_t off = 0;
        for (int i = 0; i < CHP_MAX_PEERS; i++)
                off += (size_t)snprintf(text + off, cap - off,
                                        "[peer \"p%d\"]\naddress = h:%d\npubkey = k\n", i, i);
        char err[CHP_CONFIG_ERR_MAX];
        CHECK_OK(load_fresh(text, err));
        snprintf(text + off, cap - off, "[peer \"last\"]\naddress = h:1\npubkey = k\n");
        CHECK_EQ(load_fresh(text, err), -EINVAL);
        CHECK(strstr(err, "T:193: too many peers") != NULL);
        free(text);
}

/* Loads "[SECTION]\nKEY = VALUE\n" over defaults; returns rc and leaves c loaded (caller frees). */
static int load_kv(struct chp_config *c, const char *section, const char *key, const char *value)
{
        char text[256], err[CHP_CONFIG_ERR_MAX];
        snprintf(text, sizeof(text), "[%s]\n%s = %s\n", section, key, value);
        chp_config_defaults(c);
        return load_text(c, text, err);
}

struct num_case {
        const char *section, *key, *value;
        int rc;
        unsigned long long want;
};

TEST(numbers_sizes_durations)
{
        static const struct num_case cases[] = {
            {"store", "map_size", "1048576", 0, 1048576},
            {"store", "map_size", "1024K", 0, 1048576},
            {"store", "map_size", "1024k", 0, 1048576},
            {"store", "map_size", "1M", 0, 1048576},
            {"store", "map_size", "3G", 0, 3ull << 30},
            {"store", "map_size", "1048575", -EINVAL, 0},
            {"store", "map_size", "1T", -EINVAL, 0},
            {"store", "map_size", "1MB", -EINVAL, 0},
            {"store", "map_size", "+1M", -EINVAL, 0},
            {"store", "map_size", "0x100000", -EINVAL, 0},
            {"store", "map_size", "1 M", -EINVAL, 0},
            {"store", "segment_size", "8M", 0, 8ull << 20},
            {"store", "segment_size", "8388607", -EINVAL, 0},
            {"store", "inline_max", "all", 0, CHP_STORE_INLINE_ALL},
            {"store", "inline_max", "0", 0, 0},
            {"store", "inline_max", "16K", 0, 16384},
            {"store", "inline_max", "4294967295", 0, 4294967295ull},
            {"store", "inline_max", "4G", -EINVAL, 0},
            {"server", "memory_limit", "18446744073709551615", 0, 18446744073709551615ull},
            {"server", "memory_limit", "18446744073709551616", -EINVAL, 0},
            {"server", "memory_limit", "17179869183G", 0, 17179869183ull << 30},
            {"server", "memory_limit", "17179869184G", -EINVAL, 0},
            {"server", "memory_limit", "99999999999999999999G", -EINVAL, 0},
            {"server", "memory_limit", "-1", -EINVAL, 0},
            {"server", "window_bytes", "8388672", 0, 8388672},
            {"server", "window_bytes", "8388671", -EINVAL, 0},
            {"server", "window_bytes", "4294967295", 0, 4294967295ull},
            {"server", "window_bytes", "4294967296", -EINVAL, 0},
            {"server", "idle_timeout", "90", 0, 90},
            {"server", "idle_timeout", "90s", 0, 90},
            {"server", "idle_timeout", "2m", 0, 120},
            {"server", "idle_timeout", "3h", 0, 10800},
            {"server", "idle_timeout", "1d", 0, 86400},
            {"server", "idle_timeout", "4294967295", 0, 4294967295ull},
            {"server", "idle_timeout", "4294967296", -EINVAL, 0},
            {"server", "idle_timeout", "2M", -EINVAL, 0},
            {"server", "idle_timeout", "1.5h", -EINVAL, 0},
            {"server", "upload_expiry", "213503982334601d", 0, 213503982334601ull * 86400},
            {"server", "upload_expiry", "213503982334602d", -EINVAL, 0},
            {"server", "threads", "1", 0, 1},
            {"server", "threads", "64", 0, 64},
            {"server", "threads", "007", 0, 7},
            {"server", "threads", "5s", -EINVAL, 0},
            {"server", "max_connections", "4294967295", 0, 4294967295ull},
            {"server", "min_body_rate", "0", 0, 0},
            {"server", "min_body_rate", "64K", 0, 65536},
            {"server", "min_body_rate", "4294967295", 0, 4294967295ull},
            {"server", "min_body_rate", "4294967296", -EINVAL, 0},
            {"server", "header_timeout", "1", 0, 1},
            {"server", "header_timeout", "2m", 0, 120},
            {"server", "header_timeout", "0", -EINVAL, 0},
            {"server", "audit_interval", "0", 0, 0},
            {"server", "audit_interval", "90m", 0, 5400},
            {"server", "audit_interval", "4294967295", 0, 4294967295ull},
            {"server", "audit_interval", "4294967296", -EINVAL, 0},
        };
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
                const struct num_case *k = &cases[i];
                struct chp_config c;
                int rc = load_kv(&c, k->section, k->key, k->value);
                unsigned long long got = 0;
                if (strcmp(k->key, "map_size") == 0)
                        got = c.store.map_size;
                else if (strcmp(k->key, "segment_size") == 0)
                        got = c.store.segment_size;
                else if (strcmp(k->key, "inline_max") == 0)
                        got = c.store.inline_max;
                else if (strcmp(k->key, "memory_limit") == 0)
                        got = c.memory_limit;
                else if (strcmp(k->key, "window_bytes") == 0)
                        got = c.window_bytes;
                else if (strcmp(k->key, "idle_timeout") == 0)
                        got = c.idle_timeout;
                else if (strcmp(k->key, "upload_expiry") == 0)
                        got = c.upload_expiry;
                else if (strcmp(k->key, "threads") == 0)
                        got = c.threads;
                else if (strcmp(k->key, "max_connections") == 0)
                        got = c.max_connections;
                else if (strcmp(k->key, "min_body_rate") == 0)
                        got = c.min_body_rate;
                else if (strcmp(k->key, "header_timeout") == 0)
                        got = c.header_timeout;
                else if (strcmp(k->key, "audit_interval") == 0)
                        got = c.audit_interval;
                bool ok = rc == k->rc && (rc != 0 || got == k->want);
                if (!ok)
                        fprintf(stderr, "  case %zu (%s = %s): rc %d got %llu, want rc %d %llu\n",
                                i, k->key, k->value, rc, got, k->rc, k->want);
                CHECK(ok);
                chp_config_free(&c);
        }
}

/* cors_headers reaches every preflight's head: only header names get in, none by default. */
TEST(cors_headers)
{
        struct chp_config c;
        char err[CHP_CONFIG_ERR_MAX];
        chp_config_defaults(&c);
        CHECK(c.cors_headers == NULL);
        CHECK_EQ(
            load_text(&c, "[server]\ncors_headers = X-Chat-Session, X-Trace-Id  x_y!#~\n", err), 0);
        CHECK(c.cors_headers && strcmp(c.cors_headers, "X-Chat-Session, X-Trace-Id  x_y!#~") == 0);
        chp_config_free(&c);
        static const char *const refused[] = {
            "[server]\ncors_headers = X-A; X-B\n", "[server]\ncors_headers = X-A:1\n",
            "[server]\ncors_headers = , ,\n",      "[server]\ncors_headers = X-A\tX-B\n",
            "[server]\ncors_headers = \"X-A\"\n",  "[server]\ncors_headers = X-\xC3\xA9\n",
        };
        for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++) {
                CHECK_EQ(load_fresh(refused[i], err), -EINVAL);
                CHECK(strstr(err, "T:2: cors_headers = '") != NULL);
                CHECK(strstr(err, "expected header names") != NULL);
        }
}

TEST(booleans_and_ratio)
{
        static const char *const yes[] = {"true", "yes", "on", "1", "TRUE", "Yes"};
        static const char *const no[] = {"false", "no", "off", "0", "False"};
        for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
                struct chp_config c;
                CHECK_OK(load_kv(&c, "server", "insecure_plaintext", yes[i]));
                CHECK(c.insecure_plaintext);
                chp_config_free(&c);
        }
        for (size_t i = 0; i < sizeof(no) / sizeof(no[0]); i++) {
                struct chp_config c;
                CHECK_OK(load_kv(&c, "server", "insecure_plaintext", no[i]));
                CHECK(!c.insecure_plaintext);
                chp_config_free(&c);
        }
        struct chp_config c;
        CHECK_EQ(load_kv(&c, "server", "insecure_plaintext", "2"), -EINVAL);
        chp_config_free(&c);
        CHECK_OK(load_kv(&c, "store", "compact_ratio", "0"));
        CHECK(c.store.compact_ratio == 0);
        chp_config_free(&c);
        CHECK_OK(load_kv(&c, "store", "compact_ratio", "1"));
        CHECK(c.store.compact_ratio == 1);
        chp_config_free(&c);
        CHECK_OK(load_kv(&c, "store", "compact_ratio", ".75"));
        CHECK(c.store.compact_ratio == 0.75);
        chp_config_free(&c);
        CHECK_EQ(load_kv(&c, "store", "compact_ratio", "inf"), -EINVAL);
        chp_config_free(&c);
}

struct flag_case {
        int argc;
        const char *argv[3];
        const char *want;
};

TEST(flag_errors)
{
        static const struct flag_case cases[] = {
            {1, {"--bogus"}, "unknown flag '--bogus'"},
            {1, {"--bogus=1"}, "unknown flag '--bogus'"},
            {1, {"--max-connections=5"}, "unknown flag '--max-connections'"},
            {1, {"--data"}, "--data needs a value"},
            {1, {"--config"}, "--config needs a value"},
            {1, {"--config="}, "--config: must not be empty"},
            {2, {"--threads", "abc"}, "--threads 'abc'"},
            {1, {"--threads=0"}, "--threads '0': must be from 1 to 64"},
            {1, {"--threads=65"}, "--threads '65'"},
            {2, {"--sync", "fast"}, "--sync 'fast': expected full or none"},
            {1, {"--log-level=trace"}, "--log-level 'trace'"},
            {1, {"--log-format=xml"}, "--log-format 'xml': expected logfmt or json"},
            {1, {"--access-log="}, "--access-log '': must not be empty"},
            {1, {"--access-log"}, "--access-log needs a value"},
            {1, {"--insecure-plaintext=yes"}, "--insecure-plaintext takes no value"},
            {1, {"--open=yes"}, "--open takes no value"},
            {2, {"--listen", "localhost"}, "--listen 'localhost'"},
            {1, {"--http=[::1]"}, "--http '[::1]'"},
            {1, {"--data="}, "--data '': must not be empty"},
            {1, {"positional"}, "unexpected argument 'positional'"},
            {1, {"-d"}, "unexpected argument '-d'"},
            {1, {"--"}, "unexpected argument '--'"},
            {3, {"--threads", "2", "stray"}, "unexpected argument 'stray'"},
        };
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
                struct chp_config c;
                chp_config_defaults(&c);
                char err[CHP_CONFIG_ERR_MAX];
                int rc = chp_config_parse_args(&c, cases[i].argc, (char **)cases[i].argv, err);
                bool ok = rc == -EINVAL && strstr(err, cases[i].want) != NULL;
                if (!ok)
                        fprintf(stderr, "  case %zu: rc %d, err \"%s\", want \"%s\"\n", i, rc, err,
                                cases[i].want);
                CHECK(ok);
                chp_config_free(&c);
        }
}

TEST(is_loopback)
{
        static const char *const yes[] = {"127.0.0.1", "127.0.0.2",       "127.255.255.255",
                                          "::1",       "0:0:0:0:0:0:0:1", "localhost"};
        static const char *const no[] = {
            "0.0.0.0",     "128.0.0.1",         "10.0.0.1", "::", "::2",   "::ffff:1.2.3.4",
            "192.168.1.1", "localhost.example", "127.0.0",  "",   "[::1]", "example.com"};
        for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
                if (!chp_config_is_loopback(yes[i]))
                        fprintf(stderr, "  %s should be loopback\n", yes[i]);
                CHECK(chp_config_is_loopback(yes[i]));
        }
        for (size_t i = 0; i < sizeof(no) / sizeof(no[0]); i++) {
                if (chp_config_is_loopback(no[i]))
                        fprintf(stderr, "  %s should not be loopback\n", no[i]);
                CHECK(!chp_config_is_loopback(no[i]));
        }
        CHECK(!chp_config_is_loopback(NULL));
}

TEST(insecure_plaintext_rule)
{
        static const char *const ok_listen[] = {"127.0.0.1:7700", "127.9.9.9:0", "[::1]:7700",
                                                "localhost:0"};
        static const char *const bad_listen[] = {"0.0.0.0:7700", "10.1.2.3:7700", "[::]:7700",
                                                 "relay.example.org:7700"};
        char err[CHP_CONFIG_ERR_MAX];
        for (size_t i = 0; i < sizeof(ok_listen) / sizeof(ok_listen[0]); i++) {
                struct chp_config c;
                chp_config_defaults(&c);
                CHECK_OK(ARGS(&c, err, "--insecure-plaintext", "--listen", ok_listen[i]));
                int rc = chp_config_finish(&c, err);
                if (rc)
                        fprintf(stderr, "  %s: %s\n", ok_listen[i], err);
                CHECK_OK(rc);
                chp_config_free(&c);
        }
        for (size_t i = 0; i < sizeof(bad_listen) / sizeof(bad_listen[0]); i++) {
                struct chp_config c;
                chp_config_defaults(&c);
                CHECK_OK(ARGS(&c, err, "--listen", bad_listen[i], "--open"));
                CHECK_OK(chp_config_finish(&c, err)); /* fine with encryption */
                CHECK_OK(ARGS(&c, err, "--insecure-plaintext"));
                CHECK_EQ(chp_config_finish(&c, err), -EINVAL);
                CHECK(strcmp(err, "--insecure-plaintext is allowed only on a loopback --listen "
                                  "address (127.0.0.0/8, ::1)") == 0);
                chp_config_free(&c);
        }
        /* the file's insecure_plaintext counts the same */
        struct chp_config c;
        chp_config_defaults(&c);
        CHECK_OK(load_text(&c, "[server]\ninsecure_plaintext = yes\nlisten = 0.0.0.0:1\n", err));
        CHECK_EQ(chp_config_finish(&c, err), -EINVAL);
        CHECK(strstr(err, "--insecure-plaintext") != NULL);
        chp_config_free(&c);
}

TEST(finish_rules)
{
        struct chp_config c;
        char err[CHP_CONFIG_ERR_MAX];

        chp_config_defaults(&c);
        c.window_bytes = 1024; /* set by a caller, not by the parsers */
        CHECK_EQ(chp_config_finish(&c, err), -EINVAL);
        CHECK(strstr(err, "window_bytes") != NULL);
        chp_config_free(&c);

        chp_config_defaults(&c);
        c.threads = 0;
        CHECK_EQ(chp_config_finish(&c, err), -EINVAL);
        CHECK(strstr(err, "--threads") != NULL);
        chp_config_free(&c);

        chp_config_defaults(&c);
        free(c.listen);
        c.listen = strdup("nonsense");
        CHECK_EQ(chp_config_finish(&c, err), -EINVAL);
        CHECK(strstr(err, "--listen 'nonsense'") != NULL);
        chp_config_free(&c);

        chp_config_defaults(&c);
        CHECK_OK(ARGS(&c, err, "--listen", "127.0.0.1:7000", "--http", "127.0.0.1:7000"));
        CHECK_EQ(chp_config_finish(&c, err), -EINVAL);
        CHECK(strstr(err, "--listen and --http") != NULL);
        CHECK_OK(ARGS(&c, err, "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0"));
        CHECK_OK(chp_config_finish(&c, err)); /* both ephemeral: different ports */
        chp_config_free(&c);
}

/* ---- tenants ------------------------------------------------------------------------------ */

/* A token_key value "KID:PUBLIC-KEY": kid as 16 hex digits, and the Ed25519 public key made from a
 * seed of 32 seed_byte bytes (pub gets its bytes; upper: the key in upper-case hex). */
static void token_key(uint64_t kid, uint8_t seed_byte, bool upper, char out[96],
                      uint8_t pub[crypto_sign_PUBLICKEYBYTES])
{
        uint8_t seed[crypto_sign_SEEDBYTES], sk[crypto_sign_SECRETKEYBYTES];
        memset(seed, seed_byte, sizeof(seed));
        if (sodium_init() < 0 || crypto_sign_seed_keypair(pub, sk, seed) != 0)
                abort();
        char hex[2 * crypto_sign_PUBLICKEYBYTES + 1];
        chp_hex_encode(pub, crypto_sign_PUBLICKEYBYTES, hex);
        for (char *h = hex; upper && *h; h++)
                if (*h >= 'a' && *h <= 'f')
                        *h = (char)(*h - 'a' + 'A');
        snprintf(out, 96, "%016llx:%s", (unsigned long long)kid, hex);
}

static bool kid_is(const struct chp_tenant_key *k, uint64_t kid)
{
        for (int i = 0; i < CHP_TENANT_KID_BYTES; i++)
                if (k->kid[i] != (uint8_t)(kid >> (8 * (CHP_TENANT_KID_BYTES - 1 - i))))
                        return false;
        return true;
}

TEST(tenants)
{
        char k1[96], k2[96], k3[96], text[2048], err[CHP_CONFIG_ERR_MAX];
        uint8_t p1[32], p2[32], p3[32];
        token_key(0x0123456789abcdefull, 1, false, k1, p1);
        token_key(0xfedcba9876543210ull, 2, true, k2, p2);
        token_key(1, 3, false, k3, p3);
        k2[0] = 'F'; /* the key id in upper case too */
        snprintf(text, sizeof(text),
                 "[tenant \"acme\"]\n"
                 "token_key = %s\n"
                 "  token_key = %s   ; the next key, for rotation\n"
                 "max_stored = 10G\n"
                 "max_uploaded_per_day = 1G\n"
                 "max_file_size = 100M\n"
                 "max_file_life = 7d\n"
                 "max_concurrent_uploads = 4\n"
                 "max_incomplete_uploads = 16\n"
                 "[server]\n"
                 "threads = 2\n"
                 "[tenant   \"b.2_x-Y\" ]\n"
                 "max_file_size = 5M\n"
                 "token_key = %s\n"
                 "max_file_size = unlimited\n" /* the last one wins, as for every key */
                 "max_file_life = unlimited\n"
                 "[peer \"acme\"]\n" /* peers and tenants are named apart */
                 "address = h:1\npubkey = k\n",
                 k1, k2, k3);
        struct chp_config c;
        chp_config_defaults(&c);
        int rc = load_text(&c, text, err);
        if (rc)
                fprintf(stderr, "  %s\n", err);
        REQUIRE_OK(rc);
        CHECK_EQ(c.threads, 2);
        REQUIRE(c.ntenants == 2 && c.tenants);
        const struct chp_tenant_config *a = &c.tenants[0], *b = &c.tenants[1];
        CHECK(strcmp(a->name, "acme") == 0);
        REQUIRE(a->nkeys == 2);
        CHECK(kid_is(&a->keys[0], 0x0123456789abcdefull));
        CHECK(memcmp(a->keys[0].pub, p1, 32) == 0);
        CHECK(kid_is(&a->keys[1], 0xfedcba9876543210ull));
        CHECK(memcmp(a->keys[1].pub, p2, 32) == 0);
        CHECK_EQ(a->max_stored, 10ull << 30);
        CHECK_EQ(a->max_uploaded_per_day, 1ull << 30);
        CHECK_EQ(a->max_file_size, 100ull << 20);
        CHECK_EQ(a->max_file_life, 7 * 86400);
        CHECK_EQ(a->max_concurrent_uploads, 4);
        CHECK_EQ(a->max_incomplete_uploads, 16);

        CHECK(strcmp(b->name, "b.2_x-Y") == 0);
        REQUIRE(b->nkeys == 1);
        CHECK(kid_is(&b->keys[0], 1));
        CHECK(memcmp(b->keys[0].pub, p3, 32) == 0);
        CHECK(b->max_stored == CHP_UNLIMITED); /* the defaults */
        CHECK(b->max_uploaded_per_day == CHP_UNLIMITED);
        CHECK(b->max_file_size == CHP_UNLIMITED);
        CHECK(b->max_file_life == CHP_UNLIMITED);
        CHECK(b->max_concurrent_uploads == CHP_UNLIMITED);
        CHECK(b->max_incomplete_uploads == CHP_UNLIMITED);

        CHECK(chp_config_find_tenant(&c, "acme", 4) == a);
        CHECK(chp_config_find_tenant(&c, "acmex", 4) == a); /* len bytes only */
        CHECK(chp_config_find_tenant(&c, "b.2_x-Y", 7) == b);
        CHECK(chp_config_find_tenant(&c, "acm", 3) == NULL);
        CHECK(chp_config_find_tenant(&c, "ACME", 4) == NULL);
        CHECK(chp_config_find_tenant(&c, "", 0) == NULL);
        CHECK(chp_config_find_tenant(&c, "acme\0xyz", 8) == NULL); /* a name from the wire */
        uint8_t kid[CHP_TENANT_KID_BYTES] = {0xfe, 0xdc, 0xba, 0x98, 0x76, 0x54, 0x32, 0x10};
        CHECK(chp_tenant_find_key(a, kid) == &a->keys[1]);
        CHECK(chp_tenant_find_key(b, kid) == NULL);
        kid[7] = 0x11;
        CHECK(chp_tenant_find_key(a, kid) == NULL);
        CHECK_EQ(c.npeers, 1);
        CHECK_OK(chp_config_finish(&c, err));

        /* a second file may not define a tenant the first one did, nor leave one keyless */
        snprintf(text, sizeof(text), "[tenant \"acme\"]\ntoken_key = %s\n", k3);
        CHECK_EQ(load_text(&c, text, err), -EINVAL);
        CHECK(strstr(err, "T:1: duplicate [tenant \"acme\"]") != NULL);
        CHECK_EQ(load_text(&c, "[server]\nthreads = 3\n[tenant \"new\"]\n", err), -EINVAL);
        CHECK(strstr(err, "T:3: [tenant \"new\"] has neither token_key nor xmpp_secret") != NULL);
        chp_config_free(&c);
        CHECK_EQ(c.ntenants, 0);
        CHECK(c.tenants == NULL);
}

/* "[tenant \"a\"]\ntoken_key = GOOD\n" followed by rest. */
static void tenant_text(char *out, size_t cap, const char *rest)
{
        char k[96];
        uint8_t pub[32];
        token_key(0x0123456789abcdefull, 1, false, k, pub);
        snprintf(out, cap, "[tenant \"a\"]\ntoken_key = %s\n%s", k, rest);
}

TEST(tenant_errors)
{
        char k[96], k2[96];
        uint8_t pub[32];
        token_key(0x0123456789abcdefull, 1, false, k, pub);
        token_key(0x0123456789abcdefull, 2, false, k2, pub);
        for (int i = 0; i < 16; i++) /* the same key id in upper case */
                if (k2[i] >= 'a' && k2[i] <= 'f')
                        k2[i] = (char)(k2[i] - 'a' + 'A');
        const char *good_pub = k + 17;
        char buf[64][400];
        int n = 0;
        /* cases that follow a good first line ("[tenant \"a\"]\ntoken_key = GOOD\n") */
        static const struct file_case after_key[] = {
            {"foo = 1\n", "T:3: unknown key 'foo' in [tenant \"a\"]"},
            {"address = h:1\n", "T:3: unknown key 'address' in [tenant \"a\"]"},
            {"token_key =\n", "T:3: [tenant \"a\"] token_key = '': must not be empty"},
            {"token_key = 0123456789abcdef\n",
             "T:3: [tenant \"a\"] token_key = '0123456789abcdef': expected KID:PUBLIC-KEY"},
            {"token_key = 0123456789abcde:00\n",
             "T:3: [tenant \"a\"] token_key = '0123456789abcde:00': the key id must be 16 hex "
             "digits"},
            {"max_stored = 0\n", "T:3: [tenant \"a\"] max_stored = '0': must be at least 1"},
            {"max_stored = 1T\n",
             "T:3: [tenant \"a\"] max_stored = '1T': expected a byte count with an optional K, M "
             "or G suffix, or \"unlimited\""},
            {"max_stored = 17179869184G\n", "T:3: [tenant \"a\"] max_stored = '17179869184G': too"},
            {"max_stored = Unlimited\n", "T:3: [tenant \"a\"] max_stored = 'Unlimited'"},
            {"max_stored =\n", "T:3: [tenant \"a\"] max_stored = '': must not be empty"},
            {"max_uploaded_per_day = 99999999999999999999\n",
             "T:3: [tenant \"a\"] max_uploaded_per_day = '99999999999999999999': too large"},
            {"max_uploaded_per_day = -1\n", "T:3: [tenant \"a\"] max_uploaded_per_day = '-1'"},
            {"max_file_size = 0\n", "T:3: [tenant \"a\"] max_file_size = '0': must be at least 1"},
            {"max_file_size = 1.5G\n", "T:3: [tenant \"a\"] max_file_size = '1.5G'"},
            {"max_file_life = 0\n", "T:3: [tenant \"a\"] max_file_life = '0': must be at least 1"},
            {"max_file_life = 1w\n",
             "T:3: [tenant \"a\"] max_file_life = '1w': expected seconds with an optional s, m, h "
             "or d suffix, or \"unlimited\""},
            {"max_concurrent_uploads = 0\n",
             "T:3: [tenant \"a\"] max_concurrent_uploads = '0': must be at least 1"},
            {"max_concurrent_uploads = 4K\n",
             "T:3: [tenant \"a\"] max_concurrent_uploads = '4K': expected a whole number, or "
             "\"unlimited\""},
            {"max_incomplete_uploads = 0\n",
             "T:3: [tenant \"a\"] max_incomplete_uploads = '0': must be at least 1"},
            {"max_incomplete_uploads = many\n", "T:3: [tenant \"a\"] max_incomplete_uploads"},
            {"[tenant \"a\"]\n", "T:3: duplicate [tenant \"a\"]"},
            {"[tenant \"b\"]\n", "T:3: [tenant \"b\"] has neither token_key nor xmpp_secret"},
            {"[tenant \"b\"]\nmax_stored = 1G\n[server]\n",
             "T:3: [tenant \"b\"] has neither token_key nor xmpp_secret"},
        };
        for (size_t i = 0; i < sizeof(after_key) / sizeof(after_key[0]); i++) {
                tenant_text(buf[n], sizeof(buf[n]), after_key[i].content);
                n++;
        }
        struct file_case cases[64];
        for (size_t i = 0; i < sizeof(after_key) / sizeof(after_key[0]); i++)
                cases[i] = (struct file_case){buf[i], after_key[i].want};
        size_t ncases = sizeof(after_key) / sizeof(after_key[0]);

        /* cases of their own */
#define CASE(want_, ...)                                                                           \
        do {                                                                                       \
                snprintf(buf[n], sizeof(buf[n]), __VA_ARGS__);                                     \
                cases[ncases++] = (struct file_case){buf[n++], want_};                             \
        } while (0)
        CASE("T:1: tenant name '' must be 1 to 64 letters", "[tenant \"\"]\ntoken_key = %s\n", k);
        CASE("T:1: tenant name 'a b'", "[tenant \"a b\"]\ntoken_key = %s\n", k);
        CASE("T:1: tenant name 'a/b'", "[tenant \"a/b\"]\n");
        CASE("T:1: tenant name 'a\"b'", "[tenant \"a\"b\"]\n");
        CASE("T:1: expected [tenant \"NAME\"]", "[tenant acme]\ntoken_key = %s\n", k);
        CASE("T:1: expected [tenant \"NAME\"]", "[tenant \"acme]\n");
        CASE("T:1: unknown section [tenants \"a\"]", "[tenants \"a\"]\n");
        CASE("T:1: unknown section [tenant]", "[tenant]\n");
        CASE("T:1: [tenant \"a\"] has neither token_key nor xmpp_secret", "[tenant \"a\"]\n");
        CASE("T:2: [tenant \"a\"] token_key = '0123456789abcdeg:",
             "[tenant \"a\"]\ntoken_key = 0123456789abcdeg:%s\n", good_pub);
        CASE("the key id must be 16 hex digits", "[tenant \"a\"]\ntoken_key = 00%s\n", k);
        CASE("T:2: [tenant \"a\"] token_key = ':", "[tenant \"a\"]\ntoken_key = :%s\n", good_pub);
        CASE("the public key must be 64 hex digits", "[tenant \"a\"]\ntoken_key = %.80s\n", k);
        CASE("the public key must be 64 hex digits", "[tenant \"a\"]\ntoken_key = %s0\n", k);
        CASE("the public key must be 64 hex digits", "[tenant \"a\"]\ntoken_key = %s:\n", k);
        CASE("the public key must be 64 hex digits", "[tenant \"a\"]\ntoken_key = %.16s:%.63sx\n",
             k, good_pub);
        CASE("the public key must be 64 hex digits", "[tenant \"a\"]\ntoken_key = %.16s: %s\n", k,
             good_pub);
        CASE("T:2: [tenant \"a\"] token_key = '0123456789abcdef:0000000000000000000000000000000000"
             "000000000000000000000000000000': not a usable Ed25519 public key",
             "[tenant \"a\"]\ntoken_key = %.17s%064d\n", k, 0);
        CASE("not a usable Ed25519 public key", /* the identity point: small order */
             "[tenant \"a\"]\ntoken_key = %.17s01%062d\n", k, 0);
        CASE("not a usable Ed25519 public key", /* not a point on the curve */
             "[tenant \"a\"]\ntoken_key = %.17s02%062d\n", k, 0);
        CASE("T:3: [tenant \"a\"] token_key: key id 0123456789abcdef is there twice",
             "[tenant \"a\"]\ntoken_key = %s\ntoken_key = %s\n", k, k2);
        CASE("T:2: unknown key 'token_key' in [peer \"a\"]", "[peer \"a\"]\ntoken_key = %s\n", k);
        CASE("T:2: key 'max_stored' outside any section", "; x\nmax_stored = 1\n");
#undef CASE
        check_file_cases(cases, ncases);
}

TEST(tenant_counts_and_names)
{
        char err[CHP_CONFIG_ERR_MAX], k[96], name[80];
        uint8_t pub[32];

        /* CHP_TENANT_KEYS_MAX keys in a tenant; one more is refused */
        size_t cap = 16384, off = 0;
        char *text = malloc(cap);
        REQUIRE(text);
        off += (size_t)snprintf(text + off, cap - off, "[tenant \"rotating\"]\n");
        for (int i = 0; i < CHP_TENANT_KEYS_MAX; i++) {
                token_key((uint64_t)i, (uint8_t)i, false, k, pub);
                off += (size_t)snprintf(text + off, cap - off, "token_key = %s\n", k);
        }
        struct chp_config c;
        chp_config_defaults(&c);
        CHECK_OK(load_text(&c, text, err));
        CHECK(c.ntenants == 1 && c.tenants[0].nkeys == CHP_TENANT_KEYS_MAX);
        CHECK(c.ntenants == 1 &&
              kid_is(&c.tenants[0].keys[CHP_TENANT_KEYS_MAX - 1], CHP_TENANT_KEYS_MAX - 1));
        chp_config_free(&c);
        token_key(99, 99, false, k, pub);
        snprintf(text + off, cap - off, "token_key = %s\n", k);
        CHECK_EQ(load_fresh(text, err), -EINVAL);
        CHECK(strstr(err, "T:10: [tenant \"rotating\"] token_key: more than 8 keys") != NULL);

        /* 64 characters is the longest tenant name; 65 is refused */
        token_key(1, 1, false, k, pub);
        memset(name, 'n', 64);
        name[64] = '\0';
        snprintf(text, cap, "[tenant \"%s\"]\ntoken_key = %s\n", name, k);
        CHECK_OK(load_fresh(text, err));
        memset(name, 'n', 65);
        name[65] = '\0';
        snprintf(text, cap, "[tenant \"%s\"]\ntoken_key = %s\n", name, k);
        CHECK_EQ(load_fresh(text, err), -EINVAL);
        CHECK(strstr(err, "T:1: tenant name") != NULL);
        free(text);

        /* CHP_MAX_TENANTS tenants; one more is refused */
        cap = (CHP_MAX_TENANTS + 1) * 128;
        text = malloc(cap);
        REQUIRE(text);
        off = 0;
        for (int i = 0; i < CHP_MAX_TENANTS; i++)
                off += (size_t)snprintf(text + off, cap - off, "[tenant \"t%d\"]\ntoken_key = %s\n",
                                        i, k);
        chp_config_defaults(&c);
        CHECK_OK(load_text(&c, text, err));
        CHECK_EQ(c.ntenants, CHP_MAX_TENANTS);
        CHECK(c.ntenants == CHP_MAX_TENANTS &&
              strcmp(c.tenants[CHP_MAX_TENANTS - 1].name, "t255") == 0);
        CHECK(chp_config_find_tenant(&c, "t200", 4) == &c.tenants[200]);
        chp_config_free(&c);
        snprintf(text + off, cap - off, "[tenant \"last\"]\ntoken_key = %s\n", k);
        CHECK_EQ(load_fresh(text, err), -EINVAL);
        CHECK(strstr(err, "T:513: too many tenants (at most 256)") != NULL);
        free(text);
}

struct limit_case {
        const char *key, *value;
        int rc;
        unsigned long long want;
};

TEST(tenant_limits)
{
        static const struct limit_case cases[] = {
            {"max_stored", "1", 0, 1},
            {"max_stored", "10G", 0, 10ull << 30},
            {"max_stored", "512k", 0, 512 * 1024},
            {"max_stored", "unlimited", 0, CHP_UNLIMITED},
            {"max_stored", "18446744073709551615", 0, 18446744073709551615ull},
            {"max_stored", "17179869183G", 0, 17179869183ull << 30},
            {"max_stored", "18446744073709551616", -EINVAL, 0},
            {"max_stored", "1s", -EINVAL, 0},
            {"max_uploaded_per_day", "100M", 0, 100ull << 20},
            {"max_uploaded_per_day", "unlimited", 0, CHP_UNLIMITED},
            {"max_file_size", "4G", 0, 4ull << 30},
            {"max_file_size", "unlimited ", 0, CHP_UNLIMITED}, /* libinih trims the value */
            {"max_file_life", "90", 0, 90},
            {"max_file_life", "90m", 0, 5400},
            {"max_file_life", "30d", 0, 30 * 86400},
            {"max_file_life", "unlimited", 0, CHP_UNLIMITED},
            {"max_file_life", "1G", -EINVAL, 0},
            {"max_concurrent_uploads", "1", 0, 1},
            {"max_concurrent_uploads", "007", 0, 7},
            {"max_concurrent_uploads", "unlimited", 0, CHP_UNLIMITED},
            {"max_concurrent_uploads", "1m", -EINVAL, 0},
            {"max_incomplete_uploads", "1000", 0, 1000},
            {"max_incomplete_uploads", "unlimitedx", -EINVAL, 0},
        };
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
                const struct limit_case *l = &cases[i];
                char text[400], line[128], err[CHP_CONFIG_ERR_MAX];
                snprintf(line, sizeof(line), "%s = %s\n", l->key, l->value);
                tenant_text(text, sizeof(text), line);
                struct chp_config c;
                chp_config_defaults(&c);
                int rc = load_text(&c, text, err);
                unsigned long long got = 0;
                if (rc == 0 && c.ntenants == 1) {
                        const struct chp_tenant_config *t = &c.tenants[0];
                        got = strcmp(l->key, "max_stored") == 0 ? t->max_stored
                              : strcmp(l->key, "max_uploaded_per_day") == 0
                                  ? t->max_uploaded_per_day
                              : strcmp(l->key, "max_file_size") == 0 ? t->max_file_size
                              : strcmp(l->key, "max_file_life") == 0 ? t->max_file_life
                              : strcmp(l->key, "max_concurrent_uploads") == 0
                                  ? t->max_concurrent_uploads
                                  : t->max_incomplete_uploads;
                }
                bool ok = rc == l->rc && (rc != 0 || got == l->want);
                if (!ok)
                        fprintf(stderr,
                                "  case %zu (%s = %s): rc %d got %llu, want rc %d %llu (%s)\n", i,
                                l->key, l->value, rc, got, l->rc, l->want, err);
                CHECK(ok);
                chp_config_free(&c);
        }
}

/* ---- the no-tenant rule ------------------------------------------------------------------- */

struct access_case {
        const char *file; /* a config file's text, or NULL */
        int argc;
        const char *argv[6];
        const char *want; /* NULL: accepted; else the message's beginning */
};

#define NO_TENANT_MSG(flag, addr)                                                                  \
        flag " " addr " is not a loopback address and no tenant is configured, so anyone who "     \
             "reaches it could upload; configure a [tenant \"NAME\"] with a token_key (chapard "   \
             "tenant-key makes one), or pass --open (open = true in [server]) to take uploads "    \
             "without a token from any address"

TEST(no_tenant_rule)
{
        char k[96], tenant[256], err[CHP_CONFIG_ERR_MAX];
        uint8_t pub[32];
        token_key(7, 7, false, k, pub);
        snprintf(tenant, sizeof(tenant),
                 "[server]\nlisten = 0.0.0.0:0\n[tenant \"m\"]\ntoken_key = %s\n", k);
        const struct access_case cases[] = {
            {NULL, 0, {NULL}, NULL}, /* the defaults: 127.0.0.1:7700 and 127.0.0.1:7780 */
            {NULL, 4, {"--listen", "127.0.0.1:0", "--http", "off"}, NULL},
            {NULL, 4, {"--listen", "[::1]:0", "--http", "localhost:0"}, NULL},
            {NULL, 4, {"--listen", "127.3.2.1:0", "--http", "[::1]:0"}, NULL},
            {NULL, 2, {"--listen", "0.0.0.0:7700"}, NO_TENANT_MSG("--listen", "0.0.0.0:7700")},
            {NULL, 2, {"--http", "0.0.0.0:7780"}, NO_TENANT_MSG("--http", "0.0.0.0:7780")},
            {NULL, 4, {"--listen", "[::]:0", "--http", "off"}, "--listen [::]:0 is not a loopback"},
            {NULL, 2, {"--listen", "10.1.2.3:7700"}, "--listen 10.1.2.3:7700 is not a loopback"},
            {NULL, 2, {"--listen", "relay.example.org:7700"}, "--listen relay.example.org:7700"},
            {NULL, 2, {"--listen", "[::ffff:127.0.0.1]:0"}, "--listen [::ffff:127.0.0.1]:0 is not"},
            {NULL,
             4,
             {"--listen", "0.0.0.0:0", "--http", "0.0.0.0:0"},
             "--listen 0.0.0.0:0 is not"},
            {NULL, 3, {"--listen", "0.0.0.0:7700", "--open"}, NULL},
            {NULL, 3, {"--open", "--http", "[::]:0"}, NULL},
            {NULL, 5, {"--listen", "0.0.0.0:0", "--http", "0.0.0.0:0", "--open"}, NULL},
            {"[server]\nlisten = 0.0.0.0:0\n", 0, {NULL}, "--listen 0.0.0.0:0 is not a loopback"},
            {"[server]\nlisten = 0.0.0.0:0\nopen = true\n", 0, {NULL}, NULL},
            {"[server]\nlisten = 0.0.0.0:0\nopen = false\n", 1, {"--open"}, NULL},
            {"[server]\nopen = yes\n", 2, {"--http", "0.0.0.0:0"}, NULL},
            /* a tenant lifts the rule: every upload then needs one of its tokens */
            {tenant, 0, {NULL}, NULL},
            {tenant, 2, {"--http", "0.0.0.0:0"}, NULL},
            {tenant, 1, {"--open"}, NULL},
        };
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
                const struct access_case *a = &cases[i];
                struct chp_config c;
                chp_config_defaults(&c);
                int rc = a->file ? load_text(&c, a->file, err) : 0;
                if (!rc)
                        rc = chp_config_parse_args(&c, a->argc, (char **)a->argv, err);
                if (rc) {
                        fprintf(stderr, "  case %zu: %s\n", i, err);
                        CHECK_OK(rc);
                        chp_config_free(&c);
                        continue;
                }
                rc = chp_config_finish(&c, err);
                char err2[CHP_CONFIG_ERR_MAX];
                int rc2 = chp_config_check_access(&c, err2);
                bool ok = a->want ? rc == -EINVAL && strncmp(err, a->want, strlen(a->want)) == 0 &&
                                        rc2 == -EINVAL && strcmp(err, err2) == 0
                                  : rc == 0 && rc2 == 0;
                if (!ok)
                        fprintf(stderr, "  case %zu: rc %d, err \"%s\", want %s\n", i, rc, err,
                                a->want ? a->want : "success");
                CHECK(ok);
                chp_config_free(&c);
        }
        /* the rule comes after --insecure-plaintext's, whose message is the one shown */
        struct chp_config c;
        chp_config_defaults(&c);
        CHECK_OK(ARGS(&c, err, "--listen", "0.0.0.0:1", "--insecure-plaintext"));
        CHECK_EQ(chp_config_finish(&c, err), -EINVAL);
        CHECK(strstr(err, "--insecure-plaintext is allowed only") != NULL);
        chp_config_free(&c);
}

TEST(describe_access)
{
        char k[96], text[512], err[CHP_CONFIG_ERR_MAX], buf[128];
        uint8_t pub[32];
        token_key(7, 7, false, k, pub);
        struct chp_config c;
        chp_config_defaults(&c);
        CHECK(strcmp(chp_config_describe_access(&c, buf, sizeof(buf)),
                     "no tenant configured: uploads, offers and pull-through only from loopback "
                     "clients") == 0);
        c.open = true;
        CHECK(strcmp(chp_config_describe_access(&c, buf, sizeof(buf)),
                     "--open: uploads, offers and pull-through without a token from any "
                     "address") == 0);
        chp_config_free(&c);
        snprintf(text, sizeof(text),
                 "[tenant \"x\"]\ntoken_key = %s\n[tenant \"y\"]\ntoken_key = %s\n", k, k);
        chp_config_defaults(&c);
        REQUIRE_OK(load_text(&c, text, err));
        CHECK(strcmp(chp_config_describe_access(&c, buf, sizeof(buf)),
                     "2 tenants: uploads, offers and pull-through need a token") == 0);
        c.open = true;
        CHECK(strcmp(chp_config_describe_access(&c, buf, sizeof(buf)),
                     "--open and 2 tenants: uploads, offers and pull-through without a token "
                     "from any address") == 0);
        chp_config_free(&c);
}

/* ---- reload ------------------------------------------------------------------------------- */

struct changes {
        int n;
        char keys[8][32];
};

static void note_change(void *ctx, const char *key)
{
        struct changes *ch = ctx;
        if (ch->n < 8)
                snprintf(ch->keys[ch->n], sizeof(ch->keys[0]), "%s", key);
        ch->n++;
}

/* A finished configuration from text and flags, as load_config in main.c makes it. */
static int load_finished(struct chp_config *c, const char *text, int argc, const char **argv,
                         char err[CHP_CONFIG_ERR_MAX])
{
        chp_config_defaults(c);
        int rc = load_text(c, text, err);
        if (!rc)
                rc = chp_config_parse_args(c, argc, (char **)argv, err);
        if (!rc)
                rc = chp_config_finish(c, err);
        return rc;
}

TEST(reload_tenants)
{
        char k1[96], k2[96], k3[96], text[1024], err[CHP_CONFIG_ERR_MAX];
        uint8_t p1[32], p2[32], p3[32];
        token_key(1, 1, false, k1, p1);
        token_key(2, 2, false, k2, p2);
        token_key(3, 3, false, k3, p3);
        struct chp_config running;
        snprintf(text, sizeof(text),
                 "[server]\nlisten = 0.0.0.0:0\nopen = true\n"
                 "[tenant \"a\"]\ntoken_key = %s\nmax_stored = 1G\n"
                 "[tenant \"b\"]\ntoken_key = %s\n",
                 k1, k2);
        REQUIRE_OK(load_finished(&running, text, 0, NULL, err));

        /* a reload rotates a's keys, changes its limit, drops b, adds c: all at once, and none
         * of it is a change that needs a restart */
        struct chp_config next;
        snprintf(text, sizeof(text),
                 "[server]\nlisten = 0.0.0.0:0\nopen = on\n"
                 "[tenant \"a\"]\ntoken_key = %s\ntoken_key = %s\nmax_stored = 2G\n"
                 "[tenant \"c\"]\ntoken_key = %s\n",
                 k1, k3, k2);
        REQUIRE_OK(load_finished(&next, text, 0, NULL, err));
        struct changes ch = {0};
        CHECK_OK(chp_config_keep_restart_settings(&next, &running, note_change, &ch));
        CHECK_EQ(ch.n, 0);
        CHECK(next.open);
        REQUIRE(next.ntenants == 2);
        CHECK(strcmp(next.tenants[0].name, "a") == 0 && next.tenants[0].nkeys == 2);
        CHECK(memcmp(next.tenants[0].keys[1].pub, p3, 32) == 0);
        CHECK_EQ(next.tenants[0].max_stored, 2ull << 30);
        CHECK(strcmp(next.tenants[1].name, "c") == 0);
        CHECK(chp_config_find_tenant(&next, "b", 1) == NULL);
        CHECK_OK(chp_config_check_access(&next, err));
        /* the running snapshot is untouched */
        CHECK(running.ntenants == 2 && running.tenants[0].nkeys == 1 && running.open);
        CHECK_EQ(running.tenants[0].max_stored, 1ull << 30);
        chp_config_free(&next);

        /* a file that moves the listener to loopback and drops open and every tenant passes on
         * its own,
         * but the relay keeps listening on 0.0.0.0 until a restart: the reload is refused */
        REQUIRE_OK(load_finished(&next, "[server]\nlisten = 127.0.0.1:0\n", 0, NULL, err));
        ch = (struct changes){0};
        CHECK_OK(chp_config_keep_restart_settings(&next, &running, note_change, &ch));
        CHECK(ch.n == 1 && strcmp(ch.keys[0], "listen") == 0);
        CHECK(strcmp(next.listen, "0.0.0.0:0") == 0);
        CHECK_EQ(chp_config_check_access(&next, err), -EINVAL);
        CHECK(strncmp(err, "--listen 0.0.0.0:0 is not a loopback address", 44) == 0);
        chp_config_free(&next);

        /* dropping open but keeping a tenant is fine too: its tokens are checked */
        snprintf(text, sizeof(text),
                 "[server]\nlisten = 127.0.0.1:0\n[tenant \"a\"]\ntoken_key = %s\n", k1);
        REQUIRE_OK(load_finished(&next, text, 0, NULL, err));
        CHECK_OK(chp_config_keep_restart_settings(&next, &running, NULL, NULL));
        CHECK(strcmp(next.listen, "0.0.0.0:0") == 0 && !next.open);
        CHECK_OK(chp_config_check_access(&next, err));
        chp_config_free(&next);

        /* the same with --open is fine */
        const char *open_flag[] = {"--open"};
        REQUIRE_OK(load_finished(&next, "[server]\nlisten = 127.0.0.1:0\n", 1, open_flag, err));
        CHECK_OK(chp_config_keep_restart_settings(&next, &running, NULL, NULL));
        CHECK_OK(chp_config_check_access(&next, err));
        chp_config_free(&next);
        chp_config_free(&running);
}

/* [server] audience = NAME: repeatable, a token audience name, each once; a reload takes the
 * file's own list. */
TEST(audience_names)
{
        char err[CHP_CONFIG_ERR_MAX];
        struct chp_config c;
        chp_config_defaults(&c);
        CHECK_EQ(c.naudiences, 0);
        CHECK_OK(load_text(&c, "[server]\naudience = relays.example.org\naudience = eu-1\n", err));
        REQUIRE(c.naudiences == 2);
        CHECK(strcmp(c.audiences[0], "relays.example.org") == 0);
        CHECK(strcmp(c.audiences[1], "eu-1") == 0);

        struct chp_config next;
        REQUIRE_OK(load_finished(&next, "[server]\naudience = other\n", 0, NULL, err));
        struct changes ch = {0};
        CHECK_OK(chp_config_keep_restart_settings(&next, &c, note_change, &ch));
        CHECK_EQ(ch.n, 0);
        CHECK(next.naudiences == 1 && strcmp(next.audiences[0], "other") == 0);
        chp_config_free(&next);
        chp_config_free(&c);

        CHECK_EQ(load_fresh("[server]\naudience = Relays\n", err), -EINVAL);
        CHECK(strcmp(err, "T:2: audience = 'Relays': expected a name of 1 to 63 lowercase "
                          "letters, digits, '.', '_' or '-'") == 0);
        CHECK_EQ(load_fresh("[server]\naudience =\n", err), -EINVAL);
        CHECK_EQ(load_fresh("[server]\naudience = a\naudience = a\n", err), -EINVAL);
        CHECK(strcmp(err, "T:3: audience = 'a' is there twice") == 0);
        char text[1024] = "[server]\n";
        for (int i = 0; i <= CHP_AUDIENCES_MAX; i++) {
                size_t n = strlen(text);
                snprintf(text + n, sizeof(text) - n, "audience = n%d\n", i);
        }
        CHECK_EQ(load_fresh(text, err), -EINVAL);
        CHECK(strstr(err, "too many audience names (at most 16)") != NULL);
        CHECK_EQ(load_fresh("[store]\naudience = a\n", err), -EINVAL);
}

HARNESS_MAIN()
