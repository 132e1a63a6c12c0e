/* query.c — what the relay holds of a file named by a ticket: its manifest (GET_MANIFEST,
 * checked against the file id, shared with get.c), its state (chapar_stat) and offering it to a
 * peer relay (chapar_offer). Nothing here moves a file's content.
 */
#include "client_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sodium.h>

#include "e2e.h"
#include "hash.h"
#include "manifest.h"
#include "ticket.h"

void cc_fetched_free(struct cc_fetched *f)
{
        free(f->manifest);
        free(f->present);
        memset(f, 0, sizeof(*f));
}

int cc_fetch_manifest(struct chapar_client *c, const struct chp_ticket *t, struct cc_fetched *f)
{
        const uint8_t *file_id = t->file_id;
        struct chp_frame_header h;
        uint8_t *reply, id[CHP_HASH_BYTES], q[CHP_HASH_BYTES + 33 + CHP_ORIGIN_ADDR_MAX];
        char origin[CHP_TICKET_ADDR_MAX];
        struct chp_msg_manifest mm;
        struct chp_msg_file_req fr = {.file_id = file_id};
        if (sodium_memcmp(c->relay_key, t->relay_key, CHP_KEY_BYTES) != 0 && !c->plaintext) {
                chp_ticket_relay_addr(t, origin, sizeof(origin));
                fr.has_origin = true;
                fr.origin_key = t->relay_key;
                fr.origin_addr = origin;
                fr.addr_len = (uint8_t)strnlen(origin, CHP_ORIGIN_ADDR_MAX);
        }
        ssize_t ql = chp_msg_file_req_encode(q, sizeof(q), &fr);
        if (ql < 0)
                return CHAPAR_EUSAGE;
        int rc;
        for (int tries = 0;; tries++) {
                rc = cc_call(c, CHP_F_GET_MANIFEST, q, (size_t)ql, &h, &reply);
                if (rc != CHAPAR_ERELAY || c->last_code != CHP_WE_FETCHING ||
                    tries * 100 > c->timeout_ms)
                        break;
                struct timespec ts = {0, 100 * 1000000L}; /* the relay fetches it: wait */
                nanosleep(&ts, NULL);
                if (atomic_load_explicit(&c->cancel, memory_order_relaxed))
                        return CHAPAR_ECANCELED;
        }
        if (rc)
                return rc;
        if (chp_msg_manifest_decode(reply, h.len, &mm) != 0)
                return CHAPAR_EPROTO;
        f->manifest = malloc(mm.manifest_len);
        if (!f->manifest)
                return CHAPAR_ENOMEM;
        memcpy(f->manifest, mm.manifest, mm.manifest_len);
        f->len = mm.manifest_len;
        if (chp_manifest_id(f->manifest, f->len, id) != 0 ||
            sodium_memcmp(id, file_id, CHP_HASH_BYTES) != 0 ||
            chp_manifest_decode(f->manifest, f->len, &f->m) < 0) {
                snprintf(c->last_error, sizeof(c->last_error),
                         "the relay sent a manifest that is not the file's");
                return CHAPAR_EINTEGRITY;
        }
        f->complete = mm.state == CHP_UPLOAD_COMPLETE;
        if (!f->complete) {
                size_t n = chp_bitmap_bytes(f->m.chunk_count);
                f->present = malloc(n ? n : 1);
                if (!f->present)
                        return CHAPAR_ENOMEM;
                memcpy(f->present, mm.present, n);
        }
        return 0;
}

int chapar_stat(struct chapar_client *c, const char *ticket, struct chapar_stat_result *r)
{
        memset(r, 0, sizeof(*r));
        struct chp_ticket t;
        if (chp_ticket_parse(ticket, strlen(ticket), &t) != 0)
                return CHAPAR_EUSAGE;
        struct chp_frame_header h;
        uint8_t *reply;
        struct chp_msg_stat_ok so;
        int rc = cc_call(c, CHP_F_STAT, t.file_id, CHP_HASH_BYTES, &h, &reply);
        if (!rc && chp_msg_stat_ok_decode(reply, h.len, &so) != 0)
                rc = CHAPAR_EPROTO;
        if (rc)
                goto out;
        r->complete = so.state == CHP_UPLOAD_COMPLETE;
        r->stored_bytes = so.size;
        r->chunks = so.chunk_count;
        r->chunks_present = so.chunks_present;
        r->chunk_size = so.chunk_size;
        r->created = so.created;
        r->expires = so.expires;
        r->times_withheld = (so.flags & CHP_STAT_TIMES_WITHHELD) != 0;
        if (t.has_key) {
                struct cc_fetched f = {0};
                struct chp_e2e_meta meta;
                if ((rc = cc_fetch_manifest(c, &t, &f)) == 0) {
                        if (chp_e2e_open_meta(t.file_key, f.m.meta, f.m.meta_len, &meta) != 0) {
                                rc = CHAPAR_EINTEGRITY;
                        } else {
                                r->has_meta = true;
                                r->plain_size = meta.plain_size;
                                snprintf(r->name, sizeof(r->name), "%s", meta.name);
                                snprintf(r->mime, sizeof(r->mime), "%s", meta.mime);
                        }
                }
                cc_fetched_free(&f);
                sodium_memzero(&meta, sizeof(meta));
        }
out:
        sodium_memzero(&t, sizeof(t));
        return rc;
}

int chapar_offer(struct chapar_client *c, const char *ticket, const uint8_t peer_key[CHP_KEY_BYTES])
{
        struct chp_ticket t;
        if (chp_ticket_parse(ticket, strlen(ticket), &t) != 0)
                return CHAPAR_EUSAGE;
        uint8_t q[CHP_OFFER_BYTES];
        struct chp_msg_offer m = {.file_id = t.file_id, .peer_key = peer_key};
        ssize_t n = chp_msg_offer_encode(q, sizeof(q), &m);
        sodium_memzero(&t, sizeof(t));
        if (n != CHP_OFFER_BYTES)
                return CHAPAR_EUSAGE;
        struct chp_frame_header h;
        uint8_t *reply;
        return cc_call(c, CHP_F_OFFER, q, sizeof(q), &h, &reply);
}
