/*
 * prack request-head semantics, on top of prk_parse_request().
 *
 * prk_scan_head() walks the parsed header fields once, finds the framing
 * fields (Host, Content-Length, Transfer-Encoding, Connection, Expect,
 * Content-Type, Upgrade; names compared case-insensitively), joins repeats
 * as RFC 9110 5.3 says, and makes the RFC 9112 decisions: target form
 * against method, Host, persistence (9.3), expectation (RFC 9110 10.1.1)
 * and message body length (6.3). Its result is 0 or one named PRK_H_*
 * code; prack/http.py maps each code to its status and message.
 *
 * prk_write_env() turns a scanned head into the CGI/Rack environment as a
 * msgpack map of strings, written into the caller's buffer: the form the
 * acceptor puts into the ring. It reads only the head bytes and a copy of
 * the scan's output (prk_head followed by the prk_header array), so the
 * environment can be written after later requests have reused the parse
 * arrays (a body that arrives over many reads).
 *
 * Neither function allocates; both check every offset against the head
 * length and every write against the buffer's capacity.
 */
#ifndef PRACK_HEAD_H
#define PRACK_HEAD_H

#include <stddef.h>
#include <stdint.h>

#include "parser.h"

/* prk_scan_head() results: 0, or the reason the request is refused. */
#define PRK_HEAD_OK              0
#define PRK_H_VERSION          (-40) /* HTTP major version other than 1 (505) */
#define PRK_H_CONNECT          (-41) /* CONNECT (501) */
#define PRK_H_AUTHORITY_FORM   (-42) /* authority-form without CONNECT (400) */
#define PRK_H_ASTERISK_FORM    (-43) /* "*" for a method other than OPTIONS (400) */
#define PRK_H_SCHEME           (-44) /* absolute-form, scheme not http(s) (400) */
#define PRK_H_USERINFO         (-45) /* absolute-form with "user@" (400) */
#define PRK_H_AUTHORITY        (-46) /* absolute-form, empty or invalid authority (400) */
#define PRK_H_FRAGMENT         (-47) /* "#" in the target (400) */
#define PRK_H_HOST_REPEATED    (-48) /* more than one Host (400) */
#define PRK_H_HOST_MISSING     (-49) /* HTTP/1.1 without Host (400) */
#define PRK_H_HOST_INVALID     (-50) /* Host is not uri-host [":" port] (400) */
#define PRK_H_EXPECTATION      (-51) /* Expect other than 100-continue (417) */
#define PRK_H_TE_HTTP10        (-52) /* Transfer-Encoding in HTTP/1.0 (400) */
#define PRK_H_TE_AND_LENGTH    (-53) /* Transfer-Encoding and Content-Length (400) */
#define PRK_H_TE_NOT_FINAL     (-54) /* chunked is not the last coding (400) */
#define PRK_H_TE_TWICE         (-55) /* chunked more than once (400) */
#define PRK_H_TE_UNSUPPORTED   (-56) /* a coding before chunked (501) */
#define PRK_H_LENGTH_INVALID   (-57) /* Content-Length not 1*DIGIT (400) */
#define PRK_H_LENGTH_TOO_LARGE (-58) /* more than 18 digits (400) */
#define PRK_H_LENGTH_CONFLICT  (-59) /* repeats that are not the same digits (400) */
#define PRK_H_BODY_TOO_LARGE   (-60) /* Content-Length above max_body (413) */
#define PRK_H_BAD_INPUT        (-61) /* req/headers do not describe buf (400) */

/* prk_write_env() result when the output does not fit (or the saved scan
 * does not match the head). */
#define PRK_ENV_NO_ROOM        (-1)
#define PRK_ENV_BAD_STATE      (-2)

