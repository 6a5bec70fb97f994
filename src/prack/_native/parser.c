/* placeholder: being written */
#include "parser.h"
int prk_parse_request(const char *buf, size_t len, prk_request *req,
                      prk_header *headers, size_t max_headers)
{ (void)buf; (void)len; (void)req; (void)headers; (void)max_headers; return PRK_E_BAD_REQUEST_LINE; }
long long prk_decode_chunked(prk_chunked *dec, char *buf, size_t len, size_t *out_len)
{ (void)dec; (void)buf; (void)len; *out_len = 0; return PRK_E_CHUNK_SIZE; }
