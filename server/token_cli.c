/* token_cli.c — chapard tenant-key and chapard token (see token_cli.h and docs/tokens.md). */
#include "token_cli.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#include "err.h"
#include "hash.h"
#include "token.h"

#define KEY_HEADER     "chapar-tenant-key 1\n"
#define KEY_FILE_BYTES (sizeof(KEY_HEADER) - 1 + 5 + 64 + 1 + 7 + 64 + 1)
#define MAX_KEY_LINES  8

/* Defaults of chapard token (docs/tokens.md lists them). */
#define DEFAULT_TTL       3600
#define DEFAULT_BYTES     (1ull << 30)
#define DEFAULT_FILES     100
#define DEFAULT_FILE_LIFE (30u * 86400)
#define DEFAULT_SUBJECT   "operator"

static int token_usage(void)
{
        fprintf(stderr,
                "usage: chapard tenant-key --out FILE\n"
                "       chapard token --key FILE --tenant NAME [--ttl SECONDS] [--bytes N]\n"
                "                     [--scope upload,offer,pull] [--audience RELAY-KEY|NAME]\n"
                "                     [--subject S] [--files N] [--file-life SECONDS]\n"
                "                     [--file-id ID]\n"
                "       chapard token --verify TOKEN --key-line KID:PUBLIC-KEY [--key-line ...]\n"
                "                     [--tenant NAME] [--audience RELAY-KEY|NAME]\n"
                "                     [--scope upload,offer,pull]\n");
        return 2;
}

/* ---- the key file ---------------------------------------------------------------------------- */

int chp_token_cli_tenant_key(int argc, char **argv)
{
        if (argc != 2 || strcmp(argv[0], "--out") != 0)
                return token_usage();
        const char *path = argv[1];
        uint8_t seed[CHP_TOKEN_SEED_BYTES];
        char text[KEY_FILE_BYTES + 1], hseed[2 * CHP_TOKEN_SEED_BYTES + 1];
        char hpub[2 * CHP_TOKEN_PUB_BYTES + 1], line[CHP_TOKEN_KEY_LINE_MAX];
        struct chp_token_key key;
        randombytes_buf(seed, sizeof(seed));
        chp_token_key_from_seed(seed, &key);
        chp_hex_encode(seed, sizeof(seed), hseed);
        chp_hex_encode(key.pub, sizeof(key.pub), hpub);
        int n = snprintf(text, sizeof(text), KEY_HEADER "seed %s\npublic %s\n", hseed, hpub);
        int rc = 1;
        int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (fd < 0) {
                fprintf(stderr, "chapard tenant-key: cannot create %s: %s%s\n", path,
                        strerror(errno), errno == EEXIST ? " (a key is never overwritten)" : "");
                goto out;
        }
        if (write(fd, text, (size_t)n) != n || fsync(fd) != 0) {
                fprintf(stderr, "chapard tenant-key: cannot write %s\n", path);
                unlink(path);
                goto out;
        }
        chp_token_key_format(&key, line);
        printf("wrote %s: keep it secret, it mints tokens for the tenant\n", path);
        printf("token_key = %s\n", line);
        rc = 0;
out:
        if (fd >= 0)
                close(fd);
        sodium_memzero(seed, sizeof(seed));
        sodium_memzero(hseed, sizeof(hseed));
        sodium_memzero(text, sizeof(text));
        return rc;
}

