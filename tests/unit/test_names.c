/* test_names.c - names.c: classifying login names into email, phone or
 * username with their normalized forms, the username rules and the
 * password policy. Every refusal must say why. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "names.h"

#define OUTLEN 512

static const char *kind_name(login_kind k)
{
    return k == LOGIN_NAME ? "name" : k == LOGIN_PHONE ? "phone" : k == LOGIN_EMAIL ? "email"
                                                                                    : "?";
}

/* The input with bytes outside printable ASCII as \\xNN, for messages. */
static const char *esc(const char *in, size_t len)
{
    static char buf[4][1200];
    static int next;
    char *out = buf[next++ % 4], *o = out;
    for (size_t i = 0; i < len && o < out + sizeof buf[0] - 5; i++) {
        unsigned char c = (unsigned char)in[i];
        if (c >= 0x20 && c < 0x7F)
            *o++ = (char)c;
        else
            o += sprintf(o, "\\x%02x", c);
    }
    *o = '\0';
    return out;
}

static void expect_ok_n(const char *in, size_t len, login_kind want_kind, const char *want)
{
    char out[OUTLEN];
    login_kind kind = 0;
    const char *why = NULL;
    memset(out, 'Z', sizeof out);
    int rc = names_classify(in, len, &kind, out, sizeof out, &why);
    if (rc != 0)
        fail_msg("classify(\"%s\") refused: %s", esc(in, len), why ? why : "(no why)");
    if (kind != want_kind)
        fail_msg("classify(\"%s\") is a %s, want %s", esc(in, len), kind_name(kind), kind_name(want_kind));
    assert_string_equal(out, want);
}

static void expect_ok(const char *in, login_kind want_kind, const char *want)
{
    expect_ok_n(in, strlen(in), want_kind, want);
}

static void expect_bad_n(const char *in, size_t len, size_t outlen)
{
    char out[OUTLEN];
    login_kind kind = 0;
    const char *why = NULL;
    int rc = names_classify(in, len, &kind, out, outlen, &why);
    if (rc != -1)
        fail_msg("classify(\"%s\") accepted as %s \"%s\"", esc(in, len), kind_name(kind),
                 esc(out, strlen(out)));
    assert_non_null(why);
    assert_true(strlen(why) > 0);
}

static void expect_bad(const char *in)
{
    expect_bad_n(in, strlen(in), OUTLEN);
}

/* A new account's name: accepted, as `want` (NULL: as given). */
static void expect_new_name(const char *name, const char *want)
{
    char out[STORE_NAME_MAX + 1];
    const char *why = NULL;
    if (names_normalize_username(name, out, sizeof out, &why) != 0)
        fail_msg("username \"%s\" refused: %s", esc(name, strlen(name)), why ? why : "(no why)");
    assert_string_equal(out, want ? want : name);
}

static void expect_name_ok(const char *name)
{
    expect_new_name(name, NULL);
}

/* A new account's name refused; returns why. */
static const char *expect_name_bad(const char *name)
{
    char out[STORE_NAME_MAX + 1];
    const char *why = NULL;
    if (names_normalize_username(name, out, sizeof out, &why) != -1)
        fail_msg("username \"%s\" accepted", esc(name, strlen(name)));
    assert_non_null(why);
    assert_true(strlen(why) > 0);
    return why;
}

/* --- emails -------------------------------------------------------------- */

static void test_classify_email(void **state)
{
    (void)state;
    expect_ok("alice@example.com", LOGIN_EMAIL, "alice@example.com");
    expect_ok("Alice.Smith@Example.COM", LOGIN_EMAIL, "alice.smith@example.com");
    expect_ok("A+TAG@SUB.EXAMPLE.ORG", LOGIN_EMAIL, "a+tag@sub.example.org");
    /* Digits and a '+' in an email do not make it a phone. */
    expect_ok("+15550100@sms.example.com", LOGIN_EMAIL, "+15550100@sms.example.com");
    expect_ok("12345@example.com", LOGIN_EMAIL, "12345@example.com");
}

static void test_classify_email_junk(void **state)
{
    (void)state;
    expect_bad("@");
    expect_bad("@@");
    expect_bad("a@");
    expect_bad("@example.com");
    expect_bad("alice@example");          /* no dot in the domain */
    expect_bad("a@@example.com");
    expect_bad("a@b@example.com");
    expect_bad("alice @example.com");
    expect_bad("alice@exa mple.com");
    expect_bad("alice@example.com\t");
    expect_bad("ali\x7f" "ce@example.com");
    expect_bad("张三@");
    expect_bad("+1555@");
}

