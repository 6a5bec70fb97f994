#ifndef PRACK_TAKE_H
#define PRACK_TAKE_H

/* Taking queued requests out of one ring for a v2 msgpack pull, in one call
 * (the API process's per-request loop, moved out of Python).
 *
 * Each record is the acceptor's: a header (layout.h: generation, acceptor,
 * slot, key, queued time, environment length, body length, flags), the environment already encoded as a msgpack map, and the
 * body. prk_take_v2 claims each record's slot (QUEUED -> TAKEN; a record
 * whose slot moved on was withdrawn and is dropped) and writes it as the
 * msgpack map of a prack.protocol.messages.RequestItem ({"id", "env", "body", "deadline"}),
 * the environment spliced in unchanged. */

#include <stddef.h>
#include <stdint.h>

#include "ring.h"

/* Why prk_take_v2 stopped (*stop). */
#define PRK_TAKE_EMPTY  0   /* the ring has nothing more */
#define PRK_TAKE_FULL   1   /* max_items taken, or max_bytes reached */
#define PRK_TAKE_OTHER  2   /* the next record is for the caller to take:
                               its body is read later (RECF_INPUT_PENDING),
                               it is malformed, or it does not fit in `cap` */
#define PRK_TAKE_BAD   (-4) /* bad arguments */

/* Bytes written to out (items back to back), with *taken items and *stop
 * why it stopped; or a negative PRK_RING_* / PRK_TAKE_BAD. Takes another
 * record while fewer than max_items were taken and fewer than max_bytes
 * written; never writes past cap. */
long long prk_take_v2(prk_ring *r, uint32_t max_items, uint64_t max_bytes, double deadline,
                      char *out, uint64_t cap, uint32_t *taken, int *stop);

#endif
