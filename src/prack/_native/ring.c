/*
 * prack shared-memory rings: implementation of ring.h.
 *
 * The exact layout, the memory ordering and the wake-up protocol are
 * described in docs/ring.md; the comments here stay close to the code.
 *
 * Segment (every region starts on a 64-byte boundary, offsets are relative
 * to the segment base):
 *
 *   0                      segment header (128 bytes)
 *   128 + i * stride       ring i:
 *       +0                   ring header (4 cache lines, 256 bytes)
 *       +256                 slot table: nslots x _Atomic uint64_t
 *       +256 + slots_bytes   data area: capacity bytes
 *   stride = 256 + align64(nslots * 8) + align64(capacity)
 *
 * Records in the data area: an 8-byte header (uint32 payload length,
 * uint32 flags) followed by the payload, padded to a multiple of 8. A header
 * whose flags are PRK_REC_WRAP is a wrap marker: the rest of the data area
 * is unused and the next record starts at offset 0.
 */
#include "ring.h"

#include <stdatomic.h>
#include <string.h>

#if ATOMIC_LLONG_LOCK_FREE != 2 || ATOMIC_LONG_LOCK_FREE != 2 || ATOMIC_INT_LOCK_FREE != 2
#error "prack rings need lock-free 32- and 64-bit atomics (shared between processes)"
#endif

#define CACHE_LINE 64u

#define SEG_HEADER_SIZE 128u
#define RING_HEADER_SIZE 256u
#define MIN_CAPACITY 64u
/* Arbitrary sanity bound so that size computations can never overflow. */
#define MAX_CAPACITY (1ULL << 40)

#define REC_HEADER 8u
#define PRK_REC_DATA 0u
#define PRK_REC_WRAP 0x50415257u /* "WRAP" in little-endian ASCII */

/* ----------------------------------------------------------------------- */

typedef struct {
    /* line 0: fixed description, written once by prk_segment_init */
    uint64_t magic;
    uint32_t version;
    uint32_t nrings;
    uint32_t nslots;
    uint32_t header_size;     /* SEG_HEADER_SIZE */
    uint64_t capacity;        /* data bytes per ring, multiple of 8 */
    uint64_t size;            /* total segment size in bytes */
    uint64_t ring_stride;     /* bytes from one ring header to the next */
    uint64_t reserved0[2];
    /* line 1: spare counters for future segment-wide metrics */
    _Atomic uint64_t counters[8];
} seg_header;

struct prk_ring {
    /* line 0: read-only after init */
    uint64_t ring_off;        /* segment offset of this header */
    uint64_t slots_off;       /* segment offset of the slot table */
    uint64_t data_off;        /* segment offset of the data area */
    uint64_t capacity;        /* data area bytes, multiple of 8 */
    uint64_t max_record;      /* largest payload accepted by reserve */
    uint32_t nslots;
    uint32_t index;           /* ring number inside the segment */
    uint64_t reserved0[2];

    /* line 1: producer. head is published to the consumer; the rest is
     * producer-private. */
    _Atomic uint64_t head;    /* end of the last committed record */
    uint64_t tail_cache;      /* last tail value the producer read */
    uint64_t res_start;       /* position of the reserved record's header */
    uint64_t res_end;         /* head after commit */
    uint32_t res_len;         /* reserved payload length */
    uint32_t res_state;       /* 0 none, 1 reserved, 3 reserved after a wrap */
    uint64_t prod_reserved[3];

    /* line 2: consumer. tail is published to the producer; the rest is
     * consumer-private. */
    _Atomic uint64_t tail;    /* start of the oldest unconsumed record */
    uint64_t head_cache;      /* last head value the consumer read */
    uint64_t peek_end;        /* tail after releasing the peeked record */
    uint32_t peek_len;
    uint32_t peek_state;      /* 0 none, 1 a record is peeked */
    uint64_t cons_reserved[4];

    /* line 3: written by both sides, so kept away from head and tail */
    _Atomic uint32_t consumer_sleeping;
    uint32_t pad32;
    uint64_t shared_reserved[7];
};

