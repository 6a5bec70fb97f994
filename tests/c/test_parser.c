/*
 * C unit tests for src/prack/_native/parser.c, built and run by
 * tests/test_native_c.py with -fsanitize=address,undefined.
 *
 *   test_parser CORPUS_DIR MANIFEST [MUTATIONS [SEED]]
 *   test_parser --guard-selftest     (must crash: proves the guard page works)
 *
 * MANIFEST is written by the pytest wrapper from tests/corpus/ (one case per
 * line, byte strings in hex, "-" for an empty one):
 *
 *   V name file max_headers head_len FORM major minor method target nh n1 v1 ...
 *   I name file max_headers PRK_E_... detect_len
 *   C name file ok consumed decoded
 *   C name file incomplete - decoded
 *   C name file error PRK_E_...
 *
 * `file` is relative to CORPUS_DIR. Every input handed to the parser is
 * copied so that it ends exactly at a PROT_NONE page (or, for some calls,
 * starts right after one), so reading one byte outside [buf, buf + len)
 * crashes; the request struct and the header array end at guard pages too,
 * so writing past max_headers entries crashes as well.
 *
 * The last line of stdout is "RESULT key=value ..." with the counts the
 * wrapper checks (so the test cannot pass without having run anything).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "parser.h"

/* ------------------------------------------------------------------------
 * reporting
 */
static unsigned long long n_checks, n_failures;
static const char *cur_case = "(none)";
static const char *cur_what = "";

