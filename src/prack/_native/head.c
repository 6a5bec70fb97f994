/*
 * prack request-head semantics (RFC 9112 sections 3, 6, 9; RFC 9110 7.2,
 * 8.6, 10.1.1) and the CGI environment as msgpack. See head.h and
 * docs/parser.md.
 *
 * Rules as in parser.c: never read outside [0, head_len) of the head,
 * never write outside [0, cap) of the output; no allocation.
 */
#include "head.h"

#include <string.h>

/* ASCII whitespace as Python's bytes.strip() knows it; a field value can
 * only hold SP and HTAB (the parser refuses other CTLs), but the rule is
 * the same everywhere. */
static inline int is_space(unsigned char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

static inline unsigned char lower(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') ? (unsigned char)(c | 0x20) : c;
}

/* s[0:n] equals the lower-case ASCII word w (of length n), ignoring case. */
static int eq_nocase(const unsigned char *s, size_t n, const char *w, size_t wn)
{
    size_t i;

    if (n != wn)
        return 0;
    for (i = 0; i < n; i++)
        if (lower(s[i]) != (unsigned char)w[i])
            return 0;
    return 1;
}

#define EQ(s, n, lit) eq_nocase((s), (n), (lit), sizeof(lit) - 1)

/* One element of a comma-separated list: its bounds after stripping. */
typedef struct {
    const unsigned char *p;
    size_t n;
} span;

/* The next element of the list value v[0:n] from *pos; 0 when done. The
 * joined value of repeated fields is their values with "," between them,
 * so walking each field's elements in order walks the joined list. */
static int next_element(const unsigned char *v, size_t n, size_t *pos, span *out)
{
    size_t a, b;

    if (*pos > n)
        return 0;
    a = *pos;
    for (b = a; b < n && v[b] != ','; b++)
        ;
    *pos = b + 1;               /* past the comma; n + 1 after the last element */
    while (a < b && is_space(v[a]))
        a++;
    while (b > a && is_space(v[b - 1]))
        b--;
    out->p = v + a;
    out->n = b - a;
    return 1;
}

/*
 * uri-host [":" port] (RFC 9110 7.2, RFC 3986 3.2.2-3.2.3): an IP-literal
 * in brackets, or a reg-name (which covers IPv4) that may be empty, then an
 * optional ":" and digits.
 */
static int reg_name_char(unsigned char c)
{
    if ((c | 0x20) >= 'a' && (c | 0x20) <= 'z')
        return 1;
    if (c >= '0' && c <= '9')
        return 1;
    return c != 0 && strchr("-._~!$&'()*+,;=%", c) != NULL;
}

static int valid_host(const unsigned char *h, size_t n)
{
    size_t i = 0;

    if (n && h[0] == '[') {
        for (i = 1; i < n && ((h[i] >= '0' && h[i] <= '9') || ((h[i] | 0x20) >= 'a' &&
                              (h[i] | 0x20) <= 'f') || h[i] == ':' || h[i] == '.'); i++)
            ;
        if (i == 1 || i >= n || h[i] != ']')
            return 0;
        i++;
    } else {
        while (i < n && reg_name_char(h[i]))
            i++;
    }
    if (i == n)
        return 1;
    if (h[i] != ':')
        return 0;
    for (i++; i < n; i++)
        if (h[i] < '0' || h[i] > '9')
            return 0;
    return 1;
}

/* Framing fields the scan looks for. */
enum { F_OTHER, F_HOST, F_LENGTH, F_TE, F_CONNECTION, F_EXPECT, F_CTYPE, F_UPGRADE };

static int field_kind(const unsigned char *name, size_t n)
{
    switch (n) {
    case 4:  return EQ(name, n, "host") ? F_HOST : F_OTHER;
    case 6:  return EQ(name, n, "expect") ? F_EXPECT : F_OTHER;
    case 7:  return EQ(name, n, "upgrade") ? F_UPGRADE : F_OTHER;
    case 10: return EQ(name, n, "connection") ? F_CONNECTION : F_OTHER;
    case 12: return EQ(name, n, "content-type") ? F_CTYPE : F_OTHER;
    case 14: return EQ(name, n, "content-length") ? F_LENGTH : F_OTHER;
    case 17: return EQ(name, n, "transfer-encoding") ? F_TE : F_OTHER;
    default: return F_OTHER;
    }
}

/* The header entries from `from` on whose kind is `kind` (the scan knows
 * the first of each kind and how many there are). */
#define FOR_KIND(i, from, kind)                                               \
    for (i = (from); i < nh; i++)                                             \
        if (field_kind(b + h[i].name_off, h[i].name_len) == (kind))

int prk_scan_head(const char *buf, size_t head_len, const prk_request *req,
                  const prk_header *headers, uint64_t max_body, prk_head *out)
{
    const unsigned char *b = (const unsigned char *)buf;
    const prk_header *h = headers;
    uint32_t nh = req->num_headers, i;
    uint32_t first[8] = {0}, count[8] = {0};
    const unsigned char *t, *path;
    size_t tn, path_n, k;
    int http11;

    memset(out, 0, sizeof *out);
    out->num_headers = nh;
    out->method_off = req->method_off;
    out->method_len = req->method_len;
    if ((uint64_t)req->method_off + req->method_len > head_len ||
        (uint64_t)req->target_off + req->target_len > head_len || req->target_len == 0)
        return PRK_H_BAD_INPUT;
    for (i = 0; i < nh; i++)
        if ((uint64_t)h[i].name_off + h[i].name_len > head_len ||
            (uint64_t)h[i].value_off + h[i].value_len > head_len)
            return PRK_H_BAD_INPUT;
    if (req->version_major != 1)
        return PRK_H_VERSION;
    http11 = req->version_minor >= 1;
    if (http11)
        out->flags |= PRK_HF_HTTP11;

    /* One pass over the fields: where each framing kind first occurs and
     * how often. */
    for (i = 0; i < nh; i++) {
        int kind = field_kind(b + h[i].name_off, h[i].name_len);
        if (kind == F_OTHER)
            continue;
        if (!count[kind]++)
            first[kind] = i;
        if (kind == F_CTYPE)
            out->ctype_index = i + 1;
        else if (kind == F_HOST)
            out->host_index = i + 1;     /* the last; more than one is refused */
    }
    if (count[F_UPGRADE])
        out->flags |= PRK_HF_UPGRADE;

    /* Target form against method (RFC 9112 3.2.3, 3.2.4). */
    {
        const unsigned char *m = b + req->method_off;
        size_t mn = req->method_len;
        if (mn == 7 && memcmp(m, "CONNECT", 7) == 0)
            return PRK_H_CONNECT;
        if (req->target_form == PRK_FORM_AUTHORITY)
            return PRK_H_AUTHORITY_FORM;
        if (req->target_form == PRK_FORM_ASTERISK && !(mn == 7 && memcmp(m, "OPTIONS", 7) == 0))
            return PRK_H_ASTERISK_FORM;
    }
    t = b + req->target_off;
    tn = req->target_len;
    path = t;
    path_n = tn;
    if (req->target_form == PRK_FORM_ABSOLUTE) {
        /* RFC 9112 3.2.2: the target's authority replaces Host. */
        size_t s, a, cut;
        for (s = 0; s + 3 <= tn && memcmp(t + s, "://", 3) != 0; s++)
            ;
        if (s + 3 > tn)
            return PRK_H_SCHEME;                 /* no "://": the scheme is all of it */
        if (!EQ(t, s, "http") && !EQ(t, s, "https"))
            return PRK_H_SCHEME;
        a = s + 3;
        for (cut = a; cut < tn && t[cut] != '/' && t[cut] != '?' && t[cut] != '#'; cut++)
            ;
        if (memchr(t + a, '@', cut - a))
            return PRK_H_USERINFO;
        /* RFC 9110 4.2.1: an http URI with an empty host is invalid. */
        if (cut == a || !valid_host(t + a, cut - a))
            return PRK_H_AUTHORITY;
        out->flags |= PRK_HF_ABSOLUTE;
        out->host_off = (uint32_t)(req->target_off + a);
        out->host_len = (uint32_t)(cut - a);
        path = t + cut;
        path_n = tn - cut;
        if (path_n == 0 || path[0] != '/')
            out->flags |= PRK_HF_PATH_SLASH;
    }
    if (memchr(path, '#', path_n))
        return PRK_H_FRAGMENT;
    {
        const unsigned char *q = memchr(path, '?', path_n);
        size_t pn = q ? (size_t)(q - path) : path_n;
        out->path_off = (uint32_t)(path - b);
        out->path_len = (uint32_t)pn;
        if (q) {
            out->query_off = (uint32_t)(q + 1 - b);
            out->query_len = (uint32_t)(path_n - pn - 1);
        } else {
            out->query_off = (uint32_t)(path + path_n - b);
        }
    }

    /* Host (RFC 9112 3.2): exactly one in HTTP/1.1. */
    if (count[F_HOST] > 1)
        return PRK_H_HOST_REPEATED;
    if (http11 && !count[F_HOST])
        return PRK_H_HOST_MISSING;
    if (count[F_HOST]) {
        const prk_header *f = &h[out->host_index - 1];
        if (!valid_host(b + f->value_off, f->value_len))
            return PRK_H_HOST_INVALID;
        if (!(out->flags & PRK_HF_ABSOLUTE)) {
            out->host_off = f->value_off;
            out->host_len = f->value_len;
        }
    }

    /* Persistence (RFC 9112 9.3). */
    {
        int close = 0, keep = 0;
        if (count[F_CONNECTION]) {
            FOR_KIND(i, first[F_CONNECTION], F_CONNECTION) {
                size_t pos = 0;
                span e;
                while (next_element(b + h[i].value_off, h[i].value_len, &pos, &e)) {
                    if (EQ(e.p, e.n, "close"))
                        close = 1;
                    else if (EQ(e.p, e.n, "keep-alive"))
                        keep = 1;
                }
            }
        }
        if (!close && (http11 || keep))
            out->flags |= PRK_HF_KEEP_ALIVE;
    }

    /* Expectations (RFC 9110 10.1.1): only 100-continue, once. */
    if (count[F_EXPECT]) {
        const prk_header *f = &h[first[F_EXPECT]];
        const unsigned char *v = b + f->value_off;
        size_t a = 0, z = f->value_len;
        while (a < z && is_space(v[a]))
            a++;
        while (z > a && is_space(v[z - 1]))
            z--;
        /* Repeats join with ",", which never makes "100-continue". */
        if (count[F_EXPECT] > 1 || !EQ(v + a, z - a, "100-continue"))
            return PRK_H_EXPECTATION;
        /* An HTTP/1.0 client does not know 100 (RFC 9110 10.1.1). */
        if (http11)
            out->flags |= PRK_HF_CONTINUE;
    }

    /* Message body length (RFC 9112 6.3). */
    if (count[F_TE]) {
        size_t elements = 0;
        int prev_chunked = 0, chunked_before = 0;
        if (!http11)
            return PRK_H_TE_HTTP10;
        if (count[F_LENGTH])
            return PRK_H_TE_AND_LENGTH;
        FOR_KIND(i, first[F_TE], F_TE) {
            size_t pos = 0;
            span e;
            while (next_element(b + h[i].value_off, h[i].value_len, &pos, &e)) {
                if (elements++ && prev_chunked)
                    chunked_before = 1;
                prev_chunked = EQ(e.p, e.n, "chunked");
            }
        }
        if (!prev_chunked)
            return PRK_H_TE_NOT_FINAL;
        if (elements > 1)
            return chunked_before ? PRK_H_TE_TWICE : PRK_H_TE_UNSUPPORTED;
        out->flags |= PRK_HF_CHUNKED;
    } else if (count[F_LENGTH]) {
        /* RFC 9110 8.6: repeats are accepted only as the same digits
         * ("5, 5"); "5, 05" is refused, since another parser may read
         * "05" differently. */
        span fst_el = {NULL, 0};
        uint64_t length = 0;
        FOR_KIND(i, first[F_LENGTH], F_LENGTH) {
            size_t pos = 0;
            span e;
            while (next_element(b + h[i].value_off, h[i].value_len, &pos, &e)) {
                if (e.n == 0)
                    return PRK_H_LENGTH_INVALID;
                for (k = 0; k < e.n; k++)
                    if (e.p[k] < '0' || e.p[k] > '9')
                        return PRK_H_LENGTH_INVALID;
                if (e.n > 18)
                    return PRK_H_LENGTH_TOO_LARGE;
                if (fst_el.p && (e.n != fst_el.n || memcmp(e.p, fst_el.p, e.n) != 0))
                    return PRK_H_LENGTH_CONFLICT;
                fst_el = e;
            }
        }
        for (k = 0; k < fst_el.n; k++)
            length = length * 10 + (uint64_t)(fst_el.p[k] - '0');
        if (length > max_body)
            return PRK_H_BODY_TOO_LARGE;
        out->content_length = length;
        out->flags |= PRK_HF_LENGTH;
    }
    if ((out->flags & PRK_HF_LENGTH) && out->content_length == 0)
        out->flags &= ~PRK_HF_CONTINUE;
    if (!(out->flags & (PRK_HF_LENGTH | PRK_HF_CHUNKED)))
        out->flags &= ~PRK_HF_CONTINUE;
    return PRK_HEAD_OK;
}

int prk_read_head(const char *buf, size_t len, prk_request *req, prk_header *headers,
                  size_t max_headers, uint64_t max_body, prk_head *out)
{
    int rc = prk_parse_request(buf, len, req, headers, max_headers);
    if (rc > 0)
        out->result = prk_scan_head(buf, (size_t)rc, req, headers, max_body, out);
    return rc;
}

/* -- the environment ------------------------------------------------------ */

typedef struct {
    unsigned char *p;
    size_t n, cap;
    int full;
} writer;

/* Room for n more bytes: where they go, or NULL (and the writer is full). */
static inline unsigned char *reserve(writer *w, size_t n)
{
    unsigned char *at;
    if (w->full || n > w->cap - w->n) {
        w->full = 1;
        return NULL;
    }
    at = w->p + w->n;
    w->n += n;
    return at;
}

static inline void put(writer *w, const void *src, size_t n)
{
    unsigned char *at = reserve(w, n);
    if (at && n)
        memcpy(at, src, n);
}

static inline void put_byte(writer *w, unsigned char c)
{
    unsigned char *at = reserve(w, 1);
    if (at)
        *at = c;
}

/* msgpack str header for an n-byte UTF-8 string (smallest form). */
static void put_str_head(writer *w, size_t n)
{
    unsigned char h[5];
    if (n < 32) {
        h[0] = (unsigned char)(0xa0 | n);
        put(w, h, 1);
    } else if (n < 256) {
        h[0] = 0xd9;
        h[1] = (unsigned char)n;
        put(w, h, 2);
    } else if (n < 65536) {
        h[0] = 0xda;
        h[1] = (unsigned char)(n >> 8);
        h[2] = (unsigned char)n;
        put(w, h, 3);
    } else {
        h[0] = 0xdb;
        h[1] = (unsigned char)(n >> 24);
        h[2] = (unsigned char)(n >> 16);
        h[3] = (unsigned char)(n >> 8);
        h[4] = (unsigned char)n;
        put(w, h, 5);
    }
}

static void put_ascii(writer *w, const void *s, size_t n)
{
    put_str_head(w, n);
    put(w, s, n);
}

#define PUT_KEY(w, lit) put_ascii((w), (lit), sizeof(lit) - 1)

/* UTF-8 length of latin-1 bytes. */
static size_t utf8_len(const unsigned char *s, size_t n)
{
    size_t k = 0, extra = 0;
    uint64_t word;
    for (; k + 8 <= n; k += 8) {        /* bytes with the high bit, 8 at a time */
        memcpy(&word, s + k, 8);
        extra += (size_t)((((word >> 7) & 0x0101010101010101ull) * 0x0101010101010101ull) >> 56);
    }
    for (; k < n; k++)
        extra += s[k] >> 7;
    return n + extra;
}

/* latin-1 bytes as UTF-8 (no header); u8 is utf8_len(s, n). */
static void put_latin1(writer *w, const unsigned char *s, size_t n, size_t u8)
{
    unsigned char *at = reserve(w, u8);
    size_t k;
    if (!at)
        return;
    if (u8 == n) {
        memcpy(at, s, n);
        return;
    }
    for (k = 0; k < n; k++) {
        if (s[k] < 0x80) {
            *at++ = s[k];
        } else {
            *at++ = (unsigned char)(0xc0 | (s[k] >> 6));
            *at++ = (unsigned char)(0x80 | (s[k] & 0x3f));
        }
    }
}

static void put_decimal(writer *w, uint64_t v)
{
    char d[20];
    size_t n = 0;
    do {
        d[sizeof d - 1 - n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    put_ascii(w, d + sizeof d - n, n);
}

/* A field the environment leaves out: Content-Type/Length have CGI names,
 * the body arrives de-chunked, a "Proxy" field would become HTTP_PROXY,
 * which CGI code takes for its outgoing proxy ("httpoxy"), and a name with
 * "_" would alias the "-" spelling (as nginx, by default). */
static int env_dropped(const unsigned char *name, size_t n)
{
    return memchr(name, '_', n) != NULL || EQ(name, n, "content-type") ||
           EQ(name, n, "content-length") || EQ(name, n, "transfer-encoding") ||
           EQ(name, n, "proxy");
}

/* A hash of a field name that ignores case (and, being a filter only, a
 * little more: bit 0x20 of every byte), eight bytes at a time: the fields
 * are sorted by it first, so most comparisons are of two integers. */
static uint32_t name_hash(const unsigned char *s, size_t n)
{
    uint64_t x = n * 0x9e3779b97f4a7c15ull, word;
    size_t k = 0;
    for (; k + 8 <= n; k += 8) {
        memcpy(&word, s + k, 8);
        x = (x ^ (word | 0x2020202020202020ull)) * 0xff51afd7ed558ccdull;
        x ^= x >> 29;
    }
    if (k < n) {
        word = 0;
        memcpy(&word, s + k, n - k);
        x = (x ^ (word | 0x2020202020202020ull)) * 0xff51afd7ed558ccdull;
        x ^= x >> 29;
    }
    return (uint32_t)(x ^ (x >> 32));
}

#define HASHED_MAX 1024    /* limits.max_headers is at most 1000 */

static int same_name(const unsigned char *b, const prk_header *x, const prk_header *y)
{
    size_t k;
    if (x->name_len != y->name_len)
        return 0;
    for (k = 0; k < x->name_len; k++)
        if (lower(b[x->name_off + k]) != lower(b[y->name_off + k]))
            return 0;
    return 1;
}

/* The order that groups the fields of one name (ignoring case), in field
 * order within the group: hash, then the lower-cased name, then index. */
static int field_order(const unsigned char *b, const prk_header *h, const uint32_t *hashes,
                       uint16_t x, uint16_t y)
{
    size_t nx = h[x].name_len, ny = h[y].name_len, n = nx < ny ? nx : ny, k;
    if (hashes[x] != hashes[y])
        return hashes[x] < hashes[y] ? -1 : 1;
    for (k = 0; k < n; k++) {
        unsigned char cx = lower(b[h[x].name_off + k]), cy = lower(b[h[y].name_off + k]);
        if (cx != cy)
            return cx < cy ? -1 : 1;
    }
    if (nx != ny)
        return nx < ny ? -1 : 1;
    return x < y ? -1 : x > y;
}

/* Sort the field indices a[0:n] by field_order, with tmp[0:n] as scratch
 * (a bottom-up merge sort: O(n log n) comparisons whatever the names, so a
 * head of many names with one hash costs no quadratic work). */
static void sort_fields(uint16_t *a, uint16_t *tmp, uint32_t n, const unsigned char *b,
                        const prk_header *h, const uint32_t *hashes)
{
    uint16_t *src = a, *dst = tmp, *swap;
    uint32_t width, lo, mid, hi, i, j, k;

    for (width = 1; width < n; width *= 2) {
        for (lo = 0; lo < n; lo += 2 * width) {
            mid = lo + width < n ? lo + width : n;
            hi = lo + 2 * width < n ? lo + 2 * width : n;
            i = lo;
            j = mid;
            k = lo;
            while (i < mid && j < hi)
                dst[k++] = field_order(b, h, hashes, src[i], src[j]) <= 0 ? src[i++] : src[j++];
            while (i < mid)
                dst[k++] = src[i++];
            while (j < hi)
                dst[k++] = src[j++];
        }
        swap = src;
        src = dst;
        dst = swap;
    }
    if (src != a)
        memcpy(a, src, (size_t)n * sizeof *a);
}

size_t prk_env_bound(size_t head_len, uint32_t num_headers, size_t server_len,
                     size_t extra_len)
{
    /* Every field costs at most its name, twice its value (latin-1 to
     * UTF-8) and two separators; the target, the host and Content-Type
     * are written at most three times; then headers and the fixed keys. */
    return 8 * head_len + 32 * (size_t)num_headers + 1024 + server_len + extra_len;
}

long long prk_write_env(char *out, size_t cap, const char *head, size_t head_len,
                        const char *saved, size_t saved_len, long long content_length,
                        const char *server, size_t server_len, uint32_t server_count,
                        const char *extra, size_t extra_len, uint32_t extra_count)
{
    const unsigned char *b = (const unsigned char *)head;
    prk_head st;
    const prk_header *h;
    prk_header aligned[HASHED_MAX];
    uint32_t nh, i, j, fields = 0, count;
    uint32_t hashes[HASHED_MAX];
    uint16_t order[HASHED_MAX], scratch[HASHED_MAX];
    uint16_t next_of_name[HASHED_MAX];  /* the next field of the same name, 0: none */
    unsigned char first_of_name[HASHED_MAX];
    writer w = {(unsigned char *)out, 0, cap, 0};
    unsigned char *at;
    int has_host;

    if (saved_len < sizeof st)
        return PRK_ENV_BAD_STATE;
    memcpy(&st, saved, sizeof st);
    nh = st.num_headers;
    if ((saved_len - sizeof st) / sizeof(prk_header) < nh || nh > HASHED_MAX)
        return PRK_ENV_BAD_STATE;
    /* The entries follow prk_head (a multiple of 8 bytes) in the caller's
     * copy, aligned when the copy is; else they are copied here first. */
    h = (const prk_header *)(const void *)(saved + sizeof st);
    if (((uintptr_t)h & (_Alignof(prk_header) - 1)) != 0) {
        memcpy(aligned, saved + sizeof st, (size_t)nh * sizeof(prk_header));
        h = aligned;
    }
    if ((uint64_t)st.method_off + st.method_len > head_len ||
        (uint64_t)st.path_off + st.path_len > head_len ||
        (uint64_t)st.query_off + st.query_len > head_len ||
        (uint64_t)st.host_off + st.host_len > head_len ||
        st.host_index > nh || st.ctype_index > nh)
        return PRK_ENV_BAD_STATE;
    for (i = 0; i < nh; i++)
        if ((uint64_t)h[i].name_off + h[i].name_len > head_len ||
            (uint64_t)h[i].value_off + h[i].value_len > head_len)
            return PRK_ENV_BAD_STATE;

    /* Which fields start a variable (the first of their name, not left
     * out), so the map's size is known before it is written, and the
     * repeats of each: the fields sorted so that each name's are together,
     * in order. */
    for (i = 0; i < nh; i++) {
        hashes[i] = name_hash(b + h[i].name_off, h[i].name_len);
        order[i] = (uint16_t)i;
        next_of_name[i] = 0;
    }
    sort_fields(order, scratch, nh, b, h, hashes);
    for (j = 0; j < nh; j++) {
        uint16_t x = order[j];
        if (j && hashes[order[j - 1]] == hashes[x] && same_name(b, &h[order[j - 1]], &h[x])) {
            first_of_name[x] = 0;
            next_of_name[order[j - 1]] = x;
        } else {
            first_of_name[x] = (unsigned char)!env_dropped(b + h[x].name_off, h[x].name_len);
            fields += first_of_name[x];
        }
    }
    has_host = st.host_len > 0;
    count = 6 + (has_host ? 2 : server_count) + (st.ctype_index ? 1 : 0) +
            (content_length >= 0 ? 1 : 0) + fields + extra_count +
            ((st.flags & PRK_HF_ABSOLUTE) && !st.host_index ? 1 : 0);
    if (count < 16) {
        put_byte(&w, (unsigned char)(0x80 | count));
    } else if (count < 65536) {
        unsigned char m[3] = {0xde, (unsigned char)(count >> 8), (unsigned char)count};
        put(&w, m, 3);
    } else {
        unsigned char m[5] = {0xdf, (unsigned char)(count >> 24), (unsigned char)(count >> 16),
                              (unsigned char)(count >> 8), (unsigned char)count};
        put(&w, m, 5);
    }

    PUT_KEY(&w, "REQUEST_METHOD");
    put_ascii(&w, b + st.method_off, st.method_len);
    PUT_KEY(&w, "SCRIPT_NAME");
    put_str_head(&w, 0);
    PUT_KEY(&w, "PATH_INFO");
    if (st.flags & PRK_HF_PATH_SLASH) {
        put_str_head(&w, (size_t)st.path_len + 1);
        put_byte(&w, '/');
        put(&w, b + st.path_off, st.path_len);
    } else {
        put_ascii(&w, b + st.path_off, st.path_len);
    }
    PUT_KEY(&w, "QUERY_STRING");
    put_ascii(&w, b + st.query_off, st.query_len);
    if (has_host) {
        /* name [":" port], or "[v6]" [":" port]; the scan validated it */
        const unsigned char *hs = b + st.host_off;
        size_t hn = st.host_len, name_n, port_at, k;
        if (hs[0] == '[') {
            const unsigned char *close = memchr(hs, ']', hn);
            name_n = close ? (size_t)(close - hs) + 1 : 0;
            port_at = (name_n < hn && hs[name_n] == ':') ? name_n + 1 : hn;
        } else {
            const unsigned char *colon = memchr(hs, ':', hn);
            name_n = colon ? (size_t)(colon - hs) : hn;
            port_at = colon ? name_n + 1 : hn;
        }
        PUT_KEY(&w, "SERVER_NAME");
        put_str_head(&w, name_n);
        if ((at = reserve(&w, name_n)) != NULL)
            for (k = 0; k < name_n; k++)
                at[k] = lower(hs[k]);
        PUT_KEY(&w, "SERVER_PORT");
        if (port_at < hn)
            put_ascii(&w, hs + port_at, hn - port_at);
        else
            put_ascii(&w, "80", 2);
    } else {
        put(&w, server, server_len);
    }
    PUT_KEY(&w, "SERVER_PROTOCOL");
    put_ascii(&w, (st.flags & PRK_HF_HTTP11) ? "HTTP/1.1" : "HTTP/1.0", 8);
    PUT_KEY(&w, "rack.url_scheme");
    PUT_KEY(&w, "http");
    if (st.ctype_index) {
        const prk_header *f = &h[st.ctype_index - 1];
        size_t u8 = utf8_len(b + f->value_off, f->value_len);
        PUT_KEY(&w, "CONTENT_TYPE");
        put_str_head(&w, u8);
        put_latin1(&w, b + f->value_off, f->value_len, u8);
    }
    if (content_length >= 0) {
        PUT_KEY(&w, "CONTENT_LENGTH");
        put_decimal(&w, (uint64_t)content_length);
    }

    for (i = 0; i < nh; i++) {
        const unsigned char *name = b + h[i].name_off;
        size_t nn = h[i].name_len, total, u8, k;
        int cookie, is_host;
        if (!first_of_name[i])
            continue;
        /* HTTP_NAME */
        put_str_head(&w, 5 + nn);
        if ((at = reserve(&w, 5 + nn)) != NULL) {
            memcpy(at, "HTTP_", 5);
            for (k = 0; k < nn; k++) {
                unsigned char c = name[k];
                at[5 + k] = c == '-' ? '_' : (c >= 'a' && c <= 'z') ? (unsigned char)(c - 32) : c;
            }
        }
        is_host = st.host_index == i + 1;
        if (is_host && (st.flags & PRK_HF_ABSOLUTE)) {
            /* RFC 9112 3.2.2: the target's authority replaces Host. */
            put_ascii(&w, b + st.host_off, st.host_len);
            continue;
        }
        cookie = EQ(name, nn, "cookie");
        u8 = utf8_len(b + h[i].value_off, h[i].value_len);
        total = u8;
        for (j = next_of_name[i]; j; j = next_of_name[j])
            total += 2 + utf8_len(b + h[j].value_off, h[j].value_len);
        /* RFC 9110 5.3 joins repeats with ", "; cookies use "; " (RFC 6265 5.4). */
        put_str_head(&w, total);
        put_latin1(&w, b + h[i].value_off, h[i].value_len, u8);
        for (j = next_of_name[i]; j; j = next_of_name[j]) {
            put(&w, cookie ? "; " : ", ", 2);
            put_latin1(&w, b + h[j].value_off, h[j].value_len,
                       utf8_len(b + h[j].value_off, h[j].value_len));
        }
    }
    if ((st.flags & PRK_HF_ABSOLUTE) && !st.host_index) {
        PUT_KEY(&w, "HTTP_HOST");
        put_ascii(&w, b + st.host_off, st.host_len);
    }
    put(&w, extra, extra_len);
    if (w.full)
        return PRK_ENV_NO_ROOM;
    return (long long)w.n;
}
