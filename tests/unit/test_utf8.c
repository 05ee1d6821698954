/* test_utf8.c - the one UTF-8 decoder (src/utf8.h): well-formed sequences
 * of each length with their code points, and every ill-formed kind refused:
 * stray continuation bytes, overlong forms, surrogates, code points above
 * U+10FFFF, truncated sequences. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <string.h>

#include "utf8.h"

static size_t next(const char *s, size_t n, uint32_t *cp)
{
    return utf8_next((const unsigned char *)s, n, cp);
}

static void test_each_length(void **state)
{
    uint32_t cp = 0;
    assert_int_equal(next("A", 1, &cp), 1);
    assert_int_equal(cp, 'A');
    assert_int_equal(next("\xc3\xa9", 2, &cp), 2);           /* é */
    assert_int_equal(cp, 0xE9);
    assert_int_equal(next("\xe4\xb8\xad", 3, &cp), 3);       /* 中 */
    assert_int_equal(cp, 0x4E2D);
    assert_int_equal(next("\xf0\x9f\x98\x80", 4, &cp), 4);   /* 😀 */
    assert_int_equal(cp, 0x1F600);
    assert_int_equal(next("\xf4\x8f\xbf\xbf", 4, &cp), 4);   /* U+10FFFF, the last */
    assert_int_equal(cp, 0x10FFFF);
    assert_int_equal(next("\0", 1, &cp), 1);                 /* NUL is one byte */
    assert_int_equal(cp, 0);
    assert_int_equal(next("\xc2\x80", 2, NULL), 2);          /* cp may be NULL */
}

static void test_ill_formed(void **state)
{
    uint32_t cp = 0x1234;
    assert_int_equal(next("\x80", 1, &cp), 0);               /* continuation alone */
    assert_int_equal(next("\xbf", 1, &cp), 0);
    assert_int_equal(next("\xc0\x80", 2, &cp), 0);           /* overlong NUL */
    assert_int_equal(next("\xc1\xbf", 2, &cp), 0);           /* overlong 0x7F */
    assert_int_equal(next("\xe0\x80\x80", 3, &cp), 0);       /* overlong, 3 bytes */
    assert_int_equal(next("\xf0\x80\x80\x80", 4, &cp), 0);   /* overlong, 4 bytes */
    assert_int_equal(next("\xed\xa0\x80", 3, &cp), 0);       /* U+D800, a surrogate */
    assert_int_equal(next("\xed\xbf\xbf", 3, &cp), 0);       /* U+DFFF */
    assert_int_equal(next("\xf4\x90\x80\x80", 4, &cp), 0);   /* U+110000 */
    assert_int_equal(next("\xf5\x80\x80\x80", 4, &cp), 0);
    assert_int_equal(next("\xff", 1, &cp), 0);
    assert_int_equal(next("\xc3\x41", 2, &cp), 0);           /* not a continuation */
    assert_int_equal(next("\xe4\xb8", 2, &cp), 0);           /* truncated by n */
    assert_int_equal(next("\xe4\xb8\xad", 2, &cp), 0);       /* n says 2: the 3rd is not ours */
    assert_int_equal(cp, 0x1234);                            /* untouched on failure */
}

static void test_prefix(void **state)
{
    assert_int_equal(utf8_prefix("", 0), 0);
    assert_int_equal(utf8_prefix("abc", 3), 3);
    assert_int_equal(utf8_prefix("ab\xc3\xa9z", 5), 5);
    assert_int_equal(utf8_prefix("ab\xc3\xa9z", 3), 2);      /* a cut character is left out */
    assert_int_equal(utf8_prefix("ab\xffz", 4), 2);          /* stops at a bad byte */
    assert_int_equal(utf8_prefix("ab\0cd", 5), 2);           /* stops at NUL */
    assert_int_equal(utf8_prefix("\xe4\xb8\xad\xe6\x96\x87", 6), 6);
    assert_int_equal(utf8_prefix("\xe4\xb8\xad\xe6\x96", 5), 3);
}

static void test_valid(void **state)
{
    assert_int_equal(utf8_valid(""), 1);
    assert_int_equal(utf8_valid("plain ascii"), 1);
    assert_int_equal(utf8_valid("\xd0\x9f\xd1\x80\xd0\xb8\xd0\xb2\xd0\xb5\xd1\x82"), 1);
    assert_int_equal(utf8_valid("bad \xed\xa0\x80 surrogate"), 0);
    assert_int_equal(utf8_valid("cut at the end \xe4\xb8"), 0);

    /* ASCII is passed over a word at a time: a bad byte or a character
     * anywhere, in any position of a word, at any length. */
    char s[32];
    for (size_t n = 1; n < 24; n++) {
        for (size_t at = 0; at < n; at++) {
            memset(s, 'a', n);
            s[n] = '\0';
            assert_int_equal(utf8_valid(s), 1);
            s[at] = '\xff';
            assert_int_equal(utf8_valid(s), 0);
            s[at] = '\x80';
            assert_int_equal(utf8_valid(s), 0);
            if (at + 1 < n) {
                memcpy(s + at, "\xc3\xa9", 2);
                assert_int_equal(utf8_valid(s), 1);
                s[at + 1] = 'a';
                assert_int_equal(utf8_valid(s), 0);
            }
        }
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_each_length),
        cmocka_unit_test(test_ill_formed),
        cmocka_unit_test(test_prefix),
        cmocka_unit_test(test_valid),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
