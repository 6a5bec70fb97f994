/*
 * prack HTTP/1.1 request-head parser and chunked decoder.
 *
 * Grammar references are to RFC 9112 (HTTP/1.1 messages) and RFC 9110
 * (HTTP semantics). See docs/parser.md for the full list of what is
 * accepted and rejected.
 *
 * Design rules:
 *   - never read buf[len] or beyond, never write outside the caller's buffers;
 *   - one left-to-right pass; an error is returned as soon as the byte that
 *     proves it has been seen, PRK_INCOMPLETE only when the end of the input
 *     is reached, so any prefix of an input yields PRK_INCOMPLETE or the same
 *     error as the whole input;
 *   - byte classes come from one 256-entry table.
 */
#include "parser.h"

#include <limits.h>
#include <string.h>

/* Byte classes (bit flags). */
#define C_TOKEN  0x01u /* tchar, RFC 9110 5.6.2 */
#define C_VCHAR  0x02u /* 0x21-0x7E: request-target bytes */
#define C_VALUE  0x04u /* HTAB, SP, VCHAR, obs-text: field-value bytes */
#define C_HEX    0x08u /* HEXDIG */
#define C_SCHEME 0x10u /* ALPHA / DIGIT / "+" / "-" / "." (RFC 3986 3.1) */
#define C_EXTV   0x20u /* unquoted chunk-ext-val, loosely: VCHAR except ';' and
                          DQUOTE, plus obs-text */
#define C_QDTEXT 0x40u /* qdtext, RFC 9110 5.6.4 */

/* Each entry ORs the C_* bits of that byte; tests/test_parser.py and
 * tests/test_chunked.py check all 256 entries against the RFC sets. */
static const unsigned char cls[256] = {
    /* 0x00 */   0,   0,   0,   0,   0,   0,   0,   0,   0,  68,   0,   0,   0,   0,   0,   0,
    /* 0x10 */   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,
    /* 0x20 */  68, 103,   6, 103, 103, 103, 103, 103, 102, 102, 103, 119, 102, 119, 119, 102,
    /* 0x30 */ 127, 127, 127, 127, 127, 127, 127, 127, 127, 127, 102,  70, 102, 102, 102, 102,
    /* 0x40 */ 102, 127, 127, 127, 127, 127, 127, 119, 119, 119, 119, 119, 119, 119, 119, 119,
    /* 0x50 */ 119, 119, 119, 119, 119, 119, 119, 119, 119, 119, 119, 102,  38, 102, 103, 103,
    /* 0x60 */ 103, 127, 127, 127, 127, 127, 127, 119, 119, 119, 119, 119, 119, 119, 119, 119,
    /* 0x70 */ 119, 119, 119, 119, 119, 119, 119, 119, 119, 119, 119, 102, 103, 102, 103,   0,
    /* 0x80 */ 100, 100, 100, 100, 100, 100, 100, 100, 100, 100, 100, 100, 100, 100, 100, 100,
    /* 0x90 */ 100, 100, 100, 100, 100, 100, 100, 100, 100, 100, 100, 100, 100, 100, 100, 100,
    /* 0xa0 */ 100, 100, 100, 100, 100, 100, 100, 100, 100, 100, 100, 100, 100, 100, 100, 100,
    /* 0xb0 */ 100, 100, 100, 100, 100, 100, 100, 100, 100, 100, 100, 100, 100, 100, 100, 100,
    /* 0xc0 */ 100, 100, 100, 100, 100, 100, 100, 100, 100, 100, 100, 100, 100, 100, 100, 100,
    /* 0xd0 */ 100, 100, 100, 100, 100, 100, 100, 100, 100, 100, 100, 100, 100, 100, 100, 100,
    /* 0xe0 */ 100, 100, 100, 100, 100, 100, 100, 100, 100, 100, 100, 100, 100, 100, 100, 100,
    /* 0xf0 */ 100, 100, 100, 100, 100, 100, 100, 100, 100, 100, 100, 100, 100, 100, 100, 100,
};

