/* bench_native.c — one upload and one download of an N MiB file over the native protocol,
 * against a running chapard (its address as the argument), reported as MB/s.
 *
 *   bench_native HOST:PORT [--mib N] [--chunk KIB] [--rounds R]
 *
 * The file's chunks are generated and hashed before the clock starts (a client encrypts and
 * hashes anyway; the relay's work is what is measured). Each round uploads a fresh file (no
 * dedup) and downloads it back without keeping or hashing the bytes (on a 2-core machine the
 * client's SHA-256 and page faults would be measured, not the relay), then once more, untimed,
 * with every chunk's address checked and the whole compared. MB = 10^6 bytes.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "native_client.h"
#include "net.h"

int main(int argc, char **argv)
{
        if (argc < 2) {
                fprintf(stderr, "usage: bench_native HOST:PORT [--mib N] [--chunk KIB] "
                                "[--rounds R]\n");
                return 1;
        }
        unsigned mib = 256, chunk_kib = 1024, rounds = 3;
        for (int i = 2; i + 1 < argc; i += 2) {
                unsigned v = (unsigned)strtoul(argv[i + 1], NULL, 10);
                if (strcmp(argv[i], "--mib") == 0)
                        mib = v;
                else if (strcmp(argv[i], "--chunk") == 0)
                        chunk_kib = v;
                else if (strcmp(argv[i], "--rounds") == 0)
                        rounds = v;
        }
        struct rc_conn c;
        int rc = rc_connect(&c, argv[1]);
        if (rc) {
                fprintf(stderr, "bench_native: cannot connect to %s: %d\n", argv[1], rc);
                return 2;
        }
        printf("round  upload MB/s  download MB/s  (%u MiB, %u KiB chunks)\n", mib, chunk_kib);
        for (unsigned r = 0; r < rounds; r++) {
                struct rc_file f;
                if (rc_file_make(&f, (uint64_t)mib << 20, chunk_kib * 1024, (uint32_t)(time(NULL) + r),
                                 r) != 0)
                        return 2;
                struct rc_put_stats st;
                double t0 = chp_net_now_s();
                rc = rc_put(&c, &f, &st);
                double t1 = chp_net_now_s();
                uint64_t len = 0;
                if (!rc)
                        rc = rc_fetch(&c, f.file_id, NULL, &len, false);
                double t2 = chp_net_now_s();
                /* untimed: the bytes that came back are the bytes that went in */
                uint8_t *out = NULL;
                uint64_t len2 = 0;
                if (!rc)
                        rc = rc_get(&c, f.file_id, &out, &len2);
                if (rc || len != f.total || len2 != f.total || memcmp(out, f.data, len) != 0) {
                        fprintf(stderr, "bench_native: round %u failed: %d %s\n", r, rc,
                                c.last_msg);
                        return 3;
                }
                printf("%5u  %11.1f  %13.1f\n", r, (double)f.total / (t1 - t0) / 1e6,
                       (double)f.total / (t2 - t1) / 1e6);
                fflush(stdout);
                free(out);
                rc_file_free(&f);
        }
        rc_close(&c);
        return 0;
}
