/*
 * libFuzzer harness for prk_decode_chunked() (src/prack/_native/parser.c).
 *
 * Built by fuzz/run.py with
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all
 * The first two input bytes choose where the body is split; the rest is the
 * raw body. The harness decodes it
 *   1. whole, from a malloc'd copy of exactly its length (ASan catches any
 *      access past the end),
 *   2. in up to three pieces, each in its own exact-size buffer, as a
 *      connection receiving it in several reads would (http.py keeps no
 *      bytes between calls after PRK_INCOMPLETE),
 * and aborts unless both give the same result, the same decoded bytes and
 * the same consumed count; the output never outgrows the input consumed;
 * bytes after a complete body are left untouched; errors are sticky and a
 * finished decoder returns 0.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "parser.h"

#define CHECK(cond) do { if (!(cond)) abort(); } while (0)

typedef struct {
    long long rc;          /* consumed (>= 0), PRK_INCOMPLETE or an error */
    size_t consumed;       /* input bytes consumed over all calls */
    uint8_t *out;          /* decoded bytes (caller frees) */
    size_t out_len;
} result;

static int valid_rc(long long rc)
{
    return rc >= 0 || rc == PRK_INCOMPLETE || rc == PRK_E_CHUNK_SIZE ||
           rc == PRK_E_CHUNK_EXT || rc == PRK_E_CHUNK_DATA_END ||
           rc == PRK_E_TRAILER;
}

static result decode(const uint8_t *data, size_t len, const size_t *cuts,
                     int ncuts)
{
    prk_chunked dec;
    result res = {PRK_INCOMPLETE, 0, malloc(len + 1), 0};
    size_t start = 0, n;
    int i;

    CHECK(res.out != NULL);
    memset(&dec, 0, sizeof dec);
    for (i = 0; i <= ncuts; i++) {
        size_t stop = i < ncuts ? cuts[i] : len, plen = stop - start;
        char *piece = malloc(plen ? plen : 1);
        long long rc;

        CHECK(piece != NULL);
        memcpy(piece, data + start, plen);
        n = (size_t)-1;
        rc = prk_decode_chunked(&dec, plen ? piece : NULL, plen, &n);
        CHECK(valid_rc(rc));
        CHECK(n <= plen);
        if (rc >= 0) {
            CHECK((size_t)rc <= plen && n <= (size_t)rc);
            CHECK(memcmp(piece + rc, data + start + rc, plen - (size_t)rc) == 0);
        } else if (rc != PRK_INCOMPLETE) {
            CHECK(n == 0);
        }
        memcpy(res.out + res.out_len, piece, n);
        res.out_len += n;
        free(piece);
        res.rc = rc;
        if (rc >= 0) {
            res.consumed += (size_t)rc;
            /* finished: further calls decode nothing */
            CHECK(prk_decode_chunked(&dec, (char *)res.out, 1, &n) == 0 && n == 0);
            break;
        }
        if (rc != PRK_INCOMPLETE) {
            char again[4] = "0\r\n";
            /* sticky */
            CHECK(prk_decode_chunked(&dec, again, 3, &n) == rc && n == 0);
            break;
        }
        res.consumed += plen;
        start = stop;
    }
    return res;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t cuts[2], len;
    result whole, split;
    int ncuts = 0;

    if (size < 2)
        return 0;
    len = size - 2;
    if (len) {
        cuts[0] = data[0] % (len + 1);
        cuts[1] = cuts[0] + data[1] % (len - cuts[0] + 1);
        ncuts = 2;
    }
    data += 2;

    whole = decode(data, len, NULL, 0);
    CHECK(whole.out_len <= len);
    split = decode(data, len, cuts, ncuts);

    CHECK(whole.rc < 0 ? split.rc == whole.rc
                       : (split.rc >= 0 && split.consumed == (size_t)whole.rc));
    if (whole.rc == PRK_INCOMPLETE || whole.rc >= 0) {
        CHECK(split.out_len == whole.out_len);
        CHECK(memcmp(split.out, whole.out, whole.out_len) == 0);
    }
    free(whole.out);
    free(split.out);
    return 0;
}
