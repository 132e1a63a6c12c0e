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
        /* An upload token chp_token_verify refuses (common/token.h, docs/tokens.md); each names an
         * HTTP status too: 401, and 403 for CHP_ETOKEN_SCOPE. */
        CHP_ETOKEN_KEY = CHP_ERR_BASE - 18,       /* no key of the tenant has the token's key id */
        CHP_ETOKEN_SIGNATURE = CHP_ERR_BASE - 19, /* the signature does not verify */
        CHP_ETOKEN_AUDIENCE = CHP_ERR_BASE - 20,  /* the token is for another relay */
        CHP_ETOKEN_LIFE = CHP_ERR_BASE - 21,      /* expiry not after issue, or too far after */
        CHP_ETOKEN_EARLY = CHP_ERR_BASE - 22,     /* issued in the future (beyond the skew) */
        CHP_ETOKEN_EXPIRED = CHP_ERR_BASE - 23,   /* expired (beyond the skew) */
        CHP_ETOKEN_SCOPE = CHP_ERR_BASE - 24,     /* the token does not grant what is asked */
        CHP_ETOKEN_MISSING = CHP_ERR_BASE - 25,   /* this request needs a token and has none */
        CHP_ETOKEN_FILE = CHP_ERR_BASE - 26,      /* the token allows only another file */
        /* Limits (issue 14): each has an HTTP status too. */
        CHP_EQUOTA = CHP_ERR_BASE - 27,   /* over a token's budget or a tenant's quota (403) */
        CHP_ELIMITED = CHP_ERR_BASE - 28, /* over a rate or concurrency limit: retry later (429) */
        /* An upload session begun under a token is resumed only under its subject (403). */
        CHP_ETOKEN_SUBJECT = CHP_ERR_BASE - 29,
        /* Administration (issue 15). */
        CHP_EQUARANTINED = CHP_ERR_BASE - 30, /* the operator quarantined this file id (451) */
        /* Scale-out (issue 17): the storage cluster (Ceph RADOS) did not answer in time, or the
         * relay lost it; nothing was stored or acknowledged: retry (503). */
        CHP_EUNAVAILABLE = CHP_ERR_BASE - 31,
        CHP_ERR_LAST = CHP_EUNAVAILABLE, /* the lowest project code */
};

/* A readable explanation of code (0, a negative errno, or a CHP_E* code). Never NULL. */
const char *chp_strerror(int code);

/* The HTTP status a CHP_EHTTP_*, CHP_ETOKEN_* (CHP_ETOKEN_SUBJECT: 403), CHP_EQUOTA, CHP_ELIMITED,
 * CHP_EQUARANTINED (451), CHP_EUNAVAILABLE (503) or CHP_ETOOBIG (413) code names, or 0 for any
 * other code. */
int chp_err_http_status(int code);

#endif
