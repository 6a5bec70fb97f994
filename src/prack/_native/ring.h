/*
 * prack shared-memory rings.
 *
 * One segment holds a small header followed by N rings, one per acceptor.
 * Each ring is single-producer (its acceptor) / single-consumer (the API
 * process) and carries variable-length records. Positions are monotonic
 * 64-bit byte counters; the producer publishes `head` with release order and
 * the consumer publishes `tail` with release order, each reading the other
 * with acquire order.
 *
 * Each ring also owns a slot table: one 64-bit word per connection slot of
 * its acceptor, shared so that the API process can see whether the request
 * in a record is still wanted (see docs/architecture.md).
 *
 * All offsets returned to callers are relative to the segment base, so a
 * caller holding the mapping as a Python mmap can slice it directly.
 */
#ifndef PRACK_RING_H
#define PRACK_RING_H

#include <stddef.h>
#include <stdint.h>

#define PRK_RING_OK        0
#define PRK_RING_FULL     (-1)  /* not enough free space now: try later */
#define PRK_RING_TOO_BIG  (-2)  /* record can never fit in this ring */
#define PRK_RING_EMPTY    (-3)  /* nothing to read */
#define PRK_RING_BAD      (-4)  /* bad arguments or corrupt segment */

#define PRK_SEGMENT_MAGIC   0x4b434152505f5347ULL  /* arbitrary, checked on attach */
#define PRK_SEGMENT_VERSION 1

typedef struct prk_ring prk_ring;   /* opaque outside ring.c */

/* Bytes needed for a segment of nrings rings of `capacity` data bytes and
 * nslots slots each. capacity is rounded up to a multiple of 8. */
uint64_t prk_segment_size(uint32_t nrings, uint32_t nslots, uint64_t capacity);

/* Lay out a fresh segment in zeroed memory of `size` bytes. */
int prk_segment_init(void *base, uint64_t size, uint32_t nrings,
                     uint32_t nslots, uint64_t capacity);

/* Check magic/version/size of an existing segment; PRK_RING_OK or BAD. */
int prk_segment_check(void *base, uint64_t size);

uint32_t prk_segment_nrings(void *base);
uint32_t prk_segment_nslots(void *base);
uint64_t prk_segment_capacity(void *base);

/* The ring at index i (0 <= i < nrings), or NULL. */
prk_ring *prk_segment_ring(void *base, uint32_t i);

/* --- producer side ------------------------------------------------------ */

/* Largest payload a single record may carry in this ring. */
uint64_t prk_ring_max_record(prk_ring *r);

/*
 * Reserve room for a record of `len` payload bytes. Returns the segment
 * offset where the payload must be written (>= 0), PRK_RING_FULL or
 * PRK_RING_TOO_BIG. Nothing is visible to the consumer until commit.
 * A second reserve without commit replaces the first.
 */
long long prk_ring_reserve(prk_ring *r, uint32_t len);

/*
 * Publish the reserved record. Returns 1 when the consumer had declared
 * itself asleep (the flag is cleared; the caller must send a wake-up),
 * 0 when no wake-up is needed, PRK_RING_BAD without a reservation.
 */
int prk_ring_commit(prk_ring *r);

/* --- consumer side ------------------------------------------------------ */

/* Segment offset of the oldest record's payload (>= 0) with its length in
 * *len, or PRK_RING_EMPTY. Does not consume. */
long long prk_ring_peek(prk_ring *r, uint32_t *len);
/* The address of an offset prk_ring_peek returned. */
const char *prk_ring_at(prk_ring *r, long long off);

/* Consume the record returned by the last peek. */
int prk_ring_release(prk_ring *r);

/*
 * Declare the consumer asleep. Returns 1 when the ring is still empty after
 * the flag was raised (safe to sleep: the producer will wake us), 0 when a
 * record arrived meanwhile (flag lowered again; do not sleep).
 */
int prk_ring_sleep(prk_ring *r);

/* Clear the sleeping flag (consumer woke up for another reason). */
void prk_ring_wake(prk_ring *r);

/* Bytes currently used (records + padding), for metrics and tests. */
uint64_t prk_ring_used(prk_ring *r);

/* --- slot table (both sides) ------------------------------------------- */

uint64_t prk_slot_load(prk_ring *r, uint32_t slot);
void prk_slot_store(prk_ring *r, uint32_t slot, uint64_t value);
/* 1 when the slot held `expected` and now holds `desired`, else 0. */
int prk_slot_cas(prk_ring *r, uint32_t slot, uint64_t expected, uint64_t desired);
uint64_t prk_slot_exchange(prk_ring *r, uint32_t slot, uint64_t value);

#endif
