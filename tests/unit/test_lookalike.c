/* test_lookalike.c - lookalike_keys: names that read the same share a key,
 * others do not, and the ASCII table answers as ICU does for every pair of
 * printable ASCII characters. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <string.h>

#include "crypto.h"
#include "lookalike.h"

typedef struct {
    char c[LOOKALIKE_KEY_MAX], l[LOOKALIKE_KEY_MAX];
    size_t clen, llen;
} keys;

static int same_key(const char *a, size_t alen, const char *b, size_t blen)
{
    return alen == blen && memcmp(a, b, alen) == 0;
}

static keys of_len(const char *name, size_t len)
{
    keys k;
    assert_int_equal(lookalike_keys(name, len, k.c, &k.clen, k.l, &k.llen), 0);
    assert_in_range(k.clen, 0, LOOKALIKE_KEY_MAX);
    assert_in_range(k.llen, 0, LOOKALIKE_KEY_MAX);
    assert_null(memchr(k.c, 0, k.clen));
    assert_null(memchr(k.l, 0, k.llen));
    return k;
}

static keys of(const char *name)
{
    return of_len(name, strlen(name));
}

static int alike(const char *a, const char *b)
{
    keys x = of(a), y = of(b);
    return same_key(x.c, x.clen, y.c, y.clen) || same_key(x.l, x.llen, y.l, y.llen);
}

static void test_names_that_read_the_same(void **state)
{
    const char *same[][2] = {
        {"alice", "Alice"}, {"alice", "ALICE"}, {"alice", "AIice"}, {"alice", "a1ice"},
        {"ape", "\xd0\xb0\xd1\x80\xd0\xb5"},               /* аре, Cyrillic */
        {"paypal", "\xd1\x80\xd0\xb0\xd1\x83\xd1\x80\xd0\xb0l"},   /* раураl */
        {"admin", "adrnin"}, {"bob0", "bobo"}, {"user_l", "USER_1"},
        {"alice", "\xef\xbd\x81\xef\xbd\x8c\xef\xbd\x89\xef\xbd\x83\xef\xbd\x85"}, /* fullwidth */
        {"Jos\xc3\xa9", "jose\xcc\x81"},                   /* é in NFC and NFD, case */
        {"stra\xc3\x9f" "e", "STRASSE"},                  /* ß folds to ss */
    };
    for (size_t i = 0; i < sizeof same / sizeof same[0]; i++)
        if (!alike(same[i][0], same[i][1]))
            fail_msg("%s and %s should look the same", same[i][0], same[i][1]);
    const char *other[][2] = {
        {"alice", "alicia"}, {"alice", "bob"}, {"ape", "apes"}, {"\xe5\xbc\xa0\xe4\xb8\x89", "alice"},
        {"anna", "hanna"}, {"", "a"},
    };
    for (size_t i = 0; i < sizeof other / sizeof other[0]; i++)
        if (alike(other[i][0], other[i][1]))
            fail_msg("%s and %s should not look the same", other[i][0], other[i][1]);
}

/* Bytes that are not UTF-8 (names of an older tokend) have keys too: those
 * of the bytes, the same each time. */
static void test_bytes_that_are_not_utf8(void **state)
{
    keys a = of("ab\xff"), b = of("ab\xff"), c = of("ab\xfe");
    assert_true(same_key(a.c, a.clen, b.c, b.clen));
    assert_true(same_key(a.c, a.clen, a.l, a.llen));
    assert_false(same_key(a.c, a.clen, c.c, c.clen));
    assert_false(alike("ab\xff", "ab"));
}

/* A name whose key would pass LOOKALIKE_KEY_MAX has a digest for a key:
 * the same for the same name, another for another. */
static void test_long_names(void **state)
{
    char a[200], b[200];
    memset(a, 'm', sizeof a - 1), a[sizeof a - 1] = 0;   /* each m is "rn" */
    memcpy(b, a, sizeof b);
    b[100] = 'M';
    keys x = of(a), y = of(b), z = of(a);
    assert_int_equal(x.clen, 33);
    assert_true(same_key(x.c, x.clen, y.c, y.clen));      /* M folds to m */
    assert_true(same_key(x.c, x.clen, z.c, z.clen));
    b[100] = 'n';
    y = of(b);
    assert_false(same_key(x.c, x.clen, y.c, y.clen));
    /* an ASCII name near the bound: the table and ICU agree */
    memset(a, 'm', 48), a[48] = 0;
    x = of(a);
    assert_int_equal(x.clen, 96);
    a[47] = 'x';
    x = of(a);
    assert_int_equal(x.clen, 95);
}

static void same_as_icu(const char *name, size_t len)
{
    keys a = of_len(name, len), b;
    assert_int_equal(lookalike_keys_icu(name, len, b.c, &b.clen, b.l, &b.llen), 0);
    if (!same_key(a.c, a.clen, b.c, b.clen) || !same_key(a.l, a.llen, b.l, b.llen))
        fail_msg("the table and ICU differ on \"%.*s\"", (int)len, name);
}

static void test_the_ascii_table_is_icu(void **state)
{
    char s[3];
    for (int a = 0x21; a < 0x7f; a++) {
        s[0] = (char)a;
        same_as_icu(s, 1);
        for (int b = 0x21; b < 0x7f; b++) {
            s[1] = (char)b;
            same_as_icu(s, 2);
        }
    }
    const char *longer[] = {"alice_smith", "ADMIN", "rnrnrn", "W1ll1AM", "0O0o", "x|l1I",
                            "__init__", "a-b.c", "Zz9",
                            "mmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmx",   /* 95 */
                            "mmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmm",  /* 98: a digest */
                            "Mmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmm"};  /* 96 */
    for (size_t i = 0; i < sizeof longer / sizeof longer[0]; i++)
        same_as_icu(longer[i], strlen(longer[i]));
}

int main(void)
{
    if (crypto_init() != 0)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_names_that_read_the_same),
        cmocka_unit_test(test_bytes_that_are_not_utf8),
        cmocka_unit_test(test_long_names),
        cmocka_unit_test(test_the_ascii_table_is_icu),
    };
    return cmocka_run_group_tests_name("lookalike", tests, NULL, NULL);
}
