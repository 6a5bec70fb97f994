/*
 * prack request parser: stateless, incremental, allocation free.
 *
 * prk_parse_request() is called with everything received so far. It either
 * reports how many bytes the request head (request line + header section,
 * including the empty line) occupies, asks for more bytes, or names the
 * error. Every output is an offset/length pair into the caller's buffer, so
 * the caller may keep the buffer and slice it cheaply.
 *
 * The chunked decoder is the only stateful piece; its state lives in a
 * caller-owned, zero-initialised struct (RFC 9112 section 7.1).
 */
#ifndef PRACK_PARSER_H
#define PRACK_PARSER_H

#include <stddef.h>
#include <stdint.h>

/* Result codes. Positive results are byte counts; these are all <= 0. */
#define PRK_INCOMPLETE            (-1)  /* need more bytes */
#define PRK_E_BAD_REQUEST_LINE    (-2)  /* malformed request line (400) */
#define PRK_E_BAD_METHOD          (-3)  /* method is not a token (400) */
#define PRK_E_BAD_TARGET          (-4)  /* empty target or a byte outside VCHAR (400) */
#define PRK_E_BAD_VERSION         (-5)  /* not "HTTP/" DIGIT "." DIGIT (400) */
#define PRK_E_BAD_HEADER_NAME     (-6)  /* empty name or a non-token byte (400) */
#define PRK_E_WS_BEFORE_COLON     (-7)  /* "Name : value" (RFC 9112 5.1: 400) */
#define PRK_E_BAD_HEADER_VALUE    (-8)  /* CTL or NUL inside a field value (400) */
#define PRK_E_OBS_FOLD            (-9)  /* line folding (RFC 9112 5.2: 400) */
#define PRK_E_BARE_CR             (-10) /* CR not followed by LF (RFC 9112 2.2) */
#define PRK_E_BARE_LF             (-11) /* LF without CR: we do not take the MAY of 2.2 */
#define PRK_E_TOO_MANY_HEADERS    (-12) /* more than max_headers fields (431) */
#define PRK_E_CHUNK_SIZE          (-13) /* bad or overflowing chunk-size (400) */
#define PRK_E_CHUNK_EXT           (-14) /* bad chunk extension, or one too long (400) */
#define PRK_E_CHUNK_DATA_END      (-15) /* chunk-data not followed by CRLF (400) */
#define PRK_E_TRAILER             (-16) /* malformed trailer section, or too long (400) */

/* Request-target forms, RFC 9112 section 3.2. */
#define PRK_FORM_ORIGIN    1  /* "/path?query" */
#define PRK_FORM_ABSOLUTE  2  /* "http://host/path" */
#define PRK_FORM_AUTHORITY 3  /* "host:port" (CONNECT only) */
#define PRK_FORM_ASTERISK  4  /* "*" (OPTIONS only) */

typedef struct {
    uint32_t name_off, name_len;
    uint32_t value_off, value_len;   /* value without leading/trailing OWS */
} prk_header;

typedef struct {
    uint32_t method_off, method_len;
    uint32_t target_off, target_len;
    int version_major, version_minor;
    int target_form;                 /* one of PRK_FORM_* */
    uint32_t num_headers;
} prk_request;

/*
 * Parse a request head from buf[0:len].
 * Returns the head length (> 0, up to and including the empty line),
 * PRK_INCOMPLETE, or a PRK_E_* code. Leading empty lines before the
 * request line are skipped (RFC 9112 2.2) and counted in the head length.
 * At most max_headers entries are written to headers.
 */
int prk_parse_request(const char *buf, size_t len, prk_request *req,
                      prk_header *headers, size_t max_headers);

/* Caller-owned chunked decoder state; zero it before the first call. */
typedef struct {
    uint64_t remaining;      /* chunk data left; the size so far while its line is read */
    uint32_t state;          /* private */
    uint32_t hex_digits;     /* private: digits seen in the size */
    uint32_t ext_bytes;      /* private: bytes of extensions in this line */
    uint32_t trailer_bytes;  /* private: bytes of the trailer section */
} prk_chunked;

#define PRK_CHUNK_MAX_EXT      4096   /* extension bytes per chunk line */
#define PRK_CHUNK_MAX_TRAILER  8192   /* bytes in the trailer section */

/*
 * Decode chunked data in place. buf[0:len] is raw input that follows what
 * earlier calls consumed. Decoded bytes are moved to the front of buf and
 * their count is stored in *out_len.
 * Returns:
 *   >= 0            the body is complete; the value is the number of input
 *                   bytes consumed (bytes after it belong to the next message
 *                   and are left untouched);
 *   PRK_INCOMPLETE  every input byte was consumed, more are needed;
 *   PRK_E_CHUNK_*   / PRK_E_TRAILER on malformed input.
 */
long long prk_decode_chunked(prk_chunked *dec, char *buf, size_t len,
                             size_t *out_len);

/*
 * Data bytes still to come in the chunk being read: its declared size minus
 * what was decoded, once its size line is complete; 0 elsewhere (while a
 * size line is still being read, `remaining` holds the digits so far).
 */
uint64_t prk_chunked_pending(const prk_chunked *dec);

#endif