#define IS(c, k) ((cls[(unsigned char)(c)] & (k)) != 0)
#define IS_WS(c) ((c) == ' ' || (c) == '\t')

/* First position in [p, end) whose byte is not in class k (or end). */
static inline const unsigned char *
skip_class(const unsigned char *p, const unsigned char *end, unsigned k)
{
    while (end - p >= 4) {
        if (!(cls[p[0]] & k)) return p;
        if (!(cls[p[1]] & k)) return p + 1;
        if (!(cls[p[2]] & k)) return p + 2;
        if (!(cls[p[3]] & k)) return p + 3;
        p += 4;
    }
    while (p < end && (cls[*p] & k))
        p++;
    return p;
}

/*
 * Word-at-a-time fast paths for the two long runs of a head: field values
 * and the request-target. Each test answers "does this 8-byte word hold a
 * byte that may end the run?"; on yes, the byte loop takes over for that
 * word, so the tests may be conservative (HTAB in a value takes the slow
 * path) but never miss a byte. Bit tricks: a byte < n exists iff
 * (x - n*ONES) & ~x & HIGHS != 0 (n <= 128); a byte > n exists iff
 * ((x + (127 - n)*ONES) | x) & HIGHS != 0 (n <= 127).
 */
#define ONES  UINT64_C(0x0101010101010101)
#define HIGHS UINT64_C(0x8080808080808080)

static inline uint64_t load64(const unsigned char *p)
{
    uint64_t x;
    memcpy(&x, p, sizeof x);
    return x;
}

static inline int value_word_stops(uint64_t x)
{
    uint64_t del = x ^ (ONES * 0x7F);
    return ((((x - ONES * 0x20) & ~x) | ((del - ONES) & ~del)) & HIGHS) != 0;
}

static inline int vchar_word_stops(uint64_t x)
{
    return ((((x - ONES * 0x21) & ~x) | (x + ONES * (0x7F - 0x7E)) | x)
            & HIGHS) != 0;
}

/* First position in [p, end) whose byte is not in class k; words for which
 * word_stops() is false are skipped whole (they hold class-k bytes only). */
#define SKIP_RUN(p, end, word_stops, k)                                     \
    do {                                                                    \
        for (;;) {                                                          \
            const unsigned char *lim_;                                      \
            while ((end) - (p) >= 8 && !word_stops(load64(p)))              \
                (p) += 8;                                                   \
            lim_ = (end) - (p) > 8 ? (p) + 8 : (end);                       \
            while ((p) < lim_ && IS(*(p), (k)))                             \
                (p)++;                                                      \
            if ((p) < lim_ || (p) == (end))                                 \
                break;                                                      \
        }                                                                   \
    } while (0)

/* field-value run: HTAB takes the byte loop for its word only. */
static inline const unsigned char *
skip_value(const unsigned char *p, const unsigned char *end)
{
    SKIP_RUN(p, end, value_word_stops, C_VALUE);
    return p;
}

/* request-target run: VCHAR only. */
static inline const unsigned char *
skip_vchar(const unsigned char *p, const unsigned char *end)
{
    SKIP_RUN(p, end, vchar_word_stops, C_VCHAR);
    return p;
}

/* absolute-form starts with scheme "://" (RFC 9112 3.2.2, RFC 3986 3.1). */
static int target_form(const unsigned char *t, size_t n)
{
    size_t i;

    if (t[0] == '/')
        return PRK_FORM_ORIGIN;
    if (n == 1 && t[0] == '*')
        return PRK_FORM_ASTERISK;
    if ((t[0] | 0x20) >= 'a' && (t[0] | 0x20) <= 'z') {
        for (i = 1; i < n && IS(t[i], C_SCHEME); i++)
            ;
        if (n - i >= 3 && t[i] == ':' && t[i + 1] == '/' && t[i + 2] == '/')
            return PRK_FORM_ABSOLUTE;
    }
    return PRK_FORM_AUTHORITY;
}

