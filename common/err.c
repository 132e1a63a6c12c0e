#include "err.h"

#include <string.h>

/* Every project code: its explanation and, for the HTTP parser's and the token checks', the status
 * it names. Indexed by CHP_ERR_BASE - code. */
static const struct {
        const char *msg;
        int http_status;
} codes[CHP_ERR_BASE - CHP_ERR_LAST + 1] = {
    [CHP_ERR_BASE - CHP_EMISMATCH] = {"content does not match its address", 0},
    [CHP_ERR_BASE - CHP_ECORRUPT] = {"stored data is corrupt", 0},
    [CHP_ERR_BASE - CHP_EMAPFULL] = {"store index is full (raise map size)", 0},
    [CHP_ERR_BASE - CHP_ESTORE] = {"store index error", 0},
    [CHP_ERR_BASE - CHP_EMISSING] = {"manifest references chunks that are not stored", 0},
    [CHP_ERR_BASE - CHP_ECLOSED] = {"store is closing", 0},
    [CHP_ERR_BASE - CHP_EVERSION] = {"unsupported version", 0},
    [CHP_ERR_BASE - CHP_ETOOBIG] = {"size over limit", 413},
    [CHP_ERR_BASE - CHP_ELOCKED] = {"data directory is in use by another process", 0},
    [CHP_ERR_BASE - CHP_EKEY] = {"the remote's key is not the pinned one", 0},
    [CHP_ERR_BASE - CHP_EAUTH] = {"a record failed authentication", 0},
    [CHP_ERR_BASE - CHP_EREMOTE] = {"the remote refused the request", 0},
    [CHP_ERR_BASE - CHP_EHTTP_BAD] = {"malformed HTTP request", 400},
    [CHP_ERR_BASE - CHP_EHTTP_TARGET] = {"HTTP request target too long", 414},
    [CHP_ERR_BASE - CHP_EHTTP_HEADERS] = {"HTTP request head too large", 431},
    [CHP_ERR_BASE - CHP_EHTTP_METHOD] = {"HTTP method not implemented", 501},
    [CHP_ERR_BASE - CHP_EHTTP_VERSION] = {"HTTP version not supported", 505},
    [CHP_ERR_BASE - CHP_ETOKEN_KEY] = {"token signed by a key the tenant does not have", 401},
    [CHP_ERR_BASE - CHP_ETOKEN_SIGNATURE] = {"token signature is not valid", 401},
    [CHP_ERR_BASE - CHP_ETOKEN_AUDIENCE] = {"token is for another relay", 401},
    [CHP_ERR_BASE - CHP_ETOKEN_LIFE] = {"token lifetime is empty or over 24 hours", 401},
    [CHP_ERR_BASE - CHP_ETOKEN_EARLY] = {"token is not valid yet", 401},
    [CHP_ERR_BASE - CHP_ETOKEN_EXPIRED] = {"token has expired", 401},
    [CHP_ERR_BASE - CHP_ETOKEN_SCOPE] = {"token does not allow this", 403},
    [CHP_ERR_BASE - CHP_ETOKEN_MISSING] = {"this relay needs an upload token", 401},
    [CHP_ERR_BASE - CHP_ETOKEN_FILE] = {"token is for another file", 403},
    [CHP_ERR_BASE - CHP_EQUOTA] = {"over the token's budget or the tenant's quota", 403},
    [CHP_ERR_BASE - CHP_ELIMITED] = {"over a rate limit: retry later", 429},
    [CHP_ERR_BASE - CHP_ETOKEN_SUBJECT] = {"the upload was begun under another subject", 403},
    [CHP_ERR_BASE - CHP_EQUARANTINED] = {"unavailable for legal reasons: the relay's operator "
                                         "quarantined this file",
                                         451},
    [CHP_ERR_BASE - CHP_EUNAVAILABLE] = {"the storage cluster did not answer in time: retry", 503},
};

const char *chp_strerror(int code)
{
        if (code == 0)
                return "success";
        if (code < CHP_ERR_BASE && code >= CHP_ERR_LAST && codes[CHP_ERR_BASE - code].msg)
                return codes[CHP_ERR_BASE - code].msg;
        if (code < 0 && code > CHP_ERR_BASE) {
                /* strerror() is not thread-safe in general, but glibc returns a pointer into a
                 * constant table for every known errno, which is all we ever pass. */
                return strerror(-code);
        }
        return "unknown error";
}

int chp_err_http_status(int code)
{
        if (code < CHP_ERR_BASE && code >= CHP_ERR_LAST)
                return codes[CHP_ERR_BASE - code].http_status;
        return 0;
}
