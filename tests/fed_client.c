/* fed_client — what tests/fed_limits.sh needs of the native protocol that the chapar command
 * does not do on purpose: an upload left open, and a pull-through request for any file id.
 *
 *   fed_client partial ADDR SEED SENT   opens an upload of an 8-chunk file (64 KiB chunks,
 *                                       contents from SEED), sends SENT chunks and never commits;
 *                                       prints the file id
 *   fed_client pull ADDR FILE ORIGIN-KEY [ONCE]
 *                                       GET_MANIFEST of FILE (hex) naming ORIGIN-KEY (hex) as its
 *                                       origin, asked again every 100 ms while the relay answers
 *                                       FETCHING (only once with ONCE = "once"); prints
 *                                       "manifest complete|partial", "fetching" or
 *                                       "error CODE MESSAGE"
 * Exit: 0 a manifest, 1 an ERROR, 2 still fetching (once, or after 60 s), 3 usage or transport.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "hash.h"
#include "native_client.h"

#define CHUNK  65536u
#define CHUNKS 8u

static int partial(const char *addr, unsigned seed, unsigned sent)
{
        struct rc_conn c;
        struct rc_file f;
        uint8_t upload_id[CHP_UPLOAD_ID_BYTES], *missing = NULL;
        bool complete;
        struct rc_put_stats st = {0};
        char hex[CHP_HASH_HEXBYTES];
        int rc = rc_file_make(&f, (uint64_t)CHUNK * CHUNKS, CHUNK, seed, seed);
        if (rc)
                return 3;
        if ((rc = rc_dial(&c, addr, false, 10000)) == 0 &&
            (rc = rc_open(&c, &f, upload_id, &missing, &complete)) == 0)
                rc = rc_send_chunks(&c, &f, upload_id, missing, sent, &st);
        if (rc)
                fprintf(stderr, "fed_client: partial upload to %s failed: %s\n", addr,
                        c.last_msg[0] ? c.last_msg : chp_strerror(rc));
        else {
                chp_hex_encode(f.file_id, CHP_HASH_BYTES, hex);
                printf("%s\n", hex);
        }
        free(missing);
        rc_close(&c);
        rc_file_free(&f);
        return rc ? 3 : 0;
}

static int pull(const char *addr, const char *file, const char *origin, bool once)
{
        uint8_t id[CHP_HASH_BYTES], key[CHP_KEY_BYTES], q[CHP_HASH_BYTES + CHP_KEY_BYTES + 2];
        if (chp_hex_decode(file, strlen(file), id, sizeof(id)) != 0 ||
            chp_hex_decode(origin, strlen(origin), key, sizeof(key)) != 0) {
                fprintf(stderr, "fed_client: FILE and ORIGIN-KEY are 64 hex digits\n");
                return 3;
        }
        /* the origin's address is the peer's configured one: the relay never uses this one */
        struct chp_msg_file_req r = {.file_id = id,
                                     .has_origin = true,
                                     .origin_key = key,
                                     .origin_addr = "x",
                                     .addr_len = 1};
        ssize_t n = chp_msg_file_req_encode(q, sizeof(q), &r);
        struct rc_conn c;
        if (n < 0 || rc_dial(&c, addr, false, 10000) != 0) {
                fprintf(stderr, "fed_client: cannot reach %s: %s\n", addr, c.last_msg);
                rc_close(&c);
                return 3;
        }
        int out = 2;
        for (int tries = 0; tries < 600; tries++) {
                struct chp_frame_header h;
                uint8_t *reply;
                struct chp_msg_manifest mm;
                int rc = rc_call(&c, CHP_F_GET_MANIFEST, q, (size_t)n, &h, &reply);
                if (rc == CHP_EREMOTE && c.last_error == CHP_WE_FETCHING) {
                        if (once)
                                break;
                        struct timespec ts = {0, 100 * 1000000L};
                        nanosleep(&ts, NULL);
                        continue;
                }
                if (rc == CHP_EREMOTE) {
                        printf("error %u %s\n", c.last_error, c.last_msg);
                        out = 1;
                } else if (rc || chp_msg_manifest_decode(reply, h.len, &mm) != 0) {
                        fprintf(stderr, "fed_client: %s\n", c.last_msg);
                        out = 3;
                } else {
                        printf("manifest %s\n",
                               mm.state == CHP_UPLOAD_COMPLETE ? "complete" : "partial");
                        out = 0;
                }
                break;
        }
        if (out == 2)
                printf("fetching\n");
        rc_close(&c);
        return out;
}

int main(int argc, char **argv)
{
        if (argc == 5 && strcmp(argv[1], "partial") == 0)
                return partial(argv[2], (unsigned)strtoul(argv[3], NULL, 10),
                               (unsigned)strtoul(argv[4], NULL, 10));
        if ((argc == 5 || argc == 6) && strcmp(argv[1], "pull") == 0)
                return pull(argv[2], argv[3], argv[4], argc == 6 && strcmp(argv[5], "once") == 0);
        fprintf(stderr, "usage: fed_client partial ADDR SEED SENT | pull ADDR FILE ORIGIN-KEY "
                        "[once]\n");
        return 3;
}
