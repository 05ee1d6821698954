/* h2_path.h - the paths a server serves, in the Huffman code of HTTP/2's
 * header compression, so that a request naming one reaches h2o with the
 * plain string instead (see h2_path.c for why). */
#ifndef TOKEND_H2_PATH_H
#define TOKEND_H2_PATH_H

#include <stddef.h>
#include <stdint.h>

#define H2_PATH_LEN_MAX 126     /* longer paths are not kept (a plain length takes one byte) */
#define H2_PATH_FRAME_MAX 1024  /* larger HEADERS frames are left as they are */
#define H2_PATH_OUT_BYTES (9 + H2_PATH_FRAME_MAX + 1 + H2_PATH_LEN_MAX + 16) /* room h2_path_plain needs */
#define H2_PATH_SLACK 8   /* zeroed bytes after a block handed to h2o's HPACK parser (h2_reply.c) */

typedef struct h2_paths h2_paths;

/* The Huffman forms of paths[0..n) (each NUL-terminated; those longer than
 * H2_PATH_LEN_MAX, with a '{' (a template), or that Huffman does not
 * shorten are left out). NULL when out of memory. */
h2_paths *h2_paths_create(const char *const *paths, size_t n);
void h2_paths_free(h2_paths *ps);
size_t h2_paths_count(const h2_paths *ps);

/* frame: len bytes from the start of an HTTP/2 frame. If it is a whole
 * HEADERS frame (END_HEADERS, not padded, at most H2_PATH_FRAME_MAX bytes
 * of payload) whose :path is a Huffman-coded literal naming one of ps,
 * writes to out (cap bytes, at least H2_PATH_OUT_BYTES) the same frame with
 * that literal's value in plain, and returns its size (frame header
 * included). Otherwise, or if anything in the block before :path is not
 * well-formed HPACK, returns 0 and out is garbage. */
size_t h2_path_plain(const h2_paths *ps, const uint8_t *frame, size_t len, uint8_t *out, size_t cap);

#endif