static void fail_at(int line, const char *expr, const char *fmt, ...)
{
    va_list ap;

    n_failures++;
    if (n_failures > 50)
        return;
    fprintf(stderr, "FAIL [%s] %s (test_parser.c:%d: %s): ", cur_case,
            cur_what, line, expr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

#define CHECK(cond, ...)                                                   \
    do {                                                                   \
        n_checks++;                                                        \
        if (!(cond))                                                       \
            fail_at(__LINE__, #cond, __VA_ARGS__);                         \
    } while (0)

static void die(const char *fmt, ...)
{
    va_list ap;

    fprintf(stderr, "test_parser: fatal: ");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(2);
}

/* ------------------------------------------------------------------------
 * guard pages
 */
typedef struct {
    unsigned char *lo;      /* first usable byte, right after a PROT_NONE page */
    unsigned char *hi;      /* first byte of the trailing PROT_NONE page */
    size_t size;
} guarded;

static size_t page_size;

static void guarded_init(guarded *g, size_t size)
{
    unsigned char *m;

    size = (size + page_size - 1) / page_size * page_size;
    if (size == 0)
        size = page_size;
    m = mmap(NULL, size + 2 * page_size, PROT_READ | PROT_WRITE,
             MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED)
        die("mmap: %s", strerror(errno));
    if (mprotect(m, page_size, PROT_NONE) != 0 ||
        mprotect(m + page_size + size, page_size, PROT_NONE) != 0)
        die("mprotect: %s", strerror(errno));
    g->lo = m + page_size;
    g->hi = g->lo + size;
    g->size = size;
}

/* Copy n bytes so that they end exactly at the trailing guard page. */
static unsigned char *place_end(guarded *g, const void *data, size_t n)
{
    if (n > g->size)
        die("input of %zu bytes larger than the guarded area", n);
    if (n)
        memcpy(g->hi - n, data, n);
    return g->hi - n;
}

/* Copy n bytes so that they start right after the leading guard page. */
static unsigned char *place_start(guarded *g, const void *data, size_t n)
{
    if (n > g->size)
        die("input of %zu bytes larger than the guarded area", n);
    if (n)
        memcpy(g->lo, data, n);
    return g->lo;
}

/* ------------------------------------------------------------------------
 * codes
 */
static const struct {
    const char *name;
    int code;
} CODES[] = {
    {"PRK_INCOMPLETE", PRK_INCOMPLETE},
    {"PRK_E_BAD_REQUEST_LINE", PRK_E_BAD_REQUEST_LINE},
    {"PRK_E_BAD_METHOD", PRK_E_BAD_METHOD},
    {"PRK_E_BAD_TARGET", PRK_E_BAD_TARGET},
    {"PRK_E_BAD_VERSION", PRK_E_BAD_VERSION},
    {"PRK_E_BAD_HEADER_NAME", PRK_E_BAD_HEADER_NAME},
    {"PRK_E_WS_BEFORE_COLON", PRK_E_WS_BEFORE_COLON},
    {"PRK_E_BAD_HEADER_VALUE", PRK_E_BAD_HEADER_VALUE},
    {"PRK_E_OBS_FOLD", PRK_E_OBS_FOLD},
    {"PRK_E_BARE_CR", PRK_E_BARE_CR},
    {"PRK_E_BARE_LF", PRK_E_BARE_LF},
    {"PRK_E_TOO_MANY_HEADERS", PRK_E_TOO_MANY_HEADERS},
    {"PRK_E_CHUNK_SIZE", PRK_E_CHUNK_SIZE},
    {"PRK_E_CHUNK_EXT", PRK_E_CHUNK_EXT},
    {"PRK_E_CHUNK_DATA_END", PRK_E_CHUNK_DATA_END},
    {"PRK_E_TRAILER", PRK_E_TRAILER},
};
#define NCODES (sizeof CODES / sizeof CODES[0])

static int code_of(const char *name)
{
    for (size_t i = 0; i < NCODES; i++)
        if (strcmp(CODES[i].name, name) == 0)
            return CODES[i].code;
    die("unknown code name %s", name);
    return 0;
}

static const char *name_of(long long rc)
{
    static char buf[32];

    for (size_t i = 0; i < NCODES; i++)
        if (CODES[i].code == rc)
            return CODES[i].name;
    snprintf(buf, sizeof buf, "%lld", rc);
    return buf;
}

static int is_head_error(long long rc)
{
    return rc <= PRK_E_BAD_REQUEST_LINE && rc >= PRK_E_TOO_MANY_HEADERS;
}

static int is_chunk_error(long long rc)
{
    return rc <= PRK_E_CHUNK_SIZE && rc >= PRK_E_TRAILER;
}

static const char *FORMS[] = {"?", "ORIGIN", "ABSOLUTE", "AUTHORITY", "ASTERISK"};

static int form_of_name(const char *name)
{
    for (int i = 1; i <= 4; i++)
        if (strcmp(FORMS[i], name) == 0)
            return i;
    die("unknown form %s", name);
    return 0;
}

/* ------------------------------------------------------------------------
 * byte classes, written from the RFC text (independent of parser.c's table)
 */
static int is_alpha(unsigned c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
static int is_digit(unsigned c) { return c >= '0' && c <= '9'; }
static int is_tchar(unsigned c)
{
    return is_alpha(c) || is_digit(c) || (c && strchr("!#$%&'*+-.^_`|~", (int)c));
}
static int is_vchar(unsigned c) { return c >= 0x21 && c <= 0x7e; }
static int is_ws(unsigned c) { return c == ' ' || c == '\t'; }
static int is_value(unsigned c) { return is_ws(c) || is_vchar(c) || c >= 0x80; }
static int is_scheme(unsigned c) { return is_alpha(c) || is_digit(c) || (c && strchr("+-.", (int)c)); }

/* RFC 9112 3.2 forms, as docs/parser.md describes them. */
static int expected_form(const unsigned char *t, size_t n)
{
    size_t i;

    if (t[0] == '/')
        return PRK_FORM_ORIGIN;
    if (n == 1 && t[0] == '*')
        return PRK_FORM_ASTERISK;
    if (is_alpha(t[0])) {
        for (i = 1; i < n && is_scheme(t[i]); i++)
            ;
        if (n - i >= 3 && memcmp(t + i, "://", 3) == 0)
            return PRK_FORM_ABSOLUTE;
    }
    return PRK_FORM_AUTHORITY;
}

/* ------------------------------------------------------------------------
 * corpus
 */
typedef struct {
    unsigned char *p;
    size_t n;
} bytes;

enum { K_VALID, K_INVALID, K_CHUNKED };
enum { CK_OK, CK_INCOMPLETE, CK_ERROR };

typedef struct {
    int kind;
    char name[160];
    bytes data;
    size_t max_headers;
    /* valid */
    int head_len, form, major, minor;
    bytes method, target;
    size_t nh;
    bytes *hname, *hvalue;
    /* invalid */
    int error;
    size_t detect_len;
    /* chunked */
    int ck;
    size_t consumed;
    bytes decoded;
} tcase;

static int hexval(int c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    die("bad hex digit %c", c);
    return 0;
}

static bytes unhex(const char *s)
{
    bytes b = {NULL, 0};
    size_t n;

    if (strcmp(s, "-") == 0) {
        b.p = malloc(1);
        return b;
    }
    n = strlen(s);
    if (n % 2)
        die("odd hex string");
    b.n = n / 2;
    b.p = malloc(b.n + 1);
    if (!b.p)
        die("out of memory");
    for (size_t i = 0; i < b.n; i++)
        b.p[i] = (unsigned char)(hexval(s[2 * i]) << 4 | hexval(s[2 * i + 1]));
    return b;
}

static bytes read_file(const char *dir, const char *rel)
{
    char path[4096];
    bytes b = {NULL, 0};
    FILE *f;
    long sz;

    snprintf(path, sizeof path, "%s/%s", dir, rel);
    f = fopen(path, "rb");
    if (!f)
        die("open %s: %s", path, strerror(errno));
    if (fseek(f, 0, SEEK_END) != 0 || (sz = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) != 0)
        die("seek %s", path);
    b.n = (size_t)sz;
    b.p = malloc(b.n + 1);
    if (!b.p || fread(b.p, 1, b.n, f) != b.n)
        die("read %s", path);
    fclose(f);
    return b;
}

static char *next_tok(char **save)
{
    char *t = strtok_r(NULL, " \t\r\n", save);
    if (!t)
        die("manifest line too short");
    return t;
}

static size_t to_size(const char *s)
{
    char *end;
    unsigned long long v;

    errno = 0;
    v = strtoull(s, &end, 10);
    if (errno || *end || end == s)
        die("bad number %s", s);
    return (size_t)v;
}

static tcase *cases;
static size_t ncases, max_input;

static void load_manifest(const char *dir, const char *manifest)
{
    FILE *f = fopen(manifest, "r");
    char *line = NULL, *save, *t;
    size_t cap = 0, alloc = 0;

    if (!f)
        die("open %s: %s", manifest, strerror(errno));
    while (getline(&line, &cap, f) >= 0) {
        tcase *c;

        t = strtok_r(line, " \t\r\n", &save);
        if (!t)
            continue;
        if (ncases == alloc) {
            alloc = alloc ? 2 * alloc : 64;
            cases = realloc(cases, alloc * sizeof *cases);
            if (!cases)
                die("out of memory");
        }
        c = &cases[ncases++];
        memset(c, 0, sizeof *c);
        if (strcmp(t, "V") == 0) c->kind = K_VALID;
        else if (strcmp(t, "I") == 0) c->kind = K_INVALID;
        else if (strcmp(t, "C") == 0) c->kind = K_CHUNKED;
        else die("bad manifest record %s", t);
        snprintf(c->name, sizeof c->name, "%s", next_tok(&save));
        c->data = read_file(dir, next_tok(&save));
        if (c->data.n > max_input)
            max_input = c->data.n;
        if (c->kind == K_VALID) {
            c->max_headers = to_size(next_tok(&save));
            c->head_len = (int)to_size(next_tok(&save));
            c->form = form_of_name(next_tok(&save));
            c->major = (int)to_size(next_tok(&save));
            c->minor = (int)to_size(next_tok(&save));
            c->method = unhex(next_tok(&save));
            c->target = unhex(next_tok(&save));
            c->nh = to_size(next_tok(&save));
            c->hname = calloc(c->nh + 1, sizeof(bytes));
            c->hvalue = calloc(c->nh + 1, sizeof(bytes));
            for (size_t i = 0; i < c->nh; i++) {
                c->hname[i] = unhex(next_tok(&save));
                c->hvalue[i] = unhex(next_tok(&save));
            }
        } else if (c->kind == K_INVALID) {
            c->max_headers = to_size(next_tok(&save));
            c->error = code_of(next_tok(&save));
            c->detect_len = to_size(next_tok(&save));
        } else {
            t = next_tok(&save);
            if (strcmp(t, "ok") == 0) {
                c->ck = CK_OK;
                c->consumed = to_size(next_tok(&save));
                c->decoded = unhex(next_tok(&save));
            } else if (strcmp(t, "incomplete") == 0) {
                c->ck = CK_INCOMPLETE;
                next_tok(&save);
                c->decoded = unhex(next_tok(&save));
            } else if (strcmp(t, "error") == 0) {
                c->ck = CK_ERROR;
                c->error = code_of(next_tok(&save));
                if (!is_chunk_error(c->error))
                    die("%s: not a chunked error", c->name);
            } else {
                die("bad chunked kind %s", t);
            }
        }
        if (strtok_r(NULL, " \t\r\n", &save))
            die("%s: trailing tokens in manifest line", c->name);
    }
    free(line);
    fclose(f);
}

/* ------------------------------------------------------------------------
 * prk_parse_request wrappers
 */
static guarded g_in, g_req, g_hdr, g_dec;
static unsigned long long n_parse_calls, n_decode_calls;

typedef struct {
    int rc;
    const unsigned char *buf;  /* where the input was placed */
    prk_request *req;
    prk_header *hdr;
} parsed;

enum { AT_END, AT_START };

static parsed parse_at(const unsigned char *data, size_t n, size_t max_headers,
                       int where)
{
    parsed r;
    size_t hbytes = max_headers * sizeof(prk_header);

    if (hbytes > g_hdr.size)
        die("max_headers %zu too large", max_headers);
    r.buf = where == AT_END ? place_end(&g_in, data, n) : place_start(&g_in, data, n);
    /* Both output areas end at a guard page: a write past max_headers
     * entries (or past the struct) faults. With max_headers == 0 the array
     * pointer is the guard page itself. */
    r.req = (prk_request *)(void *)(g_req.hi - sizeof(prk_request));
    r.hdr = (prk_header *)(void *)(g_hdr.hi - hbytes);
    memset(r.req, 0xA5, sizeof *r.req);
    if (hbytes)
        memset(r.hdr, 0xA5, hbytes);
    r.rc = prk_parse_request((const char *)r.buf, n, r.req, r.hdr, max_headers);
    n_parse_calls++;
    return r;
}

static int parse_rc(const unsigned char *data, size_t n, size_t max_headers)
{
    return parse_at(data, n, max_headers, AT_END).rc;
}

static int eq(const unsigned char *a, size_t an, const bytes *b)
{
    return an == b->n && (an == 0 || memcmp(a, b->p, an) == 0);
}

/*
 * A complete result, checked against the grammar of docs/parser.md with
 * the byte classes above: every offset inside the head, every byte of
 * every element in its class, the element boundaries where the grammar
 * puts them, and nothing between the last field line and the head end
 * but the empty line.
 */
static int check_complete(const unsigned char *d, size_t n, const parsed *p,
                          size_t max_headers)
{
    const prk_request *q = p->req;
    size_t rc = (size_t)p->rc, pos, i, k;
    const unsigned long long f0 = n_failures;

#define BAIL() do { if (n_failures != f0) return 0; } while (0)
    CHECK(rc >= 16 && rc <= n, "head length %zu for %zu bytes", rc, n);
    BAIL();
    /* leading CRLFs */
    CHECK(q->method_off % 2 == 0 && q->method_off < rc, "method_off %u", q->method_off);
    for (k = 0; k + 1 < q->method_off && q->method_off < rc; k += 2)
        CHECK(d[k] == '\r' && d[k + 1] == '\n', "leading byte %zu", k);
    /* method SP target SP HTTP/d.d CRLF */
    CHECK(q->method_len > 0 && (size_t)q->method_off + q->method_len < rc,
          "method %u+%u", q->method_off, q->method_len);
    CHECK(q->target_off == q->method_off + q->method_len + 1, "target_off %u", q->target_off);
    /* then " HTTP/d.d" CRLF and at least the empty line */
    CHECK(q->target_len > 0 && (size_t)q->target_off + q->target_len + 13 <= rc,
          "target %u+%u of %zu", q->target_off, q->target_len, rc);
    BAIL();
    for (k = 0; k < q->method_len; k++)
        CHECK(is_tchar(d[q->method_off + k]), "method byte %zu", k);
    CHECK(d[q->method_off + q->method_len] == ' ', "SP after method");
    for (k = 0; k < q->target_len; k++)
        CHECK(is_vchar(d[q->target_off + k]), "target byte %zu", k);
    pos = (size_t)q->target_off + q->target_len;
    CHECK(d[pos] == ' ', "SP after target");
    CHECK(memcmp(d + pos + 1, "HTTP/", 5) == 0 && is_digit(d[pos + 6]) &&
          d[pos + 7] == '.' && is_digit(d[pos + 8]), "version");
    CHECK(q->version_major == d[pos + 6] - '0' && q->version_minor == d[pos + 8] - '0',
          "version %d.%d", q->version_major, q->version_minor);
    CHECK(d[pos + 9] == '\r' && d[pos + 10] == '\n', "CRLF after version");
    CHECK(q->target_form == expected_form(d + q->target_off, q->target_len),
          "form %d", q->target_form);
    pos += 11;
    CHECK(q->num_headers <= max_headers, "num_headers %u > %zu", q->num_headers, max_headers);
    BAIL();
    for (i = 0; i < q->num_headers; i++) {
        const prk_header *h = &p->hdr[i];
        size_t ne = (size_t)h->name_off + h->name_len;
        size_t ve = (size_t)h->value_off + h->value_len;

        CHECK(h->name_off == pos && h->name_len > 0 && ne < rc,
              "header %zu name %u+%u at %zu", i, h->name_off, h->name_len, pos);
        CHECK(h->value_off > ne && ve + 2 <= rc, "header %zu value %u+%u",
              i, h->value_off, h->value_len);
        BAIL();
        for (k = h->name_off; k < ne; k++)
            CHECK(is_tchar(d[k]), "header %zu name byte", i);
        CHECK(d[ne] == ':', "colon after name %zu", i);
        for (k = ne + 1; k < h->value_off; k++)
            CHECK(is_ws(d[k]), "OWS before value %zu", i);
        for (k = h->value_off; k < ve; k++)
            CHECK(is_value(d[k]), "header %zu value byte", i);
        if (h->value_len)
            CHECK(!is_ws(d[h->value_off]) && !is_ws(d[ve - 1]), "value %zu not stripped", i);
        for (k = ve; k < rc && is_ws(d[k]); k++)
            ;
        CHECK(k + 2 <= rc && d[k] == '\r' && d[k + 1] == '\n', "CRLF after value %zu", i);
        BAIL();
        pos = k + 2;
    }
    CHECK(pos + 2 == rc && d[pos] == '\r' && d[pos + 1] == '\n',
          "empty line at %zu, head length %zu", pos, rc);
    BAIL();
    return 1;
#undef BAIL
}

/* Any result: a code from parser.h or a length within the input. */
static void check_any(const unsigned char *d, size_t n, const parsed *p, size_t max_headers)
{
    if (p->rc > 0)
        check_complete(d, n, p, max_headers);
    else
        CHECK(p->rc == PRK_INCOMPLETE || is_head_error(p->rc), "result %d", p->rc);
}

/* ------------------------------------------------------------------------
 * head corpus
 */
static unsigned long long n_valid, n_invalid, n_chunked, n_prefixes;

static void check_valid_fields(const tcase *c, const parsed *p, size_t n,
                               size_t max_headers)
{
    const prk_request *q = p->req;

    CHECK(p->rc == c->head_len, "head length %s, expected %d", name_of(p->rc), c->head_len);
    if (p->rc != c->head_len || !check_complete(p->buf, n, p, max_headers))
        return;
    CHECK(eq(p->buf + q->method_off, q->method_len, &c->method), "method");
    CHECK(eq(p->buf + q->target_off, q->target_len, &c->target), "target");
    CHECK(q->target_form == c->form, "form %d, expected %s", q->target_form, FORMS[c->form]);
    CHECK(q->version_major == c->major && q->version_minor == c->minor,
          "version %d.%d", q->version_major, q->version_minor);
    CHECK(q->num_headers == c->nh, "num_headers %u, expected %zu", q->num_headers, c->nh);
    for (size_t i = 0; i < c->nh && i < q->num_headers; i++) {
        CHECK(eq(p->buf + p->hdr[i].name_off, p->hdr[i].name_len, &c->hname[i]),
              "header %zu name", i);
        CHECK(eq(p->buf + p->hdr[i].value_off, p->hdr[i].value_len, &c->hvalue[i]),
              "header %zu value", i);
    }
}

/* Every prefix 0..n: PRK_INCOMPLETE below `at`, `want` from there on. */
static void prefixes(const tcase *c, size_t max_headers, size_t at, int want)
{
    for (size_t k = 0; k <= c->data.n; k++) {
        int rc = parse_rc(c->data.p, k, max_headers);
        int exp = k < at ? PRK_INCOMPLETE : want;

        n_prefixes++;
        CHECK(rc == exp, "prefix %zu (max_headers %zu): %s, expected %s", k,
              max_headers, name_of(rc), name_of(exp));
    }
}

static void run_valid(const tcase *c)
{
    parsed p;
    uint32_t extra_off;

    n_valid++;
    cur_what = "whole, at the guard page";
    p = parse_at(c->data.p, c->data.n, c->max_headers, AT_END);
    check_valid_fields(c, &p, c->data.n, c->max_headers);
    cur_what = "whole, after a leading guard page";
    p = parse_at(c->data.p, c->data.n, c->max_headers, AT_START);
    check_valid_fields(c, &p, c->data.n, c->max_headers);
    if (p.rc != c->head_len || p.req->num_headers != c->nh)
        return;

    /* every complete prefix gives the same fields */
    cur_what = "complete prefixes";
    for (size_t k = (size_t)c->head_len; k <= c->data.n; k++) {
        parsed q = parse_at(c->data.p, k, c->max_headers, AT_END);
        check_valid_fields(c, &q, k, c->max_headers);
    }
    cur_what = "every prefix";
    prefixes(c, c->max_headers, (size_t)c->head_len, c->head_len);

    /* Exactly as many entries as fields is enough; one fewer gives
     * TOO_MANY_HEADERS from the first byte of the extra field line. */
    if (c->nh > 0) {
        p = parse_at(c->data.p, c->data.n, c->max_headers, AT_END);
        extra_off = p.hdr[c->nh - 1].name_off;
        cur_what = "max_headers == number of fields";
        p = parse_at(c->data.p, c->data.n, c->nh, AT_END);
        check_valid_fields(c, &p, c->data.n, c->nh);
        cur_what = "max_headers == number of fields - 1";
        prefixes(c, c->nh - 1, (size_t)extra_off + 1, PRK_E_TOO_MANY_HEADERS);
    }
}

static void run_invalid(const tcase *c)
{
    parsed p;

    n_invalid++;
    cur_what = "whole, at the guard page";
    p = parse_at(c->data.p, c->data.n, c->max_headers, AT_END);
    CHECK(p.rc == c->error, "%s, expected %s", name_of(p.rc), name_of(c->error));
    cur_what = "whole, after a leading guard page";
    p = parse_at(c->data.p, c->data.n, c->max_headers, AT_START);
    CHECK(p.rc == c->error, "%s, expected %s", name_of(p.rc), name_of(c->error));
    cur_what = "every prefix";
    CHECK(c->detect_len > 0 && c->detect_len <= c->data.n, "detect_len %zu", c->detect_len);
    prefixes(c, c->max_headers, c->detect_len, c->error);
}

/* ------------------------------------------------------------------------
 * prk_decode_chunked wrappers
 */
typedef struct {
    long long rc;           /* final result */
    size_t consumed;        /* input bytes consumed over all calls */
    unsigned char *decoded; /* concatenated output (capacity: the input size) */
    size_t dlen;
} chunk_result;

static const char END_BODY[] = "0\r\n\r\n";

/*
 * Feed data[0:n] cut at cuts[0..ncuts) (sorted, may repeat: empty pieces)
 * to one decoder, each piece placed so it ends at the guard page. Checks
 * the per-call contract on the way: *out_len always written and within the
 * piece, bytes after a completed body untouched, *out_len 0 on an error,
 * errors sticky, a completed decoder returning 0 afterwards.
 */
static void decode_pieces(const unsigned char *data, size_t n, const size_t *cuts,
                          size_t ncuts, chunk_result *res)
{
    prk_chunked dec;
    size_t from = 0;

    memset(&dec, 0, sizeof dec);
    res->rc = PRK_INCOMPLETE;
    res->consumed = 0;
    res->dlen = 0;
    for (size_t i = 0; i <= ncuts; i++) {
        size_t to = i < ncuts ? cuts[i] : n;
        size_t plen = to - from, out_len = 12345;
        unsigned char *buf = place_end(&g_dec, data + from, plen);
        long long rc = prk_decode_chunked(&dec, (char *)buf, plen, &out_len);

        n_decode_calls++;
        if (rc >= 0) {
            CHECK((size_t)rc <= plen && out_len <= (size_t)rc,
                  "rc %lld, out_len %zu, piece %zu", rc, out_len, plen);
            if (!((size_t)rc <= plen && out_len <= (size_t)rc))
                return;
            memcpy(res->decoded + res->dlen, buf, out_len);
            res->dlen += out_len;
            res->consumed += (size_t)rc;
            res->rc = rc;
            CHECK(memcmp(buf + rc, data + from + rc, plen - (size_t)rc) == 0,
                  "bytes after the body were modified");
            /* complete: further calls return 0 and decode nothing */
            out_len = 777;
            rc = prk_decode_chunked(&dec, (char *)buf + rc, plen - (size_t)rc, &out_len);
            n_decode_calls++;
            CHECK(rc == 0 && out_len == 0, "call after completion: %lld, %zu", rc, out_len);
            CHECK(memcmp(buf + res->rc, data + from + res->rc, plen - (size_t)res->rc) == 0,
                  "call after completion modified its input");
            res->rc = (long long)res->consumed;
            return;
        }
        if (rc == PRK_INCOMPLETE) {
            CHECK(out_len <= plen, "out_len %zu > piece %zu", out_len, plen);
            if (out_len > plen)
                return;
            memcpy(res->decoded + res->dlen, buf, out_len);
            res->dlen += out_len;
            res->consumed += plen;
            from = to;
            continue;
        }
        CHECK(is_chunk_error(rc), "result %lld", rc);
        CHECK(out_len == 0, "out_len %zu on error", out_len);
        res->rc = rc;
        /* sticky */
        buf = place_end(&g_dec, END_BODY, 5);
        out_len = 99;
        CHECK(prk_decode_chunked(&dec, (char *)buf, 5, &out_len) == rc && out_len == 0,
              "error not sticky");
        n_decode_calls++;
        return;
    }
    /* input exhausted: an empty call (NULL buffer) changes nothing */
    {
        size_t out_len = 5;
        long long rc = prk_decode_chunked(&dec, NULL, 0, &out_len);

        n_decode_calls++;
        CHECK(rc == PRK_INCOMPLETE && out_len == 0, "empty call: %lld %zu", rc, out_len);
    }
}

static unsigned char *scratch_decoded;

static void check_chunk_case(const tcase *c, const chunk_result *r)
{
    if (c->ck == CK_ERROR) {
        CHECK(r->rc == c->error, "%s, expected %s", name_of(r->rc), name_of(c->error));
        return;
    }
    CHECK(eq(r->decoded, r->dlen, &c->decoded), "decoded bytes differ (%zu vs %zu)",
          r->dlen, c->decoded.n);
    if (c->ck == CK_INCOMPLETE) {
        CHECK(r->rc == PRK_INCOMPLETE, "%s, expected PRK_INCOMPLETE", name_of(r->rc));
        CHECK(r->consumed == c->data.n, "consumed %zu", r->consumed);
    } else {
        CHECK(r->rc >= 0, "%s, expected a complete body", name_of(r->rc));
        CHECK(r->consumed == c->consumed, "consumed %zu, expected %zu", r->consumed,
              c->consumed);
    }
}

static unsigned long long n_splits;

static void run_chunked(const tcase *c)
{
    chunk_result r;
    size_t n = c->data.n, cut[2];
    size_t *cuts;

    n_chunked++;
    r.decoded = scratch_decoded;
    cur_what = "whole";
    decode_pieces(c->data.p, n, NULL, 0, &r);
    check_chunk_case(c, &r);

    cur_what = "byte by byte";
    cuts = malloc((n + 1) * sizeof *cuts);
    for (size_t i = 0; i + 1 < n; i++)
        cuts[i] = i + 1;
    decode_pieces(c->data.p, n, cuts, n ? n - 1 : 0, &r);
    check_chunk_case(c, &r);
    free(cuts);

    cur_what = "every two-piece split";
    for (size_t k = 0; k <= n; k++) {
        cut[0] = k;
        decode_pieces(c->data.p, n, cut, 1, &r);
        check_chunk_case(c, &r);
        n_splits++;
    }
    if (n <= 96) {
        cur_what = "every three-piece split";
        for (size_t a = 0; a <= n; a++)
            for (size_t b = a; b <= n; b++) {
                cut[0] = a;
                cut[1] = b;
                decode_pieces(c->data.p, n, cut, 2, &r);
                check_chunk_case(c, &r);
                n_splits++;
            }
    }
}

/* ------------------------------------------------------------------------
 * random mutations
 */
static uint64_t rng_state;

static uint64_t rnd(void) /* splitmix64 */
{
    uint64_t z = (rng_state += UINT64_C(0x9E3779B97F4A7C15));
    z = (z ^ (z >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94D049BB133111EB);
    return z ^ (z >> 31);
}

static size_t rnd_below(size_t n) { return n ? (size_t)(rnd() % n) : 0; }

static const unsigned char SPECIAL[] = "\r\n\0 \t\x80\xff\x7f:;=\"\\/*0fFgH1.";
static const char *const INSERTS[] = {
    "\r\n", "\r\n\r\n", "\r\n ", " ", ":", ";a=b", "0\r\n", "\r\n0\r\n\r\n",
    "\n", "\r", "\t", "HTTP/1.1", "\"", "\\",
};

/* Mutate d[0:*n] in place (capacity cap); 1 to 4 operations. */
static void mutate(unsigned char *d, size_t *n, size_t cap)
{
    /* mostly one operation, so that many inputs stay close to valid */
    int ops = rnd_below(2) ? 1 : 1 + (int)rnd_below(4);

    while (ops--) {
        size_t len = *n, i = rnd_below(len + 1), k;

        switch (rnd_below(9)) {
        case 0: /* bit flip */
            if (len)
                d[rnd_below(len)] ^= (unsigned char)(1u << rnd_below(8));
            break;
        case 1: /* special byte */
            if (len)
                d[rnd_below(len)] = SPECIAL[rnd_below(sizeof SPECIAL - 1)];
            break;
        case 2: /* random byte */
            if (len)
                d[rnd_below(len)] = (unsigned char)rnd();
            break;
        case 3: /* insert a special byte (CR, LF, NUL, SP, HTAB, 0x80, ...) */
            if (len + 1 <= cap) {
                memmove(d + i + 1, d + i, len - i);
                d[i] = SPECIAL[rnd_below(sizeof SPECIAL - 1)];
                *n = len + 1;
            }
            break;
        case 4: { /* insert a short string */
            const char *s = INSERTS[rnd_below(sizeof INSERTS / sizeof INSERTS[0])];
            size_t sl = strlen(s);
            if (len + sl <= cap) {
                memmove(d + i + sl, d + i, len - i);
                memcpy(d + i, s, sl);
                *n = len + sl;
            }
            break;
        }
        case 5: /* delete 1-3 bytes */
            k = 1 + rnd_below(3);
            if (i + k > len)
                k = len - i;
            memmove(d + i, d + i + k, len - i - k);
            *n = len - k;
            break;
        case 6: /* truncate */
            *n = i;
            break;
        case 7: { /* duplicate a range of up to 40 bytes */
            size_t j = rnd_below(len + 1), a = i < j ? i : j, b = i < j ? j : i;
            size_t at = rnd_below(len + 1);
            if (b - a > 40)
                b = a + 40;
            if (len + (b - a) <= cap && b > a) {
                unsigned char tmp[40];
                memcpy(tmp, d + a, b - a);
                memmove(d + at + (b - a), d + at, len - at);
                memcpy(d + at, tmp, b - a);
                *n = len + (b - a);
            }
            break;
        }
        default: /* change a chunk-size / digit-like byte to a hex digit */
            if (len)
                d[rnd_below(len)] = (unsigned char)"0123456789abcdefABCDEF"[rnd_below(22)];
            break;
        }
    }
}

static unsigned long long head_outcomes[20], chunk_outcomes[20]; /* [0]: complete, [1]: incomplete, [-code] */

static size_t outcome_slot(long long rc)
{
    return rc >= 0 ? 0 : (size_t)(-rc);
}

static void mutate_head(const unsigned char *seed, size_t sn, unsigned char *d, size_t cap)
{
    static const size_t MAXH[] = {100, 0, 1, 3, 100, 100};
    size_t n = sn, maxh = MAXH[rnd_below(6)], ks[5];
    int where = rnd_below(4) == 0 ? AT_START : AT_END;
    parsed p;
    int whole, seen_error = 0;

    memcpy(d, seed, sn);
    mutate(d, &n, cap);
    p = parse_at(d, n, maxh, where);
    whole = p.rc;
    check_any(p.buf, n, &p, maxh);
    head_outcomes[outcome_slot(whole)]++;

    /* Incremental contract on a few prefixes: before the head end (or the
     * proving byte) PRK_INCOMPLETE, from there on the same result. */
    for (size_t i = 0; i < 4; i++)
        ks[i] = rnd_below(n + 1);
    ks[4] = n ? n - 1 : 0;
    for (size_t i = 1; i < 5; i++) /* insertion sort */
        for (size_t j = i; j > 0 && ks[j - 1] > ks[j]; j--) {
            size_t t = ks[j];
            ks[j] = ks[j - 1];
            ks[j - 1] = t;
        }
    for (size_t i = 0; i < 5; i++) {
        int rc = parse_rc(d, ks[i], maxh);

        if (whole > 0)
            CHECK(rc == (ks[i] < (size_t)whole ? PRK_INCOMPLETE : whole),
                  "prefix %zu of a %zu-byte input: %s, whole %d", ks[i], n, name_of(rc), whole);
        else if (whole == PRK_INCOMPLETE || !seen_error)
            CHECK(rc == PRK_INCOMPLETE || rc == whole,
                  "prefix %zu of a %zu-byte input: %s, whole %s", ks[i], n, name_of(rc),
                  name_of(whole));
        else
            CHECK(rc == whole, "prefix %zu after an error prefix: %s, whole %s", ks[i],
                  name_of(rc), name_of(whole));
        seen_error |= rc == whole && whole < PRK_INCOMPLETE;
    }
    /* Bytes after a result never change it. */
    if (whole != PRK_INCOMPLETE && n + 8 <= cap) {
        size_t extra = 1 + rnd_below(8);
        for (size_t i = 0; i < extra; i++)
            d[n + i] = rnd_below(2) ? SPECIAL[rnd_below(sizeof SPECIAL - 1)] : (unsigned char)rnd();
        p = parse_at(d, n + extra, maxh, AT_END);
        CHECK(p.rc == whole, "%zu bytes appended: %s, was %s", extra, name_of(p.rc),
              name_of(whole));
        check_any(p.buf, n + extra, &p, maxh);
    }
}

static void mutate_chunked(const unsigned char *seed, size_t sn, unsigned char *d, size_t cap,
                           unsigned char *out2)
{
    size_t n = sn, cuts[3], ncuts;
    chunk_result whole, split;

    memcpy(d, seed, sn);
    mutate(d, &n, cap);
    whole.decoded = scratch_decoded;
    decode_pieces(d, n, NULL, 0, &whole);
    CHECK(whole.rc >= PRK_INCOMPLETE || is_chunk_error(whole.rc), "result %lld", whole.rc);
    if (whole.rc >= 0)
        CHECK(whole.dlen <= (size_t)whole.rc && (size_t)whole.rc <= n, "rc %lld dlen %zu",
              whole.rc, whole.dlen);
    chunk_outcomes[outcome_slot(whole.rc)]++;

    /* The same input in 2 to 4 pieces gives the same result. */
    ncuts = 1 + rnd_below(3);
    for (size_t i = 0; i < ncuts; i++)
        cuts[i] = rnd_below(n + 1);
    for (size_t i = 1; i < ncuts; i++)
        for (size_t j = i; j > 0 && cuts[j - 1] > cuts[j]; j--) {
            size_t t = cuts[j];
            cuts[j] = cuts[j - 1];
            cuts[j - 1] = t;
        }
    split.decoded = out2;
    decode_pieces(d, n, cuts, ncuts, &split);
    CHECK(split.rc == whole.rc, "split into %zu pieces: %s, whole %s", ncuts + 1,
          name_of(split.rc), name_of(whole.rc));
    if (whole.rc >= PRK_INCOMPLETE && split.rc == whole.rc)
        CHECK(split.dlen == whole.dlen && memcmp(split.decoded, whole.decoded, whole.dlen) == 0,
              "split decoded differently");
}

/* ------------------------------------------------------------------------
 * fixed extra checks of the contract (not from the corpus)
 */
static void misc_checks(void)
{
    prk_request req;
    prk_chunked dec;
    size_t out_len = 3;
    static const char head[] = "GET / HTTP/1.1\r\n\r\n";

    cur_case = "misc";
    cur_what = "NULL buffer with len 0";
    CHECK(prk_parse_request(NULL, 0, &req, NULL, 0) == PRK_INCOMPLETE, "parse");
    memset(&dec, 0, sizeof dec);
    CHECK(prk_decode_chunked(&dec, NULL, 0, &out_len) == PRK_INCOMPLETE && out_len == 0,
          "decode");
    cur_what = "NULL headers with max_headers 0";
    CHECK(prk_parse_request(head, sizeof head - 1, &req, NULL, 0) == (int)sizeof head - 1 &&
          req.num_headers == 0, "parse");
    n_parse_calls += 2;
    n_decode_calls += 1;

    /* A length beyond INT_MAX (nearly all of it PROT_NONE): the result
     * comes from the bytes up to the head end or the error. */
    {
        size_t huge = (size_t)INT32_MAX + 2 * page_size;
        unsigned char *m = mmap(NULL, huge, PROT_NONE,
                                MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        static const char body[] = "3\r\nabc\r\n0\r\n\r\n";
        prk_header hdr[1];
        long long rc;

        if (m == MAP_FAILED || mprotect(m, page_size, PROT_READ | PROT_WRITE) != 0)
            die("mmap of %zu bytes: %s", huge, strerror(errno));
        cur_what = "len > INT_MAX";
        memcpy(m + page_size - (sizeof head - 1), head, sizeof head - 1);
        CHECK(prk_parse_request((const char *)m + page_size - (sizeof head - 1), huge - page_size,
                                &req, hdr, 1) == (int)sizeof head - 1, "parse");
        /* (the word-at-a-time scans may load up to 7 bytes past the byte
         * that decides, which len allows: keep those readable) */
        memcpy(m + page_size - 22, "GET /\x01xxxxxxxxxxxxxxxx", 22);
        CHECK(prk_parse_request((const char *)m + page_size - 22, huge - page_size + 16, &req,
                                hdr, 1) == PRK_E_BAD_TARGET, "early error");
        memset(&dec, 0, sizeof dec);
        memcpy(m + page_size - (sizeof body - 1), body, sizeof body - 1);
        rc = prk_decode_chunked(&dec, (char *)m + page_size - (sizeof body - 1), huge - page_size,
                                &out_len);
        CHECK(rc == (long long)sizeof body - 1 && out_len == 3 &&
              memcmp(m + page_size - (sizeof body - 1), "abc", 3) == 0, "decode: %lld", rc);
        munmap(m, huge);
        n_parse_calls += 2;
        n_decode_calls += 1;
    }
}

/* ------------------------------------------------------------------------ */
int main(int argc, char **argv)
{
    unsigned long long mutations = 200000, seed = 9112;
    unsigned char *d, *out2;
    size_t cap, nheads = 0, nchunks = 0, *heads, *chunks;

    setvbuf(stdout, NULL, _IOLBF, 0); /* keep output if a sanitizer aborts */
    page_size = (size_t)sysconf(_SC_PAGESIZE);
    if (argc == 2 && strcmp(argv[1], "--guard-selftest") == 0) {
        /* Reads one byte past a placed input: must die on the guard page. */
        volatile unsigned char sink;
        unsigned char *b;

        guarded_init(&g_in, 1);
        b = place_end(&g_in, "GET", 3);
        printf("reading buf[len]...\n");
        fflush(stdout);
        sink = b[3];
        printf("NOT REACHED %d\n", sink);
        return 0;
    }
    if (argc < 3 || argc > 5)
        die("usage: test_parser CORPUS_DIR MANIFEST [MUTATIONS [SEED]]");
    if (argc >= 4)
        mutations = to_size(argv[3]);
    if (argc >= 5)
        seed = to_size(argv[4]);
    load_manifest(argv[1], argv[2]);
    if (ncases == 0)
        die("empty manifest");

    cap = max_input + 1024;
    guarded_init(&g_in, cap);
    guarded_init(&g_dec, cap);
    guarded_init(&g_req, sizeof(prk_request));
    guarded_init(&g_hdr, 128 * sizeof(prk_header));
    scratch_decoded = malloc(cap);
    out2 = malloc(cap);
    d = malloc(cap);
    heads = malloc(ncases * sizeof *heads);
    chunks = malloc(ncases * sizeof *chunks);
    if (!scratch_decoded || !out2 || !d || !heads || !chunks)
        die("out of memory");

    misc_checks();
    for (size_t i = 0; i < ncases; i++) {
        const tcase *c = &cases[i];

        cur_case = c->name;
        if (c->kind == K_VALID) {
            run_valid(c);
            heads[nheads++] = i;
        } else if (c->kind == K_INVALID) {
            run_invalid(c);
            heads[nheads++] = i;
        } else {
            run_chunked(c);
            chunks[nchunks++] = i;
        }
    }

    rng_state = seed;
    cur_case = "mutation";
    for (unsigned long long m = 0; m < mutations; m++) {
        /* a third go to the chunked decoder; one input in ten is a seed of
         * the other kind */
        int chunked = nchunks && (!nheads || rnd_below(3) == 0);
        int other = nheads && nchunks && rnd_below(10) == 0;
        const tcase *c;

        if (chunked != other)
            c = &cases[chunks[rnd_below(nchunks)]];
        else
            c = &cases[heads[rnd_below(nheads)]];
        cur_what = c->name;
        if (chunked)
            mutate_chunked(c->data.p, c->data.n, d, cap - 16, out2);
        else
            mutate_head(c->data.p, c->data.n, d, cap - 16);
    }

    printf("head outcomes:");
    for (size_t i = 0; i < 20; i++)
        if (head_outcomes[i])
            printf(" %s=%llu", i ? name_of(-(long long)i) : "complete", head_outcomes[i]);
    printf("\nchunked outcomes:");
    for (size_t i = 0; i < 20; i++)
        if (chunk_outcomes[i])
            printf(" %s=%llu", i ? name_of(-(long long)i) : "complete", chunk_outcomes[i]);
    printf("\nRESULT valid=%llu invalid=%llu chunked=%llu prefixes=%llu splits=%llu "
           "mutations=%llu parse_calls=%llu decode_calls=%llu checks=%llu failures=%llu "
           "seed=%llu\n",
           n_valid, n_invalid, n_chunked, n_prefixes, n_splits, mutations, n_parse_calls,
           n_decode_calls, n_checks, n_failures, seed);

    /* everything is freed, so LeakSanitizer reports only real leaks */
    for (size_t i = 0; i < ncases; i++) {
        tcase *c = &cases[i];

        free(c->data.p);
        free(c->method.p);
        free(c->target.p);
        free(c->decoded.p);
        for (size_t k = 0; k < c->nh; k++) {
            free(c->hname[k].p);
            free(c->hvalue[k].p);
        }
        free(c->hname);
        free(c->hvalue);
    }
    free(cases);
    free(scratch_decoded);
    free(out2);
    free(d);
    free(heads);
    free(chunks);
    return n_failures ? 1 : 0;
}
