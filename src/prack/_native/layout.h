#ifndef PRACK_LAYOUT_H
#define PRACK_LAYOUT_H

/* The layout of what an acceptor puts in its ring, declared once: take.c
 * reads records and slot words through these names, and prack.ipc.slots
 * takes its constants from them through cffi (and checks its struct format
 * against them when it is imported).
 *
 * A record: a fixed header, then the environment (a msgpack map) and the
 * body. The header, little-endian ("<HHIQdIII"): */
#define PRK_REC_GENERATION  0   /* u16 */
#define PRK_REC_ACCEPTOR    2   /* u16 */
#define PRK_REC_SLOT        4   /* u32 */
#define PRK_REC_KEY         8   /* u64: the request's random key */
#define PRK_REC_QUEUED_AT  16   /* f64: Unix seconds */
#define PRK_REC_ENV_LEN    24   /* u32 */
#define PRK_REC_BODY_LEN   28   /* u32 */
#define PRK_REC_FLAGS      32   /* u32: PRK_RECF_* */
#define PRK_REC_SIZE       36

/* Record flags. */
#define PRK_RECF_INPUT_PENDING 1  /* Expect: 100-continue: the body is read
                                     only once a worker takes the request */

/* A slot word is key << PRK_SLOT_STATE_BITS | state (docs/ring.md). */
#define PRK_SLOT_STATE_BITS 2
#define PRK_SLOT_FREE   0
#define PRK_SLOT_QUEUED 1
#define PRK_SLOT_TAKEN  2
#define PRK_SLOT_GONE   3

#endif
