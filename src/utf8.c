/* utf8.c - see utf8.h. */
#include <string.h>
#include "utf8.h"

#define HIGHS UINT64_C(0x8080808080808080)

size_t utf8_prefix(const char *s, size_t n)
{
    size_t i = 0, len;
    while (i < n && s[i] && (len = utf8_next((const unsigned char *)s + i, n - i, NULL)))
        i += len;
    return i;
}

/* ASCII, nearly every string, is passed over eight bytes at a time; the
 * bytes from the first word that is not are decoded. */
int utf8_valid_n(const char *s, size_t n)
{
    size_t i = 0, k;
    uint64_t w;

    for (; i + 8 <= n; i += 8) {
        memcpy(&w, s + i, 8);
        if (w & HIGHS)
            break;
    }
    if (i + 8 > n && n >= 8) {   /* the last few bytes: as the last word */
        memcpy(&w, s + n - 8, 8);
        if (!(w & HIGHS))
            return 1;
    }
    if (memchr(s, '\0', i))      /* the string ended in the ASCII passed over */
        return 1;
    k = i + utf8_prefix(s + i, n - i);
    return k == n || s[k] == '\0';   /* all of it, or up to a NUL */
}

int utf8_valid(const char *s)
{
    return utf8_valid_n(s, strlen(s));
}

#define ONES UINT64_C(0x0101010101010101)

/* The copy is made 16 bytes at a time (the last 16 overlapping the ones
 * before; a shorter string as two overlapping halves), with the high bits
 * of x | (x - 1) gathered on the way: a byte's is set when it is 0x80 or
 * more, or when it is 0 (x - 1 borrows only from a zero byte, and that one
 * is flagged whatever follows). None set: ASCII without a NUL, which is
 * UTF-8; else the bytes are looked at one by one. */
int utf8_copy_valid(char *restrict dst, const char *restrict src, size_t n)
{
    uint64_t flags = 0, a, b;
    size_t half = n / 2;   /* n < 4: bytes 0, half and n - 1 are all of them */

    if (n >= 16) {
        for (size_t i = 0;; i += 16) {
            if (i > n - 16)
                i = n - 16;
            memcpy(&a, src + i, 8);
            memcpy(&b, src + i + 8, 8);
            memcpy(dst + i, &a, 8);
            memcpy(dst + i + 8, &b, 8);
            flags |= a | (a - ONES) | b | (b - ONES);
            if (i == n - 16)
                break;
        }
    } else if (n >= 8) {
        memcpy(&a, src, 8);
        memcpy(&b, src + n - 8, 8);
        memcpy(dst, &a, 8);
        memcpy(dst + n - 8, &b, 8);
        flags = a | (a - ONES) | b | (b - ONES);
    } else if (n >= 4) {
        uint32_t x, y;
        memcpy(&x, src, 4);
        memcpy(&y, src + n - 4, 4);
        memcpy(dst, &x, 4);
        memcpy(dst + n - 4, &y, 4);
        flags = (uint32_t)(x | (x - 0x01010101u) | y | (y - 0x01010101u));
    } else if (n) {
        dst[0] = src[0], dst[half] = src[half], dst[n - 1] = src[n - 1];
        flags = (uint8_t)(src[0] | src[half] | src[n - 1]) |
                (!src[0] || !src[half] || !src[n - 1] ? 0x80u : 0);
    }
    return !(flags & HIGHS) || (!memchr(dst, '\0', n) && utf8_valid_n(dst, n));
}