static void test_classify_email_too_long(void **state)
{
    (void)state;
    char e[300];
    /* 254 bytes is the most an email may have. */
    memset(e, 'a', sizeof e);
    memcpy(e + 254 - 12, "@example.com", 13);
    assert_int_equal(strlen(e), 254);
    expect_ok(e, LOGIN_EMAIL, e);
    memset(e, 'a', sizeof e);
    memcpy(e + 255 - 12, "@example.com", 13);
    assert_int_equal(strlen(e), 255);
    expect_bad(e);
}

/* An email is stored in a protobuf string and shown in JSON: it must be
 * UTF-8 like every other name. */
static void test_classify_email_invalid_utf8(void **state)
{
    (void)state;
    expect_bad("al\xff" "ce@example.com");
    expect_bad("alice@exam\xc3" "ple.com");
    expect_bad("\xc0\xaf" "alice@example.com");
}

/* A domain needs something on both sides of its dots. */
static void test_classify_email_domain_shape(void **state)
{
    (void)state;
    expect_bad("alice@.");
    expect_bad("alice@.com");
    expect_bad("alice@example.");
}

/* --- phones -------------------------------------------------------------- */

static void test_classify_phone(void **state)
{
    (void)state;
    expect_ok("+1 555 0100", LOGIN_PHONE, "+15550100");
    expect_ok("(555) 010-0100", LOGIN_PHONE, "5550100100");
    expect_ok("+86 138-0013-8000", LOGIN_PHONE, "+8613800138000");
    expect_ok("123", LOGIN_PHONE, "123");
    expect_ok("+123", LOGIN_PHONE, "+123");
    /* Digits alone are always a phone, never a username. */
    expect_ok("123456789", LOGIN_PHONE, "123456789");
    expect_ok("0000", LOGIN_PHONE, "0000");
    /* 20 digits is the limit, with or without '+'. */
    expect_ok("12345678901234567890", LOGIN_PHONE, "12345678901234567890");
    expect_ok("+12345678901234567890", LOGIN_PHONE, "+12345678901234567890");
}

static void test_classify_phone_bad(void **state)
{
    (void)state;
    expect_bad("12");                       /* too few digits */
    expect_bad("+");
    expect_bad("-");
    expect_bad("() -");
    expect_bad("123456789012345678901");    /* 21 digits */
    expect_bad("+123456789012345678901");
    /* Digits with a '+' inside are neither a phone nor a username. */
    expect_bad("1+2345");
    expect_bad("++12345");
    expect_bad("12.345");
    expect_bad("12/345");
}

static void test_all_digits_never_a_name(void **state)
{
    (void)state;
    /* Whatever classify makes of digit strings, it is never LOGIN_NAME. */
    const char *digits[] = {"1", "12", "123", "5550100", "123456789012345678901234567890",
                            "1 2", "(1)", "+1-2"};
    for (size_t i = 0; i < sizeof digits / sizeof digits[0]; i++) {
        char out[OUTLEN];
        login_kind kind = 0;
        const char *why = NULL;
        int rc = names_classify(digits[i], strlen(digits[i]), &kind, out, sizeof out, &why);
        if (rc == 0 && kind == LOGIN_NAME)
            fail_msg("\"%s\" classified as a username", digits[i]);
        if (rc != 0)
            assert_true(why && *why);
    }
    expect_name_bad("12345");
    expect_name_bad("0");
    expect_name_bad("123-456");
}

static void test_normalize_phone_direct(void **state)
{
    (void)state;
    char out[NAMES_PHONE_MAX + 2];
    const char *why = NULL;
    assert_int_equal(names_normalize_phone("+1 (555) 010-0100", out, sizeof out, &why), 0);
    assert_string_equal(out, "+15550100100");
    why = NULL;
    assert_int_equal(names_normalize_phone("555a0100", out, sizeof out, &why), -1);
    assert_true(why && *why);
    why = NULL;
    assert_int_equal(names_normalize_phone("555.0100", out, sizeof out, &why), -1);
    assert_true(why && *why);
    why = NULL;
    assert_int_equal(names_normalize_phone("", out, sizeof out, &why), -1);
    assert_true(why && *why);
    /* A buffer of 22 holds '+', 20 digits and the NUL. */
    assert_int_equal(names_normalize_phone("+12345678901234567890", out, sizeof out, &why), 0);
    assert_string_equal(out, "+12345678901234567890");
    /* A short buffer is refused, never overrun. */
    char small[6];
    why = NULL;
    assert_int_equal(names_normalize_phone("1234567", small, sizeof small, &why), -1);
    assert_true(why && *why);
}