/* Reads a tenant key file's seed, checking its owner, mode, form and public half. */
static int load_seed(const char *path, uint8_t seed[CHP_TOKEN_SEED_BYTES])
{
        char text[KEY_FILE_BYTES + 1];
        uint8_t s[CHP_TOKEN_SEED_BYTES], pub[CHP_TOKEN_PUB_BYTES];
        struct chp_token_key key;
        struct stat st;
        int rc = -EINVAL;
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0) {
                fprintf(stderr, "chapard token: cannot read %s: %s\n", path, strerror(errno));
                return -ENOENT;
        }
        if (fstat(fd, &st) != 0 || st.st_uid != geteuid() || (st.st_mode & 077)) {
                fprintf(stderr,
                        "chapard token: %s must belong to this user and have mode 0600 (it holds a "
                        "signing key): chmod 600 %s\n",
                        path, path);
                close(fd);
                return -EACCES;
        }
        ssize_t n = read(fd, text, sizeof(text));
        close(fd);
        const size_t hl = sizeof(KEY_HEADER) - 1;
        if (n != (ssize_t)KEY_FILE_BYTES || memcmp(text, KEY_HEADER, hl) != 0 ||
            memcmp(text + hl, "seed ", 5) != 0 || text[hl + 69] != '\n' ||
            memcmp(text + hl + 70, "public ", 7) != 0 || text[hl + 141] != '\n' ||
            chp_hex_decode(text + hl + 5, 64, s, sizeof(s)) != 0 ||
            chp_hex_decode(text + hl + 77, 64, pub, sizeof(pub)) != 0) {
                fprintf(stderr,
                        "chapard token: %s is not a tenant key file (make one with chapard "
                        "tenant-key)\n",
                        path);
                goto out;
        }
        chp_token_key_from_seed(s, &key);
        if (sodium_memcmp(key.pub, pub, sizeof(pub)) != 0) {
                fprintf(stderr, "chapard token: %s: the public key does not belong to the seed\n",
                        path);
                goto out;
        }
        memcpy(seed, s, sizeof(s));
        rc = 0;
out:
        sodium_memzero(s, sizeof(s));
        sodium_memzero(text, sizeof(text));
        return rc;
}

/* ---- arguments ------------------------------------------------------------------------------- */

/* A decimal number 0..max, digits only, no leading zero. */
static bool parse_uint(const char *s, uint64_t max, uint64_t *out)
{
        uint64_t v = 0;
        size_t n = strlen(s);
        if (n == 0 || n > 20 || (n > 1 && s[0] == '0'))
                return false;
        for (size_t i = 0; i < n; i++) {
                if (s[i] < '0' || s[i] > '9')
                        return false;
                unsigned d = (unsigned)(s[i] - '0');
                if (d > max || v > (max - d) / 10)
                        return false;
                v = v * 10 + d;
        }
        *out = v;
        return true;
}

/* "upload,offer,pull" in any order, each at most once. */
static bool parse_scopes(const char *s, uint8_t *out)
{
        static const struct {
                const char *name;
                uint8_t bit;
        } names[] = {{"upload", CHP_TOKEN_SCOPE_UPLOAD},
                     {"offer", CHP_TOKEN_SCOPE_OFFER},
                     {"pull", CHP_TOKEN_SCOPE_PULL}};
        uint8_t v = 0;
        while (*s) {
                size_t n = strcspn(s, ",");
                uint8_t bit = 0;
                for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
                        if (strlen(names[i].name) == n && memcmp(names[i].name, s, n) == 0)
                                bit = names[i].bit;
                if (!bit || (v & bit))
                        return false;
                v |= bit;
                s += n;
                if (*s == ',' && *++s == '\0')
                        return false;
        }
        *out = v;
        return v != 0;
}

/* 64 hex digits: a relay's public key; else a federation-wide name. */
static bool parse_audience(const char *s, struct chp_token *t)
{
        size_t n = strlen(s);
        if (n == 2 * CHP_KEY_BYTES && chp_hex_decode(s, n, t->audience_key, CHP_KEY_BYTES) == 0) {
                t->audience = CHP_TOKEN_AUD_RELAY;
                return true;
        }
        if (!chp_token_name_valid(s, n))
                return false;
        t->audience = CHP_TOKEN_AUD_NAME;
        memcpy(t->audience_name, s, n + 1);
        return true;
}

