/* placeholder: being written */
#include "ring.h"
uint64_t prk_segment_size(uint32_t a, uint32_t b, uint64_t c) { (void)a; (void)b; (void)c; return 0; }
int prk_segment_init(void *base, uint64_t size, uint32_t n, uint32_t s, uint64_t c) { (void)base; (void)size; (void)n; (void)s; (void)c; return PRK_RING_BAD; }
int prk_segment_check(void *base, uint64_t size) { (void)base; (void)size; return PRK_RING_BAD; }
uint32_t prk_segment_nrings(void *base) { (void)base; return 0; }
uint32_t prk_segment_nslots(void *base) { (void)base; return 0; }
uint64_t prk_segment_capacity(void *base) { (void)base; return 0; }
prk_ring *prk_segment_ring(void *base, uint32_t i) { (void)base; (void)i; return 0; }
uint64_t prk_ring_max_record(prk_ring *r) { (void)r; return 0; }
long long prk_ring_reserve(prk_ring *r, uint32_t len) { (void)r; (void)len; return PRK_RING_BAD; }
int prk_ring_commit(prk_ring *r) { (void)r; return PRK_RING_BAD; }
long long prk_ring_peek(prk_ring *r, uint32_t *len) { (void)r; (void)len; return PRK_RING_EMPTY; }
int prk_ring_release(prk_ring *r) { (void)r; return PRK_RING_BAD; }
int prk_ring_sleep(prk_ring *r) { (void)r; return 1; }
void prk_ring_wake(prk_ring *r) { (void)r; }
uint64_t prk_ring_used(prk_ring *r) { (void)r; return 0; }
uint64_t prk_slot_load(prk_ring *r, uint32_t s) { (void)r; (void)s; return 0; }
void prk_slot_store(prk_ring *r, uint32_t s, uint64_t v) { (void)r; (void)s; (void)v; }
int prk_slot_cas(prk_ring *r, uint32_t s, uint64_t e, uint64_t d) { (void)r; (void)s; (void)e; (void)d; return 0; }
uint64_t prk_slot_exchange(prk_ring *r, uint32_t s, uint64_t v) { (void)r; (void)s; (void)v; return 0; }
