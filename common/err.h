/* err.h — the one error space of chapar.
 *
 * Every function that can fail returns 0 (or a byte count) on success and a negative code on
 * failure: either a negative errno (-EINVAL, -ENOMEM, -EBADMSG, ...) or one of the project codes
 * below, all under CHP_ERR_BASE. chp_strerror() explains every code; its result is a static
 * string. Any thread may call it. Global errno is never read or set across module boundaries.
 */
#ifndef CHP_ERR_H
#define CHP_ERR_H

#define CHP_ERR_BASE -30000

enum chp_err {
        CHP_EMISMATCH = CHP_ERR_BASE - 1, /* bytes do not hash to the address they were sent with */
        CHP_ECORRUPT = CHP_ERR_BASE - 2,  /* stored data failed a checksum or is inconsistent */
        CHP_EMAPFULL = CHP_ERR_BASE - 3,  /* the LMDB map is full: raise map size */
        CHP_ESTORE = CHP_ERR_BASE - 4,    /* LMDB reported an error not listed here */
        CHP_EMISSING = CHP_ERR_BASE - 5,  /* a manifest names chunks the relay does not hold */
        CHP_ECLOSED = CHP_ERR_BASE - 6,   /* the store (or its writer) is shutting down */
        CHP_EVERSION = CHP_ERR_BASE - 7,  /* on-disk or wire version this build does not know */
        CHP_ETOOBIG = CHP_ERR_BASE - 8,   /* a size is over its configured limit */
        CHP_ELOCKED = CHP_ERR_BASE - 9,   /* another process holds the data directory */
        CHP_EKEY = CHP_ERR_BASE - 10,     /* the remote proved another key than the pinned one */
        CHP_EAUTH = CHP_ERR_BASE - 11,    /* a record failed authentication: not safe to go on */
        CHP_EREMOTE = CHP_ERR_BASE - 12,  /* the remote answered with an ERROR frame */
        /* An HTTP request head chp_http_parse_request refuses, each naming the status to answer
         * (chp_err_http_status). */
        CHP_EHTTP_BAD = CHP_ERR_BASE - 13,     /* malformed request (400) */
        CHP_EHTTP_TARGET = CHP_ERR_BASE - 14,  /* request target too long (414) */
        CHP_EHTTP_HEADERS = CHP_ERR_BASE - 15, /* head too large or too many headers (431) */
        CHP_EHTTP_METHOD = CHP_ERR_BASE - 16,  /* a method this server does not implement (501) */
        CHP_EHTTP_VERSION = CHP_ERR_BASE - 17, /* not HTTP/1.0 or HTTP/1.1 (505) */
        CHP_ERR_LAST = CHP_EHTTP_VERSION,      /* the lowest project code */
};

/* A readable explanation of code (0, a negative errno, or a CHP_E* code). Never NULL. */
const char *chp_strerror(int code);

/* The HTTP status a CHP_EHTTP_* code names, or 0 for any other code. */
int chp_err_http_status(int code);

#endif
