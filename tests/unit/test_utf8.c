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

/* utf8_valid_n says what utf8_valid says of the same bytes as a string,
 * whatever is before or after, at every length and position (past a NUL
 * nothing is judged, as utf8_valid never sees it); utf8_copy_valid (the
 * decoders' check of a string field as it is copied) says the same of
 * bytes without a NUL, and refuses any with one. The copy is exact. */
static void test_valid_n_and_copy(void **state)
{
    static const char *const seqs[] = {"\xff", "\x80", "\xc3", "\xc3\xa9", "\xe4\xb8\xad",
                                       "\xe4\xb8", "\xed\xa0\x80", "\xf0\x9f\x98\x80", "\xc0\x80",
                                       "\xf4\x90\x80\x80", "\xc3\x41", "\0", "\0\xff", "\x7f"};
    char s[48], copy[48];
    for (size_t n = 0; n < 40; n++) {
        for (size_t at = 0; at <= n; at++) {
            for (size_t k = 0; k < sizeof seqs / sizeof *seqs; k++) {
                size_t len = k == 11 ? 1 : k == 12 ? 2 : strlen(seqs[k]);
                memset(s, 'a', sizeof s);
                if (at + len <= n)
                    memcpy(s + at, seqs[k], len);
                if (at + len + 1 < n && k == 11)
                    s[n - 1] = '\xff';   /* a bad byte after a NUL is no part of the string */
                s[n] = '\0';
                int want = utf8_valid(s);
                assert_int_equal(utf8_valid_n(s, n), want);
                memset(copy, '#', sizeof copy);
                assert_int_equal(utf8_copy_valid(copy, s, n), want && !memchr(s, '\0', n));
                assert_memory_equal(copy, s, n);
                assert_int_equal(copy[n], '#');   /* nothing past the n bytes */
            }
        }
    }
    assert_int_equal(utf8_valid_n("ab\0\xff", 4), 1);
    assert_int_equal(utf8_valid_n("ab\xff\0", 4), 0);
    assert_int_equal(utf8_valid_n("abcdefghij\0\xff", 12), 1);
    assert_int_equal(utf8_valid_n("abcdefghijklmnopqrstuvwxyz\xc3", 27), 0);
    assert_int_equal(utf8_valid_n("\xc3\xa9", 1), 0);   /* n cuts the character */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_each_length),
        cmocka_unit_test(test_ill_formed),
        cmocka_unit_test(test_prefix),
        cmocka_unit_test(test_valid),
        cmocka_unit_test(test_valid_n_and_copy),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