struct token_args {
        const char *key_file, *tenant, *audience, *subject, *verify;
        const char *key_lines[MAX_KEY_LINES];
        size_t nkey_lines;
        const char *file_id, *token_id;
        uint64_t ttl, bytes, files, file_life, now;
        bool has_now, has_scope;
        uint8_t scopes;
};

/* The value of argv[*i]'s option, moving past it; NULL (said) when it has none or is bad. */
static bool take(int argc, char **argv, int *i, const char **out)
{
        if (*i + 1 >= argc) {
                fprintf(stderr, "chapard token: %s needs a value\n", argv[*i]);
                return false;
        }
        *out = argv[++*i];
        return true;
}

static bool take_uint(int argc, char **argv, int *i, uint64_t min, uint64_t max, uint64_t *out)
{
        const char *opt = argv[*i], *v;
        if (!take(argc, argv, i, &v))
                return false;
        if (!parse_uint(v, max, out) || *out < min) {
                fprintf(stderr, "chapard token: %s takes a number from %llu to %llu, not '%s'\n",
                        opt, (unsigned long long)min, (unsigned long long)max, v);
                return false;
        }
        return true;
}

static bool parse_args(int argc, char **argv, struct token_args *a)
{
        memset(a, 0, sizeof(*a));
        a->ttl = DEFAULT_TTL;
        a->bytes = DEFAULT_BYTES;
        a->files = DEFAULT_FILES;
        a->file_life = DEFAULT_FILE_LIFE;
        a->subject = DEFAULT_SUBJECT;
        a->scopes = CHP_TOKEN_SCOPE_UPLOAD;
        for (int i = 0; i < argc; i++) {
                const char *o = argv[i], *v;
                bool ok;
                if (strcmp(o, "--key") == 0)
                        ok = take(argc, argv, &i, &a->key_file);
                else if (strcmp(o, "--tenant") == 0)
                        ok = take(argc, argv, &i, &a->tenant);
                else if (strcmp(o, "--audience") == 0)
                        ok = take(argc, argv, &i, &a->audience);
                else if (strcmp(o, "--subject") == 0)
                        ok = take(argc, argv, &i, &a->subject);
                else if (strcmp(o, "--file-id") == 0)
                        ok = take(argc, argv, &i, &a->file_id);
                else if (strcmp(o, "--token-id") == 0)
                        ok = take(argc, argv, &i, &a->token_id);
                else if (strcmp(o, "--verify") == 0)
                        ok = take(argc, argv, &i, &a->verify);
                else if (strcmp(o, "--key-line") == 0) {
                        ok = take(argc, argv, &i, &v) && a->nkey_lines < MAX_KEY_LINES;
                        if (ok)
                                a->key_lines[a->nkey_lines++] = v;
                        else if (a->nkey_lines == MAX_KEY_LINES)
                                fprintf(stderr, "chapard token: at most %d --key-line\n",
                                        MAX_KEY_LINES);
                } else if (strcmp(o, "--ttl") == 0)
                        ok = take_uint(argc, argv, &i, 1, CHP_TOKEN_LIFE_MAX, &a->ttl);
                else if (strcmp(o, "--bytes") == 0)
                        ok = take_uint(argc, argv, &i, 0, UINT64_MAX, &a->bytes);
                else if (strcmp(o, "--files") == 0)
                        ok = take_uint(argc, argv, &i, 0, UINT32_MAX, &a->files);
                else if (strcmp(o, "--file-life") == 0)
                        ok = take_uint(argc, argv, &i, 0, UINT32_MAX, &a->file_life);
                else if (strcmp(o, "--now") == 0)
                        ok = a->has_now = take_uint(argc, argv, &i, 0, UINT64_MAX / 2, &a->now);
                else if (strcmp(o, "--scope") == 0) {
                        ok = take(argc, argv, &i, &v) && parse_scopes(v, &a->scopes);
                        a->has_scope = true;
                        if (!ok)
                                fprintf(stderr,
                                        "chapard token: --scope takes upload, offer and pull, "
                                        "comma-separated\n");
                } else {
                        fprintf(stderr, "chapard token: unknown option '%s'\n", o);
                        ok = false;
                }
                if (!ok)
                        return false;
        }
        if (!a->has_now)
                a->now = (uint64_t)time(NULL);
        return true;
}

