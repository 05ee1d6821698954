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
    size_t n = strlen(s);
    return utf8_prefix(s, n) == n;
}
