/* pc_client.c — a program that knows libchapar only as installed: built by install_prefix.sh
 * with nothing but `pkg-config --cflags --libs [--static] chapar`, it puts a file through a real
 * relay and gets it back, through the public API alone (chapar.h).
 *
 *   pc_client HOST:PORT RELAY-KEY-HEX FILE OUT   exit 0 when OUT was written from FILE's ticket
 */
#include <chapar.h>

#include <stdio.h>
#include <string.h>

static int hex_key(const char *hex, uint8_t key[CHAPAR_KEY_BYTES])
{
        if (strlen(hex) != 2 * CHAPAR_KEY_BYTES)
                return -1;
        for (size_t i = 0; i < CHAPAR_KEY_BYTES; i++) {
                unsigned v;
                if (sscanf(hex + 2 * i, "%2x", &v) != 1)
                        return -1;
                key[i] = (uint8_t)v;
        }
        return 0;
}

int main(int argc, char **argv)
{
        uint8_t key[CHAPAR_KEY_BYTES];
        if (argc != 5 || hex_key(argv[2], key) != 0) {
                fprintf(stderr, "usage: pc_client HOST:PORT RELAY-KEY-HEX FILE OUT\n");
                return 1;
        }
        struct chapar_opts o = {.relay = argv[1], .relay_key = key, .cache_dir = ""};
        struct chapar_client *c = NULL;
        struct chapar_put_opts po = {0};
        struct chapar_put_result pr;
        struct chapar_get_result gr;
        int rc = chapar_connect(&o, &c);
        if (!rc)
                rc = chapar_put_path(c, argv[3], &po, &pr);
        if (!rc)
                rc = chapar_get(c, pr.ticket, argv[4], NULL, &gr);
        if (rc) {
                fprintf(stderr, "pc_client: %s (%s)\n", chapar_strerror(rc),
                        c ? chapar_last_error(c) : "");
                chapar_close(c);
                return 2;
        }
        printf("%s\n", pr.ticket);
        chapar_close(c);
        return 0;
}
