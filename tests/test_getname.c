/* The names chapar_get gives files from a sender's name (cc_safe_name, client/get.c): paths,
 * dotfiles, controls, invalid UTF-8, bidirectional overrides, Windows device names and
 * characters, trailing dots and spaces, names too long; the numbered forms " (n)" before the
 * extension within 255 bytes; and over many random names, that every result is one safe file
 * name. */
#include "harness.h"
#include "testutil.h"

#include <errno.h>
#include <strings.h>

#include "client_int.h"
#include "http_parse.h"

static char got[CC_SAFE_NAME_MAX + 1];

/* The n-th name for sender, or "<error>". */
static const char *name_n(const char *sender, unsigned n)
{
        if (cc_safe_name(sender, n, got, sizeof(got)) < 0)
                snprintf(got, sizeof(got), "<error>");
        return got;
}

static const char *name(const char *sender)
{
        return name_n(sender, 0);
}

#define CHECK_NAME(sender, want)                                                                   \
        do {                                                                                       \
                const char *g_ = name(sender);                                                     \
                if (strcmp(g_, want) != 0) {                                                       \
                        fprintf(stderr, "  %s:%d: name(%s) = \"%s\", want \"%s\"\n", __FILE__,     \
                                __LINE__, #sender, g_, want);                                      \
                        harness_failed_now = 1;                                                    \
                }                                                                                  \
        } while (0)

/* Whether s is one safe file name: 1..255 bytes of valid UTF-8 with no separator, control,
 * Windows-refused character, leading dot or space, trailing dot or space. */
static bool safe(const char *s)
{
        size_t len = strlen(s);
        if (len == 0 || len > CC_SAFE_NAME_MAX || s[0] == '.' || s[0] == ' ' || s[len - 1] == '.' ||
            s[len - 1] == ' ')
                return false;
        for (size_t i = 0; i < len;) {
                size_t l = chp_http_utf8_len((const unsigned char *)s + i, len - i);
                unsigned char c = (unsigned char)s[i];
                if (l == 0 || (l == 1 && (c < 0x20 || c == 0x7f || strchr("/\\<>:\"|?*", c))) ||
                    (l == 2 && c == 0xc2 && (unsigned char)s[i + 1] < 0xa0))
                        return false;
                i += l;
        }
        return true;
}

TEST(paths_keep_their_last_component)
{
        CHECK_NAME("../x", "x");
        CHECK_NAME("a/../../b", "b");
        CHECK_NAME("/etc/passwd", "passwd");
        CHECK_NAME("C:\\Users\\me\\x.txt", "x.txt");
        CHECK_NAME("dir/", "chapar-download");
        CHECK_NAME("..\\..\\", "chapar-download");
}

TEST(empty_and_dots)
{
        CHECK_NAME("", "chapar-download");
        CHECK_NAME(".", "chapar-download");
        CHECK_NAME("..", "chapar-download");
        CHECK_NAME(" . ", "chapar-download");
        CHECK_NAME(".bashrc", "_bashrc");
        CHECK_NAME("..hidden", "__hidden");
        CHECK_NAME(" .profile", "_profile");
}

TEST(controls_and_windows_characters)
{
        CHECK_NAME("a\nb", "a_b");
        CHECK_NAME("\x1b[31mred", "_[31mred");
        CHECK_NAME("a\x7f", "a_");
        CHECK_NAME("a\x01\x1f"
                   "b",
                   "a__b");
        CHECK_NAME("a\xc2\x9b"
                   "b",
                   "a_b"); /* C1 CSI */
        CHECK_NAME("gpj\xe2\x80\xae"
                   "exe",
                   "gpj_exe");               /* right-to-left override */
        CHECK_NAME("x\xe2\x81\xa6y", "x_y"); /* left-to-right isolate */
        CHECK_NAME("a<b>c:d\"e|f?g*h", "a_b_c_d_e_f_g_h");
        CHECK_NAME("report.pdf. . ", "report.pdf");
        CHECK_NAME("   spaced out", "spaced out");
}

TEST(invalid_utf8)
{
        CHECK_NAME("caf\xe9.txt", "caf_.txt");
        CHECK_NAME("\xff\xfe", "__");
        CHECK_NAME("a\xc0\xaf"
                   "b",
                   "a__b");                     /* an overlong '/' */
        CHECK_NAME("\xed\xa0\x80", "___");      /* a surrogate */
        CHECK_NAME("\xf4\x90\x80\x80", "____"); /* past U+10FFFF */
        CHECK_NAME("a\xe2\x82", "a__");         /* cut short */
        CHECK_NAME("r\xc3\xa9sum\xc3\xa9.pdf", "r\xc3\xa9sum\xc3\xa9.pdf");
        CHECK_NAME("\xf0\x9f\x93\xb7.jpg", "\xf0\x9f\x93\xb7.jpg");
}

TEST(windows_device_names)
{
        CHECK_NAME("CON", "_CON");
        CHECK_NAME("con.txt", "_con.txt");
        CHECK_NAME("Aux.tar.gz", "_Aux.tar.gz");
        CHECK_NAME("NUL .txt", "_NUL .txt");
        CHECK_NAME("prn", "_prn");
        CHECK_NAME("COM1", "_COM1");
        CHECK_NAME("com0.log", "_com0.log");
        CHECK_NAME("LPT9.x", "_LPT9.x");
        CHECK_NAME("COM\xc2\xb9", "_COM\xc2\xb9");
        CHECK_NAME("conin$", "_conin$");
        CHECK_NAME("CONSOLE", "CONSOLE");
        CHECK_NAME("COM10", "COM10");
        CHECK_NAME("LPT", "LPT");
        CHECK_NAME("my CON.txt", "my CON.txt");
}

TEST(numbered_forms)
{
        CHECK(strcmp(name_n("photo.jpg", 1), "photo (1).jpg") == 0);
        CHECK(strcmp(name_n("photo.jpg", 999), "photo (999).jpg") == 0);
        CHECK(strcmp(name_n("noext", 2), "noext (2)") == 0);
        CHECK(strcmp(name_n("x.tar.gz", 2), "x (2).tar.gz") == 0);
        CHECK(strcmp(name_n(".bashrc", 1), "_bashrc (1)") == 0);
        CHECK(strcmp(name_n("", 3), "chapar-download (3)") == 0);
        CHECK(strcmp(name_n("CON.txt", 1), "_CON (1).txt") == 0);
        CHECK_EQ(cc_safe_name("x", CC_SAFE_NAME_TRIES + 1, got, sizeof(got)), -EINVAL);
        CHECK_EQ(cc_safe_name("x", 0, got, CC_SAFE_NAME_MAX), -EINVAL);
}

TEST(long_names_are_cut_keeping_the_extension)
{
        char in[400];
        memset(in, 'n', 300);
        memcpy(in + 296, ".txt", 5); /* 300 bytes */
        const char *g = name(in);
        CHECK_EQ(strlen(g), 255);
        CHECK(strcmp(g + 251, ".txt") == 0);
        g = name_n(in, 999);
        CHECK_EQ(strlen(g), 255);
        CHECK(strcmp(g + 255 - 10, " (999).txt") == 0);
        /* 2-byte characters: never cut in the middle of one */
        for (int i = 0; i < 150; i++)
                memcpy(in + 2 * i, "\xc3\xa9", 2);
        in[300] = '\0';
        g = name(in);
        CHECK_EQ(strlen(g), 254);
        CHECK(safe(g));
        g = name_n(in, 7);
        CHECK(strlen(g) <= 255 && safe(g) && strcmp(g + strlen(g) - 4, " (7)") == 0);
        /* an "extension" longer than 32 bytes is part of the name */
        memset(in, 'a', 10);
        in[10] = '.';
        memset(in + 11, 'b', 289);
        in[300] = '\0';
        g = name_n(in, 1);
        CHECK_EQ(strlen(g), 255);
        CHECK(strcmp(g + 251, " (1)") == 0);
        /* cut so that the name would end in a dot: the dot goes too */
        memset(in, 'c', 300);
        in[253] = '.';
        in[300] = '\0';
        memcpy(in, "CON.", 4);
        g = name(in);
        CHECK(safe(g));
}

/* Whether s ends in a name chapar_get gives its own partial files (case-insensitively). */
static bool partial_name(const char *s)
{
        static const char *const tails[] = {".chapar-part", ".chapar-part.state",
                                            ".chapar-part.state.tmp"};
        size_t len = strlen(s);
        for (size_t i = 0; i < sizeof(tails) / sizeof(tails[0]); i++) {
                size_t t = strlen(tails[i]);
                if (len >= t && strcasecmp(s + len - t, tails[i]) == 0)
                        return true;
        }
        return false;
}

/* A sender's name never becomes one of a partial download's own names: a file saved there would
 * be taken for a partial download of the file it names, and "resumed" without verification. */
TEST(partial_file_names_are_not_given)
{
        CHECK_NAME("photo.jpg.chapar-part", "photo.jpg_chapar-part");
        CHECK_NAME("photo.jpg.chapar-part.state", "photo.jpg_chapar-part.state");
        CHECK_NAME("photo.jpg.chapar-part.state.tmp", "photo.jpg_chapar-part.state.tmp");
        CHECK_NAME("x.CHAPAR-PART", "x_CHAPAR-PART");
        CHECK_NAME(".chapar-part", "_chapar-part");
        CHECK(!partial_name(name_n("photo.jpg.chapar-part", 1)));
        CHECK(!partial_name(name_n("photo.jpg.chapar-part.state", 2)));
        /* nor when a long name is cut to end in one: "AAA...A.chapar-part" + "ZZZ...Z.state" */
        char in[400];
        memset(in, 'A', 300);
        memcpy(in + 255 - 6 - 12, ".chapar-part", 12);
        memcpy(in + 294, ".state", 7);
        const char *g = name(in);
        CHECK(safe(g) && strlen(g) == 255 && !partial_name(g));
}

TEST(random_names_are_always_safe)
{
        static const unsigned char alphabet[] = {'a',  '.',  ' ',  '/',  '\\', 0x01, 0x1b, 0x7f,
                                                 0xc2, 0x9b, 0xc3, 0xa9, 0xe2, 0x80, 0xae, 0xf0,
                                                 0x9f, 0xff, 'C',  'O',  'N',  ':',  '*',  '1'};
        uint32_t x = 12345;
        char in[300];
        for (int round = 0; round < 20000; round++) {
                x = x * 1103515245u + 12345u;
                size_t len = (x >> 8) % 290;
                for (size_t i = 0; i < len; i++) {
                        x = x * 1103515245u + 12345u;
                        in[i] = (char)alphabet[(x >> 16) % sizeof(alphabet)];
                }
                in[len] = '\0';
                unsigned n = round % 3 == 0 ? (unsigned)(x % 1000) : 0;
                int rc = cc_safe_name(in, n, got, sizeof(got));
                if (rc < 0 || (size_t)rc != strlen(got) || !safe(got)) {
                        fprintf(stderr, "  unsafe name %d for round %d: \"%s\"\n", rc, round, got);
                        harness_failed_now = 1;
                        return;
                }
        }
}

HARNESS_MAIN()
