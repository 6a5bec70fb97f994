/* prk_take_v2: a v2 msgpack pull's records, taken and written in one call
 * (see take.h). */
#include "take.h"

#include <string.h>

#include "layout.h"

#define REC_SIZE ((uint32_t)PRK_REC_SIZE)
#define SLOT_WORD(key, state) ((uint64_t)(key) << PRK_SLOT_STATE_BITS | (state))

static uint32_t le32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t le64(const unsigned char *p)
{
    return (uint64_t)le32(p) | (uint64_t)le32(p + 4) << 32;
}

static void put_be(unsigned char *p, uint64_t v, int n)
{
    for (int i = n - 1; i >= 0; i--) {
        p[i] = (unsigned char)(v & 0xff);
        v >>= 8;
    }
}

static const char HEX[] = "0123456789abcdef";

static unsigned char *put_hex(unsigned char *p, uint64_t v, int digits)
{
    for (int i = digits - 1; i >= 0; i--) {
        p[i] = (unsigned char)HEX[v & 15];
        v >>= 4;
    }
    return p + digits;
}

/* The fixed parts of an item: map header, the four keys, the id string
 * (str8 of 32), the float64 deadline. */
#define ITEM_FIXED (1u + (1u + 2u) + (2u + 32u) + (1u + 3u) + (1u + 4u) + (1u + 8u) + 9u)

static uint64_t bin_header(uint32_t n)
{
    return n < 0x100 ? 2 : n < 0x10000 ? 3 : 5;
}

long long prk_take_v2(prk_ring *r, uint32_t max_items, uint64_t max_bytes, double deadline,
                      char *out, uint64_t cap, uint32_t *taken, int *stop)
{
    if (!r || !out || !taken || !stop)
        return PRK_TAKE_BAD;
    uint64_t used = 0;
    uint32_t n = 0;
    uint64_t dbits;
    memcpy(&dbits, &deadline, sizeof dbits);
    *stop = PRK_TAKE_FULL;
    while (n < max_items && used < max_bytes) {
        uint32_t len;
        long long off = prk_ring_peek(r, &len);
        if (off == PRK_RING_EMPTY) {
            *stop = PRK_TAKE_EMPTY;
            break;
        }
        if (off < 0) {
            *taken = n;
            return off;
        }
        const unsigned char *rec = (const unsigned char *)prk_ring_at(r, off);
        if (len < REC_SIZE) {
            *stop = PRK_TAKE_OTHER;
            break;
        }
        uint32_t generation = (uint32_t)rec[0] | (uint32_t)rec[1] << 8;
        uint32_t acceptor = (uint32_t)rec[2] | (uint32_t)rec[3] << 8;
        uint32_t slot = le32(rec + PRK_REC_SLOT);
        uint64_t key = le64(rec + PRK_REC_KEY);
        uint32_t env_len = le32(rec + PRK_REC_ENV_LEN);
        uint32_t body_len = le32(rec + PRK_REC_BODY_LEN);
        uint32_t flags = le32(rec + PRK_REC_FLAGS);
        if ((uint64_t)REC_SIZE + env_len + body_len > len || (flags & PRK_RECF_INPUT_PENDING)) {
            *stop = PRK_TAKE_OTHER;
            break;
        }
        uint64_t size = ITEM_FIXED + env_len + bin_header(body_len) + body_len;
        if (size > cap - used) {
            *stop = n ? PRK_TAKE_FULL : PRK_TAKE_OTHER;
            break;
        }
        if (!prk_slot_cas(r, slot, SLOT_WORD(key, PRK_SLOT_QUEUED), SLOT_WORD(key, PRK_SLOT_TAKEN))) {
            /* Withdrawn: the client left or its deadline passed. */
            prk_ring_release(r);
            continue;
        }
        unsigned char *p = (unsigned char *)out + used;
        *p++ = 0x84;
        memcpy(p, "\xa2" "id" "\xd9\x20", 5);
        p += 5;
        p = put_hex(p, generation, 4);
        p = put_hex(p, acceptor, 4);
        p = put_hex(p, slot, 8);
        p = put_hex(p, key, 16);
        memcpy(p, "\xa3" "env", 4);
        p += 4;
        memcpy(p, rec + REC_SIZE, env_len);
        p += env_len;
        memcpy(p, "\xa4" "body", 5);
        p += 5;
        if (body_len < 0x100) {
            *p++ = 0xc4;
            *p++ = (unsigned char)body_len;
        } else if (body_len < 0x10000) {
            *p++ = 0xc5;
            put_be(p, body_len, 2);
            p += 2;
        } else {
            *p++ = 0xc6;
            put_be(p, body_len, 4);
            p += 4;
        }
        memcpy(p, rec + REC_SIZE + env_len, body_len);
        p += body_len;
        memcpy(p, "\xa8" "deadline" "\xcb", 10);
        p += 10;
        put_be(p, dbits, 8);
        p += 8;
        prk_ring_release(r);
        used += size;
        n++;
    }
    *taken = n;
    return (long long)used;
}
