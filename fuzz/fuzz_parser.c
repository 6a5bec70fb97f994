/*
 * libFuzzer harness for prk_parse_request() (src/prack/_native/parser.c).
 *
 * Built by fuzz/run.py with
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all
 * Every call gets its own malloc'd copy of exactly `len` bytes, so ASan
 * reports any read past the end. Besides "does not crash", the harness
 * checks the contract of parser.h / docs/parser.md and aborts on a breach:
 *   - the result is a head length in (0, len] or a known PRK_* code;
 *   - a complete head: method is a token, target VCHAR-only, the version
 *     digits, every field name a token, values without CR/LF/NUL and without
 *     leading/trailing OWS, every offset inside the head, at most
 *     max_headers fields, the head ends with CRLF CRLF;
 *   - incremental: the prefix one byte shorter than the head is INCOMPLETE;
 *     for an error, a prefix is INCOMPLETE or the same error; bytes appended
 *     after the input never change a result that is not INCOMPLETE;
 *   - the same input with a smaller max_headers gives the same result or
 *     TOO_MANY_HEADERS.
 * The first input byte picks max_headers (0..63 or 100); the rest is the
 * request, so corpus files seed with one extra leading byte (run.py adds it).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "parser.h"

#define CHECK(cond) do { if (!(cond)) abort(); } while (0)
#define MAX_FIELDS 100

static int is_tchar(unsigned char c)
{
    return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z') ||
           (c >= 'a' && c <= 'z') || (c && strchr("!#$%&'*+-.^_`|~", c));
}

static int parse_copy(const uint8_t *data, size_t len, prk_request *req,
                      prk_header *hdrs, size_t max_headers)
{
    /* Exactly len bytes on the heap: one byte more is a heap overflow. */
    char *copy = malloc(len ? len : 1);
    int rc;

    CHECK(copy != NULL);
    if (len)
        memcpy(copy, data, len);
    rc = prk_parse_request(len ? copy : NULL, len, req, hdrs, max_headers);
    free(copy);
    return rc;
}

static void check_head(const uint8_t *d, int rc, const prk_request *r,
                       const prk_header *h, size_t max_headers)
{
    uint32_t i, k;

    CHECK(rc >= 4 && d[rc - 4] == '\r' && d[rc - 3] == '\n' &&
          d[rc - 2] == '\r' && d[rc - 1] == '\n');
    CHECK(r->method_len > 0 && r->method_off + r->method_len < (uint32_t)rc);
    for (k = 0; k < r->method_len; k++)
        CHECK(is_tchar(d[r->method_off + k]));
    CHECK(d[r->method_off + r->method_len] == ' ');
    CHECK(r->target_off == r->method_off + r->method_len + 1);
    CHECK(r->target_len > 0 && r->target_off + r->target_len < (uint32_t)rc);
    for (k = 0; k < r->target_len; k++) {
        unsigned char c = d[r->target_off + k];
        CHECK(c >= 0x21 && c <= 0x7e);
    }
    CHECK(r->version_major >= 0 && r->version_major <= 9);
    CHECK(r->version_minor >= 0 && r->version_minor <= 9);
    CHECK(r->target_form >= PRK_FORM_ORIGIN && r->target_form <= PRK_FORM_ASTERISK);
    CHECK(r->num_headers <= max_headers);
    for (i = 0; i < r->num_headers; i++) {
        const prk_header *f = &h[i];

        CHECK(f->name_len > 0 && f->name_off + f->name_len < (uint32_t)rc);
        CHECK(d[f->name_off + f->name_len] == ':');
        for (k = 0; k < f->name_len; k++)
            CHECK(is_tchar(d[f->name_off + k]));
        CHECK(f->value_off + f->value_len <= (uint32_t)rc);
        CHECK(f->value_off > f->name_off + f->name_len);
        for (k = 0; k < f->value_len; k++) {
            unsigned char c = d[f->value_off + k];
            CHECK(c == '\t' || (c >= 0x20 && c != 0x7f));
        }
        if (f->value_len) {
            CHECK(d[f->value_off] != ' ' && d[f->value_off] != '\t');
            CHECK(d[f->value_off + f->value_len - 1] != ' ');
            CHECK(d[f->value_off + f->value_len - 1] != '\t');
        }
        if (i)
            CHECK(f->name_off > h[i - 1].value_off + h[i - 1].value_len);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static prk_header hdrs[MAX_FIELDS], hdrs2[MAX_FIELDS];
    prk_request req, req2;
    size_t max_headers, len, cut;
    uint8_t *longer;
    int rc, rc2;

    if (size == 0)
        return 0;
    max_headers = data[0] < 192 ? (size_t)(data[0] & 63) : MAX_FIELDS;
    data++;
    len = size - 1;

    rc = parse_copy(data, len, &req, hdrs, max_headers);
    CHECK(rc == PRK_INCOMPLETE || (rc <= PRK_E_BAD_REQUEST_LINE &&
          rc >= PRK_E_TOO_MANY_HEADERS) || (rc > 0 && (size_t)rc <= len));

    if (rc > 0) {
        check_head(data, rc, &req, hdrs, max_headers);
        CHECK(parse_copy(data, (size_t)rc - 1, &req2, hdrs2, max_headers)
              == PRK_INCOMPLETE);
    } else if (rc != PRK_INCOMPLETE && len > 0) {
        cut = (len * 7919u + 13u) % len;   /* some shorter prefix */
        rc2 = parse_copy(data, cut, &req2, hdrs2, max_headers);
        CHECK(rc2 == PRK_INCOMPLETE || rc2 == rc);
    }

    /* More bytes after a decided result change nothing. */
    if (rc != PRK_INCOMPLETE) {
        longer = malloc(len + 16);
        CHECK(longer != NULL);
        memcpy(longer, data, len);
        memcpy(longer + len, "X: y\r\n\r\n\r\n\0\n\r \t:\x80", 16);
        rc2 = parse_copy(longer, len + 16, &req2, hdrs2, max_headers);
        free(longer);
        CHECK(rc2 == rc);
        if (rc > 0) {
            CHECK(req2.num_headers == req.num_headers);
            CHECK(req2.target_off == req.target_off && req2.target_len == req.target_len);
            CHECK(memcmp(hdrs2, hdrs, req.num_headers * sizeof hdrs[0]) == 0);
        }
    }

    /* Fewer allowed fields: same head or TOO_MANY_HEADERS. */
    if (max_headers > 0) {
        rc2 = parse_copy(data, len, &req2, hdrs2, max_headers - 1);
        if (rc > 0 && req.num_headers < max_headers)
            CHECK(rc2 == rc);
        else if (rc > 0)
            CHECK(rc2 == PRK_E_TOO_MANY_HEADERS);
        else
            CHECK(rc2 == rc || rc2 == PRK_E_TOO_MANY_HEADERS);
    }
    return 0;
}