_Static_assert(sizeof(seg_header) == SEG_HEADER_SIZE, "segment header size");
_Static_assert(sizeof(struct prk_ring) == RING_HEADER_SIZE, "ring header size");
_Static_assert(offsetof(struct prk_ring, head) == 1 * CACHE_LINE, "head line");
_Static_assert(offsetof(struct prk_ring, tail) == 2 * CACHE_LINE, "tail line");
_Static_assert(offsetof(struct prk_ring, consumer_sleeping) == 3 * CACHE_LINE,
               "sleeping flag line");
_Static_assert(sizeof(_Atomic uint64_t) == 8, "atomic u64 size");

#define RES_RESERVED 1u
#define RES_WRAPPED 2u

static inline uint64_t align_up(uint64_t v, uint64_t a) { return (v + a - 1) & ~(a - 1); }

static inline char *seg_base(const prk_ring *r) { return (char *)r - r->ring_off; }
static inline char *ring_data(const prk_ring *r) { return seg_base(r) + r->data_off; }
static inline _Atomic uint64_t *ring_slots(const prk_ring *r)
{
    return (_Atomic uint64_t *)(void *)(seg_base(r) + r->slots_off);
}

static inline uint64_t rec_need(uint64_t len) { return REC_HEADER + align_up(len, 8); }

/* Payload limit: a record of `need` bytes placed at the worst position of an
 * empty ring wastes at most need - 8 bytes before the end (anything less
 * than `need` left forces a wrap), so it always fits when 2*need - 8 <= cap.
 * We use the simpler, slightly stricter need <= cap/2, i.e. payload <=
 * floor8(cap/2) - 8; also bounded by the uint32 length field. */
static uint64_t compute_max_record(uint64_t cap)
{
    uint64_t m = ((cap / 2) & ~(uint64_t)7) - REC_HEADER;
    if (m > 0xFFFFFFF8u)
        m = 0xFFFFFFF8u;
    return m;
}

static int geometry(uint32_t nrings, uint32_t nslots, uint64_t capacity,
                    uint64_t *cap_out, uint64_t *stride_out, uint64_t *size_out)
{
    if (nrings == 0 || capacity < MIN_CAPACITY || capacity > MAX_CAPACITY)
        return 0;
    uint64_t cap = align_up(capacity, 8);
    uint64_t slots = align_up((uint64_t)nslots * 8u, CACHE_LINE);
    uint64_t stride = RING_HEADER_SIZE + slots + align_up(cap, CACHE_LINE);
    /* stride can reach ~2^41 and nrings 2^32 - 1: refuse a product that
     * would not fit in 64 bits (or in an address space) instead of wrapping. */
    if ((uint64_t)nrings > (UINT64_MAX - SEG_HEADER_SIZE) / stride)
        return 0;
    uint64_t size = SEG_HEADER_SIZE + (uint64_t)nrings * stride;
    *cap_out = cap;
    *stride_out = stride;
    *size_out = size;
    return 1;
}

/* ----------------------------------------------------------------------- */
/* segment */

uint64_t prk_segment_size(uint32_t nrings, uint32_t nslots, uint64_t capacity)
{
    uint64_t cap, stride, size;
    if (!geometry(nrings, nslots, capacity, &cap, &stride, &size))
        return 0;
    return size;
}