int prk_parse_request(const char *buf, size_t len, prk_request *req,
                      prk_header *headers, size_t max_headers)
{
    const unsigned char *const start = (const unsigned char *)buf;
    const unsigned char *p = start, *end, *tok, *q;
    size_t n = 0;
    int i;

    /* Offsets are uint32_t and the result is an int: a head can never be
     * longer than INT_MAX, so looking further is pointless. */
    if (len == 0)
        return PRK_INCOMPLETE; /* buf may be NULL: no pointer arithmetic */
    if (len > (size_t)INT_MAX)
        len = (size_t)INT_MAX;
    end = start + len;

    /* RFC 9112 2.2: empty lines before the request line are ignored. */
    for (;;) {
        if (p == end)
            return PRK_INCOMPLETE;
        if (*p == '\r') {
            if (end - p < 2)
                return PRK_INCOMPLETE;
            if (p[1] != '\n')
                return PRK_E_BARE_CR;
            p += 2;
        } else if (*p == '\n') {
            return PRK_E_BARE_LF;
        } else {
            break;
        }
    }

    /* method SP (RFC 9112 3.1, method = token). */
    tok = p;
    p = skip_class(p, end, C_TOKEN);
    if (p == end)
        return PRK_INCOMPLETE;
    if (*p != ' ')
        return (*p == '\r' || *p == '\n') ? PRK_E_BAD_REQUEST_LINE
                                           : PRK_E_BAD_METHOD;
    if (p == tok)
        return PRK_E_BAD_REQUEST_LINE;
    req->method_off = (uint32_t)(tok - start);
    req->method_len = (uint32_t)(p - tok);
    p++;

    /* request-target SP: VCHAR only (RFC 9112 3.2). */
    tok = p;
    p = skip_vchar(p, end);
    if (p == end)
        return PRK_INCOMPLETE;
    if (*p != ' ')
        return (*p == '\r' || *p == '\n') ? PRK_E_BAD_REQUEST_LINE
                                           : PRK_E_BAD_TARGET;
    if (p == tok)
        return PRK_E_BAD_REQUEST_LINE; /* two SPs in a row */
    req->target_off = (uint32_t)(tok - start);
    req->target_len = (uint32_t)(p - tok);
    req->target_form = target_form(tok, (size_t)(p - tok));
    p++;

    /* HTTP-version = "HTTP/" DIGIT "." DIGIT, case-sensitive (RFC 9112 2.3). */
    if (p == end)
        return PRK_INCOMPLETE;
    if (*p == ' ')
        return PRK_E_BAD_REQUEST_LINE;
    for (i = 0; i < 8; i++) {
        unsigned char c;
        int ok;

        if (p + i == end)
            return PRK_INCOMPLETE;
        c = p[i];
        switch (i) {
        case 0: ok = c == 'H'; break;
        case 1: case 2: ok = c == 'T'; break;
        case 3: ok = c == 'P'; break;
        case 4: ok = c == '/'; break;
        case 6: ok = c == '.'; break;
        default: ok = c >= '0' && c <= '9'; break;
        }
        if (!ok)
            return PRK_E_BAD_VERSION;
    }
    req->version_major = p[5] - '0';
    req->version_minor = p[7] - '0';
    p += 8;
    if (p == end)
        return PRK_INCOMPLETE;
    if (*p != '\r') {
        if (*p == '\n')
            return PRK_E_BARE_LF;
        return *p == ' ' ? PRK_E_BAD_REQUEST_LINE : PRK_E_BAD_VERSION;
    }
    if (end - p < 2)
        return PRK_INCOMPLETE;
    if (p[1] != '\n')
        return PRK_E_BARE_CR;
    p += 2;

    /* field-line = field-name ":" OWS field-value OWS CRLF (RFC 9112 5). */
    for (;;) {
        const unsigned char *vs, *ve;

        if (p == end)
            return PRK_INCOMPLETE;
        if (*p == '\r') {
            if (end - p < 2)
                return PRK_INCOMPLETE;
            if (p[1] != '\n')
                return PRK_E_BARE_CR;
            req->num_headers = (uint32_t)n;
            return (int)(p + 2 - start);
        }
        if (*p == '\n')
            return PRK_E_BARE_LF;
        /* RFC 9112 5.2 obs-fold, and 2.2 whitespace before the first
         * field line: both rejected. */
        if (IS_WS(*p))
            return PRK_E_OBS_FOLD;
        if (n >= max_headers)
            return PRK_E_TOO_MANY_HEADERS;

        tok = p;
        p = skip_class(p, end, C_TOKEN);
        if (p == end)
            return PRK_INCOMPLETE;
        if (*p != ':' || p == tok) {
            if (p != tok && IS_WS(*p)) {
                /* "Name : v" is a 5.1 violation; "Na me: v" a bad name. */
                for (q = p + 1; q < end && IS_WS(*q); q++)
                    ;
                if (q == end)
                    return PRK_INCOMPLETE;
                return *q == ':' ? PRK_E_WS_BEFORE_COLON
                                 : PRK_E_BAD_HEADER_NAME;
            }
            return PRK_E_BAD_HEADER_NAME;
        }
        headers[n].name_off = (uint32_t)(tok - start);
        headers[n].name_len = (uint32_t)(p - tok);
        p++;

        while (p < end && IS_WS(*p))
            p++;
        vs = p;
        p = skip_value(p, end);
        if (p == end)
            return PRK_INCOMPLETE;
        if (*p != '\r')
            return *p == '\n' ? PRK_E_BARE_LF : PRK_E_BAD_HEADER_VALUE;
        if (end - p < 2)
            return PRK_INCOMPLETE;
        if (p[1] != '\n')
            return PRK_E_BARE_CR;
        for (ve = p; ve > vs && IS_WS(ve[-1]); ve--)
            ;
        headers[n].value_off = (uint32_t)(vs - start);
        headers[n].value_len = (uint32_t)(ve - vs);
        n++;
        p += 2;
    }
}

