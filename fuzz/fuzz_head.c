/*
 * libFuzzer harness for head.c: prk_scan_head() and prk_write_env() on what
 * prk_parse_request() accepts.
 *
 * Built by fuzz/run.py (clang -fsanitize=fuzzer,address,undefined) with
 * parser.c and head.c. The head, the saved scan and the output buffer are
 * each malloc'd at exactly their size, so ASan reports a read past the head
 * or a write past `cap`. Checks (abort on a breach):
 *   - the scan's result is PRK_HEAD_OK or a PRK_H_* code; on OK the flags
 *     agree (CHUNKED and LENGTH exclusive, CONTINUE only with a body in
 *     HTTP/1.1, content_length <= max_body) and every offset is in the head;
 *   - prk_write_env() with prk_env_bound() bytes succeeds; with the smaller
 *     capacity the input picks it gives PRK_ENV_NO_ROOM or the same bytes;
 *   - the output is one msgpack map of exactly the bytes written: str keys
 *     and values only, valid UTF-8, no key twice, and the keys every
 *     environment has.
 * Input: byte 0 picks the small capacity, byte 1 max_body; the rest is the
 * request (corpus files get two leading bytes, as seed_corpus.py writes).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "head.h"

#define CHECK(cond) do { if (!(cond)) abort(); } while (0)
#define MAX_FIELDS 100

/* A msgpack str at *p (within end): its bytes and length; 0 if not a str. */
static int read_str(const unsigned char **p, const unsigned char *end,
                    const unsigned char **s, size_t *n)
{
    const unsigned char *q = *p;
    size_t len, hdr;

    if (q >= end)
        return 0;
    if ((q[0] & 0xe0) == 0xa0) {
        len = q[0] & 0x1f;
        hdr = 1;
    } else if (q[0] == 0xd9 && end - q >= 2) {
        len = q[1];
        hdr = 2;
    } else if (q[0] == 0xda && end - q >= 3) {
        len = (size_t)q[1] << 8 | q[2];
        hdr = 3;
    } else if (q[0] == 0xdb && end - q >= 5) {
        len = (size_t)q[1] << 24 | (size_t)q[2] << 16 | (size_t)q[3] << 8 | q[4];
        hdr = 5;
    } else {
        return 0;
    }
    if ((size_t)(end - q) - hdr < len)
        return 0;
    *s = q + hdr;
    *n = len;
    *p = q + hdr + len;
    return 1;
}

static int valid_utf8(const unsigned char *s, size_t n)
{
    size_t k = 0;
    while (k < n) {
        unsigned char c = s[k];
        if (c < 0x80) {
            k++;
        } else if (c >= 0xc2 && c <= 0xdf) {   /* all head.c writes: latin-1 */
            if (k + 1 >= n || (s[k + 1] & 0xc0) != 0x80)
                return 0;
            k += 2;
        } else {
            return 0;
        }
    }
    return 1;
}

static void check_map(const unsigned char *out, size_t n)
{
    const unsigned char *p = out, *end = out + n;
    const unsigned char *keys[MAX_FIELDS + 32];
    size_t key_len[MAX_FIELDS + 32];
    size_t count, i, j, nkeys = 0;
    int seen_method = 0, seen_path = 0;

    CHECK(n >= 1);
    if ((p[0] & 0xf0) == 0x80) {
        count = p[0] & 0x0f;
        p += 1;
    } else {
        CHECK(p[0] == 0xde && n >= 3);
        count = (size_t)p[1] << 8 | p[2];
        CHECK(count >= 16);               /* the smallest form */
        p += 3;
    }
    CHECK(count <= MAX_FIELDS + 32);
    for (i = 0; i < count; i++) {
        const unsigned char *k, *v;
        size_t kn, vn;
        CHECK(read_str(&p, end, &k, &kn));
        CHECK(read_str(&p, end, &v, &vn));
        CHECK(valid_utf8(k, kn) && valid_utf8(v, vn));
        for (j = 0; j < nkeys; j++)
            CHECK(!(key_len[j] == kn && memcmp(keys[j], k, kn) == 0));
        keys[nkeys] = k;
        key_len[nkeys++] = kn;
        seen_method |= kn == 14 && memcmp(k, "REQUEST_METHOD", 14) == 0;
        seen_path |= kn == 9 && memcmp(k, "PATH_INFO", 9) == 0 && vn > 0;
    }
    CHECK(p == end);
    CHECK(seen_method && seen_path);
}