int prk_segment_init(void *base, uint64_t size, uint32_t nrings,
                     uint32_t nslots, uint64_t capacity)
{
    uint64_t cap, stride, need;
    if (!base || ((uintptr_t)base & (CACHE_LINE - 1)))
        return PRK_RING_BAD;
    if (!geometry(nrings, nslots, capacity, &cap, &stride, &need) || size < need)
        return PRK_RING_BAD;

    seg_header *h = base;
    memset(h, 0, sizeof *h);
    for (unsigned k = 0; k < 8; k++)
        atomic_init(&h->counters[k], 0);
    h->version = PRK_SEGMENT_VERSION;
    h->nrings = nrings;
    h->nslots = nslots;
    h->header_size = SEG_HEADER_SIZE;
    h->capacity = cap;
    h->size = need;
    h->ring_stride = stride;

    for (uint32_t i = 0; i < nrings; i++) {
        uint64_t off = SEG_HEADER_SIZE + (uint64_t)i * stride;
        prk_ring *r = (prk_ring *)(void *)((char *)base + off);
        memset(r, 0, sizeof *r);
        r->ring_off = off;
        r->slots_off = off + RING_HEADER_SIZE;
        r->data_off = r->slots_off + align_up((uint64_t)nslots * 8u, CACHE_LINE);
        r->capacity = cap;
        r->max_record = compute_max_record(cap);
        r->nslots = nslots;
        r->index = i;
        atomic_init(&r->head, 0);
        atomic_init(&r->tail, 0);
        atomic_init(&r->consumer_sleeping, 0);
        _Atomic uint64_t *slots = ring_slots(r);
        for (uint32_t s = 0; s < nslots; s++)
            atomic_init(&slots[s], 0);
    }
    /* The magic goes last so a half-initialised segment never checks out. */
    atomic_thread_fence(memory_order_release);
    h->magic = PRK_SEGMENT_MAGIC;
    return PRK_RING_OK;
}

int prk_segment_check(void *base, uint64_t size)
{
    uint64_t cap, stride, need;
    const seg_header *h = base;
    if (!base || ((uintptr_t)base & (CACHE_LINE - 1)) || size < SEG_HEADER_SIZE)
        return PRK_RING_BAD;
    if (h->magic != PRK_SEGMENT_MAGIC || h->version != PRK_SEGMENT_VERSION ||
        h->header_size != SEG_HEADER_SIZE)
        return PRK_RING_BAD;
    if (!geometry(h->nrings, h->nslots, h->capacity, &cap, &stride, &need))
        return PRK_RING_BAD;
    if (cap != h->capacity || stride != h->ring_stride || need != h->size || size < need)
        return PRK_RING_BAD;
    for (uint32_t i = 0; i < h->nrings; i++) {
        uint64_t off = SEG_HEADER_SIZE + (uint64_t)i * stride;
        const prk_ring *r = (const prk_ring *)(const void *)((const char *)base + off);
        if (r->ring_off != off || r->slots_off != off + RING_HEADER_SIZE ||
            r->data_off != r->slots_off + align_up((uint64_t)h->nslots * 8u, CACHE_LINE) ||
            r->capacity != cap || r->max_record != compute_max_record(cap) ||
            r->nslots != h->nslots || r->index != i)
            return PRK_RING_BAD;
    }
    return PRK_RING_OK;
}

uint32_t prk_segment_nrings(void *base)
{
    return base ? ((const seg_header *)base)->nrings : 0;
}

uint32_t prk_segment_nslots(void *base)
{
    return base ? ((const seg_header *)base)->nslots : 0;
}

uint64_t prk_segment_capacity(void *base)
{
    return base ? ((const seg_header *)base)->capacity : 0;
}

prk_ring *prk_segment_ring(void *base, uint32_t i)
{
    const seg_header *h = base;
    if (!base || h->magic != PRK_SEGMENT_MAGIC || i >= h->nrings)
        return NULL;
    return (prk_ring *)(void *)((char *)base + SEG_HEADER_SIZE + (uint64_t)i * h->ring_stride);
}

/* ----------------------------------------------------------------------- */
/* producer */

uint64_t prk_ring_max_record(prk_ring *r)
{
    return r ? r->max_record : 0;
}