/* ------------------------------------------------------------------------
 * Chunked transfer coding (RFC 9112 7.1).
 *
 *   chunked-body   = *chunk last-chunk trailer-section CRLF
 *   chunk          = chunk-size [ chunk-ext ] CRLF chunk-data CRLF
 *   chunk-ext      = *( BWS ";" BWS chunk-ext-name [ BWS "=" BWS chunk-ext-val ] )
 *   last-chunk     = 1*("0") [ chunk-ext ] CRLF
 *
 * One state per position in that grammar; the decoder walks the input one
 * byte at a time except inside chunk-data, which is moved in blocks.
 */
enum {
    CS_SIZE = 0,     /* in chunk-size (the zeroed state) */
    CS_SIZE_LF,      /* CR seen right after the size */
    CS_EXT_SEMI,     /* BWS, expecting ";" */
    CS_EXT_NAME0,    /* after ";", BWS then the first name byte */
    CS_EXT_NAME,     /* in chunk-ext-name */
    CS_EXT_EQ,       /* BWS after the name: "=" or ";" */
    CS_EXT_VAL0,     /* after "=", BWS then the value */
    CS_EXT_TOKVAL,   /* in an unquoted value */
    CS_EXT_QSTR,     /* in a quoted-string value */
    CS_EXT_QPAIR,    /* after a backslash in a quoted-string */
    CS_EXT_QEND,     /* after the closing DQUOTE: ";", BWS or CR */
    CS_EXT_LF,       /* CR seen at the end of a line with extensions */
    CS_DATA,         /* in chunk-data, dec->remaining bytes to go */
    CS_DATA_CR,      /* expecting the CR after chunk-data */
    CS_DATA_LF,      /* expecting the LF after chunk-data */
    CS_TR_LINE,      /* at the start of a trailer line (or the final CRLF) */
    CS_TR_NAME,      /* in a trailer field name */
    CS_TR_VALUE,     /* in a trailer field value */
    CS_TR_LF,        /* CR seen at the end of a trailer field line */
    CS_TR_END_LF,    /* CR seen on the final empty line */
    CS_DONE,         /* body complete */
    CS_FAILED = 0x100 /* + (-error code): sticky error */
};

