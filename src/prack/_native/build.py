"""cffi build script (API mode): compiles parser.c and ring.c into prack._native._prack.

Used by setup.py through ``cffi_modules``; ``python src/prack/_native/build.py``
builds the module in place for quick experiments.
"""
from __future__ import annotations

import os
import pathlib

from cffi import FFI

HERE = pathlib.Path(__file__).resolve().parent
# setuptools wants source paths relative to the project root (its cwd).
try:
    _SRC = pathlib.Path(os.path.relpath(HERE, os.getcwd()))
except ValueError:  # different drive (Windows): fall back to absolute
    _SRC = HERE

CDEF = """
#define PRK_INCOMPLETE ...
#define PRK_E_BAD_REQUEST_LINE ...
#define PRK_E_BAD_METHOD ...
#define PRK_E_BAD_TARGET ...
#define PRK_E_BAD_VERSION ...
#define PRK_E_BAD_HEADER_NAME ...
#define PRK_E_WS_BEFORE_COLON ...
#define PRK_E_BAD_HEADER_VALUE ...
#define PRK_E_OBS_FOLD ...
#define PRK_E_BARE_CR ...
#define PRK_E_BARE_LF ...
#define PRK_E_TOO_MANY_HEADERS ...
#define PRK_E_CHUNK_SIZE ...
#define PRK_E_CHUNK_EXT ...
#define PRK_E_CHUNK_DATA_END ...
#define PRK_E_TRAILER ...
#define PRK_FORM_ORIGIN ...
#define PRK_FORM_ABSOLUTE ...
#define PRK_FORM_AUTHORITY ...
#define PRK_FORM_ASTERISK ...

typedef struct {
    uint32_t name_off, name_len;
    uint32_t value_off, value_len;
} prk_header;

typedef struct {
    uint32_t method_off, method_len;
    uint32_t target_off, target_len;
    int version_major, version_minor;
    int target_form;
    uint32_t num_headers;
} prk_request;

typedef struct {
    uint64_t remaining;
    ...;
} prk_chunked;

int prk_parse_request(const char *buf, size_t len, prk_request *req,
                      prk_header *headers, size_t max_headers);
long long prk_decode_chunked(prk_chunked *dec, char *buf, size_t len,
                             size_t *out_len);
uint64_t prk_chunked_pending(const prk_chunked *dec);

#define PRK_RING_OK ...
#define PRK_RING_FULL ...
#define PRK_RING_TOO_BIG ...
#define PRK_RING_EMPTY ...
#define PRK_RING_BAD ...

typedef struct prk_ring prk_ring;

uint64_t prk_segment_size(uint32_t nrings, uint32_t nslots, uint64_t capacity);
int prk_segment_init(void *base, uint64_t size, uint32_t nrings,
                     uint32_t nslots, uint64_t capacity);
int prk_segment_check(void *base, uint64_t size);
uint32_t prk_segment_nrings(void *base);
uint32_t prk_segment_nslots(void *base);
uint64_t prk_segment_capacity(void *base);
prk_ring *prk_segment_ring(void *base, uint32_t i);
uint64_t prk_ring_max_record(prk_ring *r);
long long prk_ring_reserve(prk_ring *r, uint32_t len);
int prk_ring_commit(prk_ring *r);
long long prk_ring_peek(prk_ring *r, uint32_t *len);
int prk_ring_release(prk_ring *r);
int prk_ring_sleep(prk_ring *r);
void prk_ring_wake(prk_ring *r);
uint64_t prk_ring_used(prk_ring *r);
uint64_t prk_slot_load(prk_ring *r, uint32_t slot);
void prk_slot_store(prk_ring *r, uint32_t slot, uint64_t value);
int prk_slot_cas(prk_ring *r, uint32_t slot, uint64_t expected, uint64_t desired);
uint64_t prk_slot_exchange(prk_ring *r, uint32_t slot, uint64_t value);
"""



def make_builder(src: pathlib.Path) -> FFI:
    builder = FFI()
    builder.cdef(CDEF)
    builder.set_source(
        "prack._native._prack",
        '#include "parser.h"\n#include "ring.h"\n',
        sources=[str(src / "parser.c"), str(src / "ring.c")],
        include_dirs=[str(src)],
        extra_compile_args=["-std=c11", "-O2", "-Wall", "-Wextra"],
    )
    return builder


ffibuilder = make_builder(_SRC)

if __name__ == "__main__":
    # In-place developer build: FFI.compile() changes directory, so use
    # absolute paths here.
    make_builder(HERE).compile(tmpdir=str(HERE.parent.parent), verbose=False)