/* --- usernames ----------------------------------------------------------- */

static void test_classify_username(void **state)
{
    (void)state;
    expect_ok("alice", LOGIN_NAME, "alice");
    expect_ok("Alice", LOGIN_NAME, "Alice");            /* case is kept */
    expect_ok("bob_42", LOGIN_NAME, "bob_42");
    expect_ok("42bob", LOGIN_NAME, "42bob");
    expect_ok("a.b-c", LOGIN_NAME, "a.b-c");
    expect_ok("张三", LOGIN_NAME, "张三");
    expect_ok("_x", LOGIN_NAME, "_x");
    expect_ok("_", LOGIN_NAME, "_");
    expect_ok("x", LOGIN_NAME, "x");
    expect_ok("José", LOGIN_NAME, "José");
    expect_ok("すずき", LOGIN_NAME, "すずき");
    expect_ok("김철수", LOGIN_NAME, "김철수");
    expect_ok("555-x", LOGIN_NAME, "555-x");
}

static void test_classify_invalid_utf8(void **state)
{
    (void)state;
    expect_bad("ab\xff");
    expect_bad("\xc3\x28");                 /* bad continuation */
    expect_bad("\xc0\xaf" "abc");           /* overlong '/' */
    expect_bad("\xe0\x80\xaf" "abc");       /* overlong, 3 bytes */
    expect_bad("\xed\xa0\x80" "abc");       /* UTF-16 surrogate */
    expect_bad("abc\xe5\xbc");              /* truncated 张 */
    expect_bad("\xf4\x90\x80\x80" "abc");   /* above U+10FFFF */
    expect_bad("\x80" "abc");               /* lone continuation */
    expect_bad("\xf8\x88\x80\x80\x80");     /* 5-byte form */
}

static void test_classify_empty_nul_and_long(void **state)
{
    (void)state;
    expect_bad_n("", 0, OUTLEN);
    expect_bad_n("ab\0cd", 5, OUTLEN);
    expect_bad_n("12\0" "345", 6, OUTLEN);
    /* len must leave room for the NUL in out. */
    expect_bad_n("alice", 5, 5);
    expect_ok_n("alice", 5, LOGIN_NAME, "alice");
    char out[6];
    login_kind kind;
    const char *why = NULL;
    assert_int_equal(names_classify("alice", 5, &kind, out, sizeof out, &why), 0);
    assert_string_equal(out, "alice");
    /* Only len bytes are read. */
    expect_ok_n("alice@example.com", 5, LOGIN_NAME, "alice");

    /* A username is at most 128 bytes. */
    char name[200];
    memset(name, 'n', sizeof name);
    name[128] = '\0';
    expect_ok(name, LOGIN_NAME, name);
    name[128] = 'n';
    name[129] = '\0';
    expect_bad(name);
    /* 43 CJK characters = 129 bytes. */
    name[0] = '\0';
    for (int i = 0; i < 43; i++)
        strcat(name, "张");
    expect_bad(name);
}

static void test_check_username(void **state)
{
    (void)state;
    expect_name_ok("alice");
    expect_name_ok("张三");
    expect_name_ok("_x");
    expect_name_ok("a1");

    expect_name_bad("");
    expect_name_bad("12345");
    expect_name_bad("+12345");
    expect_name_bad("---");
    expect_name_bad("+-()");
    expect_name_ok("-_-");   /* '_' counts as a letter */
}

static void test_check_username_spaces_controls(void **state)
{
    (void)state;
    expect_name_bad("alice smith");
    expect_name_bad(" alice");
    expect_name_bad("alice ");
    expect_name_bad("alice\t");
    expect_name_bad("al\nice");
    expect_name_bad("al\rice");
    expect_name_bad("\x1b[31malice");
    expect_name_bad("alice\x7f");
    expect_name_bad("a\x01");
    expect_name_bad("alice@example");
    expect_name_bad("a@");
}