long long prk_ring_reserve(prk_ring *r, uint32_t len)
{
    if (!r)
        return PRK_RING_BAD;
    if (len > r->max_record) {
        r->res_state = 0;                     /* a failed reserve cancels */
        return PRK_RING_TOO_BIG;
    }

    const uint64_t cap = r->capacity;
    const uint64_t need = rec_need(len);
    /* Only this side writes head: a relaxed read of our own value is fine. */
    const uint64_t head = atomic_load_explicit(&r->head, memory_order_relaxed);
    const uint64_t left = cap - head % cap;   /* bytes before the end, >= 8 */
    uint64_t start = head;
    uint32_t state = RES_RESERVED;
    if (left < need) {
        start = head + left;                  /* skip to the start of the area */
        state |= RES_WRAPPED;
    }
    const uint64_t end = start + need;

    /* Free-space check against the cached tail first; the consumer only ever
     * moves tail forward, so a stale value errs on the side of "full". Only
     * then pay for reading the consumer's cache line (acquire: the consumer
     * finished reading those bytes before publishing tail). */
    if (end - r->tail_cache > cap) {
        r->tail_cache = atomic_load_explicit(&r->tail, memory_order_acquire);
        if (end - r->tail_cache > cap) {
            r->res_state = 0;
            return PRK_RING_FULL;
        }
    }
    r->res_start = start;
    r->res_end = end;
    r->res_len = len;
    r->res_state = state;
    return (long long)(r->data_off + start % cap + REC_HEADER);
}

int prk_ring_commit(prk_ring *r)
{
    if (!r || !(r->res_state & RES_RESERVED))
        return PRK_RING_BAD;

    const uint64_t cap = r->capacity;
    char *data = ring_data(r);
    if (r->res_state & RES_WRAPPED) {
        uint64_t head = atomic_load_explicit(&r->head, memory_order_relaxed);
        uint64_t idx = head % cap;
        if (cap - idx >= REC_HEADER) {        /* always true: all is 8-aligned */
            uint32_t marker[2] = {0, PRK_REC_WRAP};
            memcpy(data + idx, marker, sizeof marker);
        }
    }
    uint32_t hdr[2] = {r->res_len, PRK_REC_DATA};
    memcpy(data + r->res_start % cap, hdr, sizeof hdr);
    uint64_t end = r->res_end;
    r->res_state = 0;

    /* Publish: the header, the payload (written by the caller before this
     * call) and any wrap marker become visible together with the new head. */
    atomic_store_explicit(&r->head, end, memory_order_release);

    /*
     * Wake-up check. This is the producer half of a Dekker-style handshake
     * with prk_ring_sleep():
     *
     *   producer: store head        ; seq_cst fence ; load consumer_sleeping
     *   consumer: store sleeping=1 (seq_cst)        ; load head (seq_cst)
     *
     * The fence and the consumer's two seq_cst operations are all in the one
     * total order S. If the fence comes before the consumer's flag store in
     * S, the consumer's head load (later in S) must see our new head, so it
     * does not go to sleep. Otherwise the flag store precedes the fence and
     * our load below must see the flag (or a later clear by the consumer,
     * which means it is awake anyway). In no interleaving do both sides miss
     * each other, so a committed record is never left behind a sleeping
     * consumer. The worst case is a spurious wake-up (the consumer saw the
     * data and cleared the flag while we also saw it set), which is harmless.
     *
     * The fence makes this hold in the C11 model even though head is stored
     * with release only (a bare seq_cst RMW after a release store would be
     * enough on x86 and ARMv8, but not by the letter of the standard). The
     * plain load keeps the common "consumer awake" case free of a
     * read-modify-write on the shared line; the exchange makes sure only one
     * committer reports a sleeping consumer.
     */
    atomic_thread_fence(memory_order_seq_cst);
    if (atomic_load_explicit(&r->consumer_sleeping, memory_order_relaxed) == 0)
        return 0;
    return atomic_exchange_explicit(&r->consumer_sleeping, 0, memory_order_seq_cst) ? 1 : 0;
}

/* ----------------------------------------------------------------------- */
/* consumer */

