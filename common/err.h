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
};

/* A readable explanation of code (0, a negative errno, or a CHP_E* code). Never NULL. */
const char *chp_strerror(int code);

#endif