/* U+0080..U+009F are control characters as much as U+0000..U+001F: U+009B
 * is the 8-bit CSI that terminals act on. */
static void test_check_username_c1_controls(void **state)
{
    (void)state;
    expect_name_bad("alice\xc2\x85");       /* U+0085 NEL */
    expect_name_bad("\xc2\x9b" "31malice"); /* U+009B CSI */
    expect_name_bad("alice\xc2\x80");       /* U+0080 */
}

/* Spaces other than ASCII ' ' are still spaces. */
static void test_check_username_unicode_spaces(void **state)
{
    (void)state;
    expect_name_bad("alice\xc2\xa0smith");      /* U+00A0 no-break space */
    expect_name_bad("张\xe3\x80\x80三");         /* U+3000 ideographic space */
}

/* Characters that show nothing are refused in names and emails alike, so
 * that two accounts cannot read the same; emoji keep their variation
 * selector. */
static void test_invisible_characters(void **state)
{
    (void)state;
    char out[256];
    login_kind kind;
    const char *why = NULL;
    expect_name_bad("ali\xc2\xad" "ce");       /* U+00AD soft hyphen */
    expect_name_bad("alice\xd8\x9c");          /* U+061C Arabic letter mark */
    expect_name_bad("\xe3\x85\xa4");           /* U+3164 Hangul filler alone */
    expect_name_bad("alice\xe2\x80\x8b");      /* U+200B zero-width space */
    expect_name_ok("alice\xe2\x9d\xa4\xef\xb8\x8f"); /* alice + heart + U+FE0F */
    const char *bad_email = "a\xe2\x80\x8b@example.com";  /* U+200B before the @ */
    assert_int_equal(names_classify(bad_email, strlen(bad_email), &kind, out, sizeof out, &why), -1);
    assert_non_null(strstr(why, "invisible"));
    const char *rtl = "a@exa\xe2\x80\xaemple.com";          /* U+202E right-to-left override */
    assert_int_equal(names_classify(rtl, strlen(rtl), &kind, out, sizeof out, &why), -1);
    const char *eai = "Jos\xc3\xa9@Example.com";            /* an international address */
    assert_int_equal(names_classify(eai, strlen(eai), &kind, out, sizeof out, &why), 0);
    assert_string_equal(out, "jos\xc3\xa9@example.com");
}

/* "at least one letter": letters of other scripts are letters too. */
static void test_check_username_other_scripts(void **state)
{
    (void)state;
    expect_name_ok("Иван");
    expect_name_ok("Ελένη");
}

static void test_check_username_every_failure_says_why(void **state)
{
    (void)state;
    const char *bad[] = {"", "123", "a b", "a\tb", "a@b", "ab\xff", "\xc3\x28", "---"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        expect_name_bad(bad[i]);
    }
}

/* --- canonical forms (Unicode) --------------------------------------------- */

/* One name typed in the forms keyboards and systems send is one key. */
static void test_canonical_usernames(void **state)
{
    (void)state;
    /* NFC: e + U+0301 combining acute is the one character U+00E9 */
    expect_ok("Jose\xcc\x81", LOGIN_NAME, "Jos\xc3\xa9");
    expect_ok("Jos\xc3\xa9", LOGIN_NAME, "Jos\xc3\xa9");
    expect_new_name("Jose\xcc\x81", "Jos\xc3\xa9");
    /* Hangul as conjoining jamo (U+1100 U+1161) is the syllable U+AC00 */
    expect_ok("\xe1\x84\x80\xe1\x85\xa1", LOGIN_NAME, "\xea\xb0\x80");
    /* fullwidth Latin is Latin; halfwidth katakana is katakana, its
     * voiced mark joined (U+FF76 U+FF9E: U+30AC) */
    expect_ok("\xef\xbd\x81\xef\xbd\x8c\xef\xbd\x89\xef\xbd\x83\xef\xbd\x85", LOGIN_NAME, "alice");
    expect_new_name("\xef\xbc\xa1lice", "Alice");
    expect_ok("\xef\xbd\xb6\xef\xbe\x9e", LOGIN_NAME, "\xe3\x82\xac");
    /* case is kept, in every script */
    expect_ok("\xd0\x98\xd0\xb2\xd0\xb0\xd0\xbd", LOGIN_NAME, "\xd0\x98\xd0\xb2\xd0\xb0\xd0\xbd");
    /* the halfwidth Hangul filler U+FFA0 is the filler U+3164: refused */
    expect_bad("a\xef\xbe\xa0" "b");
    expect_name_bad("a\xef\xbe\xa0" "b");
}