long long prk_ring_peek(prk_ring *r, uint32_t *len)
{
    if (!r || !len)
        return PRK_RING_BAD;

    const uint64_t cap = r->capacity;
    /* Only this side writes tail. */
    uint64_t tail = atomic_load_explicit(&r->tail, memory_order_relaxed);
    uint64_t head = r->head_cache;
    if (head == tail) {
        /* acquire pairs with the producer's release store of head */
        head = atomic_load_explicit(&r->head, memory_order_acquire);
        r->head_cache = head;
        if (head == tail) {
            r->peek_state = 0;
            return PRK_RING_EMPTY;
        }
    }
    if (head - tail > cap)
        return PRK_RING_BAD;

    const char *data = ring_data(r);
    uint64_t idx = tail % cap;
    uint64_t left = cap - idx;
    uint32_t hdr[2];
    if (left >= REC_HEADER) {
        memcpy(hdr, data + idx, sizeof hdr);
        if (hdr[1] == PRK_REC_WRAP) {
            tail += left;
            idx = 0;
            left = cap;
            if (tail >= head)                   /* a marker is never last */
                return PRK_RING_BAD;
            memcpy(hdr, data, sizeof hdr);
        }
    } else {                                    /* no room for a marker */
        tail += left;
        idx = 0;
        left = cap;
        if (tail >= head)
            return PRK_RING_BAD;
        memcpy(hdr, data, sizeof hdr);
    }
    if (hdr[1] != PRK_REC_DATA || hdr[0] > r->max_record)
        return PRK_RING_BAD;
    uint64_t need = rec_need(hdr[0]);
    if (need > left || need > head - tail)
        return PRK_RING_BAD;

    r->peek_end = tail + need;
    r->peek_len = hdr[0];
    r->peek_state = 1;
    *len = hdr[0];
    return (long long)(r->data_off + idx + REC_HEADER);
}

const char *prk_ring_at(prk_ring *r, long long off)
{
    return seg_base(r) + off;
}

int prk_ring_release(prk_ring *r)
{
    if (!r || r->peek_state != 1)
        return PRK_RING_BAD;
    r->peek_state = 0;
    /* release: our reads of the record happen before the producer, having
     * acquired this tail, may overwrite its bytes. */
    atomic_store_explicit(&r->tail, r->peek_end, memory_order_release);
    return PRK_RING_OK;
}

int prk_ring_sleep(prk_ring *r)
{
    if (!r)
        return 0;
    /* Consumer half of the handshake described in prk_ring_commit(): raise
     * the flag, then look at head again, both seq_cst. */
    atomic_store_explicit(&r->consumer_sleeping, 1, memory_order_seq_cst);
    uint64_t head = atomic_load_explicit(&r->head, memory_order_seq_cst);
    uint64_t tail = atomic_load_explicit(&r->tail, memory_order_relaxed);
    r->head_cache = head;
    if (head != tail) {
        atomic_store_explicit(&r->consumer_sleeping, 0, memory_order_seq_cst);
        return 0;
    }
    return 1;
}

void prk_ring_wake(prk_ring *r)
{
    if (r)
        atomic_store_explicit(&r->consumer_sleeping, 0, memory_order_seq_cst);
}

uint64_t prk_ring_used(prk_ring *r)
{
    if (!r)
        return 0;
    /* tail first: head >= tail then holds for the pair we read, even when
     * both move meanwhile. */
    uint64_t tail = atomic_load_explicit(&r->tail, memory_order_acquire);
    uint64_t head = atomic_load_explicit(&r->head, memory_order_acquire);
    return head - tail;
}

/* ----------------------------------------------------------------------- */
/* slot table */

uint64_t prk_slot_load(prk_ring *r, uint32_t slot)
{
    if (!r || slot >= r->nslots)
        return 0;
    return atomic_load(&ring_slots(r)[slot]);
}

void prk_slot_store(prk_ring *r, uint32_t slot, uint64_t value)
{
    if (!r || slot >= r->nslots)
        return;
    atomic_store(&ring_slots(r)[slot], value);
}

int prk_slot_cas(prk_ring *r, uint32_t slot, uint64_t expected, uint64_t desired)
{
    if (!r || slot >= r->nslots)
        return 0;
    return atomic_compare_exchange_strong(&ring_slots(r)[slot], &expected, desired) ? 1 : 0;
}

uint64_t prk_slot_exchange(prk_ring *r, uint32_t slot, uint64_t value)
{
    if (!r || slot >= r->nslots)
        return 0;
    return atomic_exchange(&ring_slots(r)[slot], value);
}
