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

int utf8_valid(const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    while (*p && *p < 0x80)   /* ASCII, nearly every string: one pass */
        p++;
    if (!*p)
        return 1;
    size_t n = strlen((const char *)p);
    return utf8_prefix((const char *)p, n) == n;
}