/* prk_head.flags */
#define PRK_HF_HTTP11      0x01u  /* HTTP/1.1 (a 1.x minor above 1 counts as 1.1) */
#define PRK_HF_KEEP_ALIVE  0x02u  /* the connection persists after this request */
#define PRK_HF_CHUNKED     0x04u  /* body: chunked */
#define PRK_HF_LENGTH      0x08u  /* body: content_length bytes */
#define PRK_HF_CONTINUE    0x10u  /* answer 100 Continue before reading the body */
#define PRK_HF_ABSOLUTE    0x20u  /* host_* is the target's authority */
#define PRK_HF_PATH_SLASH  0x40u  /* PATH_INFO is "/" followed by path_* */
#define PRK_HF_UPGRADE     0x80u  /* an Upgrade field is present */

typedef struct {
    uint32_t flags;                  /* PRK_HF_* */
    uint32_t num_headers;            /* prk_header entries that follow in a saved copy */
    uint32_t method_off, method_len;
    uint32_t path_off, path_len;     /* the target's path (see PRK_HF_PATH_SLASH) */
    uint32_t query_off, query_len;   /* after "?"; empty when there is none */
    uint32_t host_off, host_len;     /* the authority of an absolute target, else the
                                        Host value; length 0 when there is neither */
    uint32_t host_index;             /* 1 + index of the Host field, 0 when none */
    uint32_t ctype_index;            /* 1 + index of the last Content-Type, 0 when none */
    int32_t result;                  /* prk_read_head: prk_scan_head's result */
    uint32_t reserved;
    uint64_t content_length;         /* with PRK_HF_LENGTH */
} prk_head;

/*
 * Scan the head buf[0:head_len] that prk_parse_request() described in req
 * and headers[0:req->num_headers]; max_body bounds Content-Length.
 * Fills *out (also on error, as far as it got) and returns PRK_HEAD_OK or
 * a PRK_H_* code.
 */
int prk_scan_head(const char *buf, size_t head_len, const prk_request *req,
                  const prk_header *headers, uint64_t max_body, prk_head *out);

/*
 * prk_parse_request() and, when it found a complete head, prk_scan_head()
 * on it (result in out->result): one call for the reader. Returns what
 * prk_parse_request() returns.
 */
int prk_read_head(const char *buf, size_t len, prk_request *req, prk_header *headers,
                  size_t max_headers, uint64_t max_body, prk_head *out);

/*
 * Write the environment of a scanned head as one msgpack map into
 * out[0:cap]. `saved` holds a prk_head and then its num_headers prk_header
 * entries (saved_len bytes in all, as prk_scan_head left them). Keys and
 * values:
 *   REQUEST_METHOD, SCRIPT_NAME (""), PATH_INFO, QUERY_STRING,
 *   SERVER_NAME and SERVER_PORT from the host (name lower-cased, port "80"
 *   when absent), else the msgpack pairs in `server` (server_count of them),
 *   SERVER_PROTOCOL, rack.url_scheme ("http"),
 *   CONTENT_TYPE (the last Content-Type), CONTENT_LENGTH when
 *   content_length >= 0,
 *   HTTP_<NAME> for every other field: upper case, "-" as "_"; names with
 *   "_" and Proxy, Content-Type, Content-Length, Transfer-Encoding are left
 *   out; repeats joined with ", " ("; " for Cookie); HTTP_HOST is the
 *   authority of an absolute-form target;
 *   then the msgpack pairs in `extra` (extra_count of them).
 * Field bytes are read as latin-1 and written as UTF-8.
 * Returns the bytes written, PRK_ENV_NO_ROOM or PRK_ENV_BAD_STATE (also for
 * more than 1024 fields; limits.max_headers is at most 1000). Repeats are
 * found by sorting the fields by name: O(n log n) however the names are
 * chosen. prk_env_bound() is a size that always suffices.
 */
long long prk_write_env(char *out, size_t cap, const char *head, size_t head_len,
                        const char *saved, size_t saved_len, long long content_length,
                        const char *server, size_t server_len, uint32_t server_count,
                        const char *extra, size_t extra_len, uint32_t extra_count);

size_t prk_env_bound(size_t head_len, uint32_t num_headers, size_t server_len,
                     size_t extra_len);

#endif
