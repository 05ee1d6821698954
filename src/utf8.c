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

/* The copy is made a word at a time (the last word overlapping the one
 * before), and the words' high bits gathered on the way: none set, the
 * bytes are ASCII, which is UTF-8 with or without a NUL. */
int utf8_copy_valid(char *dst, const char *src, size_t n)
{
    uint64_t high = 0, w;
    size_t i = 0;

    if (n >= 8) {
        for (; i + 8 <= n; i += 8) {
            memcpy(&w, src + i, 8);
            memcpy(dst + i, &w, 8);
            high |= w;
        }
        if (i < n) {
            memcpy(&w, src + n - 8, 8);
            memcpy(dst + n - 8, &w, 8);
            high |= w;
        }
    } else {
        for (; i < n; i++) {
            dst[i] = src[i];
            high |= (uint8_t)src[i];
        }
    }
    return !(high & HIGHS) || utf8_valid_n(dst, n);
}
