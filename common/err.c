#include "err.h"

#include <string.h>

const char *chp_strerror(int code)
{
        switch (code) {
        case 0:
                return "success";
        case CHP_EMISMATCH:
                return "content does not match its address";
        case CHP_ECORRUPT:
                return "stored data is corrupt";
        case CHP_EMAPFULL:
                return "store index is full (raise map size)";
        case CHP_ESTORE:
                return "store index error";
        case CHP_EMISSING:
                return "manifest references chunks that are not stored";
        case CHP_ECLOSED:
                return "store is closing";
        case CHP_EVERSION:
                return "unsupported version";
        case CHP_ETOOBIG:
                return "size over limit";
        case CHP_ELOCKED:
                return "data directory is in use by another process";
        case CHP_EKEY:
                return "the remote's key is not the pinned one";
        case CHP_EAUTH:
                return "a record failed authentication";
        case CHP_EREMOTE:
                return "the remote refused the request";
        }
        if (code <= -400 && code >= -599)
                return "malformed or unsupported HTTP request"; /* CHP_HTTP_E* (http_parse.h) */
        if (code < 0 && code > CHP_ERR_BASE) {
                /* strerror() is not thread-safe in general, but glibc returns a pointer into a
                 * constant table for every known errno, which is all we ever pass. */
                return strerror(-code);
        }
        return "unknown error";
}
