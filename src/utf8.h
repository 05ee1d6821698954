/* utf8.h - the one UTF-8 decoder of tokend: strict (no overlong forms, no
 * surrogates, nothing above U+10FFFF), as proto3 strings and login names
 * need. The decoder is inline: the JSON writer runs it over every reply. */
#ifndef TOKEND_UTF8_H
#define TOKEND_UTF8_H

#include <stddef.h>
#include <stdint.h>

/* Decodes the sequence at s (n >= 1 bytes available): returns its length
 * (1 to 4) and sets *cp (when cp is not NULL), or returns 0 when there is
 * no well-formed sequence there. A NUL byte is a sequence of length 1. */
static inline size_t utf8_next(const unsigned char *s, size_t n, uint32_t *cp)
{
    uint32_t c, min;
    size_t len, i;

    if (s[0] < 0x80) {
        if (cp) *cp = s[0];
        return 1;
    }
    if (s[0] >= 0xc2 && s[0] <= 0xdf) len = 2, c = s[0] & 0x1f, min = 0x80;
    else if ((s[0] & 0xf0) == 0xe0) len = 3, c = s[0] & 0x0f, min = 0x800;
    else if (s[0] >= 0xf0 && s[0] <= 0xf4) len = 4, c = s[0] & 0x07, min = 0x10000;
    else return 0;
    if (n < len) return 0;
    for (i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80) return 0;
        c = c << 6 | (s[i] & 0x3f);
    }
    if (c < min || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff)) return 0;
    if (cp) *cp = c;
    return len;
}

/* Length of the longest well-formed prefix of s (n bytes; stops at a NUL). */
size_t utf8_prefix(const char *s, size_t n);

/* 1 when the NUL-terminated string s is all well-formed UTF-8, else 0. */
int utf8_valid(const char *s);

/* utf8_valid of the n bytes at s as a string: 1 when they are well-formed
 * UTF-8 up to the first NUL among them, or all n without one (what is past
 * a NUL is no part of a C string, and is not judged). For bytes not yet
 * NUL-terminated: a string field as it is decoded. */
int utf8_valid_n(const char *s, size_t n);

/* Copies the n bytes at src to dst (not NUL-terminated) and returns 1 when
 * they are well-formed UTF-8 without a NUL (a string field of the wire,
 * which a C string would cut short): one pass over bytes copied anyway. */
int utf8_copy_valid(char *restrict dst, const char *restrict src, size_t n);

#endif