static void test_canonical_emails(void **state)
{
    (void)state;
    /* every script's case, and NFC */
    expect_ok("JOS\xc3\x89@EXAMPLE.COM", LOGIN_EMAIL, "jos\xc3\xa9@example.com");
    expect_ok("Jose\xcc\x81@example.com", LOGIN_EMAIL, "jos\xc3\xa9@example.com");
    expect_ok("\xd0\x98\xd0\x92\xd0\x90\xd0\x9d@example.com", LOGIN_EMAIL,
              "\xd0\xb8\xd0\xb2\xd0\xb0\xd0\xbd@example.com");
    /* fullwidth letters and a fullwidth @ */
    expect_ok("\xef\xbc\xaaose\xef\xbc\xa0" "example.com", LOGIN_EMAIL, "jose@example.com");
    /* fullwidth digits make a phone */
    expect_ok("\xef\xbc\x8b\xef\xbc\x91 555 \xef\xbc\x90\xef\xbc\x91\xef\xbc\x92\xef\xbc\x93",
              LOGIN_PHONE, "+15550123");
    char out[NAMES_EMAIL_MAX + 1];
    const char *why = NULL;
    assert_int_equal(names_normalize_email("Jose\xcc\x81@Example.COM", out, sizeof out, &why), 0);
    assert_string_equal(out, "jos\xc3\xa9@example.com");
}

/* Letters of scripts that look alike are not mixed in a new name; a login
 * of such a name (an older account) is still looked up. */
static void test_look_alike_scripts(void **state)
{
    (void)state;
    /* "alice" with a Cyrillic a (U+0430) */
    const char *why = expect_name_bad("\xd0\xb0lice");
    assert_non_null(strstr(why, "Latin and Cyrillic"));
    expect_name_bad("p\xce\xb1ypal");            /* Greek alpha */
    expect_name_bad("\xd0\x98van_Ivanov");       /* Cyrillic and Latin words */
    expect_ok("\xd0\xb0lice", LOGIN_NAME, "\xd0\xb0lice");
    /* one of them, or one with scripts that do not look alike */
    expect_name_ok("\xd0\x98\xd0\xb2\xd0\xb0\xd0\xbd_2");   /* Иван_2 */
    expect_name_ok("alice\xe5\xbc\xa0\xe4\xb8\x89");          /* alice张三 */
    expect_name_ok("\xe3\x81\x99\xe3\x81\x9aki_42");          /* すずki_42 */
    expect_name_ok("Jos\xc3\xa9");                                /* é is Latin */
    expect_new_name("Jose\xcc\x81", "Jos\xc3\xa9");              /* the accent is inherited */
}

/* The key of an account made before names were canonical. */
static void test_legacy_key(void **state)
{
    (void)state;
    char key[OUTLEN], old[OUTLEN];
    login_kind kind, old_kind = 0;
    const char *why = NULL;
    const char *nfd = "Jose\xcc\x81";
    assert_int_equal(names_classify(nfd, strlen(nfd), &kind, key, sizeof key, &why), 0);
    assert_int_equal(names_legacy_key(nfd, strlen(nfd), kind, key, &old_kind, old, sizeof old), 1);
    assert_string_equal(old, nfd);
    assert_int_equal(old_kind, LOGIN_NAME);
    const char *upper = "JOS\xc3\x89@Example.com";
    assert_int_equal(names_classify(upper, strlen(upper), &kind, key, sizeof key, &why), 0);
    assert_int_equal(names_legacy_key(upper, strlen(upper), kind, key, &old_kind, old, sizeof old), 1);
    assert_string_equal(old, "jos\xc3\x89@example.com");   /* ASCII lower-cased only */
    assert_int_equal(old_kind, LOGIN_EMAIL);
    /* a fullwidth @ made a name then: the old key is of another kind */
    const char *wide = "a\xef\xbc\xa0" "b.com";
    assert_int_equal(names_classify(wide, strlen(wide), &kind, key, sizeof key, &why), 0);
    assert_int_equal(kind, LOGIN_EMAIL);
    assert_int_equal(names_legacy_key(wide, strlen(wide), kind, key, &old_kind, old, sizeof old), 1);
    assert_int_equal(old_kind, LOGIN_NAME);
    assert_string_equal(old, wide);
    /* a name that NFC makes too long has its old key all the same */
    char longer[OUTLEN] = "";
    for (int i = 0; i < 42; i++)
        strcat(longer, "\xe0\xa5\x98");   /* U+0958: NFC decomposes it to two */
    assert_int_equal(names_classify(longer, strlen(longer), &kind, key, sizeof key, &why), -1);
    assert_int_equal(names_legacy_key(longer, strlen(longer), LOGIN_NAME, "", &old_kind, old,
                                      sizeof old), 1);
    assert_string_equal(old, longer);
    /* ASCII and phones: the key is what it always was */
    assert_int_equal(names_classify("Alice", 5, &kind, key, sizeof key, &why), 0);
    assert_int_equal(names_legacy_key("Alice", 5, kind, key, &old_kind, old, sizeof old), 0);
    assert_int_equal(names_classify("A@B.com", 7, &kind, key, sizeof key, &why), 0);
    assert_int_equal(names_legacy_key("A@B.com", 7, kind, key, &old_kind, old, sizeof old), 0);
    assert_int_equal(names_classify("+1 555", 6, &kind, key, sizeof key, &why), 0);
    assert_int_equal(names_legacy_key("+1 555", 6, kind, key, &old_kind, old, sizeof old), 0);
}

