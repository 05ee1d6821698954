/* utf8.c - see utf8.h. */
#include <string.h>
#include "utf8.h"

size_t utf8_prefix(const char *s, size_t n)
{
    size_t i = 0, len;
    while (i < n && s[i] && (len = utf8_next((const unsigned char *)s + i, n - i, NULL)))
        i += len;
    return i;
}

/* ASCII, nearly every string, is passed over eight bytes at a time: the
 * length first (libc's strlen is quick and never reads past the NUL). */
int utf8_valid(const char *s)
{
    const uint64_t highs = UINT64_C(0x8080808080808080);
    size_t n = strlen(s), i = 0;
    uint64_t w;

    for (; i + 8 <= n; i += 8) {
        memcpy(&w, s + i, 8);
        if (w & highs)
            break;
    }
    if (i + 8 > n && n >= 8) {   /* the last few bytes: as the last word */
        memcpy(&w, s + n - 8, 8);
        if (!(w & highs))
            return 1;
    }
    return utf8_prefix(s + i, n - i) == n - i;
}
