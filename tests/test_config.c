/* Configuration: defaults, the INI file overlay, flags over the file, every refusal with its
 * PATH:LINE or flag in the message, peers, number/size/duration edge cases, addresses, and the
 * cross-field rules of chp_config_finish. */
#include "harness.h"

#include <errno.h>
#include <unistd.h>

#include "config.h"

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
        CHECK(c.ready_file == NULL);
        CHECK_EQ(c.log_level, CHP_LOG_INFO);
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
        CHECK_EQ(c.memory_limit, 1ll << 30);
        CHECK_EQ(c.npeers, 0);

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
                          "ready_file = /run/chapar.ready\n"
                          "log_level = debug\n"
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
                          "memory_limit = 2G\n"
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
        CHECK(c.ready_file && strcmp(c.ready_file, "/run/chapar.ready") == 0);
        CHECK_EQ(c.log_level, CHP_LOG_DEBUG);
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
        CHECK_EQ(c.memory_limit, 2ll << 30);
        CHECK_EQ(c.store.inline_max, 4096);
        CHECK_EQ(c.store.map_size, 1ll << 30);
        CHECK_EQ(c.store.segment_size, 64ll << 20);
        CHECK(c.store.compact_ratio == 0.25);

        CHECK_OK(chp_config_finish(&c, err));
        CHECK(strcmp(c.store.dir, "/var/lib/chapar") == 0);
        CHECK_EQ(c.store.sync, CHP_SYNC_NONE);
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
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
                char err[CHP_CONFIG_ERR_MAX];
                int rc = load_fresh(cases[i].content, err);
                bool ok = rc == -EINVAL && strstr(err, cases[i].want) != NULL;
                if (!ok)
                        fprintf(stderr, "  case %zu: rc %d, err \"%s\", want \"%s\"\n", i, rc, err,
                                cases[i].want);
                CHECK(ok);
        }
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
                bool ok = rc == k->rc && (rc != 0 || got == k->want);
                if (!ok)
                        fprintf(stderr, "  case %zu (%s = %s): rc %d got %llu, want rc %d %llu\n",
                                i, k->key, k->value, rc, got, k->rc, k->want);
                CHECK(ok);
                chp_config_free(&c);
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
            {1, {"--insecure-plaintext=yes"}, "--insecure-plaintext takes no value"},
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
                CHECK_OK(ARGS(&c, err, "--listen", bad_listen[i]));
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

HARNESS_MAIN()