/* --- passwords ----------------------------------------------------------- */

static void expect_pw(const char *pw, size_t len, int want)
{
    const char *why = NULL;
    int rc = names_check_password(pw, len, &why);
    if (rc != want)
        fail_msg("password of %zu bytes: %d, want %d (%s)", len, rc, want, why ? why : "");
    if (rc != 0)
        assert_true(why && *why);
}

static void test_check_password(void **state)
{
    (void)state;
    static char pw[CRYPTO_PASSWORD_MAX + 2];
    memset(pw, 'p', sizeof pw);
    expect_pw(pw, 0, -1);
    expect_pw(pw, 1, -1);
    expect_pw(pw, 7, -1);
    expect_pw(pw, 8, 0);
    expect_pw(pw, 64, 0);
    expect_pw(pw, CRYPTO_PASSWORD_MAX, 0);
    expect_pw(pw, CRYPTO_PASSWORD_MAX + 1, -1);
    expect_pw("abcd\0efgh", 9, -1);
    expect_pw("\0bcdefgh", 8, -1);
    expect_pw("abcdefg\0", 8, -1);
    expect_pw("pass word with spaces", 21, 0);
    expect_pw("密码密码", strlen("密码密码"), 0);

    const char *why = NULL;
    names_check_password(pw, 7, &why);
    assert_non_null(strstr(why, "8"));
    why = NULL;
    names_check_password(pw, CRYPTO_PASSWORD_MAX + 1, &why);
    assert_non_null(strstr(why, "1024"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_invisible_characters),
        cmocka_unit_test(test_canonical_usernames),
        cmocka_unit_test(test_canonical_emails),
        cmocka_unit_test(test_look_alike_scripts),
        cmocka_unit_test(test_legacy_key),
        cmocka_unit_test(test_classify_email),
        cmocka_unit_test(test_classify_email_junk),
        cmocka_unit_test(test_classify_email_too_long),
        cmocka_unit_test(test_classify_email_invalid_utf8),
        cmocka_unit_test(test_classify_email_domain_shape),
        cmocka_unit_test(test_classify_phone),
        cmocka_unit_test(test_classify_phone_bad),
        cmocka_unit_test(test_all_digits_never_a_name),
        cmocka_unit_test(test_normalize_phone_direct),
        cmocka_unit_test(test_classify_username),
        cmocka_unit_test(test_classify_invalid_utf8),
        cmocka_unit_test(test_classify_empty_nul_and_long),
        cmocka_unit_test(test_check_username),
        cmocka_unit_test(test_check_username_spaces_controls),
        cmocka_unit_test(test_check_username_c1_controls),
        cmocka_unit_test(test_check_username_unicode_spaces),
        cmocka_unit_test(test_check_username_other_scripts),
        cmocka_unit_test(test_check_username_every_failure_says_why),
        cmocka_unit_test(test_check_password),
    };
    return cmocka_run_group_tests_name("names", tests, NULL, NULL);
}