static const char SERVER[] = "\xabSERVER_NAME\xa1h\xabSERVER_PORT\xa2" "80";
static const char EXTRA[] = "\xabREMOTE_ADDR\xa0\xabREMOTE_PORT\xa0";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static prk_header hdrs[MAX_FIELDS];
    prk_request req;
    prk_head st;
    char *head, *saved, *out, *small;
    size_t len, saved_len, bound, cap;
    uint64_t max_body;
    long long n, m;
    int rc, sc;

    if (size < 2)
        return 0;
    cap = (size_t)data[0] * 8;
    max_body = data[1] == 0xff ? UINT64_MAX : (uint64_t)data[1] * 1000;
    data += 2;
    len = size - 2;
    head = malloc(len ? len : 1);
    CHECK(head != NULL);
    if (len)
        memcpy(head, data, len);
    rc = prk_parse_request(len ? head : NULL, len, &req, hdrs, MAX_FIELDS);
    if (rc <= 0) {
        free(head);
        return 0;
    }
    /* The head alone, exactly rc bytes. */
    head = realloc(head, (size_t)rc);
    CHECK(head != NULL);
    sc = prk_scan_head(head, (size_t)rc, &req, hdrs, max_body, &st);
    CHECK(sc == PRK_HEAD_OK || (sc <= PRK_H_VERSION && sc >= PRK_H_BAD_INPUT));
    if (sc != PRK_HEAD_OK) {
        free(head);
        return 0;
    }
    CHECK(!((st.flags & PRK_HF_CHUNKED) && (st.flags & PRK_HF_LENGTH)));
    CHECK(!(st.flags & PRK_HF_CONTINUE) || ((st.flags & PRK_HF_HTTP11) &&
          (st.flags & (PRK_HF_CHUNKED | PRK_HF_LENGTH))));
    CHECK(!(st.flags & PRK_HF_LENGTH) || st.content_length <= max_body);
    CHECK(st.path_off + st.path_len <= (uint32_t)rc && st.query_off + st.query_len <= (uint32_t)rc);
    CHECK(st.host_off + st.host_len <= (uint32_t)rc && st.num_headers == req.num_headers);

    saved_len = sizeof st + st.num_headers * sizeof(prk_header);
    saved = malloc(saved_len);
    CHECK(saved != NULL);
    memcpy(saved, &st, sizeof st);
    memcpy(saved + sizeof st, hdrs, st.num_headers * sizeof(prk_header));

    bound = prk_env_bound((size_t)rc, st.num_headers, sizeof SERVER - 1, sizeof EXTRA - 1);
    out = malloc(bound);
    CHECK(out != NULL);
    n = prk_write_env(out, bound, head, (size_t)rc, saved, saved_len,
                      (st.flags & PRK_HF_LENGTH) ? (long long)(st.content_length & 0xffffffff) : -1,
                      SERVER, sizeof SERVER - 1, 2, EXTRA, sizeof EXTRA - 1, 2);
    CHECK(n > 0 && (size_t)n <= bound);
    check_map((const unsigned char *)out, (size_t)n);

    small = malloc(cap ? cap : 1);
    CHECK(small != NULL);
    m = prk_write_env(small, cap, head, (size_t)rc, saved, saved_len,
                      (st.flags & PRK_HF_LENGTH) ? (long long)(st.content_length & 0xffffffff) : -1,
                      SERVER, sizeof SERVER - 1, 2, EXTRA, sizeof EXTRA - 1, 2);
    if ((size_t)n <= cap)
        CHECK(m == n && memcmp(small, out, (size_t)n) == 0);
    else
        CHECK(m == PRK_ENV_NO_ROOM);

    free(small);
    free(out);
    free(saved);
    free(head);
    return 0;
}