/* ---- minting --------------------------------------------------------------------------------- */

static int mint(const struct token_args *a)
{
        struct chp_token t;
        memset(&t, 0, sizeof(t));
        t.version = CHP_TOKEN_VERSION;
        t.scopes = a->scopes;
        t.issued_at = a->now;
        t.expires_at = a->now + a->ttl;
        t.max_bytes = a->bytes;
        t.max_files = (uint32_t)a->files;
        t.max_file_life = (uint32_t)a->file_life;
        if (!a->key_file || !a->tenant) {
                fprintf(stderr, "chapard token: --key FILE and --tenant NAME are needed\n");
                return token_usage();
        }
        if (!chp_token_name_valid(a->tenant, strlen(a->tenant))) {
                fprintf(stderr, "chapard token: a tenant name is 1 to 63 of a-z 0-9 . _ -\n");
                return 2;
        }
        memcpy(t.tenant, a->tenant, strlen(a->tenant) + 1);
        if (!chp_token_subject_valid(a->subject, strlen(a->subject))) {
                fprintf(stderr, "chapard token: a subject is 1 to 64 of A-Z a-z 0-9 . _ ~ -\n");
                return 2;
        }
        memcpy(t.subject, a->subject, strlen(a->subject) + 1);
        /* by default, every relay that holds this tenant's key (docs/tokens.md, Audience) */
        if (!parse_audience(a->audience ? a->audience : a->tenant, &t)) {
                fprintf(stderr,
                        "chapard token: --audience takes a relay's public key (64 hex digits) or "
                        "a name of 1 to 63 of a-z 0-9 . _ -\n");
                return 2;
        }
        if (a->file_id) {
                if (strlen(a->file_id) != 2 * CHP_HASH_BYTES ||
                    chp_hex_decode(a->file_id, strlen(a->file_id), t.file_id, CHP_HASH_BYTES)) {
                        fprintf(stderr, "chapard token: --file-id takes 64 hex digits\n");
                        return 2;
                }
                t.has_file_id = true;
        }
        if (a->token_id) {
                if (strlen(a->token_id) != 2 * CHP_TOKEN_ID_BYTES ||
                    chp_hex_decode(a->token_id, strlen(a->token_id), t.id, CHP_TOKEN_ID_BYTES)) {
                        fprintf(stderr, "chapard token: --token-id takes 32 hex digits\n");
                        return 2;
                }
        } else {
                randombytes_buf(t.id, sizeof(t.id));
        }
        uint8_t seed[CHP_TOKEN_SEED_BYTES];
        if (load_seed(a->key_file, seed) != 0)
                return 1;
        struct chp_token_key key;
        chp_token_key_from_seed(seed, &key);
        memcpy(t.kid, key.kid, sizeof(t.kid));
        char text[CHP_TOKEN_TEXT_MAX];
        ssize_t n = chp_token_sign(&t, seed, text, sizeof(text));
        sodium_memzero(seed, sizeof(seed));
        if (n < 0) {
                fprintf(stderr, "chapard token: %s\n", chp_strerror((int)n));
                return 1;
        }
        printf("%s\n", text);
        return 0;
}

/* ---- inspecting ------------------------------------------------------------------------------ */

static void print_hex(const char *name, const uint8_t *p, size_t n)
{
        char hex[2 * CHP_HASH_BYTES + 1];
        chp_hex_encode(p, n, hex);
        printf("%s %s\n", name, hex);
}