/* 16 hex digits at most, and the value must stay <= 2^63 - 1: a size can be
 * multiplied by 16 and a digit added only while it is < 2^59. */
#define CHUNK_SIZE_MAX_DIGITS 16u
#define CHUNK_SIZE_SHIFT_LIMIT (UINT64_C(1) << 59)

static inline unsigned hex_value(unsigned char c)
{
    return c <= '9' ? (unsigned)(c - '0') : (unsigned)((c | 0x20) - 'a' + 10);
}

long long prk_decode_chunked(prk_chunked *dec, char *buf, size_t len,
                             size_t *out_len)
{
    unsigned char *const base = (unsigned char *)buf;
    unsigned char *in = base, *out = base, *end;
    uint32_t st = dec->state;
    long long err;

    *out_len = 0;
    if (st >= CS_FAILED)
        return -(long long)(st - CS_FAILED);
    if (st == CS_DONE)
        return 0;
    if (len == 0)
        return PRK_INCOMPLETE; /* buf may be NULL: no pointer arithmetic */
    end = base + len;

#define FAIL(code) do { err = (code); goto failed; } while (0)
#define EXT_BYTE() do { \
        if (++dec->ext_bytes > PRK_CHUNK_MAX_EXT) FAIL(PRK_E_CHUNK_EXT); \
    } while (0)

    while (in < end) {
        unsigned char c;

        if (st == CS_DATA) {
            size_t avail = (size_t)(end - in);
            size_t take = dec->remaining < (uint64_t)avail
                              ? (size_t)dec->remaining : avail;
            if (out != in)
                memmove(out, in, take);
            out += take;
            in += take;
            dec->remaining -= take;
            if (dec->remaining == 0)
                st = CS_DATA_CR;
            continue;
        }

        c = *in++;
        switch (st) {
        case CS_SIZE:
            if (IS(c, C_HEX)) {
                if (dec->hex_digits >= CHUNK_SIZE_MAX_DIGITS ||
                    dec->remaining >= CHUNK_SIZE_SHIFT_LIMIT)
                    FAIL(PRK_E_CHUNK_SIZE);
                dec->remaining = (dec->remaining << 4) | hex_value(c);
                dec->hex_digits++;
            } else if (dec->hex_digits == 0) {
                FAIL(PRK_E_CHUNK_SIZE);
            } else if (c == '\r') {
                st = CS_SIZE_LF;
            } else if (c == ';') {
                dec->ext_bytes = 0;
                EXT_BYTE();
                st = CS_EXT_NAME0;
            } else if (IS_WS(c)) {
                dec->ext_bytes = 0;
                EXT_BYTE();
                st = CS_EXT_SEMI;
            } else {
                FAIL(PRK_E_CHUNK_SIZE);
            }
            break;

        case CS_SIZE_LF:
            if (c != '\n')
                FAIL(PRK_E_CHUNK_SIZE);
            goto size_line_done;

        case CS_EXT_SEMI:
            EXT_BYTE();
            if (c == ';')
                st = CS_EXT_NAME0;
            else if (!IS_WS(c))
                FAIL(PRK_E_CHUNK_EXT);
            break;

        case CS_EXT_NAME0:
            EXT_BYTE();
            if (IS(c, C_TOKEN))
                st = CS_EXT_NAME;
            else if (!IS_WS(c))
                FAIL(PRK_E_CHUNK_EXT);
            break;

        case CS_EXT_NAME:
        case CS_EXT_EQ:
            if (c == '\r' && st == CS_EXT_NAME) {
                st = CS_EXT_LF;
                break;
            }
            EXT_BYTE();
            if (c == ';')
                st = CS_EXT_NAME0;
            else if (c == '=')
                st = CS_EXT_VAL0;
            else if (IS_WS(c))
                st = CS_EXT_EQ;
            else if (st != CS_EXT_NAME || !IS(c, C_TOKEN))
                FAIL(PRK_E_CHUNK_EXT);
            break;

        case CS_EXT_VAL0:
            EXT_BYTE();
            if (c == '"')
                st = CS_EXT_QSTR;
            else if (IS(c, C_EXTV))
                st = CS_EXT_TOKVAL;
            else if (!IS_WS(c))
                FAIL(PRK_E_CHUNK_EXT);
            break;

        case CS_EXT_TOKVAL:
        case CS_EXT_QEND:
            if (c == '\r') {
                st = CS_EXT_LF;
                break;
            }
            EXT_BYTE();
            if (c == ';')
                st = CS_EXT_NAME0;
            else if (IS_WS(c))
                st = CS_EXT_SEMI;
            else if (st != CS_EXT_TOKVAL || !IS(c, C_EXTV))
                FAIL(PRK_E_CHUNK_EXT);
            break;

        case CS_EXT_QSTR:
            EXT_BYTE();
            if (c == '"')
                st = CS_EXT_QEND;
            else if (c == '\\')
                st = CS_EXT_QPAIR;
            else if (!IS(c, C_QDTEXT))
                FAIL(PRK_E_CHUNK_EXT);
            break;

        case CS_EXT_QPAIR:
            EXT_BYTE();
            if (!IS(c, C_VALUE)) /* HTAB / SP / VCHAR / obs-text */
                FAIL(PRK_E_CHUNK_EXT);
            st = CS_EXT_QSTR;
            break;

        case CS_EXT_LF:
            if (c != '\n')
                FAIL(PRK_E_CHUNK_EXT);
        size_line_done:
            if (dec->remaining == 0) {
                dec->trailer_bytes = 0;
                st = CS_TR_LINE;
            } else {
                st = CS_DATA;
            }
            break;

        case CS_DATA_CR:
            if (c != '\r')
                FAIL(PRK_E_CHUNK_DATA_END);
            st = CS_DATA_LF;
            break;

        case CS_DATA_LF:
            if (c != '\n')
                FAIL(PRK_E_CHUNK_DATA_END);
            dec->hex_digits = 0;
            dec->remaining = 0;
            st = CS_SIZE;
            break;

        default: /* trailer section, RFC 9112 7.1.2: field lines + CRLF */
            if (++dec->trailer_bytes > PRK_CHUNK_MAX_TRAILER)
                FAIL(PRK_E_TRAILER);
            switch (st) {
            case CS_TR_LINE:
                if (c == '\r')
                    st = CS_TR_END_LF;
                else if (IS(c, C_TOKEN))
                    st = CS_TR_NAME;
                else
                    FAIL(PRK_E_TRAILER);
                break;
            case CS_TR_NAME:
                if (c == ':')
                    st = CS_TR_VALUE;
                else if (!IS(c, C_TOKEN))
                    FAIL(PRK_E_TRAILER);
                break;
            case CS_TR_VALUE:
                if (c == '\r')
                    st = CS_TR_LF;
                else if (!IS(c, C_VALUE))
                    FAIL(PRK_E_TRAILER);
                break;
            case CS_TR_LF:
                if (c != '\n')
                    FAIL(PRK_E_TRAILER);
                st = CS_TR_LINE;
                break;
            case CS_TR_END_LF:
                if (c != '\n')
                    FAIL(PRK_E_TRAILER);
                dec->state = CS_DONE;
                *out_len = (size_t)(out - base);
                return (long long)(in - base);
            default: /* unreachable unless the caller corrupted the state */
                FAIL(PRK_E_CHUNK_SIZE);
            }
            break;
        }
    }

    dec->state = st;
    *out_len = (size_t)(out - base);
    return PRK_INCOMPLETE;

failed:
    dec->state = CS_FAILED + (uint32_t)(-err);
    *out_len = 0;
    return err;
#undef FAIL
#undef EXT_BYTE
}

uint64_t prk_chunked_pending(const prk_chunked *dec)
{
    return dec->state == CS_DATA ? dec->remaining : 0;
}
