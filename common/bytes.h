/* bytes.h — explicit-endian loads and stores for wire and on-disk encodings.
 *
 * Never cast a buffer to a struct: these read and write byte by byte, so alignment and host
 * endianness do not matter. Pure inline functions; any thread.
 */
#ifndef CHP_BYTES_H
#define CHP_BYTES_H

#include <stdint.h>

static inline void chp_put_le16(uint8_t *p, uint16_t v)
{
        p[0] = (uint8_t)v;
        p[1] = (uint8_t)(v >> 8);
}

static inline void chp_put_le32(uint8_t *p, uint32_t v)
{
        for (int i = 0; i < 4; i++)
                p[i] = (uint8_t)(v >> (8 * i));
}

static inline void chp_put_le64(uint8_t *p, uint64_t v)
{
        for (int i = 0; i < 8; i++)
                p[i] = (uint8_t)(v >> (8 * i));
}

static inline uint16_t chp_get_le16(const uint8_t *p)
{
        return (uint16_t)(p[0] | p[1] << 8);
}

static inline uint32_t chp_get_le32(const uint8_t *p)
{
        return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static inline uint64_t chp_get_le64(const uint8_t *p)
{
        return (uint64_t)chp_get_le32(p) | (uint64_t)chp_get_le32(p + 4) << 32;
}

/* Big-endian forms sort by memcmp in numeric order: used for LMDB keys. */
static inline void chp_put_be32(uint8_t *p, uint32_t v)
{
        for (int i = 0; i < 4; i++)
                p[i] = (uint8_t)(v >> (24 - 8 * i));
}

static inline void chp_put_be64(uint8_t *p, uint64_t v)
{
        for (int i = 0; i < 8; i++)
                p[i] = (uint8_t)(v >> (56 - 8 * i));
}

static inline uint32_t chp_get_be32(const uint8_t *p)
{
        return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

static inline uint64_t chp_get_be64(const uint8_t *p)
{
        return (uint64_t)chp_get_be32(p) << 32 | (uint64_t)chp_get_be32(p + 4);
}

#endif