static void print_time(const char *name, uint64_t v)
{
        char when[32] = "";
        time_t tt = (time_t)v;
        struct tm tm;
        if (v <= (uint64_t)INT32_MAX * 4 && gmtime_r(&tt, &tm))
                strftime(when, sizeof(when), " (%Y-%m-%dT%H:%M:%SZ)", &tm);
        printf("%s %llu%s\n", name, (unsigned long long)v, when);
}

static void print_token(const struct chp_token *t)
{
        printf("version %u\n", t->version);
        print_hex("key_id", t->kid, sizeof(t->kid));
        print_hex("token_id", t->id, sizeof(t->id));
        printf("tenant %s\nsubject %s\n", t->tenant, t->subject);
        if (t->audience == CHP_TOKEN_AUD_RELAY)
                print_hex("audience relay", t->audience_key, sizeof(t->audience_key));
        else
                printf("audience name %s\n", t->audience_name);
        print_time("issued_at", t->issued_at);
        print_time("expires_at", t->expires_at);
        printf("max_bytes %llu\nmax_files %u\nmax_file_life %u\n", (unsigned long long)t->max_bytes,
               t->max_files, t->max_file_life);
        printf("scopes%s%s%s\n", t->scopes & CHP_TOKEN_SCOPE_UPLOAD ? " upload" : "",
               t->scopes & CHP_TOKEN_SCOPE_OFFER ? " offer" : "",
               t->scopes & CHP_TOKEN_SCOPE_PULL ? " pull" : "");
        if (t->has_file_id)
                print_hex("file_id", t->file_id, sizeof(t->file_id));
        else
                printf("file_id none\n");
}

static int inspect(const struct token_args *a)
{
        struct chp_token_key keys[MAX_KEY_LINES];
        if (a->nkey_lines == 0) {
                fprintf(stderr, "chapard token: --verify needs at least one --key-line\n");
                return token_usage();
        }
        for (size_t i = 0; i < a->nkey_lines; i++)
                if (chp_token_key_parse(a->key_lines[i], strlen(a->key_lines[i]), &keys[i])) {
                        fprintf(stderr,
                                "chapard token: '%s' is not KID:PUBLIC-KEY (16 and 64 lowercase "
                                "hex digits, as chapard tenant-key prints it)\n",
                                a->key_lines[i]);
                        return 2;
                }
        struct chp_token_signed s;
        int rc = chp_token_parse(a->verify, strlen(a->verify), &s);
        if (rc) {
                fprintf(stderr, "chapard token: not a valid token: %s\n",
                        rc == -EBADMSG ? "malformed" : chp_strerror(rc));
                return 1;
        }
        print_token(&s.t);
        /* without --audience, the token's own; without --tenant, the token's own */
        struct chp_token aud;
        memset(&aud, 0, sizeof(aud));
        if (a->audience && !parse_audience(a->audience, &aud)) {
                fprintf(stderr, "chapard token: '%s' is neither a relay key nor a name\n",
                        a->audience);
                return 2;
        }
        const struct chp_token *want = a->audience ? &aud : &s.t;
        const char *name = want->audience_name;
        struct chp_token_policy p = {
            .tenant = a->tenant ? a->tenant : s.t.tenant,
            .keys = keys,
            .nkeys = a->nkey_lines,
            .relay_key = want->audience == CHP_TOKEN_AUD_RELAY ? want->audience_key : NULL,
            .audience_names = &name,
            .naudience_names = want->audience == CHP_TOKEN_AUD_NAME ? 1 : 0,
            .need_scopes = a->has_scope ? a->scopes : 0,
            .now = a->now,
        };
        rc = chp_token_verify(&s, &p);
        if (rc) {
                fprintf(stderr, "chapard token: not a valid token: %s\n", chp_strerror(rc));
                return 1;
        }
        printf("valid\n");
        return 0;
}

int chp_token_cli_token(int argc, char **argv)
{
        struct token_args a;
        if (!parse_args(argc, argv, &a))
                return token_usage();
        return a.verify ? inspect(&a) : mint(&a);
}
